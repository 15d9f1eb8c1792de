//! `--mode gated`: a candidate learned in shadow acts only once the logs show it is better.
//!
//! The running values decide (exploring where the policy allows, so the logs say something
//! about the other options); every outcome teaches the **candidate** instead, a copy of the
//! running values that learns as `learning` mode would. Each judged or refused proposal is
//! kept in a bounded [`Log`] of decisions: state, the actions offered with their values then,
//! every option's probability, the choice and its reward.
//!
//! Every [`EVALUATE_EVERY`] new decisions, both are estimated off-policy on that log
//! (`policy_eval`), each as a table: in each logged state, the offered action of highest
//! estimated value. The candidate is **promoted** — the running values become a copy of it —
//! only when the logs support both estimates and the lower bound of the candidate's value
//! (the lower of its self-normalised IPS and doubly robust bounds, 90 % intervals) beats the
//! running policy's point estimate by [`MARGIN`]; the `policy_promoted` record names the
//! evidence and the states whose choice changed. Either way the verdict is kept with the log
//! for `cnctl policy show`.

use std::collections::{BTreeSet, VecDeque};

use bus_schema::{Action, PolicyEntry, Uuid};
use policy_eval::estimate::{Decision, Evidence, Options, Report, Table, evaluate, promote};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::episode::Proposed;
use crate::values::{Values, row_key};

/// Decisions kept; the oldest go first.
pub const MAX_LOGGED: usize = 1000;
/// New decisions between two evaluations.
pub const EVALUATE_EVERY: u32 = 10;
/// What the candidate's lower bound must beat the running policy's value by, in reward per
/// decision.
pub const MARGIN: f64 = 0.05;

/// One logged decision and where it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logged {
    pub proposal_id: Uuid,
    /// `env/service`.
    pub service: String,
    pub context: Context,
    pub decision: Decision,
}

impl Logged {
    /// The decision a proposal logged, with its reward.
    pub fn of(p: &Proposed, service: &str, reward: f64) -> Option<Self> {
        let proposal = &p.proposal;
        let detail: serde_json::Value = serde_json::from_str(&p.detail).ok()?;
        let options = policy_eval::logged::options(&detail);
        Some(Logged {
            proposal_id: proposal.proposal_id,
            service: service.to_owned(),
            context: p.context,
            decision: Decision {
                state: row_key(service, &p.context),
                candidates: proposal
                    .candidates
                    .iter()
                    .map(|c| (c.action.to_string(), c.value))
                    .collect(),
                chosen: proposal.action.to_string(),
                propensity: proposal.propensity?,
                options,
                reward,
            },
        })
    }
}

/// The decisions evaluations are made on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Log {
    pub decisions: VecDeque<Logged>,
    /// Decisions logged since the last evaluation.
    pub since_evaluated: u32,
    /// Promotions so far.
    pub promotions: u64,
    /// The last evaluation: `{promoted: true, evidence, changes}` or `{promoted: false, why,
    /// decisions}` (`cnctl policy show`).
    #[serde(default)]
    pub last: Option<serde_json::Value>,
}

impl Log {
    /// Adds a decision, or replaces its reward when it is already there (a revised outcome).
    pub fn record(&mut self, logged: Logged) {
        if let Some(d) = self.decisions.iter_mut().find(|d| d.proposal_id == logged.proposal_id) {
            d.decision.reward = logged.decision.reward;
            return;
        }
        self.decisions.push_back(logged);
        self.since_evaluated += 1;
        while self.decisions.len() > MAX_LOGGED {
            self.decisions.pop_front();
        }
    }

    /// `values` as a table over the logged states: each offered action's estimate.
    pub fn table(&self, values: &Values) -> Table {
        let mut table = Table::default();
        for l in &self.decisions {
            let row = table.values.entry(l.decision.state.clone()).or_default();
            for (action, _) in &l.decision.candidates {
                if let Ok(a) = action.parse::<Action>() {
                    row.insert(action.clone(), values.estimate(&l.service, &l.context, &a).value);
                }
            }
        }
        table
    }

    /// The same table as `cn.policy` entries (`cnctl policy evaluate` reads them); `visits`
    /// counts the state's own outcomes.
    pub fn entries(&self, values: &Values) -> Vec<PolicyEntry> {
        self.table(values)
            .values
            .into_iter()
            .flat_map(|(state, row)| {
                let visits = values.row(&state).map_or(0, |r| r.values().map(|s| s.n).sum());
                row.into_iter().filter_map(move |(action, value)| {
                    Some(PolicyEntry {
                        state: state.clone(),
                        action: action.parse().ok()?,
                        value,
                        visits,
                    })
                })
            })
            .collect()
    }
}

/// A promotion and what it rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    pub evidence: Evidence,
    pub candidate: Report,
    pub running: Report,
    /// `(state, from, to)` where the candidate chooses otherwise.
    pub changes: Vec<(String, String, String)>,
}

/// Estimates the candidate and the running values on the log; `Ok` when the candidate is to
/// be promoted, else why not.
pub fn consider(log: &Log, running: &Values, candidate: &Values) -> Result<Promotion, String> {
    let decisions: Vec<Decision> = log.decisions.iter().map(|l| l.decision.clone()).collect();
    let (new, old) = (log.table(candidate), log.table(running));
    let mut changes = BTreeSet::new();
    for d in &decisions {
        let (from, to) = (old.choose(d), new.choose(d));
        if from != to {
            changes.insert((d.state.clone(), from.to_owned(), to.to_owned()));
        }
    }
    if changes.is_empty() {
        return Err("the candidate chooses as the running policy does in every logged state".into());
    }
    let options = Options::default();
    let candidate_report = evaluate(&decisions, |d| new.choose(d), &options);
    let running_report = evaluate(&decisions, |d| old.choose(d), &options);
    let evidence = promote(&candidate_report, &running_report, MARGIN)?;
    Ok(Promotion {
        evidence,
        candidate: candidate_report,
        running: running_report,
        changes: changes.into_iter().collect(),
    })
}
