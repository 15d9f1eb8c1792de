//! Everything the detector knows about one env/service, built from its events: windows,
//! the latest reading of each source, the last deploy, log matches, incidents and the
//! actions waiting to be judged. One redb record per service.
//!
//! Time is the service's *event time*: the newest timestamp seen. A sample stands for the time
//! since the previous sample (capped at [`MAX_GAP_S`] or twice the usual cadence, whichever is
//! longer); a late sample stands for the service's typical gap. Samples more than `max_lateness` behind the newest one are rejected,
//! as are samples stamped more than `max_clock_skew` ahead of this machine's clock (one bogus
//! far-future timestamp would otherwise make every later sample look late).

use std::collections::BTreeMap;
use std::time::Duration;

use agent_runtime::Outbox;
use bus_schema::{DeployEvent, Env, Evidence, MetricSample, ServiceName, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::{DetectorConfig, Tunables};
use crate::logs::LogMatches;
use crate::records::{Hold, Incidents, Pending, Verification};
use crate::slo;
use crate::window::{ErrorTime, FINE_WIDTH_S, SIGNALS, Signal, Windows};

/// The most time one sample stands for, unless the service's usual cadence is slower.
pub const MAX_GAP_S: f64 = 300.0;
/// Assumed gap before a service's cadence is known.
const INITIAL_GAP_S: f64 = 10.0;
/// Distinct sources remembered per service (the oldest is forgotten first).
const MAX_SOURCES: usize = 16;

/// The latest reading of one source (exporter, probe) of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReading {
    pub at: Timestamp,
    pub error_rate: Option<f64>,
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    pub crash: Option<bool>,
}

/// The service's most recent successful deploy, for the regression detector and for naming a
/// deploy as the suspect of a new problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployMarker {
    pub version: String,
    pub previous_version: Option<String>,
    pub at: Timestamp,
    /// Mean error rate and p95 over the regression window before the deploy.
    pub baseline_error_rate: Option<f64>,
    pub baseline_p95_ms: Option<f64>,
    /// Mean CPU and memory over the same window.
    #[serde(default)]
    pub baseline_cpu: Option<f64>,
    #[serde(default)]
    pub baseline_memory: Option<f64>,
    /// How long the service had been observed (by its samples) before the deploy, in seconds.
    #[serde(default)]
    pub observed_before_s: u64,
    /// Whether a crash loop was reported in the window before the deploy.
    #[serde(default)]
    pub crashed_before: bool,
    /// The first version this service was seen with: nothing to compare it with, so no suspect.
    #[serde(default)]
    pub first_version: bool,
}

/// What the service's samples say about crashing, from the fields pipelines send for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrashTrack {
    /// The newest sample that reported `crash_looping: true`.
    pub last_report: Option<Timestamp>,
    /// The newest restart counter and when it was read.
    pub restarts: Option<(u32, Timestamp)>,
    /// Whether the newest sample's restart counter was above the reading before it.
    pub rising: bool,
}

/// Where the service stands on its SLO, as last published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloMark {
    pub at: Timestamp,
    pub alert: Option<usize>,
    pub exhausted: bool,
}

/// Why a sample was not taken into the windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAdmitted {
    Late { behind: Duration, newest: Timestamp },
    Future { ahead: Duration },
}

impl NotAdmitted {
    /// Why the event was not judged, for its `event_rejected` record.
    pub fn not_judged(&self) -> String {
        format!("timestamp is {self}; not judged")
    }
}

impl std::fmt::Display for NotAdmitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAdmitted::Late { behind, newest } => {
                write!(f, "{} s behind this service's newest sample ({newest})", behind.as_secs())
            }
            NotAdmitted::Future { ahead } => {
                write!(f, "{} s ahead of this detector's clock", ahead.as_secs())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub env: Env,
    pub service: ServiceName,
    /// Event time: the newest sample seen.
    pub newest: Option<Timestamp>,
    typical_gap_s: f64,
    /// The newest metric sample (deploys and logs move event time, not the sample cadence).
    #[serde(default)]
    last_sample: Option<Timestamp>,
    pub windows: Windows,
    sources: BTreeMap<String, SourceReading>,
    pub deploy: Option<DeployMarker>,
    /// Whether any successful deploy was seen (the first one's version is no suspect).
    #[serde(default)]
    seen_deploy: bool,
    /// The first sample's time: how long the service has been observed.
    #[serde(default)]
    first_sample: Option<Timestamp>,
    #[serde(default)]
    pub crash: CrashTrack,
    pub logs: LogMatches,
    pub incidents: Incidents,
    pub verifications: Vec<Verification>,
    /// Recoveries credited to an action, watched until the flap window has passed.
    #[serde(default)]
    pub holds: Vec<Hold>,
    pub slo_published: Option<SloMark>,
    /// The inputs applied (a redelivered one is not applied twice) and the outputs decided but
    /// not yet stored on the bus.
    #[serde(flatten)]
    pub delivery: Outbox<Pending>,
}

impl ServiceState {
    pub fn new(env: Env, service: ServiceName) -> Self {
        Self {
            env,
            service,
            newest: None,
            typical_gap_s: INITIAL_GAP_S,
            last_sample: None,
            windows: Windows::default(),
            sources: BTreeMap::new(),
            deploy: None,
            seen_deploy: false,
            first_sample: None,
            crash: CrashTrack::default(),
            logs: LogMatches::default(),
            incidents: Incidents::default(),
            verifications: Vec::new(),
            holds: Vec::new(),
            slo_published: None,
            delivery: Outbox::default(),
        }
    }

    /// The baseline of a deploy at `at`: the mean over the regression window before it, if it
    /// had enough samples. Taken when the deploy is recorded, so it outlives the fine windows.
    fn baseline(&self, at: Timestamp, t: &Tunables, signal: Signal) -> Option<f64> {
        let at = at.unix_millis() / 1000;
        let before =
            self.windows.range(signal, at - t.regression_window_s as i64, at - FINE_WIDTH_S);
        before.agg.mean().filter(|_| before.agg.n >= t.min_samples)
    }

    /// `env/service`, the key of this state.
    pub fn key(&self) -> String {
        key(&self.env, &self.service)
    }

    /// The service's event time, or `fallback` before its first sample.
    pub fn now_or(&self, fallback: Timestamp) -> Timestamp {
        self.newest.unwrap_or(fallback)
    }

    /// Whether a sample stamped `at` may enter the windows.
    pub fn admit(
        &self,
        at: Timestamp,
        config: &DetectorConfig,
        wall_clock: Timestamp,
    ) -> Result<(), NotAdmitted> {
        self.admit_future(at, config, wall_clock)?;
        match self.newest {
            Some(newest) if at < newest.minus(config.max_lateness) => {
                Err(NotAdmitted::Late { behind: newest.since(at), newest })
            }
            _ => Ok(()),
        }
    }

    /// Whether `at` is at most `max_clock_skew` ahead of this machine's clock.
    pub fn admit_future(
        &self,
        at: Timestamp,
        config: &DetectorConfig,
        wall_clock: Timestamp,
    ) -> Result<(), NotAdmitted> {
        if at > wall_clock.plus(config.max_clock_skew) {
            return Err(NotAdmitted::Future { ahead: at.since(wall_clock) });
        }
        Ok(())
    }

    /// Moves event time forward (never back).
    pub fn advance(&mut self, at: Timestamp) {
        if self.newest.is_none_or(|n| at > n) {
            self.newest = Some(at);
        }
    }

    /// Takes a metric sample into the windows and the source table.
    pub fn record_metric(&mut self, m: &MetricSample, t: &Tunables) {
        let at = m.timestamp;
        // A sample stands for the time since the previous sample, up to twice the service's
        // usual cadence (at least MAX_GAP_S): a silence is not counted as measured time.
        let cap = MAX_GAP_S.max(2.0 * self.typical_gap_s);
        let dt = match self.last_sample {
            Some(last) if at > last => {
                let gap = ((at.unix_millis() - last.unix_millis()) as f64 / 1000.0).min(cap);
                self.typical_gap_s = 0.8 * self.typical_gap_s + 0.2 * gap;
                gap
            }
            _ => self.typical_gap_s.min(cap),
        };
        let newest = self.last_sample.is_none_or(|last| at >= last);
        if self.last_sample.is_none_or(|last| at > last) {
            self.last_sample = Some(at);
        }
        if self.first_sample.is_none_or(|first| at < first) {
            self.first_sample = Some(at);
        }
        self.record_crash(m, newest);
        self.advance(at);
        let mut readings: [Option<(f64, bool)>; SIGNALS] = [None; SIGNALS];
        for signal in Signal::ALL {
            readings[signal as usize] = value(m, signal).map(|v| (v, v > threshold(t, signal)));
        }
        let errors = m.error_rate.map(|rate| ErrorTime {
            bad_s: rate * dt,
            seen_s: dt,
            burning: slo::burning(rate, t),
        });
        let newest_s = self.newest.map_or(0, |n| n.unix_millis() / 1000);
        self.windows.add(at.unix_millis() / 1000, readings, errors, newest_s);

        let source = m.source.clone().unwrap_or_else(|| "default".to_owned());
        let reading = SourceReading {
            at,
            error_rate: m.error_rate,
            cpu: m.cpu_percent,
            memory: m.memory_percent,
            crash: m.crash_looping,
        };
        match self.sources.get(&source) {
            Some(known) if known.at > at => {}
            _ => {
                self.sources.insert(source, reading);
            }
        }
        while self.sources.len() > MAX_SOURCES {
            let oldest =
                self.sources.iter().min_by_key(|(_, r)| r.at).map(|(name, _)| name.clone());
            if let Some(name) = oldest {
                self.sources.remove(&name);
            }
        }
    }

    /// The crash fields of a sample: when a crash loop was last reported, and whether the
    /// restart counter is still rising. Only the newest sample says what is happening now.
    fn record_crash(&mut self, m: &MetricSample, newest: bool) {
        let at = m.timestamp;
        if m.crash_looping == Some(true) && self.crash.last_report.is_none_or(|last| at > last) {
            self.crash.last_report = Some(at);
        }
        if !newest {
            return;
        }
        self.crash.rising = match (m.restarts, self.crash.restarts) {
            (Some(now), Some((before, _))) => now > before,
            _ => false,
        };
        if let Some(n) = m.restarts {
            self.crash.restarts = Some((n, at));
        }
    }

    /// Remembers a successful deploy as the start of a regression watch, with what the service
    /// looked like before it.
    pub fn record_deploy(&mut self, d: &DeployEvent, t: &Tunables) {
        let at = d.timestamp;
        let before = at.minus(Duration::from_secs(t.regression_window_s));
        self.deploy = Some(DeployMarker {
            version: d.version.clone(),
            previous_version: d.previous_version.clone(),
            at,
            baseline_error_rate: self.baseline(at, t, Signal::ErrorRate),
            baseline_p95_ms: self.baseline(at, t, Signal::P95),
            baseline_cpu: self.baseline(at, t, Signal::Cpu),
            baseline_memory: self.baseline(at, t, Signal::Memory),
            observed_before_s: self
                .first_sample
                .filter(|first| *first < at)
                .map_or(0, |first| at.since(first).as_secs()),
            crashed_before: self.crash.last_report.is_some_and(|r| r >= before && r < at),
            first_version: !self.seen_deploy && d.previous_version.is_none(),
        });
        self.seen_deploy = true;
    }

    /// Readings from different sources (or one sample) that cannot all be true, at `now`.
    pub fn conflicts(&self, now: Timestamp, t: &Tunables) -> Vec<Evidence> {
        let from = now.minus(Duration::from_secs(t.conflict_window_s));
        let recent: Vec<(&String, &SourceReading)> =
            self.sources.iter().filter(|(_, r)| r.at >= from).collect();
        let mut out = Vec::new();
        let spread = |pick: fn(&SourceReading) -> Option<f64>| -> Option<(f64, f64, String)> {
            let values: Vec<(f64, &String)> =
                recent.iter().filter_map(|(name, r)| Some((pick(r)?, *name))).collect();
            let max = values.iter().map(|(v, _)| *v).fold(f64::MIN, f64::max);
            let min = values.iter().map(|(v, _)| *v).fold(f64::MAX, f64::min);
            let detail =
                values.iter().map(|(v, name)| format!("{name}={v}")).collect::<Vec<_>>().join(", ");
            (values.len() > 1).then_some((min, max, detail))
        };
        for (signal, pick) in [
            ("cpu_percent", (|r: &SourceReading| r.cpu) as fn(&SourceReading) -> Option<f64>),
            ("memory_percent", |r| r.memory),
        ] {
            if let Some((min, max, detail)) =
                spread(pick).filter(|(min, max, _)| max - min >= t.conflict_gap_percent)
            {
                out.push(conflict(
                    signal,
                    max - min,
                    t.conflict_gap_percent,
                    format!("sources disagree: {detail} (min {min})"),
                ));
            }
        }
        if let Some((min, max, detail)) = spread(|r| r.error_rate)
            .filter(|(min, max, _)| *max > t.error_rate && *min <= t.error_rate / 10.0)
        {
            out.push(conflict(
                "error_rate",
                max - min,
                t.error_rate,
                format!("sources disagree: {detail}"),
            ));
        }
        let crashing = recent.iter().any(|(_, r)| r.crash == Some(true));
        let no_errors = recent.iter().any(|(_, r)| r.error_rate == Some(0.0));
        if crashing && no_errors {
            out.push(conflict(
                "crash_looping",
                1.0,
                0.0,
                "crash_looping is reported while error_rate is 0".to_owned(),
            ));
        }
        out
    }
}

fn conflict(signal: &str, value: f64, threshold: f64, detail: String) -> Evidence {
    Evidence { signal: format!("conflict:{signal}"), value, threshold, window_s: 0, detail }
}

/// `env/service`.
pub fn key(env: &Env, service: &ServiceName) -> String {
    format!("{env}/{service}")
}

/// A sample's value of one signal.
pub fn value(m: &MetricSample, signal: Signal) -> Option<f64> {
    match signal {
        Signal::ErrorRate => m.error_rate,
        Signal::P95 => m.p95_latency_ms,
        Signal::P99 => m.p99_latency_ms,
        Signal::Cpu => m.cpu_percent,
        Signal::Memory => m.memory_percent,
    }
}

/// The threshold above which a signal is bad.
pub fn threshold(t: &Tunables, signal: Signal) -> f64 {
    match signal {
        Signal::ErrorRate => t.error_rate,
        Signal::P95 => t.p95_ms,
        Signal::P99 => t.p99_ms,
        Signal::Cpu => t.cpu_percent,
        Signal::Memory => t.memory_percent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: &str, extra: serde_json::Value) -> MetricSample {
        let mut base = serde_json::json!({"service": "api", "env": "prod", "timestamp": at});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn state() -> ServiceState {
        ServiceState::new("prod".parse().unwrap(), "api".parse().unwrap())
    }

    #[test]
    fn late_and_far_future_samples_are_not_admitted_and_say_why() {
        let config = DetectorConfig::default();
        let mut s = state();
        let wall: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        s.record_metric(
            &sample("2026-11-22T10:00:00Z", serde_json::json!({"error_rate": 0.0})),
            &Tunables::default(),
        );
        assert_eq!(
            s.admit("2026-11-22T09:56:00Z".parse().unwrap(), &config, wall),
            Ok(()),
            "within the 5 min bound"
        );
        let late = s.admit("2026-11-22T09:54:59Z".parse().unwrap(), &config, wall).unwrap_err();
        assert_eq!(
            late.to_string(),
            "301 s behind this service's newest sample (2026-11-22T10:00:00Z)"
        );
        assert!(matches!(
            s.admit("2026-11-22T11:00:01Z".parse().unwrap(), &config, wall),
            Err(NotAdmitted::Future { .. })
        ));
    }

    #[test]
    fn conflicting_sources_are_named() {
        let t = Tunables::default();
        let mut s = state();
        let mut a = sample(
            "2026-11-22T10:00:00Z",
            serde_json::json!({"cpu_percent": 95, "source": "node-exporter"}),
        );
        s.record_metric(&a, &t);
        a = sample(
            "2026-11-22T10:00:05Z",
            serde_json::json!({"cpu_percent": 5, "source": "cadvisor"}),
        );
        s.record_metric(&a, &t);
        let now = "2026-11-22T10:00:05Z".parse().unwrap();
        let c = s.conflicts(now, &t);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].signal.as_str(), c[0].value), ("conflict:cpu_percent", 90.0));
        assert!(
            c[0].detail.contains("cadvisor=5") && c[0].detail.contains("node-exporter=95"),
            "{}",
            c[0].detail
        );
        // Readings far apart in time are a change, not a conflict.
        assert!(s.conflicts("2026-11-22T10:01:00Z".parse().unwrap(), &t).is_empty());
    }

    #[test]
    fn a_crash_loop_with_no_errors_is_a_conflict_but_one_source_changing_its_mind_is_not() {
        let t = Tunables::default();
        let mut s = state();
        s.record_metric(
            &sample(
                "2026-11-22T10:00:00Z",
                serde_json::json!({"crash_looping": true, "error_rate": 0.0}),
            ),
            &t,
        );
        let now = "2026-11-22T10:00:00Z".parse().unwrap();
        assert_eq!(s.conflicts(now, &t)[0].signal, "conflict:crash_looping");
        let mut s = state();
        s.record_metric(
            &sample("2026-11-22T10:00:00Z", serde_json::json!({"error_rate": 0.3})),
            &t,
        );
        s.record_metric(
            &sample("2026-11-22T10:00:10Z", serde_json::json!({"error_rate": 0.0})),
            &t,
        );
        assert!(s.conflicts("2026-11-22T10:00:10Z".parse().unwrap(), &t).is_empty());
    }

    #[test]
    fn sources_are_bounded() {
        let t = Tunables::default();
        let mut s = state();
        for i in 0..100 {
            s.record_metric(
                &sample(
                    &format!("2026-11-22T10:{:02}:00Z", i % 60),
                    serde_json::json!({"cpu_percent": 50, "source": format!("s{i}")}),
                ),
                &t,
            );
        }
        assert_eq!(s.sources.len(), MAX_SOURCES);
    }
}
