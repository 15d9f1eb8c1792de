//! Typed subjects (docs/contract.md, Subjects).
//!
//! A *family* is one row of the subject table: a fixed prefix followed by `{env}.{service}`,
//! `{env}` or `{agent}.{instance}` tokens, one payload type, and the stream that stores it. A
//! [`Subject<P>`] can only be built from validated tokens and carries its payload type, so
//! publishing a payload on the wrong subject does not compile:
//!
//! ```compile_fail
//! use bus_schema::{subject, codec::Outgoing, Outcome, Env, ServiceName};
//! fn publish_outcome_as_incident(env: &Env, svc: &ServiceName, outcome: &Outcome) {
//!     // An Outcome is not an Incident: this line is a type error.
//!     let _ = Outgoing::new(&subject::INCIDENTS.subject(env, svc), outcome);
//! }
//! ```
//!
//! while the matching pair does:
//!
//! ```
//! use bus_schema::{subject, codec::Outgoing, Incident, Env, ServiceName};
//! fn publish_incident(env: &Env, svc: &ServiceName, incident: &Incident) -> Outgoing {
//!     Outgoing::new(&subject::INCIDENTS.subject(env, svc), incident).unwrap()
//! }
//! ```
//!
//! [`Filter`]s are the wildcard patterns durable consumers pull with.

use std::fmt;
use std::marker::PhantomData;

use crate::payload::*;
use crate::proof::ProofRecord;
use crate::{AgentName, Env, InstanceId, ServiceName};

/// The JetStream streams (docs/contract.md, Subjects). Their settings live in the agent runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Pipeline inputs: deploy, metric and log events, contract and onboarding requests.
    Events,
    /// Everything the fleet decides.
    Work,
    /// The hash-chained proof log (no delete, no purge).
    Proof,
    /// Who owns which partition of a partitioned agent (extension; the last record of each
    /// subject only).
    Leases,
}

impl Stream {
    pub const ALL: [Stream; 4] = [Stream::Events, Stream::Work, Stream::Proof, Stream::Leases];

    pub const fn name(self) -> &'static str {
        match self {
            Stream::Events => "CN_EVENTS",
            Stream::Work => "CN_WORK",
            Stream::Proof => "CN_PROOF",
            Stream::Leases => "CN_LEASES",
        }
    }

    /// The subjects the stream captures.
    pub const fn subjects(self) -> &'static [&'static str] {
        match self {
            Stream::Events => &["cn.events.>", "cn.requests.>"],
            Stream::Work => &[
                "cn.contracts.>",
                "cn.incidents.>",
                "cn.outcomes.>",
                "cn.slo.>",
                "cn.actions.>",
                "cn.approvals.>",
                "cn.sim.>",
            ],
            Stream::Proof => &["cn.proof.>"],
            Stream::Leases => &["cn.leases.>"],
        }
    }
}

/// A concrete subject that carries payloads of type `P`.
pub struct Subject<P> {
    name: String,
    stream: Option<Stream>,
    _payload: PhantomData<fn() -> P>,
}

impl<P> Subject<P> {
    fn new(name: String, stream: Option<Stream>) -> Self {
        Self { name, stream, _payload: PhantomData }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The stream that stores it; `None` for core NATS subjects.
    pub fn stream(&self) -> Option<Stream> {
        self.stream
    }
}

impl<P> Clone for Subject<P> {
    fn clone(&self) -> Self {
        Self::new(self.name.clone(), self.stream)
    }
}

impl<P> fmt::Debug for Subject<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Subject").field(&self.name).finish()
    }
}

impl<P> fmt::Display for Subject<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A wildcard pattern over one or more families, as a durable consumer's filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    pattern: String,
    stream: Option<Stream>,
}

impl Filter {
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The stream to consume it from; `None` for core NATS subjects (subscribe instead).
    pub fn stream(&self) -> Option<Stream> {
        self.stream
    }

    /// Whether a concrete subject falls under the pattern (NATS wildcards `*` and `>`).
    pub fn matches(&self, subject: &str) -> bool {
        wildcard_match(&self.pattern, subject)
    }

    /// The part of the filter in one partition: `cn.incidents.>` becomes
    /// `cn.incidents.*.*.3`, every pipeline event `cn.events.*.*.*.3`. `None` for a filter
    /// that is not over whole `{env}.{service}` families on a stream (those cannot be split).
    pub fn in_partition(&self, partition: u16) -> Option<Filter> {
        if partition >= crate::partition::PARTITIONS {
            return None;
        }
        let prefix = self.pattern.strip_suffix(".>")?;
        let pattern = if self.pattern == "cn.events.>" {
            format!("cn.events.*.*.*.{partition}")
        } else {
            partitioned_family(prefix)?;
            format!("{prefix}.*.*.{partition}")
        };
        Some(Filter { pattern, stream: self.stream })
    }
}

/// The stored `{env}.{service}` family with this prefix: the families the server partitions.
fn partitioned_family(prefix: &str) -> Option<&'static FamilyInfo> {
    FAMILIES
        .iter()
        .find(|f| f.prefix == prefix && f.tokens == ["{env}", "{service}"] && f.stream.is_some())
}

/// A subject without the partition token the server's mapping appended, after checking it:
/// `cn.incidents.prod.checkout.1` → `cn.incidents.prod.checkout`. A subject of another shape
/// comes back as it is (the decoder says what is wrong with it). A token that is not the
/// service's partition is an error: the message was published past the mapping, to a
/// partition whose owner must not see that service.
pub fn without_partition(subject: &str) -> Result<&str, String> {
    let Some((base, last)) = subject.rsplit_once('.') else { return Ok(subject) };
    let Some((rest, service)) = base.rsplit_once('.') else { return Ok(subject) };
    let Some((prefix, _env)) = rest.rsplit_once('.') else { return Ok(subject) };
    if partitioned_family(prefix).is_none() || !last.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(subject);
    }
    let expected = crate::partition::of_service(service);
    match crate::partition::parse_token(last) {
        Some(p) if p == expected => Ok(base),
        _ => Err(format!(
            "partition token {last:?} is not {service:?}'s partition ({expected} of {}): publish to {base} and the server adds it",
            crate::partition::PARTITIONS
        )),
    }
}

/// The subject as the server stores it: with the service's partition token appended when it
/// is a stored `{env}.{service}` subject without one; otherwise as it is.
pub fn with_partition(subject: &str) -> String {
    let mut tokens = subject.rsplitn(3, '.');
    let (Some(service), Some(_env), Some(prefix)) = (tokens.next(), tokens.next(), tokens.next())
    else {
        return subject.to_owned();
    };
    match partitioned_family(prefix) {
        Some(_) => format!("{subject}.{}", crate::partition::of_service(service)),
        None => subject.to_owned(),
    }
}

/// Where a partitioned instance checks, at start, that the server runs the mappings: written
/// as `cn.leases.{agent}.probe.{instance}`, stored with a partition token after it.
pub const PARTITION_PROBE: (&str, &str) =
    ("cn.leases.*.probe.*", "cn.leases.{{wildcard(1)}}.probe.{{wildcard(2)}}.{{partition(8,1)}}");

/// The server's subject mappings that partition every stored `{env}.{service}` family, as
/// `(from, to)`, and the [`PARTITION_PROBE`]: what `cnctl partitions mappings` renders into
/// `deploy/partitions.conf`.
pub fn partition_mappings() -> Vec<(String, String)> {
    let probe = (PARTITION_PROBE.0.to_owned(), PARTITION_PROBE.1.to_owned());
    FAMILIES
        .iter()
        .filter(|f| partitioned_family(f.prefix).is_some())
        .map(|f| {
            (
                format!("{}.*.*", f.prefix),
                format!(
                    "{}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{partition({},2)}}}}",
                    f.prefix,
                    crate::partition::PARTITIONS
                ),
            )
        })
        .chain(std::iter::once(probe))
        .collect()
}

/// NATS wildcard matching: `*` takes one token, a final `>` one or more.
pub fn wildcard_match(pattern: &str, subject: &str) -> bool {
    let (mut p, mut s) = (pattern.split('.'), subject.split('.'));
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// The shape of a family, for listings and error hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyInfo {
    pub prefix: &'static str,
    /// The tokens after the prefix, e.g. `["{env}", "{service}"]`.
    pub tokens: &'static [&'static str],
    pub stream: Option<Stream>,
}

impl FamilyInfo {
    /// The family as the contract writes it, e.g. `cn.events.deploy.{env}.{service}`.
    pub fn template(&self) -> String {
        std::iter::once(self.prefix)
            .chain(self.tokens.iter().copied())
            .collect::<Vec<_>>()
            .join(".")
    }
}

macro_rules! family {
    ($(#[$meta:meta])* $name:ident, $($arg:ident: $ty:ty),+ => $tokens:expr) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name<P> {
            prefix: &'static str,
            stream: Option<Stream>,
            _payload: PhantomData<fn() -> P>,
        }

        impl<P> $name<P> {
            const TOKENS: &'static [&'static str] = $tokens;

            const fn new(prefix: &'static str, stream: Option<Stream>) -> Self {
                Self { prefix, stream, _payload: PhantomData }
            }

            /// The concrete subject for these tokens.
            pub fn subject(&self, $($arg: $ty),+) -> Subject<P> {
                let mut name = String::from(self.prefix);
                $( name.push('.'); name.push_str($arg.as_str()); )+
                Subject::new(name, self.stream)
            }

            /// Every subject of the family (`prefix.>`).
            pub fn all(&self) -> Filter {
                self.filter(format!("{}.>", self.prefix))
            }

            pub const fn info(&self) -> FamilyInfo {
                FamilyInfo { prefix: self.prefix, tokens: Self::TOKENS, stream: self.stream }
            }

            fn filter(&self, pattern: String) -> Filter {
                Filter { pattern, stream: self.stream }
            }
        }
    };
}

family!(
    /// `{prefix}.{env}.{service}`
    ServiceFamily, env: &Env, service: &ServiceName => &["{env}", "{service}"]
);
family!(
    /// `{prefix}.{env}`
    EnvFamily, env: &Env => &["{env}"]
);
family!(
    /// `{prefix}.{agent}.{instance}`
    AgentFamily, agent: &AgentName, instance: &InstanceId => &["{agent}", "{instance}"]
);

impl<P> ServiceFamily<P> {
    /// Every service of one environment (`prefix.{env}.>`: stored subjects carry their
    /// partition token after the service).
    pub fn env(&self, env: &Env) -> Filter {
        self.filter(format!("{}.{}.>", self.prefix, env))
    }
}

impl<P> AgentFamily<P> {
    /// Every instance of one agent (`prefix.{agent}.*`).
    pub fn agent(&self, agent: &AgentName) -> Filter {
        self.filter(format!("{}.{}.*", self.prefix, agent))
    }
}

const EVENTS: Option<Stream> = Some(Stream::Events);
const WORK: Option<Stream> = Some(Stream::Work);
const PROOF_STREAM: Option<Stream> = Some(Stream::Proof);
const CORE: Option<Stream> = None;

pub const DEPLOY_EVENTS: ServiceFamily<DeployEvent> =
    ServiceFamily::new("cn.events.deploy", EVENTS);
pub const METRIC_EVENTS: ServiceFamily<MetricSample> =
    ServiceFamily::new("cn.events.metric", EVENTS);
pub const METRIC_BATCHES: ServiceFamily<MetricBatch> =
    ServiceFamily::new("cn.events.metric-batch", EVENTS);
pub const LOG_EVENTS: ServiceFamily<LogEvent> = ServiceFamily::new("cn.events.log", EVENTS);
pub const CONTRACT_REQUESTS: ServiceFamily<ContractRequest> =
    ServiceFamily::new("cn.requests.contract", EVENTS);
pub const ONBOARD_REQUESTS: EnvFamily<OnboardRequest> =
    EnvFamily::new("cn.requests.onboard", EVENTS);
pub const CONTRACTS: ServiceFamily<Contract> = ServiceFamily::new("cn.contracts", WORK);
/// Request/reply on core NATS: a [`CounterProposal`] answered by a [`NegotiationReply`].
pub const NEGOTIATE: ServiceFamily<CounterProposal> = ServiceFamily::new("cn.negotiate", CORE);
pub const INCIDENTS: ServiceFamily<Incident> = ServiceFamily::new("cn.incidents", WORK);
pub const OUTCOMES: ServiceFamily<Outcome> = ServiceFamily::new("cn.outcomes", WORK);
pub const SLO: ServiceFamily<SloStatus> = ServiceFamily::new("cn.slo", WORK);
pub const PROPOSED: ServiceFamily<ActionProposal> = ServiceFamily::new("cn.actions.proposed", WORK);
/// Only governance may publish here (NATS permissions).
pub const APPROVED: ServiceFamily<SignedApproval> = ServiceFamily::new("cn.actions.approved", WORK);
pub const REFUSED: ServiceFamily<Refusal> = ServiceFamily::new("cn.actions.refused", WORK);
pub const PENDING: ServiceFamily<PendingApproval> = ServiceFamily::new("cn.actions.pending", WORK);
pub const HUMAN_DECISIONS: ServiceFamily<HumanDecision> = ServiceFamily::new("cn.approvals", WORK);
/// An operator's promote or abort of a rollout (extension; only the `operator` user publishes).
pub const ROLLOUT_COMMANDS: ServiceFamily<RolloutCommand> =
    ServiceFamily::new("cn.actions.rollout", WORK);
pub const EXECUTED: ServiceFamily<ExecutionResult> =
    ServiceFamily::new("cn.actions.executed", WORK);
pub const SIM_ACTIONS: ServiceFamily<SimAction> = ServiceFamily::new("cn.sim.actions", WORK);
pub const PROOF: AgentFamily<ProofRecord> = AgentFamily::new("cn.proof", PROOF_STREAM);
pub const HEARTBEAT: AgentFamily<Heartbeat> = AgentFamily::new("cn.heartbeat", CORE);
/// The micro-service status endpoint (extension; core request/reply, JSON).
pub const STATUS: AgentFamily<AgentStatus> = AgentFamily::new("cn.status", CORE);
/// The risk negotiator's learned model and calibration (extension; core request/reply, JSON).
pub const MODEL: AgentFamily<ModelStats> = AgentFamily::new("cn.model", CORE);
/// The optimizer's learned action values (extension; core request/reply, JSON).
pub const POLICY: AgentFamily<LearnedPolicy> = AgentFamily::new("cn.policy", CORE);

/// Every family, in the contract's order.
pub const FAMILIES: &[FamilyInfo] = &[
    DEPLOY_EVENTS.info(),
    METRIC_EVENTS.info(),
    METRIC_BATCHES.info(),
    LOG_EVENTS.info(),
    CONTRACT_REQUESTS.info(),
    ONBOARD_REQUESTS.info(),
    CONTRACTS.info(),
    NEGOTIATE.info(),
    INCIDENTS.info(),
    OUTCOMES.info(),
    SLO.info(),
    PROPOSED.info(),
    APPROVED.info(),
    REFUSED.info(),
    PENDING.info(),
    HUMAN_DECISIONS.info(),
    ROLLOUT_COMMANDS.info(),
    EXECUTED.info(),
    SIM_ACTIONS.info(),
    PROOF.info(),
    HEARTBEAT.info(),
    STATUS.info(),
    MODEL.info(),
    POLICY.info(),
];

/// [`partition_mappings`] as a nats-server `mappings` block (`deploy/partitions.conf`).
pub fn partition_mappings_conf() -> String {
    let mut out = format!(
        "# Generated by `cnctl partitions mappings` from the subject table in bus-schema; do not edit by hand.\n\
         # The server appends each service's partition (FNV-1a of the service name, modulo {}) to every\n\
         # stored {{env}}.{{service}} subject: cn.incidents.prod.checkout is stored as cn.incidents.prod.checkout.1.\n\
         # Instances of a partitioned agent (--partitioned) each consume a share of the partitions.\n\
         mappings = {{\n",
        crate::partition::PARTITIONS
    );
    for (from, to) in partition_mappings() {
        out.push_str(&format!("  \"{from}\": \"{to}\"\n"));
    }
    out.push_str("}\n");
    out
}

/// The environment and service a subject of a `{env}.{service}` (or `{env}`) family names,
/// when its tokens are valid: what a record about an input that could not be read (a
/// rejection) can still say it was about, so `cnctl tail --service X` finds it.
pub fn scope_of(subject: &str) -> (Option<Env>, Option<ServiceName>) {
    let subject = without_partition(subject).unwrap_or(subject);
    let Some((family, rest)) = FAMILIES.iter().find_map(|f| {
        subject.strip_prefix(f.prefix).and_then(|r| r.strip_prefix('.')).map(|r| (f, r))
    }) else {
        return (None, None);
    };
    let tokens: Vec<&str> = rest.split('.').collect();
    match (family.tokens, tokens.as_slice()) {
        (["{env}", "{service}"], [env, service]) => match (env.parse(), service.parse()) {
            (Ok(env), Ok(service)) => (Some(env), Some(service)),
            (Ok(env), Err(_)) => (Some(env), None),
            _ => (None, None),
        },
        (["{env}"], [env]) => (env.parse().ok(), None),
        _ => (None, None),
    }
}

/// The inbox prefix of an agent's connection (`_INBOX_{agent}`): replies to its own requests
/// (JetStream API calls, pulls) arrive under it, and its NATS user may subscribe to nothing
/// else's replies. People and pipelines keep the default `_INBOX.`.
pub fn inbox_prefix(agent: &AgentName) -> String {
    format!("_INBOX_{agent}")
}

/// Every pipeline input event (`cn.events.>`): deploy, metric and log.
pub fn all_events() -> Filter {
    Filter { pattern: "cn.events.>".to_owned(), stream: Some(Stream::Events) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        "prod".parse().unwrap()
    }
    fn svc() -> ServiceName {
        "payments-api".parse().unwrap()
    }

    #[test]
    fn the_scope_of_a_subject_is_read_back_from_its_tokens() {
        let scope = |s: &str| {
            let (e, s) = scope_of(s);
            (e.map(|e| e.to_string()), s.map(|s| s.to_string()))
        };
        let both = |e: &str, s: &str| (Some(e.to_owned()), Some(s.to_owned()));
        assert_eq!(scope("cn.events.metric.prod.payments-api"), both("prod", "payments-api"));
        assert_eq!(scope("cn.events.metric-batch.dev.web"), both("dev", "web"));
        assert_eq!(scope("cn.actions.approved.stage.api"), both("stage", "api"));
        assert_eq!(scope("cn.requests.onboard.dev"), (Some("dev".to_owned()), None));
        assert_eq!(scope("cn.events.metric.prod.Bad_Name"), (Some("prod".to_owned()), None));
        assert_eq!(scope("cn.events.metric.prod"), (None, None));
        assert_eq!(scope("cn.events.metric.prod.a.b"), (None, None));
        assert_eq!(scope("cn.proof.executor.0"), (None, None));
        assert_eq!(scope("elsewhere.prod.api"), (None, None));
    }

    #[test]
    fn builds_the_design_subjects() {
        assert_eq!(
            DEPLOY_EVENTS.subject(&env(), &svc()).as_str(),
            "cn.events.deploy.prod.payments-api"
        );
        assert_eq!(
            ONBOARD_REQUESTS.subject(&"dev".parse().unwrap()).as_str(),
            "cn.requests.onboard.dev"
        );
        assert_eq!(
            APPROVED.subject(&env(), &svc()).as_str(),
            "cn.actions.approved.prod.payments-api"
        );
        assert_eq!(
            HUMAN_DECISIONS.subject(&env(), &svc()).as_str(),
            "cn.approvals.prod.payments-api"
        );
        let agent: AgentName = "governance-gate".parse().unwrap();
        let inst: InstanceId = "0".parse().unwrap();
        assert_eq!(PROOF.subject(&agent, &inst).as_str(), "cn.proof.governance-gate.0");
        assert_eq!(PROOF.subject(&agent, &inst).stream(), Some(Stream::Proof));
        assert_eq!(HEARTBEAT.subject(&agent, &inst).stream(), None);
    }

    #[test]
    fn filters_use_wildcards_only_in_whole_tokens() {
        assert_eq!(METRIC_EVENTS.all().pattern(), "cn.events.metric.>");
        assert_eq!(INCIDENTS.env(&env()).pattern(), "cn.incidents.prod.>");
        assert!(INCIDENTS.env(&env()).matches("cn.incidents.prod.checkout.1"));
        assert_eq!(INCIDENTS.env(&env()).stream(), Some(Stream::Work));
    }

    #[test]
    fn every_stored_family_is_captured_by_its_stream_and_only_by_it() {
        for family in FAMILIES {
            let probe = format!("{}.x", family.prefix);
            for stream in Stream::ALL {
                let captured = stream.subjects().iter().any(|p| wildcard_match(p, &probe));
                assert_eq!(
                    captured,
                    family.stream == Some(stream),
                    "{} in {}",
                    family.template(),
                    stream.name()
                );
            }
        }
    }

    #[test]
    fn wildcards_match_as_nats_matches_them() {
        let all = DEPLOY_EVENTS.all();
        assert!(all.matches("cn.events.deploy.prod.api"));
        assert!(!all.matches("cn.events.deploy"));
        assert!(!all.matches("cn.events.metric.prod.api"));
        assert!(wildcard_match("cn.*.deploy.>", "cn.events.deploy.prod.api"));
        assert!(!wildcard_match("cn.*.deploy", "cn.events.deploy.prod"));
        assert!(wildcard_match("cn.events", "cn.events"));
    }

    #[test]
    fn a_partition_of_a_filter_takes_the_token_the_server_appends() {
        assert_eq!(INCIDENTS.all().in_partition(3).unwrap().pattern(), "cn.incidents.*.*.3");
        let events = all_events().in_partition(0).unwrap();
        assert_eq!(events.pattern(), "cn.events.*.*.*.0");
        // One filter takes every pipeline event: each is cn.events.{kind}.{env}.{service}.
        for f in FAMILIES.iter().filter(|f| f.prefix.starts_with("cn.events.")) {
            assert_eq!(f.prefix.split('.').count(), 3, "{}", f.template());
            assert_eq!(f.tokens, ["{env}", "{service}"]);
        }
        assert!(events.matches("cn.events.metric.prod.checkout.0"));
        assert!(!events.matches("cn.events.metric.prod.checkout"));
        assert_eq!(ONBOARD_REQUESTS.all().in_partition(0), None);
        assert_eq!(PROOF.all().in_partition(0), None);
        assert_eq!(INCIDENTS.all().in_partition(crate::partition::PARTITIONS), None);
    }

    #[test]
    fn the_partition_token_is_checked_and_dropped() {
        assert_eq!(
            without_partition("cn.incidents.prod.checkout.1"),
            Ok("cn.incidents.prod.checkout")
        );
        assert_eq!(
            without_partition("cn.events.metric.prod.cart.7"),
            Ok("cn.events.metric.prod.cart")
        );
        assert_eq!(
            without_partition("cn.incidents.prod.checkout"),
            Ok("cn.incidents.prod.checkout")
        );
        let wrong = without_partition("cn.incidents.prod.checkout.2").unwrap_err();
        assert!(wrong.contains("not \"checkout\"'s partition (1 of 8)"), "{wrong}");
        assert!(without_partition("cn.incidents.prod.checkout.01").is_err());
        // Not a partitioned family: left for the decoder to judge.
        assert_eq!(without_partition("cn.proof.executor.0"), Ok("cn.proof.executor.0"));
        assert_eq!(without_partition("cn.negotiate.prod.api.3"), Ok("cn.negotiate.prod.api.3"));
        assert_eq!(with_partition("cn.incidents.prod.checkout"), "cn.incidents.prod.checkout.1");
        assert_eq!(with_partition("cn.incidents.prod.checkout.1"), "cn.incidents.prod.checkout.1");
        assert_eq!(with_partition("cn.proof.executor.0"), "cn.proof.executor.0");
        let (env, svc) = scope_of("cn.actions.approved.prod.payments.6");
        assert_eq!((env.unwrap().as_str(), svc.unwrap().as_str()), ("prod", "payments"));
    }

    #[test]
    fn every_stored_service_family_is_mapped_once() {
        let mappings = partition_mappings();
        let stored = FAMILIES
            .iter()
            .filter(|f| f.stream.is_some() && f.tokens == ["{env}", "{service}"])
            .count();
        assert_eq!(mappings.len(), stored + 1, "and the probe");
        assert!(mappings.contains(&(
            "cn.events.metric.*.*".to_owned(),
            "cn.events.metric.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(8,2)}}".to_owned()
        )));
    }

    #[test]
    fn templates_read_like_the_design() {
        assert_eq!(DEPLOY_EVENTS.info().template(), "cn.events.deploy.{env}.{service}");
        assert_eq!(PROOF.info().template(), "cn.proof.{agent}.{instance}");
    }
}
