//! What a service remembers between events besides its signals: its incidents, the actions
//! waiting for a verdict, the recoveries still watched, and the outputs not yet stored.
//!
//! Plain data, part of [`crate::service::ServiceState`]. The modules that act on it add the
//! behaviour: [`crate::lifecycle`] (incidents), [`crate::outcome`] (verdicts and holds) and
//! [`crate::engine`] (the outbox). Keeping the data here lets the state be the foundation those
//! modules import, instead of a hub that imports them back.

use std::collections::BTreeMap;

use bus_schema::{Action, Incident, IncidentKind, Outcome, SloStatus, Timestamp, Uuid};
use serde::{Deserialize, Serialize};

/// An incident with what the lifecycle needs to remember about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    pub incident: Incident,
    pub(crate) healthy_run: u32,
    /// When it was (re)opened; time to recover counts from here.
    pub(crate) since: Timestamp,
    pub(crate) last_published: Timestamp,
    /// When a detector last said the problem is there.
    pub(crate) last_firing: Timestamp,
    /// This step's new figures, published (or not) once the step is complete.
    #[serde(skip)]
    pub(crate) draft: Option<Incident>,
}

/// The open and recently resolved incidents of one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incidents {
    pub(crate) open: BTreeMap<IncidentKind, Tracked>,
    pub(crate) resolved: BTreeMap<IncidentKind, Tracked>,
}

/// An executed action waiting for its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub proposal_id: Uuid,
    pub incident_id: Uuid,
    pub action: Action,
    /// The service's first event after the action; until it arrives, when the result came.
    pub started_at: Timestamp,
    pub deadline: Timestamp,
    /// Whether an event after the action has started the window.
    pub anchored: bool,
    /// The action's chain, which the outcome continues.
    pub correlation_id: String,
    /// The service's incidents open when the action ran (its own among them): if one of them
    /// comes back, the action did not cure the service.
    #[serde(default)]
    pub open_then: Vec<Uuid>,
}

/// A recovery credited to an action, watched until `until` (the flap window after the
/// incident resolved): if the incident comes back before then, the verdict is revised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub proposal_id: Uuid,
    pub incident_id: Uuid,
    pub action: Action,
    pub resolved_at: Timestamp,
    pub until: Timestamp,
    pub correlation_id: String,
}

/// An output decided but not yet published: the service's outbox keeps it until it is stored,
/// so a failed publish is retried before anything newer for the service goes out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Pending {
    Incident(Incident),
    /// With the correlation id of the action's chain.
    Outcome(Outcome, String),
    Slo(SloStatus),
    /// Samples of a batch that could not be judged (the others were), by their place in the
    /// batch: one `event_rejected` record for the batch, since the batch itself was accepted.
    Rejected(Vec<(usize, String)>),
}
