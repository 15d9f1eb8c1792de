//! The fleet's Prometheus series, derived from its proof log (`cn_` names, OpenMetrics text).
//!
//! Every record is counted by agent and kind; the rest follows what the records say:
//! - `cn_inputs_rejected_total{agent, reason}` — `event_rejected`;
//! - `cn_actions_executed_total{env, action, status}` — `action_executed` and `action_failed`
//!   (`status` from the detail: `executed`, `failed`, …);
//! - `cn_decisions_total{agent, kind, reason}` — governance's approvals, refusals and pending
//!   approvals, with the reason code when there is one;
//! - `cn_incidents_open{env, kind}` — opened and not yet resolved;
//! - `cn_approvals_pending{env}` — waiting for a human: pending, and not yet decided, approved,
//!   refused or expired;
//! - `cn_chain_head{agent, instance}` — the last sequence of each hash chain;
//! - `cn_remediation_seconds` — from an incident's opening to the first action executed for it;
//! - `cn_handling_seconds{agent}` — how long an agent took to act on another's message, from
//!   the record explaining the message to the record of the decision ([`crate::handling`]).
//!
//! Gauges are rebuilt from the log's start, so the console can be restarted at any time. What
//! the log does not say (inputs handled, consumer lag) comes from a [`Collector`] added with
//! [`Metrics::collect`].

use std::collections::HashMap;

use bus_schema::Uuid;
use bus_schema::proof::{ProofKind, ProofRecord};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::handling::Hops;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentKind {
    agent: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentReason {
    agent: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    agent: String,
    kind: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Executed {
    env: String,
    action: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvKind {
    env: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabel {
    env: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Chain {
    agent: String,
    instance: String,
}

/// The series and what they are computed from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    records: Family<AgentKind, Counter>,
    rejected: Family<AgentReason, Counter>,
    decisions: Family<Decision, Counter>,
    executed: Family<Executed, Counter>,
    incidents_open: Family<EnvKind, Gauge>,
    approvals_pending: Family<EnvLabel, Gauge>,
    chain_head: Family<Chain, Gauge>,
    remediation: Histogram,
    handling: Family<AgentLabel, Histogram, fn() -> Histogram>,
    hops: Hops,
    /// Open incidents: their env and kind, and when they opened until their first execution
    /// is timed.
    open: HashMap<Uuid, (EnvKind, Option<bus_schema::Timestamp>)>,
    /// Proposals waiting for a human, and their env.
    pending: HashMap<Uuid, String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cn");
        let records = Family::<AgentKind, Counter>::default();
        registry.register(
            "proof_records",
            "Proof records appended, by agent and kind",
            records.clone(),
        );
        let rejected = Family::<AgentReason, Counter>::default();
        registry.register(
            "inputs_rejected",
            "Inputs rejected (event_rejected), by agent and reason",
            rejected.clone(),
        );
        let decisions = Family::<Decision, Counter>::default();
        registry.register(
            "decisions",
            "Governance's decisions (action_approved, action_refused, action_pending_approval), with their reason code",
            decisions.clone(),
        );
        let executed = Family::<Executed, Counter>::default();
        registry.register(
            "actions_executed",
            "Actions the executor carried out, by env, action and status",
            executed.clone(),
        );
        let incidents_open = Family::<EnvKind, Gauge>::default();
        registry.register(
            "incidents_open",
            "Incidents opened and not resolved, by env and kind",
            incidents_open.clone(),
        );
        let approvals_pending = Family::<EnvLabel, Gauge>::default();
        registry.register(
            "approvals_pending",
            "Actions waiting for a human's decision, by env",
            approvals_pending.clone(),
        );
        let chain_head = Family::<Chain, Gauge>::default();
        registry.register(
            "chain_head",
            "The last sequence of each proof chain",
            chain_head.clone(),
        );
        let remediation = Histogram::new(exponential_buckets(0.001, 4.0, 12));
        registry.register(
            "remediation_seconds",
            "From an incident's opening to the first action executed for it",
            remediation.clone(),
        );
        // 1 ms (a record's `ts` has milliseconds) to about two minutes.
        let handling: Family<AgentLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 18)));
        registry.register(
            "handling_seconds",
            "How long an agent took to act on another agent's message: from the record its sender wrote before sending it to the agent's record of its decision (governance on a proposal, the executor on an approval, the optimizer on an incident, outcome or refusal); waits for a human or a timer are not counted; the writers' clocks",
            handling.clone(),
        );
        Self {
            registry,
            records,
            rejected,
            decisions,
            executed,
            incidents_open,
            approvals_pending,
            chain_head,
            remediation,
            handling,
            hops: Hops::default(),
            open: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Takes in one record of the proof log, in the log's order.
    pub fn observe(&mut self, r: &ProofRecord) {
        if let Some(hop) = self.hops.observe(r) {
            self.handling.get_or_create(&AgentLabel { agent: hop.agent }).observe(hop.seconds);
        }
        let agent = r.agent.to_string();
        let env = r.env.as_ref().map(ToString::to_string).unwrap_or_default();
        self.records
            .get_or_create(&AgentKind { agent: agent.clone(), kind: r.kind.to_string() })
            .inc();
        {
            let chain = Chain { agent: agent.clone(), instance: r.instance.to_string() };
            let head = self.chain_head.get_or_create(&chain);
            head.set(head.get().max(i64::try_from(r.seq).unwrap_or(i64::MAX)));
        }
        let reason = r.reason.clone().unwrap_or_default();
        match r.kind {
            ProofKind::EventRejected => {
                self.rejected.get_or_create(&AgentReason { agent, reason }).inc();
            }
            ProofKind::ActionApproved
            | ProofKind::ActionRefused
            | ProofKind::ActionPendingApproval => {
                let kind = r.kind.to_string();
                self.decisions.get_or_create(&Decision { agent, kind, reason }).inc();
                if let Some(id) = r.proposal_id {
                    match r.kind {
                        ProofKind::ActionPendingApproval => self.wait_for_human(id, env),
                        _ => self.decided(id),
                    }
                }
            }
            // A decision the human made (expiry is governance's `action_refused`).
            ProofKind::HumanDecision => {
                if let Some(id) = r.proposal_id {
                    self.decided(id);
                }
            }
            ProofKind::ActionExecuted | ProofKind::ActionFailed => {
                let action = r.action.as_ref().map(ToString::to_string).unwrap_or_default();
                let default = if r.kind == ProofKind::ActionFailed { "failed" } else { "executed" };
                let status = r.detail["status"].as_str().unwrap_or(default).to_owned();
                self.executed.get_or_create(&Executed { env, action, status }).inc();
                let open = r.incident_id.and_then(|id| self.open.get_mut(&id));
                if let Some(opened) = open.and_then(|(_, opened)| opened.take()) {
                    self.remediation.observe(r.ts.since(opened).as_secs_f64());
                }
            }
            ProofKind::IncidentOpened => {
                if let Some(id) = r.incident_id {
                    let kind = r.detail["kind"].as_str().unwrap_or("unknown").to_owned();
                    let labels = EnvKind { env, kind };
                    // A reopened incident comes again under its id: counted once.
                    if !self.open.contains_key(&id) {
                        self.incidents_open.get_or_create(&labels).inc();
                        self.open.insert(id, (labels, Some(r.ts)));
                    }
                }
            }
            ProofKind::IncidentResolved => {
                if let Some((labels, _)) = r.incident_id.and_then(|id| self.open.remove(&id)) {
                    self.incidents_open.get_or_create(&labels).dec();
                }
            }
            _ => {}
        }
    }

    fn wait_for_human(&mut self, proposal: Uuid, env: String) {
        if self.pending.insert(proposal, env.clone()).is_none() {
            self.approvals_pending.get_or_create(&EnvLabel { env }).inc();
        }
    }

    fn decided(&mut self, proposal: Uuid) {
        if let Some(env) = self.pending.remove(&proposal) {
            self.approvals_pending.get_or_create(&EnvLabel { env }).dec();
        }
    }

    /// Adds series computed at each scrape (named under `cn_` too).
    pub fn collect(&mut self, collector: impl Collector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// The series in the OpenMetrics text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(seq: u64, kind: &str, extra: serde_json::Value) -> ProofRecord {
        let mut r = serde_json::json!({
            "v": 1, "agent": "governance-gate", "instance": "0", "seq": seq,
            "ts": format!("2026-02-20T17:00:{:02}Z", seq), "kind": kind, "env": "prod",
            "service": "payments", "prev_hash": "0".repeat(64),
        });
        r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(r).unwrap()
    }

    fn value(m: &Metrics, series: &str) -> Option<String> {
        let text = m.render().unwrap();
        text.lines().find_map(|l| l.strip_prefix(series)).map(|v| v.trim().to_owned())
    }

    #[test]
    fn gauges_follow_openings_resolutions_and_human_decisions() {
        let mut m = Metrics::new();
        let incident = serde_json::json!({"incident_id": "00000000-0000-0000-0000-000000000001", "detail": {"kind": "high_error_rate"}});
        let proposal = serde_json::json!({"proposal_id": "00000000-0000-0000-0000-000000000002"});
        m.observe(&record(1, "incident_opened", incident.clone()));
        m.observe(&record(2, "incident_opened", incident.clone())); // reopened: the same one
        m.observe(&record(3, "action_pending_approval", proposal.clone()));
        let open = "cn_incidents_open{env=\"prod\",kind=\"high_error_rate\"}";
        let pending = "cn_approvals_pending{env=\"prod\"}";
        assert_eq!(value(&m, open).as_deref(), Some("1"));
        assert_eq!(value(&m, pending).as_deref(), Some("1"));
        m.observe(&record(4, "human_decision", proposal.clone()));
        m.observe(&record(5, "action_approved", proposal.clone())); // after the decision: no double count
        assert_eq!(value(&m, pending).as_deref(), Some("0"));
        let executed = serde_json::json!({"incident_id": "00000000-0000-0000-0000-000000000001", "action": "rollback", "detail": {"status": "executed"}});
        m.observe(&record(9, "action_executed", executed));
        assert_eq!(value(&m, "cn_remediation_seconds_count").as_deref(), Some("1"));
        assert_eq!(value(&m, "cn_remediation_seconds_sum").as_deref(), Some("8.0"));
        m.observe(&record(10, "incident_resolved", incident));
        assert_eq!(value(&m, open).as_deref(), Some("0"));
        assert_eq!(
            value(&m, "cn_chain_head{agent=\"governance-gate\",instance=\"0\"}").as_deref(),
            Some("10")
        );
        let text = m.render().unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_decision_on_a_proposal_is_timed_for_the_agent_that_made_it() {
        let mut m = Metrics::new();
        let proposed = serde_json::json!({"agent": "rl-optimizer", "proposal_id": "00000000-0000-0000-0000-000000000002", "detail": {"trigger": "open:0"}});
        m.observe(&record(3, "action_proposed", proposed));
        m.observe(&record(
            5,
            "action_approved",
            serde_json::json!({"proposal_id": "00000000-0000-0000-0000-000000000002"}),
        ));
        let count = "cn_handling_seconds_count{agent=\"governance-gate\"}";
        assert_eq!(value(&m, count).as_deref(), Some("1"));
        assert_eq!(
            value(&m, "cn_handling_seconds_sum{agent=\"governance-gate\"}").as_deref(),
            Some("2.0")
        );
        assert_eq!(
            value(&m, "cn_handling_seconds_bucket{le=\"2.048\",agent=\"governance-gate\"}")
                .as_deref(),
            Some("1")
        );
        let text = m.render().unwrap();
        assert!(
            !text.contains("cn_handling_seconds_count{agent=\"rl-optimizer\"}"),
            "the first proposal's incident is not in the log: no hop: {text}"
        );
    }
}
