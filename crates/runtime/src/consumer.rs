//! Durable pull consumers: one per input an agent declares, and the task that pulls from it.
//!
//! A consumer that disappears (deleted under a running agent, or missing at start) is
//! recreated from the first stream sequence the agent has not applied yet (see
//! [`crate::position`]), never from the start of the stream, and the agent records
//! `consumer_recreated` on its proof chain.
//!
//! Explicit acks, and no server-side delivery limit: JetStream keeps redelivering an input
//! until the agent acks it, and the agent acks only once the input is handled or its
//! rejection is recorded. The attempt limit is the agent's (`--max-attempts`): on the last
//! attempt a failing input is rejected as poison, and a delivery beyond it (an agent that
//! crashed while handling) is rejected without handling it again. So nothing is dropped
//! without an `event_rejected` record, even when recording it fails for a while.
//!
//! Messages are pulled one at a time unless the agent asks for more (`AgentSpec::prefetch`):
//! handling is sequential, and a prefetched message waits in a buffer while its ack wait runs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use bus_schema::AgentName;
use bus_schema::fleet::InputDef;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::error::RuntimeError;
use crate::position::{Position, Positions};
use crate::status::Stats;

/// Delivery settings shared by every consumer of an agent.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPolicy {
    /// Handling attempts before the input is rejected as poison.
    pub max_attempts: u32,
    pub ack_wait: Duration,
}

impl DeliveryPolicy {
    /// The delay before attempt `delivered + 1`: 1 s, 2 s, 4 s, … up to 30 s.
    pub fn retry_delay(&self, delivered: u32) -> Duration {
        let exp = delivered.saturating_sub(1).min(5);
        Duration::from_secs(1u64 << exp).min(Duration::from_secs(30))
    }
}

/// A pulled message, the durable it came from and the epoch of its stream.
#[derive(Debug)]
pub struct Delivery {
    pub msg: jetstream::Message,
    /// The input's name in the agent's declaration (`InputDef::name`).
    pub input: &'static str,
    pub durable: Arc<str>,
    /// The stream's creation time (base 36 seconds): stream positions are unique only
    /// within one incarnation of a stream, and ids derived from them must not repeat if the
    /// NATS store is ever recreated under agents that kept their state.
    pub epoch: Arc<str>,
}

/// Something a puller saw that belongs on the proof log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recreated {
    pub consumer: String,
    pub stream: String,
    /// The first stream sequence the new consumer delivers.
    pub from_seq: u64,
    pub reason: &'static str,
}

/// One input's durable consumer: found, or created where the agent left off.
#[derive(Debug)]
pub struct Input {
    pub consumer: jetstream::consumer::PullConsumer,
    pub durable: Arc<str>,
    pub epoch: Arc<str>,
    /// Set when the consumer was missing and had to be created from a stored position.
    pub recreated: Option<Recreated>,
    /// What the consumer delivered beyond the state file's snapshot: the agent handled it
    /// before it last stopped, without a snapshot covering it.
    pub replay: Option<Replay>,
}

/// Stream sequences to replay, `from..=delivered`; those up to `acked` were acked (handled to
/// the end), the rest may have been in hand when the agent died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub from: u64,
    pub acked: u64,
    pub delivered: u64,
}

/// Reads back from the stream the messages of `input` in `from..=delivered`, for a replay.
pub async fn read_back(
    js: &jetstream::Context,
    input: &InputDef,
    Replay { from, delivered, .. }: Replay,
) -> Result<Vec<jetstream::message::StreamMessage>, RuntimeError> {
    let Some(kind) = input.stream() else { return Ok(Vec::new()) };
    let fail = |e: &dyn std::fmt::Display| RuntimeError::Stream {
        stream: kind.name().to_owned(),
        message: format!("reading back {} from {from} for a replay: {e}", input.filter),
    };
    let stream = js.get_stream_no_info(kind.name()).await.map_err(|e| fail(&e))?;
    crate::streams::read_range(&stream, input.filter.pattern(), from, delivered)
        .await
        .map_err(|e| fail(&e))
}

fn pull_config(
    agent: &AgentName,
    input: &InputDef,
    policy: DeliveryPolicy,
    deliver_policy: DeliverPolicy,
) -> pull::Config {
    pull::Config {
        durable_name: Some(input.durable(agent)),
        description: Some(format!("{agent} input {}", input.name)),
        filter_subject: input.filter.pattern().to_owned(),
        deliver_policy,
        ack_policy: AckPolicy::Explicit,
        ack_wait: policy.ack_wait,
        max_deliver: -1,
        max_ack_pending: 256,
        ..Default::default()
    }
}

/// Finds the consumer, updates it when its settings changed, or creates it: from the start of
/// the stream on an agent's first run, from where the agent left off when it was lost.
/// Seeds `positions` for it.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    agent: &AgentName,
    input: &InputDef,
    policy: DeliveryPolicy,
    stored: Option<&Position>,
    positions: &Positions,
) -> Result<Input, RuntimeError> {
    let name = input.durable(agent);
    let fail = |message: String| RuntimeError::Consumer { consumer: name.clone(), message };
    let Some(stream_kind) = input.filter.stream() else {
        return Err(fail(format!(
            "{} is a core NATS subject; subscribe to it instead",
            input.filter
        )));
    };
    let mut stream = js.get_stream(stream_kind.name()).await.map_err(|e| fail(e.to_string()))?;
    let created = stream.info().await.map_err(|e| fail(e.to_string()))?.created.unix_timestamp();
    let epoch: Arc<str> = base36(u64::try_from(created).unwrap_or(0)).into();
    let stored = stored.filter(|p| *p.epoch == *epoch);
    let mut recreated = None;
    let mut replay = None;
    let consumer = match stream.consumer_info(&name).await {
        Ok(current) => {
            let delivered = current.delivered.stream_sequence;
            let acked = current.ack_floor.stream_sequence;
            replay = stored.filter(|p| p.next <= delivered).map(|p| Replay {
                from: p.next,
                acked,
                delivered,
            });
            positions.seed(
                &name,
                &epoch,
                stored,
                current.ack_floor.stream_sequence + 1,
                (current.num_ack_pending as u64, current.delivered.stream_sequence),
            );
            let config = pull_config(agent, input, policy, current.config.deliver_policy);
            let same = current.config.filter_subject == config.filter_subject
                && current.config.ack_wait == config.ack_wait
                && current.config.max_deliver == config.max_deliver
                && current.config.max_ack_pending == config.max_ack_pending;
            if !same {
                // nats-server 2.9 updates a durable's mutable settings when it is created again.
                tracing::info!(consumer = %name, "updating consumer settings");
            }
            stream.create_consumer(config).await.map_err(|e| fail(e.to_string()))?
        }
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            let deliver = match stored {
                Some(p) => {
                    recreated = Some(Recreated {
                        consumer: name.clone(),
                        stream: stream_kind.name().to_owned(),
                        from_seq: p.next,
                        reason: "missing_at_start",
                    });
                    DeliverPolicy::ByStartSequence { start_sequence: p.next }
                }
                None => DeliverPolicy::All,
            };
            positions.seed(&name, &epoch, stored, 1, (0, 0));
            stream
                .create_consumer(pull_config(agent, input, policy, deliver))
                .await
                .map_err(|e| fail(e.to_string()))?
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    positions.undelivered(&name, consumer.cached_info().num_pending);
    Ok(Input { consumer, durable: name.into(), epoch, recreated, replay })
}

/// Pulls one input into the agent's channel until `stop` fires; a message it holds when told
/// to stop is handed back to JetStream. When its consumer disappears (deleted under it), it
/// marks the agent degraded, recreates the consumer from the first sequence not yet applied,
/// and reports that on `events`.
#[derive(Debug)]
pub struct Puller {
    pub js: jetstream::Context,
    pub agent: AgentName,
    pub input: InputDef,
    pub policy: DeliveryPolicy,
    pub prefetch: usize,
    pub positions: Arc<Positions>,
    pub stats: Arc<Stats>,
    pub events: mpsc::UnboundedSender<Recreated>,
}

impl Puller {
    pub async fn run(self, mut input: Input, tx: mpsc::Sender<Delivery>, stop: CancellationToken) {
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                s = input.consumer.stream().max_messages_per_batch(self.prefetch).heartbeat(Duration::from_secs(5)).expires(Duration::from_secs(30)).messages() => s,
            };
            let mut messages = match stream {
                Ok(m) => m,
                Err(e) => {
                    warn!(consumer = %input.durable, error = %e, "cannot pull from consumer; retrying in 1s");
                    self.recover(&mut input).await;
                    tokio::select! { () = stop.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => continue }
                }
            };
            loop {
                let next =
                    tokio::select! { () = stop.cancelled() => return, n = messages.next() => n };
                match next {
                    Some(Ok(msg)) => {
                        if let Ok(info) = msg.info() {
                            self.positions.received(
                                &input.durable,
                                info.stream_sequence,
                                info.pending,
                            );
                        }
                        // Wait for room only once there is a message: a puller holding the only
                        // slot while its input is idle would starve the agent's other inputs.
                        let permit = tokio::select! {
                            () = stop.cancelled() => {
                                let _ = msg.ack_with(jetstream::AckKind::Nak(None)).await;
                                return;
                            }
                            p = tx.reserve() => match p { Ok(p) => p, Err(_) => return },
                        };
                        permit.send(Delivery {
                            msg,
                            input: self.input.name,
                            durable: input.durable.clone(),
                            epoch: input.epoch.clone(),
                        });
                        // Pulling one at a time, the next pull request can wait for the agent's
                        // turn: what the agent sends for this message leaves first.
                        if self.prefetch == 1 {
                            tokio::task::yield_now().await;
                        }
                    }
                    Some(Err(e)) => {
                        // A missed heartbeat means the server holds no live pull request for us
                        // (seen after a kill -9 and restart, and when the consumer was deleted):
                        // see whether the consumer is still there, then pull afresh.
                        warn!(consumer = %input.durable, error = %e, "pull consumer error; pulling afresh");
                        self.recover(&mut input).await;
                        tokio::select! { () = stop.cancelled() => return, () = tokio::time::sleep(Duration::from_millis(250)) => {} }
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// Recreates the consumer if the server says it is gone; otherwise does nothing (a
    /// restarting server, a slow network: pulling afresh is enough).
    async fn recover(&self, input: &mut Input) {
        let Some(stream_kind) = self.input.stream() else { return };
        let Ok(stream) = self.js.get_stream(stream_kind.name()).await else { return };
        match stream.consumer_info(&*input.durable).await {
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {}
            _ => return,
        }
        let durable = input.durable.to_string();
        self.stats.set_degraded(&durable, Some("consumer missing: recreating it"));
        let Some(position) = self.positions.next(&durable) else { return };
        let config = pull_config(
            &self.agent,
            &self.input,
            self.policy,
            DeliverPolicy::ByStartSequence { start_sequence: position.next },
        );
        match stream.create_consumer(config).await {
            Ok(consumer) => {
                error!(consumer = %durable, from_seq = position.next, "CONSUMER RECREATED: {durable} was deleted under this agent; recreated from stream sequence {}", position.next);
                input.consumer = consumer;
                self.stats.set_degraded(&durable, None);
                let _ = self.events.send(Recreated {
                    consumer: durable,
                    stream: stream_kind.name().to_owned(),
                    from_seq: position.next,
                    reason: "deleted_while_running",
                });
            }
            Err(e) => {
                error!(consumer = %durable, error = %e, "consumer {durable} is missing and cannot be recreated; this input is not being consumed");
                self.stats.set_degraded(
                    &durable,
                    Some("consumer missing and cannot be recreated; see the agent's log"),
                );
            }
        }
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base36_is_compact_and_exact() {
        assert_eq!(super::base36(0), "0");
        assert_eq!(super::base36(35), "z");
        assert_eq!(super::base36(36), "10");
        assert_eq!(super::base36(1_763_776_800), "t63uw0");
    }
}
