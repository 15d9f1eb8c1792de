//! How long agents take to act on each other's messages, read from the proof log alone.
//!
//! On the action path every message is explained by a record its sender wrote just before it
//! (the record first, then the output), and the agent that acts on the message records its
//! decision. So one hop is the time from the sender's record to the decision's record, both
//! `ts`, labelled by the agent that decided: its wait in the stream, its handling and the
//! sending, in one figure. Records are paired by the ids they carry, not by their order:
//!
//! | decision | on the message explained by |
//! |---|---|
//! | governance's first `action_approved`, `action_refused` or `action_pending_approval` of a proposal | that proposal's `action_proposed` |
//! | the executor's `action_executed`, `action_failed` or `execution_refused` | the proposal's `action_approved` |
//! | a proposer's `action_proposed` with `detail.trigger` `open:…` | the incident's `incident_opened` |
//! | … `outcome:P`, `revised:P`, `wake:P` | P's `outcome_recorded` |
//! | … `refused:P` | P's `action_refused` |
//!
//! Waits are not hops and are left out: a decision after a human's (governance's second
//! decision of a proposal), a proposal whose wait ran out (`due:P`), and anything else. The
//! first hop of a chain (from a pipeline's event to the detector) has no sender's record.
//! `ts` are the writers' clocks: on one host the difference is exact, across hosts it carries
//! their skew; a hop that would be negative is dropped.

use std::collections::{HashMap, VecDeque};

use bus_schema::proof::{ProofKind, ProofRecord};
use bus_schema::{Timestamp, Uuid};

/// How many explaining records are remembered; the oldest goes first.
const REMEMBERED: usize = 10_000;

/// A record that explains a message some agent may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Cause {
    Proposed(Uuid),
    Approved(Uuid),
    Opened(Uuid),
    Outcome(Uuid),
    Refused(Uuid),
}

/// One hop: the agent that acted, and how long after the record of what it acted on.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    pub agent: String,
    pub seconds: f64,
}

/// The explaining records seen lately, by what they explain.
#[derive(Debug, Default)]
pub struct Hops {
    at: HashMap<Cause, Timestamp>,
    /// Insertion order, for forgetting the oldest. A cause taken out stays here until its turn
    /// comes; only the map says what is remembered.
    order: VecDeque<Cause>,
}

impl Hops {
    /// Takes in one record, in the log's order; returns the hop it ends, if any.
    pub fn observe(&mut self, r: &ProofRecord) -> Option<Hop> {
        let proposal = r.proposal_id;
        let hop = match r.kind {
            ProofKind::ActionApproved
            | ProofKind::ActionRefused
            | ProofKind::ActionPendingApproval => {
                proposal.and_then(|p| self.at.remove(&Cause::Proposed(p)))
            }
            ProofKind::ActionExecuted | ProofKind::ActionFailed | ProofKind::ExecutionRefused => {
                proposal.and_then(|p| self.at.remove(&Cause::Approved(p)))
            }
            ProofKind::ActionProposed => {
                let trigger = r.detail["trigger"].as_str().unwrap_or_default();
                trigger_cause(trigger, r.incident_id).and_then(|c| self.at.get(&c).copied())
            }
            _ => None,
        }
        .filter(|cause| *cause <= r.ts)
        .map(|cause| Hop { agent: r.agent.to_string(), seconds: r.ts.since(cause).as_secs_f64() });

        let explains = match (r.kind, proposal, r.incident_id) {
            (ProofKind::ActionProposed, Some(p), _) => Some(Cause::Proposed(p)),
            (ProofKind::ActionApproved, Some(p), _) => Some(Cause::Approved(p)),
            (ProofKind::ActionRefused, Some(p), _) => Some(Cause::Refused(p)),
            (ProofKind::OutcomeRecorded, Some(p), _) => Some(Cause::Outcome(p)),
            (ProofKind::IncidentOpened, _, Some(i)) => Some(Cause::Opened(i)),
            (ProofKind::IncidentResolved, _, Some(i)) => {
                self.at.remove(&Cause::Opened(i));
                None
            }
            _ => None,
        };
        if let Some(cause) = explains {
            self.remember(cause, r.ts);
        }
        hop
    }

    fn remember(&mut self, cause: Cause, ts: Timestamp) {
        if self.at.insert(cause, ts).is_none() {
            self.order.push_back(cause);
        }
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.at.remove(&oldest);
            }
        }
    }
}

/// What a proposer's `detail.trigger` says it follows (docs/contract.md, the optimizer).
fn trigger_cause(trigger: &str, incident: Option<Uuid>) -> Option<Cause> {
    let (what, id) = trigger.split_once(':')?;
    match what {
        "open" => incident.map(Cause::Opened),
        "outcome" | "revised" | "wake" => id.parse().ok().map(Cause::Outcome),
        "refused" => id.parse().ok().map(Cause::Refused),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const INCIDENT: &str = "00000000-0000-0000-0000-00000000000a";
    const P1: &str = "00000000-0000-0000-0000-000000000001";
    const P2: &str = "00000000-0000-0000-0000-000000000002";

    /// A record of `agent` at `millis` past 17:00:00.
    fn at(agent: &str, millis: u32, kind: &str, extra: serde_json::Value) -> ProofRecord {
        let mut r = serde_json::json!({
            "v": 1, "agent": agent, "instance": "0", "seq": 1,
            "ts": format!(
                "2026-02-20T17:{:02}:{:02}.{:03}Z",
                millis / 60_000,
                millis / 1000 % 60,
                millis % 1000
            ),
            "kind": kind, "env": "prod", "service": "payments", "prev_hash": "0".repeat(64),
            "incident_id": INCIDENT,
        });
        r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(r).unwrap()
    }

    fn hops(records: &[ProofRecord]) -> Vec<(String, u64)> {
        let mut h = Hops::default();
        records
            .iter()
            .filter_map(|r| h.observe(r))
            .map(|hop| (hop.agent, (hop.seconds * 1000.0).round() as u64))
            .collect()
    }

    fn proposal(p: &str, trigger: &str) -> serde_json::Value {
        serde_json::json!({"proposal_id": p, "detail": {"trigger": trigger}})
    }

    #[test]
    fn each_hop_of_a_remediation_is_timed_by_the_agent_that_acted() {
        let p1 = serde_json::json!({"proposal_id": P1});
        let records = [
            at("issue-detector", 1_000, "incident_opened", serde_json::json!({})),
            at("rl-optimizer", 1_013, "action_proposed", proposal(P1, "open:0")),
            at("governance-gate", 1_017, "action_approved", p1.clone()),
            at("executor", 1_035, "action_executed", p1.clone()),
            // Judged after the verification window: a wait, not a hop.
            at("issue-detector", 301_000, "outcome_recorded", p1.clone()),
            at("rl-optimizer", 301_004, "action_proposed", proposal(P2, &format!("outcome:{P1}"))),
            at(
                "governance-gate",
                301_010,
                "action_refused",
                serde_json::json!({"proposal_id": P2}),
            ),
        ];
        assert_eq!(
            hops(&records),
            [
                ("rl-optimizer".to_owned(), 13),
                ("governance-gate".to_owned(), 4),
                ("executor".to_owned(), 18),
                ("rl-optimizer".to_owned(), 4),
                ("governance-gate".to_owned(), 6),
            ]
        );
    }

    #[test]
    fn waits_for_a_human_or_a_timer_are_not_hops() {
        let p1 = serde_json::json!({"proposal_id": P1});
        let records = [
            at("rl-optimizer", 1_000, "action_proposed", proposal(P1, "open:0")),
            at("governance-gate", 1_005, "action_pending_approval", p1.clone()),
            at("governance-gate", 90_000, "human_decision", p1.clone()),
            at("governance-gate", 90_001, "action_approved", p1.clone()),
            at("executor", 90_011, "action_executed", p1.clone()),
            at("rl-optimizer", 95_000, "action_proposed", proposal(P2, &format!("due:{P1}"))),
            // A record whose clock is behind its cause's: dropped.
            at(
                "governance-gate",
                94_000,
                "action_approved",
                serde_json::json!({"proposal_id": P2}),
            ),
        ];
        assert_eq!(
            hops(&records),
            [("governance-gate".to_owned(), 5), ("executor".to_owned(), 10)]
        );
    }

    #[test]
    fn the_oldest_causes_are_forgotten_first() {
        let mut h = Hops::default();
        for n in 0..=REMEMBERED as u128 {
            h.remember(
                Cause::Proposed(Uuid::from_u128(n)),
                at("x", 0, "agent_started", serde_json::json!({})).ts,
            );
        }
        assert_eq!(h.at.len(), REMEMBERED);
        assert!(!h.at.contains_key(&Cause::Proposed(Uuid::from_u128(0))));
        assert!(h.at.contains_key(&Cause::Proposed(Uuid::from_u128(REMEMBERED as u128))));
    }
}
