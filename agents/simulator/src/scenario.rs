//! Scenario files: which services exist, how each one fails, and how fast time runs.
//!
//! ```toml
//! seed = 42            # optional, default 1; --seed overrides it
//! tick_s = 10          # simulated seconds between samples (1..=3600), default 10
//! speed = 30           # simulated seconds per real second (0 < speed <= 10000), default 30
//! duration_s = 7200    # optional: stop publishing after this much simulated time
//!
//! [[service]]
//! env = "stage"
//! name = "checkout"
//! failure = "crash_loop"   # healthy (default) | crash_loop | cpu_overload | bad_deploy |
//!                          # memory_leak | latency_regression | bad_config | deploy_overload |
//!                          # false_alarm | flapping | slowdown
//! start_after_s = 60       # simulated seconds of health before the failure starts (default 0)
//! restart_success = 1.0    # crash_loop only: chance a restart clears it (0 < p <= 1, default 1)
//! leak_percent_per_min = 20  # memory_leak only (default 20; a slow leak is e.g. 4)
//! flap_period_s = 60       # flapping only: bad this long, then healthy this long (default 60)
//! slowdown_factor = 2.0    # slowdown only: p95/p99 of every variant × this (1 < f <= 100, default 2)
//! canary_error_factor = 1.0    # a canary's error rate × this, vs the stable's (0 < f <= 100, default 1)
//! canary_latency_factor = 1.0  # a canary's p95/p99 × this, vs the stable's (0 < f <= 100, default 1)
//! ```
//!
//! Five failures come with a deploy of 1.2.0 and last while it runs: `bad_deploy` (errors),
//! `latency_regression` (p95), `memory_leak` (memory rises to an OOM crash loop),
//! `bad_config` (a crash loop no restart fixes) and `deploy_overload` (an overload like
//! `cpu_overload`'s, from the version's CPU-bound hot path, that no scale_up fixes). What
//! each action does to each failure is in [`crate::service`].
//!
//! The canary factors describe the new version a deploy agent rolls out with
//! `set_canary_weight`; `promote` makes it the stable version, factors and all. A `slowdown`
//! is a dependency getting slower: it hits the stable and the canary alike and no action
//! cures it.
//!
//! `demo` names the built-in [`DEMO`] scenario. Unknown keys, bad values and duplicate
//! services are refused when the file is loaded, naming the key, so the simulator stops at
//! start (exit 64) rather than simulating something other than what was asked for.

use std::path::Path;

use bus_schema::{Env, ServiceName};
use serde::Deserialize;

/// The built-in scenario behind `--scenario demo`.
pub const DEMO: &str = r#"
seed = 7
tick_s = 10
speed = 30

[[service]]
env = "stage"
name = "checkout"
failure = "crash_loop"
start_after_s = 600

[[service]]
env = "stage"
name = "search"
failure = "cpu_overload"
start_after_s = 900

[[service]]
env = "prod"
name = "payments"
failure = "bad_deploy"
start_after_s = 1200

[[service]]
env = "stage"
name = "catalog"
failure = "false_alarm"
start_after_s = 700

[[service]]
env = "prod"
name = "frontend"

[[service]]
env = "stage"
name = "users"

[[service]]
env = "dev"
name = "inventory"
"#;

/// How a service goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    #[default]
    Healthy,
    CrashLoop,
    CpuOverload,
    BadDeploy,
    MemoryLeak,
    LatencyRegression,
    BadConfig,
    DeployOverload,
    FalseAlarm,
    Flapping,
    Slowdown,
}

/// One simulated service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub env: Env,
    pub name: ServiceName,
    #[serde(default)]
    pub failure: Failure,
    #[serde(default)]
    pub start_after_s: u64,
    /// The chance that a restart clears a crash loop.
    #[serde(default = "always")]
    pub restart_success: f64,
    #[serde(default = "default_leak")]
    pub leak_percent_per_min: f64,
    #[serde(default = "default_flap_period")]
    pub flap_period_s: u64,
    #[serde(default = "default_slowdown")]
    pub slowdown_factor: f64,
    #[serde(default = "unchanged")]
    pub canary_error_factor: f64,
    #[serde(default = "unchanged")]
    pub canary_latency_factor: f64,
}

fn always() -> f64 {
    1.0
}

fn default_leak() -> f64 {
    20.0
}

fn default_flap_period() -> u64 {
    60
}

fn default_slowdown() -> f64 {
    2.0
}

fn unchanged() -> f64 {
    1.0
}

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_tick")]
    pub tick_s: u64,
    #[serde(default = "default_speed")]
    pub speed: f64,
    #[serde(default)]
    pub duration_s: Option<u64>,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSpec>,
}

fn default_seed() -> u64 {
    1
}

fn default_tick() -> u64 {
    10
}

fn default_speed() -> f64 {
    30.0
}

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("scenario {path}: {}", source.to_string().trim_end())]
    Syntax { path: String, source: toml::de::Error },
    #[error("scenario {path}: {source}")]
    Invalid { path: String, source: InvalidScenario },
}

/// A scenario value out of range, or a service listed twice.
#[derive(Debug, thiserror::Error)]
pub enum InvalidScenario {
    #[error("tick_s = {0} must be in 1..=3600")]
    Tick(u64),
    #[error(transparent)]
    Speed(#[from] SpeedError),
    #[error("duration_s must be more than 0 (leave it out to run forever)")]
    ZeroDuration,
    #[error("{at} appears twice")]
    Duplicate { at: String },
    #[error("{at}: flap_period_s = {value} must be in 10..=86400")]
    FlapPeriod { at: String, value: u64 },
    #[error("{at}: {key} = {value} must be in ({above}, {most}]")]
    OutOfRange { at: String, key: &'static str, value: f64, above: f64, most: f64 },
}

/// A speed outside (0, 10000].
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("speed = {0} must be more than 0 and at most 10000")]
pub struct SpeedError(pub f64);

/// A `--speed` that is not a usable speed.
#[derive(Debug, thiserror::Error)]
pub enum SpeedFlagError {
    #[error("{input:?} is not a number such as 30")]
    NotANumber { input: String, source: std::num::ParseFloatError },
    #[error(transparent)]
    OutOfRange(#[from] SpeedError),
}

impl Scenario {
    /// `demo`, or a TOML file.
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        if name_or_path == "demo" {
            return Self::parse(DEMO, "demo");
        }
        let text = std::fs::read_to_string(Path::new(name_or_path))
            .map_err(|source| ScenarioError::Read { path: name_or_path.to_owned(), source })?;
        Self::parse(&text, name_or_path)
    }

    /// Parses and checks a scenario; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)
            .map_err(|source| ScenarioError::Syntax { path: origin.to_owned(), source })?;
        scenario
            .validate()
            .map_err(|source| ScenarioError::Invalid { path: origin.to_owned(), source })?;
        Ok(scenario)
    }

    /// Checks every value is in range and no service appears twice.
    pub fn validate(&self) -> Result<(), InvalidScenario> {
        if !(1..=3600).contains(&self.tick_s) {
            return Err(InvalidScenario::Tick(self.tick_s));
        }
        check_speed(self.speed)?;
        if self.duration_s == Some(0) {
            return Err(InvalidScenario::ZeroDuration);
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = format!("service[{i}] ({}/{})", s.env, s.name);
            if !seen.insert((s.env.to_string(), s.name.to_string())) {
                return Err(InvalidScenario::Duplicate { at });
            }
            if !(10..=86_400).contains(&s.flap_period_s) {
                return Err(InvalidScenario::FlapPeriod { at, value: s.flap_period_s });
            }
            let bounded = [
                ("restart_success", s.restart_success, 0.0, 1.0),
                ("leak_percent_per_min", s.leak_percent_per_min, 0.0, 100.0),
                ("slowdown_factor", s.slowdown_factor, 1.0, 100.0),
                ("canary_error_factor", s.canary_error_factor, 0.0, 100.0),
                ("canary_latency_factor", s.canary_latency_factor, 0.0, 100.0),
            ];
            for (key, value, above, most) in bounded {
                if !(value.is_finite() && value > above && value <= most) {
                    return Err(InvalidScenario::OutOfRange { at, key, value, above, most });
                }
            }
        }
        Ok(())
    }
}

/// `speed` must be a positive number no larger than 10000.
pub fn check_speed(speed: f64) -> Result<(), SpeedError> {
    if speed.is_finite() && speed > 0.0 && speed <= 10_000.0 {
        Ok(())
    } else {
        Err(SpeedError(speed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_parses_with_the_advertised_failures() {
        let demo = Scenario::load("demo").unwrap();
        let failure = |env: &str, name: &str| {
            demo.services
                .iter()
                .find(|s| s.env.as_str() == env && s.name.as_str() == name)
                .map(|s| s.failure)
        };
        assert_eq!(failure("stage", "checkout"), Some(Failure::CrashLoop));
        assert_eq!(failure("stage", "search"), Some(Failure::CpuOverload));
        assert_eq!(failure("prod", "payments"), Some(Failure::BadDeploy));
        assert_eq!(failure("stage", "catalog"), Some(Failure::FalseAlarm));
        assert_eq!(failure("prod", "frontend"), Some(Failure::Healthy));
        assert_eq!((demo.tick_s, demo.speed), (10, 30.0));
    }

    #[test]
    fn a_good_file_uses_defaults_for_what_it_leaves_out() {
        let s = Scenario::parse(
            "[[service]]\nenv = \"dev\"\nname = \"api\"\nfailure = \"memory_leak\"\n",
            "t",
        )
        .unwrap();
        assert_eq!((s.seed, s.tick_s, s.speed, s.duration_s), (1, 10, 30.0, None));
        assert_eq!(s.services[0].failure, Failure::MemoryLeak);
        assert_eq!(s.services[0].leak_percent_per_min, 20.0);
        let spec = &s.services[0];
        assert_eq!(
            (spec.slowdown_factor, spec.canary_error_factor, spec.canary_latency_factor),
            (2.0, 1.0, 1.0)
        );
    }

    #[test]
    fn slowdown_and_canary_factors_are_read_as_given() {
        let text = "[[service]]\nenv = \"prod\"\nname = \"api\"\nfailure = \"slowdown\"\nslowdown_factor = 3.5\n\
                    canary_error_factor = 0.5\ncanary_latency_factor = 100\n";
        let spec = Scenario::parse(text, "t").unwrap().services.remove(0);
        assert_eq!(spec.failure, Failure::Slowdown);
        assert_eq!(
            (spec.slowdown_factor, spec.canary_error_factor, spec.canary_latency_factor),
            (3.5, 0.5, 100.0)
        );
    }

    #[test]
    fn out_of_range_factors_are_refused_naming_the_service_and_the_key() {
        let cases = [
            "slowdown_factor = 1.0",
            "slowdown_factor = 0.5",
            "slowdown_factor = 101.0",
            "slowdown_factor = inf",
            "canary_error_factor = 0.0",
            "canary_error_factor = -2.0",
            "canary_error_factor = 100.5",
            "canary_error_factor = nan",
            "canary_latency_factor = 0.0",
            "canary_latency_factor = 1000.0",
            "canary_latency_factor = -inf",
        ];
        for line in cases {
            let text = format!("[[service]]\nenv = \"dev\"\nname = \"a\"\n{line}\n");
            let err = Scenario::parse(&text, "bad.toml").unwrap_err().to_string();
            let key = line.split(' ').next().unwrap();
            assert!(err.contains("dev/a") && err.contains(&format!("{key} = ")), "{line:?}: {err}");
        }
        let text = "[[service]]\nenv = \"dev\"\nname = \"a\"\ncanary_error_factor = \"high\"\n";
        assert!(
            Scenario::parse(text, "bad.toml")
                .unwrap_err()
                .to_string()
                .contains("canary_error_factor"),
            "not a number"
        );
    }

    #[test]
    fn the_new_failures_and_restart_success_are_read_as_given() {
        let text = "[[service]]\nenv = \"dev\"\nname = \"a\"\nfailure = \"crash_loop\"\nrestart_success = 0.7\n\
                    [[service]]\nenv = \"dev\"\nname = \"b\"\nfailure = \"bad_config\"\n\
                    [[service]]\nenv = \"dev\"\nname = \"c\"\nfailure = \"deploy_overload\"\n";
        let s = Scenario::parse(text, "t").unwrap();
        let read: Vec<(Failure, f64)> =
            s.services.iter().map(|s| (s.failure, s.restart_success)).collect();
        assert_eq!(
            read,
            [(Failure::CrashLoop, 0.7), (Failure::BadConfig, 1.0), (Failure::DeployOverload, 1.0)]
        );
    }

    #[test]
    fn a_restart_success_outside_zero_to_one_is_refused_naming_the_service_and_the_key() {
        for value in ["0.0", "-0.5", "1.5", "nan", "inf"] {
            let text = format!(
                "[[service]]\nenv = \"dev\"\nname = \"a\"\nfailure = \"crash_loop\"\nrestart_success = {value}\n"
            );
            let err = Scenario::parse(&text, "bad.toml").unwrap_err().to_string();
            assert!(
                err.contains("dev/a")
                    && err.contains("restart_success = ")
                    && err.contains("(0, 1]"),
                "{value}: {err}"
            );
        }
        let text = "[[service]]\nenv = \"dev\"\nname = \"a\"\nrestart_success = 1\n";
        assert!(
            Scenario::parse(text, "t").is_ok_and(|s| s.services[0].restart_success == 1.0),
            "1 itself is allowed"
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_key() {
        let cases = [
            ("tick = 10", "unknown field `tick`"),
            ("tick_s = 0", "tick_s = 0"),
            ("speed = -1.0", "speed = -1"),
            ("duration_s = 0", "duration_s"),
            ("[[service]]\nenv = \"Prod\"\nname = \"a\"", "env"),
            (
                "[[service]]\nenv = \"dev\"\nname = \"a\"\nfailure = \"meltdown\"",
                "unknown variant `meltdown`",
            ),
            (
                "[[service]]\nenv = \"dev\"\nname = \"a\"\ncolour = \"red\"",
                "unknown field `colour`",
            ),
            (
                "[[service]]\nenv = \"dev\"\nname = \"a\"\n[[service]]\nenv = \"dev\"\nname = \"a\"",
                "appears twice",
            ),
            (
                "[[service]]\nenv = \"dev\"\nname = \"a\"\nleak_percent_per_min = 0.0",
                "leak_percent_per_min",
            ),
            ("[[service]]\nenv = \"dev\"\nname = \"a\"\nflap_period_s = 1", "flap_period_s"),
        ];
        for (text, expected) in cases {
            let err = Scenario::parse(text, "bad.toml").unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains("bad.toml"),
                "{text:?}: expected {expected:?} in {err}"
            );
        }
        assert!(matches!(Scenario::load("/nonexistent/s.toml"), Err(ScenarioError::Read { .. })));
    }
}
