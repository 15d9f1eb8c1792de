//! Durable pull consumers: one per input an agent declares.
//!
//! Explicit acks and a bounded number of deliveries. The runtime rejects an input itself on
//! its last allowed attempt, so JetStream's `max_deliver` is one more than the attempts: even
//! an agent that crashes while handling a poison message gets one final delivery on which it
//! records `event_rejected` without handling it again.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use bus_schema::AgentName;
use bus_schema::fleet::InputDef;

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

/// Creates the consumer, or updates it when its settings changed.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    agent: &AgentName,
    input: &InputDef,
    policy: DeliveryPolicy,
) -> Result<jetstream::consumer::PullConsumer, RuntimeError> {
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
        max_deliver: i64::from(policy.max_attempts) + 1,
        max_ack_pending: 256,
        ..Default::default()
    };
    let stream = js.get_stream(stream_kind.name()).await.map_err(|e| fail(e.to_string()))?;
    match stream.get_consumer::<pull::Config>(&name).await {
        Ok(mut existing) => {
            let current = existing.info().await.map_err(|e| fail(e.to_string()))?.config.clone();
            let same = current.filter_subject == config.filter_subject
                && current.ack_wait == config.ack_wait
                && current.max_deliver == config.max_deliver
                && current.max_ack_pending == config.max_ack_pending;
            if same {
                return Ok(existing);
            }
            // nats-server 2.9 updates a durable's mutable settings when it is created again.
            tracing::info!(consumer = %name, "updating consumer settings");
            stream.create_consumer(config).await.map_err(|e| fail(e.to_string()))
        }
        Err(_) => stream.create_consumer(config).await.map_err(|e| fail(e.to_string())),
    }
}
