//! Encoding and decoding (docs/contract.md, Headers).
//!
//! Inputs from pipelines may be JSON (the default, what `nats pub` sends) or MessagePack
//! (`Content-Type: application/msgpack`); the fleet publishes MessagePack internally and JSON
//! proof records. Decoding an input is one call, [`decode_inbound`], which checks, in order:
//! size, subject shape and tokens, content type, syntax, field types (naming the field),
//! value ranges, and that the payload's env/service agree with the subject. Each failure is a
//! [`DecodeError`] whose [`RejectReason`] goes on the `event_rejected` proof record.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::payload::*;
use crate::proof::ProofRecord;
use crate::subject::{FAMILIES, Subject};
use crate::validate::{Validate, ValidationError};
use crate::{AgentName, Env, InstanceId, RejectReason, ServiceName, Timestamp, headers};

/// How a payload is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    MsgPack,
}

impl Encoding {
    pub const fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => headers::JSON,
            Encoding::MsgPack => headers::MSGPACK,
        }
    }

    /// The encoding a `Content-Type` header names; `default` when there is none.
    pub fn from_content_type(
        value: Option<&str>,
        default: Encoding,
    ) -> Result<Encoding, DecodeError> {
        let Some(value) = value else { return Ok(default) };
        let media = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match media.as_str() {
            "" => Ok(default),
            "application/json" | "text/json" => Ok(Encoding::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(Encoding::MsgPack)
            }
            _ => Err(DecodeError::UnsupportedContentType(value.chars().take(100).collect())),
        }
    }
}

/// What a payload is about, checked against its subject's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Service {
        env: &'a Env,
        service: &'a ServiceName,
    },
    Env(&'a Env),
    Agent {
        agent: &'a AgentName,
        instance: &'a InstanceId,
    },
    /// The payload does not repeat its subject's tokens.
    Unscoped,
}

/// A type that travels on the bus.
pub trait Payload:
    Serialize + DeserializeOwned + Validate + std::fmt::Debug + Send + Sync + 'static
{
    /// The `Cn-Type` header value, e.g. `cn.v1.incident`.
    const CN_TYPE: &'static str;
    /// How the fleet publishes it.
    const ENCODING: Encoding;
    fn scope(&self) -> Scope<'_>;
    /// When the sender says the event happened, for payloads that carry such a time: checked
    /// against the clock at arrival ([`MAX_CLOCK_SKEW`]).
    fn stamped_at(&self) -> Option<Timestamp> {
        None
    }
}

/// How far ahead of the clock at arrival an event's own time may be. The clock is the NATS
/// server's: the time JetStream stored the message, the same for every agent that consumes
/// it and for every redelivery, so agents cannot disagree about the same event.
pub const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(120);

macro_rules! payload {
    // `stamped`: the payload's `timestamp` is when the sender says the event happened.
    ($ty:ty, $cn_type:literal, $enc:ident, |$p:ident| $scope:expr $(, $stamped:ident)?) => {
        impl Payload for $ty {
            const CN_TYPE: &'static str = $cn_type;
            const ENCODING: Encoding = Encoding::$enc;
            fn scope(&self) -> Scope<'_> {
                let $p = self;
                $scope
            }
            $(
                fn stamped_at(&self) -> Option<Timestamp> {
                    let _ = stringify!($stamped);
                    Some(self.timestamp)
                }
            )?
        }
    };
}

fn service_scope<'a>(env: &'a Env, service: &'a ServiceName) -> Scope<'a> {
    Scope::Service { env, service }
}

payload!(DeployEvent, "cn.v1.deploy_event", Json, |p| service_scope(&p.env, &p.service), stamped);
payload!(MetricSample, "cn.v1.metric_sample", Json, |p| service_scope(&p.env, &p.service), stamped);
impl Payload for MetricBatch {
    const CN_TYPE: &'static str = "cn.v1.metric_batch";
    const ENCODING: Encoding = Encoding::Json;
    /// The samples' service (validation makes them all the same); an empty batch has none.
    fn scope(&self) -> Scope<'_> {
        self.service().map_or(Scope::Unscoped, |(env, service)| service_scope(env, service))
    }
    fn stamped_at(&self) -> Option<Timestamp> {
        self.newest()
    }
}
payload!(LogEvent, "cn.v1.log_event", Json, |p| service_scope(&p.env, &p.service), stamped);
payload!(ContractRequest, "cn.v1.contract_request", Json, |p| service_scope(&p.env, &p.service));
payload!(OnboardRequest, "cn.v1.onboard_request", Json, |p| Scope::Env(&p.env));
payload!(HumanDecision, "cn.v1.human_decision", Json, |_p| Scope::Unscoped);
payload!(RolloutCommand, "cn.v1.rollout_command", Json, |p| service_scope(&p.env, &p.service));
payload!(Contract, "cn.v1.contract", MsgPack, |p| service_scope(&p.env, &p.service));
payload!(CounterProposal, "cn.v1.counter_proposal", MsgPack, |p| service_scope(&p.env, &p.service));
payload!(NegotiationReply, "cn.v1.negotiation_reply", MsgPack, |_p| Scope::Unscoped);
payload!(Incident, "cn.v1.incident", MsgPack, |p| service_scope(&p.env, &p.service));
payload!(Outcome, "cn.v1.outcome", MsgPack, |p| service_scope(&p.env, &p.service));
payload!(SloStatus, "cn.v1.slo_status", MsgPack, |p| service_scope(&p.env, &p.service));
payload!(ActionProposal, "cn.v1.action_proposal", MsgPack, |p| service_scope(&p.env, &p.service));
payload!(SignedApproval, "cn.v1.signed_approval", MsgPack, |p| service_scope(
    &p.claims.env,
    &p.claims.service
));
payload!(Refusal, "cn.v1.refusal", MsgPack, |p| service_scope(&p.env, &p.service));
payload!(PendingApproval, "cn.v1.pending_approval", MsgPack, |p| service_scope(
    &p.proposal.env,
    &p.proposal.service
));
payload!(ExecutionResult, "cn.v1.execution_result", MsgPack, |p| service_scope(&p.env, &p.service));
payload!(SimAction, "cn.v1.sim_action", MsgPack, |p| service_scope(&p.env, &p.service));
payload!(Heartbeat, "cn.v1.heartbeat", MsgPack, |p| Scope::Agent {
    agent: &p.agent,
    instance: &p.instance
});
payload!(AgentStatus, "cn.v1.agent_status", Json, |p| Scope::Agent {
    agent: &p.heartbeat.agent,
    instance: &p.heartbeat.instance
});
payload!(ModelStats, "cn.v1.model_stats", Json, |_p| Scope::Unscoped);
payload!(LearnedPolicy, "cn.v1.learned_policy", Json, |_p| Scope::Unscoped);
payload!(ProofRecord, "cn.v1.proof", Json, |p| Scope::Agent {
    agent: &p.agent,
    instance: &p.instance
});

/// How deeply a MessagePack payload may nest (JSON is limited to 128 by serde_json).
pub const MAX_DEPTH: usize = 32;

/// Decoding limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted payload, in bytes.
    pub max_payload: usize,
}

impl Limits {
    /// 64 KiB: far above any real event, far below what could hurt an agent.
    pub const DEFAULT: Limits = Limits { max_payload: 64 * 1024 };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why an input could not be accepted. The message is meant for the person who sent it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error(
        "unsupported Content-Type {0:?}: send application/json or application/msgpack (or, on cn.events.*, a CloudEvent as application/cloudevents+json)"
    )]
    UnsupportedContentType(String),
    #[error("payload is empty")]
    Empty,
    #[error("malformed {encoding}: {message}")]
    Malformed { encoding: &'static str, message: String },
    #[error("{path}: {message}")]
    InvalidField { path: String, message: String },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("subject {subject:?}: {problem}")]
    BadSubject { subject: String, problem: String },
    #[error("payload {field} is {payload:?} but the subject says {subject:?}")]
    ScopeMismatch { field: &'static str, payload: String, subject: String },
    #[error("timestamp {at} is ahead of the clock at arrival ({clock}) by more than the allowed {}s: check the sender's clock", MAX_CLOCK_SKEW.as_secs())]
    AheadOfClock { at: Timestamp, clock: Timestamp },
}

impl From<crate::cloudevent::CloudEventError> for DecodeError {
    fn from(e: crate::cloudevent::CloudEventError) -> Self {
        use crate::cloudevent::CloudEventError as E;
        match e {
            E::Empty => DecodeError::Empty,
            E::Malformed(message) => {
                DecodeError::Malformed { encoding: "CloudEvent (JSON)", message }
            }
            E::Invalid(message) => {
                DecodeError::InvalidField { path: "cloudevent".to_owned(), message }
            }
        }
    }
}

impl DecodeError {
    /// The stable reason code for the `event_rejected` record.
    pub fn reason(&self) -> RejectReason {
        match self {
            DecodeError::Invalid(ValidationError::Item { error, .. }) => {
                DecodeError::Invalid((**error).clone()).reason()
            }
            DecodeError::TooLarge { .. } => RejectReason::TooLarge,
            DecodeError::UnsupportedContentType(_) => RejectReason::UnsupportedContentType,
            DecodeError::Empty | DecodeError::Malformed { .. } => RejectReason::Malformed,
            DecodeError::InvalidField { .. } => RejectReason::InvalidField,
            DecodeError::Invalid(v) => match v {
                ValidationError::OutOfRange { .. } => RejectReason::OutOfRange,
                ValidationError::TooLong { .. } | ValidationError::TooMany { .. } => {
                    RejectReason::FieldTooLarge
                }
                ValidationError::Empty { .. }
                | ValidationError::Invalid { .. }
                | ValidationError::Item { .. } => RejectReason::InvalidField,
            },
            DecodeError::BadSubject { .. } => RejectReason::InvalidSubject,
            DecodeError::ScopeMismatch { .. } => RejectReason::ScopeMismatch,
            DecodeError::AheadOfClock { .. } => RejectReason::OutOfOrder,
        }
    }
}

/// Failure to encode one of our own payloads (a bug, never input-driven).
#[derive(Debug, thiserror::Error)]
#[error("could not encode {cn_type}: {message}")]
pub struct EncodeError {
    pub cn_type: &'static str,
    pub message: String,
}

/// Encodes a payload the way the fleet publishes it.
pub fn encode<P: Payload>(payload: &P) -> Result<Vec<u8>, EncodeError> {
    encode_as(payload, P::ENCODING)
}

/// Encodes a payload in a chosen encoding (pipelines may publish inputs as MessagePack).
pub fn encode_as<P: Payload>(payload: &P, encoding: Encoding) -> Result<Vec<u8>, EncodeError> {
    let err = |message: String| EncodeError { cn_type: P::CN_TYPE, message };
    match encoding {
        Encoding::Json => serde_json::to_vec(payload).map_err(|e| err(e.to_string())),
        Encoding::MsgPack => rmp_serde::to_vec_named(payload).map_err(|e| err(e.to_string())),
    }
}

/// Decodes a message as `P` by its `Content-Type` header (`None`, or empty: `P`'s own encoding),
/// as readers of a stream or a reply do.
pub fn decode_by_content_type<P: Payload>(
    content_type: Option<&str>,
    bytes: &[u8],
    limits: &Limits,
) -> Result<P, DecodeError> {
    decode(Encoding::from_content_type(content_type, P::ENCODING)?, bytes, limits)
}

/// Decodes and validates a payload of a known type (no subject check).
pub fn decode<P: Payload>(
    encoding: Encoding,
    bytes: &[u8],
    limits: &Limits,
) -> Result<P, DecodeError> {
    if bytes.len() > limits.max_payload {
        return Err(DecodeError::TooLarge { size: bytes.len(), limit: limits.max_payload });
    }
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    // Most input is well formed: decode it directly, and only when that fails decode again
    // with the field path tracked, for the error (tracking costs a third of a decode).
    let payload: P = match untracked(encoding, bytes) {
        Some(p) => p,
        None => tracked(encoding, bytes)?,
    };
    payload.validate()?;
    Ok(payload)
}

/// One value that fills `bytes`, or `None` when they hold something else.
fn untracked<P: DeserializeOwned>(encoding: Encoding, bytes: &[u8]) -> Option<P> {
    match encoding {
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let value = P::deserialize(&mut de).ok()?;
            de.end().ok().map(|()| value)
        }
        Encoding::MsgPack => {
            let mut de = rmp_serde::Deserializer::new(bytes);
            de.set_max_depth(MAX_DEPTH);
            let value = P::deserialize(&mut de).ok()?;
            de.into_inner().is_empty().then_some(value)
        }
    }
}

/// Like [`untracked`], with the failing field's path in the error.
fn tracked<P: DeserializeOwned>(encoding: Encoding, bytes: &[u8]) -> Result<P, DecodeError> {
    match encoding {
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
            de.end()
                .map_err(|e| DecodeError::Malformed { encoding: "JSON", message: e.to_string() })?;
            Ok(value)
        }
        Encoding::MsgPack => {
            let mut de = rmp_serde::Deserializer::new(bytes);
            // Our payloads nest a few levels; deep nesting is an attack on the stack.
            de.set_max_depth(MAX_DEPTH);
            let value = serde_path_to_error::deserialize(&mut de).map_err(msgpack_error)?;
            let trailing = de.into_inner().len();
            if trailing > 0 {
                let message = format!("{trailing} trailing bytes after the value");
                return Err(DecodeError::Malformed { encoding: "MessagePack", message });
            }
            Ok(value)
        }
    }
}

/// The field a serde error is about; `payload` for the top level.
fn field_path(path: &serde_path_to_error::Path) -> String {
    match path.to_string() {
        root if root == "." => "payload".to_owned(),
        field => field,
    }
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> DecodeError {
    let path = field_path(e.path());
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            DecodeError::InvalidField { path, message: strip_position(&inner) }
        }
        _ => DecodeError::Malformed { encoding: "JSON", message: inner.to_string() },
    }
}

/// serde_json appends " at line L column C" to data errors; the path says more.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn msgpack_error(e: serde_path_to_error::Error<rmp_serde::decode::Error>) -> DecodeError {
    use rmp_serde::decode::Error as E;
    let path = field_path(e.path());
    match e.into_inner() {
        inner @ (E::Syntax(_) | E::TypeMismatch(_) | E::OutOfRange | E::Uncategorized(_)) => {
            DecodeError::InvalidField { path, message: inner.to_string() }
        }
        inner => DecodeError::Malformed { encoding: "MessagePack", message: inner.to_string() },
    }
}

/// A message ready to publish: its subject, type header and encoded bytes.
///
/// Built only from a [`Subject<P>`] and a `P`, so payload and subject always agree.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: String,
    pub cn_type: &'static str,
    pub encoding: Encoding,
    pub payload: Vec<u8>,
}

impl Outgoing {
    pub fn new<P: Payload>(subject: &Subject<P>, payload: &P) -> Result<Self, EncodeError> {
        Ok(Self {
            subject: subject.as_str().to_owned(),
            cn_type: P::CN_TYPE,
            encoding: P::ENCODING,
            payload: encode(payload)?,
        })
    }
}

/// A payload type taken out of a decoded [`Inbound`].
pub trait FromInbound: Sized {
    /// The payload; `None` when the message is of another type.
    fn from_inbound(inbound: Inbound) -> Option<Self>;
}

/// Declares [`Inbound`] and, for each payload type it carries, [`FromInbound`].
macro_rules! inbound {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// Any message the fleet consumes, decoded by its subject.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Inbound {
            $( $variant($ty), )*
        }

        $(
            impl FromInbound for $ty {
                fn from_inbound(inbound: Inbound) -> Option<Self> {
                    match inbound {
                        Inbound::$variant(p) => Some(p),
                        _ => None,
                    }
                }
            }
        )*
    };
}

inbound!(
    Deploy(DeployEvent),
    Metric(MetricSample),
    MetricBatch(MetricBatch),
    Log(LogEvent),
    ContractRequest(ContractRequest),
    Onboard(OnboardRequest),
    Contract(Contract),
    Negotiate(CounterProposal),
    Incident(Incident),
    Outcome(Outcome),
    Slo(SloStatus),
    Proposed(ActionProposal),
    Approved(SignedApproval),
    Refused(Refusal),
    Pending(PendingApproval),
    HumanDecision(HumanDecision),
    RolloutCommand(RolloutCommand),
    Executed(ExecutionResult),
    SimAction(SimAction),
    Proof(ProofRecord),
    Heartbeat(Heartbeat),
);

/// Decodes a message by its subject, checking event times against the local clock now; see
/// [`decode_inbound_at`].
pub fn decode_inbound(
    subject: &str,
    content_type: Option<&str>,
    payload: &[u8],
    limits: &Limits,
) -> Result<Inbound, DecodeError> {
    decode_inbound_at(subject, content_type, payload, limits, Timestamp::now())
}

/// Decodes a message by its subject: size, subject tokens, content type, fields, ranges,
/// identifiers, scope, and an event time at most [`MAX_CLOCK_SKEW`] ahead of `clock` (the
/// time the message arrived: JetStream's timestamp for a stored message). Every agent applies
/// these same rules through the runtime, so they agree on every input.
pub fn decode_inbound_at(
    subject: &str,
    content_type: Option<&str>,
    payload: &[u8],
    limits: &Limits,
    clock: Timestamp,
) -> Result<Inbound, DecodeError> {
    if payload.len() > limits.max_payload {
        return Err(DecodeError::TooLarge { size: payload.len(), limit: limits.max_payload });
    }
    // A stored service subject carries the partition token the server appended.
    let subject = crate::subject::without_partition(subject).map_err(|problem| {
        DecodeError::BadSubject { subject: subject.chars().take(200).collect(), problem }
    })?;
    let ctx = In { subject, content_type, payload, limits, clock };
    let tokens: Vec<&str> = subject.split('.').collect();
    use Inbound as I;
    match tokens.as_slice() {
        ["cn", "events", "deploy", e, s] => ctx.service(e, s).map(I::Deploy),
        ["cn", "events", "metric", e, s] => ctx.service(e, s).map(I::Metric),
        ["cn", "events", "metric-batch", e, s] => ctx.service(e, s).map(I::MetricBatch),
        ["cn", "events", "log", e, s] => ctx.service(e, s).map(I::Log),
        ["cn", "requests", "contract", e, s] => ctx.service(e, s).map(I::ContractRequest),
        ["cn", "requests", "onboard", e] => ctx.env(e).map(I::Onboard),
        ["cn", "contracts", e, s] => ctx.service(e, s).map(I::Contract),
        ["cn", "negotiate", e, s] => ctx.service(e, s).map(I::Negotiate),
        ["cn", "incidents", e, s] => ctx.service(e, s).map(I::Incident),
        ["cn", "outcomes", e, s] => ctx.service(e, s).map(I::Outcome),
        ["cn", "slo", e, s] => ctx.service(e, s).map(I::Slo),
        ["cn", "actions", "proposed", e, s] => ctx.service(e, s).map(I::Proposed),
        ["cn", "actions", "approved", e, s] => ctx.service(e, s).map(I::Approved),
        ["cn", "actions", "refused", e, s] => ctx.service(e, s).map(I::Refused),
        ["cn", "actions", "pending", e, s] => ctx.service(e, s).map(I::Pending),
        ["cn", "approvals", e, s] => ctx.service(e, s).map(I::HumanDecision),
        ["cn", "actions", "rollout", e, s] => ctx.service(e, s).map(I::RolloutCommand),
        ["cn", "actions", "executed", e, s] => ctx.service(e, s).map(I::Executed),
        ["cn", "sim", "actions", e, s] => ctx.service(e, s).map(I::SimAction),
        ["cn", "proof", a, i] => ctx.agent(a, i).map(I::Proof),
        ["cn", "heartbeat", a, i] => ctx.agent(a, i).map(I::Heartbeat),
        _ => Err(unknown_subject(subject)),
    }
}

/// Decodes a message by its subject and its headers (`(name, value)` pairs): on `cn.events.*`
/// a CloudEvent, in structured or binary mode, is checked against the spec and its data
/// decoded as the subject's payload ([`crate::cloudevent`]); everything else as
/// [`decode_inbound_at`] with the `Content-Type` header.
pub fn decode_message_at(
    subject: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
    limits: &Limits,
    clock: Timestamp,
) -> Result<Inbound, DecodeError> {
    use crate::cloudevent;
    let content_type = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(headers::CONTENT_TYPE))
        .map(|(_, value)| *value);
    if !subject.starts_with("cn.events.") {
        return decode_inbound_at(subject, content_type, payload, limits, clock);
    }
    if payload.len() > limits.max_payload {
        return Err(DecodeError::TooLarge { size: payload.len(), limit: limits.max_payload });
    }
    if cloudevent::is_structured(content_type) {
        let event = cloudevent::structured(payload)?;
        let content_type = event.content_type.as_deref();
        let stamped = cloudevent::stamped(&event.data, content_type, event.time.as_deref());
        let data = stamped.as_deref().unwrap_or(&event.data);
        return decode_inbound_at(subject, content_type, data, limits, clock);
    }
    if cloudevent::is_binary(headers) {
        let time = cloudevent::check_binary(headers)?;
        if let Some(stamped) = cloudevent::stamped(payload, content_type, time) {
            return decode_inbound_at(subject, content_type, &stamped, limits, clock);
        }
    }
    decode_inbound_at(subject, content_type, payload, limits, clock)
}

fn unknown_subject(subject: &str) -> DecodeError {
    let shown: String = subject.chars().take(200).collect();
    let family = FAMILIES.iter().find(|f| subject.starts_with(&format!("{}.", f.prefix)));
    let problem = match family {
        Some(f) => format!(
            "expected {} ({} tokens after the prefix; a token may not contain '.')",
            f.template(),
            f.tokens.len()
        ),
        None => "not a Chaos Negotiator subject (see docs/contract.md)".to_owned(),
    };
    DecodeError::BadSubject { subject: shown, problem }
}

struct In<'a> {
    subject: &'a str,
    content_type: Option<&'a str>,
    payload: &'a [u8],
    limits: &'a Limits,
    clock: Timestamp,
}

impl In<'_> {
    fn token<T: std::str::FromStr<Err = crate::TokenError>>(
        &self,
        raw: &str,
    ) -> Result<T, DecodeError> {
        raw.parse().map_err(|e: crate::TokenError| DecodeError::BadSubject {
            subject: self.subject.chars().take(200).collect(),
            problem: e.to_string(),
        })
    }

    fn payload<P: Payload>(&self) -> Result<P, DecodeError> {
        let encoding = Encoding::from_content_type(self.content_type, P::ENCODING)?;
        let p: P = decode(encoding, self.payload, self.limits)?;
        if let Some(at) = p.stamped_at() {
            if at > self.clock.plus(MAX_CLOCK_SKEW) {
                return Err(DecodeError::AheadOfClock { at, clock: self.clock });
            }
        }
        Ok(p)
    }

    fn service<P: Payload>(&self, env: &str, service: &str) -> Result<P, DecodeError> {
        let (env, service): (Env, ServiceName) = (self.token(env)?, self.token(service)?);
        let p: P = self.payload()?;
        match p.scope() {
            Scope::Service { env: pe, service: ps } => {
                same("env", pe.as_str(), env.as_str())?;
                same("service", ps.as_str(), service.as_str())?;
            }
            Scope::Env(pe) => same("env", pe.as_str(), env.as_str())?,
            Scope::Agent { .. } | Scope::Unscoped => {}
        }
        Ok(p)
    }

    fn env<P: Payload>(&self, env: &str) -> Result<P, DecodeError> {
        let env: Env = self.token(env)?;
        let p: P = self.payload()?;
        if let Scope::Env(pe) | Scope::Service { env: pe, .. } = p.scope() {
            same("env", pe.as_str(), env.as_str())?;
        }
        Ok(p)
    }

    fn agent<P: Payload>(&self, agent: &str, instance: &str) -> Result<P, DecodeError> {
        let (agent, instance): (AgentName, InstanceId) =
            (self.token(agent)?, self.token(instance)?);
        let p: P = self.payload()?;
        if let Scope::Agent { agent: pa, instance: pi } = p.scope() {
            same("agent", pa.as_str(), agent.as_str())?;
            same("instance", pi.as_str(), instance.as_str())?;
        }
        Ok(p)
    }
}

fn same(field: &'static str, payload: &str, subject: &str) -> Result<(), DecodeError> {
    if payload == subject {
        Ok(())
    } else {
        Err(DecodeError::ScopeMismatch {
            field,
            payload: payload.to_owned(),
            subject: subject.to_owned(),
        })
    }
}
