//! The pure core: from an incident, what was tried and the table, a proposal; from an outcome,
//! an update. The bus shell in `lib.rs` only stores and publishes what these return.

use bus_schema::{Action, ActionProposal, AgentName, Candidate, Incident, Outcome, Timestamp, derive_id};

use crate::qlearn::{self, Choice, QTable, Update};
use crate::settings::Settings;
use crate::shield;
use crate::state::{SplitMix64, State, seed_for};

/// The contract's limit on a proposal's explanation, in bytes.
const MAX_EXPLANATION: usize = 4096;

/// `text` cut to [`MAX_EXPLANATION`] bytes at a character boundary.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_EXPLANATION);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A decision on one opening of an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub proposal: ActionProposal,
    pub state: State,
    pub candidates: Vec<Action>,
    pub choice: Choice,
}

/// The proposal id of an incident's `reopen_count`-th reopening: the same as the prior
/// optimizer's, so a replay of the same incident yields the same proposal.
pub fn proposal_id(incident: &Incident) -> bus_schema::Uuid {
    derive_id(&["proposal", &incident.incident_id.to_string(), &(u64::from(incident.reopen_count) + 1).to_string()])
}

/// Decides on a newly opened (or reopened) incident. `tried` is what this optimizer proposed
/// for it before. `None` when the policy allows nothing in its environment.
pub fn decide(settings: &Settings, table: &QTable, incident: &Incident, tried: &[Action], proposer: &AgentName, now: Timestamp) -> Option<Decision> {
    let state = State::of(incident, tried);
    let candidates = shield::candidates(&settings.policy, incident);
    let epsilon = if settings.mode.learns() { settings.exploration.epsilon_for(incident.env.as_str()) } else { 0.0 };
    let mut rng = SplitMix64::new(seed_for(incident.incident_id, incident.reopen_count));
    let choice = qlearn::choose(table, &state, &candidates, epsilon, &mut rng)?;
    let proposal = ActionProposal {
        proposal_id: proposal_id(incident),
        incident_id: Some(incident.incident_id),
        env: incident.env.clone(),
        service: incident.service.clone(),
        action: choice.action.clone(),
        params: Default::default(),
        confidence: choice.confidence,
        proposer: proposer.clone(),
        explanation: bounded(&choice.explanation),
        candidates: choice.values.iter().map(|v| Candidate { action: v.action.clone(), value: v.entry.value }).collect(),
        exploratory: choice.exploratory,
        require_human: false,
        proposed_at: now,
    };
    Some(Decision { proposal, state, candidates, choice })
}

/// Learns from the outcome of a proposal made in `state` among `candidates`. `None` when the
/// settings do not learn (frozen, shadow).
pub fn learn(settings: &Settings, table: &mut QTable, state: &State, candidates: &[Action], outcome: &Outcome) -> Option<Update> {
    if !settings.mode.learns() {
        return None;
    }
    let reward = qlearn::reward(&outcome.action, outcome.recovered, outcome.time_to_recover_s);
    let next = (!outcome.recovered).then(|| state.after(&outcome.action));
    Some(table.update(settings.params, state, candidates, &outcome.action, reward, next.as_ref()))
}
