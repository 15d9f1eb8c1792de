//! Finding the running agents and asking each how it is: the other side of [`crate::status`].
//!
//! Every agent registers as a NATS micro service named after itself. [`discover`] pings
//! `$SRV.PING`, collects the answers for a moment, then asks each instance's status endpoint
//! (`cn.status.{agent}.{instance}`) for its counters, all at once. `cnctl status` and the
//! console's metrics both see the fleet this way. The NATS user needs publish rights on
//! `$SRV.PING` and `cn.status.>` (the operator and the auditor have them).

use std::collections::BTreeSet;
use std::time::Duration;

use bus_schema::AgentStatus;
use futures_util::StreamExt;
use serde_json::Value;

/// How long an instance that answered the ping has to answer its status request.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The ping could not be sent, or its answers not heard.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot listen for the agents' answers: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("cannot ping the agents ($SRV.PING): {0}")]
    Ping(#[from] async_nats::PublishError),
    #[error("cannot ping the agents ($SRV.PING): {0}")]
    Flush(#[from] async_nats::client::FlushError),
}

/// One instance that answered the ping.
#[derive(Debug, Clone)]
pub struct Seen {
    pub agent: String,
    pub instance: String,
    /// Its status, when its status endpoint answered too.
    pub status: Option<AgentStatus>,
}

/// Pings every micro service for `wait`, then asks each instance that answered for its status.
/// In the order of agent and instance.
pub async fn discover(
    client: &async_nats::Client,
    wait: Duration,
) -> Result<Vec<Seen>, DiscoveryError> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client.publish_with_reply("$SRV.PING", inbox, "".into()).await?;
    client.flush().await?;
    let mut found = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await {
        let Ok(pong) = serde_json::from_slice::<Value>(&msg.payload) else { continue };
        let agent = pong["name"].as_str().unwrap_or_default().to_owned();
        let instance = pong["metadata"]["instance"].as_str().unwrap_or_default().to_owned();
        found.insert((agent, instance));
    }
    let asked = found.into_iter().map(|(agent, instance)| async move {
        let status = status_of(client, &agent, &instance).await;
        Seen { agent, instance, status }
    });
    Ok(futures_util::future::join_all(asked).await)
}

/// The instance's answer on its status endpoint; `None` when it has none (not a fleet agent's
/// name), does not answer in time, or answers something else.
async fn status_of(
    client: &async_nats::Client,
    agent: &str,
    instance: &str,
) -> Option<AgentStatus> {
    let (Ok(agent), Ok(instance)) = (agent.parse(), instance.parse()) else { return None };
    let subject = bus_schema::subject::STATUS.subject(&agent, &instance);
    let reply =
        tokio::time::timeout(STATUS_TIMEOUT, client.request(subject.to_string(), "".into()))
            .await
            .ok()?
            .ok()?;
    serde_json::from_slice(&reply.payload).ok()
}
