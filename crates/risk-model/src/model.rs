//! The learned part of the risk score: an online logistic regression on standardised features
//! that predicts the probability that a deploy fails from the factors of its contract, and a
//! calibration step fitted on outcomes.
//!
//! **Features.** Each factor of the contract is a feature `x = contribution / 100` (clamped to
//! -1..=1; an absent factor is 0), standardised by dividing it by its standard deviation over
//! the outcomes the model is fitted on (floored at [`MIN_SD`], the result clamped to
//! ±[`MAX_Z`]), so a factor that is always 0.25 and one that varies between 0.02 and 0.15
//! weigh alike. It is not centred: an absent factor stays 0, and a factor present in every
//! outcome still takes its share of what they teach.
//!
//! **Fitting.** After each labelled outcome the regression is refitted on the last [`WINDOW`]
//! outcomes by Newton's method on the log loss, from the weights it had (so one or two steps
//! usually do), with a penalty worth [`L2`] outcomes that pulls the weights towards 0 and the
//! bias towards the prior's log-odds, and no coefficient moving more than 1 per step. Older
//! outcomes leave the window, so a changed world is relearned.
//!
//! **Calibration (Platt).** The regression's raw log-odds `s` become a probability through
//! `sigmoid(a·s + b)`. `a` and `b` are fitted by Newton's method on the last
//! [`CALIBRATION_WINDOW`] outcomes, each paired with the raw log-odds the model gave it
//! *before* learning from it (predictions that had not seen their label), pulled towards
//! `a = 1, b = 0` by a weight of [`CALIBRATION_PRIOR`] outcomes: the regression is calibrated
//! on what it was fitted on, and this step corrects what it gets wrong on what comes next (a
//! world that drifted, a misfit the features cannot express). Before [`MIN_CALIBRATION`]
//! outcomes it is the identity. The pull is strong because those predictions came from
//! earlier fits, trained on fewer outcomes and more confident than the current one: pulled
//! by 200 on the last 800, the step made a well-fitted model worse (docs/agents.md has the
//! figures).
//!
//! **How it enters the score** ([`Model::adjustment`]): the additive rule score is adjusted by
//! `LEARNED_SCALE · (p − base)`, where `p` is the predicted failure probability of this contract
//! and `base` the model's prediction for a change with no factors. So only what the factors
//! have been *learned* to add beyond the base rate moves the score; the adjustment is clamped
//! to [`MIN_ADJUSTMENT`]..=[`MAX_ADJUSTMENT`] and listed as the factor `learned_history`, and
//! the final score is clamped to 0..=100 as always. A fresh model adjusts nothing.
//!
//! **Measured calibration**: before every update the (calibrated) prediction is recorded; the
//! running Brier score is the mean of `(p − y)²`, ten reliability buckets (`[0, 0.1)`, …,
//! `[0.9, 1]`) hold the mean prediction and the observed failure rate, and the expected
//! calibration error is their count-weighted mean gap `Σ nᵢ/n · |predictedᵢ − observedᵢ|`.
//! [`Model::similar_observations`] counts how often the factors of a contract have been seen
//! in outcomes, which raises the draft's confidence.

use std::collections::{BTreeMap, VecDeque};

use bus_schema::{FactorWeight, ModelStats, ReliabilityBucket, RiskFactor, Timestamp};
use serde::{Deserialize, Serialize};

/// Outcomes the regression is fitted on (the most recent).
pub const WINDOW: usize = 2_000;
/// The L2 penalty on the weights, in outcomes' worth of log loss.
pub const L2: f64 = 1.0;
pub const MAX_WEIGHT: f64 = 20.0;
/// The largest move of one coefficient in one Newton step.
const MAX_STEP: f64 = 1.0;
/// A standardised feature is clamped to ±this.
pub const MAX_Z: f64 = 8.0;
/// The smallest standard deviation a feature is divided by (5 score points).
pub const MIN_SD: f64 = 0.05;
/// Failure probability before any outcome is seen.
pub const PRIOR: f64 = 0.1;
/// Outcomes the calibration step is fitted on (the most recent).
pub const CALIBRATION_WINDOW: usize = 400;
/// How many outcomes the identity calibration is worth.
pub const CALIBRATION_PRIOR: f64 = 400.0;
/// Outcomes needed before calibration is fitted at all.
pub const MIN_CALIBRATION: usize = 50;
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

/// A feature's weight and the standard deviation it is divided by.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Feature {
    weight: f64,
    sd: f64,
}

/// One labelled outcome: its raw features and whether the deploy failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Example {
    x: Vec<(String, f64)>,
    failed: bool,
}

/// The calibration step: `P = sigmoid(a · raw + b)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Platt {
    a: f64,
    b: f64,
}

impl Default for Platt {
    fn default() -> Self {
        Platt { a: 1.0, b: 0.0 }
    }
}

/// The model, serializable for redb.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    bias: f64,
    features: BTreeMap<String, Feature>,
    /// The most recent outcomes, oldest first: what the regression is fitted on.
    examples: VecDeque<Example>,
    /// Outcomes seen per factor.
    seen: BTreeMap<String, u64>,
    observations: u64,
    brier_sum: f64,
    buckets: [Bucket; BUCKETS],
    platt: Platt,
    /// The raw log-odds given to each recent outcome before it was learned from, and the
    /// outcome (failed): what the calibration is fitted on.
    recent: VecDeque<(f64, bool)>,
    updated_at: Option<Timestamp>,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            bias: logit(PRIOR),
            features: BTreeMap::new(),
            examples: VecDeque::new(),
            seen: BTreeMap::new(),
            observations: 0,
            brier_sum: 0.0,
            buckets: [Bucket::default(); BUCKETS],
            platt: Platt::default(),
            recent: VecDeque::new(),
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

/// The raw features of a list of factors: finite, in -1..=1, without the learned factor.
fn raw_features(factors: &[RiskFactor]) -> BTreeMap<&str, f64> {
    factors
        .iter()
        .filter(|f| f.name != LEARNED_FACTOR)
        .map(|f| {
            let x = if f.contribution.is_finite() {
                (f.contribution / 100.0).clamp(-1.0, 1.0)
            } else {
                0.0
            };
            (f.name.as_str(), x)
        })
        .collect()
}

impl Feature {
    fn z(&self, x: f64) -> f64 {
        (x / self.sd).clamp(-MAX_Z, MAX_Z)
    }
}

impl Model {
    /// The regression's log-odds, before calibration.
    fn raw(&self, factors: &[RiskFactor]) -> f64 {
        let xs = raw_features(factors);
        self.bias
            + self
                .features
                .iter()
                .map(|(name, f)| f.weight * f.z(xs.get(name.as_str()).copied().unwrap_or(0.0)))
                .sum::<f64>()
    }

    fn calibrated(&self, raw: f64) -> f64 {
        sigmoid(self.platt.a * raw + self.platt.b).clamp(1e-9, 1.0 - 1e-9)
    }

    /// P(deploy fails) for a contract with these factors, strictly inside (0, 1).
    pub fn predict(&self, factors: &[RiskFactor]) -> f64 {
        self.calibrated(self.raw(factors))
    }

    /// The base rate: P(fail) for a change with no factors.
    pub fn base_rate(&self) -> f64 {
        self.predict(&[])
    }

    /// Score points the learned model adds for these factors (see the module docs).
    pub fn adjustment(&self, factors: &[RiskFactor]) -> f64 {
        (LEARNED_SCALE * (self.predict(factors) - self.base_rate()))
            .clamp(MIN_ADJUSTMENT, MAX_ADJUSTMENT)
    }

    /// Learns from one outcome; records the prediction made before the update for calibration.
    pub fn learn(&mut self, factors: &[RiskFactor], failed: bool, at: Timestamp) {
        let raw = self.raw(factors);
        let p = self.calibrated(raw);
        let y = if failed { 1.0 } else { 0.0 };
        self.observations += 1;
        self.brier_sum += (p - y) * (p - y);
        let bucket = &mut self.buckets[((p * BUCKETS as f64) as usize).min(BUCKETS - 1)];
        bucket.count += 1;
        bucket.sum_predicted += p;
        bucket.failures += u64::from(failed);
        if raw.is_finite() {
            self.recent.push_back((raw, failed));
        }
        while self.recent.len() > CALIBRATION_WINDOW {
            self.recent.pop_front();
        }
        let x: Vec<(String, f64)> =
            raw_features(factors).into_iter().map(|(n, x)| (n.to_owned(), x)).collect();
        for (name, _) in &x {
            *self.seen.entry(name.clone()).or_insert(0) += 1;
        }
        self.examples.push_back(Example { x, failed });
        while self.examples.len() > WINDOW {
            self.examples.pop_front();
        }
        self.fit();
        self.platt = if self.recent.len() >= MIN_CALIBRATION {
            fit_platt(&self.recent, self.platt)
        } else {
            Platt::default()
        };
        self.updated_at = Some(self.updated_at.map_or(at, |u| u.max(at)));
    }

    /// Refits the regression on the window: standardises each feature by its sd over the
    /// window, then Newton's method on the penalised log loss from the current
    /// weights.
    #[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with indices
    fn fit(&mut self) {
        let n = self.examples.len() as f64;
        let mut sums: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for e in &self.examples {
            for (name, x) in &e.x {
                let s = sums.entry(name.as_str()).or_default();
                s.0 += x;
                s.1 += x * x;
            }
        }
        let old = std::mem::take(&mut self.features);
        let names: Vec<String> = sums.keys().map(|k| (*k).to_owned()).collect();
        for (name, (sum, sum_sq)) in sums {
            let mean = sum / n;
            let sd = (sum_sq / n - mean * mean).max(0.0).sqrt().max(MIN_SD);
            let weight = old.get(name).map_or(0.0, |f| f.weight);
            self.features.insert(name.to_owned(), Feature { weight, sd });
        }
        // Dense standardised rows: bias first.
        let d = names.len() + 1;
        let rows: Vec<(Vec<f64>, f64)> = self
            .examples
            .iter()
            .map(|e| {
                let mut z = vec![1.0];
                z.extend(names.iter().map(|name| {
                    let x = e.x.iter().find(|(n, _)| n == name).map_or(0.0, |(_, x)| *x);
                    self.features[name].z(x)
                }));
                (z, if e.failed { 1.0 } else { 0.0 })
            })
            .collect();
        let mut w: Vec<f64> = std::iter::once(self.bias)
            .chain(names.iter().map(|name| self.features[name].weight))
            .collect();
        for _ in 0..30 {
            // The penalty pulls the weights to 0 and the bias to the prior's log-odds.
            let mut g: Vec<f64> = w.iter().map(|wi| L2 * wi).collect();
            g[0] = L2 * (w[0] - logit(PRIOR));
            let mut h = vec![vec![0.0; d]; d];
            for (i, row) in h.iter_mut().enumerate() {
                row[i] = L2;
            }
            for (z, y) in &rows {
                let p = sigmoid(z.iter().zip(&w).map(|(a, b)| a * b).sum());
                let (r, v) = (p - y, (p * (1.0 - p)).max(1e-12));
                for i in 0..d {
                    g[i] += r * z[i];
                    for j in 0..=i {
                        h[i][j] += v * z[i] * z[j];
                    }
                }
            }
            for i in 0..d {
                for j in 0..i {
                    h[j][i] = h[i][j];
                }
            }
            let Some(mut step) = solve(h, g) else { break };
            // Damped: no coordinate moves more than MAX_STEP at once.
            let largest = step.iter().fold(0.0f64, |m, s| m.max(s.abs()));
            if largest > MAX_STEP {
                step.iter_mut().for_each(|s| *s *= MAX_STEP / largest);
            }
            let mut moved = 0.0;
            for (wi, si) in w.iter_mut().zip(&step) {
                *wi = (*wi - si).clamp(-MAX_WEIGHT, MAX_WEIGHT);
                moved += si.abs();
            }
            if !moved.is_finite() || moved < 1e-6 {
                break;
            }
        }
        if w.iter().all(|x| x.is_finite()) {
            self.bias = w[0];
            for (name, wi) in names.iter().zip(&w[1..]) {
                if let Some(f) = self.features.get_mut(name) {
                    f.weight = *wi;
                }
            }
        }
    }

    /// Outcomes seen for changes like this one: the fewest outcomes seen for any of its factors
    /// (all outcomes when it has none).
    pub fn similar_observations(&self, factors: &[RiskFactor]) -> u64 {
        raw_features(factors)
            .keys()
            .map(|n| self.seen.get(*n).copied().unwrap_or(0))
            .min()
            .unwrap_or(self.observations)
    }

    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// Weights and calibration for `cnctl contract stats`.
    pub fn stats(&self) -> ModelStats {
        let brier = (self.observations > 0).then(|| self.brier_sum / self.observations as f64);
        let reliability: Vec<ReliabilityBucket> = self
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
        let ece = (self.observations > 0).then(|| {
            reliability
                .iter()
                .map(|b| {
                    b.count as f64 / self.observations as f64
                        * (b.mean_predicted - b.observed_rate).abs()
                })
                .sum()
        });
        ModelStats {
            observations: self.observations,
            brier,
            ece,
            reliability,
            bias: self.bias,
            weights: self
                .features
                .iter()
                .map(|(name, f)| FactorWeight { name: name.clone(), weight: f.weight })
                .collect(),
            calibration: Some(bus_schema::Calibration { a: self.platt.a, b: self.platt.b }),
            updated_at: self.updated_at,
        }
    }
}

/// Solves `h · x = g` for a symmetric positive definite `h` (Gaussian elimination with partial
/// pivoting); `None` when it is singular.
#[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with indices
fn solve(mut h: Vec<Vec<f64>>, mut g: Vec<f64>) -> Option<Vec<f64>> {
    let d = g.len();
    for c in 0..d {
        let pivot = (c..d).max_by(|&a, &b| h[a][c].abs().total_cmp(&h[b][c].abs()))?;
        if h[pivot][c].abs() < 1e-12 {
            return None;
        }
        h.swap(c, pivot);
        g.swap(c, pivot);
        for r in c + 1..d {
            let f = h[r][c] / h[c][c];
            for k in c..d {
                h[r][k] -= f * h[c][k];
            }
            g[r] -= f * g[c];
        }
    }
    let mut x = vec![0.0; d];
    for r in (0..d).rev() {
        let s: f64 = (r + 1..d).map(|k| h[r][k] * x[k]).sum();
        x[r] = (g[r] - s) / h[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Platt's `a` and `b` on `(raw log-odds, failed)` pairs, by Newton's method on the log loss
/// plus `CALIBRATION_PRIOR / 2 · ((a − 1)² + b²)`, from `start`.
fn fit_platt(pairs: &VecDeque<(f64, bool)>, start: Platt) -> Platt {
    let (mut a, mut b) = (start.a, start.b);
    for _ in 0..25 {
        // Gradient and Hessian of the penalised negative log-likelihood.
        let (mut ga, mut gb) = (CALIBRATION_PRIOR * (a - 1.0), CALIBRATION_PRIOR * b);
        let (mut haa, mut hab, mut hbb) = (CALIBRATION_PRIOR, 0.0, CALIBRATION_PRIOR);
        for &(s, failed) in pairs {
            let p = sigmoid(a * s + b);
            let r = p - if failed { 1.0 } else { 0.0 };
            let w = p * (1.0 - p);
            ga += r * s;
            gb += r;
            haa += w * s * s;
            hab += w * s;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if !det.is_finite() || det <= 1e-12 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if !(a.is_finite() && b.is_finite()) {
            return Platt::default();
        }
        if da.abs() + db.abs() < 1e-9 {
            break;
        }
    }
    Platt { a: a.clamp(0.0, 10.0), b: b.clamp(-MAX_WEIGHT, MAX_WEIGHT) }
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
