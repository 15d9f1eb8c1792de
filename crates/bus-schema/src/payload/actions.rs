//! The action path: proposals, signed approvals, refusals, pending approvals, results.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::string_enum::string_enum;
use crate::validate::{self as v, MAX_SHORT, MAX_TEXT, Validate, ValidationError};
use crate::{Action, AgentName, Env, ReasonCode, ServiceName, Timestamp};

/// Parameters of an action. Only typed, bounded values: nothing here can smuggle a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionParams {
    /// Traffic share for `set_canary_weight`, 0..=100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<u8>,
    /// Target replica count for `scale_up`/`scale_down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Version to roll back or forward to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
}

impl Validate for ActionParams {
    fn validate(&self) -> Result<(), ValidationError> {
        if let Some(w) = self.canary_weight {
            v::range("params.canary_weight", f64::from(w), 0.0, 100.0, "0..=100")?;
        }
        if let Some(r) = self.replicas {
            v::range("params.replicas", f64::from(r), 0.0, 10_000.0, "0..=10000")?;
        }
        v::opt_ident("params.target_version", self.target_version.as_deref())
    }
}

/// A value the optimizer considered, for the explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub action: Action,
    pub value: f64,
}

/// `cn.actions.proposed.{env}.{service}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionProposal {
    pub proposal_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<Uuid>,
    pub env: Env,
    pub service: ServiceName,
    pub action: Action,
    #[serde(default)]
    pub params: ActionParams,
    /// 0..=1; governance refuses below the environment's threshold.
    pub confidence: f64,
    pub proposer: AgentName,
    pub explanation: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub exploratory: bool,
    /// The proposer asks for a human's decision even where policy would approve on its own
    /// (extension; e.g. a canary stage whose verdict stayed inconclusive).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_human: bool,
    pub proposed_at: Timestamp,
    /// The probability with which the proposer chose this action among its candidates: 1 for
    /// a choice made without exploring (extension; for evaluating decisions off-policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propensity: Option<f64>,
}

impl Validate for ActionProposal {
    fn validate(&self) -> Result<(), ValidationError> {
        self.params.validate()?;
        v::fraction("confidence", self.confidence)?;
        if let Some(p) = self.propensity {
            v::fraction("propensity", p)?;
        }
        v::text("explanation", &self.explanation, MAX_TEXT)?;
        v::items("candidates", &self.candidates, 64)?;
        self.candidates.iter().try_for_each(|c| v::finite("candidates.value", c.value))
    }
}

/// What governance signs. The signature covers [`ApprovalClaims::signing_bytes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalClaims {
    pub approval_id: Uuid,
    pub proposal_id: Uuid,
    /// Hex SHA-256 of the proposal's MessagePack bytes, binding the approval to its content.
    pub proposal_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<Uuid>,
    pub env: Env,
    pub service: ServiceName,
    pub action: Action,
    #[serde(default)]
    pub params: ActionParams,
    /// `policy` for automatic approvals, else the operator who approved.
    pub approved_by: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl ApprovalClaims {
    /// The canonical bytes the signature covers: the claims as JSON, fields in declaration order.
    pub fn signing_bytes(&self) -> Vec<u8> {
        // Serializing plain structs of strings and numbers to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `cn.actions.approved.{env}.{service}`: only governance may publish here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedApproval {
    pub claims: ApprovalClaims,
    /// Which governance key signed (hex of the first 8 bytes of its public key).
    pub key_id: String,
    /// Hex Ed25519 signature over the claims' signing bytes.
    pub signature: String,
}

impl Validate for SignedApproval {
    fn validate(&self) -> Result<(), ValidationError> {
        self.claims.params.validate()?;
        v::text("claims.proposal_hash", &self.claims.proposal_hash, 64)?;
        v::text("claims.approved_by", &self.claims.approved_by, MAX_SHORT)?;
        v::text("key_id", &self.key_id, 64)?;
        v::text("signature", &self.signature, 256)
    }
}

/// `cn.actions.refused.{env}.{service}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub proposal_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<Uuid>,
    pub env: Env,
    pub service: ServiceName,
    pub action: Action,
    pub reason: ReasonCode,
    pub detail: String,
    pub refused_at: Timestamp,
}

impl Refusal {
    /// The refusal of `p` for `reason`, with its detail (JSON text).
    pub fn of(
        p: &ActionProposal,
        reason: ReasonCode,
        detail: String,
        refused_at: Timestamp,
    ) -> Self {
        Self {
            proposal_id: p.proposal_id,
            incident_id: p.incident_id,
            env: p.env.clone(),
            service: p.service.clone(),
            action: p.action.clone(),
            reason,
            detail,
            refused_at,
        }
    }
}

impl Validate for Refusal {
    fn validate(&self) -> Result<(), ValidationError> {
        v::text("detail", &self.detail, MAX_TEXT)
    }
}

/// `cn.actions.pending.{env}.{service}`: a proposal waiting for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    pub proposal: ActionProposal,
    /// Why a human must decide.
    pub reason: String,
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Validate for PendingApproval {
    fn validate(&self) -> Result<(), ValidationError> {
        self.proposal.validate()?;
        v::text("reason", &self.reason, MAX_TEXT)
    }
}

string_enum! {
    /// How the executor acts.
    pub enum Backend {
        DryRun = "dry_run",
        Sim = "sim",
        Command = "command",
    }
}

string_enum! {
    pub enum ExecutionStatus {
        Executed = "executed",
        Failed = "failed",
        Refused = "refused",
    }
}

/// `cn.actions.executed.{env}.{service}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionResult {
    pub proposal_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<Uuid>,
    pub env: Env,
    pub service: ServiceName,
    pub action: Action,
    pub backend: Backend,
    pub status: ExecutionStatus,
    /// Set when `status` is `refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<ReasonCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
    pub detail: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

impl Validate for ExecutionResult {
    fn validate(&self) -> Result<(), ValidationError> {
        v::opt_text("output_tail", self.output_tail.as_deref(), MAX_TEXT)?;
        v::text("detail", &self.detail, MAX_TEXT)
    }
}

/// `cn.sim.actions.{env}.{service}`: the executor's `sim` backend asks the simulator to act.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimAction {
    pub proposal_id: Uuid,
    pub env: Env,
    pub service: ServiceName,
    pub action: Action,
    #[serde(default)]
    pub params: ActionParams,
    pub issued_at: Timestamp,
}

impl Validate for SimAction {
    fn validate(&self) -> Result<(), ValidationError> {
        self.params.validate()
    }
}

/// One learned value: how good `action` is in `state` (a description of the situation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub state: String,
    pub action: Action,
    pub value: f64,
    pub visits: u64,
}

/// `cn.policy.{agent}.{instance}` reply (core request/reply, JSON): the optimizer's learned
/// action values (extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedPolicy {
    /// `learning`, `frozen` or `shadow`.
    pub mode: String,
    pub alpha: f64,
    pub gamma: f64,
    pub epsilon: f64,
    /// Q-value updates so far.
    pub updates: u64,
    #[serde(default)]
    pub entries: Vec<PolicyEntry>,
    /// In `gated` mode: the candidate learned in shadow, which acts only once promoted (its
    /// entries are estimates per state and action; `visits` counts the state's own outcomes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Vec<PolicyEntry>>,
    /// In `gated` mode: the last promotion decision, as the `policy_promoted` record or the
    /// reason none was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<serde_json::Value>,
}

impl Validate for LearnedPolicy {
    fn validate(&self) -> Result<(), ValidationError> {
        v::text("mode", &self.mode, MAX_SHORT)?;
        v::items("entries", &self.entries, 10_000)?;
        let candidate = self.candidate.as_deref().unwrap_or_default();
        v::items("candidate", candidate, 10_000)?;
        self.entries.iter().chain(candidate).try_for_each(|e| v::finite("entries.value", e.value))
    }
}
