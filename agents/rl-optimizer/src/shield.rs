//! The shield: what the optimizer may propose at all, and where it may explore.
//!
//! **Candidates** for an incident are the actions governance's policy allows in its
//! environment (automatic and human lists of the same [`Policy`] governance runs, the built-in
//! defaults or `--policy FILE`), minus
//! - anything on the global block list (refused whatever a policy says),
//! - canary actions (`set_canary_weight`, `promote`, `abort_rollout`: they steer a rollout and
//!   are the deploy agent's),
//! - every action that changes something while no deploy of the service was seen (governance
//!   refuses those: it does not act on services it does not know),
//! - `rollback` unless a deploy is implicated by evidence *and* there is a version to go back
//!   to, by the same deploy history governance keeps,
//! - everything but doing nothing when the incident's sources disagree (governance refuses
//!   the rest as `signal_conflict`),
//!
//! and of `noop` and `observe`, which both change nothing, only the first the policy lists. So
//! nothing the shield offers is refused as `missing_prerequisite`, and the learner never
//! learns a value for something governance must refuse.
//!
//! **Exploration** happens only in the environments the policy's `explore_envs` lists (none by
//! default) and never in `prod`, whatever the list says: that is a hard rule here, not a setting.

use bus_schema::{Action, DeployEvent, DeployHistory, Incident};
use policy::Policy;
use serde::{Deserialize, Serialize};

use crate::context::deploy_implicated;
use crate::values::does_nothing;

/// The environment where nothing is ever tried out.
pub const PROD: &str = "prod";

/// What the optimizer knows of a service from its deploy events: what governance's
/// prerequisites are checked against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceFacts {
    pub deploys: DeployHistory,
    /// A deploy event was seen: governance knows the service.
    pub known: bool,
}

impl ServiceFacts {
    pub fn on_deploy(&mut self, d: &DeployEvent) {
        self.deploys.apply(d);
        self.known = true;
    }
}

/// The actions the optimizer may propose for `incident`, in the policy's order.
pub fn candidates(
    policy: &Policy,
    incident: &Incident,
    facts: Option<&ServiceFacts>,
) -> Vec<Action> {
    let env = policy.for_env(incident.env.as_str());
    let known = facts.is_some_and(|f| f.known);
    let can_roll_back =
        deploy_implicated(incident) && facts.is_some_and(|f| f.deploys.rollback_target().is_some());
    let mut out: Vec<Action> = Vec::new();
    for action in env.automatic.iter().chain(&env.human) {
        let allowed = if does_nothing(action) {
            !out.iter().any(does_nothing)
        } else {
            !action.is_globally_blocked()
                && !action.is_canary()
                && known
                && (*action != Action::Rollback || can_roll_back)
                && !incident.signal_conflict
        };
        if allowed && !out.contains(action) {
            out.push(action.clone());
        }
    }
    out
}

/// How much to explore in `env`: ε where the policy's `explore_envs` lists it, 0 elsewhere,
/// and always 0 in prod.
pub fn epsilon_for(policy: &Policy, epsilon: f64, env: &str) -> f64 {
    if env == PROD || !policy.explore_envs.iter().any(|e| e == env) { 0.0 } else { epsilon }
}
