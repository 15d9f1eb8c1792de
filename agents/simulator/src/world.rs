//! The simulated world (pure): services that sample every tick and react to actions.
//!
//! [`World::step`] advances one tick of `tick_s` simulated seconds and returns that tick's
//! events, stamped with the tick's simulated time; [`World::act`] applies an executed `sim`
//! action at the time of the last tick. Everything random comes from the scenario's seed, so
//! the same scenario, seed and actions give the same events. What each failure looks like and
//! what each action does to it is in [`crate::service`].

use std::time::Duration;

use bus_schema::{Env, ServiceName, SimAction, Timestamp};

use crate::scenario::Scenario;
pub use crate::service::Event;
use crate::service::{Effect, ServiceSim};

/// One tick's events.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub at: Timestamp,
    pub events: Vec<Event>,
}

/// An action for a service the scenario does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{env}/{service} is not a service of this simulation")]
pub struct UnknownService {
    pub env: Env,
    pub service: ServiceName,
}

/// The simulated services and the simulated time they have reached.
#[derive(Debug, Clone)]
pub struct World {
    start: Timestamp,
    tick_s: u64,
    duration_s: Option<u64>,
    /// Simulated seconds since `start` of the next tick.
    next: u64,
    services: Vec<ServiceSim>,
}

impl World {
    /// The scenario's services, starting at `start`, seeded with `seed`.
    pub fn new(scenario: &Scenario, seed: u64, start: Timestamp) -> Self {
        let services = scenario.services.iter().map(|s| ServiceSim::new(s.clone(), seed)).collect();
        Self { start, tick_s: scenario.tick_s, duration_s: scenario.duration_s, next: 0, services }
    }

    /// The scenario's world for a simulation that resumes an earlier run on the same data:
    /// it plays the scenario from its start but does not announce the services' versions
    /// again, since the fleet kept them (a deploy at the resumed start would have the
    /// detector judge every later change as that deploy's regression).
    pub fn resumed(scenario: &Scenario, seed: u64, start: Timestamp) -> Self {
        let mut world = Self::new(scenario, seed, start);
        world.services.iter_mut().for_each(ServiceSim::already_announced);
        world
    }

    /// A world with no services: it publishes nothing and knows no service.
    pub fn empty(start: Timestamp) -> Self {
        Self { start, tick_s: 10, duration_s: None, next: 0, services: Vec::new() }
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// When the next tick falls due; `None` when there is nothing to simulate (no services,
    /// or the scenario's duration is over).
    pub fn next_tick_at(&self) -> Option<Timestamp> {
        if self.services.is_empty() || self.duration_s.is_some_and(|d| self.next > d) {
            return None;
        }
        Some(self.start.plus(Duration::from_secs(self.next)))
    }

    /// Simulated time of the last tick (the start before the first).
    pub fn now(&self) -> Timestamp {
        self.start.plus(Duration::from_secs(self.elapsed()))
    }

    fn elapsed(&self) -> u64 {
        self.next.saturating_sub(self.tick_s)
    }

    /// Advances one tick; `None` when there is nothing to simulate.
    pub fn step(&mut self) -> Option<Tick> {
        let at = self.next_tick_at()?;
        let (elapsed, tick_s) = (self.next, self.tick_s);
        let events = self.services.iter_mut().flat_map(|s| s.step(elapsed, tick_s, at)).collect();
        self.next += self.tick_s;
        Some(Tick { at, events })
    }

    /// Applies an executed action to its service, at the time of the last tick.
    pub fn act(&mut self, action: &SimAction) -> Result<Effect, UnknownService> {
        let (elapsed, at) = (self.elapsed(), self.now());
        let service = self
            .services
            .iter_mut()
            .find(|s| s.spec.env == action.env && s.spec.name == action.service)
            .ok_or_else(|| UnknownService {
                env: action.env.clone(),
                service: action.service.clone(),
            })?;
        Ok(service.act(&action.action, &action.params, elapsed, at))
    }
}
