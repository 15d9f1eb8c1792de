//! What a chaos run reads back, as the `operator` user: the agents' durable consumers and
//! every message of CN_EVENTS.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use bus_schema::fleet::fleet;
use bus_schema::headers;
use futures_util::StreamExt;

/// One agent's durable consumer as the server reports it.
#[derive(Debug, Clone)]
pub struct ConsumerState {
    pub agent: String,
    pub durable: String,
    pub stream: String,
    pub filter: String,
    pub num_pending: u64,
    pub num_ack_pending: u64,
    /// The highest stream sequence below which everything was acked.
    pub ack_floor: u64,
    /// The stream sequence of the last message delivered.
    pub delivered: u64,
    /// Why it could not be read (it is then not idle).
    pub error: Option<String>,
}

impl ConsumerState {
    pub fn idle(&self) -> bool {
        self.error.is_none() && self.num_pending == 0 && self.num_ack_pending == 0
    }
}

/// Every durable consumer of every agent of the fleet table.
pub async fn consumers(js: &jetstream::Context) -> Vec<ConsumerState> {
    let mut out = Vec::new();
    for agent in fleet() {
        for input in &agent.inputs {
            let Some(stream) = input.stream() else { continue };
            let durable = input.durable(&agent.name);
            let mut state = ConsumerState {
                agent: agent.name.to_string(),
                durable: durable.clone(),
                stream: stream.name().to_owned(),
                filter: input.filter.pattern().to_owned(),
                num_pending: 0,
                num_ack_pending: 0,
                ack_floor: 0,
                delivered: 0,
                error: None,
            };
            let info = async {
                let s = js.get_stream(stream.name()).await.map_err(|e| e.to_string())?;
                s.consumer_info(&durable).await.map_err(|e| e.to_string())
            };
            match tokio::time::timeout(Duration::from_secs(5), info).await {
                Ok(Ok(i)) => {
                    state.num_pending = i.num_pending;
                    state.num_ack_pending = i.num_ack_pending as u64;
                    state.ack_floor = i.ack_floor.stream_sequence;
                    state.delivered = i.delivered.stream_sequence;
                }
                Ok(Err(e)) => state.error = Some(e),
                Err(_) => state.error = Some("no answer within 5s".to_owned()),
            }
            out.push(state);
        }
    }
    out
}

/// One stored message of a stream.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub subject: String,
    pub msg_id: Option<String>,
}

/// Every message of `stream` up to its last one at the time of the call.
pub async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
) -> anyhow::Result<Vec<StoredEvent>> {
    let mut s = js.get_stream(stream).await?;
    let last = s.info().await?.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let config = pull::Config {
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::None,
        inactive_threshold: Duration::from_secs(30),
        ..Default::default()
    };
    let consumer = s.create_consumer(config).await?;
    let mut messages = consumer.stream().max_messages_per_batch(1000).messages().await?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| anyhow::anyhow!("timed out reading {stream}"))?;
        let Some(msg) = next else { break };
        let msg = msg.map_err(|e| anyhow::anyhow!("reading {stream}: {e}"))?;
        let seq = msg.info().map_err(|e| anyhow::anyhow!("reading {stream}: {e}"))?.stream_sequence;
        let msg_id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::MSG_ID))
            .map(|v| v.as_str().to_owned());
        out.push(StoredEvent { seq, subject: msg.subject.to_string(), msg_id });
        if seq >= last {
            break;
        }
    }
    Ok(out)
}
