//! Publishing with the contract's headers, waiting for JetStream's ack.
//!
//! Every message carries `Nats-Msg-Id`, `Content-Type`, `Cn-Type`, `Cn-Correlation-Id` and
//! `Cn-Causation-Id` (docs/contract.md, Headers). On a stream subject the call returns only once JetStream has
//! stored the message (or recognised it as a duplicate of one it stored before), which is what
//! lets an agent ack its input afterwards without losing anything.

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{Client, HeaderMap};
use bus_schema::codec::{Outgoing, Payload};
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
}

/// What JetStream said about a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The message's sequence in its stream; 0 for core NATS subjects.
    pub stream_seq: u64,
    /// True when JetStream already had a message with this `Nats-Msg-Id` and dropped this one.
    pub duplicate: bool,
}

/// Publishes typed payloads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: Client,
    js: jetstream::Context,
}

impl Publisher {
    pub fn new(client: Client, js: jetstream::Context) -> Self {
        Self { client, js }
    }

    /// Publishes `payload` on `subject`; on a stream subject, waits for the ack.
    pub async fn publish<P: Payload>(
        &self,
        subject: &Subject<P>,
        payload: &P,
        trace: &Trace,
    ) -> Result<Published, RuntimeError> {
        let out = Outgoing::new(subject, payload)?;
        let mut h = HeaderMap::new();
        h.insert(headers::MSG_ID, trace.msg_id.as_str());
        h.insert(headers::CONTENT_TYPE, out.encoding.content_type());
        h.insert(headers::CN_TYPE, out.cn_type);
        h.insert(headers::CORRELATION_ID, trace.correlation_id.as_str());
        h.insert(headers::CAUSATION_ID, trace.causation_id.as_str());
        if subject.stream().is_some() {
            self.publish_stored(out.subject, h, out.payload).await
        } else {
            let fail = |e: &dyn std::fmt::Display| RuntimeError::Publish {
                subject: out.subject.clone(),
                message: e.to_string(),
            };
            self.client
                .publish_with_headers(out.subject.clone(), h, out.payload.into())
                .await
                .map_err(|e| fail(&e))?;
            Ok(Published { stream_seq: 0, duplicate: false })
        }
    }

    /// Publishes encoded bytes to a stream subject and waits for the ack.
    async fn publish_stored(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Vec<u8>,
    ) -> Result<Published, RuntimeError> {
        let publish = PublishMessage::build().payload(payload.into()).headers(headers);
        self.send(subject, publish)
            .await
            .map_err(|(subject, e)| RuntimeError::Publish { subject, message: e.to_string() })
    }

    /// Sends and waits for the ack, keeping JetStream's error for callers that match on it.
    pub(crate) async fn send(
        &self,
        subject: String,
        publish: PublishMessage,
    ) -> Result<Published, (String, jetstream::context::PublishError)> {
        let ack = match self.js.send_publish(subject.clone(), publish).await {
            Ok(future) => future.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(ack) => Ok(Published { stream_seq: ack.sequence, duplicate: ack.duplicate }),
            Err(e) => Err((subject, e)),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}
