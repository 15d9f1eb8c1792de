//! The optimizer's own flags and their checks (a bad value exits 64 at start).
//!
//! | flag | env | default | meaning |
//! |---|---|---|---|
//! | `--mode` | `CN_OPTIMIZER_MODE` | `learning` | `learning` (propose, learn from outcomes), `frozen` (propose greedily, ε = 0, never update), `shadow` (recommend on the proof log only, publish nothing, never update) |
//! | `--alpha` | `CN_OPTIMIZER_ALPHA` | 0.3 | learning rate, in (0, 1] |
//! | `--gamma` | `CN_OPTIMIZER_GAMMA` | 0.5 | discount, in [0, 1) |
//! | `--epsilon` | `CN_OPTIMIZER_EPSILON` | 0.1 | exploration rate where exploring is allowed, in [0, 1] |
//! | `--explore-envs` | `CN_EXPLORE_ENVS` | `dev,stage` | where exploring is allowed; `prod` is refused |
//! | `--policy` | `CN_POLICY_FILE` | DESIGN §6 | governance's policy file, for the shield |

use std::path::PathBuf;

use governance_gate::policy::Policy;

use crate::qlearn::{DEFAULT_ALPHA, DEFAULT_EPSILON, DEFAULT_GAMMA, Params};
use crate::shield::{Exploration, PROD};

/// How the optimizer acts on what it learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Learning,
    Frozen,
    Shadow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Learning => "learning",
            Mode::Frozen => "frozen",
            Mode::Shadow => "shadow",
        }
    }

    /// Only a learning optimizer updates its table.
    pub fn learns(self) -> bool {
        self == Mode::Learning
    }
}

/// The optimizer's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct OptimizerArgs {
    /// learning: propose and learn; frozen: propose greedily, never update; shadow: record
    /// recommendations on the proof log only.
    #[arg(long, env = "CN_OPTIMIZER_MODE", value_enum, default_value = "learning")]
    pub mode: Mode,
    /// Learning rate α, in (0, 1].
    #[arg(long, env = "CN_OPTIMIZER_ALPHA", default_value_t = DEFAULT_ALPHA)]
    pub alpha: f64,
    /// Discount γ, in [0, 1).
    #[arg(long, env = "CN_OPTIMIZER_GAMMA", default_value_t = DEFAULT_GAMMA)]
    pub gamma: f64,
    /// Exploration rate ε where exploring is allowed, in [0, 1].
    #[arg(long, env = "CN_OPTIMIZER_EPSILON", default_value_t = DEFAULT_EPSILON)]
    pub epsilon: f64,
    /// Environments where a non-greedy action may be tried (comma-separated); never prod.
    #[arg(long, env = "CN_EXPLORE_ENVS", value_delimiter = ',', default_value = "dev,stage")]
    pub explore_envs: Vec<String>,
    /// Governance's policy file (TOML), for what each environment allows; without one the
    /// DESIGN §6 defaults apply. Use the same file as governance-gate.
    #[arg(long, env = "CN_POLICY_FILE", value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// Checked settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub params: Params,
    pub exploration: Exploration,
    pub policy: Policy,
}

impl Settings {
    /// The defaults: learning, α 0.3, γ 0.5, ε 0.1 in dev and stage, the DESIGN §6 policy.
    pub fn defaults() -> Self {
        Self {
            mode: Mode::Learning,
            params: Params::default(),
            exploration: Exploration { envs: vec!["dev".into(), "stage".into()], epsilon: DEFAULT_EPSILON },
            policy: Policy::default(),
        }
    }
}

impl OptimizerArgs {
    /// Checks the values and reads the policy file.
    pub fn settings(&self) -> Result<Settings, String> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(format!("--alpha {} must be in (0, 1]", self.alpha));
        }
        if !(0.0..1.0).contains(&self.gamma) {
            return Err(format!("--gamma {} must be in [0, 1)", self.gamma));
        }
        if !(0.0..=1.0).contains(&self.epsilon) {
            return Err(format!("--epsilon {} must be in [0, 1]", self.epsilon));
        }
        let envs: Vec<String> = self.explore_envs.iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
        for env in &envs {
            env.parse::<bus_schema::Env>().map_err(|e| format!("--explore-envs: {env:?}: {e}"))?;
            if env == PROD {
                return Err("--explore-envs may not include prod: nothing is tried out on production".into());
            }
        }
        let policy = match &self.policy {
            Some(path) => Policy::from_file(path)?,
            None => Policy::default(),
        };
        Ok(Settings {
            mode: self.mode,
            params: Params { alpha: self.alpha, gamma: self.gamma },
            exploration: Exploration { envs, epsilon: self.epsilon },
            policy,
        })
    }
}
