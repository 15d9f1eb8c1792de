//! The optimizer: every newly opened incident gets one action proposal.
//!
//! Today the choice comes from the prior table in [`prior`]; learning from outcomes builds on
//! it. Proposals go to `cn.actions.proposed.{env}.{service}` with an `action_proposed` record
//! that carries the explanation; governance decides what happens to them.

pub mod prior;

use agent_runtime::{AgentSpec, Context, HandleError, Handler, ProofDraft, RuntimeArgs};
use bus_schema::proof::ProofKind;
use bus_schema::{AgentName, Inbound, IncidentStatus, Timestamp, subject};
use serde_json::json;

pub const NAME: AgentName = bus_schema::fleet::RL_OPTIMIZER;

/// Proposes a remediation for every new incident.
#[derive(Debug, clap::Parser)]
#[command(name = "rl-optimizer", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn spec() -> AgentSpec {
    AgentSpec::new(bus_schema::fleet::rl_optimizer(), env!("CARGO_PKG_VERSION"))
}

/// The optimizer's bus shell.
#[derive(Debug, Default)]
pub struct Optimizer;

impl Handler for Optimizer {
    async fn handle(&mut self, ctx: &mut Context<'_>, input: Inbound) -> Result<(), HandleError> {
        let Inbound::Incident(incident) = input else { return Ok(()) };
        if incident.status != IncidentStatus::Opened {
            return Ok(());
        }
        let proposal = prior::propose(&incident, &NAME, Timestamp::now());
        let draft = ProofDraft::new(ProofKind::ActionProposed)
            .scope(&proposal.env, &proposal.service)
            .action(&proposal.action)
            .proposal(proposal.proposal_id)
            .incident(incident.incident_id)
            .detail(json!({"confidence": proposal.confidence, "explanation": proposal.explanation, "incident_kind": incident.kind}));
        ctx.prove(draft).await?;
        ctx.publish(&subject::PROPOSED.subject(&proposal.env, &proposal.service), &proposal).await?;
        Ok(())
    }
}
