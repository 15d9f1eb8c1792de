//! The two tests a canary stage is judged by, one-sided ("is the canary worse?"):
//!
//! - [`mann_whitney`]: Mann-Whitney U on per-sample latencies. Rank-based, so it needs no
//!   assumption about the latency distribution and one outlier cannot swing it. Normal
//!   approximation with the tie correction and a continuity correction (fine from about 8
//!   samples per side; the caller asks for more).
//! - [`two_proportions`]: the pooled two-proportion z-test on error counts (errors out of
//!   requests).
//!
//! - [`rate_ratio`]: the exact conditional test of the same question, for when too few errors
//!   are expected for the normal approximation: given the errors both sides made, the canary's
//!   share is binomial with its share of the requests if the rates are alike.
//! - [`counts_above`] and [`sign_above`]: is a rate, or a per-sample value's median, above a
//!   fixed limit (a guardrail)? Exact Poisson and binomial (sign test) tails.
//!
//! Each returns the statistic, the one-sided p-value and an effect size, so a verdict can show
//! the numbers behind it. Everything here is pure.

use serde::Serialize;

/// Mann-Whitney U of `canary` against `stable`: is the canary stochastically greater?
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MannWhitney {
    pub n_canary: usize,
    pub n_stable: usize,
    /// U of the canary sample.
    pub u: f64,
    pub z: f64,
    /// One-sided: the chance of a U this large if canary and stable were alike.
    pub p_value: f64,
    /// U / (n_canary · n_stable): the probability a canary value exceeds a stable one
    /// (ties count half). 0.5 means alike.
    pub effect: f64,
}

/// The two-proportion z-test: is the canary's error proportion greater than the stable's?
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TwoProportions {
    pub canary_errors: f64,
    pub canary_requests: f64,
    pub stable_errors: f64,
    pub stable_requests: f64,
    pub canary_rate: f64,
    pub stable_rate: f64,
    pub z: f64,
    /// One-sided.
    pub p_value: f64,
}

/// The exact conditional test: is the canary's error rate greater than the stable's?
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateRatio {
    pub canary_errors: u64,
    pub stable_errors: u64,
    /// The canary's share of the requests: its expected share of the errors if alike.
    pub canary_share: f64,
    /// One-sided: P(at least `canary_errors` of the errors fall on the canary).
    pub p_value: f64,
}

/// A one-sided test that values lie above a limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AboveLimit {
    /// What was observed: errors (counts) or samples above the limit (sign test).
    pub observed: f64,
    /// What the limit allows: expected errors at the limit, or half the samples.
    pub allowed: f64,
    pub p_value: f64,
}

/// `None` when either side is empty or a value is not finite.
pub fn mann_whitney(canary: &[f64], stable: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (canary.len(), stable.len());
    if n1 == 0 || n2 == 0 || canary.iter().chain(stable).any(|x| !x.is_finite()) {
        return None;
    }
    let mut all: Vec<(f64, bool)> =
        canary.iter().map(|&x| (x, true)).chain(stable.iter().map(|&x| (x, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let (mut rank_sum, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Positions i..=j share the average of ranks i+1..=j+1.
        let average = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        rank_sum += average * all[i..=j].iter().filter(|(_, is_canary)| *is_canary).count() as f64;
        i = j + 1;
    }
    let (f1, f2, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = rank_sum - f1 * (f1 + 1.0) / 2.0;
    let mean = f1 * f2 / 2.0;
    let variance =
        if n > 1 { f1 * f2 / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0))) } else { 0.0 };
    let z = if variance > 0.0 {
        ((u - mean).abs() - 0.5).max(0.0).copysign(u - mean) / variance.sqrt()
    } else {
        0.0
    };
    Some(MannWhitney {
        n_canary: n1,
        n_stable: n2,
        u,
        z,
        p_value: upper_tail(z),
        effect: u / (f1 * f2),
    })
}

/// `None` without requests on either side, or with counts that are not finite.
pub fn two_proportions(
    canary_errors: f64,
    canary_requests: f64,
    stable_errors: f64,
    stable_requests: f64,
) -> Option<TwoProportions> {
    if !plausible_counts(canary_errors, canary_requests, stable_errors, stable_requests) {
        return None;
    }
    let (canary_errors, stable_errors) =
        (canary_errors.min(canary_requests), stable_errors.min(stable_requests));
    let (p1, p2) = (canary_errors / canary_requests, stable_errors / stable_requests);
    let pooled = (canary_errors + stable_errors) / (canary_requests + stable_requests);
    let se = (pooled * (1.0 - pooled) * (1.0 / canary_requests + 1.0 / stable_requests)).sqrt();
    let z = if se > 0.0 { (p1 - p2) / se } else { 0.0 };
    Some(TwoProportions {
        canary_errors,
        canary_requests,
        stable_errors,
        stable_requests,
        canary_rate: p1,
        stable_rate: p2,
        z,
        p_value: upper_tail(z),
    })
}

/// `canary_errors` and `stable_errors` (rounded to whole errors) out of request counts.
/// `None` without requests on either side or with counts that are not finite.
pub fn rate_ratio(
    canary_errors: f64,
    canary_requests: f64,
    stable_errors: f64,
    stable_requests: f64,
) -> Option<RateRatio> {
    if !plausible_counts(canary_errors, canary_requests, stable_errors, stable_requests) {
        return None;
    }
    let (ce, se) = (
        canary_errors.min(canary_requests).round() as u64,
        stable_errors.min(stable_requests).round() as u64,
    );
    let share = canary_requests / (canary_requests + stable_requests);
    Some(RateRatio {
        canary_errors: ce,
        stable_errors: se,
        canary_share: share,
        p_value: binomial_upper(ce + se, ce, share),
    })
}

/// Is the error rate of `requests` above `limit`? Exact Poisson tail of `errors` (rounded)
/// against `requests · limit` expected: conservative against the binomial for small limits.
pub fn counts_above(errors: f64, requests: f64, limit: f64) -> Option<AboveLimit> {
    if !(errors.is_finite() && requests.is_finite() && limit.is_finite())
        || errors < 0.0
        || requests <= 0.0
        || limit < 0.0
    {
        return None;
    }
    let (observed, allowed) = (errors.min(requests).round(), requests * limit);
    Some(AboveLimit { observed, allowed, p_value: poisson_upper(allowed, observed as u64) })
}

/// Is the median of `values` above `limit`? The sign test: with the median at the limit, each
/// value is above it with probability one half. `None` without finite values.
pub fn sign_above(values: &[f64], limit: f64) -> Option<AboveLimit> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() || !limit.is_finite() {
        return None;
    }
    let above = finite.iter().filter(|v| **v > limit).count() as u64;
    let n = finite.len() as u64;
    Some(AboveLimit {
        observed: above as f64,
        allowed: n as f64 / 2.0,
        p_value: binomial_upper(n, above, 0.5),
    })
}

/// Finite, non-negative counts with requests on both sides.
fn plausible_counts(
    canary_errors: f64,
    canary_requests: f64,
    stable_errors: f64,
    stable_requests: f64,
) -> bool {
    let counts = [canary_errors, canary_requests, stable_errors, stable_requests];
    counts.iter().all(|c| c.is_finite() && *c >= 0.0)
        && canary_requests > 0.0
        && stable_requests > 0.0
}

/// P(X ≥ k) for X ~ Binomial(n, p), summed exactly in log space from k up.
pub fn binomial_upper(n: u64, k: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (ln_p, ln_q, ln_n) = (p.ln(), (1.0 - p).ln(), ln_factorial(n));
    let term = |i: u64| {
        (ln_n - ln_factorial(i) - ln_factorial(n - i) + i as f64 * ln_p + (n - i) as f64 * ln_q)
            .exp()
    };
    tail_sum(k, n, (n as f64 * p).ceil() as u64, term)
}

/// P(X ≥ k) for X ~ Poisson(lambda).
pub fn poisson_upper(lambda: f64, k: u64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    let ln_lambda = lambda.ln();
    let term = |i: u64| (-lambda + i as f64 * ln_lambda - ln_factorial(i)).exp();
    tail_sum(k, u64::MAX, lambda.ceil() as u64, term)
}

/// Σ term(i) for i in from..=to, stopping once past the mode the terms no longer matter.
fn tail_sum(from: u64, to: u64, mode: u64, term: impl Fn(u64) -> f64) -> f64 {
    let mut sum = 0.0;
    let mut i = from;
    loop {
        let t = term(i);
        sum += t;
        if i >= to || (i > mode && t <= sum * 1e-17) {
            return sum.min(1.0);
        }
        i += 1;
    }
}

/// ln(n!): the exact sum of logs below 20, Stirling's series from there.
fn ln_factorial(n: u64) -> f64 {
    if n < 20 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    // ln Γ(x + 1) = x ln x - x + ½ ln(2πx) + 1/(12x) - 1/(360x³) + 1/(1260x⁵): error < 1e-15 here.
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x.powi(3))
        + 1.0 / (1260.0 * x.powi(5))
}

/// P(Z > z) for a standard normal Z.
pub fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error below
/// 1.2e-7 everywhere).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The median of `values` (`None` when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 0 { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn the_normal_tail_matches_known_values() {
        for (z, p) in [
            (0.0, 0.5),
            (1.0, 0.158_655_25),
            (1.644_853_6, 0.05),
            (2.326_347_9, 0.01),
            (3.090_232_3, 0.001),
            (-1.0, 0.841_344_75),
        ] {
            assert!(close(upper_tail(z), p, 1e-6), "P(Z > {z}) = {} not {p}", upper_tail(z));
        }
    }

    #[test]
    fn mann_whitney_matches_a_worked_example() {
        // Canary 3,4,5,6,7 against stable 1,2,3,4,5: canary ranks 3.5+5.5+7.5+9+10 = 35.5, so
        // U = 35.5 - 15 = 20.5, mean 12.5; three tied pairs give sd sqrt(25/12 · (11 - 18/90))
        // = 4.7434; z = (20.5 - 12.5 - 0.5) / 4.7434 = 1.5811, p = 0.0569.
        let r = mann_whitney(&[3.0, 4.0, 5.0, 6.0, 7.0], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(r.u, 20.5);
        assert!(close(r.z, 1.5811, 1e-3), "z {}", r.z);
        assert!(close(r.p_value, 0.0569, 1e-3), "p {}", r.p_value);
        assert!(close(r.effect, 0.82, 1e-9));
    }

    #[test]
    fn a_clear_shift_is_significant_and_no_shift_is_not() {
        let stable: Vec<f64> = (0..60).map(|i| 150.0 + f64::from(i % 17) * 3.0).collect();
        let slower: Vec<f64> = stable.iter().take(30).map(|x| x * 1.5).collect();
        let same: Vec<f64> = stable.iter().skip(7).take(30).copied().collect();
        assert!(mann_whitney(&slower, &stable).unwrap().p_value < 1e-6);
        assert!(mann_whitney(&same, &stable).unwrap().p_value > 0.05);
        let faster: Vec<f64> = stable.iter().take(30).map(|x| x * 0.5).collect();
        assert!(
            mann_whitney(&faster, &stable).unwrap().p_value > 0.99,
            "one-sided: faster is not worse"
        );
    }

    #[test]
    fn two_proportions_matches_a_worked_example() {
        // 30 errors in 1000 against 10 in 1000: pooled 0.02, se 0.006261, z 3.194, p 0.0007.
        let r = two_proportions(30.0, 1000.0, 10.0, 1000.0).unwrap();
        assert!(close(r.z, 3.194, 1e-3), "z {}", r.z);
        assert!(close(r.p_value, 0.000_70, 2e-5), "p {}", r.p_value);
        assert_eq!(two_proportions(1.0, 0.0, 1.0, 10.0), None);
        assert_eq!(two_proportions(f64::NAN, 10.0, 1.0, 10.0), None);
        assert!(
            close(two_proportions(0.0, 10.0, 0.0, 10.0).unwrap().p_value, 0.5, 1e-6),
            "no errors anywhere: no evidence"
        );
    }

    #[test]
    fn degenerate_inputs_give_no_result_or_no_evidence() {
        assert_eq!(mann_whitney(&[], &[1.0]), None);
        assert_eq!(mann_whitney(&[f64::INFINITY], &[1.0]), None);
        let all_tied = mann_whitney(&[5.0; 10], &[5.0; 10]).unwrap();
        assert_eq!((all_tied.z, all_tied.effect), (0.0, 0.5));
        assert!(close(all_tied.p_value, 0.5, 1e-6));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn exact_tails_match_known_values() {
        // Binomial(10, ½): P(X ≥ 10) = 1/1024, P(X ≥ 8) = 56/1024; Binomial(30, 0.05): P(X ≥ 5) = 0.0156.
        assert!(close(binomial_upper(10, 10, 0.5), 1.0 / 1024.0, 1e-12));
        assert!(close(binomial_upper(10, 8, 0.5), 56.0 / 1024.0, 1e-12));
        assert!(
            close(binomial_upper(30, 5, 0.05), 0.015_631, 1e-5),
            "{}",
            binomial_upper(30, 5, 0.05)
        );
        assert_eq!((binomial_upper(5, 0, 0.3), binomial_upper(5, 6, 0.3)), (1.0, 0.0));
        // Poisson(2): P(X ≥ 5) = 0.052653; Poisson(800): P(X ≥ 900) ≈ 2.3e-4 (normal approx 2.4e-4).
        assert!(close(poisson_upper(2.0, 5), 0.052_653, 1e-6), "{}", poisson_upper(2.0, 5));
        let far = poisson_upper(800.0, 900);
        assert!(far > 1e-4 && far < 4e-4, "{far}");
        assert!(
            close(ln_factorial(20), 42.335_616_460_753_485, 1e-12)
                && close(ln_factorial(19), 39.339_884_187_199_49, 1e-12)
        );
    }

    #[test]
    fn the_exact_rate_test_judges_few_errors() {
        // 16 canary errors in 2123 requests, 104 in 40346: the canary holds 5 % of the requests
        // and 13 % of the errors.
        let r = rate_ratio(16.0, 2123.0, 104.0, 40346.0).unwrap();
        assert!(r.p_value < 1e-3, "{r:?}");
        // Three errors in a 1 % canary against none in the stable: p = 0.0099³. With half the
        // requests, 6 against 0 is only p = 1/64.
        assert!(rate_ratio(3.0, 100.0, 0.0, 10_000.0).unwrap().p_value < 1e-5);
        assert!(close(rate_ratio(6.0, 1000.0, 0.0, 1000.0).unwrap().p_value, 1.0 / 64.0, 1e-12));
        assert_eq!(
            rate_ratio(0.0, 100.0, 5.0, 100.0).unwrap().p_value,
            1.0,
            "no canary errors: no evidence"
        );
        assert_eq!(rate_ratio(1.0, 0.0, 0.0, 1.0), None);
    }

    #[test]
    fn limits_are_breached_only_with_evidence() {
        // A 1 % canary at 0.4 qps: 2 errors in 30 requests is 6.7 %, but not evidence against a 2 % limit.
        assert!(counts_above(2.0, 30.0, 0.02).unwrap().p_value > 0.1);
        assert!(counts_above(60.0, 1000.0, 0.02).unwrap().p_value < 1e-6);
        let five_of_five = sign_above(&[700.0; 5], 500.0).unwrap();
        assert!(close(five_of_five.p_value, 1.0 / 32.0, 1e-12), "five samples cannot reach 0.001");
        assert!(sign_above(&[700.0; 10], 500.0).unwrap().p_value < 1e-3);
        assert!(sign_above(&[400.0; 10], 500.0).unwrap().p_value == 1.0);
        assert_eq!(sign_above(&[f64::NAN], 500.0), None);
    }

    proptest! {
        #[test]
        fn exact_tails_are_probabilities_and_fall_with_k(n in 1u64..400, k in 0u64..400, p in 0.0f64..1.0, lambda in 0.0f64..500.0) {
            let (b, b1) = (binomial_upper(n, k, p), binomial_upper(n, k + 1, p));
            prop_assert!((0.0..=1.0).contains(&b) && b1 <= b + 1e-12);
            let (q, q1) = (poisson_upper(lambda, k), poisson_upper(lambda, k + 1));
            prop_assert!((0.0..=1.0).contains(&q) && q1 <= q + 1e-12);
        }

        #[test]
        fn p_values_are_probabilities_and_u_is_bounded(
            canary in prop::collection::vec(0.0f64..5000.0, 1..80),
            stable in prop::collection::vec(0.0f64..5000.0, 1..80),
        ) {
            let r = mann_whitney(&canary, &stable).unwrap();
            prop_assert!((0.0..=1.0).contains(&r.p_value));
            prop_assert!(r.u >= 0.0 && r.u <= (canary.len() * stable.len()) as f64);
            // Swapping the sides mirrors U.
            let swapped = mann_whitney(&stable, &canary).unwrap();
            prop_assert!(close(r.u + swapped.u, (canary.len() * stable.len()) as f64, 1e-6));
        }

        #[test]
        fn shifting_the_canary_up_never_lowers_its_u(
            canary in prop::collection::vec(0.0f64..5000.0, 1..40),
            stable in prop::collection::vec(0.0f64..5000.0, 1..40),
            shift in 0.0f64..1000.0,
        ) {
            let shifted: Vec<f64> = canary.iter().map(|x| x + shift).collect();
            prop_assert!(mann_whitney(&shifted, &stable).unwrap().u >= mann_whitney(&canary, &stable).unwrap().u);
        }

        #[test]
        fn more_canary_errors_never_lower_z(
            errors in 0.0f64..500.0, extra in 0.0f64..500.0, requests in 1000.0f64..100_000.0,
            stable_errors in 0.0f64..500.0, stable_requests in 1000.0f64..100_000.0,
        ) {
            let base = two_proportions(errors, requests, stable_errors, stable_requests).unwrap();
            let worse = two_proportions(errors + extra, requests, stable_errors, stable_requests).unwrap();
            prop_assert!(worse.z >= base.z - 1e-9);
            prop_assert!((0.0..=1.0).contains(&base.p_value));
        }
    }
}
