//! Why a detector configuration is refused: each message names the file, the layer and the key,
//! and keeps the error underneath (io, TOML, a bad name or pattern) as its source.

use std::path::PathBuf;
use std::time::Duration;

use bus_schema::TokenError;

use crate::logs::{MAX_MATCHES_KEPT, PatternError};

/// Why the flags and the `--config` file do not make a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is {len} bytes; a detector config is at most 1 MiB", path.display())]
    TooLarge { path: PathBuf, len: u64 },
    #[error("{}: {source}", path.display())]
    InFile { path: PathBuf, source: Box<ConfigError> },
    #[error(
        "--max-clock-skew {skew:?} must not exceed --max-lateness {lateness:?}: an early sample would make every on-time one late"
    )]
    SkewAboveLateness { skew: Duration, lateness: Duration },
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    /// A layer's base could not be turned back into a table (a bug rather than a mistake).
    #[error("{what}: {source}")]
    Base { what: String, source: toml::ser::Error },
    /// A key of a layer (`[defaults]`, `[env.X]`, `[service."X/Y"]`) with a value of the wrong
    /// type, or one that does not exist. (TOML errors are boxed to keep this type small.)
    #[error("{what}: {key}: {}", source.message())]
    Key { what: String, key: String, source: Box<toml::de::Error> },
    #[error("{what}: {}", source.message())]
    Layer { what: String, source: Box<toml::de::Error> },
    /// A layer (or the flags) whose values are out of range.
    #[error("{what}: {source}")]
    Range { what: String, source: TunableError },
    /// A table named after an environment or service that is not a valid name.
    #[error("{what}: {source}")]
    Name { what: String, source: TokenError },
    #[error("{what}: the key must be \"env/service\", e.g. \"prod/payments-api\"")]
    ServiceKey { what: String },
    #[error("{what}: min_count and window_s must be at least 1")]
    PatternTooSmall { what: String },
    #[error("{what}: min_count must be at most {MAX_MATCHES_KEPT} and window_s at most 86400")]
    PatternTooLarge { what: String },
    #[error("{what}: {source}")]
    Pattern { what: String, source: PatternError },
}

/// A tunable outside its unit's range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TunableError {
    #[error("{name} = {value} must be a fraction in 0..=1")]
    NotAFraction { name: &'static str, value: f64 },
    #[error("{name} = {value} must be a percentage in 0..=100")]
    NotAPercentage { name: &'static str, value: f64 },
    #[error("{name} = {value} must be a positive number")]
    NotPositive { name: &'static str, value: f64 },
    #[error("{name} = {value} must be at least {min}")]
    TooSmall { name: &'static str, value: u64, min: u64 },
    #[error("{name} = {value} must be at most {max}")]
    TooLarge { name: &'static str, value: u64, max: u64 },
    #[error("sustain_s = {0} must be at most 1800 (half the hour of fine-grained history)")]
    SustainTooLong(u64),
    #[error("bad_ratio = {0} must be in (0, 1]")]
    BadRatio(f64),
    #[error("slo_objective = {0} must be strictly between 0 and 1 (e.g. 0.999)")]
    SloObjective(f64),
    #[error("slo_period_days = {0} must be in 1..=90")]
    SloPeriod(u32),
    #[error(
        "regression_window_s = {0} must be at most 1800 (before and after must fit in the hour of history)"
    )]
    RegressionWindowTooLong(u64),
    #[error("{name} = {value} must be above 1")]
    NotAboveOne { name: &'static str, value: f64 },
}
