//! An agent's life: start, pull inputs, handle them one at a time, stop gracefully.
//!
//! [`Agent::start`] connects, makes sure the streams exist, opens the state file and the proof
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
use bus_schema::codec::{Limits, decode_inbound};
use bus_schema::proof::ProofKind;
use bus_schema::fleet::{AgentDef, InputDef};
use bus_schema::{AgentName, InstanceId, RejectReason, headers};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::RuntimeArgs;
use crate::consumer::{DeliveryPolicy, ensure_consumer};
use crate::error::RuntimeError;
use crate::handler::{Context, HandleError, Handler, InputMeta};
use crate::proof::{ProofDraft, ProofWriter};
use crate::publish::Publisher;
use crate::status::{Stats, StatusTasks};
use crate::store::Store;
use crate::{connect, streams};

/// What an agent is and what it consumes.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: AgentName,
    /// Semver, e.g. `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    pub description: &'static str,
    pub inputs: Vec<InputDef>,
}

impl AgentSpec {
    /// The spec of a fleet agent (bus_schema::fleet) at a version.
    pub fn new(def: AgentDef, version: &'static str) -> Self {
        Self { name: def.name, version, description: def.description, inputs: def.inputs }
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
    shutdown: CancellationToken,
}

impl Agent {
    /// Validates the configuration, connects (waiting for NATS if it is not up yet), ensures
    /// the streams, opens the state file and the proof chain.
    pub async fn start(spec: AgentSpec, args: RuntimeArgs, shutdown: CancellationToken) -> Result<Self, RuntimeError> {
        let credentials = args.validate()?;
        let instance = args.instance.clone();
        let conn_name = format!("{}.{}", spec.name, instance);
        let client = connect::connect(&conn_name, &args.nats.url, credentials.as_ref())
            .await
            .map_err(|e| RuntimeError::Connect(e.to_string()))?;
        if client.connection_state() != async_nats::connection::State::Connected {
            let urls: Vec<String> = args.nats.url.iter().map(|u| u.clone().into_inner().to_string()).collect();
            info!(nats_url = %urls.join(","), "waiting for NATS");
        }
        let js = jetstream::new(client.clone());
        retry_until_ready(&shutdown, "JetStream streams", || streams::ensure_streams(&js)).await?;
        let store = Store::open(&args.data_dir.join(format!("{}-{}.redb", spec.name, instance)))?;
        let publisher = Publisher::new(client.clone(), js);
        let proof = retry_until_ready(&shutdown, "the proof chain", || {
            ProofWriter::open(publisher.clone(), store.clone(), spec.name.clone(), instance.clone())
        })
        .await?;
        let stats = Arc::new(Stats::new(proof.head().seq));
        Ok(Self { spec, args, instance, client, publisher, store, proof, stats, shutdown })
    }

    /// The agent's state file, for its handler.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Runs until the shutdown token fires.
    pub async fn run<H: Handler>(mut self, mut handler: H) -> Result<RunSummary, RuntimeError> {
        let durables: Vec<String> = self.spec.inputs.iter().map(|i| i.durable(&self.spec.name)).collect();
        let started = ProofDraft::new(ProofKind::AgentStarted).detail(json!({
            "version": self.spec.version,
            "inputs": self.spec.inputs.iter().map(|i| i.filter.pattern()).collect::<Vec<_>>(),
            "consumers": durables,
            "pid": std::process::id(),
        }));
        self.proof.append(started, None).await?;
        self.stats.proof_seq.store(self.proof.head().seq, Ordering::Relaxed);
        info!(agent = %self.spec.name, instance = %self.instance, "started");

        let policy = DeliveryPolicy { max_attempts: self.args.max_attempts, ack_wait: self.args.ack_wait };
        let pulling = self.shutdown.child_token();
        let (tx, mut rx) = mpsc::channel::<jetstream::Message>(1);
        let mut pullers = Vec::new();
        for input in &self.spec.inputs {
            let consumer = ensure_consumer(self.publisher.jetstream(), &self.spec.name, input, policy).await?;
            pullers.push(tokio::spawn(pull(consumer, tx.clone(), pulling.clone())));
        }
        // The sender stays alive until shutdown: an agent with no inputs (or whose pullers
        // stopped) keeps running rather than seeing a closed channel.
        let _keep_open = tx;
        let status = StatusTasks::start(&self.publisher, &self.spec, &self.instance, self.args.heartbeat_interval, self.stats.clone(), durables).await?;

        let limits = Limits { max_payload: usize::try_from(self.args.max_payload).unwrap_or(usize::MAX) };
        let grace = self.args.shutdown_grace;
        let mut clean = true;
        loop {
            let msg = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                msg = rx.recv() => match msg { Some(m) => m, None => break },
            };
            let shutdown = self.shutdown.clone();
            let work = self.process(&mut handler, msg, &limits, policy);
            tokio::pin!(work);
            tokio::select! {
                () = &mut work => {}
                () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                    warn!(grace = ?grace, "shutdown grace period ran out with an input in hand; it will be redelivered");
                    clean = false;
                    break;
                }
            }
        }

        // Stop pulling and hand back what was buffered, so another instance gets it at once.
        self.stats.stopping.store(true, Ordering::Relaxed);
        pulling.cancel();
        for p in pullers {
            let _ = p.await;
        }
        while let Ok(m) = rx.try_recv() {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        }
        let stopped = ProofDraft::new(ProofKind::AgentStopped).detail(json!({
            "processed": self.stats.processed.load(Ordering::Relaxed),
            "rejected": self.stats.rejected.load(Ordering::Relaxed),
            "clean": clean,
        }));
        let finish = async {
            self.proof.append(stopped, None).await?;
            status.stop().await;
            self.client.drain().await.map_err(|e| RuntimeError::Service(e.to_string()))
        };
        match tokio::time::timeout(grace, finish).await {
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
        Ok(summary)
    }

    /// Handles one message to the end: acked, rejected, or handed back for a retry.
    async fn process<H: Handler>(&mut self, handler: &mut H, msg: jetstream::Message, limits: &Limits, policy: DeliveryPolicy) {
        let meta = match input_meta(&msg) {
            Some(m) => m,
            None => {
                warn!(subject = %msg.subject, "message without JetStream metadata; ignoring it");
                return;
            }
        };
        let content_type = msg.headers.as_ref().and_then(|h| h.get(headers::CONTENT_TYPE)).map(|v| v.as_str().to_owned());
        let outcome = if meta.delivered > policy.max_attempts {
            Err(HandleError::Reject {
                reason: RejectReason::MaxDeliveriesExceeded,
                message: format!("delivered {} times; an earlier attempt did not finish (did the agent crash?)", meta.delivered),
            })
        } else {
            match decode_inbound(&meta.subject, content_type.as_deref(), &msg.payload, limits) {
                Err(e) => Err(HandleError::Reject { reason: e.reason(), message: e.to_string() }),
                Ok(input) => {
                    let mut ctx = Context::new(self.spec.name.as_str(), &meta, &self.publisher, &mut self.proof);
                    handler.handle(&mut ctx, input).await
                }
            }
        };
        let outcome = match outcome {
            Err(HandleError::Retry(message)) if meta.delivered >= policy.max_attempts => Err(HandleError::Reject {
                reason: RejectReason::MaxDeliveriesExceeded,
                message: format!("gave up after {} attempts; last error: {message}", meta.delivered),
            }),
            other => other,
        };
        match outcome {
            Ok(()) => {
                self.stats.processed.fetch_add(1, Ordering::Relaxed);
                ack(&msg, &meta).await;
            }
            Err(HandleError::Reject { reason, message }) => match self.reject(&msg, &meta, reason, &message).await {
                Ok(()) => ack(&msg, &meta).await,
                Err(e) => {
                    error!(input = %meta.input_id, error = %e, "could not record the rejection; will retry");
                    nak(&msg, policy.retry_delay(meta.delivered)).await;
                }
            },
            Err(HandleError::Retry(message)) => {
                let delay = policy.retry_delay(meta.delivered);
                warn!(input = %meta.input_id, attempt = meta.delivered, retry_in = ?delay, error = %message, "handling failed; will retry");
                nak(&msg, delay).await;
            }
        }
        self.stats.proof_seq.store(self.proof.head().seq, Ordering::Relaxed);
    }

    /// Records `event_rejected` with everything needed to find and replay the input.
    async fn reject(&mut self, msg: &jetstream::Message, meta: &InputMeta, reason: RejectReason, message: &str) -> Result<(), RuntimeError> {
        warn!(input = %meta.input_id, subject = %meta.subject, reason = %reason, "rejected input: {message}");
        let excerpt: String = String::from_utf8_lossy(&msg.payload[..msg.payload.len().min(256)]).into_owned();
        let draft = ProofDraft::new(ProofKind::EventRejected)
            .reason(reason.as_str())
            .correlation(meta.correlation_id.clone())
            .detail(json!({
                "error": message,
                "subject": truncate(&meta.subject, 256),
                "stream": meta.stream,
                "stream_seq": meta.stream_seq,
                "delivered": meta.delivered,
                "size": msg.payload.len(),
                "payload_excerpt": excerpt,
            }));
        self.proof.append(draft, Some(&format!("{}:rejected", meta.input_id))).await?;
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Pulls from one consumer into the shared channel until `stop` fires.
async fn pull(consumer: jetstream::consumer::PullConsumer, tx: mpsc::Sender<jetstream::Message>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            s = consumer.stream().max_messages_per_batch(16).heartbeat(Duration::from_secs(5)).expires(Duration::from_secs(30)).messages() => s,
        };
        let mut messages = match stream {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot pull from consumer; retrying in 1s");
                tokio::select! { () = stop.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => continue }
            }
        };
        loop {
            let next = tokio::select! { () = stop.cancelled() => return, n = messages.next() => n };
            match next {
                Some(Ok(m)) => {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    warn!(error = %e, "pull consumer error; continuing");
                    tokio::select! { () = stop.cancelled() => return, () = tokio::time::sleep(Duration::from_millis(250)) => {} }
                }
                None => break,
            }
        }
    }
}

fn input_meta(msg: &jetstream::Message) -> Option<InputMeta> {
    let info = msg.info().ok()?;
    let input_id = format!("{}:{}", info.stream, info.stream_sequence);
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty() && v.len() <= 200 && v.chars().all(|c| c.is_ascii_graphic()))
            .map(str::to_owned)
    };
    let message_id = header(headers::MSG_ID).unwrap_or_else(|| input_id.clone());
    let correlation_id = header(headers::CORRELATION_ID).unwrap_or_else(|| message_id.clone());
    Some(InputMeta {
        subject: msg.subject.to_string(),
        stream: info.stream.to_owned(),
        stream_seq: info.stream_sequence,
        delivered: u32::try_from(info.delivered).unwrap_or(u32::MAX),
        input_id,
        message_id,
        correlation_id,
    })
}

async fn ack(msg: &jetstream::Message, meta: &InputMeta) {
    if let Err(e) = msg.double_ack().await {
        // Outputs are stored and de-duplicated, so a redelivery is harmless.
        warn!(input = %meta.input_id, error = %e, "ack not confirmed; the input may be redelivered");
    }
}

async fn nak(msg: &jetstream::Message, delay: Duration) {
    if let Err(e) = msg.ack_with(AckKind::Nak(Some(delay))).await {
        warn!(error = %e, "nak failed; the input will be redelivered after the ack wait");
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Retries a start-up step every second or two until it succeeds or shutdown fires,
/// logging each failure so an operator sees what the agent is waiting for.
async fn retry_until_ready<T, F, Fut>(shutdown: &CancellationToken, what: &str, mut step: F) -> Result<T, RuntimeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RuntimeError>>,
{
    let mut delay = Duration::from_millis(250);
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e @ (RuntimeError::ProofChainContended { .. } | RuntimeError::Store { .. })) => return Err(e),
            Err(e) => warn!(error = %e, retry_in = ?delay, "waiting for {what}"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(RuntimeError::ShuttingDown),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
