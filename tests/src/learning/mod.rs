//! The learning evaluation: the optimizer against simulated worlds, in process, on simulated
//! time, through the same pure cores the fleet runs — the simulator's world, the issue
//! detector's engine, the optimizer's core and governance's gates and ledgers — wired the way
//! the fleet wires them over the bus (no NATS, no wall clock).
//!
//! Each world is run for several seeds; each seed is a series of episodes, one incident each:
//! a fresh world with its own seed (the failures of the simulator trigger once per world),
//! 6 h of simulated time after the last, a fresh detector state, while the optimizer's values
//! and governance's ledgers persist, as in a running fleet. The same episodes are run again
//! with an *oracle* in the optimizer's place: it proposes the world's cure at once (again if it
//! fails), or, where doing nothing is best, `noop` and then a human.
//!
//! Per world it reports the incidents until the greedy first choice is the cure (the first
//! episode from which every first choice was), the regret (the oracle's rewards minus the
//! learner's, each action's reward as the optimizer learns it, for the incidents of the
//! failure: those opened before the service was first free of incidents again) and the
//! minutes the service had an incident open, for the learner and the oracle. `scripts/learning-eval` prints the table;
//! `tests/tests/learning_loop.rs` runs a short version and asserts on it.

mod report;
mod worlds;

pub use report::{Summary, WorldResult, evaluate, switched_at, table, trace};
pub use worlds::{Cure, WorldSpec, worlds};

use std::collections::BTreeMap;
use std::time::Duration;

use bus_schema::{
    Action, ActionProposal, Backend, ExecutionResult, ExecutionStatus, Incident, IncidentStatus,
    Outcome, Refusal, SimAction, Timestamp, Uuid, derive_id,
};
use governance_gate::gates::{self, Mode as GateMode, Verdict, View};
use governance_gate::ledger::{IncidentLedger, ServiceLedger};
use issue_detector::config::DetectorConfig;
use issue_detector::engine::Output;
use issue_detector::service::ServiceState;
use policy::Policy;
use rl_optimizer::core::{Core, Effect};
use rl_optimizer::settings::{Mode, Settings};
use rl_optimizer::values::{Values, reward};
use simulator::scenario::Scenario;
use simulator::world::{Event, World};

/// How long and how often.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub seeds: u64,
    pub episodes: u64,
    /// Simulated time per episode.
    pub episode_s: u64,
    /// Print every incident, proposal, decision and outcome to stderr.
    pub trace: bool,
}

/// Who proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Learner,
    Oracle,
}

/// One service over one seed's episodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    /// Per episode: the first action proposed for its first incident, or `None` if nothing was
    /// proposed (then the episode opened no incident).
    pub firsts: Vec<Option<Action>>,
    /// Per episode: the greedy first choice at its start (what a fresh incident would get).
    pub greedy: Vec<Option<Action>>,
    pub rewards: Vec<f64>,
    pub unhealthy_s: Vec<u64>,
}

/// What one seed of one world did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    pub tracks: BTreeMap<String, Track>,
    pub proposals: u64,
    pub exploratory: u64,
    pub exploratory_in_prod: u64,
    pub escalations: u64,
    /// Refusals by reason code.
    pub refusals: BTreeMap<String, u64>,
    /// Proposals without a propensity.
    pub without_propensity: u64,
}

/// The oracle: the cure at once, again while it fails; where nothing cures, `noop` then a human.
#[derive(Debug, Default)]
struct Oracle {
    cures: BTreeMap<String, Cure>,
    /// Proposals made per incident.
    made: BTreeMap<Uuid, u32>,
    /// Services with an action in flight.
    busy: BTreeMap<String, Uuid>,
}

impl Oracle {
    fn propose(&mut self, incident: &Incident, now: Timestamp) -> Option<ActionProposal> {
        let key = format!("{}/{}", incident.env, incident.service);
        let cure = self.cures.get(&key)?.clone();
        if self.busy.contains_key(&key) {
            return None;
        }
        let n = self.made.entry(incident.incident_id).or_insert(0);
        *n += 1;
        let (action, require_human) = match (&cure, *n) {
            (Cure::Action(a), _) => (a.clone(), false),
            (Cure::Nothing, 1) => (Action::Noop, false),
            (Cure::Nothing, 2) => (Action::Observe, true),
            (Cure::Nothing, _) => return None,
        };
        let proposal_id = derive_id(&["oracle", &incident.incident_id.to_string(), &n.to_string()]);
        self.busy.insert(key, proposal_id);
        Some(ActionProposal {
            proposal_id,
            incident_id: Some(incident.incident_id),
            env: incident.env.clone(),
            service: incident.service.clone(),
            action,
            params: Default::default(),
            confidence: 0.99,
            proposer: rl_optimizer::NAME,
            explanation: "the oracle knows the cure".into(),
            candidates: vec![],
            exploratory: false,
            require_human,
            proposed_at: now,
            propensity: Some(1.0),
        })
    }

    fn done(&mut self, env: &str, service: &str, proposal: Uuid) {
        let key = format!("{env}/{service}");
        if self.busy.get(&key) == Some(&proposal) {
            self.busy.remove(&key);
        }
    }
}

/// The fleet in process.
struct Fleet {
    who: Who,
    policy: Policy,
    config: DetectorConfig,
    core: Core,
    oracle: Oracle,
    gov_services: BTreeMap<String, ServiceLedger>,
    gov_incidents: BTreeMap<Uuid, IncidentLedger>,
    detectors: BTreeMap<String, ServiceState>,
    /// Open incidents the oracle works on.
    open: BTreeMap<Uuid, Incident>,
    run: Run,
    /// This episode: first proposal per service, rewards per proposal.
    firsts: BTreeMap<String, Action>,
    rewards: BTreeMap<Uuid, (String, f64)>,
    /// Per service this episode: the incidents of its failure — those opened until the service
    /// first had none open again — and whether that moment has come.
    main: BTreeMap<String, (std::collections::BTreeSet<Uuid>, bool)>,
    /// Outcomes the proposer has yet to hear, and refusals.
    inputs: Vec<Input>,
    n: u64,
    trace: bool,
}

enum Input {
    Incident(Incident),
    Outcome(Outcome),
    Refusal(Refusal),
}

impl Fleet {
    fn new(who: Who, spec: &WorldSpec, policy: Policy) -> Self {
        let settings =
            Settings { mode: Mode::Learning, policy: policy.clone(), ..Settings::defaults() };
        let values = Values::new(settings.alpha);
        Self {
            who,
            core: Core::new(settings, values, rl_optimizer::NAME),
            oracle: Oracle { cures: spec.cures.iter().cloned().collect(), ..Oracle::default() },
            policy,
            config: DetectorConfig::default(),
            gov_services: BTreeMap::new(),
            gov_incidents: BTreeMap::new(),
            detectors: BTreeMap::new(),
            open: BTreeMap::new(),
            run: Run::default(),
            firsts: BTreeMap::new(),
            rewards: BTreeMap::new(),
            main: BTreeMap::new(),
            inputs: Vec::new(),
            n: 0,
            trace: false,
        }
    }

    fn input_id(&mut self) -> String {
        self.n += 1;
        format!("CN_EVENTS:eval:{}", self.n)
    }

    /// One episode: a fresh world, 6 h after the last; tallies into `run`.
    fn episode(&mut self, spec: &WorldSpec, scenario: &Scenario, seed: u64, n: u64, plan: &Plan) {
        let start = epoch().plus(Duration::from_secs(n * 6 * 3600));
        let mut world = World::new(scenario, seed.wrapping_mul(1000).wrapping_add(n), start);
        self.detectors.clear();
        self.open.clear();
        self.firsts.clear();
        self.rewards.clear();
        self.main.clear();
        let mut greedy: BTreeMap<String, Option<Action>> = BTreeMap::new();
        let mut unhealthy: BTreeMap<String, u64> = BTreeMap::new();
        let tick_s = scenario.tick_s;
        while world.now().since(start) < Duration::from_secs(plan.episode_s) {
            let Some(tick) = world.step() else { break };
            let mut queue: Vec<Event> = tick.events;
            while !queue.is_empty() {
                for e in std::mem::take(&mut queue) {
                    queue.extend(self.event(&mut world, &e, &mut greedy));
                }
            }
            if self.who == Who::Learner {
                for (id, trigger) in self.core.due(tick.at) {
                    let proposals = Self::proposals(self.core.wake(id, &trigger, tick.at));
                    queue.extend(self.effects(&mut world, proposals, tick.at));
                    queue.extend(self.drain(&mut world));
                }
            }
            while !queue.is_empty() {
                for e in std::mem::take(&mut queue) {
                    queue.extend(self.event(&mut world, &e, &mut greedy));
                }
            }
            for (key, d) in &self.detectors {
                if d.incidents.open().next().is_some() {
                    *unhealthy.entry(key.clone()).or_insert(0) += tick_s;
                } else if let Some((_, over)) = self.main.get_mut(key) {
                    *over = true;
                }
            }
        }
        for (key, _) in &spec.cures {
            let track = self.run.tracks.entry(key.clone()).or_default();
            track.firsts.push(self.firsts.get(key).cloned());
            track.greedy.push(greedy.get(key).cloned().flatten());
            track
                .rewards
                .push(self.rewards.values().filter(|(k, _)| k == key).map(|(_, r)| r).sum());
            track.unhealthy_s.push(unhealthy.get(key).copied().unwrap_or(0));
        }
    }

    /// One event through the detector, then whatever it causes; returns events the actions caused.
    fn event(
        &mut self,
        world: &mut World,
        e: &Event,
        greedy: &mut BTreeMap<String, Option<Action>>,
    ) -> Vec<Event> {
        let (env, service) = e.scope();
        let key = format!("{env}/{service}");
        let id = self.input_id();
        let config = self.config.clone();
        let d = self
            .detectors
            .entry(key.clone())
            .or_insert_with(|| ServiceState::new(env.clone(), service.clone()));
        let out: Output = match e {
            Event::Metric(m) => d.on_metric(m, &config, &id, m.timestamp).unwrap_or_default(),
            Event::Log(l) => d.on_log(l, &config, &id, l.timestamp).unwrap_or_default(),
            Event::Deploy(dep) => {
                self.gov_services.entry(key.clone()).or_default().on_deploy(dep);
                self.core.on_deploy(dep);
                d.on_deploy(dep, &config, &id, dep.timestamp).unwrap_or_default()
            }
        };
        for i in &out.incidents {
            let (ids, over) = self.main.entry(key.clone()).or_default();
            if !*over {
                ids.insert(i.incident_id);
            }
            if self.trace {
                eprintln!(
                    "{} incident {:?} {} {} reopen {} suspect {:?} id {}",
                    i.updated_at,
                    i.status,
                    key,
                    i.kind,
                    i.reopen_count,
                    i.suspect_version,
                    &i.incident_id.to_string()[..8]
                );
            }
            self.gov_incidents.entry(i.incident_id).or_default().on_incident(i);
            if i.status == IncidentStatus::Opened
                && i.reopen_count == 0
                && !greedy.contains_key(&key)
            {
                greedy.insert(key.clone(), self.core.first_choice_for(i));
            }
        }
        self.inputs.extend(out.incidents.into_iter().map(Input::Incident));
        self.inputs.extend(out.outcomes.into_iter().map(|(o, _)| Input::Outcome(o)));
        self.drain(world)
    }

    /// Hands the pending inputs to governance's ledgers and the proposer until none is left.
    fn drain(&mut self, world: &mut World) -> Vec<Event> {
        let mut caused = Vec::new();
        while !self.inputs.is_empty() {
            for input in std::mem::take(&mut self.inputs) {
                let effects = match input {
                    Input::Incident(i) => self.incident(&i),
                    Input::Outcome(o) => self.outcome(&o),
                    Input::Refusal(r) => self.refusal(&r),
                };
                let now = world.now();
                caused.extend(self.effects(world, effects, now));
            }
        }
        caused
    }

    fn incident(&mut self, i: &Incident) -> Vec<ActionProposal> {
        let now = i.updated_at;
        match self.who {
            Who::Learner => Self::proposals(self.core.on_incident(i, "eval", now)),
            Who::Oracle => {
                if i.status == IncidentStatus::Resolved {
                    self.open.remove(&i.incident_id);
                    return Vec::new();
                }
                self.open.insert(i.incident_id, i.clone());
                if i.status == IncidentStatus::Opened {
                    self.oracle.propose(i, now).into_iter().collect()
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn outcome(&mut self, o: &Outcome) -> Vec<ActionProposal> {
        let key = format!("{}/{}", o.env, o.service);
        if self.trace {
            eprintln!(
                "{} outcome {key} {} recovered {} revised {} superseded {:?} ({}) p {}",
                o.judged_at,
                o.action,
                o.recovered,
                o.revised,
                o.superseded_by,
                o.detail,
                &o.proposal_id.unwrap_or_default().to_string()[..8]
            );
        }
        self.gov_services.entry(key.clone()).or_default().on_outcome(o, &self.policy);
        let main = self.main.get(&key).is_some_and(|(ids, _)| ids.contains(&o.incident_id));
        if let Some(p) = o.proposal_id.filter(|_| o.attributable() && main) {
            self.rewards
                .insert(p, (key.clone(), reward(&o.action, o.recovered, o.time_to_recover_s)));
        }
        match self.who {
            Who::Learner => Self::proposals(self.core.on_outcome(o, o.judged_at)),
            Who::Oracle => {
                if let Some(p) = o.proposal_id {
                    self.oracle.done(o.env.as_str(), o.service.as_str(), p);
                }
                // The cure again while the incident (or another of the service) is open.
                let open: Vec<Incident> = self
                    .open
                    .values()
                    .filter(|i| i.env == o.env && i.service == o.service)
                    .cloned()
                    .collect();
                open.iter().filter_map(|i| self.oracle.propose(i, o.judged_at)).take(1).collect()
            }
        }
    }

    fn refusal(&mut self, r: &Refusal) -> Vec<ActionProposal> {
        *self.run.refusals.entry(r.reason.as_str().to_owned()).or_insert(0) += 1;
        match self.who {
            Who::Learner => Self::proposals(self.core.on_refusal(r, r.refused_at)),
            Who::Oracle => {
                self.oracle.done(r.env.as_str(), r.service.as_str(), r.proposal_id);
                Vec::new()
            }
        }
    }

    fn proposals(effects: Vec<Effect>) -> Vec<ActionProposal> {
        effects.into_iter().filter_map(Effect::into_proposal).collect()
    }

    /// Governance's gates on each proposal, the executor on what they approve.
    fn effects(
        &mut self,
        world: &mut World,
        proposals: Vec<ActionProposal>,
        now: Timestamp,
    ) -> Vec<Event> {
        let mut caused = Vec::new();
        for p in proposals {
            let key = format!("{}/{}", p.env, p.service);
            self.run.proposals += 1;
            self.run.exploratory += u64::from(p.exploratory);
            self.run.exploratory_in_prod += u64::from(p.exploratory && p.env.as_str() == "prod");
            self.run.without_propensity += u64::from(p.propensity.is_none());
            if p.require_human {
                self.run.escalations += 1;
            }
            self.firsts.entry(key.clone()).or_insert_with(|| p.action.clone());
            let verdict = {
                let view = View {
                    service: self.gov_services.get(&key),
                    incident: p.incident_id.and_then(|id| self.gov_incidents.get(&id)),
                };
                gates::decide(&self.policy, view, &p, now, GateMode::Proposal)
            };
            if self.trace {
                let v = match &verdict {
                    Verdict::Approve => "approved".to_owned(),
                    Verdict::Refuse { reason, .. } => format!("refused {reason}"),
                    Verdict::NeedsHuman { .. } => "to a human".to_owned(),
                };
                eprintln!(
                    "{now} proposal {key} {} conf {:.2} human {} -> {v}  [{}] p {}",
                    p.action,
                    p.confidence,
                    p.require_human,
                    p.explanation,
                    &p.proposal_id.to_string()[..8]
                );
            }
            match verdict {
                Verdict::Approve => {
                    if !gates::changes_nothing(&p.action) {
                        self.gov_services.entry(key.clone()).or_default().on_approved(
                            &p,
                            now,
                            &self.policy,
                        );
                        if let Some(id) = p.incident_id {
                            self.gov_incidents.entry(id).or_default().approved_actions += 1;
                        }
                    }
                    let (result, events) = execute(world, &p);
                    caused.extend(events);
                    let id = self.input_id();
                    let config = self.config.clone();
                    if let Some(d) = self.detectors.get_mut(&key) {
                        let out = d.on_executed(&result, &config, &id, "eval");
                        self.inputs.extend(out.incidents.into_iter().map(Input::Incident));
                        self.inputs
                            .extend(out.outcomes.into_iter().map(|(o, _)| Input::Outcome(o)));
                    }
                }
                Verdict::Refuse { reason, detail } => {
                    self.inputs.push(Input::Refusal(Refusal::of(
                        &p,
                        reason,
                        detail.to_string(),
                        now,
                    )));
                }
                // Nobody answers: a human has it.
                Verdict::NeedsHuman { .. } => {
                    if self.who == Who::Oracle {
                        self.oracle.done(p.env.as_str(), p.service.as_str(), p.proposal_id);
                    }
                }
            }
        }
        caused
    }
}

/// The executor's `sim` backend in process: the approved action goes to the world, at the time
/// of its last tick; returns the execution result and the events the action caused.
pub fn execute(world: &mut World, p: &ActionProposal) -> (ExecutionResult, Vec<Event>) {
    let at = world.now();
    let action = SimAction {
        proposal_id: p.proposal_id,
        env: p.env.clone(),
        service: p.service.clone(),
        action: p.action.clone(),
        params: p.params.clone(),
        issued_at: at,
    };
    let (status, detail, events) = match world.act(&action) {
        Ok(effect) => (ExecutionStatus::Executed, effect.summary, effect.events),
        Err(e) => (ExecutionStatus::Failed, e.to_string(), Vec::new()),
    };
    let result = ExecutionResult {
        proposal_id: p.proposal_id,
        approval_id: None,
        incident_id: p.incident_id,
        env: p.env.clone(),
        service: p.service.clone(),
        action: p.action.clone(),
        backend: Backend::Sim,
        status,
        refusal: None,
        exit_code: None,
        output_tail: None,
        detail,
        started_at: at,
        finished_at: at,
    };
    (result, events)
}

/// When the first episode starts: 2026-03-01T00:00:00Z, simulated time.
fn epoch() -> Timestamp {
    Timestamp::from_unix_nanos(1_772_323_200_000_000_000).unwrap_or_else(Timestamp::now)
}

/// Runs one world for one seed with the learner or the oracle.
pub fn run(
    spec: &WorldSpec,
    seed: u64,
    plan: &Plan,
    who: Who,
    policy: &Policy,
) -> anyhow::Result<Run> {
    let scenario = Scenario::parse(&spec.scenario, spec.name)?;
    let mut fleet = Fleet::new(who, spec, policy.clone());
    fleet.trace = plan.trace;
    for n in 0..plan.episodes {
        fleet.episode(spec, &scenario, seed, n, plan);
    }
    Ok(fleet.run)
}
