//! Did the action help? After an executed action on an incident, the detector waits
//! `verification_s` of the service's event time, starting with the service's first event after
//! the action, and then judges: *recovered* if the incident is resolved at that moment, with
//! the time from that first event to the resolution; *not recovered* if it is still or again
//! open. A failed execution is judged not recovered at once. A refused one changed nothing and
//! is not judged.
//!
//! Judging at the end of the window rather than at the first resolution is deliberate: a
//! remedy that helps only briefly (restarting a leaking service) must not be learned as a cure.
//! And a recovery must *hold*: it is watched (a [`Hold`]) until the flap window after the
//! resolution has passed, and if the service falls ill again meanwhile — the incident comes
//! back, or another opens (an SLO burn alert excepted: it trails the errors before) — the
//! verdict is revised to not recovered (an outcome with `revised: true`), so a restart that
//! holds a little longer than the window is not learned as a cure either. Likewise at the end
//! of the window: an incident that was open beside the action's and came back makes it not
//! recovered.
//!
//! Credit goes to the action whose window it is: when another action that changes something
//! runs on the service before a window ends, the earlier action is judged *superseded*
//! (`superseded_by`, not recovered, and not to be learned from) and only the newer one is
//! judged. Governance lets one action at a time be verified per service, so this happens only
//! when a human approves a follow-up, or a verification outlived governance's wait.
//!
//! The window runs on the service's own timestamps, so simulated and replayed time work; a
//! service that falls silent is judged when its next event arrives.

use std::time::Duration;

use bus_schema::{
    Action, ExecutionResult, ExecutionStatus, Incident, IncidentKind, IncidentStatus, Outcome,
    Timestamp, Uuid,
};

pub use crate::records::{Hold, Verification};
use crate::service::ServiceState;

/// Actions waiting to be judged per service; beyond this the oldest is judged at once.
const MAX_PENDING: usize = 64;

/// An outcome to publish, with the chain it belongs to.
pub type Judged = (Outcome, String);

fn outcome_of(
    state: &ServiceState,
    proposal_id: Uuid,
    incident_id: Uuid,
    action: &Action,
    recovered: bool,
    now: Timestamp,
    detail: String,
) -> Outcome {
    Outcome {
        incident_id,
        proposal_id: Some(proposal_id),
        env: state.env.clone(),
        service: state.service.clone(),
        action: action.clone(),
        recovered,
        time_to_recover_s: None,
        judged_at: now,
        detail,
        revised: false,
        superseded_by: None,
    }
}

/// Starts judging an execution result; returns what can be judged at once: a failure, and
/// the actions this one supersedes.
pub fn start(
    state: &mut ServiceState,
    r: &ExecutionResult,
    correlation_id: &str,
    verification: Duration,
) -> Vec<Judged> {
    let Some(incident_id) = r.incident_id else { return Vec::new() };
    let now = state.now_or(r.finished_at);
    match r.status {
        ExecutionStatus::Refused => Vec::new(),
        ExecutionStatus::Failed => {
            let detail = format!("the {} failed: {}", r.action, r.detail);
            vec![(
                outcome_of(state, r.proposal_id, incident_id, &r.action, false, now, detail),
                correlation_id.to_owned(),
            )]
        }
        ExecutionStatus::Executed
            if state.verifications.iter().any(|v| v.proposal_id == r.proposal_id) =>
        {
            Vec::new()
        }
        ExecutionStatus::Executed => {
            // What ran before this one and is still in its window can no longer be credited
            // with what follows. Observing changes nothing, so it supersedes nothing.
            let mut judged = Vec::new();
            if !matches!(r.action, Action::Noop | Action::Observe) {
                let (superseded, waiting): (Vec<Verification>, Vec<Verification>) =
                    std::mem::take(&mut state.verifications)
                        .into_iter()
                        .partition(|v| !matches!(v.action, Action::Noop | Action::Observe));
                state.verifications = waiting;
                for v in superseded {
                    let ran = now.since(v.started_at).as_secs();
                    let detail = format!(
                        "superseded: {} (proposal {}) ran on the service {ran} s into the {}'s window, so what follows is not credited to it",
                        r.action, r.proposal_id, v.action
                    );
                    let mut o = outcome_of(
                        state,
                        v.proposal_id,
                        v.incident_id,
                        &v.action,
                        false,
                        now,
                        detail,
                    );
                    o.superseded_by = Some(r.proposal_id);
                    judged.push((o, v.correlation_id));
                }
            }
            let mut open_then: Vec<Uuid> = state.incidents.open().map(|i| i.incident_id).collect();
            if !open_then.contains(&incident_id) {
                open_then.push(incident_id);
            }
            state.verifications.push(Verification {
                proposal_id: r.proposal_id,
                incident_id,
                action: r.action.clone(),
                started_at: now,
                deadline: now.plus(verification),
                anchored: false,
                correlation_id: correlation_id.to_owned(),
                open_then,
            });
            while state.verifications.len() > MAX_PENDING {
                let oldest = state.verifications.remove(0);
                judged.push(verdict(
                    state,
                    &oldest,
                    now,
                    "judged early: too many actions waiting for a verdict on this service",
                ));
            }
            judged
        }
    }
}

/// Revises the recoveries that did not hold: the service fell ill again — an incident of it
/// opened or reopened — before their watch ended. A new SLO burn alert is not a relapse: it
/// trails the errors that came before the recovery.
pub fn revise(state: &mut ServiceState, changed: &[Incident]) -> Vec<Judged> {
    let Some(relapse) = changed
        .iter()
        .find(|i| i.status == IncidentStatus::Opened && i.kind != IncidentKind::SloBurn)
    else {
        return Vec::new();
    };
    let (broken, _expired): (Vec<Hold>, Vec<Hold>) =
        std::mem::take(&mut state.holds).into_iter().partition(|h| h.until > relapse.updated_at);
    broken
        .into_iter()
        .map(|h| {
            let after = relapse.updated_at.since(h.resolved_at).as_secs();
            let what = if relapse.incident_id == h.incident_id { "came back" } else { "followed" };
            let detail = format!(
                "{} {what} {after} s after the {}'s recovery: it did not hold",
                relapse.kind, h.action
            );
            let mut o = outcome_of(
                state,
                h.proposal_id,
                h.incident_id,
                &h.action,
                false,
                relapse.updated_at,
                detail,
            );
            o.revised = true;
            (o, h.correlation_id)
        })
        .collect()
}

/// Judges every action whose window ended by the service's event time.
pub fn judge_due(state: &mut ServiceState, flap_window: Duration) -> Vec<Judged> {
    let Some(now) = state.newest else { return Vec::new() };
    // The window starts with the first event after the action, so a service that was silent
    // when the action ran still gets the whole window.
    for v in state.verifications.iter_mut().filter(|v| !v.anchored && now > v.started_at) {
        let window = v.deadline.since(v.started_at);
        v.started_at = now;
        v.deadline = now.plus(window);
        v.anchored = true;
    }
    let (due, waiting): (Vec<Verification>, Vec<Verification>) =
        std::mem::take(&mut state.verifications).into_iter().partition(|v| v.deadline <= now);
    state.verifications = waiting;
    state.holds.retain(|h| h.until > now);
    let judged: Vec<Judged> = due.iter().map(|v| verdict(state, v, now, "")).collect();
    // A recovery is watched until the incident can no longer come back as the same incident.
    for (o, correlation_id) in judged.iter().filter(|(o, _)| o.recovered) {
        let (Some(proposal_id), Some(resolved_at)) =
            (o.proposal_id, state.incidents.find(o.incident_id).and_then(|i| i.resolved_at))
        else {
            continue;
        };
        let until = resolved_at.plus(flap_window);
        if until > now {
            state.holds.push(Hold {
                proposal_id,
                incident_id: o.incident_id,
                action: o.action.clone(),
                resolved_at,
                until,
                correlation_id: correlation_id.clone(),
            });
        }
    }
    if state.holds.len() > MAX_PENDING {
        state.holds.drain(..state.holds.len() - MAX_PENDING);
    }
    judged
}

fn verdict(state: &ServiceState, v: &Verification, now: Timestamp, note: &str) -> Judged {
    let window = v.deadline.since(v.started_at).as_secs();
    let incident = state.incidents.find(v.incident_id);
    let back = v
        .open_then
        .iter()
        .filter(|id| **id != v.incident_id)
        .filter_map(|id| state.incidents.find(*id))
        .find(|i| i.status != IncidentStatus::Resolved && i.reopen_count > 0);
    if let (Some(i), Some(b)) = (incident.filter(|i| i.status == IncidentStatus::Resolved), back) {
        let detail = format!(
            "{} resolved, but {} (open beside it when the {} ran) came back",
            i.kind, b.kind, v.action
        );
        return (
            outcome_of(state, v.proposal_id, v.incident_id, &v.action, false, now, detail),
            v.correlation_id.clone(),
        );
    }
    let (recovered, time_to_recover_s, detail) = match incident {
        Some(i) if i.status == IncidentStatus::Resolved => {
            let at = i.resolved_at.unwrap_or(now);
            let ttr = at.since(v.started_at).as_secs_f64();
            let when = if at < v.started_at {
                "before the action was recorded".to_owned()
            } else {
                format!("{ttr:.0} s after the {}", v.action)
            };
            (true, Some(ttr), format!("resolved {when} and still resolved {window} s after it"))
        }
        Some(i) if i.reopen_count > 0 => (
            false,
            None,
            format!(
                "{} {window} s after the {}: it came back (reopened {} times)",
                i.kind, v.action, i.reopen_count
            ),
        ),
        Some(i) => {
            (false, None, format!("{} still open {window} s after the {}", i.kind, v.action))
        }
        None => (false, None, "the incident is no longer known to the detector".to_owned()),
    };
    let detail = if note.is_empty() { detail } else { format!("{detail} ({note})") };
    let mut outcome =
        outcome_of(state, v.proposal_id, v.incident_id, &v.action, recovered, now, detail);
    outcome.time_to_recover_s = time_to_recover_s;
    (outcome, v.correlation_id.clone())
}
