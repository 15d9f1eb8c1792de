//! Reading the proof log back from CN_PROOF, as an auditor would (with cnctl's reader).

use async_nats::jetstream;
use bus_schema::proof::{ProofAudit, ProofKind, ProofRecord};
use cnctl::verify::StoredMessage;

/// One stored record, parsed when it parses.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub stored: StoredMessage,
    pub record: Option<ProofRecord>,
}

impl StoredRecord {
    pub fn kind(&self) -> Option<ProofKind> {
        self.record.as_ref().map(|r| r.kind)
    }
}

/// Every record currently in CN_PROOF, in stream order.
pub async fn read_all(js: &jetstream::Context) -> anyhow::Result<Vec<StoredRecord>> {
    let messages = cnctl::verify::read_all(js).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(messages
        .into_iter()
        .map(|stored| {
            let record = serde_json::from_slice(&stored.payload).ok();
            StoredRecord { stored, record }
        })
        .collect())
}

/// Verifies every chain in the records.
pub fn audit(records: &[StoredRecord]) -> ProofAudit {
    let mut audit = ProofAudit::new();
    for r in records {
        audit.push(r.stored.as_stored());
    }
    audit
}

/// The records of one kind.
pub fn of_kind(records: &[StoredRecord], kind: ProofKind) -> Vec<ProofRecord> {
    records.iter().filter_map(|r| r.record.clone()).filter(|r| r.kind == kind).collect()
}
