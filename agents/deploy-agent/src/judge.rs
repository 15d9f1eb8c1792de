//! One canary stage's verdict: the canary against the stable version it runs beside, plus the
//! contract's absolute guardrails (pure).
//!
//! | verdict | when |
//! |---|---|
//! | fail | from [`GUARDRAIL_MIN_SAMPLES`] canary samples, the canary alone is significantly above a guardrail (one-sided p < [`ALPHA`]: the sign test on per-sample p95/p99 against the limit, the exact Poisson test on error counts); or, with the stage's minimum samples on both sides, the canary is significantly worse than the stable (p < [`ALPHA`]) *and* materially worse ([`LATENCY_MARGIN`], [`ERROR_RATIO`] and [`ERROR_MIN_DIFF`]) |
//! | pass | the stage was watched for its minimum duration, both sides have the minimum of p95 values and of error rates, nothing failed, and the stable version is within the guardrails too |
//! | inconclusive | the stage's deadline passed without the minimum samples, or it has them but the stable version breaches the guardrails as well (a shared problem is not the canary's to answer for) |
//! | wait | otherwise |
//!
//! Latency is compared with Mann-Whitney U on per-sample p95. Errors are compared on request
//! counts (error rate × qps × the side's median sample interval) when every sample carries its
//! qps: the two-proportion z-test when the pooled rate leads us to expect
//! [`MIN_EXPECTED_ERRORS`] canary errors, the exact conditional test otherwise; without qps,
//! with Mann-Whitney U on per-sample error rates. Since a stage is judged again at every sample,
//! the significance level is strict.
//!
//! A stage's time is event time it was watched: the gaps between samples in the order they
//! arrive, each counted up to [`MAX_SAMPLE_GAP_S`]. A sample stamped in the far future adds at
//! most that, a paused pipeline does not count as watching, and samples stamped before the
//! stage's first are stale (counted, not judged).

use bus_schema::{Guardrails, MetricSample, Variant};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::stats::{self, AboveLimit, MannWhitney};

/// One-sided significance level of both tests.
pub const ALPHA: f64 = 0.001;
/// A latency regression must also move the canary's median p95 this much above the stable's.
pub const LATENCY_MARGIN: f64 = 1.10;
/// An error regression must also be at least this ratio of the stable error rate ...
pub const ERROR_RATIO: f64 = 1.5;
/// ... and this much above it in absolute terms.
pub const ERROR_MIN_DIFF: f64 = 0.0005;
/// Canary samples needed before a guardrail breach counts, however strong the evidence (one bad
/// scrape is not a breach).
pub const GUARDRAIL_MIN_SAMPLES: usize = 5;
/// Samples per side a stage needs when its contract names none.
pub const DEFAULT_MIN_SAMPLES: usize = 10;
/// Errors the pooled rate must lead us to expect in the canary before the two-proportion test
/// is trusted.
pub const MIN_EXPECTED_ERRORS: f64 = 5.0;
/// Samples kept per side and stage (the newest): two hours at a 15 s scrape interval.
pub const MAX_STAGE_SAMPLES: usize = 500;
/// The most event time one gap between samples counts for.
pub const MAX_SAMPLE_GAP_S: f64 = 300.0;

/// What a stage keeps of one metric sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: i64,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub error_rate: Option<f64>,
    pub qps: Option<f64>,
}

/// The samples of one stage, per side, and the event time it was watched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageData {
    pub canary: Vec<Sample>,
    pub stable: Vec<Sample>,
    /// Event time watched, in ms: the gaps between samples in arrival order, each capped.
    #[serde(default)]
    pub watched_ms: i64,
    /// The timestamp of the stage's first sample: anything stamped earlier is stale.
    #[serde(default)]
    pub first_ms: Option<i64>,
    /// The timestamp of the sample that arrived last.
    #[serde(default)]
    pub last_ms: Option<i64>,
    /// Samples stamped before the stage's first, not judged.
    #[serde(default)]
    pub stale: u64,
}

impl StageData {
    /// Adds a sample to its side: `variant: canary` to the canary, anything else to the stable.
    pub fn add(&mut self, m: &MetricSample) {
        let sample = Sample {
            at_ms: m.timestamp.unix_millis(),
            p95_ms: m.p95_latency_ms,
            p99_ms: m.p99_latency_ms,
            error_rate: m.error_rate,
            qps: m.qps,
        };
        self.push(m.variant == Some(Variant::Canary), sample);
    }

    /// Adds a sample to the canary's side or the stable's.
    pub fn push(&mut self, canary: bool, s: Sample) {
        let first = *self.first_ms.get_or_insert(s.at_ms);
        if s.at_ms < first {
            self.stale += 1;
            return;
        }
        if let Some(last) = self.last_ms {
            self.watched_ms += (s.at_ms - last).clamp(0, (MAX_SAMPLE_GAP_S * 1000.0) as i64);
        }
        self.last_ms = Some(s.at_ms);
        let side = if canary { &mut self.canary } else { &mut self.stable };
        if side.len() >= MAX_STAGE_SAMPLES {
            side.remove(0);
        }
        side.push(s);
    }

    /// Event time the stage was watched.
    pub fn elapsed_s(&self) -> f64 {
        self.watched_ms as f64 / 1000.0
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

/// Requests and errors a side served: each sample stands for its qps over the side's median
/// sampling interval. `None` unless every sample has an error rate and a qps.
fn counts(side: &[Sample]) -> Option<(f64, f64)> {
    if side.is_empty() || side.iter().any(|s| s.qps.is_none() || s.error_rate.is_none()) {
        return None;
    }
    let mut times: Vec<i64> = side.iter().map(|s| s.at_ms).collect();
    times.sort_unstable();
    let gaps: Vec<f64> =
        times.windows(2).map(|w| (w[1] - w[0]) as f64 / 1000.0).filter(|g| *g > 0.0).collect();
    let interval_s = stats::median(&gaps).unwrap_or(1.0).clamp(1.0, MAX_SAMPLE_GAP_S);
    let requests: f64 = side.iter().map(|s| s.qps.unwrap_or(0.0) * interval_s).sum();
    let errors: f64 =
        side.iter().map(|s| s.error_rate.unwrap_or(0.0) * s.qps.unwrap_or(0.0) * interval_s).sum();
    Some((requests, errors))
}

/// Whether `values` are significantly above `limit` (one-sided p < [`ALPHA`]), and the test.
fn above(test: Option<AboveLimit>, name: &str) -> (bool, Value) {
    match test {
        Some(t) => (
            t.p_value < ALPHA,
            json!({"test": name, "observed": round(t.observed, 1), "allowed": round(t.allowed, 2), "p_value": sig(t.p_value)}),
        ),
        None => (false, Value::Null),
    }
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
    let g = &c.guardrails;
    let (c95, s95) = (values(canary, |s| s.p95_ms), values(stable, |s| s.p95_ms));
    let (ce, se) = (values(canary, |s| s.error_rate), values(stable, |s| s.error_rate));
    // Each comparison needs the minimum of its own values on both sides: a sample with only a
    // cpu reading is no evidence about latency or errors.
    let latency_enough = c95.len().min(s95.len()) >= c.min_samples;
    let errors_enough = ce.len().min(se.len()) >= c.min_samples;
    let enough = latency_enough && errors_enough;
    let mut fails = Vec::new();
    let mut shared = Vec::new();
    let (c_counts, s_counts) = (counts(canary), counts(stable));
    let (c95_median, s95_median) = (stats::median(&c95), stats::median(&s95));

    // Guardrails: the canary alone significantly above a limit fails; with the stable above it
    // as well, the problem is shared.
    let mut guardrails = serde_json::Map::new();
    if canary.len() >= GUARDRAIL_MIN_SAMPLES {
        let mut check = |what: &str,
                         (breached, test): (bool, Value),
                         canary_value: Option<f64>,
                         stable_value: Option<f64>,
                         limit: f64,
                         unit: &str| {
            guardrails.insert(what.replace(' ', "_"), test);
            if !breached {
                return;
            }
            let cv = canary_value.unwrap_or_default();
            match stable_value.filter(|sv| *sv > limit) {
                Some(sv) => shared.push(format!("both versions breach the {what} guardrail of {limit}{unit} (canary {cv:.4}{unit}, stable {sv:.4}{unit})")),
                None => fails.push(format!("the canary's {what} {cv:.4}{unit} breaches the contract's {limit}{unit}")),
            }
        };
        let p95 = above(stats::sign_above(&c95, g.max_p95_latency_ms), "sign");
        check("median p95", p95, c95_median, s95_median, g.max_p95_latency_ms, " ms");
        if let Some(limit) = g.max_p99_latency_ms {
            let (c99, s99) = (values(canary, |s| s.p99_ms), values(stable, |s| s.p99_ms));
            check(
                "median p99",
                above(stats::sign_above(&c99, limit), "sign"),
                stats::median(&c99),
                stats::median(&s99),
                limit,
                " ms",
            );
        }
        let rate = |counts: Option<(f64, f64)>, rates: &[f64]| {
            counts.filter(|(r, _)| *r > 0.0).map(|(r, e)| e / r).or_else(|| mean(rates))
        };
        let error_test = match c_counts {
            Some((requests, errors)) => {
                above(stats::counts_above(errors, requests, g.max_error_rate), "poisson")
            }
            None => above(stats::sign_above(&ce, g.max_error_rate), "sign"),
        };
        check(
            "error rate",
            error_test,
            rate(c_counts, &ce),
            rate(s_counts, &se),
            g.max_error_rate,
            "",
        );
    }

    // Latency: Mann-Whitney on per-sample p95, and the medians for the margin.
    let mut latency = json!({"canary_median_p95_ms": c95_median.map(|v| round(v, 1)), "stable_median_p95_ms": s95_median.map(|v| round(v, 1)), "guardrail_p95_ms": g.max_p95_latency_ms});
    if let (true, Some(r)) = (latency_enough, stats::mann_whitney(&c95, &s95)) {
        let (cm, sm) = (c95_median.unwrap_or_default(), s95_median.unwrap_or_default());
        latency["comparison"] = mw_json(&r);
        if r.p_value < ALPHA && cm > sm * LATENCY_MARGIN {
            fails.push(format!("the canary is slower: median p95 {cm:.0} ms against {sm:.0} ms (Mann-Whitney p = {:.2e})", r.p_value));
        }
    }

    // Errors: counts when the samples carry qps (z-test, or the exact test when few errors are
    // expected), per-sample rates otherwise.
    let mut errors = json!({"canary_mean_error_rate": mean(&ce).map(|v| round(v, 6)), "stable_mean_error_rate": mean(&se).map(|v| round(v, 6)), "guardrail_error_rate": g.max_error_rate});
    if errors_enough {
        let compared = match c_counts.zip(s_counts) {
            Some(((cr, cx), (sr, sx))) if (cx + sx) / (cr + sr) * cr >= MIN_EXPECTED_ERRORS => stats::two_proportions(cx, cr, sx, sr).map(|t| {
                errors["comparison"] = json!({
                    "test": "two_proportions", "canary_errors": t.canary_errors.round(), "canary_requests": t.canary_requests.round(),
                    "stable_errors": t.stable_errors.round(), "stable_requests": t.stable_requests.round(), "z": round(t.z, 3), "p_value": sig(t.p_value),
                });
                (t.p_value, t.canary_rate, t.stable_rate)
            }),
            Some(((cr, cx), (sr, sx))) => stats::rate_ratio(cx, cr, sx, sr).map(|t| {
                errors["comparison"] = json!({
                    "test": "exact_conditional", "canary_errors": t.canary_errors, "canary_requests": cr.round(), "stable_errors": t.stable_errors,
                    "stable_requests": sr.round(), "canary_share": sig(t.canary_share), "p_value": sig(t.p_value),
                });
                (t.p_value, cx / cr, sx / sr)
            }),
            None => stats::mann_whitney(&ce, &se).map(|r| {
                errors["comparison"] = mw_json(&r);
                (r.p_value, mean(&ce).unwrap_or_default(), mean(&se).unwrap_or_default())
            }),
        };
        if let Some((p, cr, sr)) = compared {
            if p < ALPHA && cr > sr * ERROR_RATIO && cr - sr > ERROR_MIN_DIFF {
                fails.push(format!(
                    "the canary fails more: error rate {cr:.4} against {sr:.4} (p = {p:.2e})"
                ));
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
        reasons.push(format!(
            "after {elapsed:.0} s the canary has {} p95 values and {} error rates, the stable {} and {}; the stage needs {} of each on each side",
            c95.len(),
            ce.len(),
            s95.len(),
            se.len(),
            c.min_samples
        ));
    }
    if verdict == Verdict::Pass {
        reasons.push(format!(
            "no difference that matters between canary and stable over {elapsed:.0} s"
        ));
    }
    let evidence = json!({
        "elapsed_s": round(elapsed, 1), "min_duration_s": c.min_duration_s, "deadline_s": c.deadline_s,
        "samples": {
            "canary": canary.len(), "stable": stable.len(), "min": c.min_samples, "stale": data.stale,
            "canary_p95": c95.len(), "stable_p95": s95.len(), "canary_error_rate": ce.len(), "stable_error_rate": se.len(),
        },
        "alpha": ALPHA, "guardrails": guardrails, "latency": latency, "errors": errors,
    });
    Judgement { verdict, reasons, evidence }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guardrails() -> Guardrails {
        Guardrails {
            max_error_rate: 0.02,
            max_p95_latency_ms: 500.0,
            max_p99_latency_ms: None,
            max_traffic_step_percent: 50,
        }
    }

    fn criteria() -> Criteria {
        Criteria {
            min_duration_s: 120.0,
            deadline_s: 600.0,
            min_samples: 30,
            guardrails: guardrails(),
        }
    }

    /// `n` samples 10 s apart per side, stable first; `f(i)` gives (p95, error rate) for sample i.
    fn stage(
        n: usize,
        canary: impl Fn(usize) -> (f64, f64),
        stable: impl Fn(usize) -> (f64, f64),
    ) -> StageData {
        let sample = |i: usize, (p95, e): (f64, f64), qps: f64| Sample {
            at_ms: i as i64 * 10_000,
            p95_ms: Some(p95),
            p99_ms: Some(p95 * 1.5),
            error_rate: Some(e),
            qps: Some(qps),
        };
        let mut data = StageData::default();
        for i in 0..n {
            data.push(false, sample(i, stable(i), 400.0));
            data.push(true, sample(i, canary(i), 40.0));
        }
        data
    }

    /// A sample with a p95 of 150 ms and no p99.
    fn flat(at_ms: i64, error_rate: f64, qps: f64) -> Sample {
        Sample {
            at_ms,
            p95_ms: Some(150.0),
            p99_ms: None,
            error_rate: Some(error_rate),
            qps: Some(qps),
        }
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
        assert_eq!(
            judge(&stage(29, bad, healthy(2)), &long).verdict,
            Verdict::Wait,
            "29 samples are not enough"
        );
        let j = judge(&stage(30, bad, healthy(2)), &long);
        assert_eq!(
            j.verdict,
            Verdict::Fail,
            "a failure does not wait for the stage's duration: {:?}",
            j.reasons
        );
        assert!(j.reasons[0].contains("fails more"), "{:?}", j.reasons);
        assert!(j.evidence["errors"]["comparison"]["p_value"].as_f64().unwrap() < ALPHA);
    }

    #[test]
    fn a_canary_only_slowdown_fails_and_a_shared_one_passes() {
        let slow = |salt| {
            move |i| {
                let (p, e) = healthy(salt)(i);
                (p * 2.0, e)
            }
        };
        let canary_only = judge(&stage(30, slow(1), healthy(2)), &criteria());
        assert_eq!(canary_only.verdict, Verdict::Fail, "{:?}", canary_only.reasons);
        assert!(canary_only.reasons[0].contains("slower"), "{:?}", canary_only.reasons);
        assert!(
            canary_only.evidence["latency"]["canary_median_p95_ms"].as_f64().unwrap() < 500.0,
            "caught below the guardrail"
        );
        let shared = judge(&stage(31, slow(1), slow(2)), &criteria());
        assert_eq!(shared.verdict, Verdict::Pass, "{:?}", shared.reasons);
    }

    #[test]
    fn guardrails_fail_the_canary_alone_and_hold_a_shared_breach() {
        let over = |i| (700.0 + wobble(i, 3) * 50.0, 0.002);
        let j = judge(&stage(10, over, healthy(2)), &criteria());
        assert_eq!(
            j.verdict,
            Verdict::Fail,
            "ten of ten samples over the limit: p = 1/1024 (a guardrail needs no minimum stage samples): {:?}",
            j.reasons
        );
        assert!(j.reasons[0].contains("breaches the contract's 500 ms"), "{:?}", j.reasons);
        assert_eq!(j.evidence["guardrails"]["median_p95"]["test"], "sign");
        assert_eq!(
            judge(&stage(9, over, healthy(2)), &criteria()).verdict,
            Verdict::Wait,
            "nine of nine is p = 1/512"
        );
        let errors = |_| (150.0, 0.2);
        let j = judge(&stage(5, errors, healthy(2)), &criteria());
        assert_eq!(j.verdict, Verdict::Fail, "{:?}", j.reasons);
        assert!(
            j.reasons[0].contains("error rate 0.2000 breaches the contract's 0.02"),
            "{:?}",
            j.reasons
        );
        assert_eq!(
            judge(&stage(4, errors, healthy(2)), &criteria()).verdict,
            Verdict::Wait,
            "one bad scrape is not a breach, nor four"
        );
        let both = judge(&stage(31, over, |i| (710.0 + wobble(i, 4) * 50.0, 0.002)), &criteria());
        assert_eq!(both.verdict, Verdict::Inconclusive, "{:?}", both.reasons);
        assert!(both.reasons[0].contains("both versions"), "{:?}", both.reasons);
    }

    #[test]
    fn a_stage_short_of_samples_waits_for_them_until_its_deadline() {
        let mut data = stage(8, healthy(1), healthy(2));
        let late = |at_ms| flat(at_ms, 0.002, 400.0);
        for at_s in (80..=200).step_by(10) {
            data.push(false, late(at_s * 1000));
        }
        assert_eq!(
            judge(&data, &criteria()).verdict,
            Verdict::Wait,
            "past the minimum duration, before the deadline"
        );
        for at_s in (210..=600).step_by(10) {
            data.push(false, late(at_s * 1000));
        }
        let j = judge(&data, &criteria());
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(
            j.reasons[0].contains("the canary has 8 p95 values and 8 error rates"),
            "{:?}",
            j.reasons
        );
    }

    #[test]
    fn a_low_weight_canary_is_not_failed_by_one_unlucky_error() {
        // A 1 % canary at 0.4 qps serves 6 requests per 15 s sample: one error makes that
        // sample's rate 17 % and the stage's mean rate 3.3 % after five samples, above a 2 %
        // guardrail, but 1 error in 30 requests is no evidence against 2 %.
        let mut data = StageData::default();
        for i in 0..5 {
            let at_ms = i * 15_000;
            data.push(false, flat(at_ms, 0.002, 40.0));
            data.push(true, flat(at_ms, if i == 2 { 1.0 / 6.0 } else { 0.0 }, 0.4));
        }
        let j = judge(&data, &criteria());
        assert_eq!(j.verdict, Verdict::Wait, "{:?}", j.reasons);
        let test = &j.evidence["guardrails"]["error_rate"];
        assert_eq!(
            (test["test"].as_str(), test["observed"].as_f64(), test["allowed"].as_f64()),
            (Some("poisson"), Some(1.0), Some(0.6)),
            "{test}"
        );
    }

    #[test]
    fn few_expected_errors_are_compared_exactly() {
        // 3 % of requests on a canary that makes 5× the stable's 0.1 % errors: 2 canary errors
        // expected from the pooled rate, too few for the z-test.
        let mut data = StageData::default();
        for i in 0..40 {
            let at_ms = i * 15_000;
            data.push(false, flat(at_ms, 0.001, 97.0));
            data.push(true, flat(at_ms, 0.005, 3.0));
        }
        let j = judge(&data, &criteria());
        let comparison = &j.evidence["errors"]["comparison"];
        assert_eq!(comparison["test"], "exact_conditional", "{comparison}");
        assert_eq!(
            (comparison["canary_errors"].as_u64(), comparison["stable_errors"].as_u64()),
            (Some(9), Some(58)),
            "{comparison}"
        );
        assert_eq!(
            j.verdict,
            Verdict::Fail,
            "9 of 67 errors on 3 % of the requests, p = 1.7e-4: {:?}",
            j.reasons
        );
    }

    #[test]
    fn stage_time_is_time_watched() {
        let mut data = stage(10, healthy(1), healthy(2));
        assert_eq!(data.elapsed_s(), 90.0);
        // A sample stamped a day ahead adds at most one capped gap; the next in-time sample adds nothing.
        data.push(true, flat(86_400_000, 0.0, 40.0));
        data.push(true, flat(100_000, 0.0, 40.0));
        assert_eq!(data.elapsed_s(), 90.0 + MAX_SAMPLE_GAP_S);
        // One stamped before the stage's first sample is stale: not judged.
        data.push(
            true,
            Sample {
                at_ms: -5_000,
                p95_ms: Some(9999.0),
                p99_ms: None,
                error_rate: Some(1.0),
                qps: Some(40.0),
            },
        );
        assert_eq!((data.stale, data.canary.len()), (1, 12));
        // Keeping only the newest samples does not shorten the stage.
        let long = stage(MAX_STAGE_SAMPLES + 100, healthy(1), healthy(2));
        assert_eq!(
            (long.canary.len(), long.elapsed_s()),
            (MAX_STAGE_SAMPLES, (MAX_STAGE_SAMPLES + 99) as f64 * 10.0)
        );
        let j = judge(&long, &criteria());
        assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
        assert_eq!(
            j.evidence["errors"]["comparison"]["canary_requests"],
            40.0 * 10.0 * MAX_STAGE_SAMPLES as f64,
            "the sample interval is the median gap"
        );
    }

    #[test]
    fn samples_without_latency_or_errors_are_no_evidence() {
        let mut data = StageData::default();
        for i in 0..40 {
            let cpu_only = Sample {
                at_ms: i * 10_000,
                p95_ms: None,
                p99_ms: None,
                error_rate: None,
                qps: None,
            };
            data.push(false, cpu_only);
            data.push(true, cpu_only);
        }
        let j = judge(&data, &criteria());
        assert_eq!(
            j.verdict,
            Verdict::Wait,
            "40 samples a side, none with p95 or errors: {:?}",
            j.reasons
        );
        for i in 40..70 {
            data.push(
                true,
                Sample {
                    at_ms: i * 10_000,
                    p95_ms: None,
                    p99_ms: None,
                    error_rate: None,
                    qps: None,
                },
            );
        }
        let j = judge(&data, &criteria());
        assert_eq!(j.verdict, Verdict::Inconclusive, "past the deadline with no evidence");
        assert!(
            j.reasons[0].contains("the canary has 0 p95 values and 0 error rates"),
            "{:?}",
            j.reasons
        );
    }

    #[test]
    fn without_qps_errors_are_compared_per_sample() {
        let mut data = stage(
            30,
            |i| (150.0, 0.01 + 0.002 * wobble(i, 1)),
            |i| (150.0, 0.002 + 0.002 * wobble(i, 2)),
        );
        for s in data.canary.iter_mut().chain(data.stable.iter_mut()) {
            s.qps = None;
        }
        let j = judge(&data, &criteria());
        assert_eq!(j.evidence["errors"]["comparison"]["test"], "mann_whitney_u");
        assert_eq!(j.verdict, Verdict::Fail, "{:?}", j.reasons);
    }
}
