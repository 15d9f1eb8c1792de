//! The deploy agent: onboards apps and tracks what is deployed where.
//!
//! Onboarding requests are validated deterministically ([`onboarding`]) and answered on the
//! proof log (`onboarding_accepted` / `onboarding_refused` with a reason code); accepted app
//! specs are kept in redb. Deploy events keep each service's current and previous version.
//! Contract-driven canary rollouts build on this.

pub mod onboarding;

use agent_runtime::store::{Store, Table};
use agent_runtime::{AgentSpec, Context, HandleError, Handler, ProofDraft, RuntimeArgs};
use bus_schema::proof::ProofKind;
use bus_schema::{AgentName, DeployHistory, Inbound, OnboardRequest};
use serde_json::json;

pub const NAME: AgentName = bus_schema::fleet::DEPLOY_AGENT;

/// Onboards apps and tracks what is deployed where.
#[derive(Debug, clap::Parser)]
#[command(name = "deploy-agent", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Accept onboarding requests straight into prod.
    #[arg(long, env = "CN_ALLOW_PROD_ONBOARDING")]
    pub allow_prod_onboarding: bool,
}

pub fn spec() -> AgentSpec {
    AgentSpec::new(bus_schema::fleet::deploy_agent(), env!("CARGO_PKG_VERSION"))
}

const APPS: Table<OnboardRequest> = Table::new("apps");
const VERSIONS: Table<DeployHistory> = Table::new("versions");

/// The deploy agent's bus shell.
#[derive(Debug)]
pub struct DeployAgent {
    store: Store,
    allow_prod: bool,
}

impl DeployAgent {
    pub fn new(store: Store, allow_prod: bool) -> Self {
        Self { store, allow_prod }
    }

    async fn onboard(&mut self, ctx: &mut Context<'_>, req: OnboardRequest) -> Result<(), HandleError> {
        let key = format!("{}/{}", req.env, req.app_name);
        let existing = self.store.get(&APPS, &key)?;
        // A redelivery of the request that created the app is not a duplicate.
        let exists = existing.as_ref().is_some_and(|r| *r != req);
        let draft = match onboarding::validate(&req, exists, self.allow_prod) {
            Ok(()) => {
                self.store.put(&APPS, &key, &req)?;
                ProofDraft::new(ProofKind::OnboardingAccepted).detail(json!({"app_name": req.app_name, "runtime": req.runtime, "repo_url": req.repo_url}))
            }
            Err(refusal) => ProofDraft::new(ProofKind::OnboardingRefused)
                .reason(refusal.code)
                .detail(json!({"error": refusal.message, "app_name": req.app_name.chars().take(80).collect::<String>()})),
        };
        ctx.prove(draft.env(&req.env)).await?;
        Ok(())
    }
}

impl Handler for DeployAgent {
    async fn handle(&mut self, ctx: &mut Context<'_>, input: Inbound) -> Result<(), HandleError> {
        match input {
            Inbound::Onboard(req) => self.onboard(ctx, req).await,
            Inbound::Deploy(d) => {
                let key = format!("{}/{}", d.env, d.service);
                let mut history = self.store.get(&VERSIONS, &key)?.unwrap_or_default();
                history.apply(&d);
                self.store.put(&VERSIONS, &key, &history)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
