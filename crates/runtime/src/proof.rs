//! The proof writer: appends this instance's records to its hash chain, across restarts.
//!
//! The chain's head (last seq and hash) is read back from CN_PROOF at start, so the stream,
//! not a local file, is the source of truth. Each append is write-ahead: the sealed record is
//! stored in redb *before* it is published and cleared after JetStream acks it, so a crash at
//! any point leaves either nothing or one pending record that is published (exactly those
//! bytes) on the next start. Publishes carry `Nats-Expected-Last-Subject-Sequence`, so if two
//! processes ever share an instance id the second append fails instead of forking the chain.
//!
//! An optional idempotency key makes an append happen once per key: an input redelivered after
//! a crash does not get its decision recorded twice.

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
use crate::publish::Publisher;
use crate::store::{Store, Table};

/// How many idempotency keys are remembered (the oldest are forgotten first).
const KEPT_KEYS: u64 = 100_000;

/// The record being published, kept until JetStream acks it.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    seq: u64,
    bytes: Vec<u8>,
    /// The idempotency key committed with it: forgotten if the record is discarded.
    #[serde(default)]
    key: Option<String>,
}

const PENDING: Table<Pending> = Table::new("proof.pending");
const KEYS: Table<u64> = Table::new("proof.keys");
const KEY_BY_SEQ: Table<String> = Table::new("proof.key_by_seq");

/// The parts of a record the agent decides; the writer adds identity, seq, time and chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ProofDraft {
    pub kind: ProofKind,
    pub correlation_id: Option<String>,
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
}

impl ProofWriter {
    /// Finds the chain's head in CN_PROOF and finishes any append a crash interrupted.
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
        };
        writer.read_head().await?;
        writer.finish_pending().await?;
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

    /// Publishes the record a crash left pending, if the stream does not have it yet.
    async fn finish_pending(&mut self) -> Result<(), RuntimeError> {
        let Some(pending) = self.store.get(&PENDING, "pending")? else { return Ok(()) };
        let hash = ProofHash::of(&pending.bytes);
        let follows_head = serde_json::from_slice::<ProofRecord>(&pending.bytes)
            .is_ok_and(|r| r.prev_hash == self.head.hash);
        if pending.seq == self.head.seq.saturating_add(1) && follows_head {
            self.publish(pending.seq, &pending.bytes, hash).await?;
            tracing::info!(
                seq = pending.seq,
                "published the proof record an earlier run left pending"
            );
            return self.store.remove(&PENDING, "pending");
        }
        if pending.seq == self.head.seq && hash == self.head.hash {
            // Stored before the crash; only the clean-up was missed.
            return self.store.remove(&PENDING, "pending");
        }
        tracing::error!(
            pending = pending.seq,
            head = self.head.seq,
            "discarding a pending proof record that does not fit the stored chain (was the stream reset, or another process writing it?)"
        );
        self.store.write(|tx| {
            if let Some(key) = &pending.key {
                tx.remove(&KEYS, key)?;
            }
            tx.remove(&PENDING, "pending")
        })
    }

    /// Appends a record; with a key, at most once per key. Returns the record's seq.
    pub async fn append(
        &mut self,
        draft: ProofDraft,
        key: Option<&str>,
    ) -> Result<u64, RuntimeError> {
        // A previous append that failed after its write-ahead left its record pending; it must
        // be stored before anything else, including before a key says "already recorded".
        if self.store.get(&PENDING, "pending")?.is_some() {
            self.read_head().await?;
            self.finish_pending().await?;
        }
        if let Some(k) = key {
            if let Some(seq) = self.store.get(&KEYS, k)? {
                return Ok(seq);
            }
        }
        let sealed = self.seal(draft)?;
        let seq = sealed.record.seq;
        self.store.write(|tx| {
            tx.put(
                &PENDING,
                "pending",
                &Pending { seq, bytes: sealed.bytes.clone(), key: key.map(str::to_owned) },
            )?;
            if let Some(k) = key {
                tx.put(&KEYS, k, &seq)?;
                tx.put(&KEY_BY_SEQ, &seq_key(seq), &k.to_owned())?;
                let old = seq_key(seq.saturating_sub(KEPT_KEYS));
                if let Some(old_key) = tx.get(&KEY_BY_SEQ, &old)? {
                    tx.remove(&KEYS, &old_key)?;
                    tx.remove(&KEY_BY_SEQ, &old)?;
                }
            }
            Ok(())
        })?;
        self.publish(seq, &sealed.bytes, sealed.hash).await?;
        // Without waiting for the disk: if a crash undoes this clean-up, the next start finds
        // the record stored as the chain's head and only clears it (`finish_pending`).
        self.store.write_lazily(|tx| tx.remove(&PENDING, "pending"))?;
        Ok(seq)
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

    async fn publish(
        &mut self,
        seq: u64,
        bytes: &[u8],
        hash: ProofHash,
    ) -> Result<(), RuntimeError> {
        let mut h = HeaderMap::new();
        h.insert(headers::MSG_ID, format!("proof:{}:{}:{seq}", self.agent, self.instance).as_str());
        h.insert(headers::CONTENT_TYPE, headers::JSON);
        h.insert(headers::CN_TYPE, <ProofRecord as bus_schema::Payload>::CN_TYPE);
        h.insert(headers::PROOF_HASH, hash.to_hex().as_str());
        let publish = PublishMessage::build()
            .payload(bytes.to_vec().into())
            .headers(h)
            .expected_last_subject_sequence(self.head_stream_seq);
        match self.publisher.send(self.subject.to_string(), publish).await {
            // We only publish a seq the stream does not have yet, so a duplicate means another
            // process wrote this seq of this chain first.
            Ok(ack) if ack.duplicate => {
                Err(RuntimeError::ProofChainContended { subject: self.subject.to_string() })
            }
            Ok(ack) => {
                self.head = ChainHead { seq, hash };
                self.head_stream_seq = ack.stream_seq;
                Ok(())
            }
            Err((subject, e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Err(RuntimeError::ProofChainContended { subject })
            }
            Err((_, e)) => Err(self.fail(e)),
        }
    }
}

/// Sorts numerically as text.
fn seq_key(seq: u64) -> String {
    format!("{seq:020}")
}
