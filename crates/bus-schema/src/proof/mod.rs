//! The proof log: one hash-chained sequence of JSON records per agent instance (docs/contract.md, Proof kinds).
//!
//! A record's hash is the SHA-256 of its exact payload bytes, as published; the next record
//! carries it as `prev_hash` (64 zeros for the first), and `seq` counts up from 1 without gaps.
//! Changing, dropping, reordering or forging a record therefore breaks the chain at a place
//! [`verify::ProofAudit`] can name. Records are JSON so `nats sub 'cn.proof.>'` is readable.

pub mod verify;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::string_enum::string_enum;
use crate::validate::{self as v, MAX_TEXT, Validate, ValidationError};
use crate::{Action, AgentName, Env, InstanceId, ServiceName, Timestamp};

pub use verify::{ChainBreak, ChainReport, ProofAudit};

/// The record format version.
pub const PROOF_VERSION: u32 = 1;

/// Largest `detail` a record may carry, in bytes of JSON.
pub const MAX_DETAIL: usize = 16 * 1024;

string_enum! {
    /// What a proof record is about (stable strings).
    pub enum ProofKind {
        AgentStarted = "agent_started",
        AgentStopped = "agent_stopped",
        ConsumerRecreated = "consumer_recreated",
        EventRejected = "event_rejected",
        IncidentOpened = "incident_opened",
        IncidentUpdated = "incident_updated",
        IncidentResolved = "incident_resolved",
        OutcomeRecorded = "outcome_recorded",
        ContractDrafted = "contract_drafted",
        ContractNegotiated = "contract_negotiated",
        ContractStatusChanged = "contract_status_changed",
        ActionProposed = "action_proposed",
        ActionApproved = "action_approved",
        ActionRefused = "action_refused",
        ActionPendingApproval = "action_pending_approval",
        HumanDecision = "human_decision",
        ActionExecuted = "action_executed",
        ActionFailed = "action_failed",
        ExecutionRefused = "execution_refused",
        PolicyLearned = "policy_learned",
        PolicyPromoted = "policy_promoted",
        OnboardingAccepted = "onboarding_accepted",
        OnboardingRefused = "onboarding_refused",
        CanaryStage = "canary_stage",
        CanaryAborted = "canary_aborted",
        CanaryPromoted = "canary_promoted",
        NotificationSent = "notification_sent",
        NotificationFailed = "notification_failed",
    }
}

/// A SHA-256 digest, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProofHash([u8; 32]);

impl ProofHash {
    /// The `prev_hash` of a chain's first record.
    pub const GENESIS: ProofHash = ProofHash([0; 32]);

    /// The hash of exactly these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }
}

impl fmt::Debug for ProofHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProofHash({})", self.to_hex())
    }
}

impl fmt::Display for ProofHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Not 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 hash (64 lowercase hex digits): {0:?}")]
pub struct HashParseError(String);

impl FromStr for ProofHash {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::hex::decode_array(s)
            .map(Self)
            .ok_or_else(|| HashParseError(s.chars().take(80).collect()))
    }
}

impl Serialize for ProofHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ProofHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::string_enum::parse_str(d)
    }
}

/// `cn.proof.{agent}.{instance}`: one decision or event of one agent instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProofRecord {
    pub v: u32,
    pub agent: AgentName,
    pub instance: InstanceId,
    pub seq: u64,
    pub ts: Timestamp,
    pub kind: ProofKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The W3C trace the record's chain belongs to, when its first event carried one: the
    /// chain's trace id and a span id of the record's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<crate::trace::TraceParent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Env>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<Uuid>,
    /// A reason code ([`ReasonCode`](crate::ReasonCode) or [`RejectReason`](crate::RejectReason)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
    pub prev_hash: ProofHash,
}

impl Validate for ProofRecord {
    fn validate(&self) -> Result<(), ValidationError> {
        if self.v != PROOF_VERSION {
            return Err(ValidationError::Invalid {
                field: "v",
                problem: format!("unsupported version {}", self.v),
            });
        }
        if self.seq == 0 {
            return Err(ValidationError::OutOfRange {
                field: "seq",
                value: "0".into(),
                allowed: ">= 1",
            });
        }
        v::opt_text("correlation_id", self.correlation_id.as_deref(), v::MAX_SHORT)?;
        v::opt_text("reason", self.reason.as_deref(), MAX_TEXT)
    }
}

/// Where a chain stands: the last record's seq and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: ProofHash,
}

impl ChainHead {
    /// An empty chain: the first record gets seq 1 and the genesis `prev_hash`.
    pub const EMPTY: ChainHead = ChainHead { seq: 0, hash: ProofHash::GENESIS };
}

/// A record serialized exactly as it will be published, with the hash of those bytes.
#[derive(Debug, Clone)]
pub struct SealedProof {
    pub record: ProofRecord,
    pub bytes: Vec<u8>,
    pub hash: ProofHash,
}

impl SealedProof {
    /// The chain head once this record is stored.
    pub fn head(&self) -> ChainHead {
        ChainHead { seq: self.record.seq, hash: self.hash }
    }
}

impl ProofRecord {
    /// Links the record after `head` (setting `seq` and `prev_hash`) and serializes it.
    pub fn seal_after(mut self, head: ChainHead) -> Result<SealedProof, serde_json::Error> {
        self.seq = head.seq.saturating_add(1);
        self.prev_hash = head.hash;
        let bytes = serde_json::to_vec(&self)?;
        let hash = ProofHash::of(&bytes);
        Ok(SealedProof { record: self, bytes, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_round_trips_and_matches_a_known_digest() {
        let h = ProofHash::of(b"abc");
        assert_eq!(h.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(h.to_hex().parse::<ProofHash>().unwrap(), h);
        assert_eq!(ProofHash::GENESIS.to_hex(), "0".repeat(64));
    }

    #[test]
    fn hash_parse_rejects_upper_case_and_wrong_length() {
        assert!("AB".repeat(32).parse::<ProofHash>().is_err());
        assert!("ab".repeat(31).parse::<ProofHash>().is_err());
        assert!("zz".repeat(32).parse::<ProofHash>().is_err());
    }

    #[test]
    fn the_design_example_parses() {
        let json = format!(
            r#"{{"v":1,"agent":"governance-gate","instance":"0","seq":17,"ts":"2026-11-22T10:00:00.123Z",
            "kind":"action_refused","correlation_id":"c-1","env":"prod","service":"payments-api",
            "action":"rollback","proposal_id":"6f1c2b1e-7d8a-4c55-9a43-3f2f4f0b2a10","reason":"not_eligible_in_env",
            "detail":{{"allowed":["noop","observe","restart","scale_up"]}},"prev_hash":"{}"}}"#,
            "0".repeat(64)
        );
        let record: ProofRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(record.kind, ProofKind::ActionRefused);
        assert_eq!(record.seq, 17);
        assert_eq!(record.action, Some(Action::Rollback));
    }
}
