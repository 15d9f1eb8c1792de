//! The faults a chaos run injects, and the ones it did not inject but saw.
//!
//! Every `kill_every` an agent (the simulator excepted; in shuffled rounds, so each is killed as
//! often as the others) gets SIGKILL and is started again 0.5–2 s later; nats-server gets
//! SIGKILL at evenly spread moments and is started again on the same port and store 3–8 s
//! later. An agent process that exits while nobody killed it is a *crash*: it is recorded with
//! its exit code and the end of its log, and started again so the run goes on.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agent_runtime::rng::Rng;

use super::Plan;
use crate::fleet::Fleet;

/// The agent the faults leave alone: it is the world, not the fleet under test.
const SPARED: &str = "simulator";
/// How long nats-server stays down, in seconds: long enough that publishes wait for it, and
/// some time out and are published again.
const NATS_DOWN: (f64, f64) = (3.0, 8.0);

/// One SIGKILL of an agent.
#[derive(Debug, Clone)]
pub struct Kill {
    pub agent: String,
    /// Seconds into the run.
    pub at_s: f64,
    /// How long it stayed down.
    pub down_ms: u64,
}

/// An agent process that exited on its own.
#[derive(Debug, Clone)]
pub struct Crash {
    pub agent: String,
    pub at_s: f64,
    /// 128 + the signal when a signal ended it.
    pub code: i32,
    pub log_tail: String,
}

#[derive(Debug)]
pub struct Faults {
    rng: Rng,
    started: Instant,
    kill_every: Duration,
    next_kill: Instant,
    /// The agents still to be killed in this round.
    round: Vec<String>,
    /// nats-server restarts still to do.
    nats_due: Vec<Instant>,
    /// While a nats-server is down: which (0 for one server) and when it is to start again.
    nats_back: Option<(usize, Instant)>,
    /// Agents we killed, and when each is to start again.
    down: BTreeMap<String, (Instant, usize)>,
    pub kills: Vec<Kill>,
    /// Seconds into the run when nats-server was killed, and how long it stayed down.
    pub nats_restarts: Vec<(f64, f64)>,
    pub crashes: Vec<Crash>,
}

impl Faults {
    pub fn new(plan: &Plan, started: Instant) -> Self {
        let n = plan.nats_restarts;
        let nats_due = (1..=n)
            .map(|i| started + plan.duration.mul_f64(f64::from(i) / f64::from(n + 1)))
            .collect();
        Self {
            rng: Rng::derive(plan.seed, "faults"),
            started,
            kill_every: plan.kill_every,
            next_kill: started + plan.kill_every,
            round: Vec::new(),
            nats_due,
            nats_back: None,
            down: BTreeMap::new(),
            kills: Vec::new(),
            nats_restarts: Vec::new(),
            crashes: Vec::new(),
        }
    }

    fn at_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Restarts what is due, records crashes, and — while `injecting` — kills what is due.
    pub fn tick(&mut self, fleet: &mut Fleet, injecting: bool) -> anyhow::Result<()> {
        self.check_crashes(fleet)?;
        self.nats_again(fleet, false)?;
        let now = Instant::now();
        let due: Vec<String> =
            self.down.iter().filter(|(_, (at, _))| *at <= now).map(|(a, _)| a.clone()).collect();
        for agent in due {
            self.start_again(fleet, &agent)?;
        }
        if !injecting {
            return Ok(());
        }
        if now >= self.next_kill {
            self.next_kill += self.kill_every;
            if let Some(victim) = self.next_victim(fleet) {
                fleet.agent(&victim)?.kill9();
                let back = now + Duration::from_secs_f64(self.rng.range(0.5, 2.0));
                self.kills.push(Kill { agent: victim.clone(), at_s: self.at_s(), down_ms: 0 });
                self.down.insert(victim, (back, self.kills.len() - 1));
            }
        }
        if self.nats_back.is_none() && self.nats_due.first().is_some_and(|at| *at <= now) {
            self.nats_due.remove(0);
            // On a cluster the nodes take turns.
            let node = self.nats_restarts.len() % fleet.nodes();
            fleet.node(node).kill();
            let back = now + Duration::from_secs_f64(self.rng.range(NATS_DOWN.0, NATS_DOWN.1));
            self.nats_back = Some((node, back));
            self.nats_restarts.push((self.at_s(), 0.0));
        }
        Ok(())
    }

    /// Starts nats-server again once its down time is over (or now, with `now`).
    fn nats_again(&mut self, fleet: &mut Fleet, now: bool) -> anyhow::Result<()> {
        if let Some((node, _)) = self.nats_back.filter(|(_, at)| now || *at <= Instant::now()) {
            self.nats_back = None;
            tokio::task::block_in_place(|| fleet.node(node).restart())?;
            if let Some((at_s, down_s)) = self.nats_restarts.last_mut() {
                *down_s = self.started.elapsed().as_secs_f64() - *at_s;
            }
        }
        Ok(())
    }

    /// The next agent in a shuffled round over the fleet, so that every agent is killed as
    /// often as the others; one that is still down is skipped.
    fn next_victim(&mut self, fleet: &Fleet) -> Option<String> {
        if self.round.is_empty() {
            self.round = fleet.agents.keys().filter(|a| a.as_str() != SPARED).cloned().collect();
            for i in (1..self.round.len()).rev() {
                self.round.swap(i, self.rng.below(i + 1));
            }
        }
        let at = self.round.iter().position(|a| !self.down.contains_key(a))?;
        Some(self.round.remove(at))
    }

    /// Starts every agent we killed again, now.
    pub fn restart_all(&mut self, fleet: &mut Fleet) -> anyhow::Result<()> {
        self.nats_again(fleet, true)?;
        let down: Vec<String> = self.down.keys().cloned().collect();
        for agent in down {
            self.start_again(fleet, &agent)?;
        }
        Ok(())
    }

    fn start_again(&mut self, fleet: &mut Fleet, agent: &str) -> anyhow::Result<()> {
        if let Some((_, kill)) = self.down.remove(agent) {
            let at_s = self.at_s();
            if let Some(k) = self.kills.get_mut(kill) {
                k.down_ms = ((at_s - k.at_s) * 1000.0) as u64;
            }
        }
        // restart() stops first, which is a no-op for a process that is gone.
        fleet.agent(agent)?.restart()
    }

    /// Records every agent that exited while nobody killed it, and starts it again.
    pub fn check_crashes(&mut self, fleet: &mut Fleet) -> anyhow::Result<()> {
        let names: Vec<String> =
            fleet.agents.keys().filter(|a| !self.down.contains_key(*a)).cloned().collect();
        for agent in names {
            let process = fleet.agent(&agent)?;
            if let Some(code) = process.exited() {
                let log = process.log();
                let lines: Vec<&str> = log.lines().collect();
                let log_tail = lines[lines.len().saturating_sub(15)..].join("\n");
                self.crashes.push(Crash {
                    agent: agent.clone(),
                    at_s: self.at_s(),
                    code,
                    log_tail,
                });
                process.restart()?;
            }
        }
        Ok(())
    }

    /// Kills per agent, for the report.
    pub fn kills_by_agent(&self) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for k in &self.kills {
            *by.entry(k.agent.clone()).or_insert(0) += 1;
        }
        by
    }
}
