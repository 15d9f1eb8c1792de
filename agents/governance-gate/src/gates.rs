//! The gates every proposal passes, in a fixed order; the first that fails decides.
//!
//! 0. validity: not stale (older than the policy allows) and not from the future
//!    (`invalid_proposal`)
//! 1. source: only known proposer agents (`unknown_source`)
//! 2. global block list (`globally_blocked`), whatever the policy says
//! 3. environment eligibility (`not_eligible_in_env`)
//! 4. prerequisites: the service is known from a deploy; a rollback has a version to go back
//!    to (`missing_prerequisite`); `noop` and `observe` need nothing
//! 5. confidence at or above the environment's minimum (`low_confidence`)
//! 6. cooldown per env/service/action since its last approval (`cooldown_active`)
//! 7. a human, where the policy says so (`approval_required`, pending)
//!
//! Everything here is pure: the caller supplies the facts and the time.

use std::collections::BTreeMap;
use std::time::Duration;

use bus_schema::{Action, ActionProposal, DeployHistory, ReasonCode, Timestamp};
use serde_json::{Value, json};

use crate::policy::{Eligibility, Policy};

/// What governance knows when it decides.
#[derive(Debug, Default)]
pub struct Facts {
    /// By `env/service`.
    pub services: BTreeMap<String, DeployHistory>,
    /// Last approval time by `env/service/action`.
    pub last_approved: BTreeMap<String, Timestamp>,
}

pub fn service_key(env: &str, service: &str) -> String {
    format!("{env}/{service}")
}

pub fn cooldown_key(p: &ActionProposal) -> String {
    format!("{}/{}/{}", p.env, p.service, p.action)
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

pub fn decide(policy: &Policy, facts: &Facts, p: &ActionProposal, now: Timestamp) -> Verdict {
    let age = now.since(p.proposed_at);
    if age > policy.max_proposal_age {
        return refuse(ReasonCode::InvalidProposal, json!({"problem": "stale", "proposed_at": p.proposed_at, "age_s": round_ms(age), "max_age_s": policy.max_proposal_age.as_secs()}));
    }
    if p.proposed_at.since(now) > MAX_SKEW {
        return refuse(ReasonCode::InvalidProposal, json!({"problem": "from the future", "proposed_at": p.proposed_at, "now": now}));
    }
    if !policy.proposers.iter().any(|a| a == p.proposer.as_str()) {
        return refuse(ReasonCode::UnknownSource, json!({"proposer": p.proposer, "known": policy.proposers}));
    }
    if p.action.is_globally_blocked() {
        return refuse(ReasonCode::GloballyBlocked, json!({"action": p.action}));
    }
    let env = policy.for_env(p.env.as_str());
    let eligibility = env.eligibility(&p.action);
    if eligibility == Eligibility::NotEligible {
        return refuse(ReasonCode::NotEligibleInEnv, json!({"allowed": env.automatic, "with_human": env.human}));
    }
    if !matches!(p.action, Action::Noop | Action::Observe) {
        let Some(service) = facts.services.get(&service_key(p.env.as_str(), p.service.as_str())) else {
            return refuse(ReasonCode::MissingPrerequisite, json!({"missing": "service_known", "hint": "no deploy event seen for this env/service"}));
        };
        if p.action == Action::Rollback && service.rollback_target().is_none() {
            return refuse(ReasonCode::MissingPrerequisite, json!({"missing": "previous_version", "hint": "no earlier version known to roll back to"}));
        }
    }
    if let Some(min) = env.min_confidence {
        if p.confidence < min {
            return refuse(ReasonCode::LowConfidence, json!({"confidence": p.confidence, "min_confidence": min}));
        }
    }
    let cooldown = policy.cooldown(&p.action);
    if let Some(last) = facts.last_approved.get(&cooldown_key(p)) {
        let since = now.since(*last);
        if since < cooldown {
            let remaining = cooldown - since;
            return refuse(
                ReasonCode::CooldownActive,
                json!({"cooldown_s": cooldown.as_secs_f64(), "remaining_s": round_ms(remaining), "last_approved": last}),
            );
        }
    }
    if eligibility == Eligibility::NeedsHuman {
        return Verdict::NeedsHuman { why: format!("{} in {} needs a human's approval", p.action, p.env) };
    }
    Verdict::Approve
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_schema::{DeployEvent, Uuid};

    fn proposal(env: &str, action: Action, confidence: f64) -> ActionProposal {
        ActionProposal {
            proposal_id: Uuid::from_u128(7),
            incident_id: None,
            env: env.parse().unwrap(),
            service: "api".parse().unwrap(),
            action,
            params: Default::default(),
            confidence,
            proposer: "rl-optimizer".parse().unwrap(),
            explanation: String::new(),
            candidates: vec![],
            exploratory: false,
            proposed_at: Timestamp::now(),
        }
    }

    fn known(envs: &[&str], versions: &[&str]) -> Facts {
        let mut facts = Facts::default();
        for env in envs {
            let mut f = DeployHistory::default();
            for v in versions {
                let e: DeployEvent = serde_json::from_value(json!({"service":"api","env":env,"version":v,"status":"succeeded","timestamp":"2026-11-22T10:00:00Z"})).unwrap();
                f.apply(&e);
            }
            facts.services.insert(service_key(env, "api"), f);
        }
        facts
    }

    fn reason(v: Verdict) -> Option<ReasonCode> {
        match v {
            Verdict::Refuse { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn a_restart_in_stage_of_a_known_service_is_approved() {
        let p = proposal("stage", Action::Restart, 0.8);
        assert_eq!(decide(&Policy::default(), &known(&["stage"], &["1.0"]), &p, Timestamp::now()), Verdict::Approve);
    }

    #[test]
    fn prod_rollback_needs_a_human_and_a_version_to_go_back_to() {
        let p = proposal("prod", Action::Rollback, 0.9);
        let policy = Policy::default();
        assert_eq!(reason(decide(&policy, &known(&["prod"], &["1.0"]), &p, Timestamp::now())), Some(ReasonCode::MissingPrerequisite));
        assert!(matches!(decide(&policy, &known(&["prod"], &["1.0", "1.1"]), &p, Timestamp::now()), Verdict::NeedsHuman { .. }));
    }

    #[test]
    fn unknown_services_unknown_envs_and_unknown_sources() {
        let policy = Policy::default();
        let now = Timestamp::now();
        assert_eq!(reason(decide(&policy, &Facts::default(), &proposal("stage", Action::Restart, 0.9), now)), Some(ReasonCode::MissingPrerequisite));
        assert_eq!(reason(decide(&policy, &known(&["qa"], &["1"]), &proposal("qa", Action::Restart, 0.9), now)), Some(ReasonCode::NotEligibleInEnv));
        assert_eq!(decide(&policy, &Facts::default(), &proposal("qa", Action::Observe, 0.1), now), Verdict::Approve);
        let mut stranger = proposal("dev", Action::Restart, 0.9);
        stranger.proposer = "someone".parse().unwrap();
        assert_eq!(reason(decide(&policy, &known(&["dev"], &["1"]), &stranger, now)), Some(ReasonCode::UnknownSource));
    }

    #[test]
    fn the_block_list_wins_over_everything() {
        let mut policy = Policy::default();
        let drop_db: Action = "drop_database".parse().unwrap();
        policy.envs.get_mut("dev").unwrap().automatic.push(drop_db.clone());
        assert_eq!(reason(decide(&policy, &known(&["dev"], &["1"]), &proposal("dev", drop_db, 1.0), Timestamp::now())), Some(ReasonCode::GloballyBlocked));
    }

    #[test]
    fn confidence_exactly_at_the_threshold_passes() {
        let facts = known(&["stage"], &["1"]);
        let policy = Policy::default();
        assert_eq!(decide(&policy, &facts, &proposal("stage", Action::Restart, 0.6), Timestamp::now()), Verdict::Approve);
        assert_eq!(reason(decide(&policy, &facts, &proposal("stage", Action::Restart, 0.5999), Timestamp::now())), Some(ReasonCode::LowConfidence));
    }

    #[test]
    fn stale_and_future_proposals_are_invalid() {
        let facts = known(&["stage"], &["1"]);
        let policy = Policy::default();
        let p = proposal("stage", Action::Restart, 0.8);
        let later = p.proposed_at.plus(Duration::from_secs(301));
        assert_eq!(reason(decide(&policy, &facts, &p, later)), Some(ReasonCode::InvalidProposal));
        assert_eq!(decide(&policy, &facts, &p, p.proposed_at.plus(Duration::from_secs(300))), Verdict::Approve);
        let earlier = p.proposed_at.minus(Duration::from_secs(61));
        assert_eq!(reason(decide(&policy, &facts, &p, earlier)), Some(ReasonCode::InvalidProposal));
    }

    #[test]
    fn the_cooldown_holds_until_exactly_its_length() {
        let mut facts = known(&["stage"], &["1"]);
        let p = proposal("stage", Action::Restart, 0.8);
        let t0 = Timestamp::now();
        facts.last_approved.insert(cooldown_key(&p), t0);
        let policy = Policy::default();
        assert_eq!(reason(decide(&policy, &facts, &p, t0.plus(Duration::from_millis(59_900)))), Some(ReasonCode::CooldownActive));
        assert_eq!(decide(&policy, &facts, &p, t0.plus(Duration::from_secs(60))), Verdict::Approve);
        // Another action on the same service has its own cooldown.
        assert_eq!(decide(&policy, &facts, &proposal("stage", Action::ScaleUp, 0.8), t0), Verdict::Approve);
    }
}
