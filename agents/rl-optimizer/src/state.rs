//! What the optimizer knows about an incident when it decides: the learning state.
//!
//! A [`State`] is deliberately coarse, so that what is learned on one incident carries over to
//! the next of its sort:
//!
//! | part | values | from |
//! |---|---|---|
//! | kind | the incident kind | `Incident::kind` |
//! | severity | `low` (low, medium) or `high` (high, critical) | `Incident::severity` |
//! | env | `dev`, `stage`, `prod` or `other` | `Incident::env` |
//! | deploy | `deploy` or `no-deploy`: a suspect version is named, or the kind is a failed deploy or a post-deploy regression | `suspect_version`, `kind` |
//! | tried | the actions this optimizer already proposed for the incident (a sorted set, at most [`MAX_TRIED`]) | its per-incident memory |
//!
//! Its key, e.g. `crash_loop/high/stage/deploy/tried=restart`, names the row of the Q-table.
//!
//! Decisions draw from a [`SplitMix64`] seeded by [`seed_for`] the incident id and its reopen
//! count, so replaying the same incident gives the same decision.

use bus_schema::{Action, Incident, IncidentKind, Severity, Uuid};
use serde::{Deserialize, Serialize};

/// The `tried` set holds at most this many actions (governance allows 3 per incident).
pub const MAX_TRIED: usize = 3;

/// Severity, in two buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeverityBucket {
    Low,
    High,
}

/// The environment, as a class: everything that is not dev, stage or prod is `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvClass {
    Dev,
    Stage,
    Prod,
    Other,
}

impl EnvClass {
    pub fn of(env: &str) -> Self {
        match env {
            "dev" => Self::Dev,
            "stage" => Self::Stage,
            "prod" => Self::Prod,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Stage => "stage",
            Self::Prod => "prod",
            Self::Other => "other",
        }
    }
}

/// The learning state of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub kind: IncidentKind,
    pub severity: SeverityBucket,
    pub env: EnvClass,
    pub recent_deploy: bool,
    /// Sorted, without repeats, at most [`MAX_TRIED`].
    pub tried: Vec<Action>,
}

/// True when a deploy is implicated: a suspect version is named or the kind is about a deploy.
pub fn recent_deploy(incident: &Incident) -> bool {
    incident.suspect_version.is_some() || matches!(incident.kind, IncidentKind::DeployFailed | IncidentKind::DeployRegression)
}

impl State {
    /// The state of an incident, given what was already proposed for it.
    pub fn of(incident: &Incident, tried: &[Action]) -> Self {
        let severity = match incident.severity {
            Severity::Low | Severity::Medium => SeverityBucket::Low,
            Severity::High | Severity::Critical => SeverityBucket::High,
        };
        let mut state =
            Self { kind: incident.kind, severity, env: EnvClass::of(incident.env.as_str()), recent_deploy: recent_deploy(incident), tried: Vec::new() };
        for action in tried {
            state = state.after(action);
        }
        state
    }

    /// The state after `action` was tried and did not end the incident. Once the set is full
    /// the state stops changing (the oldest distinctions matter most).
    pub fn after(&self, action: &Action) -> Self {
        let mut next = self.clone();
        if !next.tried.contains(action) && next.tried.len() < MAX_TRIED {
            next.tried.push(action.clone());
            next.tried.sort();
        }
        next
    }

    /// The Q-table row's key, e.g. `crash_loop/high/stage/deploy/tried=restart+rollback`.
    pub fn key(&self) -> String {
        let tried = if self.tried.is_empty() { "-".to_owned() } else { self.tried.iter().map(Action::as_str).collect::<Vec<_>>().join("+") };
        let severity = match self.severity {
            SeverityBucket::Low => "low",
            SeverityBucket::High => "high",
        };
        let deploy = if self.recent_deploy { "deploy" } else { "no-deploy" };
        format!("{}/{severity}/{}/{deploy}/tried={tried}", self.kind, self.env.as_str())
    }
}

/// The seeded PRNG exploration draws from (the runtime's SplitMix64).
pub use agent_runtime::rng::Rng as SplitMix64;

/// The seed of the decision on one opening of an incident.
pub fn seed_for(incident_id: Uuid, reopen_count: u32) -> u64 {
    let n = incident_id.as_u128();
    ((n >> 64) as u64) ^ (n as u64) ^ u64::from(reopen_count).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
