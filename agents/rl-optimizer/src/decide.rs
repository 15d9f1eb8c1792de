//! The choice among candidates (pure): each candidate scored, the greedy choice, exploring.
//!
//! **Scored**: each candidate's [`Estimate`] and its confidence — the probability that it
//! beats doing nothing ([`Values::confidence`]).
//!
//! **Eligible**: an action that changes something is chosen only with a confidence of at least
//! the environment's minimum (governance's `min_confidence`, and never below 0.5: acting must
//! look at least as good as leaving the service alone), and while its chance of curing is at
//! least [`MIN_CURE`]. So the optimizer does not propose what governance would refuse for low
//! confidence, and stops proposing an action once it has learned that the action is no better
//! than doing nothing, or seldom cures anything here.
//!
//! **Greedy**: the eligible action of highest value; when none is eligible, doing nothing
//! (`noop`, or `observe`) if it was not tried yet; when that is gone too, nothing — the
//! episode goes to a human.
//!
//! **Exploring** (only where [`crate::shield::epsilon_for`] gives ε > 0): with probability ε
//! a uniformly drawn option, the greedy one included. Every choice records its propensity, the
//! probability it had: `1 − ε + ε/k` for the greedy option, `ε/k` for the others (1 without
//! exploring).

use bus_schema::Action;

use crate::context::{Context, SplitMix64};
use crate::values::{Estimate, Values, does_nothing};

/// A candidate with what is known of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub action: Action,
    pub estimate: Estimate,
    /// The chance it beats doing nothing (for doing nothing: that no action beats it).
    pub confidence: f64,
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub action: Action,
    pub confidence: f64,
    pub propensity: f64,
    pub exploratory: bool,
    /// Every option with the probability it had of being chosen (the chosen one's is the
    /// propensity; a candidate not listed had none): what lets the logs be weighed later.
    pub options: Vec<(Action, f64)>,
    /// Every candidate, best value first.
    pub scored: Vec<Scored>,
    pub explanation: String,
}

/// The candidates for `service` in `ctx` with their estimates and confidence, best value first.
pub fn score(values: &Values, service: &str, ctx: &Context, candidates: &[Action]) -> Vec<Scored> {
    let nothing = values.estimate(service, ctx, &Action::Noop);
    let mut scored: Vec<Scored> = candidates
        .iter()
        .map(|a| {
            let estimate = values.estimate(service, ctx, a);
            Scored {
                action: a.clone(),
                estimate,
                confidence: Values::confidence(&estimate, &nothing),
            }
        })
        .collect();
    let best_action = scored
        .iter()
        .filter(|s| !does_nothing(&s.action))
        .map(|s| s.confidence)
        .fold(0.0, f64::max);
    for s in scored.iter_mut().filter(|s| does_nothing(&s.action)) {
        s.confidence = 1.0 - best_action;
    }
    scored.sort_by(|a, b| b.estimate.value.total_cmp(&a.estimate.value));
    scored
}

/// Below this chance of curing, an action is no longer chosen automatically (it may still be
/// suggested to a human): what has failed again and again is not tried again and again.
pub const MIN_CURE: f64 = 0.35;

/// Whether an action may be chosen with the environment's minimum confidence.
pub fn eligible(s: &Scored, min_confidence: Option<f64>) -> bool {
    does_nothing(&s.action)
        || (s.confidence >= min_confidence.unwrap_or(0.0).max(0.5) && s.estimate.cure >= MIN_CURE)
}

/// The greedy choice among `scored`: [`choose`] without exploring.
pub fn greedy(ctx: &Context, scored: Vec<Scored>, min_confidence: Option<f64>) -> Option<Choice> {
    choose(ctx, scored, min_confidence, 0.0, &mut SplitMix64::new(0))
}

/// Chooses among `scored` (see the module docs); `None` when nothing is left to try.
pub fn choose(
    ctx: &Context,
    scored: Vec<Scored>,
    min_confidence: Option<f64>,
    epsilon: f64,
    rng: &mut SplitMix64,
) -> Option<Choice> {
    let mut options: Vec<&Scored> =
        scored.iter().filter(|s| !does_nothing(&s.action) && eligible(s, min_confidence)).collect();
    options.extend(scored.iter().filter(|s| does_nothing(&s.action)));
    let greedy = (*options.first()?).clone();
    let k = options.len();
    let explore = k > 1 && epsilon > 0.0 && rng.unit() < epsilon;
    let pick = if explore { options[rng.below(k)].clone() } else { greedy.clone() };
    let exploratory = explore && pick.action != greedy.action;
    let chance = |s: &Scored| match (epsilon > 0.0 && k > 1, s.action == greedy.action) {
        (true, true) => 1.0 - epsilon + epsilon / k as f64,
        (true, false) => epsilon / k as f64,
        (false, true) => 1.0,
        (false, false) => 0.0,
    };
    let propensity = chance(&pick);
    let chances: Vec<(Action, f64)> =
        options.iter().map(|s| (s.action.clone(), chance(s))).collect();
    let listed: Vec<String> = scored
        .iter()
        .map(|s| {
            format!(
                "{} {:.3} (cures {:.0} %, {} visits, confidence {:.2})",
                s.action,
                s.estimate.value,
                s.estimate.cure * 100.0,
                s.estimate.visits,
                s.confidence
            )
        })
        .collect();
    let why = if exploratory {
        format!(
            "exploring (ε = {epsilon}): drawn at random, propensity {propensity:.3}; the greedy choice is {}",
            greedy.action
        )
    } else if does_nothing(&pick.action) {
        let min = min_confidence.unwrap_or(0.0).max(0.5);
        format!(
            "no action is likely enough to help (confidence {min} and a {:.0} % chance to cure needed)",
            MIN_CURE * 100.0
        )
    } else {
        let runner_up = options
            .get(1)
            .map(|s| format!(", {:.3} above {}", pick.estimate.value - s.estimate.value, s.action))
            .unwrap_or_default();
        let source = if scored.iter().any(|s| s.estimate.visits > 0)
            || pick.estimate.evidence > crate::values::PRIOR_WEIGHT
        {
            "learned from outcomes"
        } else {
            "the prior"
        };
        format!("highest value{runner_up} ({source})")
    };
    let explanation = format!(
        "state {}; candidates: {}; chose {}: {why}; confidence {:.2}",
        ctx.key(),
        listed.join(", "),
        pick.action,
        pick.confidence
    );
    Some(Choice {
        action: pick.action.clone(),
        confidence: pick.confidence,
        propensity,
        exploratory,
        options: chances,
        scored,
        explanation,
    })
}
