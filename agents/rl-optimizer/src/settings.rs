//! The optimizer's own flags and their checks (a bad value exits 64 at start).
//!
//! | flag | env | default | meaning |
//! |---|---|---|---|
//! | `--mode` | `CN_OPTIMIZER_MODE` | `learning` | `learning` (propose, learn from outcomes), `frozen` (propose greedily, never explore, never update), `shadow` (recommend on the proof log only, publish nothing, never update), `gated` (propose with the running values, learn a candidate in shadow, promote it only on off-policy evidence: `crate::promotion`) |
//! | `--alpha` | `CN_OPTIMIZER_ALPHA` | 0.05 | the smallest step an update takes, in (0, 1]: after about 1/α outcomes older ones fade |
//! | `--epsilon` | `CN_OPTIMIZER_EPSILON` | 0.1 | exploration rate, in [0, 1], only in the policy's `explore_envs` (none by default; never prod) |
//! | `--policy` | `CN_POLICY_FILE` | built-in defaults | governance's policy file: what each environment allows, its confidence minimum, the per-incident budget, where exploring is allowed |

use std::path::PathBuf;

use policy::{Policy, PolicyError};

use crate::values::DEFAULT_ALPHA;

/// The default exploration rate, where the policy allows exploring at all.
pub const DEFAULT_EPSILON: f64 = 0.1;

/// How the optimizer acts on what it learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Learning,
    Frozen,
    Shadow,
    Gated,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Learning => "learning",
            Mode::Frozen => "frozen",
            Mode::Shadow => "shadow",
            Mode::Gated => "gated",
        }
    }

    /// Only a learning or gated optimizer learns from outcomes and explores (a gated one
    /// learns a candidate in shadow, see `crate::promotion`).
    pub fn learns(self) -> bool {
        matches!(self, Mode::Learning | Mode::Gated)
    }
}

/// The optimizer's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct OptimizerArgs {
    /// learning: propose and learn; frozen: propose greedily, never update; shadow: record
    /// recommendations on the proof log only; gated: propose with the running values, learn a
    /// candidate in shadow and promote it only when the logs show it is better.
    #[arg(long, env = "CN_OPTIMIZER_MODE", value_enum, default_value = "learning")]
    pub mode: Mode,
    /// The smallest step a value moves by per outcome, in (0, 1]: after about 1/alpha outcomes
    /// older ones fade.
    #[arg(long, env = "CN_OPTIMIZER_ALPHA", default_value_t = DEFAULT_ALPHA)]
    pub alpha: f64,
    /// Exploration rate, in [0, 1]: only where the policy's explore_envs allows exploring (none
    /// by default, never prod).
    #[arg(long, env = "CN_OPTIMIZER_EPSILON", default_value_t = DEFAULT_EPSILON)]
    pub epsilon: f64,
    /// Governance's policy file (TOML): what each environment allows, its minimum confidence,
    /// the per-incident budget and explore_envs. Without one the built-in defaults apply (deploy/policy.toml). Use
    /// the same file as governance-gate.
    #[arg(long, env = "CN_POLICY_FILE", value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// Why the flags do not make settings (a configuration error, exit 64).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("--alpha {0} must be in (0, 1]")]
    Alpha(f64),
    #[error("--epsilon {0} must be in [0, 1]")]
    Epsilon(f64),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Checked settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub alpha: f64,
    pub epsilon: f64,
    pub policy: Policy,
}

impl Settings {
    /// The defaults: learning, α 0.05, ε 0.1 where the policy allows exploring (the built-in
    /// policy allows it nowhere).
    pub fn defaults() -> Self {
        Self {
            mode: Mode::Learning,
            alpha: DEFAULT_ALPHA,
            epsilon: DEFAULT_EPSILON,
            policy: Policy::default(),
        }
    }
}

impl OptimizerArgs {
    /// Checks the values and reads the policy file.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(SettingsError::Alpha(self.alpha));
        }
        if !(0.0..=1.0).contains(&self.epsilon) {
            return Err(SettingsError::Epsilon(self.epsilon));
        }
        let policy = match &self.policy {
            Some(path) => Policy::from_file(path)?,
            None => Policy::default(),
        };
        Ok(Settings { mode: self.mode, alpha: self.alpha, epsilon: self.epsilon, policy })
    }
}
