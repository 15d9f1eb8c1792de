//! `--mode gated`: a candidate learned in shadow acts only once the logs show it is better.
//!
//! The running values decide (exploring where the policy allows, so the logs say something
//! about the other options); every outcome teaches the **candidate** instead, a copy of the
//! running values that learns as `learning` mode would. Each judged or refused proposal is
//! kept in a bounded [`Log`] of decisions: state, the actions offered with their values then,
//! every option's probability, the choice and its reward.
//!
//! Every [`EVALUATE_EVERY`] new decisions, both are estimated off-policy on that log
//! (`policy_eval`), each as the choice it would make in each logged decision by the
//! optimizer's own greedy rule ([`Log::choices`]): the policy estimated is the policy that
//! would act. The candidate is **promoted** — the running values become a copy of it —
//! only when the logs support both estimates and the lower bound of the candidate's value
//! (the lower of its self-normalised IPS and doubly robust bounds, 90 % intervals) beats the
//! running policy's point estimate by [`MARGIN`]; the `policy_promoted` record names the
//! evidence and the states whose choice changed. Either way the verdict is kept with the log
//! for `cnctl policy show`.

use std::collections::{BTreeSet, VecDeque};

use bus_schema::{Action, PolicyEntry, Uuid};
use policy::Policy;
use policy_eval::estimate::{
    Decision, Evidence, Options, Report, Table, evaluate_choices, promote,
};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::decide;
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

    /// What `values` choose in each logged decision, by the optimizer's own greedy rule
    /// ([`decide::greedy`]: the eligible action of highest value, else doing nothing) among
    /// the actions offered then; `None` where nothing is left and the incident would go to a
    /// human (the log says nothing of that choice).
    pub fn choices(&self, values: &Values, policy: &Policy) -> Vec<Option<&str>> {
        self.decisions
            .iter()
            .map(|l| {
                let d = &l.decision;
                let offered: Vec<Action> =
                    d.candidates.iter().filter_map(|(a, _)| a.parse().ok()).collect();
                let env = l.service.split_once('/').map_or("", |(env, _)| env);
                let scored = decide::score(values, &l.service, &l.context, &offered);
                let min = policy.for_env(env).min_confidence;
                let choice = decide::greedy(&l.context, scored, min);
                let name = choice?.action.to_string();
                d.candidates.iter().find(|(a, _)| *a == name).map(|(a, _)| a.as_str())
            })
            .collect()
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
pub fn consider(
    log: &Log,
    running: &Values,
    candidate: &Values,
    policy: &Policy,
) -> Result<Promotion, String> {
    let decisions: Vec<Decision> = log.decisions.iter().map(|l| l.decision.clone()).collect();
    let (new, old) = (log.choices(candidate, policy), log.choices(running, policy));
    let mut changes = BTreeSet::new();
    for ((d, from), to) in decisions.iter().zip(&old).zip(&new) {
        if from != to {
            let name = |a: &Option<&str>| a.unwrap_or("(a human)").to_owned();
            changes.insert((d.state.clone(), name(from), name(to)));
        }
    }
    if changes.is_empty() {
        return Err("the candidate chooses as the running policy does in every logged state".into());
    }
    let options = Options::default();
    let candidate_report = evaluate_choices(&decisions, &new, &options);
    let running_report = evaluate_choices(&decisions, &old, &options);
    let evidence = promote(&candidate_report, &running_report, MARGIN)?;
    Ok(Promotion {
        evidence,
        candidate: candidate_report,
        running: running_report,
        changes: changes.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bus_schema::IncidentKind;

    use super::*;
    use crate::context::EnvClass;
    use crate::values::DEFAULT_ALPHA;

    fn logged(service: &str, candidates: &[(&str, f64)]) -> Logged {
        let context =
            Context { kind: IncidentKind::CrashLoop, env: EnvClass::Stage, deploy: false };
        let candidates: Vec<(String, f64)> =
            candidates.iter().map(|(a, v)| ((*a).to_owned(), *v)).collect();
        Logged {
            proposal_id: Uuid::new_v4(),
            service: service.to_owned(),
            context,
            decision: Decision {
                state: row_key(service, &context),
                options: candidates.iter().map(|(a, _)| (a.clone(), 0.5)).collect(),
                candidates,
                chosen: "noop".to_owned(),
                propensity: 0.5,
                reward: 0.0,
            },
        }
    }

    /// The policy estimated is the one that would act: where the environment asks for more
    /// confidence than an action has, the optimizer would do nothing, and so does its estimate,
    /// though the action's value is the highest.
    #[test]
    fn a_decision_is_estimated_as_the_optimizer_would_make_it() {
        let values = Values::new(DEFAULT_ALPHA);
        let log = Log {
            decisions: [logged("stage/api", &[("restart", 0.4), ("noop", -0.5)])].into(),
            ..Log::default()
        };
        let decision = &log.decisions[0].decision;
        assert_eq!(log.table(&values).choose(decision), "restart", "restart is valued highest");
        let mut policy = Policy::default();
        assert_eq!(log.choices(&values, &policy), [Some("restart")]);
        policy.envs.get_mut("stage").unwrap().min_confidence = Some(1.0);
        assert_eq!(
            log.choices(&values, &policy),
            [Some("noop")],
            "too uncertain for stage's minimum"
        );

        let nothing_left =
            Log { decisions: [logged("stage/api", &[("restart", 0.4)])].into(), ..Log::default() };
        assert_eq!(nothing_left.choices(&values, &policy), [None], "a human would decide");
    }
}
