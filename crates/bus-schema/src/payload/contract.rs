//! Deployment contracts and their negotiation.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::string_enum::string_enum;
use crate::validate::{self as v, MAX_SHORT, MAX_TEXT, Validate, ValidationError};
use crate::{DeployEvent, Env, ServiceName, Timestamp};

string_enum! {
    pub enum RiskLevel {
        Low = "low",
        Medium = "medium",
        High = "high",
        Critical = "critical",
    }
}

string_enum! {
    /// draft → negotiated → accepted/rejected → deploying → completed/rolled_back
    pub enum ContractStatus {
        Draft = "draft",
        Negotiated = "negotiated",
        Accepted = "accepted",
        Rejected = "rejected",
        Deploying = "deploying",
        Completed = "completed",
        RolledBack = "rolled_back",
    }
}

string_enum! {
    pub enum DataLossRisk {
        None = "none",
        Low = "low",
        Medium = "medium",
        High = "high",
    }
}

string_enum! {
    /// Proof a contract requires before or during the deploy.
    pub enum ValidatorKind {
        Tests = "tests",
        Canary = "canary",
        RollbackPlan = "rollback_plan",
        FeatureFlag = "feature_flag",
        MigrationRollbackScript = "migration_rollback_script",
        SecurityReview = "security_review",
        LoadTest = "load_test",
    }
}

/// One contribution to a risk score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskFactor {
    pub name: String,
    pub contribution: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskAssessment {
    /// 0..=100.
    pub score: f64,
    pub level: RiskLevel,
    /// 0..=1, grows with evidence.
    pub confidence: f64,
    #[serde(default)]
    pub factors: Vec<RiskFactor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guardrails {
    pub max_error_rate: f64,
    pub max_p95_latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_latency_ms: Option<f64>,
    /// Largest traffic increase between canary stages, in percent.
    pub max_traffic_step_percent: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validator {
    pub kind: ValidatorKind,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryStage {
    pub weight_percent: u8,
    pub min_duration_s: u32,
    #[serde(default)]
    pub min_samples: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackPlan {
    pub possible: bool,
    #[serde(default)]
    pub steps: Vec<String>,
    pub estimated_s: u32,
    pub data_loss_risk: DataLossRisk,
}

/// `cn.contracts.{env}.{service}`: published on every status change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contract {
    pub contract_id: Uuid,
    pub deployment_id: String,
    pub env: Env,
    pub service: ServiceName,
    pub version: String,
    pub status: ContractStatus,
    /// Increments with every negotiated change.
    pub revision: u32,
    pub risk: RiskAssessment,
    pub guardrails: Guardrails,
    #[serde(default)]
    pub validators: Vec<Validator>,
    #[serde(default)]
    pub canary: Vec<CanaryStage>,
    pub rollback: RollbackPlan,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<String>,
    /// Why the contract is in its status (e.g. a rejection's reason code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub updated_at: Timestamp,
}

impl Contract {
    /// Whether a deploy event is about this contract: same env and service, and the same
    /// deployment id when the event carries one, otherwise the same version.
    pub fn covers(&self, event: &DeployEvent) -> bool {
        self.env == event.env
            && self.service == event.service
            && match &event.deployment_id {
                Some(id) => *id == self.deployment_id,
                None => event.version == self.version,
            }
    }
}

impl Validate for Contract {
    fn validate(&self) -> Result<(), ValidationError> {
        v::ident("deployment_id", &self.deployment_id)?;
        v::ident("version", &self.version)?;
        v::range("risk.score", self.risk.score, 0.0, 100.0, "0..=100")?;
        v::fraction("risk.confidence", self.risk.confidence)?;
        v::items("risk.factors", &self.risk.factors, 64)?;
        self.risk
            .factors
            .iter()
            .try_for_each(|f| v::finite("risk.factors.contribution", f.contribution))?;
        v::range(
            "guardrails.max_traffic_step_percent",
            f64::from(self.guardrails.max_traffic_step_percent),
            0.0,
            100.0,
            "0..=100",
        )?;
        v::fraction("guardrails.max_error_rate", self.guardrails.max_error_rate)?;
        v::opt_millis("guardrails.max_p95_latency_ms", Some(self.guardrails.max_p95_latency_ms))?;
        v::opt_millis("guardrails.max_p99_latency_ms", self.guardrails.max_p99_latency_ms)?;
        v::items("validators", &self.validators, 32)?;
        v::items("canary", &self.canary, 32)?;
        for stage in &self.canary {
            v::range(
                "canary.weight_percent",
                f64::from(stage.weight_percent),
                0.0,
                100.0,
                "0..=100",
            )?;
        }
        v::texts("rollback.steps", &self.rollback.steps, MAX_TEXT)?;
        v::texts("suggestions", &self.suggestions, MAX_TEXT)?;
        v::opt_text("reason", self.reason.as_deref(), MAX_TEXT)
    }
}

/// One thing a developer asks to change in a contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ask {
    /// Run the canary in fewer stages.
    ShortenCanary { stages: u8 },
    /// Deploy without a canary.
    SkipCanary,
    /// Loosen one guardrail (`max_error_rate`, `max_p95_latency_ms`, …) to `value`.
    RelaxGuardrail { guardrail: String, value: f64 },
    /// Drop a required validator.
    WaiveValidator { validator: ValidatorKind },
}

/// `cn.negotiate.{env}.{service}` request: a developer's counter-proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterProposal {
    pub contract_id: Uuid,
    pub env: Env,
    pub service: ServiceName,
    pub requested_by: String,
    pub asks: Vec<Ask>,
    pub justification: String,
}

impl Validate for CounterProposal {
    fn validate(&self) -> Result<(), ValidationError> {
        v::non_empty("requested_by", &self.requested_by, MAX_SHORT)?;
        v::items("asks", &self.asks, 16)?;
        v::text("justification", &self.justification, MAX_TEXT)
    }
}

/// The negotiator's answer to one ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AskDecision {
    pub ask: Ask,
    pub accepted: bool,
    pub reason: String,
}

/// `cn.negotiate.{env}.{service}` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NegotiationReply {
    pub contract_id: Uuid,
    pub round: u32,
    pub accepted: bool,
    pub decisions: Vec<AskDecision>,
    /// The contract after this round, when anything changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<Contract>,
    /// Why the reply is not `accepted` (set whenever it is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Validate for NegotiationReply {
    fn validate(&self) -> Result<(), ValidationError> {
        v::items("decisions", &self.decisions, 16)?;
        v::opt_text("reason", self.reason.as_deref(), MAX_TEXT)?;
        self.contract.as_ref().map_or(Ok(()), Validate::validate)
    }
}

/// How well the risk model's predicted failure probability matched what happened, for one
/// band of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBucket {
    pub from: f64,
    pub to: f64,
    pub count: u64,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

/// A learned weight of one risk factor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactorWeight {
    pub name: String,
    pub weight: f64,
}

/// `cn.model.{agent}.{instance}` reply (core request/reply, JSON): the negotiator's learned
/// risk model and its calibration (extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStats {
    /// Deploy outcomes learned from.
    pub observations: u64,
    /// Mean squared error of the predicted failure probability (lower is better); none yet
    /// without observations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brier: Option<f64>,
    /// Expected calibration error of the same predictions: the count-weighted mean gap between
    /// predicted and observed failure rate over the reliability buckets (0 is perfect); none
    /// yet without observations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ece: Option<f64>,
    #[serde(default)]
    pub reliability: Vec<ReliabilityBucket>,
    pub bias: f64,
    /// Weights of the standardised features.
    #[serde(default)]
    pub weights: Vec<FactorWeight>,
    /// The calibration step the predictions pass through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

/// Platt scaling: `P(fail) = sigmoid(a · raw log-odds + b)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub a: f64,
    pub b: f64,
}

impl Validate for ModelStats {
    fn validate(&self) -> Result<(), ValidationError> {
        v::items("reliability", &self.reliability, 32)?;
        v::items("weights", &self.weights, 256)?;
        if let Some(c) = &self.calibration {
            v::finite("calibration.a", c.a)?;
            v::finite("calibration.b", c.b)?;
        }
        self.weights.iter().try_for_each(|w| v::finite("weights.weight", w.weight))
    }
}
