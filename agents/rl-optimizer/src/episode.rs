//! What the optimizer remembers per incident: the episode. An incident is worked on until the
//! service is well, a human takes over, or the budget is spent:
//!
//! - each proposal it made, what triggered it (its opening, the outcome or refusal of the one
//!   before, the end of a wait), the context it was made in, and what became of it;
//! - the actions that already failed in this incident — refused, judged not recovered, judged
//!   recovered but the incident came back, or superseded — which are never proposed again
//!   (a `missing_prerequisite` the shield did not foresee means governance has not read a
//!   deploy event yet: the action is proposed once more, after [`crate::core::RECHECK`]);
//! - whether it waits for another action's verdict on the service (`verification_pending`),
//!   or for the end of a cooldown that governance held its best action back for
//!   (`cooldown_active`, ending within [`crate::core::COOLDOWN_WAIT`]), and until when;
//! - whether it was handed to a human.
//!
//! Bounded: at most [`MAX_PROPOSALS`] proposals per incident and [`MAX_INCIDENTS`] incidents.
//! Outcomes arrive minutes after an incident resolves, so a resolved incident is kept until
//! room is needed; then resolved incidents go first, least recently seen first, then the
//! oldest open.

use std::collections::BTreeMap;

use bus_schema::{Action, ActionProposal, Incident, Outcome, ReasonCode, Timestamp, Uuid};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::values::{Update, does_nothing};

pub const MAX_PROPOSALS: usize = 16;
pub const MAX_INCIDENTS: usize = 2_000;

/// What became of a proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Status {
    /// Published; no refusal or outcome yet (governance, a human or the executor has it).
    Awaiting,
    /// Recorded only (shadow mode): nothing was done and nothing will come back.
    Shadow,
    /// Governance's reason code.
    Refused(String),
    /// Governance held it back for a moment (its reason code: `cooldown_active`, ending soon):
    /// proposed again when the wait ends.
    HeldBack(String),
    Judged {
        recovered: bool,
        revised: bool,
    },
    /// Another action ran before its window ended: not credited either way.
    Superseded,
}

/// A change of preference, with the outcome that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    pub outcome: Outcome,
    pub update: Update,
    pub change: PreferenceChange,
}

/// The first choice for a service in a context changed after an update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceChange {
    pub state: String,
    pub old_best: Action,
    pub new_best: Action,
    /// Every candidate's value after the update, best first.
    pub values: Vec<(Action, f64)>,
}

/// One proposal and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposed {
    pub proposal: ActionProposal,
    /// What made it: `open:{reopen_count}`, `outcome:{id}`, `revised:{id}`, `refused:{id}`,
    /// `wake:{id}` (a sibling's verdict), `due:{id}` (a wait ran out). A redelivered trigger
    /// republishes what it made.
    pub trigger: String,
    pub context: Context,
    pub status: Status,
    /// It hands the incident to a human (what was tried, what might be next).
    pub escalation: bool,
    /// The update its outcome made, once learned from.
    pub learned: Option<Update>,
    /// The `action_proposed` record's detail (JSON), so a republished proposal is recorded alike.
    pub detail: String,
    /// Whether it (and its record) is known to be stored. One that is not — its publish failed,
    /// or the agent stopped before the ack — is sent again ([`crate::core::Core::unpublished`]).
    /// State written before the flag existed holds only proposals that went out.
    #[serde(default = "went_out")]
    pub published: bool,
    /// The `policy_learned` record its verdict caused, until it is stored: a redelivered
    /// verdict records it again instead of nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrecorded: Option<Box<Learned>>,
}

fn went_out() -> bool {
    true
}

impl Proposed {
    /// Whether it failed in this incident and must not be proposed again for it.
    fn failed(&self) -> bool {
        match &self.status {
            Status::Awaiting | Status::Shadow | Status::HeldBack(_) => false,
            Status::Refused(reason) => reason != ReasonCode::VerificationPending.as_str(),
            Status::Judged { .. } | Status::Superseded => true,
        }
    }

    fn refused_for(&self, reason: ReasonCode) -> bool {
        self.status == Status::Refused(reason.as_str().to_owned())
    }
}

/// Another action's verdict on the service is awaited before this incident gets one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    /// The proposal governance held back.
    pub held: Uuid,
    pub until: Timestamp,
    /// Only `until` ends it (a cooldown, a recheck), not another action's verdict on the
    /// service: woken early, the same action is refused again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub until_only: bool,
}

/// One incident's episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentMemory {
    /// The incident as last seen (evidence left out).
    pub incident: Incident,
    pub open: bool,
    pub waiting: Option<Waiting>,
    /// Handed to a human: nothing more is proposed automatically.
    pub human: bool,
    pub proposals: Vec<Proposed>,
    /// Proposals made so far (their ids count on from it).
    pub made: u32,
    pub last_seen: Timestamp,
    /// The chain the incident started; every proposal for it continues it.
    pub correlation_id: String,
}

impl IncidentMemory {
    pub fn new(incident: &Incident, correlation_id: &str, now: Timestamp) -> Self {
        let mut m = Self {
            incident: incident.clone(),
            open: true,
            waiting: None,
            human: false,
            proposals: Vec::new(),
            made: 0,
            last_seen: now,
            correlation_id: correlation_id.to_owned(),
        };
        m.see(incident, now);
        m
    }

    /// Takes in the incident as published now.
    pub fn see(&mut self, incident: &Incident, now: Timestamp) {
        self.incident = Incident { evidence: Vec::new(), ..incident.clone() };
        self.last_seen = now;
    }

    /// The proposal a trigger made, if any (a redelivered input).
    pub fn made_by(&self, trigger: &str) -> Option<&Proposed> {
        self.proposals.iter().find(|p| p.trigger == trigger)
    }

    pub fn find_mut(&mut self, proposal_id: Uuid) -> Option<&mut Proposed> {
        self.proposals.iter_mut().find(|p| p.proposal.proposal_id == proposal_id)
    }

    /// A proposal still out there: the next waits for what becomes of it.
    pub fn awaiting(&self) -> Option<&Proposed> {
        self.proposals.iter().find(|p| p.status == Status::Awaiting)
    }

    /// The actions that failed in this incident. A missing prerequisite the shield did not
    /// foresee is governance not having read a fact yet: the action fails only the second
    /// time. One held back for a cooldown has not failed (the refusal that ends its waits
    /// has).
    pub fn failed(&self) -> Vec<Action> {
        let mut out: Vec<Action> = self
            .proposals
            .iter()
            .filter(|p| {
                p.failed()
                    && (!p.refused_for(ReasonCode::MissingPrerequisite)
                        || self.missing_prerequisites(&p.proposal.action) > 1)
            })
            .map(|p| p.proposal.action.clone())
            .collect();
        out.dedup();
        out
    }

    /// How often `action` was refused for a missing prerequisite in this incident.
    pub fn missing_prerequisites(&self, action: &Action) -> usize {
        self.proposals
            .iter()
            .filter(|p| {
                p.proposal.action == *action && p.refused_for(ReasonCode::MissingPrerequisite)
            })
            .count()
    }

    /// How often `action` was held back in this incident.
    pub fn held_back(&self, action: &Action) -> usize {
        let held =
            |p: &&Proposed| p.proposal.action == *action && matches!(p.status, Status::HeldBack(_));
        self.proposals.iter().filter(held).count()
    }

    /// Actions that changed something and ran for this incident (they use up its budget).
    pub fn ran(&self) -> u32 {
        let ran = |p: &&Proposed| {
            matches!(p.status, Status::Judged { .. } | Status::Superseded)
                && !does_nothing(&p.proposal.action)
        };
        self.proposals.iter().filter(ran).count() as u32
    }

    /// What was tried and what became of it, for a human: `restart (not recovered)`.
    pub fn tried(&self) -> Vec<String> {
        let word = |p: &Proposed| match &p.status {
            Status::Awaiting => "waiting".to_owned(),
            Status::Shadow => "shadow".to_owned(),
            Status::Refused(reason) => format!("refused: {reason}"),
            Status::HeldBack(reason) => format!("held back: {reason}"),
            Status::Judged { recovered: true, revised: false } => "recovered".to_owned(),
            Status::Judged { recovered: true, revised: true }
            | Status::Judged { recovered: false, revised: true } => {
                "recovered, then came back".to_owned()
            }
            Status::Judged { recovered: false, revised: false } => "not recovered".to_owned(),
            Status::Superseded => "superseded by another action".to_owned(),
        };
        self.proposals
            .iter()
            .filter(|p| !p.escalation)
            .map(|p| format!("{} ({})", p.proposal.action, word(p)))
            .collect()
    }

    /// Adds a proposal, forgetting the oldest beyond [`MAX_PROPOSALS`].
    pub fn push(&mut self, proposed: Proposed) {
        self.made += 1;
        self.proposals.push(proposed);
        let excess = self.proposals.len().saturating_sub(MAX_PROPOSALS);
        self.proposals.drain(..excess);
    }
}

/// Which incidents to forget so that at most `limit` remain.
pub fn to_forget(memory: &BTreeMap<Uuid, IncidentMemory>, limit: usize) -> Vec<Uuid> {
    let excess = memory.len().saturating_sub(limit);
    if excess == 0 {
        return Vec::new();
    }
    let mut order: Vec<(&Uuid, &IncidentMemory)> = memory.iter().collect();
    order.sort_by(|a, b| a.1.open.cmp(&b.1.open).then(a.1.last_seen.cmp(&b.1.last_seen)));
    order.into_iter().take(excess).map(|(id, _)| *id).collect()
}
