//! The estimators. A logged [`Decision`] is a state, the actions that were offered with the
//! value the running policy gave each, the action chosen, the probability it had of being
//! chosen (its propensity) and the reward it earned. A target policy is deterministic: for each
//! decision, the action it would have chosen among the same offers ([`Table::choose`]).
//!
//! With `wᵢ = 1[target chose aᵢ] / pᵢ` and `q̂(x, a)` the value logged for `a` with the
//! decision (the running policy's own estimate then, so nothing is fitted on the data being
//! scored):
//!
//! | estimator | value |
//! |---|---|
//! | IPS | `Σ wᵢ rᵢ / n` — unbiased, high variance when propensities are small |
//! | SNIPS | `Σ wᵢ rᵢ / Σ wᵢ` — self-normalised: a little biased, much steadier |
//! | DR | `Σ (q̂(xᵢ, π(xᵢ)) + wᵢ (rᵢ − q̂(xᵢ, aᵢ))) / n` — the model's guess, corrected where the log agrees |
//!
//! Each comes with a percentile bootstrap interval (decisions resampled with replacement,
//! [`Options::resamples`] times, seeded so the same logs give the same interval), and the
//! effective sample size `(Σ wᵢ)² / Σ wᵢ²`: how many decisions the estimate is really worth.
//! The logs **cannot support** an estimate when there are fewer than
//! [`Options::min_decisions`] decisions, when the target never agrees with what was logged,
//! when the effective sample size is below [`Options::min_ess`] — the logs explored too
//! little where the target differs from what ran — or when in more than
//! [`Options::max_unseen`] of the decisions the target chooses an action the log could not
//! have chosen (proposers log every option's probability; an action governance would refuse
//! for low confidence, say, is never explored, so nothing is known of it). The estimates are still computed then, but
//! [`Report::supported`] is false and [`Report::unsupported`] says why.
//!
//! The value of what ran is the mean logged reward with its own bootstrap interval.

use std::collections::BTreeMap;

use bus_schema::PolicyEntry;
use serde::{Deserialize, Serialize};

/// One logged decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// `{env}/{service}@{context}`, as the optimizer's tables name it.
    pub state: String,
    /// The actions offered, in the order logged, with the value the running policy gave each.
    pub candidates: Vec<(String, f64)>,
    pub chosen: String,
    /// The probability the chosen action had, in (0, 1].
    pub propensity: f64,
    /// Every action that could have been chosen, with its probability; empty when the log
    /// does not say (then only agreement with what was chosen is known).
    #[serde(default)]
    pub options: Vec<(String, f64)>,
    pub reward: f64,
}

impl Decision {
    /// Whether the log could not have chosen `action` here: it lists its options and `action`
    /// had no chance among them.
    pub fn impossible(&self, action: &str) -> bool {
        !self.options.is_empty() && !self.options.iter().any(|(a, p)| a == action && *p > 0.0)
    }
}

/// A policy given by values: per state, per action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub values: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Table {
    /// A table from `cn.policy` entries (`LearnedPolicy::entries`).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a PolicyEntry>) -> Self {
        let mut values: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for e in entries {
            values.entry(e.state.clone()).or_default().insert(e.action.to_string(), e.value);
        }
        Table { values }
    }

    /// What this table chooses among a decision's offers: the highest value, its own where it
    /// has one and the logged one where not; the first logged on a tie.
    pub fn choose<'d>(&self, d: &'d Decision) -> &'d str {
        let own = self.values.get(&d.state);
        let value = |a: &str, logged: f64| own.and_then(|r| r.get(a)).copied().unwrap_or(logged);
        let mut best: Option<(&str, f64)> = None;
        for (a, logged) in &d.candidates {
            let v = value(a, *logged);
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((a.as_str(), v));
            }
        }
        best.map_or(d.chosen.as_str(), |(a, _)| a)
    }
}

/// How to estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// The interval's coverage, e.g. 0.9.
    pub level: f64,
    pub resamples: usize,
    pub seed: u64,
    pub min_decisions: usize,
    pub min_ess: f64,
    /// The largest share of decisions in which the target may choose what the log could not
    /// have chosen: there the estimate rests on nothing but the logged values.
    pub max_unseen: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            level: 0.9,
            resamples: 1000,
            seed: 0x5EED,
            min_decisions: 30,
            min_ess: 10.0,
            max_unseen: 0.01,
        }
    }
}

/// A point estimate and its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// What the logs say of a target policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub decisions: usize,
    /// Decisions where the target chose what was logged.
    pub agreed: usize,
    /// Decisions where the target chose what the log could not have chosen.
    pub unseen: usize,
    pub ess: f64,
    pub level: f64,
    /// The mean logged reward: the value of what ran.
    pub logged: Option<Interval>,
    pub ips: Option<Interval>,
    pub snips: Option<Interval>,
    pub dr: Option<Interval>,
    pub supported: bool,
    /// Why the logs cannot support an estimate (empty when they can).
    pub unsupported: Vec<String>,
}

/// The point estimates of one sample of decisions.
#[derive(Debug, Clone, Copy, Default)]
struct Point {
    logged: f64,
    ips: f64,
    snips: Option<f64>,
    dr: f64,
}

/// Per decision: weight, reward, the model's value of the target's choice and of the logged one.
#[derive(Debug, Clone, Copy)]
struct Term {
    w: f64,
    r: f64,
    q_target: f64,
    q_logged: f64,
}

fn point(terms: impl Iterator<Item = Term>) -> Point {
    let (mut n, mut sum_r, mut sum_wr, mut sum_w, mut sum_dr) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for t in terms {
        n += 1.0;
        sum_r += t.r;
        sum_wr += t.w * t.r;
        sum_w += t.w;
        sum_dr += t.q_target + t.w * (t.r - t.q_logged);
    }
    if n == 0.0 {
        return Point::default();
    }
    Point {
        logged: sum_r / n,
        ips: sum_wr / n,
        snips: (sum_w > 0.0).then(|| sum_wr / sum_w),
        dr: sum_dr / n,
    }
}

/// SplitMix64, for resampling.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// The `q` quantile of sorted values (linear interpolation).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn interval(value: f64, mut samples: Vec<f64>, level: f64) -> Interval {
    samples.retain(|s| s.is_finite());
    samples.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Interval { value, low: quantile(&samples, tail), high: quantile(&samples, 1.0 - tail) }
}

/// Estimates the value of the policy `target` from `decisions` (see the module docs).
pub fn evaluate<'d>(
    decisions: &'d [Decision],
    target: impl Fn(&'d Decision) -> &'d str,
    options: &Options,
) -> Report {
    let choices: Vec<Option<&str>> = decisions.iter().map(|d| Some(target(d))).collect();
    evaluate_choices(decisions, &choices, options)
}

/// Like [`evaluate`], for a policy given by its choice in each decision (`choices[i]` in
/// `decisions[i]`; `None`, a decision it leaves to a human, counts as one the log could not
/// have made).
pub fn evaluate_choices(
    decisions: &[Decision],
    choices: &[Option<&str>],
    options: &Options,
) -> Report {
    let mut unseen = 0;
    let terms: Vec<Term> = decisions
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let choice = choices.get(i).copied().flatten();
            unseen += usize::from(choice.is_none_or(|c| d.impossible(c)));
            let choice = choice.unwrap_or_default();
            let q = |a: &str| d.candidates.iter().find(|(c, _)| c == a).map_or(0.0, |(_, v)| *v);
            let agrees = choice == d.chosen;
            let p = if d.propensity.is_finite() && d.propensity > 0.0 {
                d.propensity.min(1.0)
            } else {
                1.0
            };
            Term {
                w: if agrees { 1.0 / p } else { 0.0 },
                r: d.reward,
                q_target: q(choice),
                q_logged: q(&d.chosen),
            }
        })
        .collect();
    let n = terms.len();
    let agreed = terms.iter().filter(|t| t.w > 0.0).count();
    let (sum_w, sum_w2) = terms.iter().fold((0.0, 0.0), |(s, s2), t| (s + t.w, s2 + t.w * t.w));
    let ess = if sum_w2 > 0.0 { sum_w * sum_w / sum_w2 } else { 0.0 };
    let mut unsupported = Vec::new();
    if n < options.min_decisions {
        unsupported.push(format!(
            "only {n} decisions with an outcome; at least {} are needed",
            options.min_decisions
        ));
    }
    if n > 0 && agreed == 0 {
        unsupported.push(
            "the logs never chose what this policy chooses: there is nothing to weigh".to_owned(),
        );
    } else if n > 0 && unseen as f64 > options.max_unseen * n as f64 {
        unsupported.push(format!(
            "in {unseen} of {n} decisions this policy chooses what the logs could not have chosen (more than {:.0} %): nothing was learned there about its choice",
            options.max_unseen * 100.0
        ));
    }
    if ess < options.min_ess && agreed > 0 {
        unsupported.push(format!(
            "effective sample size {ess:.1} is below {}: the logs explored too little where this policy differs from what ran",
            options.min_ess
        ));
    }
    let mut report = Report {
        decisions: n,
        agreed,
        unseen,
        ess,
        level: options.level,
        logged: None,
        ips: None,
        snips: None,
        dr: None,
        supported: unsupported.is_empty(),
        unsupported,
    };
    if n == 0 {
        return report;
    }
    let full = point(terms.iter().copied());
    let mut rng = Rng(options.seed);
    let mut samples: [Vec<f64>; 4] = Default::default();
    let mut picks = vec![0usize; n];
    for _ in 0..options.resamples {
        picks.iter_mut().for_each(|i| *i = rng.below(n));
        let p = point(picks.iter().map(|&i| terms[i]));
        samples[0].push(p.logged);
        samples[1].push(p.ips);
        // A resample without agreeing decisions has no self-normalised value.
        samples[2].push(p.snips.unwrap_or(f64::NAN));
        samples[3].push(p.dr);
    }
    let [logged, ips, snips, dr] = samples;
    report.logged = Some(interval(full.logged, logged, options.level));
    if agreed > 0 {
        report.ips = Some(interval(full.ips, ips, options.level));
        report.snips = full.snips.map(|v| interval(v, snips, options.level));
    }
    report.dr = Some(interval(full.dr, dr, options.level));
    report
}

/// What a promotion rests on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The lower bound of the candidate's value: the lower of its SNIPS and DR bounds.
    pub candidate_low: f64,
    /// The running policy's value (SNIPS point estimate).
    pub running: f64,
    pub margin: f64,
    pub level: f64,
    pub decisions: usize,
    pub candidate_ess: f64,
}

/// Whether `candidate` may replace `running` on these logs: the logs support both, and the
/// lower bound of the candidate's value — the lower of its SNIPS and DR interval bounds, the
/// more cautious — beats the running policy's point estimate by at least `margin`. The
/// error says why not.
pub fn promote(candidate: &Report, running: &Report, margin: f64) -> Result<Evidence, String> {
    if !candidate.supported {
        return Err(format!(
            "the logs cannot support the candidate: {}",
            candidate.unsupported.join("; ")
        ));
    }
    let (Some(snips), Some(dr)) = (candidate.snips, candidate.dr) else {
        return Err("the candidate has no estimate".to_owned());
    };
    let Some(base) = running.snips.filter(|_| running.supported) else {
        return Err(format!(
            "the logs cannot support the running policy: {}",
            running.unsupported.join("; ")
        ));
    };
    let low = snips.low.min(dr.low);
    let evidence = Evidence {
        candidate_low: low,
        running: base.value,
        margin,
        level: candidate.level,
        decisions: candidate.decisions,
        candidate_ess: candidate.ess,
    };
    if low >= base.value + margin {
        Ok(evidence)
    } else {
        Err(format!(
            "the candidate's lower bound {low:.3} does not beat the running policy's {:.3} by {margin}",
            base.value
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decision(chosen: &str, propensity: f64, reward: f64) -> Decision {
        Decision {
            state: "stage/api@crash_loop/stage/no-deploy".into(),
            candidates: vec![("restart".into(), 0.5), ("noop".into(), -0.2)],
            chosen: chosen.into(),
            propensity,
            options: vec![],
            reward,
        }
    }

    #[test]
    fn the_estimators_on_a_hand_computed_log() {
        // Restart logged with p 0.9 twice (rewards 1, -1), noop with p 0.1 once (reward 0).
        let log = [
            decision("restart", 0.9, 1.0),
            decision("restart", 0.9, -1.0),
            decision("noop", 0.1, 0.0),
        ];
        let opts = Options { min_decisions: 1, min_ess: 0.0, ..Options::default() };
        let noop = evaluate(&log, |_| "noop", &opts);
        // w = (0, 0, 10): IPS = 10·0/3 = 0; SNIPS = 0; DR = q(noop) + w(r − q(noop)) per row.
        assert_eq!(noop.agreed, 1);
        assert!((noop.ips.unwrap().value - 0.0).abs() < 1e-12);
        assert!((noop.snips.unwrap().value - 0.0).abs() < 1e-12);
        let dr = (-0.2 + -0.2 + (-0.2 + 10.0 * (0.0 + 0.2))) / 3.0;
        assert!((noop.dr.unwrap().value - dr).abs() < 1e-12, "{noop:?}");
        assert!((noop.ess - 1.0).abs() < 1e-12);
        let restart = evaluate(&log, |_| "restart", &opts);
        let w = 1.0 / 0.9;
        assert!((restart.ips.unwrap().value - w * 0.0 / 3.0).abs() < 1e-12);
        assert!((restart.snips.unwrap().value - 0.0).abs() < 1e-12);
        assert!((restart.ess - 2.0).abs() < 1e-9);
        assert!((restart.logged.unwrap().value - 0.0).abs() < 1e-12);
    }

    #[test]
    fn logs_that_never_explored_cannot_support_a_different_policy() {
        let log: Vec<Decision> =
            (0..100).map(|i| decision("restart", 1.0, f64::from(i % 2))).collect();
        let r = evaluate(&log, |_| "noop", &Options::default());
        assert!(!r.supported && r.agreed == 0 && r.ips.is_none(), "{r:?}");
        assert!(r.unsupported[0].contains("never chose"), "{:?}", r.unsupported);
        let few = evaluate(&log[..10], |_| "restart", &Options::default());
        assert!(!few.supported && few.unsupported[0].contains("only 10 decisions"));
        let same = evaluate(&log, |_| "restart", &Options::default());
        assert!(same.supported && (same.ess - 100.0).abs() < 1e-9, "{same:?}");
        let i = same.snips.unwrap();
        assert!(i.low <= 0.5 && 0.5 <= i.high && i.low < i.high, "{i:?}");
    }

    #[test]
    fn a_decision_without_a_choice_is_one_the_logs_cannot_speak_for() {
        let log: Vec<Decision> =
            (0..100).map(|i| decision("restart", 1.0, f64::from(i % 2))).collect();
        let mut choices = vec![Some("restart"); 100];
        let all = evaluate_choices(&log, &choices, &Options::default());
        assert!(all.supported && all.unseen == 0, "{all:?}");
        choices[7] = None;
        choices[8] = None;
        let two = evaluate_choices(&log, &choices, &Options::default());
        assert_eq!((two.unseen, two.agreed), (2, 98));
        assert!(!two.supported && two.unsupported[0].contains("in 2 of 100"), "{two:?}");
    }

    #[test]
    fn a_table_chooses_by_its_own_values_and_falls_back_on_the_logged_ones() {
        let d = decision("restart", 0.9, 1.0);
        assert_eq!(Table::default().choose(&d), "restart");
        let mut t = Table::default();
        t.values.entry(d.state.clone()).or_default().insert("noop".into(), 0.9);
        assert_eq!(t.choose(&d), "noop");
        t.values.entry(d.state.clone()).or_default().insert("restart".into(), 0.95);
        assert_eq!(t.choose(&d), "restart");
    }

    proptest! {
        #[test]
        fn estimates_are_finite_and_the_interval_holds_the_point(
            rows in prop::collection::vec((any::<bool>(), 0.01f64..=1.0, -1.2f64..=1.0), 1..60),
        ) {
            let log: Vec<Decision> = rows
                .iter()
                .map(|(restart, p, r)| decision(if *restart { "restart" } else { "noop" }, *p, *r))
                .collect();
            let r = evaluate(&log, |_| "restart", &Options { resamples: 200, ..Options::default() });
            for i in [r.logged, r.ips, r.snips, r.dr].into_iter().flatten() {
                prop_assert!(i.value.is_finite() && i.low.is_finite() && i.high.is_finite(), "{i:?}");
                prop_assert!(i.low <= i.high);
            }
            prop_assert!(r.ess >= 0.0 && r.ess <= log.len() as f64 + 1e-9);
            if let Some(s) = r.snips {
                prop_assert!((-1.2..=1.0).contains(&s.value), "{s:?}");
            }
        }
    }
}
