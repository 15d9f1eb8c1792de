//! What an agent implements: a handler for one decoded input at a time.
//!
//! The runtime decodes and validates every message before the handler sees it (bad input
//! becomes `event_rejected` without reaching agent code), hands it over with a [`Context`]
//! for publishing outputs and writing proof records, and acks the input only after the
//! handler returns `Ok` and every output and record it wrote is stored (they are sent
//! pipelined; the runtime waits for their acks before the input's).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bus_schema::codec::Payload;
use bus_schema::fleet::InputDef;
use bus_schema::inputs::{AgentInputs, AgentRequests, FromInbound, InputName};
use bus_schema::{AgentName, RejectReason, Subject};

#[doc(no_inline)]
pub use bus_schema::inputs::NoRequests;

use crate::error::RuntimeError;
use crate::position::Positions;
use crate::proof::{ProofDraft, ProofWriter};
use crate::publish::{Published, Publisher, Sent, Trace};

/// Why a handler did not finish an input.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth trying again (the bus or the store hiccupped). Retried with back-off, then
    /// rejected as poison once the attempts run out.
    #[error("{0}")]
    Retry(String),
    /// Can never succeed: recorded as `event_rejected` with the reason, and acked.
    #[error("{reason}: {message}")]
    Reject { reason: RejectReason, message: String },
    /// Going on would be unsafe: the input is handed back and the agent stops.
    #[error(transparent)]
    Fatal(RuntimeError),
}

impl From<RuntimeError> for HandleError {
    fn from(e: RuntimeError) -> Self {
        if e.is_fatal() { HandleError::Fatal(e) } else { HandleError::Retry(e.to_string()) }
    }
}

/// An agent's logic. `handle` runs for one input at a time, in delivery order.
///
/// Its inputs, requests and due work are types of its own: the runtime consumes exactly the
/// inputs [`Handler::Input`] declares and hands each over as that enum, so a handler that
/// matches it without a catch-all handles every input it subscribes to, or does not compile.
pub trait Handler: Send {
    /// What the agent reads, one variant per consumer (declared with [`bus_schema::inputs!`]).
    type Input: AgentInputs;
    /// The core requests it answers ([`bus_schema::requests!`]; [`NoRequests`] for none).
    type Request: AgentRequests;
    /// What identifies an item of its due work ([`NoWork`] for none). Its `Display` is the
    /// item's stable key, from which the ids of its outputs derive.
    type Work: WorkKey;

    fn handle(
        &mut self,
        ctx: &mut Context<'_>,
        input: Self::Input,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;

    /// Called before every snapshot of the state file (about once a second, between inputs)
    /// and when the agent stops: the place to write state kept in memory between inputs.
    /// What it writes is covered by the snapshot, with the stream positions of every input
    /// handled so far; after a crash the agent replays the inputs after them.
    fn checkpoint(&mut self) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// Work that falls due by the clock rather than by an input (a pending approval that
    /// expires unanswered). The runtime asks about once a second, between inputs, and hands
    /// each item to [`Handler::handle_due`].
    fn due(&mut self, _now: bus_schema::Timestamp) -> Vec<Due<Self::Work>> {
        Vec::new()
    }

    /// Answers a core NATS request on one of the agent's request subjects. Its proof
    /// records and outputs are written like an input's; the reply goes to the requester only.
    fn respond(
        &mut self,
        _ctx: &mut Context<'_>,
        _request: Self::Request,
    ) -> impl Future<Output = Result<Reply, HandleError>> + Send {
        async {
            Err(HandleError::Reject {
                reason: RejectReason::Refused,
                message: "this agent answers no requests".to_owned(),
            })
        }
    }

    /// Does one item of due work. Its outputs get ids derived from the item's key, so doing it
    /// again (after a crash, or an error) publishes duplicates JetStream drops.
    fn handle_due(
        &mut self,
        _ctx: &mut Context<'_>,
        _due: Due<Self::Work>,
    ) -> impl Future<Output = Result<(), HandleError>> + Send {
        async { Ok(()) }
    }
}

/// The key of an item of due work: a type of the agent's (an enum of what falls due), whose
/// `Display` is stable across restarts and unique for the work.
pub trait WorkKey: Clone + fmt::Debug + fmt::Display + Send + 'static {}

impl<T: Clone + fmt::Debug + fmt::Display + Send + 'static> WorkKey for T {}

/// The due work of an agent that has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoWork {}

impl fmt::Display for NoWork {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

/// The answer to a request, encoded like any payload of the contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub payload: Vec<u8>,
    pub content_type: &'static str,
    pub cn_type: &'static str,
}

impl Reply {
    pub fn of<P: Payload>(payload: &P) -> Result<Self, HandleError> {
        let bytes =
            bus_schema::codec::encode(payload).map_err(|e| HandleError::Retry(e.to_string()))?;
        Ok(Self { payload: bytes, content_type: P::ENCODING.content_type(), cn_type: P::CN_TYPE })
    }
}

/// An item of work that fell due by the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due<K> {
    /// Stable and unique for the work: its outputs' ids derive from it.
    pub key: K,
    /// The chain the work continues.
    pub correlation_id: String,
}

impl<K: WorkKey> Due<K> {
    /// The input metadata a due item is handled under.
    pub(crate) fn meta(&self) -> InputMeta {
        let id = format!("due:{}", self.key);
        InputMeta {
            input: "",
            subject: String::new(),
            stream: "due".to_owned(),
            stream_seq: 0,
            delivered: 1,
            input_id: id.clone(),
            message_id: id,
            correlation_id: self.correlation_id.clone(),
            traceparent: None,
        }
    }
}

/// Where an input came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMeta {
    /// The input (consumer) it was read by, as the agent declares it; empty for due work and
    /// requests.
    pub input: &'static str,
    /// The subject as published: without the partition token the server stores it with.
    pub subject: String,
    pub stream: String,
    pub stream_seq: u64,
    /// 1 on first delivery.
    pub delivered: u32,
    /// `{stream}:{epoch}:{stream_seq}`: unique and stable across redeliveries.
    pub input_id: String,
    /// The input's own `Nats-Msg-Id`, or its input id.
    pub message_id: String,
    /// The chain's correlation id: the input's `Cn-Correlation-Id`, or its message id.
    pub correlation_id: String,
    /// The input's W3C `traceparent`, if it carried a valid one.
    pub traceparent: Option<bus_schema::trace::TraceParent>,
}

/// Where a stream input's id says it sits: `({stream}:{epoch}, stream_seq)`; `None` for due
/// work and ids without a position. Lets a stateful handler remember what it applied and skip
/// a redelivery.
pub fn stream_position(input_id: &str) -> Option<(&str, u64)> {
    if input_id.starts_with("due:") {
        return None;
    }
    let (source, seq) = input_id.rsplit_once(':')?;
    Some((source, seq.parse().ok()?))
}

/// A handler's view of the runtime while it handles one input.
#[derive(Debug)]
pub struct Context<'a> {
    agent: &'a AgentName,
    inputs: &'a [InputDef],
    meta: &'a InputMeta,
    publisher: &'a Publisher,
    proof: &'a mut ProofWriter,
    positions: &'a Positions,
    /// How many outputs of each type this input has produced, for deterministic ids.
    counts: HashMap<&'static str, u32>,
    /// Outputs sent whose acks [`Context::confirm`] awaits.
    sent: Vec<Sent>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        agent: &'a AgentName,
        inputs: &'a [InputDef],
        meta: &'a InputMeta,
        publisher: &'a Publisher,
        proof: &'a mut ProofWriter,
        positions: &'a Positions,
    ) -> Self {
        Self {
            agent,
            inputs,
            meta,
            publisher,
            proof,
            positions,
            counts: HashMap::new(),
            sent: Vec::new(),
        }
    }

    /// Waits until every output and proof record this input sent so far is stored. The runtime
    /// calls it when the handler is done, before it acks the input; a handler calls it before
    /// it marks outputs as sent in its own state (an [`crate::Outbox`], a pending list), since
    /// [`Context::publish`] returns once an output is sent, not stored. An error leaves the
    /// input to be handled again (its outputs and records are de-duplicated then).
    pub async fn confirm(&mut self) -> Result<(), RuntimeError> {
        let mut first_error = None;
        for sent in self.sent.drain(..) {
            if let Err(e) = sent.acked().await {
                first_error.get_or_insert(e);
            }
        }
        // A proof error comes first: it may be a reason to stop (another writer on the chain).
        self.proof.flush().await?;
        first_error.map_or(Ok(()), Err)
    }

    /// Ends the handling of an input, request or item of due work: waits for what the handler
    /// sent, whatever it decided, and says how it ended. A fatal error wins; a failed wait turns
    /// success or a rejection into a retry (what it sent must be stored before the input is
    /// acked); otherwise the handler's outcome stands.
    pub(crate) async fn conclude<T>(
        &mut self,
        handled: Result<T, HandleError>,
    ) -> Result<T, HandleError> {
        if let Err(HandleError::Fatal(_)) = handled {
            return handled;
        }
        match (handled, self.confirm().await) {
            (_, Err(e)) if e.is_fatal() => Err(HandleError::Fatal(e)),
            (Ok(_), Err(e)) | (Err(HandleError::Reject { .. }), Err(e)) => {
                Err(HandleError::from(e))
            }
            (handled, _) => handled,
        }
    }

    /// How many messages another of this agent's inputs has not finished yet: stored and not
    /// delivered, or in hand. Inputs on different streams are not ordered with each other; an
    /// agent that needs facts from one input to decide on another can wait until that input
    /// caught up. Answered from what the runtime knows ([`Positions::behind`]), without a
    /// request to the server, so it costs nothing on the way to a decision; it misses a
    /// message the server has sent and the agent not yet read (it lets the agent read first,
    /// but not what is still on the wire). Use [`Context::backlog_on_server`] where that
    /// matters more than half a millisecond.
    pub async fn backlog(&self, input: impl InputName) -> Result<u64, RuntimeError> {
        let durable = self.input_def(input)?.durable(self.agent);
        // The agent runs on one thread: let its pullers take in what has arrived.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        Ok(self.positions.behind(&durable))
    }

    /// Like [`Context::backlog`], asking the server (the consumer's pending and unacked
    /// counts): exact, at the cost of a round trip that nats-server before 2.9.15 makes
    /// expensive on a filtered consumer. For rare decisions, not every input.
    pub async fn backlog_on_server(&self, input: impl InputName) -> Result<u64, RuntimeError> {
        let def = self.input_def(input)?;
        let durable = def.durable(self.agent);
        let fail = |e: &dyn std::fmt::Display| RuntimeError::Consumer {
            consumer: durable.clone(),
            message: e.to_string(),
        };
        let stream = def.stream().ok_or_else(|| fail(&"a core NATS subject has no backlog"))?;
        let info = self
            .publisher
            .jetstream()
            .get_stream_no_info(stream.name())
            .await
            .map_err(|e| fail(&e))?
            .consumer_info(&durable)
            .await
            .map_err(|e| fail(&e))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// The declaration of one of this agent's inputs.
    fn input_def(&self, input: impl InputName) -> Result<&'a InputDef, RuntimeError> {
        let input = input.as_str();
        self.inputs.iter().find(|i| i.name == input).ok_or_else(|| RuntimeError::Consumer {
            consumer: input.to_owned(),
            message: "not an input of this agent".to_owned(),
        })
    }

    pub fn meta(&self) -> &InputMeta {
        self.meta
    }

    /// The last message stored on `subject`, decoded by the contract's rules as an input would
    /// be; `None` when the subject has none. For a fact another consumer has not delivered yet
    /// (a proposal's incident): asking the stream beats waiting for the consumer to catch up.
    pub async fn last_stored<P: FromInbound>(
        &self,
        subject: &Subject<P>,
    ) -> Result<Option<P>, RuntimeError> {
        let Some(stream) = subject.stream() else {
            return Err(RuntimeError::Stream {
                stream: subject.to_string(),
                message: "a core NATS subject stores nothing".to_owned(),
            });
        };
        let fail = |e: &dyn std::fmt::Display| RuntimeError::Stream {
            stream: stream.name().to_owned(),
            message: format!("cannot read the last message on {subject}: {e}"),
        };
        let js = self.publisher.jetstream();
        let stream = js.get_stream_no_info(stream.name()).await.map_err(|e| fail(&e))?;
        let stored = match crate::streams::last_of_subject(&stream, subject.as_str()).await {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(fail(&e)),
        };
        let clock = bus_schema::Timestamp::from_unix_nanos(stored.time.unix_timestamp_nanos())
            .unwrap_or_else(bus_schema::Timestamp::now);
        let inbound = bus_schema::codec::decode_message_at(
            subject.as_str(),
            &crate::publish::header_pairs(Some(&stored.headers)),
            &stored.payload,
            &bus_schema::Limits::DEFAULT,
            clock,
        )
        .map_err(|e| fail(&e))?;
        Ok(P::from_inbound(inbound))
    }

    fn next(&mut self, what: &'static str) -> u32 {
        let n = self.counts.entry(what).or_insert(0);
        *n += 1;
        *n
    }

    /// Publishes an output of this input. It is sent at once, together with the proof records
    /// before it, without waiting for each ack: the runtime waits until all of them are stored
    /// before it acks the input, and if one is not, the input is handled again. State that
    /// says "published" is written after [`Context::confirm`].
    ///
    /// Its `Nats-Msg-Id` is `{agent}:{input id}:{type}:{n}`, the same on every redelivery of
    /// the input, so a repeat is dropped by JetStream.
    pub async fn publish<P: Payload>(
        &mut self,
        subject: &Subject<P>,
        payload: &P,
    ) -> Result<(), RuntimeError> {
        let correlation_id = self.meta.correlation_id.clone();
        self.publish_in_chain(subject, payload, correlation_id).await
    }

    /// Like [`Context::publish`], for an output that continues another chain than the input's
    /// (an outcome judged while handling a later sample carries the action's correlation id).
    pub async fn publish_in_chain<P: Payload>(
        &mut self,
        subject: &Subject<P>,
        payload: &P,
        correlation_id: String,
    ) -> Result<(), RuntimeError> {
        let msg_id = self.output_id(P::CN_TYPE);
        self.publish_as(subject, payload, msg_id, correlation_id).await
    }

    /// The `Nats-Msg-Id` of this input's next output of a type.
    fn output_id(&mut self, cn_type: &'static str) -> String {
        let n = self.next(cn_type);
        format!("{}:{}:{cn_type}:{n}", self.agent, self.meta.input_id)
    }

    /// Like [`Context::publish`], and waits until this output is stored, for a handler whose
    /// next step depends on it (an order the executor reports as sent only once it is).
    pub async fn publish_confirmed<P: Payload>(
        &mut self,
        subject: &Subject<P>,
        payload: &P,
    ) -> Result<Published, RuntimeError> {
        let msg_id = self.output_id(P::CN_TYPE);
        let trace = self.trace(msg_id, self.meta.correlation_id.clone());
        self.publisher.publish(subject, payload, &trace).await
    }

    /// Like [`Context::publish_in_chain`] for an output whose identity is its own rather than
    /// this input's (an outbox decided under one input and published under another, or after a
    /// restart): its `Nats-Msg-Id` is `{agent}:{key}:{type}`, so publishing it again under any
    /// input is dropped by JetStream.
    pub async fn publish_keyed<P: Payload>(
        &mut self,
        subject: &Subject<P>,
        payload: &P,
        correlation_id: String,
        key: &str,
    ) -> Result<(), RuntimeError> {
        let msg_id = format!("{}:{key}:{}", self.agent, P::CN_TYPE);
        self.publish_as(subject, payload, msg_id, correlation_id).await
    }

    async fn publish_as<P: Payload>(
        &mut self,
        subject: &Subject<P>,
        payload: &P,
        msg_id: String,
        correlation_id: String,
    ) -> Result<(), RuntimeError> {
        let trace = self.trace(msg_id, correlation_id);
        if let Some(sent) = self.publisher.send_payload(subject, payload, &trace).await? {
            self.sent.push(sent);
        }
        Ok(())
    }

    /// Like [`Context::prove`] for a record whose identity is `key` rather than this input's:
    /// recorded once whichever input writes it.
    pub async fn prove_keyed(&mut self, draft: ProofDraft, key: &str) -> Result<u64, RuntimeError> {
        let key = format!("keyed:{key}:{}", draft.kind);
        self.prove_as(draft, &key).await
    }

    /// Records a decision on the proof log, once per input even across redeliveries.
    /// The correlation id defaults to the input's.
    pub async fn prove(&mut self, draft: ProofDraft) -> Result<u64, RuntimeError> {
        let n = self.next(draft.kind.as_str());
        let key = format!("{}:{}:{n}", self.meta.input_id, draft.kind);
        self.prove_as(draft, &key).await
    }

    /// How an output of this input relates to its chain: caused by the input, in the chain
    /// `correlation_id`, with the chain's trace (if any) and a span of its own.
    fn trace(&self, msg_id: String, correlation_id: String) -> Trace {
        let traceparent = self.trace_of(&correlation_id).map(|t| t.child(&msg_id));
        Trace { msg_id, correlation_id, causation_id: self.meta.message_id.clone(), traceparent }
    }

    /// The W3C trace of a chain, if an input of it carried one (the runtime remembers it as
    /// each input arrives, before its handler runs).
    fn trace_of(&self, correlation_id: &str) -> Option<bus_schema::trace::TraceParent> {
        self.publisher.trace_of(correlation_id)
    }

    /// Appends `draft` once per `key`, in the input's chain unless it names another.
    async fn prove_as(&mut self, mut draft: ProofDraft, key: &str) -> Result<u64, RuntimeError> {
        if draft.correlation_id.is_none() {
            draft.correlation_id = Some(self.meta.correlation_id.clone());
        }
        if draft.traceparent.is_none() {
            let chain = draft.correlation_id.as_deref().unwrap_or_default();
            draft.traceparent = self.trace_of(chain).map(|t| t.child(key));
        }
        self.proof.send_record(draft, Some(key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_ids_carry_the_stream_position() {
        assert_eq!(stream_position("CN_EVENTS:k3x9:42"), Some(("CN_EVENTS:k3x9", 42)));
        assert_eq!(stream_position("due:tick:1"), None);
        assert_eq!(stream_position("nonsense"), None);
    }
}
