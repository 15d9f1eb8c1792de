//! Off-policy evaluation on a simulated world where every policy's true value is known.
//!
//! The world: four services in stage, incidents of three kinds arriving at random; every
//! action has a true chance to cure each kind (and a cure is fast 70 % of the time), jittered
//! per seed, so a policy's true value — the mean reward of its first action for an incident —
//! is a sum over the kinds. The optimizer's own core makes and logs the decisions, exploring
//! with ε = 0.3 in stage and learning from each outcome as it goes (so the logging policy
//! changes under the estimators, as in a running fleet); its proposal records are read back
//! by the same parser `cnctl policy evaluate` uses. Each target policy is then estimated from
//! those logs and its interval compared with the truth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;

use std::collections::BTreeMap;

use bus_schema::{Action, IncidentKind, IncidentStatus, ProofRecord};
use common::{deploys, incident_of, outcome};
use policy::Policy;
use policy_eval::estimate::{Decision, Options, Report, Table, evaluate};
use policy_eval::logged;
use policy_eval::reward::reward;
use rl_optimizer::core::{Core, Effect};
use rl_optimizer::settings::{Mode, Settings};
use rl_optimizer::values::Values;
use serde_json::json;

const SEEDS: u64 = 40;
const INCIDENTS: u64 = 1200;
const SERVICES: [&str; 4] = ["checkout", "search", "orders", "users"];
const KINDS: [IncidentKind; 3] =
    [IncidentKind::CrashLoop, IncidentKind::Overload, IncidentKind::HighLatency];
const FAST: f64 = 0.7;
/// What a candidate must beat the running policy by, in reward per decision.
const MARGIN: f64 = 0.05;

/// The optimizer's own seeded SplitMix64.
type Rng = rl_optimizer::context::SplitMix64;

/// The true chance that `action` cures `kind` (before the seed's jitter).
fn base_cure(kind: IncidentKind, action: &str) -> f64 {
    match (kind, action) {
        (IncidentKind::CrashLoop, "restart") => 0.7,
        (IncidentKind::CrashLoop, "scale_up") => 0.2,
        (IncidentKind::Overload, "scale_up") => 0.75,
        (IncidentKind::Overload, "restart") => 0.3,
        (IncidentKind::HighLatency, "restart") => 0.25,
        (IncidentKind::HighLatency, "scale_up") => 0.7,
        (IncidentKind::HighLatency, "noop" | "observe") => 0.3,
        (IncidentKind::Overload, "noop" | "observe") => 0.2,
        (_, "scale_down") => 0.05,
        _ => 0.05,
    }
}

/// One seed's world: each kind's cure chances.
struct World {
    cure: BTreeMap<(IncidentKind, String), f64>,
}

impl World {
    fn new(rng: &mut Rng) -> Self {
        let mut cure = BTreeMap::new();
        for kind in KINDS {
            for a in ["noop", "observe", "restart", "scale_up", "scale_down", "rollback"] {
                let c = (base_cure(kind, a) + 0.2 * (rng.unit() - 0.5)).clamp(0.01, 0.95);
                cure.insert((kind, a.to_owned()), c);
            }
        }
        World { cure }
    }

    fn chance(&self, kind: IncidentKind, action: &str) -> f64 {
        self.cure.get(&(kind, action.to_owned())).copied().unwrap_or(0.05)
    }

    /// The expected reward of `action` for `kind`.
    fn q(&self, kind: IncidentKind, action: &str) -> f64 {
        let a: Action = action.parse().unwrap();
        let c = self.chance(kind, action);
        c * (FAST * reward(&a, true, Some(30.0)) + (1.0 - FAST) * reward(&a, true, Some(300.0)))
            + (1.0 - c) * reward(&a, false, None)
    }
}

fn kind_of(state: &str) -> IncidentKind {
    let context = state.split_once('@').unwrap().1;
    KINDS.into_iter().find(|k| context.starts_with(k.as_str())).unwrap()
}

/// A record as the proof log holds it.
fn record(
    agent: &str,
    kind: &str,
    p: &bus_schema::ActionProposal,
    detail: serde_json::Value,
) -> ProofRecord {
    serde_json::from_value(json!({
        "v": 1, "agent": agent, "instance": "0", "seq": 1, "ts": p.proposed_at, "kind": kind,
        "env": p.env, "service": p.service, "action": p.action, "proposal_id": p.proposal_id,
        "incident_id": p.incident_id, "detail": detail, "prev_hash": "0".repeat(64),
    }))
    .unwrap()
}

/// What one run did.
struct Ran {
    records: Vec<ProofRecord>,
    /// What the optimizer would now choose first per state (the running policy).
    running: BTreeMap<String, String>,
    /// Per promotion (`--mode gated`): the running policy's true value before and after.
    promotions: Vec<(f64, f64)>,
}

/// The optimizer works `INCIDENTS` incidents of the world in `mode`.
fn run(world: &World, rng: &mut Rng, mode: Mode) -> Ran {
    let policy = Policy { explore_envs: vec!["stage".into()], ..Policy::default() };
    let settings = Settings { mode, epsilon: 0.3, policy, ..Settings::defaults() };
    let mut promotions = Vec::new();
    let mut core = Core::new(settings.clone(), Values::new(settings.alpha), rl_optimizer::NAME);
    for s in SERVICES {
        for d in deploys("stage", s) {
            core.on_deploy(&d);
        }
    }
    let mut records = Vec::new();
    for n in 0..INCIDENTS {
        let service = SERVICES[(rng.unit() * SERVICES.len() as f64) as usize % SERVICES.len()];
        let kind = KINDS[(rng.unit() * KINDS.len() as f64) as usize % KINDS.len()];
        let incident = incident_of(n, "stage", service, kind, false);
        let first = core.on_incident(&incident, "eval", incident.opened_at).into_iter().find_map(
            |e| match e {
                Effect::Propose(p) => Some(p),
                _ => None,
            },
        );
        let Some(p) = first else { continue };
        let detail: serde_json::Value = serde_json::from_str(&p.detail).unwrap();
        records.push(record("rl-optimizer", "action_proposed", &p.proposal, detail));
        if p.proposal.require_human {
            continue;
        }
        let action = p.proposal.action.clone();
        let cured = rng.unit() < world.chance(kind, action.as_str());
        let ttr = cured.then(|| if rng.unit() < FAST { 30.0 } else { 300.0 });
        let o = outcome(&incident, p.proposal.proposal_id, &action, cured, ttr);
        records.push(record(
            "issue-detector",
            "outcome_recorded",
            &p.proposal,
            json!({"recovered": cured, "time_to_recover_s": ttr, "revised": false, "superseded_by": null}),
        ));
        let before = core.values.clone();
        for e in core.on_outcome(&o, o.judged_at) {
            if let Effect::Promoted(_) = e {
                let decisions: Vec<Decision> =
                    core.log.decisions.iter().map(|l| l.decision.clone()).collect();
                let value = |v: &Values| truth(world, &core.log.table(v), &decisions);
                promotions.push((value(&before), value(&core.values)));
            }
        }
        let resolved = bus_schema::Incident { status: IncidentStatus::Resolved, ..incident };
        core.on_incident(&resolved, "eval", resolved.updated_at);
    }
    let mut running = BTreeMap::new();
    for (n, s) in SERVICES.iter().enumerate() {
        for kind in KINDS {
            let i = incident_of(INCIDENTS + n as u64, "stage", s, kind, false);
            let state = format!("stage/{s}@{}", rl_optimizer::context::Context::of(&i).key());
            running.insert(state, core.first_choice_for(&i).unwrap().to_string());
        }
    }
    Ran { records, running, promotions }
}

/// A target policy: per state, the action it takes.
fn table(decisions: &[Decision], pick: impl Fn(&str, IncidentKind, &[String]) -> String) -> Table {
    let mut t = Table::default();
    for d in decisions {
        let offered: Vec<String> = d.candidates.iter().map(|(a, _)| a.clone()).collect();
        let best = pick(&d.state, kind_of(&d.state), &offered);
        let row = t.values.entry(d.state.clone()).or_default();
        for a in &offered {
            row.insert(a.clone(), if *a == best { 1.0 } else { 0.0 });
        }
    }
    t
}

/// The true value of a table on this world: its action per state, over the states the
/// incidents arrive in (uniform over services and kinds).
fn truth(world: &World, t: &Table, decisions: &[Decision]) -> f64 {
    let mut by_state: BTreeMap<&str, &Decision> = BTreeMap::new();
    for d in decisions {
        by_state.entry(d.state.as_str()).or_insert(d);
    }
    let values: Vec<f64> =
        by_state.values().map(|d| world.q(kind_of(&d.state), t.choose(d))).collect();
    values.iter().sum::<f64>() / values.len() as f64
}

fn covers(r: &Report, truth: f64) -> [Option<bool>; 3] {
    [r.ips, r.snips, r.dr].map(|i| i.map(|i| i.low <= truth && truth <= i.high))
}

/// Per target: per estimator, (covered, supported seeds).
type Tally = BTreeMap<&'static str, [(u32, u32); 3]>;

#[test]
fn the_estimators_intervals_cover_each_policys_true_value_and_a_worse_candidate_is_never_promoted()
{
    let opts = Options::default();
    let mut tally: Tally = BTreeMap::new();
    let (mut promoted_worse, mut promoted_better, mut better_exists) = (Vec::new(), 0, 0);
    let mut restart_unsupported = 0;
    let mut lines = Vec::new();
    for seed in 0..SEEDS {
        let mut rng = Rng::new(seed.wrapping_mul(0xA076_1D64_78BD_642F) ^ 0x21);
        let world = World::new(&mut rng);
        let Ran { records, running, .. } = run(&world, &mut rng, Mode::Learning);
        let logs = logged::from_records(&records, "rl-optimizer");
        let decisions = logs.decisions;
        assert!(decisions.len() as u64 > INCIDENTS * 9 / 10, "{:?}", logs.left_out);
        assert!(
            decisions.iter().all(|d| !d.options.is_empty()),
            "every decision lists its options"
        );
        let targets: [(&'static str, Table); 4] = [
            ("running", table(&decisions, |state, _, _| running[state].clone())),
            (
                "best",
                table(&decisions, |_, k, offered| {
                    offered
                        .iter()
                        .max_by(|a, b| world.q(k, a).total_cmp(&world.q(k, b)))
                        .unwrap()
                        .clone()
                }),
            ),
            (
                "nothing",
                table(&decisions, |_, _, offered| {
                    offered.iter().find(|a| *a == "noop" || *a == "observe").unwrap().clone()
                }),
            ),
            ("restart", table(&decisions, |_, _, _| "restart".to_owned())),
        ];
        let mut reports = BTreeMap::new();
        for (name, t) in &targets {
            let truth = truth(&world, t, &decisions);
            let r = evaluate(&decisions, |d| t.choose(d), &opts);
            let cov = covers(&r, truth);
            if *name == "restart" {
                restart_unsupported += u32::from(!r.supported);
            } else {
                let entry = tally.entry(name).or_default();
                for (i, c) in cov.iter().enumerate() {
                    if let Some(c) = c.filter(|_| r.supported) {
                        entry[i].1 += 1;
                        entry[i].0 += u32::from(c);
                    }
                }
            }
            let show = |i: Option<policy_eval::estimate::Interval>| {
                i.map_or("-".to_owned(), |i| {
                    format!("{:+.3} [{:+.3}, {:+.3}]", i.value, i.low, i.high)
                })
            };
            lines.push(format!(
                "seed {seed:>2} {name:<8} truth {truth:+.3} supported {:<5} ess {:>6.1} unseen {:>3} ips {} snips {} dr {}",
                r.supported, r.ess, r.unseen, show(r.ips), show(r.snips), show(r.dr)
            ));
            reports.insert(*name, (r, truth));
        }
        let (running, running_truth) = &reports["running"];
        for name in ["best", "nothing"] {
            let (candidate, truth) = &reports[name];
            let better = *truth > *running_truth + MARGIN;
            better_exists += u32::from(name == "best" && better && candidate.supported);
            if policy_eval::estimate::promote(candidate, running, MARGIN).is_ok() {
                if *truth < *running_truth {
                    promoted_worse.push(format!("seed {seed}: {name}"));
                } else if better {
                    promoted_better += 1;
                }
            }
        }
    }
    let text = lines.join("\n");
    eprintln!("{text}");
    for (name, per) in &tally {
        for (i, (covered, supported)) in per.iter().enumerate() {
            let estimator = ["IPS", "SNIPS", "DR"][i];
            eprintln!(
                "{name}: {estimator} covered the truth in {covered} of {supported} supported seeds"
            );
        }
    }
    eprintln!(
        "restart (the prior's choice, never explored where it stopped curing) unsupported in {restart_unsupported} of {SEEDS}; \
         worse promoted: {promoted_worse:?}; a supported better candidate existed in {better_exists} seeds and was promoted in {promoted_better}"
    );
    for (name, per) in &tally {
        for (i, (covered, supported)) in per.iter().enumerate() {
            let estimator = ["IPS", "SNIPS", "DR"][i];
            assert!(*supported >= 20, "{name} {estimator}: only {supported} seeds supported");
            assert!(
                f64::from(*covered) >= 0.85 * f64::from(*supported),
                "{name} {estimator}: covered {covered} of {supported}"
            );
        }
    }
    assert!(promoted_worse.is_empty(), "worse candidates promoted: {promoted_worse:?}");
    assert!(
        restart_unsupported >= SEEDS as u32 * 9 / 10,
        "the logs cannot support what they never explored"
    );
}

#[test]
fn a_gated_optimizer_promotes_its_candidate_only_when_the_logs_show_it_is_better() {
    let (mut promoted, mut seeds_promoting) = (0, 0);
    for seed in 0..12u64 {
        let mut rng = Rng::new(seed.wrapping_mul(0xE703_7ED1_A0B4_28DB) ^ 0x77);
        let world = World::new(&mut rng);
        let ran = run(&world, &mut rng, Mode::Gated);
        for (before, after) in &ran.promotions {
            assert!(
                after >= before,
                "seed {seed}: promoted a worse policy ({before:+.3} → {after:+.3})"
            );
        }
        promoted += ran.promotions.len();
        seeds_promoting += usize::from(!ran.promotions.is_empty());
        let logged = ran
            .records
            .iter()
            .filter(|r| r.kind == bus_schema::ProofKind::ActionProposed)
            .all(|r| r.detail["mode"] == "gated" && r.detail["options"].is_array());
        assert!(logged, "every proposal records the mode and its options");
        eprintln!("seed {seed}: promotions {:?}", ran.promotions);
    }
    eprintln!("{promoted} promotions in {seeds_promoting} of 12 seeds, none to a worse policy");
    // The prior restarts a latency incident; scale_up cures it here: the candidate learns it.
    assert!(
        seeds_promoting >= 6,
        "the better candidate is promoted in most worlds: {seeds_promoting}"
    );
}
