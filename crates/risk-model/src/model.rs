//! The learned part of the risk score: an online logistic regression that predicts the
//! probability that a deploy fails from the factors of its contract.
//!
//! Features are the contract's factors, `name → contribution / 100` (clamped to -1..=1), plus a
//! bias. Each labelled outcome is one stochastic gradient step on the log loss:
//!
//! - weights: `w += LEARNING_RATE · ((y − p) · x − L2 · w)` for the factors present (lazy L2);
//! - bias: `b += BIAS_LEARNING_RATE · (y − p)` (slower, so that the base rate does not soak up
//!   what the factors explain);
//! - weights and bias are clamped to ±[`MAX_WEIGHT`], so predictions stay finite and in (0, 1).
//!
//! **How it enters the score** ([`Model::adjustment`]): the additive rule score is adjusted by
//! `LEARNED_SCALE · (p − base)`, where `p` is the predicted failure probability of this contract
//! and `base = sigmoid(bias)` is the model's base rate for a change with no factors. So only
//! what the factors have been *learned* to add beyond the base rate moves the score; the
//! adjustment is clamped to [`MIN_ADJUSTMENT`]..=[`MAX_ADJUSTMENT`] and listed as the factor
//! `learned_history`, and the final score is clamped to 0..=100 as always. A fresh model
//! (all weights zero) adjusts nothing.
//!
//! Calibration: before every update the prediction is recorded; the running Brier score is the
//! mean of `(p − y)²`, and ten reliability buckets (`[0, 0.1)`, …, `[0.9, 1]`) hold the mean
//! prediction and the observed failure rate. [`Model::similar_observations`] counts how often
//! the factors of a contract have been seen in outcomes, which raises the draft's confidence.

use std::collections::BTreeMap;

use bus_schema::{FactorWeight, ModelStats, ReliabilityBucket, RiskFactor, Timestamp};
use serde::{Deserialize, Serialize};

pub const LEARNING_RATE: f64 = 0.5;
pub const BIAS_LEARNING_RATE: f64 = 0.05;
pub const L2: f64 = 0.001;
pub const MAX_WEIGHT: f64 = 20.0;
/// Failure probability before any outcome is seen.
pub const PRIOR: f64 = 0.1;
/// Score points per unit of probability above the base rate.
pub const LEARNED_SCALE: f64 = 100.0;
pub const MIN_ADJUSTMENT: f64 = -20.0;
pub const MAX_ADJUSTMENT: f64 = 30.0;
/// The factor the learned adjustment is listed as; never itself a feature.
pub const LEARNED_FACTOR: &str = "learned_history";
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Bucket {
    count: u64,
    sum_predicted: f64,
    failures: u64,
}

/// The online model, serializable for redb.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    bias: f64,
    weights: BTreeMap<String, f64>,
    /// Outcomes seen per factor.
    seen: BTreeMap<String, u64>,
    observations: u64,
    brier_sum: f64,
    buckets: [Bucket; BUCKETS],
    updated_at: Option<Timestamp>,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            bias: logit(PRIOR),
            weights: BTreeMap::new(),
            seen: BTreeMap::new(),
            observations: 0,
            brier_sum: 0.0,
            buckets: [Bucket::default(); BUCKETS],
            updated_at: None,
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 { 1.0 / (1.0 + (-z).exp()) } else { z.exp() / (1.0 + z.exp()) }
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// The features of a list of factors: finite, in -1..=1, without the learned factor.
fn features(factors: &[RiskFactor]) -> impl Iterator<Item = (&str, f64)> {
    factors.iter().filter(|f| f.name != LEARNED_FACTOR).map(|f| {
        let x = if f.contribution.is_finite() {
            (f.contribution / 100.0).clamp(-1.0, 1.0)
        } else {
            0.0
        };
        (f.name.as_str(), x)
    })
}

impl Model {
    /// P(deploy fails) for a contract with these factors, strictly inside (0, 1).
    pub fn predict(&self, factors: &[RiskFactor]) -> f64 {
        let z = self.bias
            + features(factors)
                .map(|(n, x)| self.weights.get(n).copied().unwrap_or(0.0) * x)
                .sum::<f64>();
        sigmoid(z).clamp(1e-9, 1.0 - 1e-9)
    }

    /// The base rate: P(fail) for a change with no factors.
    pub fn base_rate(&self) -> f64 {
        sigmoid(self.bias)
    }

    /// Score points the learned model adds for these factors (see the module docs).
    pub fn adjustment(&self, factors: &[RiskFactor]) -> f64 {
        (LEARNED_SCALE * (self.predict(factors) - self.base_rate()))
            .clamp(MIN_ADJUSTMENT, MAX_ADJUSTMENT)
    }

    /// Learns from one outcome; records the prediction made before the update for calibration.
    pub fn learn(&mut self, factors: &[RiskFactor], failed: bool, at: Timestamp) {
        let p = self.predict(factors);
        let y = if failed { 1.0 } else { 0.0 };
        self.observations += 1;
        self.brier_sum += (p - y) * (p - y);
        let bucket = &mut self.buckets[((p * BUCKETS as f64) as usize).min(BUCKETS - 1)];
        bucket.count += 1;
        bucket.sum_predicted += p;
        bucket.failures += u64::from(failed);
        let error = y - p;
        for (name, x) in features(factors) {
            let w = self.weights.entry(name.to_owned()).or_insert(0.0);
            *w = (*w + LEARNING_RATE * (error * x - L2 * *w)).clamp(-MAX_WEIGHT, MAX_WEIGHT);
            *self.seen.entry(name.to_owned()).or_insert(0) += 1;
        }
        self.bias = (self.bias + BIAS_LEARNING_RATE * error).clamp(-MAX_WEIGHT, MAX_WEIGHT);
        self.updated_at = Some(self.updated_at.map_or(at, |u| u.max(at)));
    }

    /// Outcomes seen for changes like this one: the fewest outcomes seen for any of its factors
    /// (all outcomes when it has none).
    pub fn similar_observations(&self, factors: &[RiskFactor]) -> u64 {
        features(factors)
            .map(|(n, _)| self.seen.get(n).copied().unwrap_or(0))
            .min()
            .unwrap_or(self.observations)
    }

    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// Weights and calibration for `cnctl contract stats`.
    pub fn stats(&self) -> ModelStats {
        let brier = (self.observations > 0).then(|| self.brier_sum / self.observations as f64);
        let reliability = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mean = |sum: f64| if b.count == 0 { 0.0 } else { sum / b.count as f64 };
                ReliabilityBucket {
                    from: i as f64 / BUCKETS as f64,
                    to: (i + 1) as f64 / BUCKETS as f64,
                    count: b.count,
                    mean_predicted: mean(b.sum_predicted),
                    observed_rate: mean(b.failures as f64),
                }
            })
            .collect();
        ModelStats {
            observations: self.observations,
            brier,
            reliability,
            bias: self.bias,
            weights: self
                .weights
                .iter()
                .map(|(name, &weight)| FactorWeight { name: name.clone(), weight })
                .collect(),
            updated_at: self.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn factor(name: &str, contribution: f64) -> RiskFactor {
        RiskFactor { name: name.into(), contribution, detail: String::new() }
    }

    fn at() -> Timestamp {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_fresh_model_predicts_the_prior_and_adjusts_nothing() {
        let m = Model::default();
        let fs = [factor("schema_or_data_migration", 25.0)];
        assert!((m.predict(&fs) - PRIOR).abs() < 1e-9);
        assert_eq!(m.adjustment(&fs), 0.0);
        assert_eq!(m.stats().brier, None);
    }

    #[test]
    fn brier_and_buckets_on_a_known_sequence() {
        // A fresh model predicts 0.1 for the first example (bucket 1). Learning on a change
        // with no factors moves only the bias, so each later prediction is sigmoid(bias).
        let mut m = Model::default();
        let mut expected = Vec::new();
        for failed in [true, false, false] {
            let p = m.predict(&[]);
            expected.push((p, failed));
            m.learn(&[], failed, at());
        }
        let s = m.stats();
        let brier =
            expected.iter().map(|&(p, f)| (p - if f { 1.0 } else { 0.0 }).powi(2)).sum::<f64>()
                / 3.0;
        assert_eq!(s.observations, 3);
        assert!((s.brier.unwrap() - brier).abs() < 1e-12);
        assert_eq!(s.reliability.len(), 10);
        let b = &s.reliability[1];
        assert_eq!(b.count, 3, "{:?}", s.reliability);
        let mean = expected.iter().map(|e| e.0).sum::<f64>() / 3.0;
        assert!((b.mean_predicted - mean).abs() < 1e-12);
        assert!((b.observed_rate - 1.0 / 3.0).abs() < 1e-12);
        assert!(s.reliability.iter().enumerate().all(|(i, b)| i == 1 || b.count == 0));
        assert_eq!(s.updated_at, Some(at()));
    }

    #[test]
    fn failures_raise_the_weight_of_their_factors_and_the_model_round_trips() {
        let mut m = Model::default();
        let fs = [factor("schema_or_data_migration", 25.0), factor("no_automated_rollback", 15.0)];
        for _ in 0..20 {
            m.learn(&fs, true, at());
        }
        assert!(m.adjustment(&fs) > 5.0, "{}", m.adjustment(&fs));
        assert_eq!(m.similar_observations(&fs), 20);
        assert_eq!(m.similar_observations(&[factor("caching", 10.0)]), 0);
        let back: Model = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let stats = m.stats();
        assert!(stats.weights.iter().all(|w| w.weight > 0.0));
    }

    fn arb_factors() -> impl Strategy<Value = Vec<RiskFactor>> {
        let name = prop::sample::select(vec!["a", "b", "c", "learned_history"]);
        let contribution = prop_oneof![any::<f64>(), -1e6..1e6f64];
        prop::collection::vec((name, contribution).prop_map(|(n, c)| factor(n, c)), 0..5)
    }

    proptest! {
        #[test]
        fn predictions_stay_finite_and_inside_0_1(updates in prop::collection::vec((arb_factors(), any::<bool>()), 0..200), probe in arb_factors()) {
            let mut m = Model::default();
            for (fs, failed) in &updates {
                m.learn(fs, *failed, at());
            }
            let p = m.predict(&probe);
            prop_assert!(p.is_finite() && p > 0.0 && p < 1.0, "{p}");
            let adj = m.adjustment(&probe);
            prop_assert!(adj.is_finite() && (MIN_ADJUSTMENT..=MAX_ADJUSTMENT).contains(&adj));
            prop_assert!(m.stats().brier.is_none_or(|b| (0.0..=1.0).contains(&b)));
        }
    }
}
