//! What pipelines publish (docs/contract.md, Subjects): deploy, metric and log events, contract and onboarding
//! requests, and the operator's approve/deny decisions.

use serde::{Deserialize, Serialize};

use crate::string_enum::string_enum;
use crate::validate::{self as v, MAX_SHORT, MAX_TEXT, Validate, ValidationError};
use crate::{Env, ServiceName, Timestamp};

string_enum! {
    /// Where a deploy stands.
    pub enum DeployStatus {
        Started = "started",
        Succeeded = "succeeded",
        Failed = "failed",
        RolledBack = "rolled_back",
    }
}

string_enum! {
    /// Which side of a canary rollout a sample comes from.
    pub enum Variant {
        Stable = "stable",
        Canary = "canary",
    }
}

string_enum! {
    pub enum LogLevel {
        Trace = "trace",
        Debug = "debug",
        Info = "info",
        Warn = "warn",
        Error = "error",
        Fatal = "fatal",
    }
}

string_enum! {
    pub enum ChangeType {
        Add = "add",
        Modify = "modify",
        Delete = "delete",
        Rename = "rename",
    }
}

string_enum! {
    /// An operator's answer to a pending approval.
    pub enum Decision {
        Approve = "approve",
        Deny = "deny",
    }
}

string_enum! {
    /// What an operator asks of a canary rollout in progress.
    pub enum RolloutVerb {
        /// Skip the stages left and propose the promotion (governance decides, as for any
        /// promotion: in prod a human approves it).
        Promote = "promote",
        /// Propose `abort_rollout` now, then the rollback, as a failed stage would.
        Abort = "abort",
    }
}

/// `cn.events.deploy.{env}.{service}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployEvent {
    pub service: ServiceName,
    pub env: Env,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    pub status: DeployStatus,
    pub timestamp: Timestamp,
    /// Links the deploy to its contract (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
}

impl DeployEvent {
    /// The version whose deploy the event reports: `version`, except in a `rolled_back` event
    /// that names `previous_version` — then `version` is what runs again and `previous_version`
    /// the version given up (the convention of the simulator and the deploy agent). A
    /// `rolled_back` event without `previous_version` reports `version` as given up.
    pub fn deployed_version(&self) -> &str {
        match (&self.status, &self.previous_version) {
            (DeployStatus::RolledBack, Some(given_up)) => given_up,
            _ => &self.version,
        }
    }
}

impl Validate for DeployEvent {
    fn validate(&self) -> Result<(), ValidationError> {
        v::ident("version", &self.version)?;
        v::opt_ident("previous_version", self.previous_version.as_deref())?;
        v::opt_ident("commit_sha", self.commit_sha.as_deref())?;
        v::opt_ident("deployment_id", self.deployment_id.as_deref())?;
        v::plausible_time("timestamp", self.timestamp)
    }
}

/// `cn.events.metric.{env}.{service}`: every measurement is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    pub service: ServiceName,
    pub env: Env,
    /// Fraction of failed requests, 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_looping: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<Variant>,
    pub timestamp: Timestamp,
    /// Which exporter or probe measured it (extension; lets the detector spot conflicting sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Validate for MetricSample {
    fn validate(&self) -> Result<(), ValidationError> {
        v::opt_fraction("error_rate", self.error_rate)?;
        v::opt_millis("p95_latency_ms", self.p95_latency_ms)?;
        v::opt_millis("p99_latency_ms", self.p99_latency_ms)?;
        v::opt_percent("cpu_percent", self.cpu_percent)?;
        v::opt_percent("memory_percent", self.memory_percent)?;
        v::opt_range("qps", self.qps, 0.0, 1e9, "0..=1e9")?;
        v::opt_text("source", self.source.as_deref(), MAX_SHORT)?;
        v::plausible_time("timestamp", self.timestamp)
    }
}

/// Most samples in one [`MetricBatch`].
pub const MAX_BATCH_SAMPLES: usize = 1000;

/// `cn.events.metric-batch.{env}.{service}`: several samples of one service in one message
/// (extension), for pipelines that scrape in intervals. Each sample is a whole
/// [`MetricSample`] under the same rules, with the subject's env and service; they are taken in
/// the order given, as if published one by one, and acknowledged together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricBatch {
    pub samples: Vec<MetricSample>,
}

impl MetricBatch {
    /// The samples' env and service (validation makes them all the first's); `None` for an
    /// empty batch, which validation refuses.
    pub fn service(&self) -> Option<(&Env, &ServiceName)> {
        self.samples.first().map(|m| (&m.env, &m.service))
    }

    /// The newest sample time (for the ahead-of-clock check).
    pub fn newest(&self) -> Option<Timestamp> {
        self.samples.iter().map(|m| m.timestamp).max()
    }
}

impl Validate for MetricBatch {
    fn validate(&self) -> Result<(), ValidationError> {
        let Some(first) = self.samples.first() else {
            return Err(ValidationError::Empty { field: "samples" });
        };
        if self.samples.len() > MAX_BATCH_SAMPLES {
            return Err(ValidationError::TooMany {
                field: "samples",
                len: self.samples.len(),
                max: MAX_BATCH_SAMPLES,
            });
        }
        for (i, m) in self.samples.iter().enumerate() {
            m.validate().map_err(|e| e.item("samples", i))?;
            let scope = |field: &'static str, value: &str, expected: &str| {
                if value == expected {
                    return Ok(());
                }
                let problem =
                    format!("is {value:?}, but a batch holds one service's samples ({expected:?})");
                Err(ValidationError::Invalid { field, problem }.item("samples", i))
            };
            scope("env", m.env.as_str(), first.env.as_str())?;
            scope("service", m.service.as_str(), first.service.as_str())?;
        }
        Ok(())
    }
}

/// `cn.events.log.{env}.{service}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    pub service: ServiceName,
    pub env: Env,
    pub level: LogLevel,
    pub message: String,
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Validate for LogEvent {
    fn validate(&self) -> Result<(), ValidationError> {
        v::text("message", &self.message, MAX_TEXT)?;
        v::opt_text("source", self.source.as_deref(), MAX_SHORT)?;
        v::plausible_time("timestamp", self.timestamp)
    }
}

/// One changed file in a contract request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub file_path: String,
    pub change_type: ChangeType,
    #[serde(default)]
    pub lines_changed: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// `cn.requests.contract.{env}.{service}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractRequest {
    pub deployment_id: String,
    pub service: ServiceName,
    pub env: Env,
    pub version: String,
    #[serde(default)]
    pub changes: Vec<Change>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_p95_latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_p95_latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_error_rate: Option<f64>,
    #[serde(default)]
    pub rollback_capability: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
}

impl Validate for ContractRequest {
    fn validate(&self) -> Result<(), ValidationError> {
        v::ident("deployment_id", &self.deployment_id)?;
        v::ident("version", &self.version)?;
        v::items("changes", &self.changes, v::MAX_ITEMS)?;
        for change in &self.changes {
            v::non_empty("changes.file_path", &change.file_path, MAX_TEXT)?;
            v::texts("changes.risk_tags", &change.risk_tags, MAX_SHORT)?;
            v::text("changes.description", &change.description, MAX_TEXT)?;
        }
        v::opt_fraction("current_error_rate", self.current_error_rate)?;
        v::opt_fraction("target_error_rate", self.target_error_rate)?;
        v::opt_millis("current_p95_latency_ms", self.current_p95_latency_ms)?;
        v::opt_millis("target_p95_latency_ms", self.target_p95_latency_ms)?;
        v::texts("dependencies", &self.dependencies, MAX_SHORT)
    }
}

/// `cn.requests.onboard.{env}`. The deploy agent judges the values; here only sizes are checked,
/// so that a hostile name still reaches it and is refused with a reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnboardRequest {
    pub app_name: String,
    pub repo_url: String,
    pub runtime: String,
    pub env: Env,
}

impl Validate for OnboardRequest {
    fn validate(&self) -> Result<(), ValidationError> {
        v::text("app_name", &self.app_name, MAX_SHORT)?;
        v::text("repo_url", &self.repo_url, 2 * MAX_SHORT)?;
        v::text("runtime", &self.runtime, MAX_SHORT)
    }
}

/// `cn.approvals.{env}.{service}`: an operator approves or denies a pending action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HumanDecision {
    pub proposal_id: uuid::Uuid,
    pub decision: Decision,
    pub operator: String,
    #[serde(default)]
    pub reason: String,
}

impl HumanDecision {
    /// The `Nats-Msg-Id` of this decision, the same whichever tool sends it (cnctl, the
    /// console's page): a repeat of the same decision (proposal, verdict, who, why) within
    /// JetStream's dedupe window is dropped.
    pub fn msg_id(&self) -> String {
        let proposal = self.proposal_id.to_string();
        let parts =
            ["human_decision", &proposal, self.decision.as_str(), &self.operator, &self.reason];
        format!("decision:{}", super::derive_id(&parts))
    }
}

/// `cn.actions.rollout.{env}.{service}` (extension): an operator's command to the deploy agent
/// about the service's rollout in progress. Only the `operator` NATS user may publish it; the
/// deploy agent turns it into proposals that go through governance like every other step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutCommand {
    pub service: ServiceName,
    pub env: Env,
    pub command: RolloutVerb,
    /// The canary version the operator means; a rollout of another version refuses the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub operator: String,
    pub reason: String,
}

impl Validate for RolloutCommand {
    fn validate(&self) -> Result<(), ValidationError> {
        v::opt_ident("version", self.version.as_deref())?;
        v::non_empty("operator", &self.operator, MAX_SHORT)?;
        v::non_empty("reason", &self.reason, MAX_TEXT)
    }
}

impl Validate for HumanDecision {
    fn validate(&self) -> Result<(), ValidationError> {
        v::non_empty("operator", &self.operator, MAX_SHORT)?;
        v::text("reason", &self.reason, MAX_TEXT)
    }
}
