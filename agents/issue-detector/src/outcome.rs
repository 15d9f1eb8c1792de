//! Did the action help? After an executed action on an incident, the detector waits
//! `verification_s` of the service's event time, starting with the service's first event after
//! the action, and then judges: *recovered* if the incident is resolved at that moment, with
//! the time from that first event to the resolution; *not recovered* if it is still or again
//! open. A failed execution is judged
//! not recovered at once. A refused one changed nothing and is not judged.
//!
//! Judging at the end of the window rather than at the first resolution is deliberate: a
//! remedy that helps only briefly (restarting a leaking service) must not be learned as a cure.
//! The window runs on the service's own timestamps, so simulated and replayed time work; a
//! service that falls silent is judged when its next event arrives.

use std::time::Duration;

use bus_schema::{Action, ExecutionResult, ExecutionStatus, IncidentStatus, Outcome, Timestamp, Uuid};
use serde::{Deserialize, Serialize};

use crate::service::ServiceState;

/// Actions waiting to be judged per service; beyond this the oldest is judged at once.
const MAX_PENDING: usize = 64;

/// An executed action waiting for its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub proposal_id: Uuid,
    pub incident_id: Uuid,
    pub action: Action,
    /// The service's first event after the action; until it arrives, when the result came.
    pub started_at: Timestamp,
    pub deadline: Timestamp,
    /// Whether an event after the action has started the window.
    pub anchored: bool,
    /// The action's chain, which the outcome continues.
    pub correlation_id: String,
}

/// An outcome to publish, with the chain it belongs to.
pub type Judged = (Outcome, String);

/// Starts judging an execution result; returns what can be judged at once.
pub fn start(state: &mut ServiceState, r: &ExecutionResult, correlation_id: &str, verification: Duration) -> Vec<Judged> {
    let Some(incident_id) = r.incident_id else { return Vec::new() };
    let now = state.now_or(r.finished_at);
    let outcome = |recovered: bool, detail: String| Outcome {
        incident_id,
        proposal_id: Some(r.proposal_id),
        env: r.env.clone(),
        service: r.service.clone(),
        action: r.action.clone(),
        recovered,
        time_to_recover_s: None,
        judged_at: now,
        detail,
    };
    match r.status {
        ExecutionStatus::Refused => Vec::new(),
        ExecutionStatus::Failed => vec![(outcome(false, format!("the {} failed: {}", r.action, r.detail)), correlation_id.to_owned())],
        ExecutionStatus::Executed if state.verifications.iter().any(|v| v.proposal_id == r.proposal_id) => Vec::new(),
        ExecutionStatus::Executed => {
            state.verifications.push(Verification {
                proposal_id: r.proposal_id,
                incident_id,
                action: r.action.clone(),
                started_at: now,
                deadline: now.plus(verification),
                anchored: false,
                correlation_id: correlation_id.to_owned(),
            });
            let mut judged = Vec::new();
            while state.verifications.len() > MAX_PENDING {
                let oldest = state.verifications.remove(0);
                judged.push(verdict(state, &oldest, now, "judged early: too many actions waiting for a verdict on this service"));
            }
            judged
        }
    }
}

/// Judges every action whose window ended by the service's event time.
pub fn judge_due(state: &mut ServiceState) -> Vec<Judged> {
    let Some(now) = state.newest else { return Vec::new() };
    // The window starts with the first event after the action, so a service that was silent
    // when the action ran still gets the whole window.
    for v in state.verifications.iter_mut().filter(|v| !v.anchored && now > v.started_at) {
        let window = v.deadline.since(v.started_at);
        v.started_at = now;
        v.deadline = now.plus(window);
        v.anchored = true;
    }
    let (due, waiting): (Vec<Verification>, Vec<Verification>) = std::mem::take(&mut state.verifications).into_iter().partition(|v| v.deadline <= now);
    state.verifications = waiting;
    due.iter().map(|v| verdict(state, v, now, "")).collect()
}

fn verdict(state: &ServiceState, v: &Verification, now: Timestamp, note: &str) -> Judged {
    let window = v.deadline.since(v.started_at).as_secs();
    let incident = state.incidents.find(v.incident_id);
    let (recovered, time_to_recover_s, detail) = match incident {
        Some(i) if i.status == IncidentStatus::Resolved => {
            let at = i.resolved_at.unwrap_or(now);
            let ttr = at.since(v.started_at).as_secs_f64();
            let when = if at < v.started_at { "before the action was recorded".to_owned() } else { format!("{ttr:.0} s after the {}", v.action) };
            (true, Some(ttr), format!("resolved {when} and still resolved {window} s after it"))
        }
        Some(i) if i.reopen_count > 0 => (false, None, format!("{} {window} s after the {}: it came back (reopened {} times)", i.kind, v.action, i.reopen_count)),
        Some(i) => (false, None, format!("{} still open {window} s after the {}", i.kind, v.action)),
        None => (false, None, "the incident is no longer known to the detector".to_owned()),
    };
    let detail = if note.is_empty() { detail } else { format!("{detail} ({note})") };
    let outcome = Outcome {
        incident_id: v.incident_id,
        proposal_id: Some(v.proposal_id),
        env: state.env.clone(),
        service: state.service.clone(),
        action: v.action.clone(),
        recovered,
        time_to_recover_s,
        judged_at: now,
        detail,
    };
    (outcome, v.correlation_id.clone())
}
