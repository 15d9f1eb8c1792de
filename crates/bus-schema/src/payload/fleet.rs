//! How agents show they are alive: heartbeats (core NATS) and the status endpoint.

use serde::{Deserialize, Serialize};

use crate::validate::{Validate, ValidationError};
use crate::{AgentName, InstanceId, Timestamp};

/// `cn.heartbeat.{agent}.{instance}`, published every few seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub agent: AgentName,
    pub instance: InstanceId,
    pub version: String,
    pub started_at: Timestamp,
    pub ts: Timestamp,
    /// Inputs handled (acked) since start.
    pub processed: u64,
    /// Inputs rejected since start.
    pub rejected: u64,
    /// The last proof record's seq.
    pub proof_seq: u64,
}

impl Validate for Heartbeat {
    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}

/// `cn.status.{agent}.{instance}` reply (the micro-service status endpoint; JSON for humans).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
    /// Durable consumers this instance pulls from.
    pub consumers: Vec<String>,
    /// Whether the instance is draining after SIGTERM.
    pub stopping: bool,
    /// Inputs that are not being consumed right now, and why (e.g. a consumer deleted under
    /// the agent, until it is recreated). Empty when the agent is healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<String>,
}

impl Validate for AgentStatus {
    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}
