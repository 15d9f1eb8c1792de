//! The proof writer: appends this instance's records to its hash chain, across restarts.
//!
//! The chain's head (last seq and hash) is read back from CN_PROOF at start, so the stream,
//! not a local file, is the source of truth. A record is sealed after the head and published
//! with `Nats-Expected-Last-Subject-Sequence`, so if two processes ever share an instance id the
//! second append fails instead of forking the chain. A publish that fails or times out may or
//! may not have stored the record: the writer reads the head back before its next append.
//!
//! While an agent handles an input, its records are sent without waiting for JetStream's ack
//! (`send_record`): the record is on its way while the agent publishes the output it
//! explains, and [`ProofWriter::flush`], which the runtime calls before it acks the input,
//! waits for it. The next append waits for it too, since its expected sequence is the
//! previous record's, so at most one record is in flight.
//!
//! An optional idempotency key makes an append happen once per key: an input redelivered (or
//! replayed after a crash) does not get its decision recorded twice. Keys live in the state
//! file, which is a snapshot (see [`crate::store`]), and each keyed record carries its key in a
//! `Cn-Proof-Key` header: at start, and after a failed publish, the writer reads the records the
//! snapshot does not cover back from the chain and learns their keys. No write waits for the
//! disk.

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bus_schema::proof::{ChainHead, PROOF_VERSION, ProofHash, ProofKind, ProofRecord, SealedProof};
use bus_schema::subject::{self, Stream};
use bus_schema::{
    Action, AgentName, Env, InstanceId, ServiceName, Subject, Timestamp, Uuid, headers,
};
use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;
use crate::publish::{Publisher, Sent};
use crate::store::{Store, Table};

/// How many idempotency keys are remembered (the oldest are forgotten first).
const KEPT_KEYS: u64 = 100_000;
/// With no state file, how far back in CN_PROOF (stream sequences) the writer looks for
/// records whose keys it must know: inputs handed back by a crash are a handful of records old.
const UNKNOWN_STATE_LOOKBACK: u64 = 10_000;

/// The last record whose key (if any) the state file knows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Known {
    seq: u64,
    stream_seq: u64,
}

const KEYS: Table<u64> = Table::new("proof.keys");
const KEY_BY_SEQ: Table<String> = Table::new("proof.key_by_seq");
const KNOWN: Table<Known> = Table::new("proof.known");

/// The parts of a record the agent decides; the writer adds identity, seq, time and chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ProofDraft {
    pub kind: ProofKind,
    pub correlation_id: Option<String>,
    /// Set by the runtime from the chain's trace, if it has one.
    pub traceparent: Option<bus_schema::trace::TraceParent>,
    pub env: Option<Env>,
    pub service: Option<ServiceName>,
    pub action: Option<Action>,
    pub proposal_id: Option<Uuid>,
    pub incident_id: Option<Uuid>,
    pub reason: Option<String>,
    pub detail: serde_json::Value,
}

impl ProofDraft {
    pub fn new(kind: ProofKind) -> Self {
        Self {
            kind,
            correlation_id: None,
            traceparent: None,
            env: None,
            service: None,
            action: None,
            proposal_id: None,
            incident_id: None,
            reason: None,
            detail: serde_json::Value::Null,
        }
    }

    pub fn scope(mut self, env: &Env, service: &ServiceName) -> Self {
        self.env = Some(env.clone());
        self.service = Some(service.clone());
        self
    }

    /// For records about a whole environment (onboarding).
    pub fn env(mut self, env: &Env) -> Self {
        self.env = Some(env.clone());
        self
    }

    /// The environment and service `subject` names, as far as its tokens are valid (for a
    /// record about an input that could not be read, such as a rejection).
    pub fn scope_of_subject(self, subject: &str) -> Self {
        match bus_schema::subject::scope_of(subject) {
            (Some(env), Some(service)) => self.scope(&env, &service),
            (Some(env), None) => self.env(&env),
            _ => self,
        }
    }

    pub fn action(mut self, action: &Action) -> Self {
        self.action = Some(action.clone());
        self
    }

    pub fn proposal(mut self, id: Uuid) -> Self {
        self.proposal_id = Some(id);
        self
    }

    pub fn incident(mut self, id: Uuid) -> Self {
        self.incident_id = Some(id);
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn correlation(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// Appends to `cn.proof.{agent}.{instance}`.
#[derive(Debug)]
pub struct ProofWriter {
    publisher: Publisher,
    store: Store,
    agent: AgentName,
    instance: InstanceId,
    subject: Subject<ProofRecord>,
    head: ChainHead,
    /// CN_PROOF's sequence of the head record (0 when the chain is empty).
    head_stream_seq: u64,
    /// A publish failed or timed out: whether its record is stored is unknown until the head
    /// is read back.
    stale: bool,
    /// The last record sent, until its ack is in.
    in_flight: Option<InFlight>,
}

/// A record sent and not acknowledged yet. `head` already names it.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    key: Option<String>,
    sent: Sent,
}

impl ProofWriter {
    /// Finds the chain's head in CN_PROOF and learns the keys of records the state file missed.
    pub async fn open(
        publisher: Publisher,
        store: Store,
        agent: AgentName,
        instance: InstanceId,
    ) -> Result<Self, RuntimeError> {
        let subject = subject::PROOF.subject(&agent, &instance);
        let mut writer = Self {
            publisher,
            store,
            agent,
            instance,
            subject,
            head: ChainHead::EMPTY,
            head_stream_seq: 0,
            stale: false,
            in_flight: None,
        };
        writer.resync().await?;
        Ok(writer)
    }

    /// The last record written.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    pub fn subject(&self) -> &Subject<ProofRecord> {
        &self.subject
    }

    fn fail(&self, message: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Proof { subject: self.subject.to_string(), message: message.to_string() }
    }

    async fn read_head(&mut self) -> Result<(), RuntimeError> {
        let js = self.publisher.jetstream();
        let stream = js.get_stream(Stream::Proof.name()).await.map_err(|e| self.fail(e))?;
        match stream.get_last_raw_message_by_subject(self.subject.as_str()).await {
            Ok(msg) => {
                let record: ProofRecord = serde_json::from_slice(&msg.payload).map_err(|e| {
                    RuntimeError::ProofCorrupt {
                        subject: self.subject.to_string(),
                        message: format!(
                            "the last stored record (stream seq {}) is unreadable: {e}",
                            msg.sequence
                        ),
                    }
                })?;
                self.head = ChainHead { seq: record.seq, hash: ProofHash::of(&msg.payload) };
                self.head_stream_seq = msg.sequence;
                Ok(())
            }
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                self.head = ChainHead::EMPTY;
                self.head_stream_seq = 0;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Reads the head back and learns the keys of the records stored since the state file's
    /// snapshot (or, with no state file, of the chain's recent records).
    async fn resync(&mut self) -> Result<(), RuntimeError> {
        self.read_head().await?;
        let known = self.store.get(&KNOWN, "head")?;
        let from = match known {
            Some(k) if k.seq >= self.head.seq => {
                self.stale = false;
                return Ok(());
            }
            Some(k) => k.stream_seq + 1,
            None => self.head_stream_seq.saturating_sub(UNKNOWN_STATE_LOOKBACK).max(1),
        };
        let js = self.publisher.jetstream();
        let stream = js.get_stream_no_info(Stream::Proof.name()).await.map_err(|e| self.fail(e))?;
        let newer =
            crate::streams::read_range(&stream, self.subject.as_str(), from, self.head_stream_seq)
                .await
                .map_err(|e| self.fail(format!("reading the chain back: {e}")))?;
        let mut learned = 0_usize;
        for msg in &newer {
            let Some(key) = msg.headers.get(headers::PROOF_KEY) else { continue };
            let Ok(record) = serde_json::from_slice::<ProofRecord>(&msg.payload) else { continue };
            self.remember(key.as_str(), record.seq, msg.sequence)?;
            learned += 1;
        }
        let head = Known { seq: self.head.seq, stream_seq: self.head_stream_seq };
        self.store.write(|tx| tx.put(&KNOWN, "head", &head))?;
        if learned > 0 {
            tracing::info!(
                learned,
                from_stream_seq = from,
                "learned the keys of proof records stored after the last snapshot"
            );
        }
        self.stale = false;
        Ok(())
    }

    /// Stores `key` for the record at `seq` (forgetting the oldest beyond [`KEPT_KEYS`]).
    fn remember(&self, key: &str, seq: u64, stream_seq: u64) -> Result<(), RuntimeError> {
        self.store.write(|tx| {
            tx.put(&KEYS, key, &seq)?;
            tx.put(&KEY_BY_SEQ, &seq_key(seq), &key.to_owned())?;
            let old = seq_key(seq.saturating_sub(KEPT_KEYS));
            if let Some(old_key) = tx.get(&KEY_BY_SEQ, &old)? {
                tx.remove(&KEYS, &old_key)?;
                tx.remove(&KEY_BY_SEQ, &old)?;
            }
            tx.put(&KNOWN, "head", &Known { seq, stream_seq })
        })
    }

    /// Appends a record and waits until it is stored; with a key, at most once per key.
    /// Returns the record's seq.
    pub async fn append(
        &mut self,
        draft: ProofDraft,
        key: Option<&str>,
    ) -> Result<u64, RuntimeError> {
        let seq = self.send_record(draft, key).await?;
        self.flush().await?;
        Ok(seq)
    }

    /// Like [`ProofWriter::append`] without waiting for the ack: the record is sent, and
    /// [`ProofWriter::flush`] (or the next append) waits until it is stored.
    pub(crate) async fn send_record(
        &mut self,
        draft: ProofDraft,
        key: Option<&str>,
    ) -> Result<u64, RuntimeError> {
        // The previous record's stream sequence is this one's expected last sequence.
        self.flush().await?;
        // After a failed publish the head may have moved (the record was stored after all):
        // read it back, with the keys of what was stored, before anything else.
        if self.stale {
            self.resync().await?;
        }
        if let Some(k) = key {
            if let Some(seq) = self.store.get(&KEYS, k)? {
                return Ok(seq);
            }
        }
        let sealed = self.seal(draft)?;
        let seq = sealed.record.seq;
        // Until its ack is in (or the send failed), whether it is stored is unknown: should the
        // wait be cut short (a shutdown's grace running out), the head is read back before the
        // next append rather than trusted.
        self.stale = true;
        let sent = self.send(seq, sealed.bytes, sealed.hash, key).await?;
        self.head = ChainHead { seq, hash: sealed.hash };
        self.in_flight = Some(InFlight { seq, key: key.map(str::to_owned), sent });
        Ok(seq)
    }

    /// Waits until the last record appended is stored. After an error the head is read back
    /// before the next append.
    pub async fn flush(&mut self) -> Result<(), RuntimeError> {
        let Some(InFlight { seq, key, sent }) = self.in_flight.take() else { return Ok(()) };
        let stream_seq = match sent.ack_or_error().await {
            // We only publish a seq the stream does not have yet, so a duplicate means another
            // process wrote this seq of this chain first.
            Ok(ack) if ack.duplicate => {
                Err(RuntimeError::ProofChainContended { subject: self.subject.to_string() })
            }
            Ok(ack) => Ok(ack.stream_seq),
            Err((subject, e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Err(RuntimeError::ProofChainContended { subject })
            }
            Err((_, e)) => Err(self.fail(e)),
        };
        let stream_seq = match stream_seq {
            Ok(s) => s,
            Err(e) => {
                self.stale = true;
                return Err(e);
            }
        };
        self.head_stream_seq = stream_seq;
        self.stale = false;
        match key {
            Some(k) => self.remember(&k, seq, stream_seq),
            None => self.store.write(|tx| tx.put(&KNOWN, "head", &Known { seq, stream_seq })),
        }
    }

    fn seal(&self, d: ProofDraft) -> Result<SealedProof, RuntimeError> {
        let record = ProofRecord {
            v: PROOF_VERSION,
            agent: self.agent.clone(),
            instance: self.instance.clone(),
            seq: 0,
            ts: Timestamp::now(),
            kind: d.kind,
            correlation_id: d.correlation_id,
            traceparent: d.traceparent,
            env: d.env,
            service: d.service,
            action: d.action,
            proposal_id: d.proposal_id,
            incident_id: d.incident_id,
            reason: d.reason,
            detail: d.detail,
            prev_hash: ProofHash::GENESIS,
        };
        record.seal_after(self.head).map_err(|e| self.fail(e))
    }

    /// Sends the record at `seq`, chained to the head.
    async fn send(
        &self,
        seq: u64,
        bytes: Vec<u8>,
        hash: ProofHash,
        key: Option<&str>,
    ) -> Result<Sent, RuntimeError> {
        let mut h = HeaderMap::new();
        if let Some(key) = key {
            h.insert(headers::PROOF_KEY, key);
        }
        h.insert(headers::MSG_ID, format!("proof:{}:{}:{seq}", self.agent, self.instance).as_str());
        h.insert(headers::CONTENT_TYPE, headers::JSON);
        h.insert(headers::CN_TYPE, <ProofRecord as bus_schema::Payload>::CN_TYPE);
        h.insert(headers::PROOF_HASH, hash.to_hex().as_str());
        let publish = PublishMessage::build()
            .payload(bytes.into())
            .headers(h)
            .expected_last_subject_sequence(self.head_stream_seq);
        self.publisher.send(self.subject.to_string(), publish).await.map_err(|(_, e)| self.fail(e))
    }
}

/// Sorts numerically as text.
fn seq_key(seq: u64) -> String {
    format!("{seq:020}")
}
