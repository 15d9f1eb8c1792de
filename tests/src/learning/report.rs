//! Figures per world over seeds, the printed table, and a closer look per seed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bus_schema::{Action, ReasonCode};
use policy::Policy;

use super::{Cure, Plan, Run, Who, WorldSpec, run};

/// One world over every seed: per seed the learner's and the oracle's runs.
#[derive(Debug, Clone)]
pub struct WorldResult {
    pub spec: WorldSpec,
    pub learner: Vec<Run>,
    pub oracle: Vec<Run>,
}

/// The episode (1-based) from which every first choice was the cure; `None` if the last was not.
pub fn switched_at(firsts: &[Option<Action>], cure: &Cure) -> Option<usize> {
    let is_cure = |a: &Option<Action>| a.as_ref().is_none_or(|a| cure.is(a));
    if !firsts.last().is_some_and(is_cure) {
        return None;
    }
    let last_wrong = firsts.iter().rposition(|a| !is_cure(a));
    Some(last_wrong.map_or(1, |i| i + 2))
}

/// Per-world figures (over seeds, and services of a mixed world).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub name: &'static str,
    pub cure: String,
    pub right_prior: bool,
    /// Per seed and service: the episode from which the greedy first choice is the cure.
    pub switches: Vec<Option<usize>>,
    pub regret: Vec<f64>,
    pub unhealthy_min: Vec<f64>,
    pub oracle_unhealthy_min: Vec<f64>,
    pub proposals: u64,
    pub escalations: u64,
    pub exploratory_in_prod: u64,
    pub without_propensity: u64,
    pub refusals: BTreeMap<String, u64>,
}

impl Summary {
    pub fn of(r: &WorldResult) -> Self {
        let mut s = Summary {
            name: r.spec.name,
            cure: r
                .spec
                .cures
                .iter()
                .map(|(_, c)| c.name())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join("/"),
            right_prior: r.spec.right_prior,
            switches: Vec::new(),
            regret: Vec::new(),
            unhealthy_min: Vec::new(),
            oracle_unhealthy_min: Vec::new(),
            proposals: 0,
            escalations: 0,
            exploratory_in_prod: 0,
            without_propensity: 0,
            refusals: BTreeMap::new(),
        };
        for (learner, oracle) in r.learner.iter().zip(&r.oracle) {
            s.proposals += learner.proposals;
            s.escalations += learner.escalations;
            s.exploratory_in_prod += learner.exploratory_in_prod;
            s.without_propensity += learner.without_propensity;
            for (reason, n) in &learner.refusals {
                *s.refusals.entry(reason.clone()).or_insert(0) += n;
            }
            for (key, cure) in &r.spec.cures {
                let (Some(l), Some(o)) = (learner.tracks.get(key), oracle.tracks.get(key)) else {
                    continue;
                };
                s.switches.push(switched_at(&l.greedy, cure));
                s.regret.push(o.rewards.iter().sum::<f64>() - l.rewards.iter().sum::<f64>());
                s.unhealthy_min.push(l.unhealthy_s.iter().sum::<u64>() as f64 / 60.0);
                s.oracle_unhealthy_min.push(o.unhealthy_s.iter().sum::<u64>() as f64 / 60.0);
            }
        }
        s
    }

    /// The worst seed's switch (`None` if some seed never switched).
    pub fn worst_switch(&self) -> Option<usize> {
        self.switches.iter().try_fold(0, |worst, s| s.map(|s| worst.max(s)))
    }

    pub fn refused(&self, reason: ReasonCode) -> u64 {
        self.refusals.get(reason.as_str()).copied().unwrap_or(0)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn worst(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MIN, f64::max)
}

/// The table `scripts/learning-eval` prints.
pub fn table(summaries: &[Summary], plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} seeds x {} incidents per world ({} min each); regret and unhealthy minutes are totals per seed (service, in the mixed world)",
        plan.seeds,
        plan.episodes,
        plan.episode_s / 60
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| world | cure | switch: median / worst | regret: median / worst | unhealthy min: median / worst (oracle median) | escalations | refusals |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for s in summaries {
        let switches: Vec<f64> =
            s.switches.iter().map(|x| x.map_or(f64::INFINITY, |x| x as f64)).collect();
        let show = |x: f64| if x.is_finite() { format!("{x:.0}") } else { "never".to_owned() };
        let refusals: Vec<String> = s.refusals.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(
            out,
            "| {} | {}{} | {} / {} | {:.1} / {:.1} | {:.0} / {:.0} ({:.0}) | {} | {} |",
            s.name,
            s.cure,
            if s.right_prior { " (prior)" } else { "" },
            show(median(&switches)),
            show(worst(&switches)),
            median(&s.regret),
            worst(&s.regret),
            median(&s.unhealthy_min),
            worst(&s.unhealthy_min),
            median(&s.oracle_unhealthy_min),
            s.escalations,
            if refusals.is_empty() { "-".to_owned() } else { refusals.join(", ") },
        );
    }
    out
}

/// Each seed's first choices per episode, for a closer look (`learning-eval --verbose`).
pub fn trace(r: &WorldResult) -> String {
    let mut out = String::new();
    for (seed, (learner, oracle)) in r.learner.iter().zip(&r.oracle).enumerate() {
        for (key, t) in &learner.tracks {
            let show = |v: &[Option<Action>]| {
                v.iter()
                    .map(|a| a.as_ref().map_or("-".to_owned(), |a| a.to_string()))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let o = oracle.tracks.get(key).cloned().unwrap_or_default();
            let _ = writeln!(out, "  seed {seed} {key}: greedy [{}]", show(&t.greedy));
            let _ = writeln!(out, "  seed {seed} {key}: first  [{}]", show(&t.firsts));
            let _ = writeln!(
                out,
                "  seed {seed} {key}: reward {:?} unhealthy {:?}",
                t.rewards.iter().map(|r| (r * 100.0).round() / 100.0).collect::<Vec<_>>(),
                t.unhealthy_s
            );
            let _ = writeln!(
                out,
                "  seed {seed} {key}: oracle {:?} unhealthy {:?}",
                o.rewards.iter().map(|r| (r * 100.0).round() / 100.0).collect::<Vec<_>>(),
                o.unhealthy_s
            );
        }
    }
    out
}

/// Runs every world of `specs` for `plan`; `progress` hears each world's name, then its result.
pub fn evaluate(
    specs: &[WorldSpec],
    plan: &Plan,
    policy: &Policy,
    progress: impl Fn(&str, Option<&WorldResult>),
) -> anyhow::Result<Vec<Summary>> {
    specs
        .iter()
        .map(|spec| {
            progress(spec.name, None);
            let learner = (0..plan.seeds)
                .map(|seed| run(spec, seed, plan, Who::Learner, policy))
                .collect::<Result<_, _>>()?;
            let oracle = (0..plan.seeds)
                .map(|seed| run(spec, seed, plan, Who::Oracle, policy))
                .collect::<Result<_, _>>()?;
            let result = WorldResult { spec: spec.clone(), learner, oracle };
            progress(spec.name, Some(&result));
            Ok(Summary::of(&result))
        })
        .collect()
}
