//! Tabular Q-learning over incident [`State`]s: values, the choice, the update, confidence.
//!
//! **Values.** `Q(s, a)` estimates the reward of proposing `a` in state `s`, plus what follows.
//! A row not learned yet holds the *prior* ([`prior_value`]): the prior table's action for the
//! kind ([`crate::prior`]) starts at 0.5, `rollback` at 0.25 when a deploy is implicated (the
//! obvious second guess), everything else at 0. So the day-one choice is today's prior.
//!
//! **Reward** ([`reward`]): recovered within [`FAST_RECOVERY_S`] → +1.0, recovered more slowly
//! (or with no time given) → +0.5, not recovered → −1.0; minus the action's [`cost`]:
//! rollback 0.2, scale_down 0.1, scale_up 0.05, restart 0.05, noop/observe 0, any other 0.1.
//! Refusals are not rewards: nothing was done.
//!
//! **Update** ([`QTable::update`]): `Q(s,a) ← Q(s,a) + α·(r + γ·max_a' Q(s',a') − Q(s,a))` where
//! `s'` is the same incident with `a` added to `tried`, and the `γ` term is dropped when the
//! incident recovered (terminal). Defaults α = 0.3 (about the last 3–4 outcomes dominate:
//! quick to unlearn a wrong prior, steady under noise), γ = 0.5 (what can still be done after
//! a failed action matters, but less than the outcome itself).
//!
//! **Choice** ([`choose`]): candidates ranked by value, ties in candidate order; with
//! probability ε a uniformly drawn non-greedy candidate instead (ε is 0 where exploring is not
//! allowed: see [`crate::shield`]).
//!
//! **Confidence** ([`confidence`]): `margin` = Q(chosen) − Q(best other candidate);
//! `learned = 0.5 + 0.5·tanh(2·margin)`; `n` = visits of the chosen and of that runner-up;
//! `base` = the prior's confidence in it ([`prior_confidence`]: the prior table's for its
//! action, 0.65 for rollback when a deploy is implicated, else 0.5);
//! `confidence = (3·base + n·learned) / (3 + n)`, clamped to 0..=1. With no visits it is
//! exactly the prior's (so governance's 0.5/0.6 thresholds pass the day-one choices); evidence
//! takes over as it accumulates. An exploratory choice has a negative margin: below 0.5.

use std::collections::BTreeMap;

use bus_schema::Action;
use serde::{Deserialize, Serialize};

use crate::prior::prior;
use crate::state::{SplitMix64, State};

pub const DEFAULT_ALPHA: f64 = 0.3;
pub const DEFAULT_GAMMA: f64 = 0.5;
pub const DEFAULT_EPSILON: f64 = 0.1;
/// Recovery within this many seconds earns the full reward.
pub const FAST_RECOVERY_S: f64 = 60.0;
/// The prior action's starting value.
const PRIOR_VALUE: f64 = 0.5;
/// `rollback`'s starting value when a deploy is implicated and it is not the prior action.
const DEPLOY_ROLLBACK_VALUE: f64 = 0.25;
/// The prior's confidence in that second guess: enough for governance's 0.6 once the first
/// guess has failed, so a wrong prior can be unlearned where policy wants 0.6.
const DEPLOY_ROLLBACK_CONFIDENCE: f64 = 0.65;
/// How many visits the prior's confidence is worth.
const PRIOR_WEIGHT: f64 = 3.0;

/// How disruptive an action is, subtracted from its reward.
pub fn cost(action: &Action) -> f64 {
    match action {
        Action::Noop | Action::Observe => 0.0,
        Action::Restart | Action::ScaleUp => 0.05,
        Action::ScaleDown => 0.1,
        Action::Rollback => 0.2,
        _ => 0.1,
    }
}

/// The reward of an outcome.
pub fn reward(action: &Action, recovered: bool, time_to_recover_s: Option<f64>) -> f64 {
    let base = match (recovered, time_to_recover_s) {
        (false, _) => -1.0,
        (true, Some(t)) if t <= FAST_RECOVERY_S => 1.0,
        (true, _) => 0.5,
    };
    base - cost(action)
}

/// A state's starting value for an action.
pub fn prior_value(state: &State, action: &Action) -> f64 {
    let (best, _) = prior(state.kind);
    if *action == best {
        PRIOR_VALUE
    } else if *action == Action::Rollback && state.recent_deploy {
        DEPLOY_ROLLBACK_VALUE
    } else {
        0.0
    }
}

/// How sure the prior is of an action: the prior table's confidence for its action,
/// [`DEPLOY_ROLLBACK_CONFIDENCE`] for the rollback second guess, else 0.5.
pub fn prior_confidence(state: &State, action: &Action) -> f64 {
    let (best, confidence) = prior(state.kind);
    if *action == best {
        confidence
    } else if *action == Action::Rollback && state.recent_deploy {
        DEPLOY_ROLLBACK_CONFIDENCE
    } else {
        0.5
    }
}

/// One action's value in one state and how often it was updated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub value: f64,
    pub visits: u64,
}

/// A state's row: action name → entry.
pub type Row = BTreeMap<String, Entry>;

/// The learning rate and discount.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub alpha: f64,
    pub gamma: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self { alpha: DEFAULT_ALPHA, gamma: DEFAULT_GAMMA }
    }
}

/// The learned values. Rows exist only for states that were updated; others read as the prior.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QTable {
    rows: BTreeMap<String, Row>,
    /// Updates so far.
    pub updates: u64,
}

/// A candidate with its value, as the choice saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Valued {
    pub action: Action,
    pub entry: Entry,
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub action: Action,
    pub exploratory: bool,
    /// Every candidate, best first.
    pub values: Vec<Valued>,
    pub confidence: f64,
    pub explanation: String,
}

/// The greedy action of a state changed after an update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceChange {
    pub state: String,
    pub old_best: Action,
    pub new_best: Action,
    /// Every candidate's value after the update, best first.
    pub values: Vec<(Action, f64)>,
}

/// What one update did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub state: String,
    pub action: Action,
    pub reward: f64,
    pub target: f64,
    pub old_value: f64,
    pub new_value: f64,
    pub changed: Option<PreferenceChange>,
}

impl QTable {
    /// A table from stored rows.
    pub fn from_rows(rows: impl IntoIterator<Item = (String, Row)>, updates: u64) -> Self {
        Self { rows: rows.into_iter().collect(), updates }
    }

    pub fn rows(&self) -> &BTreeMap<String, Row> {
        &self.rows
    }

    pub fn row(&self, key: &str) -> Option<&Row> {
        self.rows.get(key)
    }

    /// `Q(state, action)` with its visits: learned, or the prior.
    pub fn entry(&self, state: &State, action: &Action) -> Entry {
        self.rows
            .get(&state.key())
            .and_then(|row| row.get(action.as_str()))
            .copied()
            .unwrap_or_else(|| Entry { value: prior_value(state, action), visits: 0 })
    }

    /// The candidates with their values, best first (ties keep candidate order).
    pub fn ranked(&self, state: &State, candidates: &[Action]) -> Vec<Valued> {
        let mut values: Vec<Valued> = candidates.iter().map(|a| Valued { action: a.clone(), entry: self.entry(state, a) }).collect();
        values.sort_by(|a, b| b.entry.value.total_cmp(&a.entry.value));
        values
    }

    /// One Q-learning step for `action` taken in `state` with reward `reward`; `next` is the
    /// state it led to, `None` when the incident recovered (terminal).
    pub fn update(&mut self, params: Params, state: &State, candidates: &[Action], action: &Action, reward: f64, next: Option<&State>) -> Update {
        let old_best = self.ranked(state, candidates).first().map(|v| v.action.clone());
        let future = next.map_or(0.0, |s| self.ranked(s, candidates).first().map_or(0.0, |v| v.entry.value));
        let target = reward + params.gamma * future;
        let key = state.key();
        let mut row = self.rows.get(&key).cloned().unwrap_or_default();
        for a in candidates.iter().chain([action]) {
            row.entry(a.as_str().to_owned()).or_insert(Entry { value: prior_value(state, a), visits: 0 });
        }
        let old_value = row.get(action.as_str()).map_or(0.0, |e| e.value);
        let new_value = old_value + params.alpha * (target - old_value);
        row.insert(action.as_str().to_owned(), Entry { value: new_value, visits: row.get(action.as_str()).map_or(0, |e| e.visits) + 1 });
        self.rows.insert(key.clone(), row);
        self.updates += 1;
        let ranked = self.ranked(state, candidates);
        let changed = match (old_best, ranked.first()) {
            (Some(old), Some(new)) if old != new.action => Some(PreferenceChange {
                state: key.clone(),
                old_best: old,
                new_best: new.action.clone(),
                values: ranked.iter().map(|v| (v.action.clone(), v.entry.value)).collect(),
            }),
            _ => None,
        };
        Update { state: key, action: action.clone(), reward, target, old_value, new_value, changed }
    }
}

/// The confidence in choosing `values[chosen]` (see the module docs).
pub fn confidence(state: &State, values: &[Valued], chosen: usize) -> f64 {
    let Some(pick) = values.get(chosen) else { return 0.0 };
    let runner_up = values.iter().enumerate().filter(|(i, _)| *i != chosen).map(|(_, v)| v).max_by(|a, b| a.entry.value.total_cmp(&b.entry.value));
    let margin = runner_up.map_or(0.0, |r| pick.entry.value - r.entry.value);
    let learned = 0.5 + 0.5 * (2.0 * margin).tanh();
    let n = (pick.entry.visits + runner_up.map_or(0, |r| r.entry.visits)) as f64;
    let base = prior_confidence(state, &pick.action);
    // (3·base + n·learned) / (3 + n), written so that n = 0 gives exactly `base`.
    let c = base + n / (PRIOR_WEIGHT + n) * (learned - base);
    if c.is_finite() { c.clamp(0.0, 1.0) } else { 0.0 }
}

/// Chooses among `candidates` in `state`: greedy, or with probability `epsilon` a non-greedy
/// candidate drawn by `rng`. `None` when there is no candidate.
pub fn choose(table: &QTable, state: &State, candidates: &[Action], epsilon: f64, rng: &mut SplitMix64) -> Option<Choice> {
    let values = table.ranked(state, candidates);
    let greedy = values.first()?.action.clone();
    let explore = values.len() > 1 && epsilon > 0.0 && rng.unit() < epsilon;
    let chosen = if explore { 1 + rng.below(values.len() - 1) } else { 0 };
    let confidence = confidence(state, &values, chosen);
    let action = values[chosen].action.clone();
    let listed: Vec<String> = values.iter().map(|v| format!("{} {:.3} ({} visits)", v.action, v.entry.value, v.entry.visits)).collect();
    let why = if explore {
        format!("exploring (ε = {epsilon}): a non-greedy candidate drawn at random; the greedy choice is {greedy}")
    } else if let Some(second) = values.get(1) {
        let learned = values[0].entry.visits + second.entry.visits > 0;
        let source = if learned { "learned from outcomes" } else { "the prior, nothing learned yet" };
        format!("highest value, {:.3} above {} ({source})", values[0].entry.value - second.entry.value, second.action)
    } else {
        "the only candidate the policy allows".to_owned()
    };
    let explanation = format!("state {}; candidates: {}; chose {action}: {why}; confidence {confidence:.2}", state.key(), listed.join(", "));
    Some(Choice { action, exploratory: explore, values, confidence, explanation })
}
