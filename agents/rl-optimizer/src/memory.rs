//! What the optimizer remembers per incident: each proposal it made (with the state and
//! candidates it was made in, so an outcome can be learned from), refusals, and whether the
//! outcome was learned from already (a redelivered outcome is learned from once).
//!
//! Bounded: at most [`MAX_PROPOSALS`] per incident and [`MAX_INCIDENTS`] incidents. Outcomes
//! arrive minutes after an incident resolves, so a resolved incident is kept until room is
//! needed; then resolved incidents go first, least recently seen first, then the oldest open.

use std::collections::BTreeMap;

use bus_schema::{Action, ActionProposal, Timestamp, Uuid};
use serde::{Deserialize, Serialize};

use crate::qlearn::Update;
use crate::state::State;

pub const MAX_PROPOSALS: usize = 8;
pub const MAX_INCIDENTS: usize = 2_000;

/// One proposal and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposed {
    pub proposal: ActionProposal,
    pub reopen_count: u32,
    pub state: State,
    pub candidates: Vec<Action>,
    /// Recorded on the proof log only (shadow mode): nothing was done.
    pub shadow: bool,
    /// Governance's reason code, when it refused.
    #[serde(default)]
    pub refused: Option<String>,
    /// The update its outcome made, once learned from.
    #[serde(default)]
    pub learned: Option<Update>,
    /// Its outcome arrived (learned from or not).
    #[serde(default)]
    pub judged: bool,
}

/// One incident's memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentMemory {
    pub proposals: Vec<Proposed>,
    pub resolved: bool,
    pub last_seen: Timestamp,
}

impl IncidentMemory {
    pub fn new(now: Timestamp) -> Self {
        Self { proposals: Vec::new(), resolved: false, last_seen: now }
    }

    /// What was proposed for real (not in shadow), oldest first.
    pub fn tried(&self) -> Vec<Action> {
        self.proposals.iter().filter(|p| !p.shadow).map(|p| p.proposal.action.clone()).collect()
    }

    /// The proposal made for this opening of the incident, if any (a redelivered incident).
    pub fn for_opening(&self, reopen_count: u32) -> Option<&Proposed> {
        self.proposals.iter().find(|p| p.reopen_count == reopen_count)
    }

    pub fn find_mut(&mut self, proposal_id: Uuid) -> Option<&mut Proposed> {
        self.proposals.iter_mut().find(|p| p.proposal.proposal_id == proposal_id)
    }

    /// Adds a proposal, forgetting the oldest beyond [`MAX_PROPOSALS`].
    pub fn push(&mut self, proposed: Proposed) {
        self.proposals.push(proposed);
        let excess = self.proposals.len().saturating_sub(MAX_PROPOSALS);
        self.proposals.drain(..excess);
    }
}

/// Which incidents to forget so that at most `limit` remain.
pub fn to_forget(memory: &BTreeMap<Uuid, IncidentMemory>, limit: usize) -> Vec<Uuid> {
    let excess = memory.len().saturating_sub(limit);
    let mut order: Vec<(&Uuid, &IncidentMemory)> = memory.iter().collect();
    order.sort_by(|a, b| b.1.resolved.cmp(&a.1.resolved).then(a.1.last_seen.cmp(&b.1.last_seen)));
    order.into_iter().take(excess).map(|(id, _)| *id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn resolved_incidents_are_forgotten_first_then_the_oldest() {
        let t0 = Timestamp::now();
        let mut m = BTreeMap::new();
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        for (i, id) in ids.iter().enumerate() {
            let mut mem = IncidentMemory::new(t0.plus(Duration::from_secs(i as u64)));
            mem.resolved = i == 2;
            m.insert(*id, mem);
        }
        assert_eq!(to_forget(&m, 2), vec![ids[2], ids[0]]);
        assert!(to_forget(&m, 4).is_empty());
    }
}
