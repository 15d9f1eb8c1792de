//! Verifying proof chains as they were stored, record by record.
//!
//! Feed every message of CN_PROOF, in stream order, to [`ProofAudit::push`]; the audit keeps
//! one chain per `cn.proof.{agent}.{instance}` subject and remembers the first break of each:
//! a missing record (gap), records out of order or repeated, a record whose bytes no longer
//! hash to its `Cn-Proof-Hash` header, or a `prev_hash` that does not match the record before
//! it (that record was altered, or the chain forked).

use std::collections::BTreeMap;
use std::fmt;

use super::{PROOF_VERSION, ProofHash, ProofRecord};

/// One message as read back from CN_PROOF.
#[derive(Debug, Clone, Copy)]
pub struct StoredProof<'a> {
    pub stream_seq: u64,
    pub subject: &'a str,
    pub payload: &'a [u8],
    /// The `Cn-Proof-Hash` header, when present.
    pub header_hash: Option<&'a str>,
}

/// The first thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// Not a readable proof record.
    Unreadable { stream_seq: u64, error: String },
    /// The record names a different agent/instance than its subject.
    WrongSubject { stream_seq: u64, seq: u64 },
    /// The bytes do not hash to the `Cn-Proof-Hash` they were published with.
    Tampered { stream_seq: u64, seq: u64, header: String, computed: String },
    /// The record has no `Cn-Proof-Hash` header.
    MissingHashHeader { stream_seq: u64, seq: u64 },
    /// Records are missing: `expected` was due, `found` came.
    Gap { stream_seq: u64, expected: u64, found: u64 },
    /// A record with a seq already seen or earlier than due.
    OutOfOrder { stream_seq: u64, expected: u64, found: u64 },
    /// `prev_hash` does not match the previous record: it was altered, or the chain forked.
    PrevHashMismatch { stream_seq: u64, seq: u64, expected: String, found: String },
}

impl ChainBreak {
    /// The proof seq the break is reported at, when the record was readable.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ChainBreak::Unreadable { .. } => None,
            ChainBreak::WrongSubject { seq, .. }
            | ChainBreak::Tampered { seq, .. }
            | ChainBreak::MissingHashHeader { seq, .. }
            | ChainBreak::PrevHashMismatch { seq, .. } => Some(*seq),
            ChainBreak::Gap { found, .. } | ChainBreak::OutOfOrder { found, .. } => Some(*found),
        }
    }
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::Unreadable { stream_seq, error } => {
                write!(f, "stream seq {stream_seq}: unreadable record: {error}")
            }
            ChainBreak::WrongSubject { stream_seq, seq } => {
                write!(
                    f,
                    "seq {seq} (stream seq {stream_seq}): record names another agent/instance than its subject"
                )
            }
            ChainBreak::Tampered { stream_seq, seq, header, computed } => write!(
                f,
                "seq {seq} (stream seq {stream_seq}): bytes were altered: published hash {header}, bytes now hash to {computed}"
            ),
            ChainBreak::MissingHashHeader { stream_seq, seq } => {
                write!(f, "seq {seq} (stream seq {stream_seq}): no Cn-Proof-Hash header")
            }
            ChainBreak::Gap { stream_seq, expected, found } => write!(
                f,
                "gap: seq {expected} is missing, seq {found} came next (stream seq {stream_seq})"
            ),
            ChainBreak::OutOfOrder { stream_seq, expected, found } => write!(
                f,
                "out of order: seq {found} came where seq {expected} was due (stream seq {stream_seq})"
            ),
            ChainBreak::PrevHashMismatch { stream_seq, seq, expected, found } => write!(
                f,
                "seq {seq} (stream seq {stream_seq}): prev_hash {found} does not match the previous record's hash {expected} (seq {} altered, or the chain forked)",
                seq.saturating_sub(1)
            ),
        }
    }
}

/// What the audit found for one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// The chain's subject, `cn.proof.{agent}.{instance}`.
    pub subject: String,
    /// Records read, including any after the break.
    pub records: u64,
    /// The last seq verified before any break.
    pub verified_through: u64,
    pub first_break: Option<ChainBreak>,
}

#[derive(Debug, Default)]
struct ChainState {
    records: u64,
    last_seq: u64,
    last_hash: Option<ProofHash>,
    first_break: Option<ChainBreak>,
}

/// Verifies every chain in a proof stream.
#[derive(Debug, Default)]
pub struct ProofAudit {
    chains: BTreeMap<String, ChainState>,
}

impl ProofAudit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next stored record of its chain.
    pub fn push(&mut self, stored: StoredProof<'_>) {
        let chain = self.chains.entry(stored.subject.to_owned()).or_default();
        chain.records += 1;
        if chain.first_break.is_some() {
            return;
        }
        match check(chain, &stored) {
            Ok(hash) => {
                chain.last_seq += 1;
                chain.last_hash = Some(hash);
            }
            Err(b) => chain.first_break = Some(b),
        }
    }

    /// One report per chain, ordered by subject.
    pub fn reports(&self) -> Vec<ChainReport> {
        self.chains
            .iter()
            .map(|(subject, c)| ChainReport {
                subject: subject.clone(),
                records: c.records,
                verified_through: c.last_seq,
                first_break: c.first_break.clone(),
            })
            .collect()
    }

    /// True when no chain has a break.
    pub fn is_intact(&self) -> bool {
        self.chains.values().all(|c| c.first_break.is_none())
    }
}

fn check(chain: &ChainState, stored: &StoredProof<'_>) -> Result<ProofHash, ChainBreak> {
    let stream_seq = stored.stream_seq;
    let record: ProofRecord = serde_json::from_slice(stored.payload)
        .map_err(|e| ChainBreak::Unreadable { stream_seq, error: e.to_string() })?;
    if record.v != PROOF_VERSION {
        return Err(ChainBreak::Unreadable {
            stream_seq,
            error: format!("unsupported version {}", record.v),
        });
    }
    let seq = record.seq;
    let own_subject = crate::subject::PROOF.subject(&record.agent, &record.instance);
    if own_subject.as_str() != stored.subject {
        return Err(ChainBreak::WrongSubject { stream_seq, seq });
    }
    let computed = ProofHash::of(stored.payload);
    match stored.header_hash {
        None => return Err(ChainBreak::MissingHashHeader { stream_seq, seq }),
        Some(header) if header != computed.to_hex() => {
            return Err(ChainBreak::Tampered {
                stream_seq,
                seq,
                header: header.to_owned(),
                computed: computed.to_hex(),
            });
        }
        Some(_) => {}
    }
    let expected = chain.last_seq + 1;
    if seq > expected {
        return Err(ChainBreak::Gap { stream_seq, expected, found: seq });
    }
    if seq < expected {
        return Err(ChainBreak::OutOfOrder { stream_seq, expected, found: seq });
    }
    let expected_prev = chain.last_hash.unwrap_or(ProofHash::GENESIS);
    if record.prev_hash != expected_prev {
        return Err(ChainBreak::PrevHashMismatch {
            stream_seq,
            seq,
            expected: expected_prev.to_hex(),
            found: record.prev_hash.to_hex(),
        });
    }
    Ok(computed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::{ChainHead, ProofKind, SealedProof};
    use crate::{AgentName, InstanceId, Timestamp};

    const SUBJECT: &str = "cn.proof.executor.0";

    fn chain(n: u64) -> Vec<SealedProof> {
        let mut head = ChainHead::EMPTY;
        (0..n)
            .map(|i| {
                let record = ProofRecord {
                    v: 1,
                    agent: AgentName::new("executor").unwrap(),
                    instance: InstanceId::new("0").unwrap(),
                    seq: 0,
                    ts: Timestamp::now(),
                    kind: ProofKind::ActionExecuted,
                    correlation_id: Some(format!("c-{i}")),
                    traceparent: None,
                    env: None,
                    service: None,
                    action: None,
                    proposal_id: None,
                    incident_id: None,
                    reason: None,
                    detail: serde_json::json!({"i": i}),
                    prev_hash: ProofHash::GENESIS,
                };
                let sealed = record.seal_after(head).unwrap();
                head = sealed.head();
                sealed
            })
            .collect()
    }

    fn audit(records: &[(u64, Vec<u8>, String)]) -> ChainReport {
        let mut audit = ProofAudit::new();
        for (stream_seq, bytes, hash) in records {
            audit.push(StoredProof {
                stream_seq: *stream_seq,
                subject: SUBJECT,
                payload: bytes,
                header_hash: Some(hash),
            });
        }
        audit.reports().remove(0)
    }

    fn stored(chain: &[SealedProof]) -> Vec<(u64, Vec<u8>, String)> {
        chain
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 100, s.bytes.clone(), s.hash.to_hex()))
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let report = audit(&stored(&chain(5)));
        assert_eq!(report.first_break, None);
        assert_eq!((report.records, report.verified_through), (5, 5));
    }

    #[test]
    fn a_missing_record_is_a_gap_at_its_seq() {
        let mut records = stored(&chain(5));
        records.remove(2);
        let report = audit(&records);
        assert_eq!(
            report.first_break,
            Some(ChainBreak::Gap { stream_seq: 103, expected: 3, found: 4 })
        );
        assert_eq!(report.verified_through, 2);
    }

    #[test]
    fn reordered_records_are_reported() {
        let mut records = stored(&chain(5));
        records.swap(1, 2);
        let report = audit(&records);
        assert_eq!(report.first_break.unwrap().seq(), Some(3));
        assert_eq!(report.verified_through, 1);
    }

    #[test]
    fn a_duplicate_is_out_of_order() {
        let mut records = stored(&chain(3));
        records.insert(2, records[1].clone());
        let report = audit(&records);
        assert!(matches!(
            report.first_break,
            Some(ChainBreak::OutOfOrder { expected: 3, found: 2, .. })
        ));
    }

    #[test]
    fn altered_bytes_under_the_original_header_are_tampered() {
        let mut records = stored(&chain(4));
        let text = String::from_utf8(records[1].1.clone()).unwrap().replace("c-1", "c-X");
        records[1].1 = text.into_bytes();
        let report = audit(&records);
        assert!(
            matches!(report.first_break, Some(ChainBreak::Tampered { seq: 2, .. })),
            "{:?}",
            report.first_break
        );
    }

    #[test]
    fn a_rewritten_record_with_a_fresh_header_breaks_the_next_link() {
        let mut records = stored(&chain(4));
        let text = String::from_utf8(records[1].1.clone()).unwrap().replace("c-1", "c-X");
        records[1].2 = ProofHash::of(text.as_bytes()).to_hex();
        records[1].1 = text.into_bytes();
        let report = audit(&records);
        let b = report.first_break.unwrap();
        assert!(matches!(b, ChainBreak::PrevHashMismatch { seq: 3, .. }), "{b:?}");
        assert!(b.to_string().contains("seq 2 altered"), "{b}");
    }

    #[test]
    fn a_chain_that_starts_late_is_a_gap_from_one() {
        let records = stored(&chain(3));
        let report = audit(&records[1..]);
        assert!(matches!(report.first_break, Some(ChainBreak::Gap { expected: 1, found: 2, .. })));
    }

    #[test]
    fn chains_are_kept_apart_by_subject() {
        let a = chain(2);
        let mut audit = ProofAudit::new();
        for (i, s) in a.iter().enumerate() {
            audit.push(StoredProof {
                stream_seq: i as u64,
                subject: SUBJECT,
                payload: &s.bytes,
                header_hash: Some(&s.hash.to_hex()),
            });
        }
        // The same records under another subject do not belong there.
        audit.push(StoredProof {
            stream_seq: 9,
            subject: "cn.proof.executor.1",
            payload: &a[0].bytes,
            header_hash: Some(&a[0].hash.to_hex()),
        });
        let reports = audit.reports();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].first_break, None);
        assert!(matches!(reports[1].first_break, Some(ChainBreak::WrongSubject { .. })));
        assert!(!audit.is_intact());
    }

    #[test]
    fn garbage_is_unreadable() {
        let report = audit(&[(7, b"not json".to_vec(), String::new())]);
        assert!(matches!(report.first_break, Some(ChainBreak::Unreadable { stream_seq: 7, .. })));
    }
}
