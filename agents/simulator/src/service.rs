//! One simulated service: its versions, its failure and how actions change it (pure).
//!
//! A healthy service reports noise in normal ranges (error rate 0.001–0.004, p95 120–200 ms,
//! CPU 30–50 %, memory 40–60 %). Its failure starts `start_after_s` into the simulation.
//! Failures that come with a version (bad deploy, latency regression, memory leak, bad config,
//! deploy overload) start with a `succeeded` deploy of 1.2.0 and last while that version runs,
//! so a rollback cures them; the others are properties of the running service that only the
//! right action clears.
//!
//! What each action does to each failure:
//! - `restart` clears a crash loop (with the scenario's `restart_success` chance, else it
//!   crashes again), resets a leaking service's memory for a while (the leak goes on), makes
//!   an overload (`cpu_overload` or `deploy_overload`) worse for [`HARM_S`], and does nothing
//!   for a bad config: 1.2.0 crashes on it again.
//! - `scale_up` cures a `cpu_overload` and undoes a `scale_down`; a `deploy_overload` stays,
//!   since 1.2.0's CPU-bound hot path saturates the new replicas too. `scale_down` leaves less
//!   headroom, and makes an overload of either kind worse, until scaled up.
//! - `rollback` away from 1.2.0 cures every version-borne failure; rolling back to it brings
//!   the failure back. No action cures a `slowdown` or `flapping`; a `false_alarm` passes.
//!
//! A canary rollout splits each tick in two: `set_canary_weight` sends a share of the traffic
//! to the new version, and from then on the service reports a `stable` and a `canary` sample
//! per tick, each with its own noise, the canary's scaled by the scenario's canary factors.
//! Whatever befalls the service (overload, crash loop, a slow dependency…) shows in both, and
//! a version's factors scale it too. `promote` makes the new version the stable one and
//! `abort_rollout` sends all traffic back to the stable; neither publishes a deploy event,
//! since the deploy agent that drives the rollout reports those itself. The new version is
//! known by its factors only: promoting it does not change `version`, and a later rollback
//! does not undo it. Without a canary the service reports one sample, with no variant.

use bus_schema::{
    Action, ActionParams, DeployEvent, DeployStatus, Env, LogEvent, LogLevel, MetricSample,
    ServiceName, Timestamp, Variant,
};

use crate::rng::Rng;
use crate::scenario::{Failure, ServiceSpec};

/// One event the world publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Deploy(DeployEvent),
    Metric(MetricSample),
    Log(LogEvent),
}

impl Event {
    pub fn scope(&self) -> (&Env, &ServiceName) {
        match self {
            Event::Deploy(e) => (&e.env, &e.service),
            Event::Metric(e) => (&e.env, &e.service),
            Event::Log(e) => (&e.env, &e.service),
        }
    }

    /// When it happened, as its payload says.
    pub fn timestamp(&self) -> Timestamp {
        match self {
            Event::Deploy(e) => e.timestamp,
            Event::Metric(e) => e.timestamp,
            Event::Log(e) => e.timestamp,
        }
    }
}

/// The version every service runs at start, the one before it, and the one that brings a
/// version-borne failure.
pub const INITIAL_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];
pub const FAULTY_VERSION: &str = "1.2.0";
/// Memory at which a leaking service is OOM-killed in a loop.
pub const OOM_PERCENT: f64 = 97.0;
/// How long a wrong action makes things worse.
pub const HARM_S: u64 = 60;

/// How a version's error rate and latency compare with those of the version the service
/// started with.
#[derive(Debug, Clone, Copy, PartialEq)]
struct VersionFactors {
    error: f64,
    latency: f64,
}

impl VersionFactors {
    const BASELINE: Self = Self { error: 1.0, latency: 1.0 };
}

/// Error rate and p95 latency of one version in one tick.
#[derive(Debug, Clone, Copy)]
struct Reading {
    error: f64,
    p95: f64,
}

/// A service-wide effect on the error rate or the p95 latency: every variant feels it.
#[derive(Debug, Clone, Copy)]
enum Shift {
    ErrorTo(f64),
    ErrorAtLeast(f64),
    P95To(f64),
    P95Times(f64),
}

impl Reading {
    /// A healthy version's noise.
    fn draw(rng: &mut Rng) -> Self {
        let error = rng.range(0.001, 0.004);
        let p95 = rng.range(120.0, 200.0);
        Self { error, p95 }
    }

    fn shifted(mut self, shifts: &[Shift]) -> Self {
        for shift in shifts {
            match *shift {
                Shift::ErrorTo(e) => self.error = e,
                Shift::ErrorAtLeast(e) => self.error = self.error.max(e),
                Shift::P95To(p) => self.p95 = p,
                Shift::P95Times(k) => self.p95 *= k,
            }
        }
        self
    }

    fn scaled(self, by: VersionFactors) -> Self {
        Self { error: self.error * by.error, p95: self.p95 * by.latency }
    }
}

/// What every variant of a service reports alike in one tick.
struct Shared {
    at: Timestamp,
    cpu: f64,
    memory: f64,
    crash: bool,
    qps: f64,
    /// p99 as a multiple of p95.
    tail: f64,
}

/// A service and its state.
#[derive(Debug, Clone)]
pub struct ServiceSim {
    pub spec: ServiceSpec,
    rng: Rng,
    pub version: String,
    pub previous: Option<String>,
    faulty_version: Option<String>,
    announced: bool,
    triggered: bool,
    crash_loop: bool,
    overload: bool,
    /// Scaled down: less headroom until scaled up again.
    squeezed: bool,
    memory: f64,
    restarts: u32,
    spike_left: u8,
    flap_since: Option<u64>,
    harmed_until: u64,
    qps_base: f64,
    /// A dependency got slower: latency × `spec.slowdown_factor` from now on.
    slowed: bool,
    /// Share of the traffic, in percent, on the new version; 0 when no canary runs.
    canary_weight: u8,
    /// The stable version's factors: the new version's once a canary was promoted.
    stable: VersionFactors,
}

/// What an action did to a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    /// For the log line: what changed, in words.
    pub summary: String,
    pub events: Vec<Event>,
}

impl ServiceSim {
    pub fn new(spec: ServiceSpec, seed: u64) -> Self {
        let mut rng = Rng::derive(seed, &format!("{}/{}", spec.env, spec.name));
        let memory = rng.range(42.0, 50.0);
        let qps_base = rng.range(100.0, 800.0);
        Self {
            spec,
            rng,
            version: INITIAL_VERSIONS[1].to_owned(),
            previous: Some(INITIAL_VERSIONS[0].to_owned()),
            faulty_version: None,
            announced: false,
            triggered: false,
            crash_loop: false,
            overload: false,
            squeezed: false,
            memory,
            restarts: 0,
            spike_left: 0,
            flap_since: None,
            harmed_until: 0,
            qps_base,
            slowed: false,
            canary_weight: 0,
            stable: VersionFactors::BASELINE,
        }
    }

    /// The factors of the version a canary runs.
    fn canary_factors(&self) -> VersionFactors {
        VersionFactors {
            error: self.spec.canary_error_factor,
            latency: self.spec.canary_latency_factor,
        }
    }

    fn version_fault(&self) -> bool {
        self.faulty_version.as_deref() == Some(self.version.as_str())
    }

    /// Whether the version that brought `failure` runs.
    fn running_fault(&self, failure: Failure) -> bool {
        self.spec.failure == failure && self.version_fault()
    }

    fn leaking(&self) -> bool {
        self.running_fault(Failure::MemoryLeak)
    }

    /// 1.2.0 exits at start on its config: a crash loop that lasts while it runs.
    fn config_crashing(&self) -> bool {
        self.running_fault(Failure::BadConfig)
    }

    /// Overloaded, by load (`cpu_overload`) or by 1.2.0's CPU-bound hot path (`deploy_overload`).
    fn overloaded(&self) -> bool {
        self.overload || self.running_fault(Failure::DeployOverload)
    }

    fn deploy(
        &self,
        version: &str,
        previous: Option<&str>,
        status: DeployStatus,
        at: Timestamp,
    ) -> Event {
        Event::Deploy(DeployEvent {
            service: self.spec.name.clone(),
            env: self.spec.env.clone(),
            version: version.to_owned(),
            previous_version: previous.map(str::to_owned),
            commit_sha: None,
            status,
            timestamp: at,
            deployment_id: None,
        })
    }

    fn log(&self, level: LogLevel, message: String, at: Timestamp) -> Event {
        Event::Log(LogEvent {
            service: self.spec.name.clone(),
            env: self.spec.env.clone(),
            level,
            message,
            timestamp: at,
            source: Some("simulator".to_owned()),
        })
    }

    /// Starts the failure: called once, at `start_after_s`.
    fn trigger(&mut self, elapsed: u64, at: Timestamp, out: &mut Vec<Event>) {
        self.triggered = true;
        match self.spec.failure {
            Failure::Healthy => {}
            Failure::CrashLoop => self.crash_loop = true,
            Failure::CpuOverload => self.overload = true,
            Failure::FalseAlarm => self.spike_left = if self.rng.chance(0.5) { 1 } else { 2 },
            Failure::Flapping => self.flap_since = Some(elapsed),
            Failure::Slowdown => self.slowed = true,
            Failure::BadDeploy
            | Failure::LatencyRegression
            | Failure::MemoryLeak
            | Failure::BadConfig
            | Failure::DeployOverload => {
                let previous = std::mem::replace(&mut self.version, FAULTY_VERSION.to_owned());
                out.push(self.deploy(FAULTY_VERSION, Some(&previous), DeployStatus::Succeeded, at));
                self.previous = Some(previous);
                self.faulty_version = Some(FAULTY_VERSION.to_owned());
            }
        }
    }

    /// Marks the service as one the fleet already knows from an earlier run: it does not
    /// announce its versions again, since a deploy at the start of a resumed run would have
    /// the detector judge every later change as that deploy's regression.
    pub fn already_announced(&mut self) {
        self.announced = true;
    }

    /// The service's events for the tick `elapsed` simulated seconds into the run.
    pub fn step(&mut self, elapsed: u64, tick_s: u64, at: Timestamp) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.announced {
            // Two deploys, so governance knows the service and has a version to roll back to.
            self.announced = true;
            out.push(self.deploy(INITIAL_VERSIONS[0], None, DeployStatus::Succeeded, at));
            out.push(self.deploy(
                INITIAL_VERSIONS[1],
                Some(INITIAL_VERSIONS[0]),
                DeployStatus::Succeeded,
                at,
            ));
        }
        if !self.triggered
            && elapsed >= self.spec.start_after_s
            && self.spec.failure != Failure::Healthy
        {
            self.trigger(elapsed, at, &mut out);
        }
        let r = &mut self.rng;
        let stable = Reading::draw(r);
        let mut cpu = r.range(30.0, 50.0);
        let noise = r.range(-1.5, 1.5);
        let qps = self.qps_base * r.range(0.9, 1.1);
        let tail = r.range(1.3, 1.7);
        let roll = r.unit();
        // Drawn after the stable's, so a tick without a canary draws exactly what it always did.
        let canary = (self.canary_weight > 0).then(|| Reading::draw(r));
        let mut crash = false;
        let mut memory = if self.leaking() {
            self.memory =
                (self.memory + self.spec.leak_percent_per_min * tick_s as f64 / 60.0).min(99.0);
            self.memory + noise.min(0.9)
        } else {
            45.0 + noise * 4.0
        };
        let mut shifts: Vec<Shift> = Vec::new();
        let mut logs: Vec<(LogLevel, String)> = Vec::new();

        let (overloaded, config_crashing) = (self.overloaded(), self.config_crashing());
        if self.crash_loop || config_crashing {
            crash = true;
            shifts.push(Shift::ErrorTo(0.25 + roll * 0.15));
            if roll < 0.4 {
                let message = if config_crashing {
                    format!("config error: missing key `database.url` in {FAULTY_VERSION}; exiting")
                } else {
                    "container exited with code 1; back-off restarting failed container".to_owned()
                };
                logs.push((LogLevel::Error, message));
            }
        }
        if overloaded {
            cpu = 92.0 + roll * 7.0;
            shifts.push(Shift::P95To(600.0 + roll * 300.0));
            shifts.push(Shift::ErrorAtLeast(0.01 + roll * 0.02));
        }
        if self.squeezed {
            cpu = (cpu + 20.0).min(100.0);
            if overloaded {
                cpu = 99.0 + roll;
                shifts.push(Shift::ErrorAtLeast(0.08 + roll * 0.07));
            }
        }
        if self.version_fault() {
            match self.spec.failure {
                Failure::BadDeploy => {
                    shifts.push(Shift::ErrorAtLeast(0.08 + roll * 0.04));
                    if roll < 0.4 {
                        logs.push((
                            LogLevel::Error,
                            format!(
                                "unhandled exception in request handler (version {FAULTY_VERSION})"
                            ),
                        ));
                    }
                }
                Failure::LatencyRegression => shifts.push(Shift::P95To(1200.0 + roll * 400.0)),
                _ => {}
            }
        }
        if self.leaking() && self.memory >= 90.0 {
            if self.memory >= OOM_PERCENT {
                crash = true;
                shifts.push(Shift::ErrorAtLeast(0.05 + roll * 0.05));
                logs.push((
                    LogLevel::Error,
                    "Out of memory: container killed (OOMKilled)".to_owned(),
                ));
            } else if roll < 0.5 {
                logs.push((
                    LogLevel::Warn,
                    format!("memory usage at {:.0}% of the limit", self.memory),
                ));
            }
        }
        if self.spike_left > 0 {
            self.spike_left -= 1;
            shifts.push(Shift::ErrorTo(0.2 + roll * 0.1));
            shifts.push(Shift::P95To(1500.0 + roll * 1000.0));
        }
        if let Some(since) = self.flap_since {
            if (elapsed - since) / self.spec.flap_period_s % 2 == 0 {
                crash = true;
                shifts.push(Shift::ErrorAtLeast(0.1 + roll * 0.1));
            }
        }
        if elapsed <= self.harmed_until && self.harmed_until > 0 {
            cpu = 99.0 + roll;
            shifts.push(Shift::ErrorAtLeast(0.08 + roll * 0.04));
            shifts.push(Shift::P95Times(3.0));
        }
        if self.slowed {
            shifts.push(Shift::P95Times(self.spec.slowdown_factor));
        }
        if crash {
            self.restarts += 1;
        }
        memory = memory.clamp(0.0, 100.0);
        let shared = Shared { at, cpu: cpu.clamp(0.0, 100.0), memory, crash, qps, tail };
        let stable = stable.shifted(&shifts).scaled(self.stable);
        match canary {
            None => out.push(Event::Metric(self.sample(&shared, None, stable, 100))),
            Some(canary) => {
                let canary = canary.shifted(&shifts).scaled(self.canary_factors());
                let weight = self.canary_weight;
                out.push(Event::Metric(self.sample(
                    &shared,
                    Some(Variant::Stable),
                    stable,
                    100 - weight,
                )));
                out.push(Event::Metric(self.sample(
                    &shared,
                    Some(Variant::Canary),
                    canary,
                    weight,
                )));
            }
        }
        out.extend(logs.into_iter().map(|(level, message)| self.log(level, message, at)));
        out
    }

    /// The sample of one variant that serves `percent` of the traffic.
    fn sample(
        &self,
        shared: &Shared,
        variant: Option<Variant>,
        reading: Reading,
        percent: u8,
    ) -> MetricSample {
        MetricSample {
            service: self.spec.name.clone(),
            env: self.spec.env.clone(),
            error_rate: Some(reading.error.clamp(0.0, 1.0)),
            p95_latency_ms: Some(reading.p95),
            p99_latency_ms: Some(reading.p95 * shared.tail),
            cpu_percent: Some(shared.cpu),
            memory_percent: Some(shared.memory),
            crash_looping: Some(shared.crash),
            restarts: Some(self.restarts),
            // × 1.0 exactly at 100 %, so a tick without a canary reports what it always did.
            qps: Some(shared.qps * (f64::from(percent) / 100.0)),
            variant,
            timestamp: shared.at,
            source: Some("simulator".to_owned()),
        }
    }

    /// Applies an action `elapsed` simulated seconds into the run.
    pub fn act(
        &mut self,
        action: &Action,
        params: &ActionParams,
        elapsed: u64,
        at: Timestamp,
    ) -> Effect {
        let none = |summary: &str| Effect { summary: summary.to_owned(), events: Vec::new() };
        match action {
            Action::Noop | Action::Observe => none("nothing changes"),
            Action::Restart => {
                self.restarts += 1;
                if self.crash_loop {
                    // A certain restart draws nothing, so such a world replays as it always did.
                    let p = self.spec.restart_success;
                    if p >= 1.0 || self.rng.chance(p) {
                        self.crash_loop = false;
                        none("crash loop cleared")
                    } else {
                        none("restarted; it crashed again")
                    }
                } else if self.config_crashing() {
                    none(&format!("restarted; the bad config in {FAULTY_VERSION} crashes it again"))
                } else if self.leaking() {
                    self.memory = self.rng.range(42.0, 50.0);
                    none("memory back to baseline; the leak goes on")
                } else if self.overloaded() {
                    self.harmed_until = elapsed + HARM_S;
                    none("cold start under overload: worse for a minute")
                } else {
                    none("restarted; nothing else changes")
                }
            }
            Action::ScaleUp => {
                let was = (self.overload, self.squeezed);
                self.overload = false;
                self.squeezed = false;
                match was {
                    (true, _) => none("overload cured"),
                    (false, true) if self.overloaded() => none(&format!(
                        "capacity restored; {FAULTY_VERSION}'s hot loop still saturates it"
                    )),
                    (false, true) => none("capacity restored"),
                    _ if self.overloaded() => none(&format!(
                        "more replicas; {FAULTY_VERSION}'s hot loop saturates them too"
                    )),
                    _ => none("more replicas; nothing else changes"),
                }
            }
            Action::ScaleDown => {
                self.squeezed = true;
                if self.overloaded() {
                    none("less capacity under overload: worse until scaled up")
                } else {
                    none("less headroom: CPU higher until scaled up")
                }
            }
            Action::Rollback => self.rollback(params, at),
            Action::SetCanaryWeight => none(&self.set_canary_weight(params.canary_weight)),
            Action::Promote => none(&self.promote()),
            Action::AbortRollout => none(&self.abort_rollout()),
            _ => none("no effect in the simulation"),
        }
    }

    /// Sends `weight` percent of the traffic to the new version.
    fn set_canary_weight(&mut self, weight: Option<u8>) -> String {
        match weight {
            Some(weight @ 1..=99) => {
                self.canary_weight = weight;
                format!("canary at {weight} %")
            }
            Some(weight) => format!(
                "canary weight {weight} % is not in 1..=99 (abort_rollout and promote end a rollout); nothing changes"
            ),
            None => "no params.canary_weight given; nothing changes".to_owned(),
        }
    }

    /// Makes the canary's version the stable one.
    fn promote(&mut self) -> String {
        let weight = std::mem::take(&mut self.canary_weight);
        if weight == 0 {
            return "no canary running: nothing to promote".to_owned();
        }
        self.stable = self.canary_factors();
        format!("canary promoted: the new version takes all traffic (was at {weight} %)")
    }

    /// Sends all traffic back to the stable version.
    fn abort_rollout(&mut self) -> String {
        match std::mem::take(&mut self.canary_weight) {
            0 => "no canary running: nothing to abort".to_owned(),
            weight => format!("canary traffic to 0 % (was {weight} %)"),
        }
    }

    fn rollback(&mut self, params: &ActionParams, at: Timestamp) -> Effect {
        let Some(target) = params.target_version.clone().or_else(|| self.previous.clone()) else {
            return Effect { summary: "nothing to roll back to".to_owned(), events: Vec::new() };
        };
        if target == self.version {
            return Effect {
                summary: format!("already at {target}; nothing changes"),
                events: Vec::new(),
            };
        }
        let was_faulty = self.version_fault();
        let from = std::mem::replace(&mut self.version, target.clone());
        self.previous = Some(from.clone());
        if was_faulty && !self.version_fault() {
            self.memory = self.rng.range(42.0, 50.0);
        }
        let event = self.deploy(&target, Some(&from), DeployStatus::RolledBack, at);
        let summary = if was_faulty && !self.version_fault() {
            format!("rolled back {from} → {target}: the failure that came with {from} is gone")
        } else {
            format!("rolled back {from} → {target}; the failure was not in {from}")
        };
        Effect { summary, events: vec![event] }
    }
}
