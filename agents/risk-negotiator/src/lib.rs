//! The risk negotiator: contract requests in, drafted contracts out.
//!
//! [`draft`] turns a request into a contract (risk with every factor listed, guardrails,
//! validators, canary and rollback plans); the shell publishes it on
//! `cn.contracts.{env}.{service}` with a `contract_drafted` record. Negotiation and learning
//! build on this.

pub mod draft;

use agent_runtime::{AgentSpec, Context, HandleError, Handler, ProofDraft, RuntimeArgs};
use bus_schema::proof::ProofKind;
use bus_schema::{AgentName, Inbound, Timestamp, subject};
use serde_json::json;

pub const NAME: AgentName = bus_schema::fleet::RISK_NEGOTIATOR;

/// Drafts deployment contracts from contract requests.
#[derive(Debug, clap::Parser)]
#[command(name = "risk-negotiator", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn spec() -> AgentSpec {
    AgentSpec::new(bus_schema::fleet::risk_negotiator(), env!("CARGO_PKG_VERSION"))
}

/// The negotiator's bus shell.
#[derive(Debug, Default)]
pub struct Negotiator;

impl Handler for Negotiator {
    async fn handle(&mut self, ctx: &mut Context<'_>, input: Inbound) -> Result<(), HandleError> {
        let Inbound::ContractRequest(req) = input else { return Ok(()) };
        let contract = draft::draft(&req, &ctx.meta().input_id.clone(), Timestamp::now());
        let draft = ProofDraft::new(ProofKind::ContractDrafted).scope(&contract.env, &contract.service).detail(json!({
            "contract_id": contract.contract_id,
            "deployment_id": contract.deployment_id,
            "version": contract.version,
            "risk": {"score": contract.risk.score, "level": contract.risk.level, "confidence": contract.risk.confidence,
                     "factors": contract.risk.factors.iter().map(|f| json!({"name": f.name, "contribution": f.contribution})).collect::<Vec<_>>()},
            "validators": contract.validators.iter().map(|v| v.kind).collect::<Vec<_>>(),
            "canary_stages": contract.canary.iter().map(|s| s.weight_percent).collect::<Vec<_>>(),
        }));
        ctx.prove(draft).await?;
        ctx.publish(&subject::CONTRACTS.subject(&contract.env, &contract.service), &contract).await?;
        Ok(())
    }
}
