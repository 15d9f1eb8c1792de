//! The governance policy: which actions each environment approves automatically, which need a
//! human, the confidence each requires, and the cooldown of each action (DESIGN §6 defaults).

use std::collections::BTreeMap;
use std::time::Duration;

use bus_schema::Action;

/// One environment's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvPolicy {
    /// Approved without a human (subject to the other gates).
    pub automatic: Vec<Action>,
    /// Allowed only with a human's approval.
    pub human: Vec<Action>,
    /// Whether operator-defined actions are allowed (always with a human).
    pub custom_with_human: bool,
    /// Proposals below this confidence are refused; `None` means no threshold.
    pub min_confidence: Option<f64>,
}

/// How an environment treats an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    Automatic,
    NeedsHuman,
    NotEligible,
}

impl EnvPolicy {
    pub fn eligibility(&self, action: &Action) -> Eligibility {
        if self.automatic.contains(action) {
            Eligibility::Automatic
        } else if self.human.contains(action) || (!action.is_built_in() && self.custom_with_human) {
            Eligibility::NeedsHuman
        } else {
            Eligibility::NotEligible
        }
    }
}

/// The whole policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub envs: BTreeMap<String, EnvPolicy>,
    /// For environments the policy does not name.
    pub unknown_env: EnvPolicy,
    pub cooldowns: BTreeMap<Action, Duration>,
    /// Agents whose proposals are considered at all.
    pub proposers: Vec<String>,
    /// Proposals older than this are stale (a backlog replayed after an outage, a new
    /// consumer reading history) and refused, never approved late.
    pub max_proposal_age: Duration,
}

impl Policy {
    pub fn for_env(&self, env: &str) -> &EnvPolicy {
        self.envs.get(env).unwrap_or(&self.unknown_env)
    }

    pub fn cooldown(&self, action: &Action) -> Duration {
        self.cooldowns.get(action).copied().unwrap_or(Duration::ZERO)
    }
}

impl Default for Policy {
    /// DESIGN §6.
    fn default() -> Self {
        use Action::*;
        let all = Action::BUILT_IN.to_vec();
        let envs = BTreeMap::from([
            ("dev".to_owned(), EnvPolicy { automatic: all.clone(), human: vec![], custom_with_human: false, min_confidence: Some(0.5) }),
            ("stage".to_owned(), EnvPolicy { automatic: all, human: vec![], custom_with_human: false, min_confidence: Some(0.6) }),
            (
                "prod".to_owned(),
                EnvPolicy {
                    automatic: vec![Noop, Observe, Restart, ScaleUp, SetCanaryWeight, AbortRollout],
                    human: vec![Rollback, ScaleDown, Promote],
                    custom_with_human: true,
                    min_confidence: Some(0.6),
                },
            ),
        ]);
        let secs = Duration::from_secs;
        Self {
            envs,
            unknown_env: EnvPolicy { automatic: vec![Noop, Observe], human: vec![], custom_with_human: false, min_confidence: None },
            cooldowns: BTreeMap::from([(Restart, secs(60)), (ScaleUp, secs(120)), (ScaleDown, secs(120)), (Rollback, secs(300))]),
            proposers: vec![bus_schema::fleet::RL_OPTIMIZER.to_string(), bus_schema::fleet::DEPLOY_AGENT.to_string()],
            max_proposal_age: secs(300),
        }
    }
}
