//! One canary stage's verdict: the canary against the stable version it runs beside, plus the
//! contract's absolute guardrails (pure).
//!
//! | verdict | when |
//! |---|---|
//! | fail | the canary alone breaches a guardrail (median p95/p99 or mean error rate over the stage, from [`GUARDRAIL_MIN_SAMPLES`] canary samples); or, with the stage's minimum samples on both sides, the canary is significantly worse (one-sided p < [`ALPHA`]) *and* materially worse ([`LATENCY_MARGIN`], [`ERROR_RATIO`] and [`ERROR_MIN_DIFF`]) |
//! | pass | the stage ran its minimum duration, both sides have the minimum samples, nothing failed, and the stable version is within the guardrails too |
//! | inconclusive | the stage's deadline passed without the minimum samples, or it has them but the stable version breaches the guardrails as well (a shared problem is not the canary's to answer for) |
//! | wait | otherwise |
//!
//! Latency is compared with Mann-Whitney U on per-sample p95. Errors are compared with the
//! two-proportion test on request counts (error rate × qps × sample interval) when every sample
//! carries its qps and enough errors are expected; otherwise with Mann-Whitney U on per-sample
//! error rates. Since a stage is judged again at every sample, the significance level is strict.

use bus_schema::{Guardrails, MetricSample, Variant};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::stats::{self, MannWhitney};

/// One-sided significance level of both tests.
pub const ALPHA: f64 = 0.001;
/// A latency regression must also move the canary's median p95 this much above the stable's.
pub const LATENCY_MARGIN: f64 = 1.10;
/// An error regression must also be at least this ratio of the stable error rate ...
pub const ERROR_RATIO: f64 = 1.5;
/// ... and this much above it in absolute terms.
pub const ERROR_MIN_DIFF: f64 = 0.0005;
/// Canary samples needed before a guardrail breach counts (one bad scrape is not a breach).
pub const GUARDRAIL_MIN_SAMPLES: usize = 5;
/// Samples per side a stage needs when its contract names none.
pub const DEFAULT_MIN_SAMPLES: usize = 10;
/// Errors the pooled rate must lead us to expect in the canary before the two-proportion test
/// is trusted.
pub const MIN_EXPECTED_ERRORS: f64 = 5.0;
/// Samples kept per side and stage (the newest).
pub const MAX_STAGE_SAMPLES: usize = 2000;

/// What a stage keeps of one metric sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: i64,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub error_rate: Option<f64>,
    pub qps: Option<f64>,
}

/// The samples of one stage, per side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageData {
    pub canary: Vec<Sample>,
    pub stable: Vec<Sample>,
}

impl StageData {
    /// Adds a sample to its side: `variant: canary` to the canary, anything else to the stable.
    pub fn add(&mut self, m: &MetricSample) {
        let side = if m.variant == Some(Variant::Canary) { &mut self.canary } else { &mut self.stable };
        if side.len() >= MAX_STAGE_SAMPLES {
            side.remove(0);
        }
        side.push(Sample { at_ms: m.timestamp.unix_millis(), p95_ms: m.p95_latency_ms, p99_ms: m.p99_latency_ms, error_rate: m.error_rate, qps: m.qps });
    }

    /// Event time the stage has covered, from its first sample to its newest.
    pub fn elapsed_s(&self) -> f64 {
        let times = self.canary.iter().chain(&self.stable).map(|s| s.at_ms);
        let (first, last) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        if first > last { 0.0 } else { (last - first) as f64 / 1000.0 }
    }
}

/// What a stage must show.
#[derive(Debug, Clone, PartialEq)]
pub struct Criteria {
    /// Event time the stage runs at least (its minimum duration, plus an extension).
    pub min_duration_s: f64,
    /// Event time after which a stage still short of samples is inconclusive.
    pub deadline_s: f64,
    /// Samples per side.
    pub min_samples: usize,
    pub guardrails: Guardrails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Wait,
    Pass,
    Fail,
    Inconclusive,
}

/// A verdict, why, and the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub evidence: Value,
}

fn values(side: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Vec<f64> {
    side.iter().filter_map(f).filter(|v| v.is_finite()).collect()
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Requests and errors a side served: each sample stands for its qps over the side's sampling
/// interval. `None` unless every sample has an error rate and a qps.
fn counts(side: &[Sample]) -> Option<(f64, f64)> {
    if side.is_empty() || side.iter().any(|s| s.qps.is_none() || s.error_rate.is_none()) {
        return None;
    }
    let (first, last) = side.iter().fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s.at_ms), hi.max(s.at_ms)));
    let interval_s = if side.len() > 1 { ((last - first) as f64 / 1000.0 / (side.len() - 1) as f64).max(1.0) } else { 1.0 };
    let requests: f64 = side.iter().map(|s| s.qps.unwrap_or(0.0) * interval_s).sum();
    let errors: f64 = side.iter().map(|s| s.error_rate.unwrap_or(0.0) * s.qps.unwrap_or(0.0) * interval_s).sum();
    Some((requests, errors))
}

fn mw_json(r: &MannWhitney) -> Value {
    json!({"test": "mann_whitney_u", "u": round(r.u, 1), "z": round(r.z, 3), "p_value": sig(r.p_value), "effect": round(r.effect, 3)})
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Four significant digits: p-values span many orders of magnitude.
fn sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let places = 3 - x.abs().log10().floor() as i32;
    round(x, places.clamp(0, 300))
}

/// Judges a stage.
pub fn judge(data: &StageData, c: &Criteria) -> Judgement {
    let (canary, stable) = (&data.canary, &data.stable);
    let elapsed = data.elapsed_s();
    let enough = canary.len() >= c.min_samples && stable.len() >= c.min_samples;
    let mut fails = Vec::new();
    let mut shared = Vec::new();
    let g = &c.guardrails;

    // Latency: medians for the guardrail and the margin, Mann-Whitney for the comparison.
    let (c95, s95) = (values(canary, |s| s.p95_ms), values(stable, |s| s.p95_ms));
    let (c95_median, s95_median) = (stats::median(&c95), stats::median(&s95));
    let mut latency = json!({"canary_median_p95_ms": c95_median.map(|v| round(v, 1)), "stable_median_p95_ms": s95_median.map(|v| round(v, 1)), "guardrail_p95_ms": g.max_p95_latency_ms});
    let mut breach = |what: &str, canary_value: Option<f64>, stable_value: Option<f64>, limit: f64, unit: &str| {
        let Some(cv) = canary_value.filter(|v| *v > limit) else { return };
        if stable_value.is_some_and(|sv| sv > limit) {
            shared.push(format!("both versions breach the {what} guardrail of {limit}{unit} (canary {cv:.4}{unit}, stable {:.4}{unit})", stable_value.unwrap_or_default()));
        } else {
            fails.push(format!("the canary's {what} {cv:.4}{unit} breaches the contract's {limit}{unit}"));
        }
    };
    if canary.len() >= GUARDRAIL_MIN_SAMPLES {
        breach("median p95", c95_median, s95_median, g.max_p95_latency_ms, " ms");
        if let Some(limit) = g.max_p99_latency_ms {
            breach("median p99", stats::median(&values(canary, |s| s.p99_ms)), stats::median(&values(stable, |s| s.p99_ms)), limit, " ms");
        }
        breach("mean error rate", mean(&values(canary, |s| s.error_rate)), mean(&values(stable, |s| s.error_rate)), g.max_error_rate, "");
    }
    if let (true, Some(r)) = (enough, stats::mann_whitney(&c95, &s95)) {
        let (cm, sm) = (c95_median.unwrap_or_default(), s95_median.unwrap_or_default());
        latency["comparison"] = mw_json(&r);
        if r.p_value < ALPHA && cm > sm * LATENCY_MARGIN {
            fails.push(format!("the canary is slower: median p95 {cm:.0} ms against {sm:.0} ms (Mann-Whitney p = {:.2e})", r.p_value));
        }
    }

    // Errors: counts when the samples carry qps, per-sample rates otherwise.
    let (ce, se) = (values(canary, |s| s.error_rate), values(stable, |s| s.error_rate));
    let mut errors = json!({"canary_mean_error_rate": mean(&ce).map(|v| round(v, 6)), "stable_mean_error_rate": mean(&se).map(|v| round(v, 6)), "guardrail_error_rate": g.max_error_rate});
    if enough {
        let proportions = counts(canary)
            .zip(counts(stable))
            .and_then(|((cr, cx), (sr, sx))| stats::two_proportions(cx, cr, sx, sr))
            .filter(|t| (t.canary_errors + t.stable_errors) / (t.canary_requests + t.stable_requests) * t.canary_requests >= MIN_EXPECTED_ERRORS);
        let compared = match proportions {
            Some(t) => {
                errors["comparison"] = json!({
                    "test": "two_proportions", "canary_errors": t.canary_errors.round(), "canary_requests": t.canary_requests.round(),
                    "stable_errors": t.stable_errors.round(), "stable_requests": t.stable_requests.round(), "z": round(t.z, 3), "p_value": sig(t.p_value),
                });
                Some((t.p_value, t.canary_rate, t.stable_rate))
            }
            None => stats::mann_whitney(&ce, &se).map(|r| {
                errors["comparison"] = mw_json(&r);
                (r.p_value, mean(&ce).unwrap_or_default(), mean(&se).unwrap_or_default())
            }),
        };
        if let Some((p, cr, sr)) = compared {
            if p < ALPHA && cr > sr * ERROR_RATIO && cr - sr > ERROR_MIN_DIFF {
                fails.push(format!("the canary fails more: error rate {cr:.4} against {sr:.4} (p = {p:.2e})"));
            }
        }
    }

    let done = elapsed >= c.min_duration_s;
    let verdict = if !fails.is_empty() {
        Verdict::Fail
    } else if done && enough {
        if shared.is_empty() { Verdict::Pass } else { Verdict::Inconclusive }
    } else if elapsed >= c.deadline_s {
        Verdict::Inconclusive
    } else {
        Verdict::Wait
    };
    let mut reasons = fails;
    reasons.extend(shared);
    if verdict == Verdict::Inconclusive && !enough {
        reasons.push(format!("{} canary and {} stable samples after {elapsed:.0} s; the stage needs {} on each side", canary.len(), stable.len(), c.min_samples));
    }
    if verdict == Verdict::Pass {
        reasons.push(format!("no difference that matters between canary and stable over {elapsed:.0} s"));
    }
    let evidence = json!({
        "elapsed_s": round(elapsed, 1), "min_duration_s": c.min_duration_s, "deadline_s": c.deadline_s,
        "samples": {"canary": canary.len(), "stable": stable.len(), "min": c.min_samples},
        "alpha": ALPHA, "latency": latency, "errors": errors,
    });
    Judgement { verdict, reasons, evidence }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guardrails() -> Guardrails {
        Guardrails { max_error_rate: 0.02, max_p95_latency_ms: 500.0, max_p99_latency_ms: None, max_traffic_step_percent: 50 }
    }

    fn criteria() -> Criteria {
        Criteria { min_duration_s: 120.0, deadline_s: 600.0, min_samples: 30, guardrails: guardrails() }
    }

    /// `n` samples 10 s apart per side; `f(i)` gives (p95, error rate) for sample i.
    fn stage(n: usize, canary: impl Fn(usize) -> (f64, f64), stable: impl Fn(usize) -> (f64, f64)) -> StageData {
        let side = |f: &dyn Fn(usize) -> (f64, f64), qps: f64| {
            (0..n).map(|i| {
                let (p95, e) = f(i);
                Sample { at_ms: i as i64 * 10_000, p95_ms: Some(p95), p99_ms: Some(p95 * 1.5), error_rate: Some(e), qps: Some(qps) }
            })
            .collect()
        };
        StageData { canary: side(&canary, 40.0), stable: side(&stable, 400.0) }
    }

    /// A deterministic wobble in [0, 1).
    fn wobble(i: usize, salt: usize) -> f64 {
        ((i * 7919 + salt * 104_729) % 1000) as f64 / 1000.0
    }

    fn healthy(salt: usize) -> impl Fn(usize) -> (f64, f64) {
        move |i| (120.0 + 80.0 * wobble(i, salt), 0.001 + 0.003 * wobble(i, salt + 1))
    }

    #[test]
    fn alike_versions_pass_once_the_stage_has_run_its_course() {
        let early = judge(&stage(10, healthy(1), healthy(2)), &criteria());
        assert_eq!(early.verdict, Verdict::Wait, "{:?}", early.reasons);
        let done = judge(&stage(31, healthy(1), healthy(2)), &criteria());
        assert_eq!(done.verdict, Verdict::Pass, "{:?}", done.reasons);
        assert_eq!(done.evidence["errors"]["comparison"]["test"], "two_proportions");
        assert_eq!(done.evidence["samples"]["canary"], 31);
    }

    #[test]
    fn three_times_the_errors_fail_as_soon_as_there_are_enough_samples() {
        let bad = |i| {
            let (p, e) = healthy(1)(i);
            (p, e * 3.0)
        };
        let long = Criteria { min_duration_s: 600.0, ..criteria() };
        assert_eq!(judge(&stage(29, bad, healthy(2)), &long).verdict, Verdict::Wait, "29 samples are not enough");
        let j = judge(&stage(30, bad, healthy(2)), &long);
        assert_eq!(j.verdict, Verdict::Fail, "a failure does not wait for the stage's duration: {:?}", j.reasons);
        assert!(j.reasons[0].contains("fails more"), "{:?}", j.reasons);
        assert!(j.evidence["errors"]["comparison"]["p_value"].as_f64().unwrap() < ALPHA);
    }

    #[test]
    fn a_canary_only_slowdown_fails_and_a_shared_one_passes() {
        let slow = |salt| move |i| {
            let (p, e) = healthy(salt)(i);
            (p * 2.0, e)
        };
        let canary_only = judge(&stage(30, slow(1), healthy(2)), &criteria());
        assert_eq!(canary_only.verdict, Verdict::Fail, "{:?}", canary_only.reasons);
        assert!(canary_only.reasons[0].contains("slower"), "{:?}", canary_only.reasons);
        assert!(canary_only.evidence["latency"]["canary_median_p95_ms"].as_f64().unwrap() < 500.0, "caught below the guardrail");
        let shared = judge(&stage(31, slow(1), slow(2)), &criteria());
        assert_eq!(shared.verdict, Verdict::Pass, "{:?}", shared.reasons);
    }

    #[test]
    fn guardrails_fail_the_canary_alone_and_hold_a_shared_breach() {
        let over = |i| (700.0 + wobble(i, 3) * 50.0, 0.002);
        let j = judge(&stage(5, over, healthy(2)), &criteria());
        assert_eq!(j.verdict, Verdict::Fail, "a guardrail needs only {GUARDRAIL_MIN_SAMPLES} samples: {:?}", j.reasons);
        assert!(j.reasons[0].contains("breaches the contract's 500 ms"), "{:?}", j.reasons);
        assert_eq!(judge(&stage(4, over, healthy(2)), &criteria()).verdict, Verdict::Wait);
        let both = judge(&stage(31, over, |i| (710.0 + wobble(i, 4) * 50.0, 0.002)), &criteria());
        assert_eq!(both.verdict, Verdict::Inconclusive, "{:?}", both.reasons);
        assert!(both.reasons[0].contains("both versions"), "{:?}", both.reasons);
    }

    #[test]
    fn a_stage_short_of_samples_waits_for_them_until_its_deadline() {
        let mut data = stage(8, healthy(1), healthy(2));
        data.stable.push(Sample { at_ms: 200_000, p95_ms: Some(150.0), p99_ms: None, error_rate: Some(0.002), qps: Some(400.0) });
        assert_eq!(judge(&data, &criteria()).verdict, Verdict::Wait, "past the minimum duration, before the deadline");
        data.stable.push(Sample { at_ms: 600_000, p95_ms: Some(150.0), p99_ms: None, error_rate: Some(0.002), qps: Some(400.0) });
        let j = judge(&data, &criteria());
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(j.reasons[0].contains("8 canary and 10 stable samples"), "{:?}", j.reasons);
    }

    #[test]
    fn without_qps_errors_are_compared_per_sample() {
        let mut data = stage(30, |i| (150.0, 0.01 + 0.002 * wobble(i, 1)), |i| (150.0, 0.002 + 0.002 * wobble(i, 2)));
        for s in data.canary.iter_mut().chain(data.stable.iter_mut()) {
            s.qps = None;
        }
        let j = judge(&data, &criteria());
        assert_eq!(j.evidence["errors"]["comparison"]["test"], "mann_whitney_u");
        assert_eq!(j.verdict, Verdict::Fail, "{:?}", j.reasons);
    }
}
