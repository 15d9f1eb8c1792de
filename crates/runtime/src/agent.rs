//! An agent's life: start, pull inputs, handle them one at a time, stop gracefully.
//!
//! [`Agent::start`] connects, checks the streams' settings against the contract (waiting for
//! them to be created; refusing to run on a weakened one), opens the state file and the proof
//! chain. [`Agent::run`] records `agent_started`, pulls from every declared input, and for each
//! message: decodes it (bad input → `event_rejected`, acked), hands it to the handler, and acks
//! it only after the handler's outputs and records are stored. Transient failures are retried
//! with back-off; on the last allowed attempt the input is rejected as poison so it never
//! blocks what comes after it. When the shutdown token fires it stops pulling, finishes the
//! input in hand (within the grace period), hands back what it had buffered, records
//! `agent_stopped` and drains the connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use bus_schema::codec::Limits;
use bus_schema::fleet::InputDef;
use bus_schema::inputs::{AgentInputs, AgentRequests};
use bus_schema::proof::ProofKind;
use bus_schema::{InstanceId, headers};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::RuntimeArgs;
use crate::connect::FirstConnect;
use crate::consumer::{Delivery, DeliveryPolicy, Puller, Recreated, ensure_consumer, read_back};
use crate::delivery::{Processor, Stored, id_header};
use crate::error::RuntimeError;
use crate::handler::{Context, HandleError, Handler, InputMeta};
use crate::position::{POSITIONS, Positions};
use crate::proof::{ProofDraft, ProofWriter};
use crate::publish::Publisher;
use crate::spec::AgentSpec;
use crate::status::{Stats, StatusTasks};
use crate::store::Store;
use crate::streams;

/// An input read back from its stream for a replay.
struct Replayed {
    input: &'static str,
    stream: &'static str,
    epoch: Arc<str>,
    /// The consumer had it acked: handled to the end before the crash.
    acked: bool,
    msg: jetstream::message::StreamMessage,
}

/// The snapshot the last replay started from, and how many starts replayed from it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ReplayAttempt {
    from: String,
    attempt: u32,
}

const REPLAYS: crate::store::Table<ReplayAttempt> = crate::store::Table::new("runtime.replays");
/// Present when the last run stopped cleanly, with a final snapshot.
const CLEAN_STOP: crate::store::Table<bool> = crate::store::Table::new("runtime.clean_stop");

/// How often an agent is asked for work that fell due by the clock.
const DUE_EVERY: Duration = Duration::from_secs(1);
/// Due items handled per tick at most.
const DUE_PER_TICK: usize = 16;
/// Requests waiting for the handler; beyond this the listener waits (requesters time out).
const REQUEST_BACKLOG: usize = 64;

/// Passes a subscription's requests to the agent's loop until shutdown.
async fn forward_requests(
    index: usize,
    mut sub: async_nats::Subscriber,
    tx: mpsc::Sender<(usize, async_nats::Message)>,
    stop: CancellationToken,
) {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        if tx.send((index, msg)).await.is_err() {
            break;
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    pub processed: u64,
    pub rejected: u64,
    /// False when the grace period ran out before shutdown finished.
    pub clean: bool,
}

/// A started agent, ready to run a handler.
#[derive(Debug)]
pub struct Agent {
    spec: AgentSpec,
    args: RuntimeArgs,
    instance: InstanceId,
    client: async_nats::Client,
    publisher: Publisher,
    store: Store,
    proof: ProofWriter,
    stats: Arc<Stats>,
    /// Where each input stands, shared with its puller.
    positions: Arc<Positions>,
    shutdown: CancellationToken,
    /// Set for one partition run by an instance of a partitioned agent.
    partition: Option<InPartition>,
}

/// The partition an agent runs, and the instance that holds its lease.
#[derive(Debug, Clone)]
pub struct InPartition {
    pub partition: u16,
    pub holder: crate::lease::Holder,
}

impl Agent {
    /// Starts one partition of a partitioned agent, for the instance that holds its lease:
    /// the partition's own proof chain and state file (`{agent}-p{n}`), and consumers that read
    /// only its services (`{agent}-{input}-p{n}`). A state file another process still has
    /// open (the previous holder, stopping) is waited for.
    pub async fn start_in_partition(
        spec: AgentSpec,
        mut args: RuntimeArgs,
        part: InPartition,
        shutdown: CancellationToken,
    ) -> Result<Self, RuntimeError> {
        // The partition runs as the agent alone would; its instance holds the lease.
        args.partitioned = false;
        args.instance = format!("p{}", part.partition)
            .parse()
            .map_err(|e| RuntimeError::Service(format!("partition instance id: {e}")))?;
        let mut waited = Duration::ZERO;
        loop {
            match Self::start(spec.clone(), args.clone(), shutdown.clone()).await {
                Ok(mut agent) => {
                    agent.partition = Some(part);
                    return Ok(agent);
                }
                Err(RuntimeError::StoreInUse { path }) if waited < args.shutdown_grace * 2 => {
                    info!(%path, "the partition's previous holder still has its state file open; waiting");
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(RuntimeError::ShuttingDown),
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                    waited += Duration::from_millis(250);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Validates the configuration, connects (waiting for NATS if it is not up yet), checks
    /// the streams, opens the state file and the proof chain.
    pub async fn start(
        spec: AgentSpec,
        args: RuntimeArgs,
        shutdown: CancellationToken,
    ) -> Result<Self, RuntimeError> {
        args.validate()?;
        let instance = args.instance.clone();
        let name = format!("{}.{}", spec.name, instance);
        let inbox = bus_schema::subject::inbox_prefix(&spec.name);
        let client = args.nats.connect(&name, Some(&inbox), FirstConnect::Wait).await?;
        if client.connection_state() != async_nats::connection::State::Connected {
            info!(nats_url = %args.nats.urls(), "waiting for NATS");
        }
        let js = jetstream::new(client.clone());
        retry_until_ready(&shutdown, "JetStream streams", || streams::verify_streams(&js)).await?;
        let store = Store::open(&args.data_dir.join(format!("{}-{}.redb", spec.name, instance)))?;
        let publisher = Publisher::new(client.clone(), js);
        let proof = retry_until_ready(&shutdown, "the proof chain", || {
            ProofWriter::open(publisher.clone(), store.clone(), spec.name.clone(), instance.clone())
        })
        .await?;
        let stats = Arc::new(Stats::new(proof.head().seq));
        Ok(Self {
            spec,
            args,
            instance,
            client,
            publisher,
            store,
            proof,
            stats,
            positions: Arc::default(),
            shutdown,
            partition: None,
        })
    }

    /// Answers one core request through the handler. Bad input is recorded as
    /// `event_rejected` like any input and answered with a `Cn-Error` header and a JSON body
    /// saying why; `Err` means the agent must stop.
    async fn answer<H: Handler>(
        &mut self,
        handler: &mut H,
        inputs: &[InputDef],
        (index, msg): (usize, async_nats::Message),
    ) -> Result<(), RuntimeError> {
        let Some(reply_to) = msg.reply.clone() else {
            warn!(subject = %msg.subject, "a request without a reply subject; ignoring it");
            return Ok(());
        };
        let header = |name: &str| {
            msg.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned())
        };
        let id_header = |name: &str| id_header(msg.headers.as_ref(), name);
        // A retried request carries the same Nats-Msg-Id and body: the same input id, so its
        // records and outputs are de-duplicated like a redelivered input's. A different request
        // reusing the id is a different input (the digest of subject and body tells them apart),
        // so it cannot hide behind the first one's record.
        let digest = bus_schema::proof::ProofHash::of(
            &[msg.subject.as_bytes(), b"\n", &msg.payload].concat(),
        )
        .to_hex();
        let id = format!(
            "request:{}:{}",
            id_header(headers::MSG_ID).unwrap_or_else(|| bus_schema::Uuid::new_v4().to_string()),
            &digest[..16]
        );
        let meta = InputMeta {
            input: "",
            subject: msg.subject.to_string(),
            stream: "core".to_owned(),
            stream_seq: 0,
            delivered: 1,
            input_id: id.clone(),
            message_id: id_header(headers::MSG_ID).unwrap_or_else(|| id.clone()),
            correlation_id: id_header(headers::CORRELATION_ID)
                .or_else(|| id_header(headers::MSG_ID))
                .unwrap_or(id),
            traceparent: id_header(headers::TRACEPARENT).and_then(|v| v.parse().ok()),
        };
        if let Some(tp) = meta.traceparent {
            self.publisher.remember_trace(&meta.correlation_id, tp);
        }
        let limits =
            Limits { max_payload: usize::try_from(self.args.max_payload).unwrap_or(usize::MAX) };
        let request = H::Request::decode(
            index,
            &meta.subject,
            header(headers::CONTENT_TYPE).as_deref(),
            &msg.payload,
            &limits,
        )
        .map_err(|e| HandleError::Reject { reason: e.reason(), message: e.to_string() });
        let mut ctx = self.context(inputs, &meta);
        let result = match request {
            // The reply says it is done: only once what the handler sent is stored (and a
            // rejection's record below does not wait on a record of the handler's).
            Ok(request) => {
                let handled = handler.respond(&mut ctx, request).await;
                ctx.conclude(handled).await
            }
            Err(e) => Err(e),
        };
        let (payload, reply_headers) = match result {
            Ok(reply) => {
                let mut h = async_nats::HeaderMap::new();
                h.insert(headers::CONTENT_TYPE, reply.content_type);
                h.insert(headers::CN_TYPE, reply.cn_type);
                (reply.payload, h)
            }
            Err(HandleError::Fatal(e)) => return Err(e),
            Err(e) => {
                let (reason, message) = match &e {
                    HandleError::Reject { reason, message } => (reason.as_str(), message.clone()),
                    other => ("retry", other.to_string()),
                };
                let mut reason = reason.to_owned();
                let mut message = message;
                if let HandleError::Reject { reason: why, message: said } = &e {
                    let draft = ProofDraft::new(ProofKind::EventRejected)
                        .reason(why.as_str())
                        .correlation(meta.correlation_id.clone())
                        .scope_of_subject(&meta.subject)
                        .detail(json!({"subject": meta.subject, "error": said, "message_id": meta.message_id, "size": msg.payload.len()}));
                    let key = format!("{}:rejected", meta.input_id);
                    match self.proof.append(draft, Some(&key)).await {
                        Ok(_) => {}
                        Err(e) if e.is_fatal() => return Err(e),
                        // Not recorded (the bus is busy, e.g. a cluster electing a leader): the
                        // requester is told to try again rather than refused without a record.
                        Err(e) => {
                            warn!(error = %e, "could not record a request's rejection; asking the requester to retry");
                            reason = "retry".to_owned();
                            message = format!("could not record the rejection ({e}); try again");
                        }
                    }
                }
                let mut h = async_nats::HeaderMap::new();
                h.insert(headers::CONTENT_TYPE, headers::JSON);
                h.insert(headers::ERROR, reason.as_str());
                (
                    serde_json::to_vec(&json!({"error": reason, "message": message}))
                        .unwrap_or_default(),
                    h,
                )
            }
        };
        if let Err(e) =
            self.client.publish_with_headers(reply_to, reply_headers, payload.into()).await
        {
            warn!(error = %e, "could not send a reply");
        }
        Ok(())
    }

    /// Hands the handler's due work to it, one item at a time. A failed item is logged and
    /// asked for again on the next tick; `Err` means the agent must stop.
    async fn run_due<H: Handler>(
        &mut self,
        handler: &mut H,
        inputs: &[InputDef],
    ) -> Result<(), RuntimeError> {
        // A few items per tick, so inputs are not held up; the first failure ends the tick.
        for due in handler.due(bus_schema::Timestamp::now()).into_iter().take(DUE_PER_TICK) {
            let meta = due.meta();
            let mut ctx = self.context(inputs, &meta);
            let handled = handler.handle_due(&mut ctx, due.clone()).await;
            match ctx.conclude(handled).await {
                Ok(()) => {}
                Err(HandleError::Fatal(e)) => return Err(e),
                Err(e) => {
                    warn!(key = %due.key, error = %e, "due work failed; trying again on the next tick");
                    break;
                }
            }
        }
        Ok(())
    }

    /// Records on the proof log that a lost consumer was recreated, and from where.
    async fn record_recreated(&mut self, r: &Recreated) -> Result<(), RuntimeError> {
        let draft = ProofDraft::new(ProofKind::ConsumerRecreated).reason(r.reason).detail(json!({
            "consumer": r.consumer,
            "stream": r.stream,
            "from_seq": r.from_seq,
        }));
        self.proof.append(draft, None).await?;
        self.stats.proof_seq.store(self.proof.head().seq, Ordering::Relaxed);
        Ok(())
    }

    /// The handler's view of the runtime for one request or item of due work.
    fn context<'a>(&'a mut self, inputs: &'a [InputDef], meta: &'a InputMeta) -> Context<'a> {
        Context::new(
            &self.spec.name,
            inputs,
            meta,
            &self.publisher,
            &mut self.proof,
            &self.positions,
        )
    }

    /// Takes a snapshot of the state file: the handler writes what it keeps in memory, and one
    /// durable commit covers it, everything written since the last snapshot, and the stream
    /// positions of the inputs handled so far (see [`crate::store`]).
    fn snapshot<H: Handler>(
        &self,
        handler: &mut H,
        positions: &Positions,
    ) -> Result<(), RuntimeError> {
        handler.checkpoint()?;
        let changed = positions.take_changed();
        self.store.snapshot(!changed.is_empty(), |tx| {
            for (durable, position) in &changed {
                tx.put(&POSITIONS, durable, position)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// What handles one input (live or replayed) for this agent.
    fn processor<'a>(
        &'a mut self,
        inputs: &'a [InputDef],
        limits: &'a Limits,
        policy: DeliveryPolicy,
    ) -> Processor<'a> {
        Processor {
            agent: &self.spec.name,
            inputs,
            publisher: &self.publisher,
            proof: &mut self.proof,
            stats: &self.stats,
            limits,
            policy,
            positions: &self.positions,
        }
    }

    /// How many starts in a row replayed from the snapshot this start replays from (1 for the
    /// first), counted on disk before the replay begins.
    fn replay_attempt(
        &self,
        snapshot: &std::collections::HashMap<String, crate::position::Position>,
    ) -> Result<u32, RuntimeError> {
        let mut from: Vec<String> =
            snapshot.iter().map(|(d, p)| format!("{d}@{}:{}", p.epoch, p.next)).collect();
        from.sort();
        let from = from.join(",");
        self.store.write_durably(|tx| {
            let attempt = match tx.get(&REPLAYS, "last")? {
                Some(r) if r.from == from => r.attempt.saturating_add(1),
                _ => 1,
            };
            tx.put(&REPLAYS, "last", &ReplayAttempt { from: from.clone(), attempt })?;
            Ok(attempt)
        })
    }

    /// Records `agent_started`, stored before anything is handled. A bus that cannot take it
    /// yet (a cluster electing a stream leader after losing a server answers "no stream") is
    /// waited for, as at start-up; only what makes going on unsafe stops the agent.
    async fn record_started(&mut self, started: ProofDraft) -> Result<(), RuntimeError> {
        let mut delay = Duration::from_millis(250);
        loop {
            let stored = match self.proof.append(started.clone(), None).await {
                Ok(_) => self.proof.flush().await,
                Err(e) => Err(e),
            };
            match stored {
                Ok(()) => return Ok(()),
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => warn!(error = %e, retry_in = ?delay, "waiting to record agent_started"),
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(RuntimeError::ShuttingDown),
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// The agent's state file, for its handler.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs until the shutdown token fires (or a fatal error, such as another process writing
    /// this instance's proof chain, stops it).
    pub async fn run<H: Handler>(mut self, mut handler: H) -> Result<RunSummary, RuntimeError> {
        let inputs = match &self.partition {
            None => H::Input::defs(),
            Some(part) => H::Input::defs()
                .iter()
                .map(|i| {
                    i.in_partition(part.partition).ok_or_else(|| {
                        RuntimeError::Service(format!(
                            "input {} ({}) cannot be split by service: this agent cannot run partitioned",
                            i.name, i.filter
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let durables: Vec<String> = inputs.iter().map(|i| i.durable(&self.spec.name)).collect();
        let mut detail = json!({
            "version": self.spec.version,
            "inputs": inputs.iter().map(|i| i.filter.pattern()).collect::<Vec<_>>(),
            "consumers": durables,
            "pid": std::process::id(),
        });
        if let Some(part) = &self.partition {
            detail["partition"] = json!(part.partition);
            detail["holder"] = json!(part.holder);
        }
        let started = ProofDraft::new(ProofKind::AgentStarted).detail(detail);
        self.record_started(started).await?;
        self.stats.proof_seq.store(self.proof.head().seq, Ordering::Relaxed);
        info!(agent = %self.spec.name, instance = %self.instance, "started");

        let policy =
            DeliveryPolicy { max_attempts: self.args.max_attempts, ack_wait: self.args.ack_wait };
        let pulling = self.shutdown.child_token();
        let (tx, mut rx) = mpsc::channel::<Delivery>(1);
        let (events_tx, mut events) = mpsc::unbounded_channel::<Recreated>();
        let positions = self.positions.clone();
        let stored: std::collections::HashMap<String, _> =
            self.store.scan(&POSITIONS)?.into_iter().collect();
        // A clean stop's snapshot covers everything the agent handled: nothing to replay. The
        // mark is cleared on disk before anything is handled, so a crash from here on replays.
        let stopped_cleanly = self.store.get(&CLEAN_STOP, "last")?.is_some();
        if stopped_cleanly {
            self.store.write_durably(|tx| tx.remove(&CLEAN_STOP, "last"))?;
        }
        let mut pullers = Vec::new();
        let mut replays = Vec::new();
        for input in inputs.clone() {
            let input = &input;
            // A cluster electing leaders after losing a server times out for a few seconds.
            let js = self.publisher.jetstream().clone();
            let durable = input.durable(&self.spec.name);
            let found = retry_until_ready(&self.shutdown, "the input's consumer", || {
                ensure_consumer(
                    &js,
                    &self.spec.name,
                    input,
                    policy,
                    stored.get(&durable),
                    &positions,
                )
            })
            .await?;
            if let Some(range) = found.replay.filter(|_| !stopped_cleanly) {
                let read = read_back(self.publisher.jetstream(), input, range).await?;
                let acked = range.acked;
                replays.extend(read.into_iter().map(|m| Replayed {
                    input: input.name,
                    stream: input.stream().map_or("", |s| s.name()),
                    epoch: found.epoch.clone(),
                    acked: m.sequence <= acked,
                    msg: m,
                }));
            }
            if let Some(r) = found.recreated.clone() {
                warn!(consumer = %r.consumer, from_seq = r.from_seq, "CONSUMER RECREATED: {} was missing at start; recreated from stream sequence {}", r.consumer, r.from_seq);
                self.record_recreated(&r).await?;
            }
            let puller = Puller {
                js: self.publisher.jetstream().clone(),
                agent: self.spec.name.clone(),
                input: input.clone(),
                policy,
                prefetch: self.spec.prefetch.max(1),
                positions: positions.clone(),
                stats: self.stats.clone(),
                events: events_tx.clone(),
            };
            pullers.push(tokio::spawn(puller.run(found, tx.clone(), pulling.clone())));
        }
        drop(events_tx);
        // The sender stays alive until shutdown: an agent with no inputs (or whose pullers
        // stopped) keeps running rather than seeing a closed channel.
        let keep_open = tx;
        // Requests are listened for before the status endpoint answers, so an agent that
        // answers its status also answers its requests (they wait in the backlog until the
        // loop below, after any replay).
        let (req_tx, mut requests) = mpsc::channel(REQUEST_BACKLOG);
        let mut listeners = Vec::new();
        for (index, filter) in H::Request::filters().iter().enumerate() {
            let sub = self
                .client
                .queue_subscribe(filter.pattern().to_owned(), self.spec.name.to_string())
                .await
                .map_err(|e| {
                    RuntimeError::Service(format!(
                        "cannot listen for requests on {}: {e}",
                        filter.pattern()
                    ))
                })?;
            let forward = forward_requests(index, sub, req_tx.clone(), pulling.clone());
            listeners.push(tokio::spawn(forward));
        }
        drop(req_tx);
        let status = StatusTasks::start(
            &self.publisher,
            &self.spec,
            &self.instance,
            self.args.heartbeat_interval,
            self.stats.clone(),
            durables,
        )
        .await?;

        let limits =
            Limits { max_payload: usize::try_from(self.args.max_payload).unwrap_or(usize::MAX) };
        if !replays.is_empty() {
            // Inputs never acked may be what killed the agent: each start that replays from
            // the same snapshot counts as another attempt at them, so one that crashes the
            // agent every time ends as max_deliveries_exceeded instead of a crash loop.
            let attempt = self.replay_attempt(&stored)?;
            let mut processor = self.processor(&inputs, &limits, policy);
            replay(&mut processor, &mut handler, attempt, replays).await?;
        }
        let grace = self.args.shutdown_grace;
        let mut clean = true;
        let mut fatal = None;
        let mut clock = tokio::time::interval(DUE_EVERY);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let delivery = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                Some(r) = events.recv() => {
                    if let Err(e) = self.record_recreated(&r).await {
                        error!(error = %e, "stopping: this agent cannot go on safely");
                        fatal = Some(e);
                        break;
                    }
                    continue;
                }
                _ = clock.tick() => {
                    if let Err(e) = self.snapshot(&mut handler, &positions) {
                        error!(error = %e, "stopping: this agent cannot go on safely");
                        fatal = Some(e);
                        break;
                    }
                    if let Err(e) = self.run_due(&mut handler, &inputs).await {
                        error!(error = %e, "stopping: this agent cannot go on safely");
                        fatal = Some(e);
                        break;
                    }
                    continue;
                }
                Some(request) = requests.recv() => {
                    if let Err(e) = self.answer(&mut handler, &inputs, request).await {
                        error!(error = %e, "stopping: this agent cannot go on safely");
                        fatal = Some(e);
                        break;
                    }
                    continue;
                }
                d = rx.recv() => match d { Some(d) => d, None => break },
            };
            let shutdown = self.shutdown.clone();
            let mut processor = self.processor(&inputs, &limits, policy);
            let work = processor.process(&mut handler, delivery);
            tokio::pin!(work);
            let result = tokio::select! {
                r = &mut work => r,
                () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                    warn!(grace = ?grace, "shutdown grace period ran out with an input in hand; it will be redelivered");
                    clean = false;
                    break;
                }
            };
            if let Err(e) = result {
                error!(error = %e, "stopping: this agent cannot go on safely");
                fatal = Some(e);
                break;
            }
        }

        let stopped = if clean && fatal.is_none() {
            // Whatever was in hand is finished: the snapshot covers all the agent handled.
            self.store
                .put(&CLEAN_STOP, "last", &true)
                .and_then(|()| self.snapshot(&mut handler, &positions))
        } else {
            self.snapshot(&mut handler, &positions)
        };
        if let Err(e) = stopped {
            error!(error = %e, "could not snapshot the state on the way out; the next start replays from the last snapshot");
        }

        for l in listeners {
            l.abort();
        }

        // One deadline for the rest: stop pulling, hand back what was buffered so another
        // instance gets it at once, record agent_stopped, drain.
        self.stats.stopping.store(true, Ordering::Relaxed);
        pulling.cancel();
        drop(keep_open);
        let deadline = tokio::time::Instant::now() + grace;
        let stopped = ProofDraft::new(ProofKind::AgentStopped).detail(json!({
            "processed": self.stats.processed.load(Ordering::Relaxed),
            "rejected": self.stats.rejected.load(Ordering::Relaxed),
            "clean": clean && fatal.is_none(),
            "error": fatal.as_ref().map(ToString::to_string),
        }));
        let finish = async {
            rx.close();
            while let Some(d) = rx.recv().await {
                let _ = d.msg.ack_with(AckKind::Nak(None)).await;
            }
            for p in pullers {
                let _ = p.await;
            }
            self.proof.append(stopped, None).await?;
            status.stop().await;
            self.client.drain().await.map_err(|e| RuntimeError::Service(e.to_string()))
        };
        match tokio::time::timeout_at(deadline, finish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "shutdown did not finish cleanly");
                clean = false;
            }
            Err(_) => {
                warn!(grace = ?grace, "shutdown grace period ran out while draining");
                clean = false;
            }
        }
        let summary = RunSummary {
            processed: self.stats.processed.load(Ordering::Relaxed),
            rejected: self.stats.rejected.load(Ordering::Relaxed),
            clean,
        };
        info!(processed = summary.processed, rejected = summary.rejected, clean, "stopped");
        match fatal {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}

/// Handles again, in the order JetStream stored them, the inputs the agent handled after its
/// last snapshot before it stopped without one (a crash): the snapshot's state plus these is the
/// state it had. Their outputs go out under the same ids (JetStream drops them) and their proof
/// records under the same keys (recorded once). Those never acked count as attempt `attempt`.
async fn replay<H: Handler>(
    processor: &mut Processor<'_>,
    handler: &mut H,
    attempt: u32,
    mut replays: Vec<Replayed>,
) -> Result<(), RuntimeError> {
    // Stored order across streams keeps cause before effect: an input this agent caused (an
    // execution of its proposal) was stored after the input that made it propose.
    replays.sort_by(|a, b| {
        (a.msg.time, &a.msg.subject, a.msg.sequence).cmp(&(
            b.msg.time,
            &b.msg.subject,
            b.msg.sequence,
        ))
    });
    warn!(
        inputs = replays.len(),
        attempt,
        "replaying the inputs handled after the last snapshot (the agent did not stop cleanly)"
    );
    for Replayed { input, stream, epoch, acked, msg } in &replays {
        let stored = Stored {
            subject: msg.subject.as_str(),
            headers: Some(&msg.headers),
            payload: &msg.payload,
            stream,
            stream_seq: msg.sequence,
            delivered: if *acked { 1 } else { attempt },
            stored_at: bus_schema::Timestamp::from_unix_nanos(msg.time.unix_timestamp_nanos()),
        };
        processor.replay(handler, stored, input, epoch).await?;
    }
    info!(inputs = replays.len(), "replay finished");
    Ok(())
}

/// Retries a start-up step every second or two until it succeeds or shutdown fires,
/// logging each failure so an operator sees what the agent is waiting for.
async fn retry_until_ready<T, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut step: F,
) -> Result<T, RuntimeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RuntimeError>>,
{
    let mut delay = Duration::from_millis(250);
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => warn!(error = %e, retry_in = ?delay, "waiting for {what}"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(RuntimeError::ShuttingDown),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
