//! The deploy agent: onboards apps and drives contract-driven canary rollouts.
//!
//! - [`onboarding`]: onboarding requests are validated deterministically and answered on the
//!   proof log (`onboarding_accepted` / `onboarding_refused` with a reason code); accepted app
//!   specs are kept in redb.
//! - [`rollout`]: when a deploy starts under an accepted contract (in either order: the
//!   contract, then the deploy event, or the other way round), the contract's canary plan runs
//!   stage by stage through governance; [`judge`] judges each stage with [`stats`].
//! - [`DeployAgent`]: the bus shell. Each rollout lives in redb with the stream positions it
//!   applied and an outbox of what it decided but has not published, written before anything
//!   is published: a restarted agent resumes at the stage it was in, and a redelivered input is
//!   neither applied twice nor lost.

pub mod judge;
pub mod onboarding;
pub mod rollout;
pub mod stats;

use std::collections::HashMap;
use std::time::Duration;

use agent_runtime::store::{Store, Table};
use agent_runtime::{
    AgentSpec, Context, Due, HandleError, Handler, NoRequests, ProofDraft, RuntimeArgs,
    RuntimeError,
};
use bus_schema::fleet::DeployAgentInput;
use bus_schema::proof::ProofKind;
use bus_schema::{
    AgentName, Contract, ContractStatus, DeployEvent, DeployHistory, DeployStatus, OnboardRequest,
    RejectReason, Timestamp, subject,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use rollout::{Effect, Rollout};

pub const NAME: AgentName = bus_schema::fleet::DEPLOY_AGENT;

/// Onboards apps and drives canary rollouts from accepted deployment contracts.
#[derive(Debug, clap::Parser)]
#[command(name = "deploy-agent", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Accept onboarding requests straight into prod.
    #[arg(long, env = "CN_ALLOW_PROD_ONBOARDING")]
    pub allow_prod_onboarding: bool,
    /// A canary stage that hears no metric sample for this long (wall clock) cannot be judged:
    /// its next step is put to a human (e.g. 15m, 1h).
    #[arg(long, env = "CN_CANARY_SILENCE", default_value = "15m", value_parser = agent_runtime::config::parse_duration)]
    pub canary_silence: Duration,
}

pub fn spec() -> AgentSpec {
    AgentSpec::new(bus_schema::fleet::deploy_agent(), env!("CARGO_PKG_VERSION"))
}

const APPS: Table<OnboardRequest> = Table::new("apps");
const VERSIONS: Table<DeployHistory> = Table::new("versions");
/// Per env/service: the newest accepted contract.
const CONTRACTS: Table<Contract> = Table::new("contracts");
/// Per env/service: a deploy that started before its contract was accepted.
const STARTED: Table<Started> = Table::new("started");
/// Per env/service: the current rollout, or the last one.
const ROLLOUTS: Table<Rollout> = Table::new("rollouts");

/// A started deploy waiting for its contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Started {
    deploy: DeployEvent,
    stable_version: Option<String>,
    correlation_id: String,
}

/// The deploy agent's bus shell.
#[derive(Debug)]
pub struct DeployAgent {
    store: Store,
    allow_prod: bool,
    silence: Duration,
    /// Every rollout in the store, by env/service.
    rollouts: HashMap<String, Rollout>,
}

impl DeployAgent {
    /// Loads the rollouts the store holds.
    pub fn load(store: Store, allow_prod: bool, silence: Duration) -> Result<Self, RuntimeError> {
        let mut rollouts: HashMap<String, Rollout> = store.scan(&ROLLOUTS)?.into_iter().collect();
        let active = rollouts.values().filter(|r| !r.is_done()).count();
        if active > 0 {
            info!(active, "resuming rollouts");
        }
        // Silence is measured while the agent listens: samples sent while it was down are
        // still in the stream, to be read before a stage can be called silent.
        let now = Timestamp::now();
        for r in rollouts.values_mut() {
            r.last_heard = now;
        }
        Ok(Self { store, allow_prod, silence, rollouts })
    }

    async fn onboard(
        &mut self,
        ctx: &mut Context<'_>,
        req: OnboardRequest,
    ) -> Result<(), HandleError> {
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

    async fn on_deploy(
        &mut self,
        ctx: &mut Context<'_>,
        d: DeployEvent,
    ) -> Result<(), HandleError> {
        let key = rollout::key(&d.env, &d.service);
        let mut history = self.store.get(&VERSIONS, &key)?.unwrap_or_default();
        // The canary runs beside the last version that succeeded (a rolled-back one is never it).
        let stable_version = d
            .previous_version
            .clone()
            .or_else(|| history.current_version.clone())
            .filter(|v| *v != d.version);
        history.apply(&d);
        self.store.put(&VERSIONS, &key, &history)?;
        if d.status != DeployStatus::Started {
            self.store.remove(&STARTED, &key)?;
            return self.drive(ctx, &key, |r, _| r.on_deploy_ended(&d)).await;
        }
        let started = Started {
            deploy: d,
            stable_version,
            correlation_id: ctx.meta().correlation_id.clone(),
        };
        match self.store.get(&CONTRACTS, &key)?.filter(|c| c.covers(&started.deploy)) {
            Some(contract) => self.start(ctx, &contract, started).await,
            None => {
                info!(env = %started.deploy.env, service = %started.deploy.service, version = %started.deploy.version, "deploy started without an accepted contract (yet): no canary until one is accepted");
                self.store.put(&STARTED, &key, &started)?;
                Ok(())
            }
        }
    }

    async fn on_contract(&mut self, ctx: &mut Context<'_>, c: Contract) -> Result<(), HandleError> {
        if !matches!(c.status, ContractStatus::Accepted | ContractStatus::Deploying) {
            return Ok(());
        }
        let key = rollout::key(&c.env, &c.service);
        self.store.put(&CONTRACTS, &key, &c)?;
        match self.store.get(&STARTED, &key)?.filter(|s| c.covers(&s.deploy)) {
            Some(started) => {
                // Forgotten only once the rollout is started: a failure before that (while
                // superseding the current one) leaves it for the contract's redelivery.
                self.start(ctx, &c, started).await?;
                self.store.remove(&STARTED, &key)?;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Starts the rollout of `started` under `contract`, superseding the service's current one.
    async fn start(
        &mut self,
        ctx: &mut Context<'_>,
        contract: &Contract,
        started: Started,
    ) -> Result<(), HandleError> {
        let key = rollout::key(&started.deploy.env, &started.deploy.service);
        let id = rollout::rollout_id(contract, &started.deploy);
        if self.rollouts.get(&key).is_some_and(|r| r.rollout_id == id) {
            return Ok(()); // started before: this is a redelivery
        }
        let version = started.deploy.version.clone();
        self.drive(ctx, &key, |r, _| r.supersede(&version)).await?;
        let (mut rollout, effects) = Rollout::start(
            contract,
            &started.deploy,
            started.stable_version,
            started.correlation_id,
            Timestamp::now(),
        );
        info!(env = %rollout.env, service = %rollout.service, version = %rollout.version, stages = rollout.stages.len(), "rollout started");
        rollout.delivery.push(effects);
        self.rollouts.insert(key.clone(), rollout);
        self.publish_outbox(ctx, &key).await
    }

    /// Applies an input to the service's rollout, unless it was applied before, then publishes
    /// what the rollout decided. Nothing happens without a rollout in progress.
    async fn drive(
        &mut self,
        ctx: &mut Context<'_>,
        key: &str,
        f: impl FnOnce(&mut Rollout, Timestamp) -> Vec<Effect>,
    ) -> Result<(), HandleError> {
        let Some(r) = self.rollouts.get_mut(key).filter(|r| !r.is_done() || !r.delivery.is_empty())
        else {
            return Ok(());
        };
        if !r.is_done()
            && let Some(input) = r.delivery.unapplied(ctx.meta())
        {
            let effects = f(r, Timestamp::now());
            r.delivery.applied(input, effects);
        }
        self.publish_outbox(ctx, key).await
    }

    /// Stores the rollout with its outbox, publishes the outbox in order, and stores it again.
    /// A failure leaves the rest in the outbox for the retry.
    async fn publish_outbox(
        &mut self,
        ctx: &mut Context<'_>,
        key: &str,
    ) -> Result<(), HandleError> {
        let Some(r) = self.rollouts.get_mut(key) else { return Ok(()) };
        self.store.put(&ROLLOUTS, key, r)?;
        if r.delivery.is_empty() {
            return Ok(());
        }
        while let Some((n, effect)) = r.delivery.next() {
            let stored = match emit(ctx, r, n, effect).await {
                Ok(()) => ctx.confirm().await.map_err(HandleError::from),
                Err(e) => Err(e),
            };
            if let Err(e) = stored {
                self.store.put(&ROLLOUTS, key, r)?;
                return Err(e);
            }
            r.delivery.sent();
        }
        self.store.put(&ROLLOUTS, key, r)?;
        Ok(())
    }
}

/// Publishes effect number `n` of a rollout, in the rollout's chain, under ids of its own: the
/// rollout's and the effect's number.
async fn emit(
    ctx: &mut Context<'_>,
    r: &Rollout,
    n: u64,
    effect: &Effect,
) -> Result<(), HandleError> {
    let chain = r.correlation_id.clone();
    let id = format!("rollout:{}:{n}", r.rollout_id);
    match effect {
        Effect::Propose(p) => {
            let draft = ProofDraft::new(ProofKind::ActionProposed)
                .scope(&p.env, &p.service)
                .action(&p.action)
                .proposal(p.proposal_id)
                .correlation(chain.clone())
                .detail(json!({"confidence": p.confidence, "explanation": p.explanation, "params": p.params, "require_human": p.require_human, "rollout_id": r.rollout_id}));
            ctx.prove_keyed(draft, &id).await?;
            ctx.publish_keyed(&subject::PROPOSED.subject(&p.env, &p.service), p, chain, &id)
                .await?;
        }
        Effect::Prove(proof) => {
            let detail = serde_json::from_str(&proof.detail).unwrap_or_default();
            ctx.prove_keyed(
                ProofDraft::new(proof.kind)
                    .scope(&r.env, &r.service)
                    .reason(proof.reason.clone())
                    .correlation(chain)
                    .detail(detail),
                &id,
            )
            .await?;
        }
        Effect::Deploy(d) => {
            ctx.publish_keyed(&subject::DEPLOY_EVENTS.subject(&d.env, &d.service), d, chain, &id)
                .await?;
        }
    }
    Ok(())
}

/// What falls due for a rollout by the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    /// A stage heard nothing for `--canary-silence`.
    Silence,
    /// A step governance held back is due again.
    Retry,
    /// Effects a restart left unpublished.
    Flush,
}

/// An item of a rollout's due work. `n` changes once the work is done (the stage, the retry,
/// the next effect's number), so each occurrence has a key, and ids, of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutWork {
    pub kind: WorkKind,
    /// The service's rollout (`env/service`).
    pub service: String,
    pub rollout_id: bus_schema::Uuid,
    pub n: u64,
}

impl std::fmt::Display for RolloutWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            WorkKind::Silence => "silence",
            WorkKind::Retry => "retry",
            WorkKind::Flush => "flush",
        };
        write!(f, "{kind}:{}:{}:{}", self.service, self.rollout_id, self.n)
    }
}

impl Handler for DeployAgent {
    type Input = DeployAgentInput;
    type Request = NoRequests;
    type Work = RolloutWork;

    async fn handle(
        &mut self,
        ctx: &mut Context<'_>,
        input: DeployAgentInput,
    ) -> Result<(), HandleError> {
        use DeployAgentInput as I;
        match input {
            I::Onboard(req) => self.onboard(ctx, req).await,
            I::Deploy(d) => self.on_deploy(ctx, d).await,
            I::Contract(c) => self.on_contract(ctx, c).await,
            I::Metric(m) => {
                let key = rollout::key(&m.env, &m.service);
                self.drive(ctx, &key, |r, now| r.on_metric(&m, now)).await
            }
            I::MetricBatch(b) => {
                // One input: the samples are applied together, in order, or not at all.
                let Some((env, service)) = b.service() else { return Ok(()) };
                let key = rollout::key(env, service);
                self.drive(ctx, &key, |r, now| {
                    b.samples.iter().flat_map(|m| r.on_metric(m, now)).collect()
                })
                .await
            }
            I::Executed(x) => {
                let key = rollout::key(&x.env, &x.service);
                self.drive(ctx, &key, |r, now| r.on_executed(&x, now)).await
            }
            I::Refused(x) => {
                let key = rollout::key(&x.env, &x.service);
                self.drive(ctx, &key, |r, now| r.on_refused(&x, now)).await
            }
            I::Command(c) => {
                let key = rollout::key(&c.env, &c.service);
                let refusal = match self.rollouts.get(&key) {
                    None => Some(format!(
                        "no rollout of {}/{} is in progress: a rollout starts when a deploy starts under an accepted contract",
                        c.env, c.service
                    )),
                    Some(r) => r.command_refusal(&c),
                };
                if let Some(message) = refusal {
                    return Err(HandleError::Reject { reason: RejectReason::Refused, message });
                }
                self.drive(ctx, &key, |r, now| r.on_command(&c, now)).await
            }
        }
    }

    /// Stages that have heard nothing for `--canary-silence`, held-back steps due again, and
    /// outboxes a restart left unpublished.
    fn due(&mut self, now: Timestamp) -> Vec<Due<RolloutWork>> {
        let mut due = Vec::new();
        for (key, r) in &self.rollouts {
            let item = |kind, n| Due {
                key: RolloutWork { kind, service: key.clone(), rollout_id: r.rollout_id, n },
                correlation_id: r.correlation_id.clone(),
            };
            if r.is_silent(now, self.silence) {
                due.push(item(WorkKind::Silence, r.stage as u64));
            }
            if r.retry_due(now) {
                due.push(item(WorkKind::Retry, u64::from(r.retries)));
            }
            if !r.delivery.is_empty() {
                due.push(item(WorkKind::Flush, r.delivery.published()));
            }
        }
        due
    }

    async fn handle_due(
        &mut self,
        ctx: &mut Context<'_>,
        due: Due<RolloutWork>,
    ) -> Result<(), HandleError> {
        let silence = self.silence;
        let key = &due.key.service;
        match due.key.kind {
            WorkKind::Silence => self.drive(ctx, key, |r, now| r.on_silence(now, silence)).await,
            WorkKind::Retry => self.drive(ctx, key, |r, now| r.on_retry(now)).await,
            WorkKind::Flush => self.drive(ctx, key, |_, _| Vec::new()).await,
        }
    }
}
