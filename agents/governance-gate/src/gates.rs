//! The gates every proposal passes, in a fixed order; the first that fails decides.
//!
//! | # | gate | refusal |
//! |---|---|---|
//! | 1 | validity: not stale (older than `max_proposal_age`), not from the future; not exploratory outside `explore_envs` (never prod); parameters that fit the action (a canary weight of 1–99, at least 1 replica); a remediation names its incident (except the deploy agent's rollback of a rollout it aborted) | `invalid_proposal` |
//! | 2 | source: only the policy's proposer agents | `unknown_source` |
//! | 3 | global block list, whatever the policy says | `globally_blocked` |
//! | 4 | environment eligibility (unknown environments: `noop`, `observe`) | `not_eligible_in_env` |
//! | 5 | prerequisites: the service is known from a deploy; a rollback has a version to go back to (and, if it names one, that version); canary actions, and a rollback that names no incident, need a rollout in progress; the incident is known | `missing_prerequisite` |
//! | 6 | error-budget freeze: the policy's freeze actions while the budget is spent | `error_budget_freeze` |
//! | 7 | signal conflict: the incident's sources disagree, so only `noop`/`observe` | `signal_conflict` |
//! | 8 | confidence at or above the environment's minimum; exploratory proposals too, while `noop`, `observe` and proposals that ask a human are never refused for it | `low_confidence` |
//! | 9 | one action at a time: no other remediation of the service is waiting for its verdict (until its outcome, at most `verification_timeout`) | `verification_pending` |
//! | 10 | cooldown per env/service/action since its last approval, doubled per failed outcome | `cooldown_active` |
//! | 11 | repetition: at most `repetition_limit` approvals of the action in `repetition_window` | `repetition_suppressed` |
//! | 12 | per-incident action budget; a proposal that asks a human goes to one instead | `action_budget_exhausted` |
//! | 13 | a human, where the policy says so or the proposer asks for one (`require_human`) | `approval_required` (pending) |
//!
//! `noop` and `observe` change nothing, so gates 5–7 and 9–12 do not apply to them. A
//! proposal a human approved runs through gates 2–11 again when the decision arrives: a human
//! can say yes to what policy sends to humans, not to what policy forbids — but a human may
//! act while another action is being verified (gate 9), and beyond the automatic budget (gate
//! 12), which are there to keep automation attributable and bounded. Refused attempts leave
//! no trace in the cooldown or repetition ledgers. Everything here is pure.

use std::time::Duration;

use bus_schema::{Action, ActionProposal, ReasonCode, Timestamp};
use serde_json::{Value, json};

use crate::ledger::{IncidentLedger, ServiceLedger};
use policy::{Eligibility, Policy};

/// What governance knows about the proposal's service and incident.
#[derive(Debug, Clone, Copy, Default)]
pub struct View<'a> {
    pub service: Option<&'a ServiceLedger>,
    pub incident: Option<&'a IncidentLedger>,
}

/// Who is asking for the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A fresh proposal.
    Proposal,
    /// A proposal a human has just approved.
    HumanApproved,
}

/// The outcome of the gates.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Approve,
    Refuse { reason: ReasonCode, detail: Value },
    NeedsHuman { why: String },
}

fn refuse(reason: ReasonCode, detail: Value) -> Verdict {
    Verdict::Refuse { reason, detail }
}

/// How far in the future a proposal's timestamp may be (clock skew between hosts).
const MAX_SKEW: Duration = Duration::from_secs(60);

pub fn changes_nothing(action: &Action) -> bool {
    matches!(action, Action::Noop | Action::Observe)
}

fn is_canary_action(action: &Action) -> bool {
    matches!(action, Action::SetCanaryWeight | Action::Promote | Action::AbortRollout)
}

pub fn decide(
    policy: &Policy,
    view: View<'_>,
    p: &ActionProposal,
    now: Timestamp,
    mode: Mode,
) -> Verdict {
    if mode == Mode::Proposal {
        let age = now.since(p.proposed_at);
        if age > policy.max_proposal_age {
            return refuse(
                ReasonCode::InvalidProposal,
                json!({"problem": "stale", "proposed_at": p.proposed_at, "age_s": secs(age), "max_age_s": policy.max_proposal_age.as_secs()}),
            );
        }
        if p.proposed_at.since(now) > MAX_SKEW {
            return refuse(
                ReasonCode::InvalidProposal,
                json!({"problem": "from the future", "proposed_at": p.proposed_at, "now": now}),
            );
        }
    }
    if p.exploratory && !policy.explore_envs.iter().any(|e| e == p.env.as_str()) {
        return refuse(
            ReasonCode::InvalidProposal,
            json!({"problem": "an exploratory proposal in an environment where nothing is tried out", "explore_envs": policy.explore_envs}),
        );
    }
    if let Some(problem) = invalid_params(p) {
        return refuse(
            ReasonCode::InvalidProposal,
            json!({"problem": problem, "params": p.params}),
        );
    }
    if !policy.proposers.iter().any(|a| a == p.proposer.as_str()) {
        return refuse(
            ReasonCode::UnknownSource,
            json!({"proposer": p.proposer, "known": policy.proposers}),
        );
    }
    if p.action.is_globally_blocked() {
        return refuse(ReasonCode::GloballyBlocked, json!({"action": p.action}));
    }
    let env = policy.for_env(p.env.as_str());
    let eligibility = env.eligibility(&p.action);
    if eligibility == Eligibility::NotEligible {
        return refuse(
            ReasonCode::NotEligibleInEnv,
            json!({"allowed": env.automatic, "with_human": env.human}),
        );
    }
    let service = view.service.filter(|s| s.known);
    if !changes_nothing(&p.action) {
        let Some(service) = service else {
            return refuse(
                ReasonCode::MissingPrerequisite,
                json!({"missing": "service_known", "hint": "no deploy event seen for this env/service"}),
            );
        };
        if p.action == Action::Rollback {
            let target = service.deploys.rollback_target();
            if target.is_none() {
                return refuse(
                    ReasonCode::MissingPrerequisite,
                    json!({"missing": "previous_version", "hint": "no earlier version known to roll back to"}),
                );
            }
            if let Some(asked) =
                p.params.target_version.as_deref().filter(|asked| Some(*asked) != target)
            {
                return refuse(
                    ReasonCode::MissingPrerequisite,
                    json!({"missing": "rollback_target", "asked": asked, "known": target, "hint": "the version to roll back to is not (or no longer) the service's previous version"}),
                );
            }
        }
        if p.incident_id.is_some() && view.incident.is_none() {
            return refuse(
                ReasonCode::MissingPrerequisite,
                json!({"missing": "incident_known", "hint": "governance has not seen the incident this proposal is about"}),
            );
        }
        let ends_rollout = p.action == Action::Rollback && p.incident_id.is_none();
        if (is_canary_action(&p.action) || ends_rollout) && !service.deploys.rollout_in_progress() {
            return refuse(
                ReasonCode::MissingPrerequisite,
                json!({"missing": "rollout_in_progress", "hint": "no deploy of this service has started and not yet ended"}),
            );
        }
        if policy.freeze_actions.contains(&p.action) {
            if let Some(left) = service.budget_remaining.filter(|b| *b <= 0.0) {
                return refuse(
                    ReasonCode::ErrorBudgetFreeze,
                    json!({"budget_remaining": left, "frozen": policy.freeze_actions}),
                );
            }
        }
        if view.incident.is_some_and(|i| i.signal_conflict) {
            return refuse(
                ReasonCode::SignalConflict,
                json!({"hint": "the incident's sources disagree; only noop and observe until they agree"}),
            );
        }
    }
    // Doing nothing needs no confidence, and a human judges what is put to a human.
    if let Some(min) =
        env.min_confidence.filter(|_| !changes_nothing(&p.action) && !p.require_human)
    {
        if p.confidence < min {
            return refuse(
                ReasonCode::LowConfidence,
                json!({"confidence": p.confidence, "min_confidence": min}),
            );
        }
    }
    if let (Some(service), false) = (service, changes_nothing(&p.action)) {
        let other = service.awaiting_verdict(now).filter(|v| v.proposal_id != p.proposal_id);
        if let (Some(v), Some(_), Mode::Proposal) = (other, p.incident_id, mode) {
            return refuse(
                ReasonCode::VerificationPending,
                json!({"awaiting": v.proposal_id, "action": v.action, "incident_id": v.incident_id, "approved_at": v.approved_at, "until": v.until,
                       "hint": "one remediation at a time per service, so that each outcome is credited to one action"}),
            );
        }
        let cooldown = service.cooldown(&p.action, policy);
        if let Some(last) = service.last_approved(&p.action) {
            let since = now.since(last);
            if since < cooldown {
                let backoff = service.backoff.get(&p.action).copied().unwrap_or(1);
                return refuse(
                    ReasonCode::CooldownActive,
                    json!({"cooldown_s": secs(cooldown), "remaining_s": secs(cooldown - since), "last_approved": last, "backoff": backoff}),
                );
            }
        }
        let recent = service.approvals_within(&p.action, policy.repetition_window, now);
        if recent >= policy.repetition_limit as usize {
            return refuse(
                ReasonCode::RepetitionSuppressed,
                json!({"approved_in_window": recent, "limit": policy.repetition_limit, "window_s": policy.repetition_window.as_secs()}),
            );
        }
        if let Some(incident) =
            view.incident.filter(|i| i.approved_actions >= policy.actions_per_incident)
        {
            let spent = format!(
                "the incident's automatic budget of {} actions is spent",
                policy.actions_per_incident
            );
            match mode {
                Mode::HumanApproved => {}
                Mode::Proposal if p.require_human => {
                    return Verdict::NeedsHuman {
                        why: format!("{spent}; {} asks a human: {}", p.proposer, p.explanation),
                    };
                }
                Mode::Proposal => {
                    return refuse(
                        ReasonCode::ActionBudgetExhausted,
                        json!({"approved_for_incident": incident.approved_actions, "limit": policy.actions_per_incident}),
                    );
                }
            }
        }
    }
    if eligibility == Eligibility::NeedsHuman && mode == Mode::Proposal {
        return Verdict::NeedsHuman {
            why: format!("{} in {} needs a human's approval", p.action, p.env),
        };
    }
    if p.require_human && mode == Mode::Proposal {
        return Verdict::NeedsHuman {
            why: format!("{} asks a human: {}", p.proposer, p.explanation),
        };
    }
    Verdict::Approve
}

/// What is wrong with a proposal's parameters for its action, if anything.
fn invalid_params(p: &ActionProposal) -> Option<&'static str> {
    let remediation = !changes_nothing(&p.action) && !is_canary_action(&p.action);
    // The deploy agent rolls back a canary it aborted: the rollout, not an incident, is why
    // (gate 5 checks a rollout is in progress).
    let ends_rollout =
        p.action == Action::Rollback && p.proposer == bus_schema::fleet::DEPLOY_AGENT;
    match &p.action {
        Action::SetCanaryWeight
            if !p.params.canary_weight.is_some_and(|w| (1..=99).contains(&w)) =>
        {
            Some(
                "set_canary_weight needs a canary_weight of 1..=99 (100 % is a promotion: propose promote)",
            )
        }
        Action::ScaleUp | Action::ScaleDown if p.params.replicas == Some(0) => {
            Some("replicas must be at least 1 (scaling to zero is not a remedy)")
        }
        _ if remediation && p.incident_id.is_none() && !ends_rollout => {
            Some("a remediation must name the incident it remedies")
        }
        _ => None,
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
#[path = "gates_tests.rs"]
mod tests;
