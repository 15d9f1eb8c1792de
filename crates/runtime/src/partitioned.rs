//! One instance of a partitioned agent: it holds leases on a share of the service partitions
//! ([`crate::lease`]) and runs one [`Agent`] per partition it holds.
//!
//! Each partition's agent is the agent as it runs alone, limited to the partition's services:
//! its own consumers (`{agent}-{input}-p{n}`), state file (`{agent}-p{n}.redb` in the data
//! directory) and proof chain (`cn.proof.{agent}.p{n}`). Taking a partition over is therefore
//! what a restart after a crash is: the new holder opens the partition's state file, replays
//! what was handled after its last snapshot, and pulls on from the consumers' positions. So an
//! incident is not opened twice and a cooldown is not forgotten when a partition moves.
//!
//! Every tick (a second) the instance reads the leases and the members, writes its member
//! record and its leases, and follows the [`lease::plan`]: claims free partitions up to its
//! share, hands back those over it. A partition whose lease it could not write for the TTL
//! less two ticks is stopped, so it has stopped before another instance may take it.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use async_nats::jetstream;
use bus_schema::partition::{PARTITIONS, format_set};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::agent::{Agent, InPartition, RunSummary};
use crate::config::RuntimeArgs;
use crate::connect::FirstConnect;
use crate::error::RuntimeError;
use crate::handler::Handler;
use crate::lease::{self, Holder, Lease, LeaseStore, Member, View, WriteError};
use crate::spec::AgentSpec;
use crate::streams;

/// How often leases are read and written.
const TICK: Duration = Duration::from_secs(1);
/// How long a partition whose agent failed is left to the other instances.
const COOL_OFF: Duration = Duration::from_secs(10);
/// A partition is told to stop this long before its lease, unwritten, would expire.
const FENCE_MARGIN: Duration = Duration::from_secs(2);
/// The longest one lease read or write may take within a tick.
const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// A partition this instance holds.
struct Held {
    /// The lease's sequence after this instance's last write.
    seq: u64,
    /// When the partition must have been told to stop unless the lease is written again: the
    /// last successful write's send time plus the TTL less [`FENCE_MARGIN`]. Its watchdog
    /// reads it, so the fence does not wait for the tick's I/O.
    deadline: Rc<Cell<Instant>>,
    stop: CancellationToken,
    /// Started after the first renewal that follows the claim: on a cluster, two claims on
    /// one sequence can both be stored (nats-server#4320), and only one of them renews.
    task: Option<JoinHandle<Result<RunSummary, RuntimeError>>>,
}

/// A partition whose agent is stopping; `release_at` the lease sequence to hand back once it
/// has (none when the lease is already lost).
struct Stopping {
    task: Option<JoinHandle<Result<RunSummary, RuntimeError>>>,
    release_at: Option<u64>,
    /// Why it stops, for the log when it has.
    why: &'static str,
}

impl Stopping {
    fn finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

/// Builds a partition's handler from its started agent (its state file).
pub type MakeHandler<H> = dyn Fn(&Agent) -> Result<H, Box<dyn std::error::Error + Send + Sync>>;

/// Runs the instance until `shutdown`: then stops every partition's agent cleanly and hands
/// its leases back, so the other instances take them at once.
pub async fn run<H: Handler + 'static>(
    spec: AgentSpec,
    args: RuntimeArgs,
    make_handler: Rc<MakeHandler<H>>,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    args.validate()?;
    let me = Holder {
        instance: args.instance.to_string(),
        run: bus_schema::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        host: host_name(),
        pid: std::process::id(),
    };
    let name = format!("{}.{}", spec.name, me.instance);
    let inbox = bus_schema::subject::inbox_prefix(&spec.name);
    let client = args.nats.connect(&name, Some(&inbox), FirstConnect::Wait).await?;
    let js = jetstream::new(client.clone());
    loop {
        match streams::verify_streams(&js).await {
            Ok(()) => break,
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => warn!(error = %e, "waiting for the streams"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let leases = LeaseStore::new(js, spec.name.clone());
    // Without the server's mappings the partitions' consumers would match nothing, and every
    // service would go unwatched without a word.
    if !leases.server_partitions(&me.instance).await? {
        return Err(RuntimeError::Config(crate::config::ConfigError::Partitioning(
            "--partitioned: the NATS server does not add partition tokens to subjects; include deploy/partitions.conf in its config (`cnctl partitions mappings` renders it; scripts/up --instances does it) and reload it".to_owned(),
        )));
    }
    let mut instance = Instance {
        spec,
        args,
        me,
        leases,
        make_handler,
        view: View::default(),
        held: BTreeMap::new(),
        stopping: BTreeMap::new(),
        cooling: BTreeMap::new(),
    };
    info!(agent = %instance.spec.name, instance = %instance.me.instance, run = %instance.me.run, ttl = ?instance.args.lease_ttl, "partitioned instance started");
    let mut clock = tokio::time::interval(TICK);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = clock.tick() => instance.tick().await,
        }
    }
    instance.stop_all().await;
    let _ = client.drain().await;
    Ok(())
}

struct Instance<H: Handler + 'static> {
    spec: AgentSpec,
    args: RuntimeArgs,
    me: Holder,
    leases: LeaseStore,
    make_handler: Rc<MakeHandler<H>>,
    view: View,
    held: BTreeMap<u16, Held>,
    stopping: BTreeMap<u16, Stopping>,
    /// Partitions left alone until then (their agent failed here).
    cooling: BTreeMap<u16, Instant>,
}

impl<H: Handler + 'static> Instance<H> {
    fn lease(&self, partition: u16, held: bool) -> Lease {
        Lease {
            agent: self.spec.name.to_string(),
            partition,
            holder: held.then(|| self.me.clone()),
            ttl_ms: u64::try_from(self.args.lease_ttl.as_millis()).unwrap_or(u64::MAX),
            at: bus_schema::Timestamp::now(),
        }
    }

    /// When a lease written at `sent` stops covering this instance.
    fn deadline(&self, sent: Instant) -> Instant {
        sent + self.args.lease_ttl.saturating_sub(FENCE_MARGIN)
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        self.reap(now).await;
        self.renew().await;
        self.fence(Instant::now());
        if tokio::time::timeout(2 * IO_TIMEOUT, self.read(now)).await.is_err() {
            warn!("reading the leases took over {:?}; planning on what was read", 2 * IO_TIMEOUT);
        }
        self.announce(false).await;
        let held: BTreeSet<u16> = self.held.keys().copied().collect();
        let mut busy: BTreeSet<u16> = self.stopping.keys().copied().collect();
        busy.extend(self.cooling.keys().copied());
        let plan = lease::plan(&self.view, &self.me, &held, &busy, now, self.args.lease_ttl);
        for p in plan.release {
            self.stop(p, true, "handed over: more instances share the partitions now");
        }
        for (p, expected) in plan.claim {
            self.claim(p, expected).await;
        }
    }

    /// Tells a held partition's agent to stop; `release` hands the lease back once it has.
    fn stop(&mut self, p: u16, release: bool, why: &'static str) {
        if let Some(h) = self.held.remove(&p) {
            h.stop.cancel();
            let release_at = release.then_some(h.seq);
            self.stopping.insert(p, Stopping { task: h.task, release_at, why });
        }
    }

    /// Finished agents: hand back the leases of those released, note the failures.
    async fn reap(&mut self, now: Instant) {
        self.cooling.retain(|_, until| *until > now);
        let failed: Vec<u16> = self
            .held
            .iter()
            .filter(|(_, h)| h.task.as_ref().is_some_and(JoinHandle::is_finished))
            .map(|(p, _)| *p)
            .collect();
        for p in failed {
            // It stopped without being told: it failed. Hand it back for another instance.
            self.stop(p, true, "failed");
            self.cooling.insert(p, now + COOL_OFF);
        }
        let done: Vec<u16> =
            self.stopping.iter().filter(|(_, s)| s.finished()).map(|(p, _)| *p).collect();
        for p in done {
            let Some(s) = self.stopping.remove(&p) else { continue };
            let result = match s.task {
                Some(task) => Some(task.await),
                None => None,
            };
            match result {
                None => info!(partition = p, "partition {p} let go before it started ({})", s.why),
                Some(Ok(Ok(summary))) => info!(
                    partition = p,
                    processed = summary.processed,
                    "partition {p} stopped ({})",
                    s.why
                ),
                Some(Ok(Err(RuntimeError::ShuttingDown))) => {
                    info!(partition = p, "partition {p} stopped while starting ({})", s.why)
                }
                Some(Ok(Err(e))) => error!(partition = p, error = %e, "PARTITION {p} FAILED: {e}"),
                Some(Err(e)) => error!(partition = p, error = %e, "PARTITION {p} PANICKED"),
            }
            if self.cooling.contains_key(&p) {
                warn!(
                    partition = p,
                    "partition {p} is left to the other instances for {}s",
                    COOL_OFF.as_secs()
                );
            }
            if let Some(seq) = s.release_at {
                self.release(p, seq).await;
            }
        }
    }

    async fn release(&mut self, p: u16, seq: u64) {
        let subject = lease::partition_subject(&self.spec.name, p);
        let released = self.lease(p, false);
        let write = self.leases.write_if(&subject, &released, seq);
        match tokio::time::timeout(IO_TIMEOUT, write).await {
            Ok(Ok(_)) => info!(partition = p, "released partition {p}"),
            Ok(Err(WriteError::Conflict)) => {}
            Ok(Err(e)) => {
                warn!(partition = p, error = %e, "could not release partition {p}; another instance may take it once its lease is {:?} old", self.args.lease_ttl)
            }
            Err(_) => warn!(
                partition = p,
                "releasing partition {p} timed out; another instance may take it once its lease is {:?} old",
                self.args.lease_ttl
            ),
        }
    }

    /// Reads every partition's lease and every member record.
    async fn read(&mut self, now: Instant) {
        let reads = (0..PARTITIONS).map(|p| {
            let leases = self.leases.clone();
            async move { (p, leases.partition(p).await) }
        });
        for (p, read) in futures_util::future::join_all(reads).await {
            match read {
                Ok((seq, lease)) => self.view.saw_partition(p, seq, lease, now),
                Err(e) => warn!(partition = p, error = %e, "cannot read partition {p}'s lease"),
            }
        }
        match self.leases.members().await {
            Ok(members) => {
                for (instance, seq, member) in members {
                    // A record of this name by another run, written since the last read: another
                    // process was given the same --instance.
                    let changed = self.view.members.get(&instance).is_some_and(|m| m.seq != seq);
                    if instance == self.me.instance
                        && member.holder.run != self.me.run
                        && changed
                        && !member.leaving
                    {
                        error!(instance = %instance, other_pid = member.holder.pid, other_host = %member.holder.host, "ANOTHER PROCESS RUNS AS INSTANCE {instance} of {}: give each instance its own --instance", self.spec.name);
                    }
                    self.view.saw_member(&instance, seq, member, now);
                }
            }
            Err(e) => warn!(error = %e, "cannot read the other instances' member records"),
        }
    }

    async fn announce(&mut self, leaving: bool) {
        let member = Member {
            agent: self.spec.name.to_string(),
            holder: self.me.clone(),
            owns: self.held.keys().copied().collect(),
            ttl_ms: u64::try_from(self.args.lease_ttl.as_millis()).unwrap_or(u64::MAX),
            at: bus_schema::Timestamp::now(),
            leaving,
        };
        match tokio::time::timeout(IO_TIMEOUT, self.leases.announce(&member)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot write this instance's member record"),
            Err(_) => warn!("writing this instance's member record timed out"),
        }
    }

    /// Writes each held lease again, all at once; starts the partitions claimed last tick.
    async fn renew(&mut self) {
        let writes = self.held.iter().map(|(p, h)| {
            let (p, seq) = (*p, h.seq);
            let subject = lease::partition_subject(&self.spec.name, p);
            let lease = self.lease(p, true);
            let leases = self.leases.clone();
            async move {
                let sent = Instant::now();
                let written =
                    tokio::time::timeout(IO_TIMEOUT, leases.write_if(&subject, &lease, seq)).await;
                (p, sent, written)
            }
        });
        let results = futures_util::future::join_all(writes).await;
        for (p, sent, written) in results {
            match written {
                Ok(Ok(new)) => self.renewed(p, new, sent),
                Ok(Err(WriteError::Conflict)) => {
                    // Our own write whose ack was lost looks like someone else's: read it back.
                    match self.leases.partition(p).await {
                        Ok((seq, l)) if l.holder.as_ref().is_some_and(|h| h.run == self.me.run) => {
                            self.renewed(p, seq, sent);
                        }
                        _ => {
                            error!(
                                partition = p,
                                "LOST PARTITION {p}: another instance wrote its lease; stopping it here"
                            );
                            self.stop(p, false, "lost its lease");
                        }
                    }
                }
                Ok(Err(e)) => {
                    warn!(partition = p, error = %e, "cannot write partition {p}'s lease")
                }
                Err(_) => warn!(partition = p, "writing partition {p}'s lease timed out"),
            }
        }
    }

    /// A lease written again at `sent`, now at `seq`: the deadline moves, and a partition
    /// claimed on the last tick starts.
    fn renewed(&mut self, p: u16, seq: u64, sent: Instant) {
        let deadline = self.deadline(sent);
        let Some(h) = self.held.get_mut(&p) else { return };
        h.seq = seq;
        h.deadline.set(deadline);
        if h.task.is_none() {
            let part = InPartition { partition: p, holder: self.me.clone() };
            tokio::task::spawn_local(watchdog(p, h.deadline.clone(), h.stop.clone()));
            h.task = Some(tokio::task::spawn_local(run_partition(
                self.spec.clone(),
                self.args.clone(),
                part,
                h.stop.clone(),
                self.make_handler.clone(),
            )));
        }
    }

    /// Moves the partitions past their deadline (their watchdog has told them to stop) to
    /// those stopping.
    fn fence(&mut self, now: Instant) {
        let expired: Vec<u16> =
            self.held.iter().filter(|(_, h)| now >= h.deadline.get()).map(|(p, _)| *p).collect();
        for p in expired {
            self.stop(p, true, "its lease could not be written");
        }
    }

    async fn claim(&mut self, p: u16, expected: u64) {
        let subject = lease::partition_subject(&self.spec.name, p);
        let sent = Instant::now();
        let claimed = self.lease(p, true);
        let write = self.leases.write_if(&subject, &claimed, expected);
        match tokio::time::timeout(IO_TIMEOUT, write).await {
            Ok(Ok(seq)) => {
                match self.view.partitions.get(&p).and_then(|s| s.record.holder.clone()) {
                    Some(h) if h.run != self.me.run => {
                        info!(partition = p, from = %h.instance, "took partition {p} over from {} (its lease was not written for {:?})", h.instance, self.args.lease_ttl)
                    }
                    _ => info!(partition = p, "claimed partition {p}"),
                }
                let deadline = Rc::new(Cell::new(self.deadline(sent)));
                let stop = CancellationToken::new();
                self.held.insert(p, Held { seq, deadline, stop, task: None });
                info!(partitions = %format_set(&self.held.keys().copied().collect::<Vec<_>>()), "holding");
            }
            Ok(Err(WriteError::Conflict)) => {}
            Ok(Err(e)) => warn!(partition = p, error = %e, "cannot claim partition {p}"),
            Err(_) => warn!(partition = p, "claiming partition {p} timed out"),
        }
    }

    /// Stops every partition cleanly, hands the leases back and says it is leaving.
    async fn stop_all(&mut self) {
        let held: Vec<u16> = self.held.keys().copied().collect();
        for p in held {
            self.stop(p, true, "the instance stops");
        }
        for (p, s) in std::mem::take(&mut self.stopping) {
            if let Some(task) = s.task {
                match task.await {
                    Ok(Ok(_) | Err(RuntimeError::ShuttingDown)) => {}
                    Ok(Err(e)) => {
                        error!(partition = p, error = %e, "partition {p} did not stop cleanly")
                    }
                    Err(e) => error!(partition = p, error = %e, "partition {p} panicked"),
                }
            }
            if let Some(seq) = s.release_at {
                self.release(p, seq).await;
            }
        }
        self.announce(true).await;
        info!(agent = %self.spec.name, instance = %self.me.instance, "partitioned instance stopped; its partitions are released");
    }
}

/// Tells a partition to stop once its deadline passes unmoved: independent of the tick, so a
/// tick held up by slow lease I/O does not hold the fence up.
async fn watchdog(p: u16, deadline: Rc<Cell<Instant>>, stop: CancellationToken) {
    loop {
        let at = deadline.get();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(at) => {}
        }
        if Instant::now() >= deadline.get() {
            error!(
                partition = p,
                "PARTITION {p} STOPPED: its lease could not be written in time; another instance may take it over"
            );
            stop.cancel();
            return;
        }
    }
}

/// One partition's agent, from start to stop.
async fn run_partition<H: Handler + 'static>(
    spec: AgentSpec,
    args: RuntimeArgs,
    part: InPartition,
    stop: CancellationToken,
    make_handler: Rc<MakeHandler<H>>,
) -> Result<RunSummary, RuntimeError> {
    let p = part.partition;
    let agent = Agent::start_in_partition(spec, args, part, stop).await?;
    let handler = make_handler(&agent).map_err(|e| {
        RuntimeError::Service(format!("partition {p}: cannot start the handler: {e}"))
    })?;
    agent.run(handler).await
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}
