//! The shield: what the optimizer may propose at all, and where it may explore.
//!
//! **Candidates** for an incident are the actions governance's policy allows in its
//! environment (automatic and human lists of the same [`Policy`] governance runs, the DESIGN §6
//! defaults or `--policy FILE`), minus
//! - anything on the global block list (refused whatever a policy says),
//! - canary actions (`set_canary_weight`, `promote`, `abort_rollout`: they steer a rollout and
//!   are the deploy agent's),
//! - `rollback` unless a deploy is implicated (a suspect version, or a deploy kind): without
//!   one there is nothing to go back from, and governance would refuse it for want of a
//!   version anyway,
//! - everything but `noop` and `observe` when the incident's sources disagree (governance
//!   refuses the rest as `signal_conflict`).
//!
//! So the learner never wastes a proposal on something governance must refuse, and never
//! learns a value for it.
//!
//! **Exploration** happens only in the environments listed (`--explore-envs`, default dev and
//! stage) and never in `prod`, whatever the list says: that is a hard rule here, not a setting.

use bus_schema::{Action, Incident};
use governance_gate::policy::Policy;

use crate::state::recent_deploy;

/// The environment where nothing is ever tried out.
pub const PROD: &str = "prod";

/// The actions the optimizer may propose for `incident`, in the policy's order.
pub fn candidates(policy: &Policy, incident: &Incident) -> Vec<Action> {
    let env = policy.for_env(incident.env.as_str());
    let deploy = recent_deploy(incident);
    let mut out: Vec<Action> = Vec::new();
    for action in env.automatic.iter().chain(&env.human) {
        let allowed = !action.is_globally_blocked()
            && !action.is_canary()
            && (*action != Action::Rollback || deploy)
            && (!incident.signal_conflict || matches!(action, Action::Noop | Action::Observe));
        if allowed && !out.contains(action) {
            out.push(action.clone());
        }
    }
    out
}

/// Where exploration is allowed and how much.
#[derive(Debug, Clone, PartialEq)]
pub struct Exploration {
    pub envs: Vec<String>,
    pub epsilon: f64,
}

impl Exploration {
    /// The ε for a decision in `env`: 0 outside the listed environments, and always 0 in prod.
    pub fn epsilon_for(&self, env: &str) -> f64 {
        if env == PROD || !self.envs.iter().any(|e| e == env) { 0.0 } else { self.epsilon }
    }
}
