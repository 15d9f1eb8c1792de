//! Reading the proof log back from CN_PROOF, as an auditor would.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use bus_schema::proof::verify::StoredProof;
use bus_schema::proof::{ProofAudit, ProofKind, ProofRecord};
use bus_schema::headers;
use futures_util::StreamExt;

/// One stored record, with what the audit needs.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub stream_seq: u64,
    pub subject: String,
    pub bytes: Vec<u8>,
    pub header_hash: Option<String>,
    pub record: Option<ProofRecord>,
}

impl StoredRecord {
    pub fn kind(&self) -> Option<ProofKind> {
        self.record.as_ref().map(|r| r.kind)
    }

    pub fn as_stored(&self) -> StoredProof<'_> {
        StoredProof {
            stream_seq: self.stream_seq,
            subject: &self.subject,
            payload: &self.bytes,
            header_hash: self.header_hash.as_deref(),
        }
    }
}

/// Every record currently in CN_PROOF, in stream order.
pub async fn read_all(js: &jetstream::Context) -> anyhow::Result<Vec<StoredRecord>> {
    let stream = js.get_stream("CN_PROOF").await.context("CN_PROOF")?;
    let last = stream.get_info().await?.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let consumer = stream
        .create_consumer(pull::Config { deliver_policy: DeliverPolicy::All, ack_policy: jetstream::consumer::AckPolicy::None, ..Default::default() })
        .await?;
    let mut messages = consumer.stream().max_messages_per_batch(500).messages().await?;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await.context("reading CN_PROOF")? {
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let seq = info.stream_sequence;
        let header_hash = m.headers.as_ref().and_then(|h| h.get(headers::PROOF_HASH)).map(|v| v.as_str().to_owned());
        out.push(StoredRecord {
            stream_seq: seq,
            subject: m.subject.to_string(),
            bytes: m.payload.to_vec(),
            header_hash,
            record: serde_json::from_slice(&m.payload).ok(),
        });
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

/// Verifies every chain in the records.
pub fn audit(records: &[StoredRecord]) -> ProofAudit {
    let mut audit = ProofAudit::new();
    for r in records {
        audit.push(r.as_stored());
    }
    audit
}

/// The records of one kind.
pub fn of_kind(records: &[StoredRecord], kind: ProofKind) -> Vec<ProofRecord> {
    records.iter().filter_map(|r| r.record.clone()).filter(|r| r.kind == kind).collect()
}
