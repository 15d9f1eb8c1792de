//! What in-process tests against the simulator share.

use bus_schema::{ActionProposal, Backend, ExecutionResult, ExecutionStatus, SimAction};
use simulator::world::{Event, World};

/// The executor's `sim` backend in process: the approved action goes to the world, at the time
/// of its last tick; returns the execution result and the events the action caused.
pub fn execute(world: &mut World, p: &ActionProposal) -> (ExecutionResult, Vec<Event>) {
    let at = world.now();
    let action = SimAction { proposal_id: p.proposal_id, env: p.env.clone(), service: p.service.clone(), action: p.action.clone(), params: p.params.clone(), issued_at: at };
    let effect = world.act(&action).unwrap();
    let result = ExecutionResult {
        proposal_id: p.proposal_id,
        approval_id: None,
        incident_id: p.incident_id,
        env: p.env.clone(),
        service: p.service.clone(),
        action: p.action.clone(),
        backend: Backend::Sim,
        status: ExecutionStatus::Executed,
        refusal: None,
        exit_code: None,
        output_tail: None,
        detail: effect.summary,
        started_at: at,
        finished_at: at,
    };
    (result, effect.events)
}
