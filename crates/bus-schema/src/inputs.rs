//! Each agent's inputs as a type.
//!
//! An agent's inputs are one enum with a variant per durable consumer, declared with
//! [`inputs!`](crate::inputs!) beside the subject family the consumer reads. The one declaration
//! gives the consumers ([`AgentInputs::defs`], which the fleet table and the permissions are built
//! from) and the type the agent's handler matches. Adding an input adds a variant, and the
//! handler's `match` no longer compiles until it handles it: nothing an agent subscribes to is
//! acknowledged unseen. The core requests an agent answers are declared the same way with
//! [`requests!`](crate::requests!), one variant per subscription.

use crate::AgentName;
pub use crate::codec::FromInbound;
use crate::codec::{DecodeError, Inbound, Limits, decode_inbound};
use crate::payload::*;
use crate::subject::{EnvFamily, Filter, ServiceFamily, Stream, all_events};

/// One input of an agent: a durable consumer `{agent}-{name}` over a filter, or, for an
/// instance of a partitioned agent, `{agent}-{name}-p{partition}` over the filter's partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputDef {
    pub name: &'static str,
    pub filter: Filter,
    /// The service partition it reads (`None`: every service).
    pub partition: Option<u16>,
}

impl InputDef {
    pub fn new(name: &'static str, filter: Filter) -> Self {
        Self { name, filter, partition: None }
    }

    /// The durable consumer's name for `agent`.
    pub fn durable(&self, agent: &AgentName) -> String {
        match self.partition {
            None => format!("{agent}-{}", self.name),
            Some(p) => format!("{agent}-{}-p{p}", self.name),
        }
    }

    /// The same input limited to one partition of the services (see [`crate::partition`]);
    /// `None` when its filter cannot be split by service.
    pub fn in_partition(&self, partition: u16) -> Option<Self> {
        let filter = self.filter.in_partition(partition)?;
        Some(Self { name: self.name, filter, partition: Some(partition) })
    }

    /// The stream the consumer lives on (inputs are always stored subjects).
    pub fn stream(&self) -> Option<Stream> {
        self.filter.stream()
    }
}

/// A pipeline event (`cn.events.>`): read by one consumer, so deploys, samples and logs keep
/// their order with each other.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineEvent {
    Deploy(DeployEvent),
    Metric(MetricSample),
    MetricBatch(MetricBatch),
    Log(LogEvent),
}

impl FromInbound for PipelineEvent {
    fn from_inbound(inbound: Inbound) -> Option<Self> {
        match inbound {
            Inbound::Deploy(d) => Some(Self::Deploy(d)),
            Inbound::Metric(m) => Some(Self::Metric(m)),
            Inbound::MetricBatch(b) => Some(Self::MetricBatch(b)),
            Inbound::Log(l) => Some(Self::Log(l)),
            _ => None,
        }
    }
}

/// Subjects whose every message carries a `P`: what an input of type `P` may read.
pub trait Carries<P> {
    /// Every subject of the family.
    fn every(&self) -> Filter;
}

impl<P> Carries<P> for ServiceFamily<P> {
    fn every(&self) -> Filter {
        self.all()
    }
}

impl<P> Carries<P> for EnvFamily<P> {
    fn every(&self) -> Filter {
        self.all()
    }
}

/// Every pipeline event (`cn.events.>`), carrying a [`PipelineEvent`].
#[derive(Debug, Clone, Copy)]
pub struct PipelineEvents;

impl Carries<PipelineEvent> for PipelineEvents {
    fn every(&self) -> Filter {
        all_events()
    }
}

/// The input `name` reading `family`; it compiles only when the family carries `P`.
pub fn input_of<P, F: Carries<P>>(name: &'static str, family: &F) -> InputDef {
    InputDef::new(name, family.every())
}

/// An agent's inputs, one variant per durable consumer; declared with [`inputs!`](crate::inputs!).
pub trait AgentInputs: Sized + Send + 'static {
    /// The inputs' names, to ask about one (e.g. its backlog) without spelling it.
    type Name: InputName;

    /// The consumers, in declaration order.
    fn defs() -> Vec<InputDef>;

    /// The input a decoded message read by the consumer `input` is; `None` when that consumer
    /// does not read its type.
    fn from_input(input: &str, inbound: Inbound) -> Option<Self>;
}

/// The name of one of an agent's inputs (its consumer is `{agent}-{name}`).
pub trait InputName: Copy + Send {
    fn as_str(self) -> &'static str;
}

/// A question asked on a core subject without a payload of ours (e.g.
/// `cn.model.{agent}.{instance}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The subject it was asked on.
    pub subject: String,
}

/// What a request of one kind carries: a payload of the contract, or nothing ([`Query`]).
pub trait RequestBody: Sized {
    fn decode(
        subject: &str,
        content_type: Option<&str>,
        payload: &[u8],
        limits: &Limits,
    ) -> Result<Self, DecodeError>;
}

impl<P: FromInbound> RequestBody for P {
    fn decode(
        subject: &str,
        content_type: Option<&str>,
        payload: &[u8],
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        let inbound = decode_inbound(subject, content_type, payload, limits)?;
        P::from_inbound(inbound).ok_or_else(|| DecodeError::BadSubject {
            subject: subject.chars().take(200).collect(),
            problem: "carries another payload than this request takes".to_owned(),
        })
    }
}

impl RequestBody for Query {
    fn decode(
        subject: &str,
        _content_type: Option<&str>,
        payload: &[u8],
        _limits: &Limits,
    ) -> Result<Self, DecodeError> {
        if !payload.is_empty() {
            return Err(DecodeError::BadSubject {
                subject: subject.chars().take(200).collect(),
                problem: "a query is asked with an empty payload".to_owned(),
            });
        }
        Ok(Query { subject: subject.to_owned() })
    }
}

/// The core requests an agent answers, one variant per subscription; declared with
/// [`requests!`](crate::requests!).
pub trait AgentRequests: Sized + Send + 'static {
    /// The subjects listened on (queue group: the agent's name), in declaration order.
    fn filters() -> Vec<Filter>;

    /// The request that arrived on the `index`-th filter, decoded by the contract's rules.
    fn decode(
        index: usize,
        subject: &str,
        content_type: Option<&str>,
        payload: &[u8],
        limits: &Limits,
    ) -> Result<Self, DecodeError>;
}

/// The requests of an agent that answers none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRequests {}

impl AgentRequests for NoRequests {
    fn filters() -> Vec<Filter> {
        Vec::new()
    }

    fn decode(
        _index: usize,
        subject: &str,
        _content_type: Option<&str>,
        _payload: &[u8],
        _limits: &Limits,
    ) -> Result<Self, DecodeError> {
        Err(DecodeError::BadSubject {
            subject: subject.chars().take(200).collect(),
            problem: "this agent answers no requests".to_owned(),
        })
    }
}

/// Declares an agent's inputs: an enum with one variant per durable consumer, its
/// [`AgentInputs`] implementation, and an enum of the inputs' names.
///
/// ```
/// use bus_schema::{subject, DeployEvent, ExecutionResult};
///
/// bus_schema::inputs! {
///     /// What a small agent reads.
///     pub enum Input, names InputNames {
///         /// Deploys, from the consumer `{agent}-deploys`.
///         Deploy(DeployEvent) = "deploys" from subject::DEPLOY_EVENTS,
///         Executed(ExecutionResult) = "executed" from subject::EXECUTED,
///     }
/// }
///
/// use bus_schema::inputs::{AgentInputs, InputName};
/// let names: Vec<_> = Input::defs().into_iter().map(|d| d.filter.to_string()).collect();
/// assert_eq!(names, ["cn.events.deploy.>", "cn.actions.executed.>"]);
/// assert_eq!(InputNames::Executed.as_str(), "executed");
/// ```
///
/// A family that does not carry the variant's type does not compile:
///
/// ```compile_fail
/// use bus_schema::{subject, MetricSample};
/// bus_schema::inputs! {
///     pub enum Input, names InputNames {
///         Metric(MetricSample) = "metrics" from subject::DEPLOY_EVENTS,
///     }
/// }
/// ```
#[macro_export]
macro_rules! inputs {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident, names $names:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident($ty:ty) = $input:literal from $family:expr
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant($ty), )*
        }

        #[doc = concat!("The names of the inputs of [`", stringify!($name), "`].")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $names {
            $( $variant, )*
        }

        impl $crate::inputs::InputName for $names {
            fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $input, )*
                }
            }
        }

        impl $crate::inputs::AgentInputs for $name {
            type Name = $names;

            fn defs() -> ::std::vec::Vec<$crate::inputs::InputDef> {
                ::std::vec![ $( $crate::inputs::input_of::<$ty, _>($input, &$family), )* ]
            }

            fn from_input(
                input: &str,
                inbound: $crate::Inbound,
            ) -> ::std::option::Option<Self> {
                $(
                    if input == $input {
                        return <$ty as $crate::inputs::FromInbound>::from_inbound(inbound)
                            .map(Self::$variant);
                    }
                )*
                None
            }

        }
    };
}

/// Declares the core requests an agent answers: an enum with one variant per subscription and
/// its [`AgentRequests`] implementation. A variant carries a payload of the contract, or a
/// [`Query`] for a question without one.
///
/// ```
/// use bus_schema::inputs::{AgentRequests, Query};
/// use bus_schema::{fleet, subject, CounterProposal};
///
/// bus_schema::requests! {
///     pub enum Request {
///         Counter(CounterProposal) on subject::NEGOTIATE.all(),
///         Model(Query) on subject::MODEL.agent(&fleet::RISK_NEGOTIATOR),
///     }
/// }
///
/// let limits = bus_schema::Limits::default();
/// let asked = Request::decode(1, "cn.model.risk-negotiator.a", None, b"", &limits).unwrap();
/// assert_eq!(asked, Request::Model(Query { subject: "cn.model.risk-negotiator.a".into() }));
/// assert!(Request::decode(1, "cn.model.risk-negotiator.a", None, b"{}", &limits).is_err());
/// ```
#[macro_export]
macro_rules! requests {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident($ty:ty) on $filter:expr
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant($ty), )*
        }

        impl $crate::inputs::AgentRequests for $name {
            fn filters() -> ::std::vec::Vec<$crate::Filter> {
                ::std::vec![ $( $filter, )* ]
            }

            fn decode(
                index: usize,
                subject: &str,
                content_type: ::std::option::Option<&str>,
                payload: &[u8],
                limits: &$crate::Limits,
            ) -> ::std::result::Result<Self, $crate::DecodeError> {
                let mut i = 0_usize;
                $(
                    if index == i {
                        return <$ty as $crate::inputs::RequestBody>::decode(
                            subject, content_type, payload, limits,
                        )
                        .map(Self::$variant);
                    }
                    i += 1;
                )*
                let _ = i;
                <$crate::inputs::NoRequests as $crate::inputs::AgentRequests>::decode(
                    index, subject, content_type, payload, limits,
                )
                .map(|never| match never {})
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject;

    crate::inputs! {
        /// Two inputs on one stream and one on another.
        enum Probe, names ProbeNames {
            Events(PipelineEvent) = "events" from PipelineEvents,
            Deploy(DeployEvent) = "deploys" from subject::DEPLOY_EVENTS,
            Executed(ExecutionResult) = "executed" from subject::EXECUTED,
        }
    }

    fn deploy() -> Inbound {
        let json = r#"{"env":"prod","service":"cart","version":"1.2.3","status":"started","timestamp":"2026-02-20T12:00:00Z"}"#;
        crate::codec::decode_inbound_at(
            "cn.events.deploy.prod.cart",
            None,
            json.as_bytes(),
            &Limits::default(),
            "2026-02-20T12:00:00Z".parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_message_becomes_the_input_of_the_consumer_that_read_it() {
        // The same deploy is an event to one consumer and a deploy to another.
        let as_event = Probe::from_input("events", deploy()).unwrap();
        assert!(matches!(as_event, Probe::Events(PipelineEvent::Deploy(_))));
        let as_deploy = Probe::from_input("deploys", deploy()).unwrap();
        assert!(matches!(as_deploy, Probe::Deploy(_)));
        let names = [ProbeNames::Events, ProbeNames::Deploy, ProbeNames::Executed];
        assert_eq!(names.map(InputName::as_str), ["events", "deploys", "executed"]);
    }

    #[test]
    fn a_message_of_another_type_or_for_an_unknown_consumer_is_no_input() {
        assert_eq!(Probe::from_input("executed", deploy()), None);
        assert_eq!(Probe::from_input("nobody", deploy()), None);
    }

    #[test]
    fn the_consumers_follow_the_declaration() {
        let defs: Vec<(&str, String)> =
            Probe::defs().into_iter().map(|d| (d.name, d.filter.to_string())).collect();
        assert_eq!(
            defs,
            [
                ("events", "cn.events.>".to_owned()),
                ("deploys", "cn.events.deploy.>".to_owned()),
                ("executed", "cn.actions.executed.>".to_owned()),
            ]
        );
    }

    #[test]
    fn an_agent_without_requests_refuses_every_one() {
        let e = NoRequests::decode(0, "cn.x", None, b"", &Limits::default()).unwrap_err();
        assert_eq!(e.reason(), crate::RejectReason::InvalidSubject);
    }
}
