//! What the optimizer has learned: for each service and incident [`Context`], each action's
//! value (its mean reward) and how often it cured, learned from that action's own outcomes.
//!
//! **Reward** ([`reward`]): cured within [`FAST_RECOVERY_S`] → +1, cured more slowly (or with
//! no time given) → +0.5, not cured → −1; minus the action's [`cost`] (rollback 0.2,
//! scale_down 0.1, restart and scale_up 0.05, doing nothing 0, any other 0.1). Refusals are
//! not rewards: nothing was done.
//!
//! **A hierarchy, so one service cannot flip every service's choice.** An estimate blends three
//! levels, each shrunk towards the one above by a weight of [`PRIOR_WEIGHT`] observations:
//!
//! ```text
//! prior(ctx, a)                                     (crate::prior)
//!   → group(ctx, a)  = (P·prior + Σ_others w·mean) / (P + Σ_others w),  w = min(n, SERVICE_CAP)
//!   → service(ctx, a) = (P·group + n·mean) / (P + n)
//! ```
//!
//! The group pools what *other* services of the context taught, each counting for at most
//! [`SERVICE_CAP`] observations: a new service starts from what several others learned, no
//! single one of them can outweigh the prior, and a service with a history of its own follows
//! its own. A service's `mean` weighs recent outcomes more: each update moves it by
//! `max(1/n, α)` of the way (`--alpha`, default 0.05), so after about `1/α` outcomes older
//! ones fade and a changed service is relearned.
//!
//! **Confidence** ([`Values::confidence`]): the probability that acting beats doing nothing,
//! `Φ((V(a) − V(noop)) / √(σa² + σnoop²))` with `σ = 1/√(evidence)` (evidence: the prior's
//! weight plus the outcomes behind the estimate). It is high for a restart that cures a crash
//! loop 70 % of the time when doing nothing never does, and falls to about 0.5 once an action is
//! learned to be no better than leaving the service alone — which is when governance's
//! threshold stops it.

use std::collections::BTreeMap;

use bus_schema::Action;
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::prior::{cure_chance, prior_value};

/// How many observations the level above is worth.
pub const PRIOR_WEIGHT: f64 = 4.0;
/// What one service can teach the others, in observations.
pub const SERVICE_CAP: f64 = 2.0;
/// The smallest step an update takes: after about 1/α outcomes older ones fade.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// The reward of an outcome, and the cure time that earns the full reward: shared with the
/// tools that evaluate policies off-policy (`policy_eval::reward`).
pub use policy_eval::reward::{FAST_RECOVERY_S, reward};

/// Whether an action changes nothing.
pub fn does_nothing(action: &Action) -> bool {
    matches!(action, Action::Noop | Action::Observe)
}

/// One action's outcomes on one service in one context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub n: u64,
    /// Mean reward (recent outcomes weigh more).
    pub reward: f64,
    /// Share of outcomes that cured.
    pub cured: f64,
}

impl Stats {
    /// How many observations the mean is worth.
    fn weight(&self, alpha: f64) -> f64 {
        (self.n as f64).min(1.0 / alpha)
    }
}

/// One service's stats in one context, by action name.
pub type Row = BTreeMap<String, Stats>;

/// Sums over the services of one context: capped weights, and weighted means.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Pool {
    w: f64,
    reward: f64,
    cured: f64,
}

impl Pool {
    fn add(&mut self, s: &Stats, alpha: f64, sign: f64) {
        let w = s.weight(alpha).min(SERVICE_CAP) * sign;
        self.w += w;
        self.reward += w * s.reward;
        self.cured += w * s.cured;
    }
}

/// An action's estimate for one service in one context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    /// The chance it cures.
    pub cure: f64,
    /// How many observations the estimate is worth, the prior's included.
    pub evidence: f64,
    /// This service's own outcomes of the action in this context.
    pub visits: u64,
}

/// What one update did, kept so that a revised outcome can be corrected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub key: String,
    pub action: Action,
    pub reward: f64,
    /// The share of the way the mean moved.
    pub step: f64,
    pub old_value: f64,
    pub new_value: f64,
}

/// Everything learned.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    rows: BTreeMap<String, Row>,
    pools: BTreeMap<String, BTreeMap<String, Pool>>,
    alpha: f64,
    pub updates: u64,
}

/// The key of one service's row in one context: `{service}@{context}`.
pub fn row_key(service: &str, ctx: &Context) -> String {
    format!("{service}@{}", ctx.key())
}

impl Values {
    pub fn new(alpha: f64) -> Self {
        Self { rows: BTreeMap::new(), pools: BTreeMap::new(), alpha, updates: 0 }
    }

    /// Values from stored rows (the pools are sums over them).
    pub fn from_rows(
        rows: impl IntoIterator<Item = (String, Row)>,
        alpha: f64,
        updates: u64,
    ) -> Self {
        let mut v =
            Self { rows: rows.into_iter().collect(), pools: BTreeMap::new(), alpha, updates };
        let rows: Vec<(String, Row)> = v.rows.iter().map(|(k, r)| (k.clone(), r.clone())).collect();
        for (key, row) in rows {
            for (action, s) in &row {
                v.pool_mut(&key, action).add(s, alpha, 1.0);
            }
        }
        v
    }

    pub fn rows(&self) -> &BTreeMap<String, Row> {
        &self.rows
    }

    pub fn row(&self, key: &str) -> Option<&Row> {
        self.rows.get(key)
    }

    fn pool_mut(&mut self, row_key: &str, action: &str) -> &mut Pool {
        let context = row_key.split_once('@').map_or(row_key, |(_, c)| c).to_owned();
        self.pools.entry(context).or_default().entry(action.to_owned()).or_default()
    }

    /// The estimate of `action` for `service` in `ctx`.
    pub fn estimate(&self, service: &str, ctx: &Context, action: &Action) -> Estimate {
        let own = self
            .rows
            .get(&row_key(service, ctx))
            .and_then(|r| r.get(action.as_str()))
            .copied()
            .unwrap_or_default();
        let mut others = self
            .pools
            .get(&ctx.key())
            .and_then(|p| p.get(action.as_str()))
            .copied()
            .unwrap_or_default();
        others.add(&own, self.alpha, -1.0);
        let others_w = others.w.max(0.0);
        let (pv, pc) = (prior_value(ctx, action), cure_chance(ctx, action));
        let group_v = (PRIOR_WEIGHT * pv + others.reward) / (PRIOR_WEIGHT + others_w);
        let group_c = (PRIOR_WEIGHT * pc + others.cured) / (PRIOR_WEIGHT + others_w);
        let w = own.weight(self.alpha);
        let value = (PRIOR_WEIGHT * group_v + w * own.reward) / (PRIOR_WEIGHT + w);
        let cure = ((PRIOR_WEIGHT * group_c + w * own.cured) / (PRIOR_WEIGHT + w)).clamp(0.0, 1.0);
        Estimate {
            value,
            cure,
            evidence: PRIOR_WEIGHT + w + others_w.min(PRIOR_WEIGHT),
            visits: own.n,
        }
    }

    /// The probability that `a` beats `nothing` (see the module docs).
    pub fn confidence(a: &Estimate, nothing: &Estimate) -> f64 {
        let sd = (1.0 / a.evidence + 1.0 / nothing.evidence).sqrt();
        let c = normal_cdf((a.value - nothing.value) / sd);
        if c.is_finite() { c.clamp(0.0, 1.0) } else { 0.0 }
    }

    /// Learns from one outcome of `action` for `service` in `ctx`.
    pub fn update(
        &mut self,
        service: &str,
        ctx: &Context,
        action: &Action,
        reward: f64,
        cured: bool,
    ) -> Update {
        let key = row_key(service, ctx);
        let old_value = self.estimate(service, ctx, action).value;
        let alpha = self.alpha;
        let before =
            self.rows.get(&key).and_then(|r| r.get(action.as_str())).copied().unwrap_or_default();
        let mut s = before;
        s.n += 1;
        let step = (1.0 / s.n as f64).max(alpha);
        s.reward += step * (reward - s.reward);
        s.cured += step * (f64::from(u8::from(cured)) - s.cured);
        self.replace(&key, action, before, s);
        self.updates += 1;
        let new_value = self.estimate(service, ctx, action).value;
        Update { key, action: action.clone(), reward, step, old_value, new_value }
    }

    /// Redoes an earlier update with a revised outcome: the recovery it learned from did not
    /// hold. The mean moves as if the revised reward had been the one learned.
    pub fn correct(
        &mut self,
        service: &str,
        ctx: &Context,
        earlier: &Update,
        reward: f64,
    ) -> Update {
        let key = row_key(service, ctx);
        let old_value = self.estimate(service, ctx, &earlier.action).value;
        let before = self
            .rows
            .get(&key)
            .and_then(|r| r.get(earlier.action.as_str()))
            .copied()
            .unwrap_or_default();
        let mut s = before;
        s.reward += earlier.step * (reward - earlier.reward);
        s.cured = (s.cured - earlier.step).clamp(0.0, 1.0);
        self.replace(&key, &earlier.action, before, s);
        self.updates += 1;
        let new_value = self.estimate(service, ctx, &earlier.action).value;
        Update {
            key,
            action: earlier.action.clone(),
            reward,
            step: earlier.step,
            old_value,
            new_value,
        }
    }

    fn replace(&mut self, key: &str, action: &Action, before: Stats, after: Stats) {
        let alpha = self.alpha;
        let pool = self.pool_mut(key, action.as_str());
        pool.add(&before, alpha, -1.0);
        pool.add(&after, alpha, 1.0);
        self.rows.entry(key.to_owned()).or_default().insert(action.as_str().to_owned(), after);
    }
}

/// The standard normal CDF (Abramowitz–Stegun 7.1.26 for erf; error below 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    0.5 * (1.0 + if z >= 0.0 { erf } else { -erf })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::EnvClass;
    use bus_schema::IncidentKind;

    fn ctx() -> Context {
        Context { kind: IncidentKind::CrashLoop, env: EnvClass::Stage, deploy: false }
    }

    #[test]
    fn the_normal_cdf_on_known_points() {
        for (x, p) in [
            (0.0, 0.5),
            (1.0, 0.841_344_7),
            (-1.0, 0.158_655_3),
            (1.96, 0.975_002_1),
            (-3.0, 0.001_349_9),
        ] {
            assert!((normal_cdf(x) - p).abs() < 1e-6, "Φ({x}) = {} not {p}", normal_cdf(x));
        }
    }

    #[test]
    fn an_estimate_starts_at_the_prior_and_follows_its_own_outcomes() {
        let mut v = Values::new(DEFAULT_ALPHA);
        let e = v.estimate("api", &ctx(), &Action::Restart);
        assert!(
            (e.value - 0.55).abs() < 1e-9 && (e.cure - 0.8).abs() < 1e-9 && e.visits == 0,
            "{e:?}"
        );
        // One failure: (P·0.55 − 1.05) / (P + 1).
        let u =
            v.update("api", &ctx(), &Action::Restart, reward(&Action::Restart, false, None), false);
        assert!(
            (u.new_value - (PRIOR_WEIGHT * 0.55 - 1.05) / (PRIOR_WEIGHT + 1.0)).abs() < 1e-9,
            "{u:?}"
        );
        assert!(
            (v.estimate("api", &ctx(), &Action::Restart).cure
                - PRIOR_WEIGHT * 0.8 / (PRIOR_WEIGHT + 1.0))
                .abs()
                < 1e-9
        );
    }

    #[test]
    fn one_service_cannot_flip_what_another_starts_from_but_several_can() {
        let mut v = Values::new(DEFAULT_ALPHA);
        let fail = reward(&Action::Restart, false, None);
        for _ in 0..50 {
            v.update("leaky", &ctx(), &Action::Restart, fail, false);
        }
        let leaky = v.estimate("leaky", &ctx(), &Action::Restart).value;
        let fresh = v.estimate("fresh", &ctx(), &Action::Restart).value;
        assert!(leaky < -0.7, "the leaky service learned restart does not help it: {leaky}");
        let counts = PRIOR_WEIGHT * 0.55 + SERVICE_CAP * fail;
        assert!(
            (fresh - counts / (PRIOR_WEIGHT + SERVICE_CAP)).abs() < 1e-9,
            "one service counts as two observations for the others: {fresh}"
        );
        assert!(fresh > prior_value(&ctx(), &Action::Noop), "a fresh service still restarts first");
        for s in ["b", "c", "d", "e"] {
            for _ in 0..5 {
                v.update(s, &ctx(), &Action::Restart, fail, false);
            }
        }
        assert!(
            v.estimate("fresh", &ctx(), &Action::Restart).value < -0.5,
            "five services that agree do teach a newcomer"
        );
    }

    #[test]
    fn pools_rebuilt_from_stored_rows_equal_the_ones_kept_up_to_date() {
        let mut v = Values::new(0.2);
        for (i, s) in ["a", "b", "a", "c", "a", "a", "a", "a"].iter().enumerate() {
            v.update(
                s,
                &ctx(),
                &Action::Restart,
                if i % 3 == 0 { 0.95 } else { -1.05 },
                i % 3 == 0,
            );
        }
        let loaded = Values::from_rows(v.rows().clone(), 0.2, v.updates);
        for s in ["a", "b", "c", "new"] {
            let (x, y) = (
                v.estimate(s, &ctx(), &Action::Restart),
                loaded.estimate(s, &ctx(), &Action::Restart),
            );
            assert!(
                (x.value - y.value).abs() < 1e-9 && (x.cure - y.cure).abs() < 1e-9,
                "{s}: {x:?} vs {y:?}"
            );
        }
    }

    #[test]
    fn a_correction_moves_the_mean_as_if_the_revised_reward_had_been_learned() {
        let mut a = Values::new(DEFAULT_ALPHA);
        let mut b = Values::new(DEFAULT_ALPHA);
        let u = a.update("api", &ctx(), &Action::Restart, 0.95, true);
        a.correct("api", &ctx(), &u, -1.05);
        b.update("api", &ctx(), &Action::Restart, -1.05, false);
        let (x, y) = (
            a.estimate("api", &ctx(), &Action::Restart),
            b.estimate("api", &ctx(), &Action::Restart),
        );
        assert!(
            (x.value - y.value).abs() < 1e-9 && (x.cure - y.cure).abs() < 1e-9,
            "{x:?} vs {y:?}"
        );
    }

    #[test]
    fn confidence_is_the_chance_that_acting_beats_doing_nothing() {
        let v = Values::new(DEFAULT_ALPHA);
        let nothing = v.estimate("api", &ctx(), &Action::Noop);
        let restart = v.estimate("api", &ctx(), &Action::Restart);
        let c = Values::confidence(&restart, &nothing);
        assert!(
            c > 0.9 && c < 1.0,
            "day one, a restart is much better than nothing for a crash loop: {c}"
        );
        assert!((Values::confidence(&nothing, &nothing) - 0.5).abs() < 1e-9);
    }
}
