//! What the fleet says about itself, asked in the background and shown at each scrape.
//!
//! Two things the proof log does not say:
//! - each instance's counters, from its status endpoint, found as `cnctl status` finds them
//!   ([`agent_runtime::discovery`]), every [`AGENTS_EVERY`]: `cn_inputs_handled_total` (its
//!   own count since it started, so it starts again from 0 when the instance restarts, which
//!   Prometheus' `rate` takes as a counter reset) and `cn_agent_up`;
//! - how far behind each agent durable of the fleet table is, one `CONSUMER.INFO` request per
//!   durable every [`CONSUMERS_EVERY`]: `cn_consumer_pending` and `cn_consumer_ack_pending`.
//!   Not more often: nats-server before 2.9.15 recounts a filtered consumer's pending messages
//!   on every info request.
//!
//! However often Prometheus scrapes, it reads what the last round found ([`FleetStats`] is a
//! collector of the metrics' registry); the fleet is asked no more often than that.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_runtime::discovery::{Seen, discover};
use async_nats::connection::State;
use async_nats::jetstream::{self, consumer, response::Response};
use bus_schema::fleet::{SIMULATOR, fleet};
use futures_util::StreamExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// How often the agents are asked for their status.
pub const AGENTS_EVERY: Duration = Duration::from_secs(5);
/// How often, while none answers.
pub const AGENTS_QUIET_EVERY: Duration = Duration::from_secs(60);
/// How often each agent durable is asked how far behind it is.
pub const CONSUMERS_EVERY: Duration = Duration::from_secs(15);
/// How long the agents have to answer the ping.
const PING_WAIT: Duration = Duration::from_millis(500);
/// How long a consumer info request may take; no answer at all means the request was not
/// allowed (nats-server drops it and tells only the connection's error log).
const INFO_TIMEOUT: Duration = Duration::from_secs(2);
/// How many consumer info requests are out at once.
const INFO_AT_ONCE: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct Instance {
    agent: String,
    instance: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct Durable {
    stream: String,
    consumer: String,
}

/// How far behind one durable is: messages not delivered yet, and delivered but not acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lag {
    pending: u64,
    ack_pending: u64,
}

/// The last rounds' answers; a [`Collector`] of the series above.
#[derive(Debug, Default)]
pub struct FleetStats {
    state: Mutex<Answers>,
}

#[derive(Debug, Default)]
struct Answers {
    /// Every instance seen since the console started, with its handled count when it answered
    /// its status request in the last round.
    instances: BTreeMap<Instance, Option<u64>>,
    /// Agents of the fleet (but the simulator, which only demos run) of which no instance was
    /// ever seen.
    missing: Vec<String>,
    consumers: BTreeMap<Durable, Lag>,
}

impl FleetStats {
    fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes in one round of discovery.
    fn agents_seen(&self, seen: &[Seen]) {
        let mut answers = self.answers();
        for handled in answers.instances.values_mut() {
            *handled = None;
        }
        for s in seen {
            let key = Instance { agent: s.agent.clone(), instance: s.instance.clone() };
            let handled = s.status.as_ref().map(|st| st.heartbeat.processed);
            answers.instances.insert(key, handled);
        }
        let known: BTreeSet<&str> = answers.instances.keys().map(|i| i.agent.as_str()).collect();
        let missing = fleet()
            .into_iter()
            .filter(|a| a.name != SIMULATOR && !known.contains(a.name.as_str()))
            .map(|a| a.name.to_string())
            .collect();
        answers.missing = missing;
    }

    /// Takes in one durable's answer; `None` leaves its series out.
    fn consumer_answered(&self, stream: &str, durable: &str, lag: Option<Lag>) {
        let key = Durable { stream: stream.to_owned(), consumer: durable.to_owned() };
        let mut answers = self.answers();
        match lag {
            Some(lag) => answers.consumers.insert(key, lag),
            None => answers.consumers.remove(&key),
        };
    }
}

impl Collector for FleetStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let answers = self.answers();
        let missing = answers
            .missing
            .iter()
            .map(|agent| (Instance { agent: agent.clone(), instance: String::new() }, None));
        let up: Vec<(Instance, Option<u64>)> =
            answers.instances.iter().map(|(i, h)| (i.clone(), *h)).chain(missing).collect();
        if !up.is_empty() {
            let mut family = encoder.encode_descriptor(
                "agent_up",
                "1 if the instance answered its status request in the last round (every 5 s), else 0; an agent of the fleet with no instance seen since the console started has instance=\"\"",
                None,
                MetricType::Gauge,
            )?;
            for (labels, handled) in &up {
                ConstGauge::new(i64::from(handled.is_some()))
                    .encode(family.encode_family(labels)?)?;
            }
        }
        if answers.instances.values().any(Option::is_some) {
            let mut family = encoder.encode_descriptor(
                "inputs_handled",
                "Inputs the instance handled (acked, not rejected) since it started, as its status endpoint says: starts again from 0 when the instance restarts",
                None,
                MetricType::Counter,
            )?;
            for (labels, handled) in &answers.instances {
                if let Some(n) = handled {
                    ConstCounter::new(*n).encode(family.encode_family(labels)?)?;
                }
            }
        }
        if !answers.consumers.is_empty() {
            let lags = [
                (
                    "consumer_pending",
                    "Messages of the stream the agent durable has not been delivered yet (num_pending), asked every 15 s",
                    true,
                ),
                (
                    "consumer_ack_pending",
                    "Messages delivered to the agent durable and not acked yet (num_ack_pending), asked every 15 s",
                    false,
                ),
            ];
            for (name, help, pending) in lags {
                let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for (labels, lag) in &answers.consumers {
                    let n = if pending { lag.pending } else { lag.ack_pending };
                    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                        .encode(family.encode_family(labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// Asks the agents for their status every [`AGENTS_EVERY`], for ever; while none answers
/// (the fleet is down, or the user may not ask, which nats-server logs as a permission
/// violation each time), every [`AGENTS_QUIET_EVERY`], and one warning says so.
pub async fn follow_agents(client: async_nats::Client, user: String, stats: Arc<FleetStats>) {
    let mut warned = false;
    loop {
        let mut quiet = false;
        if client.connection_state() == State::Connected {
            match discover(&client, PING_WAIT).await {
                Ok(seen) => {
                    quiet = seen.is_empty();
                    if quiet && !warned {
                        tracing::warn!(user = %user, "no agent answered $SRV.PING: either the fleet is down, or NATS user {user} may not ask (it needs publish rights on $SRV.PING and cn.status.>, which the operator and auditor users have); cn_agent_up says 0 until they answer, asked every minute meanwhile");
                    }
                    stats.agents_seen(&seen);
                }
                Err(e) => {
                    quiet = true;
                    if !warned {
                        tracing::warn!(error = %e, "cannot ask the agents for their status; trying every minute");
                    }
                }
            }
            warned = quiet;
        }
        tokio::time::sleep(if quiet { AGENTS_QUIET_EVERY } else { AGENTS_EVERY }).await;
    }
}

/// Every agent durable of the fleet table: its stream and name.
fn agent_durables() -> Vec<(&'static str, String)> {
    let mut durables = Vec::new();
    for agent in fleet() {
        for input in &agent.inputs {
            if let Some(stream) = input.stream() {
                durables.push((stream.name(), input.durable(&agent.name)));
            }
        }
    }
    durables
}

/// What asking a durable for its info gave.
enum Asked {
    Lag(Lag),
    /// The consumer does not exist: its agent never ran against this server.
    NotFound,
    /// No answer: the user may not ask (or the server is overloaded).
    Unanswered,
    Failed(String),
}

/// Asks one durable for its info: one request.
async fn ask(
    js: jetstream::Context,
    stream: &'static str,
    durable: String,
) -> (&'static str, String, Asked) {
    let subject = format!("CONSUMER.INFO.{stream}.{durable}");
    let asked = match js
        .request::<_, _, Response<consumer::Info>>(subject, &serde_json::json!({}))
        .await
    {
        Ok(Response::Ok(info)) => Asked::Lag(Lag {
            pending: info.num_pending,
            ack_pending: u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX),
        }),
        Ok(Response::Err { error })
            if error.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND =>
        {
            Asked::NotFound
        }
        Ok(Response::Err { error }) => Asked::Failed(error.to_string()),
        Err(e) if e.kind() == jetstream::context::RequestErrorKind::TimedOut => Asked::Unanswered,
        Err(e) => Asked::Failed(e.to_string()),
    };
    (stream, durable, asked)
}

/// Asks each agent durable how far behind it is every [`CONSUMERS_EVERY`], for ever, a few
/// at a time. A durable that does not answer at all (the user may not ask: nats-server logs a
/// permission violation for each request) is not asked again, and one warning names them; a
/// durable whose answer is an error is warned about once until it answers again.
pub async fn follow_consumers(js: jetstream::Context, user: String, stats: Arc<FleetStats>) {
    let mut js = js;
    js.set_timeout(INFO_TIMEOUT);
    let client = js.client();
    let mut asking = agent_durables();
    let mut failing = BTreeSet::new();
    let mut tick = tokio::time::interval(CONSUMERS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if client.connection_state() != State::Connected {
            continue;
        }
        // Made before the first await: a closure held across it would not be `Send`.
        let requests: Vec<_> = asking
            .iter()
            .map(|(stream, durable)| ask(js.clone(), stream, durable.clone()))
            .collect();
        let answers: Vec<(&'static str, String, Asked)> =
            futures_util::stream::iter(requests).buffer_unordered(INFO_AT_ONCE).collect().await;
        let mut unanswered = Vec::new();
        for (stream, durable, asked) in answers {
            let lag = match asked {
                Asked::Lag(lag) => {
                    if failing.remove(&durable) {
                        tracing::info!(%durable, "the consumer's info answers again");
                    }
                    Some(lag)
                }
                Asked::NotFound => None,
                Asked::Unanswered => {
                    unanswered.push(format!("{stream}.{durable}"));
                    None
                }
                Asked::Failed(e) => {
                    if failing.insert(durable.clone()) {
                        tracing::warn!(%durable, error = %e, "cannot read the consumer's info; its cn_consumer_* series are left out until it answers");
                    }
                    None
                }
            };
            stats.consumer_answered(stream, &durable, lag);
        }
        if !unanswered.is_empty() {
            unanswered.sort();
            asking.retain(|(stream, durable)| !unanswered.contains(&format!("{stream}.{durable}")));
            tracing::warn!(
                user = %user,
                consumers = %unanswered.join(", "),
                "no answer to $JS.API.CONSUMER.INFO within {INFO_TIMEOUT:?}: NATS user {user} may not ask for these agent consumers' info (deploy/permissions.conf lets the auditor and the operator). Their cn_consumer_pending and cn_consumer_ack_pending series are left out, and they are not asked again until the console restarts"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn seen(agent: &str, instance: &str, processed: Option<u64>) -> Seen {
        let status = processed.map(|n| {
            serde_json::from_value(serde_json::json!({
                "agent": agent, "instance": instance, "version": "0.10.0",
                "started_at": "2026-02-20T17:00:00Z", "ts": "2026-02-20T17:00:05Z",
                "processed": n, "rejected": 0, "proof_seq": 3, "consumers": [], "stopping": false,
            }))
            .unwrap()
        });
        Seen { agent: agent.to_owned(), instance: instance.to_owned(), status }
    }

    fn render(stats: FleetStats) -> String {
        let mut registry = prometheus_client::registry::Registry::with_prefix("cn");
        registry.register_collector(Box::new(stats));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn an_instance_that_stops_answering_is_down_and_its_count_left_out() {
        let stats = FleetStats::default();
        stats.agents_seen(&[seen("executor", "0", Some(7)), seen("executor", "1", Some(2))]);
        stats.agents_seen(&[seen("executor", "0", Some(9)), seen("rl-optimizer", "0", None)]);
        let text = render(stats);
        for line in [
            "cn_inputs_handled_total{agent=\"executor\",instance=\"0\"} 9",
            "cn_agent_up{agent=\"executor\",instance=\"0\"} 1",
            "cn_agent_up{agent=\"executor\",instance=\"1\"} 0",
            // Answered the ping, not its status request.
            "cn_agent_up{agent=\"rl-optimizer\",instance=\"0\"} 0",
            "cn_agent_up{agent=\"issue-detector\",instance=\"\"} 0",
            "# TYPE cn_inputs_handled counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(!text.contains("instance=\"1\"} 2"), "{text}");
        assert!(!text.contains("simulator"), "{text}");
        assert!(!text.contains("cn_consumer_"), "{text}");
    }

    #[test]
    fn a_durable_that_answers_has_its_lag_and_one_that_does_not_none() {
        let stats = FleetStats::default();
        let lag = Lag { pending: 4, ack_pending: 1 };
        stats.consumer_answered("CN_EVENTS", "issue-detector-events", Some(lag));
        stats.consumer_answered("CN_WORK", "executor-approvals", Some(lag));
        stats.consumer_answered("CN_WORK", "executor-approvals", None);
        let text = render(stats);
        let labels = "{stream=\"CN_EVENTS\",consumer=\"issue-detector-events\"}";
        assert!(text.contains(&format!("cn_consumer_pending{labels} 4\n")), "{text}");
        assert!(text.contains(&format!("cn_consumer_ack_pending{labels} 1\n")), "{text}");
        assert!(!text.contains("executor-approvals"), "{text}");
        assert!(!text.contains("cn_agent_up"), "nothing discovered yet: {text}");
    }

    #[test]
    fn every_agent_durable_is_asked_for() {
        let durables = agent_durables();
        assert!(durables.contains(&("CN_EVENTS", "issue-detector-events".to_owned())));
        assert!(durables.contains(&("CN_WORK", "executor-approvals".to_owned())));
    }
}
