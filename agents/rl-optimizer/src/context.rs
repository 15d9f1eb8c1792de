//! What the optimizer knows about an incident when it decides: its context.
//!
//! A [`Context`] is deliberately coarse, so that what is learned on one incident carries over
//! to the next of its sort:
//!
//! | part | values | from |
//! |---|---|---|
//! | kind | the incident kind | `Incident::kind` |
//! | env | `dev`, `stage`, `prod` or `other` | `Incident::env` |
//! | deploy | `deploy` or `no-deploy`: a deploy is implicated by evidence — the detector named a suspect version (signals worse after it than before), or the kind is a failed deploy or a post-deploy regression | `suspect_version`, `kind` |
//!
//! Its key, e.g. `crash_loop/stage/deploy`, names the values learned for it; what was already
//! tried for one incident is not part of it (that is the episode's, see [`crate::episode`]),
//! so each action's value is learned from its own outcomes only.
//!
//! Decisions draw from a [`SplitMix64`] seeded by [`seed_for`] the incident id and the number
//! of the proposal, so replaying the same incident gives the same decisions.

use bus_schema::{Incident, IncidentKind, Uuid};
use serde::{Deserialize, Serialize};

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

/// The learning context of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub kind: IncidentKind,
    pub env: EnvClass,
    pub deploy: bool,
}

/// True when a deploy is implicated: the detector named a suspect version, or the kind is
/// about a deploy.
pub fn deploy_implicated(incident: &Incident) -> bool {
    incident.suspect_version.is_some()
        || matches!(incident.kind, IncidentKind::DeployFailed | IncidentKind::DeployRegression)
}

impl Context {
    pub fn of(incident: &Incident) -> Self {
        Self {
            kind: incident.kind,
            env: EnvClass::of(incident.env.as_str()),
            deploy: deploy_implicated(incident),
        }
    }

    /// The key of what is learned for this context, e.g. `crash_loop/stage/deploy`.
    pub fn key(&self) -> String {
        let deploy = if self.deploy { "deploy" } else { "no-deploy" };
        format!("{}/{}/{deploy}", self.kind, self.env.as_str())
    }
}

/// The seeded PRNG exploration draws from (the runtime's SplitMix64).
pub use agent_runtime::rng::Rng as SplitMix64;

/// The seed of the `n`-th decision about an incident.
pub fn seed_for(incident_id: Uuid, n: u32) -> u64 {
    let id = incident_id.as_u128();
    ((id >> 64) as u64) ^ (id as u64) ^ u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
