//! What the issue detector publishes: incidents, outcomes and SLO status.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::string_enum::string_enum;
use crate::validate::{self as v, MAX_SHORT, MAX_TEXT, Validate, ValidationError};
use crate::{Action, Env, ServiceName, Timestamp};

string_enum! {
    /// The kind of problem an incident is about; one open incident per env/service/kind.
    pub enum IncidentKind {
        DeployFailed = "deploy_failed",
        CrashLoop = "crash_loop",
        HighErrorRate = "high_error_rate",
        HighLatency = "high_latency",
        Overload = "overload",
        DeployRegression = "deploy_regression",
        LogPattern = "log_pattern",
        SloBurn = "slo_burn",
    }
}

string_enum! {
    pub enum Severity {
        Low = "low",
        Medium = "medium",
        High = "high",
        Critical = "critical",
    }
}

string_enum! {
    pub enum IncidentStatus {
        Opened = "opened",
        Updated = "updated",
        Resolved = "resolved",
    }
}

/// One observation behind an incident: what was measured, against which threshold, over which window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub signal: String,
    pub value: f64,
    pub threshold: f64,
    #[serde(default)]
    pub window_s: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// `cn.incidents.{env}.{service}`: published when opened, on every update, and when resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub incident_id: Uuid,
    pub env: Env,
    pub service: ServiceName,
    pub kind: IncidentKind,
    pub severity: Severity,
    pub status: IncidentStatus,
    pub summary: String,
    pub opened_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    /// Sources disagree; governance observes instead of acting.
    #[serde(default)]
    pub signal_conflict: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_recover_s: Option<f64>,
    #[serde(default)]
    pub sample_count: u64,
    /// How many times it came back within the flap window after resolving (extension).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reopen_count: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Validate for Incident {
    fn validate(&self) -> Result<(), ValidationError> {
        v::text("summary", &self.summary, MAX_TEXT)?;
        v::items("evidence", &self.evidence, v::MAX_ITEMS)?;
        for e in &self.evidence {
            v::finite("evidence.value", e.value)?;
            v::finite("evidence.threshold", e.threshold)?;
            v::text("evidence.signal", &e.signal, MAX_SHORT)?;
            v::text("evidence.detail", &e.detail, MAX_TEXT)?;
        }
        v::opt_text("suspect_version", self.suspect_version.as_deref(), MAX_SHORT)?;
        v::opt_range("time_to_recover_s", self.time_to_recover_s, 0.0, f64::MAX, ">= 0")
    }
}

/// `cn.outcomes.{env}.{service}`: did the last action on an incident help?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub incident_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal_id: Option<Uuid>,
    pub env: Env,
    pub service: ServiceName,
    pub action: Action,
    pub recovered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_recover_s: Option<f64>,
    pub judged_at: Timestamp,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// This verdict replaces an earlier `recovered` one for the same proposal: the incident
    /// came back within the flap window, so the recovery did not hold (extension).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revised: bool,
    /// Another action ran on the service before this one's verification window ended, so
    /// what followed cannot be credited to this one: `recovered` is false and learners ignore
    /// the outcome (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<Uuid>,
}

impl Outcome {
    /// Whether the outcome says something about its action (it was not superseded).
    pub fn attributable(&self) -> bool {
        self.superseded_by.is_none()
    }
}

impl Validate for Outcome {
    fn validate(&self) -> Result<(), ValidationError> {
        v::opt_range("time_to_recover_s", self.time_to_recover_s, 0.0, f64::MAX, ">= 0")?;
        v::text("detail", &self.detail, MAX_TEXT)
    }
}

/// A burn rate measured over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnRate {
    pub window_s: u64,
    pub rate: f64,
}

/// `cn.slo.{env}.{service}`: burn rates and the remaining error budget, for the negotiator's gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloStatus {
    pub env: Env,
    pub service: ServiceName,
    /// Availability objective, e.g. 0.999.
    pub objective: f64,
    pub window_days: u32,
    #[serde(default)]
    pub burn_rates: Vec<BurnRate>,
    /// Fraction of the budget left; negative once overspent.
    pub budget_remaining: f64,
    pub ts: Timestamp,
}

impl Validate for SloStatus {
    fn validate(&self) -> Result<(), ValidationError> {
        v::range("objective", self.objective, 0.0, 1.0, "0..=1")?;
        v::range("budget_remaining", self.budget_remaining, -1e6, 1.0, "<= 1")?;
        v::items("burn_rates", &self.burn_rates, 16)?;
        self.burn_rates
            .iter()
            .try_for_each(|b| v::range("burn_rates.rate", b.rate, 0.0, f64::MAX, ">= 0"))
    }
}
