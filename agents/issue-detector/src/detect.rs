//! The detectors: what one event, seen against the service's windows, says about each kind
//! of incident. Pure functions; [`crate::lifecycle`] turns their verdicts into incidents.
//!
//! - **Sustained signals** (error rate; p95/p99 latency; CPU/memory): over the last
//!   `sustain_s`, at least `min_samples` samples carried the signal, at least `bad_ratio` of
//!   them were above the threshold, and they span at least half the window. A lone spike, or
//!   a brand-new service's first few seconds, is not sustained.
//! - **Crash loop** and **failed deploy** are already sustained facts when reported (the
//!   orchestrator reports a crash loop after repeated restarts), so one report fires.
//! - **Post-deploy regression**: during `regression_window_s` after a successful deploy, the
//!   samples since the deploy against the same length of samples before it; fires when the
//!   error rate grew by `regression_factor` and exceeds `regression_floor` (or p95 grew by
//!   `latency_regression_factor` above `latency_regression_floor_ms`), naming the version.
//! - **SLO burn**: see [`crate::slo`].
//! - **Log patterns**: see [`crate::logs`].

use std::time::Duration;

use bus_schema::{DeployEvent, DeployStatus, Evidence, IncidentKind, MetricSample, Severity};

use crate::config::Tunables;
use crate::logs::LogPattern;
use crate::service::{ServiceState, threshold, value};
use crate::slo::{RULES, SloView, human};
use crate::window::{FINE_WIDTH_S, Signal, WindowStats};

/// What an event says about one kind of incident.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The problem is there: opens an incident or keeps it open.
    Firing(Finding),
    /// This reading is bad, though not (yet) a sustained problem: an open incident stays open.
    Bad,
    /// This reading is healthy: counts towards resolving an open incident.
    Healthy,
    /// The problem is gone for good (a successful deploy, a quiet log): resolves at once.
    Cleared,
}

/// The evidence behind a firing verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    pub suspect_version: Option<String>,
}

pub type Verdicts = Vec<(IncidentKind, Verdict)>;

fn secs(t: bus_schema::Timestamp) -> i64 {
    t.unix_millis() / 1000
}

/// Every verdict a metric sample gives, at the service's event time.
pub fn on_metric(
    state: &ServiceState,
    m: &MetricSample,
    t: &Tunables,
    slo: &SloView,
    patterns: &[LogPattern],
) -> Verdicts {
    let now = state.now_or(m.timestamp);
    let mut out = Verdicts::new();
    if let Some(v) = crash_verdict(state, m, t, now) {
        let v = match v {
            Verdict::Firing(f) => {
                Verdict::Firing(implicate_deploy(f, IncidentKind::CrashLoop, state, t, now))
            }
            other => other,
        };
        out.push((IncidentKind::CrashLoop, v));
    }
    let groups: [(IncidentKind, &[Signal]); 3] = [
        (IncidentKind::HighErrorRate, &[Signal::ErrorRate]),
        (IncidentKind::HighLatency, &[Signal::P95, Signal::P99]),
        (IncidentKind::Overload, &[Signal::Cpu, Signal::Memory]),
    ];
    for (kind, signals) in groups {
        if let Some(v) = sustained_group(state, m, t, secs(now), kind, signals) {
            let v = match v {
                Verdict::Firing(f) => Verdict::Firing(implicate_deploy(f, kind, state, t, now)),
                other => other,
            };
            out.push((kind, v));
        }
    }
    match &slo.alert {
        Some((rule, evidence)) => {
            out.push((IncidentKind::SloBurn, Verdict::Firing(slo_finding(*rule, evidence, slo))))
        }
        None if m.error_rate.is_some() => out.push((IncidentKind::SloBurn, Verdict::Healthy)),
        None => {}
    }
    if let Some(v) = regression(state, m, t, secs(now)) {
        out.push((IncidentKind::DeployRegression, v));
    }
    if state.incidents.is_open(IncidentKind::LogPattern)
        && state.logs.firing(patterns, now).is_none()
    {
        out.push((IncidentKind::LogPattern, Verdict::Cleared));
    }
    out
}

/// What a deploy event says: a failure fires; success or rollback clears.
pub fn on_deploy(d: &DeployEvent) -> Verdicts {
    match d.status {
        DeployStatus::Failed => {
            let evidence = vec![Evidence {
                signal: "deploy_status".into(),
                value: 1.0,
                threshold: 0.0,
                window_s: 0,
                detail: format!("deploy of {} failed", d.version),
            }];
            let summary = format!(
                "deploy_failed: {} failed{}",
                d.version,
                d.previous_version.as_ref().map(|p| format!(" (previous {p})")).unwrap_or_default()
            );
            vec![(
                IncidentKind::DeployFailed,
                Verdict::Firing(Finding {
                    severity: Severity::High,
                    summary,
                    evidence,
                    suspect_version: Some(d.version.clone()),
                }),
            )]
        }
        // A new version (or the old one back) ends the failed deploy and any regression watch.
        DeployStatus::Succeeded | DeployStatus::RolledBack => vec![
            (IncidentKind::DeployFailed, Verdict::Cleared),
            (IncidentKind::DeployRegression, Verdict::Cleared),
        ],
        DeployStatus::Started => Vec::new(),
    }
}

/// What the log patterns say at `now`.
pub fn on_log(state: &ServiceState, patterns: &[LogPattern]) -> Verdicts {
    let Some(now) = state.newest else { return Vec::new() };
    match state.logs.firing(patterns, now) {
        Some((evidence, severity)) => {
            let names: Vec<&str> =
                evidence.iter().map(|e| e.signal.trim_start_matches("log:")).collect();
            let summary = format!("log_pattern: {}", names.join(", "));
            vec![(
                IncidentKind::LogPattern,
                Verdict::Firing(Finding { severity, summary, evidence, suspect_version: None }),
            )]
        }
        None if state.incidents.is_open(IncidentKind::LogPattern) => {
            vec![(IncidentKind::LogPattern, Verdict::Cleared)]
        }
        None => Vec::new(),
    }
}

/// The bad readings of one sample, attached to incidents as related evidence.
pub fn sample_evidence(m: &MetricSample, t: &Tunables) -> Vec<Evidence> {
    let mut out: Vec<Evidence> = Signal::ALL
        .iter()
        .filter_map(|&s| {
            let v = value(m, s)?;
            (v > threshold(t, s)).then(|| Evidence {
                signal: s.name().into(),
                value: v,
                threshold: threshold(t, s),
                window_s: 0,
                detail: "in the latest sample".into(),
            })
        })
        .collect();
    if m.crash_looping == Some(true) {
        out.extend(crash_finding(m).evidence);
    }
    out
}

/// How long after a successful deploy a new problem may name it as the suspect.
pub const SUSPECT_WINDOW: Duration = Duration::from_secs(3600);
/// How long the service must have been observed before a deploy for a comparison to mean
/// anything.
const MIN_OBSERVED_BEFORE_S: u64 = 60;
/// CPU or memory at least this many points above the pre-deploy mean is "worse".
const SATURATION_RISE_POINTS: f64 = 15.0;

/// What a crash-loop incident hears from a sample, from whatever crash fields it carries:
/// `crash_looping: true` fires; a rising restart counter keeps an open crash loop open;
/// `crash_looping: false` is healthy; a sample without the field is healthy once no sample
/// has reported a crash loop for `crash_quiet_s` (pipelines send the field only while the
/// service crashes, or from another source than their other metrics).
fn crash_verdict(
    state: &ServiceState,
    m: &MetricSample,
    t: &Tunables,
    now: bus_schema::Timestamp,
) -> Option<Verdict> {
    if m.crash_looping == Some(true) {
        return Some(Verdict::Firing(crash_finding(m)));
    }
    if m.restarts.is_some() && state.crash.rising {
        return Some(Verdict::Bad);
    }
    match m.crash_looping {
        Some(_) => Some(Verdict::Healthy),
        None => {
            let quiet =
                state.crash.last_report.is_none_or(|at| now.since(at).as_secs() >= t.crash_quiet_s);
            quiet.then_some(Verdict::Healthy)
        }
    }
}

/// Names the service's last deploy as the suspect of a new problem when there is evidence
/// against it, not just its age: it happened within [`SUSPECT_WINDOW`], it is not the first
/// version the service was seen with, the service was observed before it, and the problem's
/// signals are worse after it than before — a crash loop where none was reported before; an
/// error rate or p95 grown by the regression factors; CPU or memory well above their mean
/// before. That evidence is what puts a rollback among the remedies.
fn implicate_deploy(
    mut f: Finding,
    kind: IncidentKind,
    state: &ServiceState,
    t: &Tunables,
    now: bus_schema::Timestamp,
) -> Finding {
    if f.suspect_version.is_some() {
        return f;
    }
    let Some(marker) = state.deploy.as_ref() else { return f };
    let recent = marker.at <= now && now.since(marker.at) <= SUSPECT_WINDOW;
    if !recent || marker.first_version || marker.observed_before_s < MIN_OBSERVED_BEFORE_S {
        return f;
    }
    let Some(worse) = worse_after(kind, marker, state, t, now) else { return f };
    let ago = now.since(marker.at).as_secs();
    let from = marker.previous_version.as_ref().map(|p| format!(" (from {p})")).unwrap_or_default();
    f.suspect_version = Some(marker.version.clone());
    f.evidence.push(Evidence {
        signal: "deploy_implicated".into(),
        value: ago as f64,
        threshold: SUSPECT_WINDOW.as_secs() as f64,
        window_s: t.regression_window_s,
        detail: format!("{} deployed{from} {ago} s before; {worse}", marker.version),
    });
    f
}

/// How the problem's signals are worse after the deploy than before it, if they are.
fn worse_after(
    kind: IncidentKind,
    marker: &crate::service::DeployMarker,
    state: &ServiceState,
    t: &Tunables,
    now: bus_schema::Timestamp,
) -> Option<String> {
    let recent = |signal: Signal| state.windows.last(signal, secs(now), t.sustain_s).agg.mean();
    let grown = |signal: Signal, base: Option<f64>, factor: f64, floor: f64| -> Option<String> {
        let (base, after) = (base?, recent(signal)?);
        (after > (base * factor).max(floor))
            .then(|| format!("{} {after:.4} now against {base:.4} before", signal.name()))
    };
    let risen = |signal: Signal, base: Option<f64>| -> Option<String> {
        let (base, after) = (base?, recent(signal)?);
        (after >= base + SATURATION_RISE_POINTS)
            .then(|| format!("{} {after:.1} now against {base:.1} before", signal.name()))
    };
    match kind {
        IncidentKind::CrashLoop => (!marker.crashed_before).then(|| {
            format!("no crash loop was reported in the {} before it", human(t.regression_window_s))
        }),
        IncidentKind::HighErrorRate | IncidentKind::SloBurn => grown(
            Signal::ErrorRate,
            marker.baseline_error_rate,
            t.regression_factor,
            t.regression_floor,
        ),
        IncidentKind::HighLatency => grown(
            Signal::P95,
            marker.baseline_p95_ms,
            t.latency_regression_factor,
            t.latency_regression_floor_ms,
        ),
        IncidentKind::Overload => risen(Signal::Cpu, marker.baseline_cpu)
            .or_else(|| risen(Signal::Memory, marker.baseline_memory)),
        IncidentKind::DeployFailed | IncidentKind::DeployRegression | IncidentKind::LogPattern => {
            None
        }
    }
}

fn crash_finding(m: &MetricSample) -> Finding {
    let restarts = m.restarts.unwrap_or(0);
    Finding {
        severity: Severity::High,
        summary: format!("crash_loop: crash looping, {restarts} restarts"),
        evidence: vec![
            Evidence {
                signal: "crash_looping".into(),
                value: 1.0,
                threshold: 0.0,
                window_s: 0,
                detail: String::new(),
            },
            Evidence {
                signal: "restarts".into(),
                value: f64::from(restarts),
                threshold: 0.0,
                window_s: 0,
                detail: String::new(),
            },
        ],
        suspect_version: None,
    }
}

/// Sustained when enough samples, mostly bad, span enough of the window.
pub fn sustained(s: &WindowStats, t: &Tunables) -> bool {
    s.agg.n >= t.min_samples
        && f64::from(s.agg.bad) >= t.bad_ratio * f64::from(s.agg.n)
        && (s.span_s as u64) * 2 >= t.sustain_s
}

fn sustained_group(
    state: &ServiceState,
    m: &MetricSample,
    t: &Tunables,
    now: i64,
    kind: IncidentKind,
    signals: &[Signal],
) -> Option<Verdict> {
    let carried: Vec<(Signal, f64)> =
        signals.iter().filter_map(|&s| Some((s, value(m, s)?))).collect();
    if carried.is_empty() {
        return None;
    }
    if carried.iter().all(|&(s, v)| v <= threshold(t, s)) {
        // Healthy only if the signals this sample does not carry are not bad either: one
        // source's CPU reading says nothing about the memory another source reports.
        let quiet = signals
            .iter()
            .filter(|s| !carried.iter().any(|(c, _)| c == *s))
            .all(|&s| state.windows.last(s, now, t.sustain_s).agg.bad == 0);
        return quiet.then_some(Verdict::Healthy);
    }
    let mut evidence = Vec::new();
    let mut worst = 0.0_f64;
    for &s in signals {
        let stats = state.windows.last(s, now, t.sustain_s);
        if !sustained(&stats, t) {
            continue;
        }
        let mean = stats.agg.mean().unwrap_or(0.0);
        let limit = threshold(t, s);
        worst = worst.max(mean / limit);
        evidence.push(Evidence {
            signal: s.name().into(),
            value: mean,
            threshold: limit,
            window_s: t.sustain_s,
            detail: format!(
                "mean over {}; {} of {} samples above {limit}",
                human(t.sustain_s),
                stats.agg.bad,
                stats.agg.n
            ),
        });
    }
    if evidence.is_empty() {
        return Some(Verdict::Bad);
    }
    let severity = match kind {
        IncidentKind::Overload => Severity::High,
        _ if worst >= 2.0 => Severity::High,
        _ => Severity::Medium,
    };
    let signals: Vec<String> =
        evidence.iter().map(|e| format!("{} {:.4} > {}", e.signal, e.value, e.threshold)).collect();
    let summary = format!("{kind}: {} for {}", signals.join(", "), human(t.sustain_s));
    Some(Verdict::Firing(Finding { severity, summary, evidence, suspect_version: None }))
}

fn slo_finding(rule: usize, evidence: &[Evidence], slo: &SloView) -> Finding {
    let r = RULES[rule];
    let (long, short) =
        (evidence.first().map_or(0.0, |e| e.value), evidence.get(1).map_or(0.0, |e| e.value));
    let summary = format!(
        "slo_burn: {} — burning {long:.1}× over {} and {short:.1}× over {} (threshold {}×); {:.1} % of the {}-day error budget of the {} % objective spent",
        r.name,
        human(r.long_s),
        human(r.short_s),
        r.factor,
        slo.consumed * 100.0,
        slo.period_days,
        (slo.objective * 100_000.0).round() / 1000.0,
    );
    Finding { severity: r.severity, summary, evidence: evidence.to_vec(), suspect_version: None }
}

fn regression(state: &ServiceState, m: &MetricSample, t: &Tunables, now: i64) -> Option<Verdict> {
    let marker = state.deploy.as_ref()?;
    if m.error_rate.is_none() && m.p95_latency_ms.is_none() {
        return None;
    }
    let at = secs(marker.at);
    let watching = now > at && now <= at + t.regression_window_s as i64;
    if !watching && !state.incidents.is_open(IncidentKind::DeployRegression) {
        return None;
    }
    let checks = [
        (Signal::ErrorRate, marker.baseline_error_rate, t.regression_factor, t.regression_floor),
        (
            Signal::P95,
            marker.baseline_p95_ms,
            t.latency_regression_factor,
            t.latency_regression_floor_ms,
        ),
    ];
    let mut evidence = Vec::new();
    let mut sample_bad = false;
    for (signal, base, factor, floor) in checks {
        let Some(base) = base else { continue };
        let limit = (base * factor).max(floor);
        sample_bad |= value(m, signal).is_some_and(|v| v > limit);
        let after = state.windows.range(signal, at + FINE_WIDTH_S, now);
        let enough = after.agg.n >= t.min_samples
            && (after.span_s as u64) * 2 >= t.sustain_s.min(t.regression_window_s);
        if let Some(mean) = after.agg.mean().filter(|mean| watching && enough && *mean > limit) {
            evidence.push(Evidence {
                signal: format!("{}_after_deploy", signal.name()),
                value: mean,
                threshold: limit,
                window_s: t.regression_window_s,
                detail: format!("{mean:.4} since {} vs {base:.4} in the {} before (limit: {factor}× and at least {floor})", marker.version, human(t.regression_window_s)),
            });
        }
    }
    if !evidence.is_empty() {
        let from =
            marker.previous_version.as_ref().map(|p| format!(" (from {p})")).unwrap_or_default();
        let summary = format!(
            "deploy_regression: {} after deploying {}{from}",
            evidence
                .iter()
                .map(|e| e.signal.trim_end_matches("_after_deploy"))
                .collect::<Vec<_>>()
                .join(" and "),
            marker.version
        );
        return Some(Verdict::Firing(Finding {
            severity: Severity::High,
            summary,
            evidence,
            suspect_version: Some(marker.version.clone()),
        }));
    }
    Some(if sample_bad { Verdict::Bad } else { Verdict::Healthy })
}

/// How long a resolved cause keeps explaining its symptoms.
pub fn inhibit_for(t: &Tunables) -> Duration {
    Duration::from_secs(t.sustain_s.max(300))
}
