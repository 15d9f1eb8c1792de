//! What governance remembers between proposals, built from the streams and kept in redb:
//! per env/service its deploys, recent approvals per action, the cooldown back-off each action
//! earned from its outcomes, the error budget left, and the remediation whose verdict it waits
//! for (one action at a time per service); per incident how many actions were approved and
//! whether its signals conflict.

use std::collections::BTreeMap;
use std::time::Duration;

use bus_schema::{
    Action, ActionProposal, DeployEvent, DeployHistory, Incident, Outcome, SloStatus, Timestamp,
    Uuid,
};
use serde::{Deserialize, Serialize};

use policy::Policy;

/// Governance's view of one env/service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceLedger {
    pub deploys: DeployHistory,
    /// Whether any deploy event was seen: the service is known.
    pub known: bool,
    /// Approval times per action, newest last, kept as long as a cooldown or the repetition
    /// window can look back.
    pub approvals: BTreeMap<Action, Vec<Timestamp>>,
    /// Cooldown multiplier per action: doubles after each outcome that did not recover, back to
    /// 1 after one that did.
    pub backoff: BTreeMap<Action, u32>,
    /// The service's error budget left (from the detector's SLO status), if known, and when
    /// it was measured: an older status arriving late does not overwrite a newer one.
    pub budget_remaining: Option<f64>,
    #[serde(default)]
    pub budget_at: Option<Timestamp>,
    /// The proposals whose outcomes were applied (newest last, bounded): a redelivered outcome
    /// does not double a back-off twice.
    #[serde(default)]
    pub outcomes_applied: Vec<Uuid>,
    /// The approved remediation whose outcome is awaited: until it arrives (or `until`),
    /// other automatic remediations of the service wait, so each outcome is one action's.
    #[serde(default)]
    pub verifying: Option<Verifying>,
}

/// A remediation approved on a service and not judged yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verifying {
    pub proposal_id: Uuid,
    pub incident_id: Uuid,
    pub action: Action,
    pub approved_at: Timestamp,
    /// Waited for at most until then (`verification_timeout` after the approval).
    pub until: Timestamp,
}

/// Outcomes remembered per service against redelivery.
const OUTCOMES_REMEMBERED: usize = 64;

impl ServiceLedger {
    pub fn on_deploy(&mut self, d: &DeployEvent) {
        self.deploys.apply(d);
        self.known = true;
    }

    pub fn on_slo(&mut self, s: &SloStatus) {
        if self.budget_at.is_none_or(|at| s.ts >= at) {
            self.budget_remaining = Some(s.budget_remaining);
            self.budget_at = Some(s.ts);
        }
    }

    /// Ends the wait for the action's verdict, and doubles (capped) or resets its cooldown
    /// back-off. A superseded action's outcome says nothing about it; a revised verdict (the
    /// recovery did not hold) counts as a failure of its own.
    pub fn on_outcome(&mut self, o: &Outcome, policy: &Policy) {
        if self.verifying.as_ref().is_some_and(|v| Some(v.proposal_id) == o.proposal_id) {
            self.verifying = None;
        }
        if !o.attributable() {
            return;
        }
        if let Some(id) = o.proposal_id {
            // A revision gets an id of its own: it follows the verdict it revises.
            let id =
                if o.revised { bus_schema::derive_id(&["revised", &id.to_string()]) } else { id };
            if self.outcomes_applied.contains(&id) {
                return;
            }
            self.outcomes_applied.push(id);
            if self.outcomes_applied.len() > OUTCOMES_REMEMBERED {
                self.outcomes_applied.remove(0);
            }
        }
        let base = policy.cooldown(&o.action);
        let max = if base.is_zero() {
            1
        } else {
            (policy.cooldown_cap.as_secs_f64() / base.as_secs_f64()).floor().max(1.0) as u32
        };
        let factor = self.backoff.entry(o.action.clone()).or_insert(1);
        *factor = if o.recovered { 1 } else { factor.saturating_mul(2).min(max) };
    }

    /// The action's cooldown with its back-off.
    pub fn cooldown(&self, action: &Action, policy: &Policy) -> Duration {
        let factor = self.backoff.get(action).copied().unwrap_or(1);
        (policy.cooldown(action) * factor).min(policy.cooldown_cap.max(policy.cooldown(action)))
    }

    pub fn last_approved(&self, action: &Action) -> Option<Timestamp> {
        self.approvals.get(action).and_then(|t| t.last().copied())
    }

    /// Approvals of `action` within `window` before `now`.
    pub fn approvals_within(&self, action: &Action, window: Duration, now: Timestamp) -> usize {
        let from = now.minus(window);
        self.approvals.get(action).map_or(0, |t| t.iter().filter(|at| **at > from).count())
    }

    pub fn record_approval(&mut self, action: &Action, at: Timestamp, policy: &Policy) {
        let keep = policy.repetition_window.max(policy.cooldown_cap);
        let times = self.approvals.entry(action.clone()).or_default();
        times.push(at);
        times.retain(|t| at.since(*t) <= keep);
    }

    /// An approval of `p` at `at` that changes something: its cooldown and repetition count,
    /// and, for a remediation of an incident, the wait for its verdict.
    pub fn on_approved(&mut self, p: &ActionProposal, at: Timestamp, policy: &Policy) {
        self.record_approval(&p.action, at, policy);
        if let Some(incident_id) = p.incident_id {
            let until = at.plus(policy.verification_timeout);
            self.verifying = Some(Verifying {
                proposal_id: p.proposal_id,
                incident_id,
                action: p.action.clone(),
                approved_at: at,
                until,
            });
        }
    }

    /// The remediation whose verdict the service still waits for at `now`, if any.
    pub fn awaiting_verdict(&self, now: Timestamp) -> Option<&Verifying> {
        self.verifying.as_ref().filter(|v| now < v.until)
    }
}

/// Governance's view of one incident.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentLedger {
    pub approved_actions: u32,
    pub signal_conflict: bool,
    pub last_seen: Option<Timestamp>,
}

impl IncidentLedger {
    /// Takes the incident's latest state; an older update read later (the incident was asked
    /// of the stream before its consumer delivered it) changes nothing.
    pub fn on_incident(&mut self, i: &Incident) {
        if self.last_seen.is_some_and(|seen| i.updated_at < seen) {
            return;
        }
        self.signal_conflict = i.signal_conflict;
        self.last_seen = Some(i.updated_at);
    }
}

/// `env/service`.
pub fn service_key(env: &str, service: &str) -> String {
    format!("{env}/{service}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(updated_at: &str, signal_conflict: bool) -> Incident {
        serde_json::from_value(serde_json::json!({
            "incident_id": "00000000-0000-0000-0000-000000000001", "env": "prod", "service": "api",
            "kind": "crash_loop", "severity": "high", "status": "updated", "summary": "s",
            "opened_at": "2026-12-05T10:00:00Z", "updated_at": updated_at,
            "signal_conflict": signal_conflict,
        }))
        .unwrap()
    }

    #[test]
    fn an_older_update_read_after_a_newer_one_changes_nothing() {
        let mut ledger = IncidentLedger::default();
        // Asked of the stream first: the latest state.
        ledger.on_incident(&incident("2026-12-05T10:05:00Z", true));
        // Then the consumer delivers the incident's history.
        ledger.on_incident(&incident("2026-12-05T10:00:00Z", false));
        assert!(ledger.signal_conflict);
        assert_eq!(ledger.last_seen, Some("2026-12-05T10:05:00Z".parse().unwrap()));
        ledger.on_incident(&incident("2026-12-05T10:06:00Z", false));
        assert!(!ledger.signal_conflict, "a newer update applies");
    }
}
