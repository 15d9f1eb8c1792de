//! What the detector considers bad, for how long, and against which SLO: built-in defaults,
//! overridden by flags, then by an optional TOML file per env and per env/service.
//!
//! ```toml
//! [defaults]              # every key is optional; see `Tunables` for the list and defaults
//! sustain_s = 180
//!
//! [env.prod]
//! slo_objective = 0.9995
//!
//! [service."prod/payments-api"]
//! p95_ms = 400
//!
//! [[log_pattern]]         # adds a pattern, or replaces the built-in one of the same name
//! name = "cache_miss_storm"
//! phrases = ["cache stampede"]
//! ```
//!
//! Precedence, lowest first: built-in defaults, `[defaults]`, flags, `[env.X]`,
//! `[service."X/Y"]`. Every layer is checked when the file is loaded, so a typo or an
//! out-of-range value stops the detector at start with the key's name (exit 64), not at 3 a.m.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_schema::{Env, LogLevel, ServiceName, Severity};
use serde::{Deserialize, Serialize};

pub use crate::config_error::{ConfigError, TunableError};
use crate::logs::{LogPattern, MAX_MATCHES_KEPT, default_patterns};

/// The knobs that may differ per env/service, with their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tunables {
    /// Error rate (0..1) above which a sample is bad.
    pub error_rate: f64,
    /// p95 latency (ms) above which a sample is bad.
    pub p95_ms: f64,
    /// p99 latency (ms) above which a sample is bad.
    pub p99_ms: f64,
    /// CPU percent above which a sample is bad.
    pub cpu_percent: f64,
    /// Memory percent above which a sample is bad.
    pub memory_percent: f64,
    /// A signal is sustained when, over the last `sustain_s`, at least `min_samples` samples
    /// carried it, at least `bad_ratio` of them were bad, and they span half the window.
    pub sustain_s: u64,
    pub min_samples: u32,
    pub bad_ratio: f64,
    /// Consecutive healthy samples that resolve an incident.
    pub resolve_after_samples: u32,
    /// A sample that does not say `crash_looping` counts as healthy for a crash loop once no
    /// sample has reported one for this long and the restart counter, if sent, stopped rising.
    pub crash_quiet_s: u64,
    /// An incident that comes back within this long of resolving is reopened (same id), and
    /// then needs proportionally more healthy samples to resolve: flap damping.
    pub flap_window_s: u64,
    /// An open incident is re-published at most this often unless its severity, evidence or
    /// conflict flag changes.
    pub update_interval_s: u64,
    /// Availability objective (e.g. 0.999) and its period.
    pub slo_objective: f64,
    pub slo_period_days: u32,
    /// Post-deploy regression: the window after a deploy against the window before it.
    pub regression_window_s: u64,
    pub regression_factor: f64,
    pub regression_floor: f64,
    pub latency_regression_factor: f64,
    pub latency_regression_floor_ms: f64,
    /// How long after an executed action its incident must be resolved to count as recovered.
    pub verification_s: u64,
    /// Readings from different sources this close together must roughly agree.
    pub conflict_window_s: u64,
    /// CPU or memory readings this many points apart conflict.
    pub conflict_gap_percent: f64,
}

impl Default for Tunables {
    fn default() -> Self {
        Self {
            error_rate: 0.05,
            p95_ms: 1000.0,
            p99_ms: 2000.0,
            cpu_percent: 90.0,
            memory_percent: 90.0,
            sustain_s: 120,
            min_samples: 3,
            bad_ratio: 0.8,
            resolve_after_samples: 3,
            crash_quiet_s: 60,
            flap_window_s: 900,
            update_interval_s: 300,
            slo_objective: 0.999,
            slo_period_days: 30,
            regression_window_s: 600,
            regression_factor: 2.0,
            regression_floor: 0.01,
            latency_regression_factor: 1.5,
            latency_regression_floor_ms: 250.0,
            verification_s: 300,
            conflict_window_s: 30,
            conflict_gap_percent: 50.0,
        }
    }
}

impl Tunables {
    /// Checks every value is in its unit's range.
    pub fn validate(&self) -> Result<(), TunableError> {
        let fraction = |name, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(TunableError::NotAFraction { name, value })
            }
        };
        let percent = |name, value: f64| {
            if (0.0..=100.0).contains(&value) {
                Ok(())
            } else {
                Err(TunableError::NotAPercentage { name, value })
            }
        };
        let positive = |name, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(TunableError::NotPositive { name, value })
            }
        };
        let at_least = |name, value: u64, min: u64| {
            if value >= min { Ok(()) } else { Err(TunableError::TooSmall { name, value, min }) }
        };
        fraction("error_rate", self.error_rate)?;
        positive("p95_ms", self.p95_ms)?;
        positive("p99_ms", self.p99_ms)?;
        percent("cpu_percent", self.cpu_percent)?;
        percent("memory_percent", self.memory_percent)?;
        percent("conflict_gap_percent", self.conflict_gap_percent)?;
        // Windows live in 10 s buckets kept for an hour.
        at_least("sustain_s", self.sustain_s, 10)?;
        if self.sustain_s > 1800 {
            return Err(TunableError::SustainTooLong(self.sustain_s));
        }
        at_least("min_samples", u64::from(self.min_samples), 1)?;
        if !(self.bad_ratio > 0.0 && self.bad_ratio <= 1.0) {
            return Err(TunableError::BadRatio(self.bad_ratio));
        }
        at_least("resolve_after_samples", u64::from(self.resolve_after_samples), 1)?;
        if self.resolve_after_samples > 1000 {
            return Err(TunableError::TooLarge {
                name: "resolve_after_samples",
                value: u64::from(self.resolve_after_samples),
                max: 1000,
            });
        }
        if self.crash_quiet_s > 3600 {
            return Err(TunableError::TooLarge {
                name: "crash_quiet_s",
                value: self.crash_quiet_s,
                max: 3600,
            });
        }
        if !(self.slo_objective > 0.0 && self.slo_objective < 1.0) {
            return Err(TunableError::SloObjective(self.slo_objective));
        }
        if !(1..=90).contains(&self.slo_period_days) {
            return Err(TunableError::SloPeriod(self.slo_period_days));
        }
        at_least("regression_window_s", self.regression_window_s, 60)?;
        if self.regression_window_s > 1800 {
            return Err(TunableError::RegressionWindowTooLong(self.regression_window_s));
        }
        if !(self.regression_factor.is_finite() && self.regression_factor > 1.0) {
            return Err(TunableError::NotAboveOne {
                name: "regression_factor",
                value: self.regression_factor,
            });
        }
        if !(self.latency_regression_factor.is_finite() && self.latency_regression_factor > 1.0) {
            return Err(TunableError::NotAboveOne {
                name: "latency_regression_factor",
                value: self.latency_regression_factor,
            });
        }
        fraction("regression_floor", self.regression_floor)?;
        positive("latency_regression_floor_ms", self.latency_regression_floor_ms)?;
        at_least("verification_s", self.verification_s, 1)?;
        at_least("conflict_window_s", self.conflict_window_s, 1)
    }

    pub fn sustain(&self) -> Duration {
        Duration::from_secs(self.sustain_s)
    }
}

/// Global defaults given on the command line; each overrides `[defaults]` in the file.
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// Detector config file (TOML): per env and per env/service thresholds, SLOs and log
    /// patterns. deploy/detector.example.toml documents every key.
    #[arg(long = "config", env = "CN_DETECTOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Error rate (fraction) above which a sample is bad [default: 0.05].
    #[arg(long = "error-rate-threshold", env = "CN_ERROR_RATE_THRESHOLD")]
    pub error_rate: Option<f64>,
    /// p95 latency in ms above which a sample is bad [default: 1000].
    #[arg(long = "p95-threshold-ms", env = "CN_P95_THRESHOLD_MS")]
    pub p95_ms: Option<f64>,
    /// p99 latency in ms above which a sample is bad [default: 2000].
    #[arg(long = "p99-threshold-ms", env = "CN_P99_THRESHOLD_MS")]
    pub p99_ms: Option<f64>,
    /// CPU and memory percent above which a sample is bad [default: 90].
    #[arg(long = "saturation-threshold", env = "CN_SATURATION_THRESHOLD")]
    pub saturation_percent: Option<f64>,
    /// How long a signal must stay bad before an incident opens, e.g. 2m [default: 2m].
    #[arg(long = "sustain", env = "CN_SUSTAIN", value_parser = agent_runtime::config::parse_duration)]
    pub sustain: Option<Duration>,
    /// Consecutive healthy samples that resolve an incident [default: 3].
    #[arg(long = "resolve-after-samples", env = "CN_RESOLVE_AFTER_SAMPLES")]
    pub resolve_after_samples: Option<u32>,
    /// Availability objective, e.g. 0.999 [default: 0.999 over 30 days].
    #[arg(long = "slo-objective", env = "CN_SLO_OBJECTIVE")]
    pub slo_objective: Option<f64>,
    /// How long after an action its incident must be resolved to count as recovered [default: 5m].
    #[arg(long = "verification-window", env = "CN_VERIFICATION_WINDOW", value_parser = agent_runtime::config::parse_duration)]
    pub verification: Option<Duration>,
    /// Samples older than this behind the newest sample of their service are rejected as late.
    #[arg(long = "max-lateness", env = "CN_MAX_LATENESS", default_value = "5m", value_parser = agent_runtime::config::parse_duration)]
    pub max_lateness: Duration,
    /// Events stamped further than this ahead of this machine's clock are rejected. At most
    /// --max-lateness: a sample from the future moves its service's clock, and on-time samples
    /// must not then look late.
    #[arg(long = "max-clock-skew", env = "CN_MAX_CLOCK_SKEW", default_value = "2m", value_parser = agent_runtime::config::parse_duration)]
    pub max_clock_skew: Duration,
}

impl Default for Flags {
    /// What the command line gives when no flag is set.
    fn default() -> Self {
        let defaults = DetectorConfig::default();
        Self {
            config: None,
            error_rate: None,
            p95_ms: None,
            p99_ms: None,
            saturation_percent: None,
            sustain: None,
            resolve_after_samples: None,
            slo_objective: None,
            verification: None,
            max_lateness: defaults.max_lateness,
            max_clock_skew: defaults.max_clock_skew,
        }
    }
}

impl Flags {
    fn apply(&self, t: &mut Tunables) {
        let set = |slot: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut t.error_rate, self.error_rate);
        set(&mut t.p95_ms, self.p95_ms);
        set(&mut t.p99_ms, self.p99_ms);
        set(&mut t.cpu_percent, self.saturation_percent);
        set(&mut t.memory_percent, self.saturation_percent);
        set(&mut t.slo_objective, self.slo_objective);
        if let Some(s) = self.sustain {
            t.sustain_s = s.as_secs();
        }
        if let Some(n) = self.resolve_after_samples {
            t.resolve_after_samples = n;
        }
        if let Some(v) = self.verification {
            t.verification_s = v.as_secs();
        }
    }
}

/// The file's shape; tables stay untyped until merged so that a partial layer is allowed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: toml::Table,
    #[serde(default)]
    env: HashMap<String, toml::Table>,
    #[serde(default)]
    service: HashMap<String, toml::Table>,
    #[serde(default)]
    log_pattern: Vec<PatternEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternEntry {
    name: String,
    #[serde(default)]
    phrases: Vec<String>,
    #[serde(default = "one")]
    min_count: u32,
    #[serde(default = "five_minutes")]
    window_s: u64,
    #[serde(default = "high")]
    severity: Severity,
    #[serde(default = "warn")]
    min_level: LogLevel,
    #[serde(default = "yes")]
    enabled: bool,
}

fn one() -> u32 {
    1
}
fn five_minutes() -> u64 {
    300
}
fn high() -> Severity {
    Severity::High
}
fn warn() -> LogLevel {
    LogLevel::Warn
}
fn yes() -> bool {
    true
}

/// The detector's whole configuration, resolved per env/service at load time.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    defaults: Tunables,
    by_env: HashMap<Env, Tunables>,
    by_service: HashMap<(Env, ServiceName), Tunables>,
    pub log_patterns: Vec<LogPattern>,
    pub max_lateness: Duration,
    pub max_clock_skew: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            defaults: Tunables::default(),
            by_env: HashMap::new(),
            by_service: HashMap::new(),
            log_patterns: default_patterns(),
            max_lateness: Duration::from_secs(300),
            max_clock_skew: Duration::from_secs(120),
        }
    }
}

impl DetectorConfig {
    /// Reads the file named by `--config` (if any) and applies the flags.
    pub fn load(flags: &Flags) -> Result<Self, ConfigError> {
        let text = match &flags.config {
            Some(path) => read(path)?,
            None => String::new(),
        };
        Self::parse(&text, flags).map_err(|e| match &flags.config {
            Some(path) => ConfigError::InFile { path: path.clone(), source: Box::new(e) },
            None => e,
        })
    }

    /// Builds the configuration from a file's text and the flags.
    pub fn parse(text: &str, flags: &Flags) -> Result<Self, ConfigError> {
        if flags.max_clock_skew > flags.max_lateness {
            return Err(ConfigError::SkewAboveLateness {
                skew: flags.max_clock_skew,
                lateness: flags.max_lateness,
            });
        }
        let file: File = toml::from_str(text)?;
        let layer =
            |base: &Tunables, patch: &toml::Table, what: &str| -> Result<Tunables, ConfigError> {
                let base = toml::Table::try_from(base)
                    .map_err(|source| ConfigError::Base { what: what.to_owned(), source })?;
                let typed = |extra: &toml::Table| -> Result<Tunables, toml::de::Error> {
                    let mut merged = base.clone();
                    merged.extend(extra.clone());
                    toml::Value::Table(merged).try_into()
                };
                let t = typed(patch).map_err(|e| {
                    // Name the key: serde's message says what was wrong but not where.
                    let culprit = patch.iter().find_map(|(k, v)| {
                        typed(&toml::Table::from_iter([(k.clone(), v.clone())]))
                            .err()
                            .map(|e| (k.clone(), e))
                    });
                    let what = what.to_owned();
                    match culprit {
                        Some((key, e)) => ConfigError::Key { what, key, source: Box::new(e) },
                        None => ConfigError::Layer { what, source: Box::new(e) },
                    }
                })?;
                t.validate()
                    .map_err(|source| ConfigError::Range { what: what.to_owned(), source })?;
                Ok(t)
            };
        let mut defaults = layer(&Tunables::default(), &file.defaults, "[defaults]")?;
        flags.apply(&mut defaults);
        defaults
            .validate()
            .map_err(|source| ConfigError::Range { what: "flags".to_owned(), source })?;

        let mut env_patches = HashMap::new();
        let mut by_env = HashMap::new();
        for (name, patch) in &file.env {
            let env: Env = name
                .parse()
                .map_err(|source| ConfigError::Name { what: format!("[env.{name}]"), source })?;
            by_env.insert(env.clone(), layer(&defaults, patch, &format!("[env.{name}]"))?);
            env_patches.insert(env, patch);
        }
        let mut by_service = HashMap::new();
        for (key, patch) in &file.service {
            let what = format!("[service.\"{key}\"]");
            let (env, service) = key
                .split_once('/')
                .ok_or_else(|| ConfigError::ServiceKey { what: what.clone() })?;
            let env: Env =
                env.parse().map_err(|source| ConfigError::Name { what: what.clone(), source })?;
            let service: ServiceName = service
                .parse()
                .map_err(|source| ConfigError::Name { what: what.clone(), source })?;
            let base = by_env.get(&env).unwrap_or(&defaults);
            by_service.insert((env, service), layer(base, patch, &what)?);
        }

        let mut log_patterns = default_patterns();
        for entry in file.log_pattern {
            let what = format!("[[log_pattern]] {:?}", entry.name);
            if entry.min_count == 0 || entry.window_s == 0 {
                return Err(ConfigError::PatternTooSmall { what });
            }
            if entry.min_count as usize > MAX_MATCHES_KEPT || entry.window_s > 86_400 {
                return Err(ConfigError::PatternTooLarge { what });
            }
            log_patterns.retain(|p| p.name != entry.name);
            if entry.enabled {
                log_patterns.push(
                    LogPattern::new(
                        &entry.name,
                        &entry.phrases,
                        entry.min_count,
                        entry.window_s,
                        entry.severity,
                        entry.min_level,
                    )
                    .map_err(|source| ConfigError::Pattern { what, source })?,
                );
            }
        }
        Ok(Self {
            defaults,
            by_env,
            by_service,
            log_patterns,
            max_lateness: flags.max_lateness,
            max_clock_skew: flags.max_clock_skew,
        })
    }

    /// The knobs for one service.
    pub fn for_service(&self, env: &Env, service: &ServiceName) -> &Tunables {
        self.by_service
            .get(&(env.clone(), service.clone()))
            .or_else(|| self.by_env.get(env))
            .unwrap_or(&self.defaults)
    }

    /// The knobs of services without overrides.
    pub fn defaults(&self) -> &Tunables {
        &self.defaults
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    let unreadable = |source| ConfigError::Read { path: path.to_owned(), source };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if meta.len() > 1 << 20 {
        return Err(ConfigError::TooLarge { path: path.to_owned(), len: meta.len() });
    }
    std::fs::read_to_string(path).map_err(unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DetectorConfig, ConfigError> {
        DetectorConfig::parse(text, &Flags::default())
    }

    fn env(s: &str) -> Env {
        s.parse().unwrap()
    }

    fn svc(s: &str) -> ServiceName {
        s.parse().unwrap()
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.for_service(&env("prod"), &svc("api")), &Tunables::default());
        assert!(c.log_patterns.iter().any(|p| p.name == "out_of_memory"));
    }

    #[test]
    fn layers_apply_in_order_defaults_env_service() {
        let c = parse(
            r#"
            [defaults]
            sustain_s = 180
            [env.prod]
            slo_objective = 0.9995
            p95_ms = 800
            [service."prod/payments-api"]
            p95_ms = 400
            "#,
        )
        .unwrap();
        let pay = c.for_service(&env("prod"), &svc("payments-api"));
        assert_eq!((pay.sustain_s, pay.slo_objective, pay.p95_ms), (180, 0.9995, 400.0));
        let other = c.for_service(&env("prod"), &svc("search"));
        assert_eq!((other.sustain_s, other.slo_objective, other.p95_ms), (180, 0.9995, 800.0));
        let dev = c.for_service(&env("dev"), &svc("payments-api"));
        assert_eq!((dev.sustain_s, dev.slo_objective, dev.p95_ms), (180, 0.999, 1000.0));
    }

    #[test]
    fn flags_override_the_file_defaults_but_not_env_or_service_sections() {
        let flags = Flags { p95_ms: Some(700.0), ..Flags::default() };
        let c = DetectorConfig::parse("[defaults]\np95_ms = 900\n[env.prod]\np95_ms = 300", &flags)
            .unwrap();
        assert_eq!(c.for_service(&env("dev"), &svc("a")).p95_ms, 700.0);
        assert_eq!(c.for_service(&env("prod"), &svc("a")).p95_ms, 300.0);
    }

    #[test]
    fn mistakes_are_named_precisely() {
        let cases = [
            ("[defaults]\nerror_rat = 0.1", "error_rat"),
            ("[defaults]\nerror_rate = 5", "error_rate = 5 must be a fraction"),
            ("[env.prod]\nslo_objective = 1.0", "[env.prod]: slo_objective"),
            ("[env.Prod]\np95_ms = 1", "[env.Prod]"),
            ("[service.\"payments-api\"]\np95_ms = 1", "\"env/service\""),
            ("[service.\"prod/a.b\"]\np95_ms = 1", "prod/a.b"),
            ("[defaults]\nsustain_s = \"2m\"", "sustain_s"),
            ("[[log_pattern]]\nname = \"x\"\nphrases = []", "at least one phrase"),
            ("[[log_pattern]]\nname = \"x\"\nphrases = [\"a\"]\nmin_count = 0", "min_count"),
            ("[unknown]\nx = 1", "unknown"),
        ];
        for (text, wanted) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text:?}: {err:?} should mention {wanted:?}");
        }
    }

    #[test]
    fn the_example_file_documents_the_defaults_and_loads() {
        let text = include_str!("../../../deploy/detector.example.toml");
        let c = parse(text).unwrap();
        assert_eq!(
            c.defaults(),
            &Tunables::default(),
            "the example's [defaults] must be the built-in defaults"
        );
        let pay = c.for_service(&env("prod"), &svc("payments-api"));
        assert_eq!((pay.p95_ms, pay.slo_objective), (400.0, 0.9995));
        assert!(!c.log_patterns.iter().any(|p| p.name == "tls_failure"));
        assert_eq!(
            c.log_patterns.iter().find(|p| p.name == "connection_refused").unwrap().min_count,
            3
        );
    }

    #[test]
    fn log_patterns_add_replace_and_disable_by_name() {
        let c = parse(
            r#"
            [[log_pattern]]
            name = "cache_stampede"
            phrases = ["cache stampede"]
            [[log_pattern]]
            name = "panic"
            enabled = false
            [[log_pattern]]
            name = "out_of_memory"
            phrases = ["oom"]
            min_count = 3
            "#,
        )
        .unwrap();
        let names: Vec<&str> = c.log_patterns.iter().map(|p| p.name.as_str()).collect();
        assert!(names.contains(&"cache_stampede") && !names.contains(&"panic"), "{names:?}");
        assert_eq!(c.log_patterns.iter().find(|p| p.name == "out_of_memory").unwrap().min_count, 3);
    }
}
