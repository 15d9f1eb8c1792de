//! Learning against the simulator, in process: the real pure cores of the simulator's world,
//! the issue detector's engine, the optimizer's decide/learn and governance's gates, wired the
//! way the fleet wires them over the bus, on simulated time only (no NATS, no wall clock).
//!
//! The world: one stage service whose failure is `memory_leak`. The leak comes with a deploy
//! of 1.2.0; memory climbs 20 %/min until the service is OOM-killed in a loop. A restart puts
//! memory back to baseline but the leak goes on (it crashes again within minutes); a rollback
//! to 1.1.0 cures it. The prior for a crash loop is `restart`: wrong here.
//!
//! The world cannot bring the leak back after a rollback (the failure is triggered once per
//! service), so each episode is a fresh world with its own seed, starting 6 h after the last
//! (so governance's cooldowns from the previous episode have expired), with a fresh detector
//! state for the service. The optimizer's table and memory and governance's ledgers persist
//! across episodes, as in a running fleet.
//!
//! The detector names a deploy made less than an hour before a crash loop as its suspect, so
//! the optimizer's state says a deploy is implicated and its shield offers `rollback` (the
//! last test pins this). Also measured: a restart's brief help is sometimes judged
//! "recovered", when the crash loop came back, was restarted again and happened to be
//! resolved at the end of the first restart's 5-min window.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bus_schema::{Action, Incident, IncidentKind, IncidentStatus, Outcome, Timestamp, Uuid};
use governance_gate::gates::{self, Mode as GateMode, Verdict, View};
use governance_gate::ledger::{IncidentLedger, ServiceLedger};
use governance_gate::policy::Policy;
use issue_detector::config::DetectorConfig;
use issue_detector::engine::Output;
use issue_detector::service::ServiceState;
use rl_optimizer::decide;
use rl_optimizer::memory::{IncidentMemory, Proposed};
use rl_optimizer::qlearn::{QTable, reward};
use rl_optimizer::settings::{Mode, Settings};
use simulator::scenario::Scenario;
use simulator::world::{Event, World};

const SCENARIO: &str = r#"
tick_s = 10
[[service]]
env = "stage"
name = "checkout"
failure = "memory_leak"
start_after_s = 120
leak_percent_per_min = 20
"#;

/// Simulated time per episode: the leak, up to 3 actions and their 5-minute verdicts.
const EPISODE_S: u64 = 3600;

/// What the fleet remembers across episodes.
struct Fleet {
    settings: Settings,
    policy: Policy,
    config: DetectorConfig,
    table: QTable,
    memory: BTreeMap<Uuid, IncidentMemory>,
    gov_service: ServiceLedger,
    gov_incidents: BTreeMap<Uuid, IncidentLedger>,
}

/// What happened to one proposal.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    kind: IncidentKind,
    state: String,
    action: Action,
    /// The greedy action at the time (best first among the candidates).
    greedy: Action,
    candidates: Vec<Action>,
    exploratory: bool,
    approved: bool,
    reward: Option<f64>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Episode {
    steps: Vec<Step>,
    /// Every incident the detector published (kind, status, reopen count).
    incidents: Vec<(IncidentKind, IncidentStatus, u32)>,
}

impl Fleet {
    fn new(mode: Mode) -> Self {
        let settings = Settings { mode, ..Settings::defaults() };
        Self {
            policy: settings.policy.clone(),
            settings,
            config: DetectorConfig::default(),
            table: QTable::default(),
            memory: BTreeMap::new(),
            gov_service: ServiceLedger::default(),
            gov_incidents: BTreeMap::new(),
        }
    }

    fn episode(&mut self, n: u64) -> Episode {
        let scenario = Scenario::parse(SCENARIO, "learning_loop").unwrap();
        let start: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let start = start.plus(Duration::from_secs(n * 6 * 3600));
        let mut world = World::new(&scenario, 1000 + n, start);
        let (env, service) = (scenario.services[0].env.clone(), scenario.services[0].name.clone());
        let mut detector = ServiceState::new(env, service);
        let mut ep = Episode::default();
        let mut tick_no = 0u64;
        while world.now().since(start) < Duration::from_secs(EPISODE_S) {
            let tick = world.step().unwrap();
            tick_no += 1;
            let mut queue: Vec<Event> = tick.events;
            let mut k = 0;
            while !queue.is_empty() {
                let events = std::mem::take(&mut queue);
                for e in events {
                    k += 1;
                    let input_id = format!("ep{n}:t{tick_no}:{k}");
                    let out = self.detect(&mut detector, &e, &input_id);
                    queue.extend(self.react(&mut world, &mut detector, out, &mut ep));
                }
            }
        }
        ep
    }

    fn detect(&mut self, d: &mut ServiceState, e: &Event, input_id: &str) -> Output {
        match e {
            Event::Metric(m) => d.on_metric(m, &self.config, input_id, m.timestamp).unwrap(),
            Event::Deploy(dep) => {
                self.gov_service.on_deploy(dep);
                d.on_deploy(dep, &self.config, input_id, dep.timestamp).unwrap()
            }
            Event::Log(l) => d.on_log(l, &self.config, input_id, l.timestamp).unwrap(),
        }
    }

    /// The detector's outputs through the optimizer, governance and the executor; returns the
    /// events the executed actions caused (a rollback's deploy event).
    fn react(&mut self, world: &mut World, d: &mut ServiceState, out: Output, ep: &mut Episode) -> Vec<Event> {
        let mut caused = Vec::new();
        let mut outcomes: Vec<Outcome> = out.outcomes.into_iter().map(|(o, _)| o).collect();
        for incident in out.incidents {
            ep.incidents.push((incident.kind, incident.status, incident.reopen_count));
            self.gov_incidents.entry(incident.incident_id).or_default().on_incident(&incident);
            let Some(p) = self.propose(&incident) else { continue };
            let now = p.proposal.proposed_at;
            let view = View { service: Some(&self.gov_service), incident: self.gov_incidents.get(&incident.incident_id) };
            let verdict = gates::decide(&self.policy, view, &p.proposal, now, GateMode::Proposal);
            let approved = verdict == Verdict::Approve;
            ep.steps.push(Step {
                kind: incident.kind,
                state: p.state.key(),
                action: p.proposal.action.clone(),
                greedy: p.proposal.candidates[0].action.clone(),
                candidates: p.candidates.clone(),
                exploratory: p.proposal.exploratory,
                approved,
                reward: None,
            });
            if !approved {
                // Remembered, never rewarded (the optimizer's on_refusal).
                if let Some(m) = self.memory.get_mut(&incident.incident_id) {
                    if let Some(q) = m.find_mut(p.proposal.proposal_id) {
                        q.refused = Some(format!("{verdict:?}"));
                    }
                }
                continue;
            }
            if gates::changes_nothing(&p.proposal.action) {
                continue;
            }
            self.gov_service.record_approval(&p.proposal.action, now, &self.policy);
            self.gov_incidents.entry(incident.incident_id).or_default().approved_actions += 1;
            let (result, events) = common::execute(world, &p.proposal);
            caused.extend(events);
            outcomes.extend(d.on_executed(&result, &self.config, "corr").outcomes.into_iter().map(|(o, _)| o));
        }
        for o in outcomes {
            self.gov_service.on_outcome(&o, &self.policy);
            if let Some(r) = self.learn(&o) {
                if let Some(s) = ep.steps.iter_mut().find(|s| s.action == o.action && s.approved && s.reward.is_none()) {
                    s.reward = Some(r);
                }
            }
        }
        caused
    }

    /// The optimizer's on_incident, without the bus: a proposal for an opening.
    fn propose(&mut self, incident: &Incident) -> Option<Proposed> {
        let now = incident.updated_at;
        let mut mem = self.memory.get(&incident.incident_id).cloned().unwrap_or_else(|| IncidentMemory::new(now));
        mem.last_seen = now;
        match incident.status {
            IncidentStatus::Updated => return None,
            IncidentStatus::Resolved => {
                mem.resolved = true;
                self.memory.insert(incident.incident_id, mem);
                return None;
            }
            IncidentStatus::Opened => {}
        }
        mem.resolved = false;
        let d = decide::decide(&self.settings, &self.table, incident, &mem.tried(), &rl_optimizer::NAME, now)?;
        let p = Proposed {
            proposal: d.proposal,
            reopen_count: incident.reopen_count,
            state: d.state,
            candidates: d.candidates,
            shadow: false,
            refused: None,
            learned: None,
            judged: false,
        };
        mem.push(p.clone());
        self.memory.insert(incident.incident_id, mem);
        Some(p)
    }

    /// The optimizer's on_outcome: the reward it learned from, if any.
    fn learn(&mut self, o: &Outcome) -> Option<f64> {
        let mem = self.memory.get_mut(&o.incident_id)?;
        let p = mem.find_mut(o.proposal_id?)?;
        if p.judged || o.action != p.proposal.action {
            return None;
        }
        p.judged = true;
        p.learned = decide::learn(&self.settings, &mut self.table, &p.state, &p.candidates, o);
        Some(reward(&o.action, o.recovered, o.time_to_recover_s))
    }
}

/// The first proposal of an episode for the leak's crash loop, in its initial state.
fn first(ep: &Episode) -> &Step {
    ep.steps.iter().find(|s| s.kind == IncidentKind::CrashLoop && s.state.ends_with("tried=-")).expect("the leak opens a crash loop")
}

const EPISODES: u64 = 30;
/// The oracle: roll back the leak's crash loop at once; the detector judges it recovered
/// within 60 s (measured: every rollback here earned the full 1.0), so 1.0 − cost(rollback).
fn oracle_reward() -> f64 {
    reward(&Action::Rollback, true, Some(0.0))
}

#[test]
fn a_wrong_prior_for_a_memory_leak_is_unlearned_against_the_simulator() {
    let mut fleet = Fleet::new(Mode::Learning);
    let (mut regret, mut switch_at, mut firsts) = (0.0, None, Vec::new());
    for n in 0..EPISODES {
        let ep = fleet.episode(n);
        let f = first(&ep);
        assert!(f.candidates.contains(&Action::Rollback), "rollback is a candidate once a deploy is implicated");
        // Refused or never judged: nothing was done about the incident, the worst outcome.
        let r = if f.approved { f.reward.unwrap_or(reward(&Action::Noop, false, None)) } else { reward(&Action::Noop, false, None) };
        regret += oracle_reward() - r;
        firsts.push((f.greedy.clone(), f.action.clone(), r));
        match (f.greedy == Action::Rollback, switch_at) {
            (true, None) => switch_at = Some(n + 1),
            (false, Some(_)) => switch_at = None,
            _ => {}
        }
    }
    let switch_at = switch_at.expect("the greedy first choice for the leak ends on rollback");
    let explored = firsts.iter().filter(|(g, a, _)| g != a).count();
    println!("first choices (greedy, chosen, reward): {firsts:?}");
    println!("switch: the greedy first choice is rollback from episode {switch_at} of {EPISODES} on; cumulative regret {regret:.2}; exploratory first choices {explored}; table updates {}", fleet.table.updates);
    assert_eq!(firsts[0].0, Action::Restart, "day one follows the prior");

    // Measured: greedy restart in episodes 1–3 (rewards 0.45, 0.45, −1.05: a restart's brief
    // help is judged "recovered" when the crash loop's reopening was restarted again and was
    // resolved at the end of the 5-min window), rollback from episode 4 on, so switch_at = 4.
    // Restart's value falls 0.5 → 0.485 → 0.474 → below rollback's 0.25 prior after the
    // first restart that is judged a failure. Bound with slack: 6.
    const SWITCH_BOUND: u64 = 6;
    assert!(switch_at <= SWITCH_BOUND, "switched at episode {switch_at}");
    // Regret per episode is at most Δ = oracle − worst = 0.8 − (−1.05) = 1.85. Before the
    // switch every episode may cost Δ; after it only exploratory first choices do (ε = 0.1
    // in stage: 3 of 30 expected; allow 2ε·N = 6). So regret ≤ Δ·(SWITCH_BOUND + 2εN) =
    // 1.85·12 = 22.2, against ≈ 0.35–1.85 per episode (10–55 over 30) for never learning.
    // Measured: 4.35 (0.35 + 0.35 + 1.85 before the switch, 1.8 for one exploratory noop).
    let delta = oracle_reward() - reward(&Action::Restart, false, None);
    let bound = delta * (SWITCH_BOUND as f64 + 2.0 * 0.1 * EPISODES as f64);
    assert!(regret <= bound, "regret {regret:.2} > bound {bound:.2}");
}

#[test]
fn a_frozen_optimizer_decides_the_same_on_the_same_inputs_and_learns_nothing() {
    let run = || {
        let mut fleet = Fleet::new(Mode::Frozen);
        let eps: Vec<Episode> = (0..5).map(|n| fleet.episode(n)).collect();
        (eps, fleet.table)
    };
    let (a, table_a) = run();
    let (b, table_b) = run();
    assert_eq!(a, b, "identical inputs, identical decisions");
    assert_eq!(table_a, QTable::default(), "a frozen table is never updated");
    assert_eq!(table_b, QTable::default());
    for ep in &a {
        let f = first(ep);
        assert!(!f.exploratory && f.action == Action::Restart && f.greedy == Action::Restart, "frozen: the greedy prior every time: {f:?}");
    }
}

/// The detector itself names the leaky deploy as the crash loop's suspect, so the state says
/// a deploy is implicated and rollback is a candidate — no help from the test needed.
#[test]
fn the_detector_implicates_the_recent_deploy_so_rollback_is_a_candidate() {
    let mut fleet = Fleet::new(Mode::Learning);
    for n in 0..3 {
        let ep = fleet.episode(n);
        let f = first(&ep);
        assert!(f.state.contains("/deploy/") && f.candidates.contains(&Action::Rollback), "{f:?}");
    }
}
