//! The simulator's bus shell: flags, the agent spec, and the handler that publishes due ticks
//! and applies `sim` actions. See the crate docs for how ticks are keyed and retried.

use std::collections::VecDeque;
use std::time::Duration;

use agent_runtime::store::{Store, Table};
use agent_runtime::{
    AgentSpec, Context, Due, HandleError, Handler, NoRequests, RuntimeArgs, RuntimeError,
};
use bus_schema::fleet::SimulatorInput;
use bus_schema::{SimAction, Timestamp, subject};
use tracing::{info, warn};

use crate::clock::{BEHIND_WALL_CLOCK, SimClock};
use crate::scenario::{Scenario, ScenarioError, check_speed};
use crate::world::{Event, Tick, World};

/// Ticks computed ahead of publishing at most (the runtime hands over 16 due items a second).
const MAX_PENDING: usize = 16;
/// Applied actions remembered, so a redelivered one is published again but not re-applied.
const REMEMBERED_ACTIONS: usize = 256;
/// Actions issued longer ago than this are left alone: they were meant for an earlier world.
const STALE_ACTION: Duration = Duration::from_secs(600);
/// The newest event time the simulator has published. A restart resumes after it: the
/// detector rejects a service's events older than what it has seen (`out_of_order`), so a
/// simulator starting `--lead` back again would flood the proof log with rejections.
const RESUME: Table<Timestamp> = Table::new("simulator.resume");
const NEWEST: &str = "newest";

/// A simulated world of services that publishes metric, deploy and log events and reacts to
/// the executor's `sim` actions.
#[derive(Debug, clap::Parser)]
#[command(name = "simulator", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub sim: Flags,
}

/// The simulator's own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// Scenario: a TOML file, or `demo` for the built-in one. Without it the simulator is
    /// idle: it publishes nothing and only reports actions for services it does not know.
    #[arg(long, env = "CN_SIM_SCENARIO")]
    pub scenario: Option<String>,

    /// Seed of the random model; overrides the scenario's.
    #[arg(long, env = "CN_SIM_SEED")]
    pub seed: Option<u64>,

    /// Simulated seconds per real second (until the simulation catches up with the wall
    /// clock); overrides the scenario's.
    #[arg(long, env = "CN_SIM_SPEED", value_parser = parse_speed)]
    pub speed: Option<f64>,

    /// How far behind the wall clock simulated time starts (e.g. 6h, 30m).
    #[arg(long, env = "CN_SIM_LEAD", default_value = "6h", value_parser = agent_runtime::config::parse_duration)]
    pub lead: Duration,

    /// Where simulated time starts (RFC 3339); overrides --lead. Never later than the wall
    /// clock minus 5 s.
    #[arg(long, env = "CN_SIM_START")]
    pub start: Option<Timestamp>,
}

fn parse_speed(s: &str) -> Result<f64, crate::scenario::SpeedFlagError> {
    use crate::scenario::SpeedFlagError;
    let speed: f64 = s
        .trim()
        .parse()
        .map_err(|source| SpeedFlagError::NotANumber { input: s.to_owned(), source })?;
    check_speed(speed)?;
    Ok(speed)
}

pub fn spec() -> AgentSpec {
    AgentSpec::new(bus_schema::fleet::simulator(), env!("CARGO_PKG_VERSION"))
}

/// A tick of the world, as due work: the run (its start, in seconds) and the tick's time. Its
/// events' message ids derive from it, so a tick published again is dropped as a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickKey {
    run: i64,
    at_s: i64,
}

impl std::fmt::Display for TickKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tick:{}:{}", self.run, self.at_s)
    }
}

/// The simulator's bus shell.
#[derive(Debug)]
pub struct Simulator {
    world: World,
    clock: SimClock,
    pending: VecDeque<(TickKey, Tick)>,
    applied: VecDeque<(String, Vec<Event>)>,
    caught_up: bool,
    /// The newest event time published, and whether the state file has it yet.
    newest: Option<Timestamp>,
    unsaved: bool,
    store: Option<Store>,
}

impl Simulator {
    /// The scenario the flags name, checked (`None` without `--scenario`).
    pub fn load_scenario(flags: &Flags) -> Result<Option<Scenario>, ScenarioError> {
        flags.scenario.as_deref().map(Scenario::load).transpose()
    }

    /// Where the last run left off: the newest event time it published (from the state file).
    pub fn resume_point(store: &Store) -> Result<Option<Timestamp>, RuntimeError> {
        store.get(&RESUME, NEWEST)
    }

    /// Keeps the newest event time published in `store`, for the next start.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The world of `scenario` as the flags adjust it, with its clock starting at `wall_now`:
    /// `--start`, else `--lead` before it, but never before `resume` (the last run's newest
    /// event), so no service ever gets an event older than one it was sent.
    pub fn start(
        flags: &Flags,
        scenario: Option<&Scenario>,
        wall_now: Timestamp,
        resume: Option<Timestamp>,
    ) -> Self {
        let from_lead = wall_now.minus(flags.lead);
        let (start, resumed) = match (flags.start, resume) {
            (Some(start), _) => (start, false),
            (None, Some(newest)) if newest >= from_lead => {
                let start = newest.plus(Duration::from_secs(1));
                info!(
                    resume_after = %newest,
                    "resuming after the last run's newest event (not --lead before now), so no service gets events older than it was sent, and without announcing the services' versions again; to play the scenario on a fleet that knows nothing yet, reset the data (scripts/up --fresh)"
                );
                (start, true)
            }
            _ => (from_lead, false),
        };
        let Some(scenario) = scenario else {
            info!("no scenario: idle");
            let clock = SimClock::new(start, wall_now, 1.0);
            return Self::new(World::empty(clock.start()), clock);
        };
        let seed = flags.seed.unwrap_or(scenario.seed);
        let speed = flags.speed.unwrap_or(scenario.speed);
        let clock = SimClock::new(start, wall_now, speed);
        info!(
            scenario = flags.scenario.as_deref().unwrap_or_default(), services = scenario.services.len(), seed, speed,
            tick_s = scenario.tick_s, start = %clock.start(), "simulating"
        );
        let world = match resumed {
            true => World::resumed(scenario, seed, clock.start()),
            false => World::new(scenario, seed, clock.start()),
        };
        Self::new(world, clock)
    }

    pub fn new(world: World, clock: SimClock) -> Self {
        Self {
            world,
            clock,
            pending: VecDeque::new(),
            applied: VecDeque::new(),
            caught_up: false,
            newest: None,
            unsaved: false,
            store: None,
        }
    }

    /// Publishes `events` and remembers the newest of their times.
    async fn publish(
        &mut self,
        ctx: &mut Context<'_>,
        events: &[Event],
    ) -> Result<(), HandleError> {
        if let Some(newest) = events.iter().map(Event::timestamp).max() {
            if self.newest.is_none_or(|n| newest > n) {
                self.newest = Some(newest);
                self.unsaved = true;
            }
        }
        for event in events {
            match event {
                Event::Deploy(e) => {
                    ctx.publish(&subject::DEPLOY_EVENTS.subject(&e.env, &e.service), e).await?
                }
                Event::Metric(e) => {
                    ctx.publish(&subject::METRIC_EVENTS.subject(&e.env, &e.service), e).await?
                }
                Event::Log(e) => {
                    ctx.publish(&subject::LOG_EVENTS.subject(&e.env, &e.service), e).await?
                }
            };
        }
        Ok(())
    }

    async fn on_action(
        &mut self,
        ctx: &mut Context<'_>,
        action: SimAction,
    ) -> Result<(), HandleError> {
        let input_id = ctx.meta().input_id.clone();
        if let Some((_, events)) = self.applied.iter().find(|(id, _)| *id == input_id) {
            let events = events.clone();
            return self.publish(ctx, &events).await;
        }
        if Timestamp::now().since(action.issued_at) > STALE_ACTION {
            info!(env = %action.env, service = %action.service, action = %action.action, issued_at = %action.issued_at, "ignoring a stale sim action");
            return Ok(());
        }
        let effect = match self.world.act(&action) {
            Ok(effect) => effect,
            Err(unknown) => {
                warn!(action = %action.action, proposal_id = %action.proposal_id, "sim action ignored: {unknown}");
                return Ok(());
            }
        };
        info!(
            env = %action.env, service = %action.service, action = %action.action, proposal_id = %action.proposal_id,
            sim_time = %self.world.now(), effect = %effect.summary, "action_applied"
        );
        if self.applied.len() >= REMEMBERED_ACTIONS {
            self.applied.pop_front();
        }
        self.applied.push_back((input_id, effect.events.clone()));
        self.publish(ctx, &effect.events).await
    }
}

impl Handler for Simulator {
    type Input = SimulatorInput;
    type Request = NoRequests;
    type Work = TickKey;

    async fn handle(
        &mut self,
        ctx: &mut Context<'_>,
        input: SimulatorInput,
    ) -> Result<(), HandleError> {
        match input {
            SimulatorInput::Action(action) => self.on_action(ctx, action).await,
        }
    }

    fn checkpoint(&mut self) -> Result<(), RuntimeError> {
        if let (true, Some(store), Some(newest)) = (self.unsaved, &self.store, self.newest) {
            store.put(&RESUME, NEWEST, &newest)?;
            self.unsaved = false;
        }
        Ok(())
    }

    fn due(&mut self, now: Timestamp) -> Vec<Due<TickKey>> {
        let sim_now = self.clock.now(now);
        if !self.caught_up
            && sim_now >= now.minus(BEHIND_WALL_CLOCK)
            && self.world.next_tick_at().is_some()
        {
            self.caught_up = true;
            info!(sim_time = %sim_now, "caught up with the wall clock; simulating in real time");
        }
        let run = self.world.start().unix_millis() / 1000;
        while self.pending.len() < MAX_PENDING {
            match self.world.next_tick_at() {
                Some(at) if at <= sim_now => {}
                _ => break,
            }
            let Some(tick) = self.world.step() else { break };
            let key = TickKey { run, at_s: tick.at.unix_millis() / 1000 };
            self.pending.push_back((key, tick));
        }
        self.pending
            .iter()
            .map(|(key, _)| Due { key: *key, correlation_id: format!("simulator:{key}") })
            .collect()
    }

    async fn handle_due(
        &mut self,
        ctx: &mut Context<'_>,
        due: Due<TickKey>,
    ) -> Result<(), HandleError> {
        let Some(i) = self.pending.iter().position(|(key, _)| *key == due.key) else {
            return Ok(());
        };
        let events = self.pending[i].1.events.clone();
        // On failure the tick stays pending and is published again, with the same ids.
        self.publish(ctx, &events).await?;
        ctx.confirm().await?;
        self.pending.remove(i);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(args: &[&str]) -> Flags {
        Cli::try_parse_from(std::iter::once("simulator").chain(args.iter().copied())).unwrap().sim
    }

    #[test]
    fn due_ticks_are_stable_bounded_and_never_ahead_of_the_wall_clock_minus_5s() {
        let wall: Timestamp = "2026-02-20T12:00:00Z".parse().unwrap();
        let f = flags(&["--scenario", "demo", "--lead", "1h", "--speed", "100"]);
        let scenario = Simulator::load_scenario(&f).unwrap();
        let mut sim = Simulator::start(&f, scenario.as_ref(), wall, None);
        assert!(sim.due(wall).len() == 1, "only the tick at the start is due at once");
        let later = wall.plus(Duration::from_secs(60));
        let due = sim.due(later);
        assert_eq!(due.len(), MAX_PENDING, "at most {MAX_PENDING} ticks wait to be published");
        assert_eq!(sim.due(later), due, "asking again hands out the same keys");
        let start_s = wall.minus(Duration::from_secs(3600)).unix_millis() / 1000;
        assert_eq!(due[0].key.to_string(), format!("tick:{start_s}:{start_s}"));
        // Publish everything as it falls due for two hours: no tick is stamped after wall - 5 s.
        for s in 60..7200 {
            let now = wall.plus(Duration::from_secs(s));
            sim.due(now);
            for (_, tick) in sim.pending.drain(..) {
                assert!(
                    tick.at <= now.minus(BEHIND_WALL_CLOCK),
                    "{} is ahead of {now} - 5 s",
                    tick.at
                );
            }
        }
        assert!(sim.caught_up);
    }

    /// A second run starts after the first one's newest event, not `--lead` back again, so the
    /// detector sees no service go back in time; a run long after starts `--lead` back as usual.
    #[test]
    fn a_restart_resumes_after_the_newest_event_it_published() {
        let wall: Timestamp = "2026-02-20T12:00:00Z".parse().unwrap();
        let f = flags(&["--scenario", "demo", "--lead", "6h"]);
        let scenario = Simulator::load_scenario(&f).unwrap();
        let newest = wall.minus(Duration::from_secs(60));
        let sim = Simulator::start(&f, scenario.as_ref(), wall, Some(newest));
        assert_eq!(sim.world.start(), newest.plus(Duration::from_secs(1)));
        let long_ago = wall.minus(Duration::from_secs(7 * 3600));
        let sim = Simulator::start(&f, scenario.as_ref(), wall, Some(long_ago));
        assert_eq!(sim.world.start(), wall.minus(Duration::from_secs(6 * 3600)));
        let explicit = flags(&["--scenario", "demo", "--start", "2026-02-20T09:00:00Z"]);
        let sim = Simulator::start(&explicit, scenario.as_ref(), wall, Some(newest));
        assert_eq!(sim.world.start(), "2026-02-20T09:00:00Z".parse().unwrap(), "--start wins");
    }

    #[test]
    fn flags_come_with_defaults_and_refuse_nonsense() {
        let f = flags(&[]);
        assert_eq!(
            (f.scenario, f.seed, f.speed, f.lead),
            (None, None, None, Duration::from_secs(6 * 3600))
        );
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("simulator").chain(args.iter().copied()))
        };
        assert!(parse(&["--speed", "0"]).is_err());
        assert!(parse(&["--lead", "soon"]).is_err());
        assert!(parse(&["--start", "yesterday"]).is_err());
        let idle = Simulator::start(&flags(&[]), None, Timestamp::now(), None);
        assert!(idle.world.next_tick_at().is_none());
    }
}
