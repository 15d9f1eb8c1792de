//! Durable pull consumers: one per input an agent declares, and the task that pulls from it.
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

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use bus_schema::AgentName;
use bus_schema::fleet::InputDef;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::RuntimeError;

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

/// A pulled message and the epoch of the stream it came from.
#[derive(Debug)]
pub struct Delivery {
    pub msg: jetstream::Message,
    /// The stream's creation time (base 36 seconds): stream positions are unique only
    /// within one incarnation of a stream, and ids derived from them must not repeat if the
    /// NATS store is ever recreated under agents that kept their state.
    pub epoch: Arc<str>,
}

/// Creates the consumer, or updates it when its settings changed; returns it with its
/// stream's epoch.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    agent: &AgentName,
    input: &InputDef,
    policy: DeliveryPolicy,
) -> Result<(jetstream::consumer::PullConsumer, Arc<str>), RuntimeError> {
    let name = input.durable(agent);
    let fail = |message: String| RuntimeError::Consumer { consumer: name.clone(), message };
    let Some(stream_kind) = input.filter.stream() else {
        return Err(fail(format!("{} is a core NATS subject; subscribe to it instead", input.filter)));
    };
    let config = pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!("{agent} input {}", input.name)),
        filter_subject: input.filter.pattern().to_owned(),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: policy.ack_wait,
        max_deliver: -1,
        max_ack_pending: 256,
        ..Default::default()
    };
    let mut stream = js.get_stream(stream_kind.name()).await.map_err(|e| fail(e.to_string()))?;
    let created = stream.info().await.map_err(|e| fail(e.to_string()))?.created.unix_timestamp();
    let epoch: Arc<str> = base36(u64::try_from(created).unwrap_or(0)).into();
    let consumer = match stream.get_consumer::<pull::Config>(&name).await {
        Ok(mut existing) => {
            let current = existing.info().await.map_err(|e| fail(e.to_string()))?.config.clone();
            let same = current.filter_subject == config.filter_subject
                && current.ack_wait == config.ack_wait
                && current.max_deliver == config.max_deliver
                && current.max_ack_pending == config.max_ack_pending;
            if same {
                existing
            } else {
                // nats-server 2.9 updates a durable's mutable settings when it is created again.
                tracing::info!(consumer = %name, "updating consumer settings");
                stream.create_consumer(config).await.map_err(|e| fail(e.to_string()))?
            }
        }
        Err(_) => stream.create_consumer(config).await.map_err(|e| fail(e.to_string()))?,
    };
    Ok((consumer, epoch))
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

/// Pulls from one consumer into the agent's channel until `stop` fires; a message it holds
/// when told to stop is handed back to JetStream.
pub async fn pull(consumer: jetstream::consumer::PullConsumer, epoch: Arc<str>, prefetch: usize, tx: mpsc::Sender<Delivery>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            s = consumer.stream().max_messages_per_batch(prefetch).heartbeat(Duration::from_secs(5)).expires(Duration::from_secs(30)).messages() => s,
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
                Some(Ok(msg)) => {
                    // Wait for room only once there is a message: a puller holding the only
                    // slot while its input is idle would starve the agent's other inputs.
                    let permit = tokio::select! {
                        () = stop.cancelled() => {
                            let _ = msg.ack_with(jetstream::AckKind::Nak(None)).await;
                            return;
                        }
                        p = tx.reserve() => match p { Ok(p) => p, Err(_) => return },
                    };
                    permit.send(Delivery { msg, epoch: epoch.clone() });
                }
                Some(Err(e)) => {
                    // A missed heartbeat means the server holds no live pull request for us
                    // (seen after a kill -9 and restart): pull afresh rather than wait on a
                    // stream that will never deliver again.
                    warn!(consumer = %consumer.cached_info().name, error = %e, "pull consumer error; pulling afresh");
                    tokio::select! { () = stop.cancelled() => return, () = tokio::time::sleep(Duration::from_millis(250)) => {} }
                    break;
                }
                None => break,
            }
        }
    }
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
