//! Publishing with the contract's headers, and JetStream's acks.
//!
//! Every message carries `Nats-Msg-Id`, `Content-Type`, `Cn-Type`, `Cn-Correlation-Id` and
//! `Cn-Causation-Id`, and `traceparent` when its chain has a W3C trace (docs/contract.md,
//! Headers). On a stream subject, [`Publisher::publish`]
//! returns once JetStream has stored the message (or recognised it as a duplicate of one it
//! stored before); the runtime's handlers send without waiting and collect the acks
//! (`Sent`) to await before their input is acked, which is what lets an agent ack its input
//! without losing anything.

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{Client, HeaderMap};
use bus_schema::codec::{Outgoing, Payload};
use bus_schema::trace::TraceParent;
use bus_schema::{Subject, headers};

use crate::error::RuntimeError;

/// How a message relates to the chain of work it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Deterministic id: the same input always yields the same id, so JetStream drops repeats.
    pub msg_id: String,
    /// The id of the event that started the chain.
    pub correlation_id: String,
    /// The id of the message that caused this one.
    pub causation_id: String,
    /// The W3C trace of the chain, with this message's own span id.
    pub traceparent: Option<TraceParent>,
}

impl Trace {
    /// A message that starts its own chain: `id` is its message and correlation id.
    pub fn new(id: impl Into<String>) -> Self {
        let id = id.into();
        Self { msg_id: id.clone(), correlation_id: id.clone(), causation_id: id, traceparent: None }
    }
}

/// The W3C traces of the chains an agent saw lately, by correlation id: an output or record
/// that continues a chain from the agent's state (an outcome judged later, a wait that fell
/// due) carries the trace of the input that started it. Bounded: the oldest are forgotten.
#[derive(Debug, Default)]
pub struct Traces {
    by_correlation: std::collections::HashMap<String, TraceParent>,
    order: std::collections::VecDeque<String>,
}

impl Traces {
    /// How many chains' traces are kept.
    pub const CAPACITY: usize = 10_000;

    pub fn remember(&mut self, correlation_id: &str, trace: TraceParent) {
        if self.by_correlation.insert(correlation_id.to_owned(), trace).is_none() {
            self.order.push_back(correlation_id.to_owned());
            if self.order.len() > Self::CAPACITY {
                if let Some(oldest) = self.order.pop_front() {
                    self.by_correlation.remove(&oldest);
                }
            }
        }
    }

    pub fn of(&self, correlation_id: &str) -> Option<TraceParent> {
        self.by_correlation.get(correlation_id).copied()
    }
}

/// A message's headers as `(name, value)` pairs, for decoding.
pub(crate) fn header_pairs(headers: Option<&async_nats::HeaderMap>) -> Vec<(&str, &str)> {
    headers
        .into_iter()
        .flat_map(|h| h.iter())
        .flat_map(|(name, values)| values.iter().map(move |v| (name.as_ref(), v.as_str())))
        .collect()
}

/// What JetStream said about a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The message's sequence in its stream; 0 for core NATS subjects.
    pub stream_seq: u64,
    /// True when JetStream already had a message with this `Nats-Msg-Id` and dropped this one.
    pub duplicate: bool,
}

/// A message sent to a stream whose ack has not been awaited yet. Publishes are pipelined:
/// an input's proof records and outputs go out together, and their acks are awaited before
/// the input is acked.
#[derive(Debug)]
pub(crate) struct Sent {
    pub subject: String,
    pub ack: jetstream::context::PublishAckFuture,
}

impl Sent {
    /// Waits for JetStream's ack.
    pub async fn acked(self) -> Result<Published, RuntimeError> {
        self.ack_or_error()
            .await
            .map_err(|(subject, e)| RuntimeError::Publish { subject, message: e.to_string() })
    }

    /// Like [`Sent::acked`], keeping JetStream's error.
    pub async fn ack_or_error(
        self,
    ) -> Result<Published, (String, jetstream::context::PublishError)> {
        match self.ack.await {
            Ok(ack) => Ok(Published { stream_seq: ack.sequence, duplicate: ack.duplicate }),
            Err(e) => Err((self.subject, e)),
        }
    }
}

/// Publishes typed payloads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: Client,
    js: jetstream::Context,
    traces: std::sync::Arc<std::sync::Mutex<Traces>>,
}

impl Publisher {
    pub fn new(client: Client, js: jetstream::Context) -> Self {
        Self { client, js, traces: Default::default() }
    }

    /// Publishes `payload` on `subject`; on a stream subject, waits for the ack.
    pub async fn publish<P: Payload>(
        &self,
        subject: &Subject<P>,
        payload: &P,
        trace: &Trace,
    ) -> Result<Published, RuntimeError> {
        match self.send_payload(subject, payload, trace).await? {
            Some(sent) => sent.acked().await,
            None => Ok(Published { stream_seq: 0, duplicate: false }),
        }
    }

    /// Sends `payload` without waiting: on a stream subject, the ack to wait for later
    /// ([`Sent::acked`]); `None` on a core NATS subject, which has none.
    pub(crate) async fn send_payload<P: Payload>(
        &self,
        subject: &Subject<P>,
        payload: &P,
        trace: &Trace,
    ) -> Result<Option<Sent>, RuntimeError> {
        let out = Outgoing::new(subject, payload)?;
        let mut h = HeaderMap::new();
        h.insert(headers::MSG_ID, trace.msg_id.as_str());
        h.insert(headers::CONTENT_TYPE, out.encoding.content_type());
        h.insert(headers::CN_TYPE, out.cn_type);
        h.insert(headers::CORRELATION_ID, trace.correlation_id.as_str());
        h.insert(headers::CAUSATION_ID, trace.causation_id.as_str());
        if let Some(tp) = &trace.traceparent {
            h.insert(headers::TRACEPARENT, tp.to_string().as_str());
        }
        if subject.stream().is_some() {
            let publish = PublishMessage::build().payload(out.payload.into()).headers(h);
            self.send(out.subject, publish)
                .await
                .map(Some)
                .map_err(|(subject, e)| RuntimeError::Publish { subject, message: e.to_string() })
        } else {
            self.client
                .publish_with_headers(out.subject.clone(), h, out.payload.into())
                .await
                .map_err(|e| RuntimeError::Publish {
                    subject: out.subject.clone(),
                    message: e.to_string(),
                })?;
            Ok(None)
        }
    }

    /// Sends to a stream subject without waiting for the ack, keeping JetStream's error for
    /// callers that match on it.
    pub(crate) async fn send(
        &self,
        subject: String,
        publish: PublishMessage,
    ) -> Result<Sent, (String, jetstream::context::PublishError)> {
        match self.js.send_publish(subject.clone(), publish).await {
            Ok(ack) => Ok(Sent { subject, ack }),
            Err(e) => Err((subject, e)),
        }
    }

    /// Remembers the trace of a chain an input belongs to.
    pub fn remember_trace(&self, correlation_id: &str, trace: TraceParent) {
        if let Ok(mut traces) = self.traces.lock() {
            traces.remember(correlation_id, trace);
        }
    }

    /// The trace of a chain, if an input of it carried one lately.
    pub fn trace_of(&self, correlation_id: &str) -> Option<TraceParent> {
        self.traces.lock().ok().and_then(|t| t.of(correlation_id))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}
