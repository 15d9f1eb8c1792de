//! The risk negotiator: contract requests in, deployment contracts out — negotiated with the
//! developer, gated on the error budget, and learning from how deploys turned out.
//!
//! - [`draft`]: the explained risk model and the contract that follows from it.
//! - [`model`]: an online logistic regression over the risk factors, with its calibration.
//! - [`learning`]: deploy outcomes (succeeded, rolled back, caused an incident) as labels.
//! - [`negotiate`]: counter-proposals judged within bounds set by risk and confidence.
//! - [`lifecycle`]: draft → negotiated → accepted/rejected → deploying → completed/rolled_back.
//!
//! The bus shell keeps contracts (with their drafted guardrails), the model, the learner and
//! each service's remaining error budget in redb. Each input is worked out on copies, published
//! and proved, and only then taken into memory, its contracts and budget written in one
//! transaction; the model and the learner, which grow with the deploy history, are written at
//! each checkpoint of the state file (the runtime replays what came after). A contract that
//! would fail validation is never published. A new draft supersedes the open drafts of the same
//! deployment. Contracts and their status changes go out on `cn.contracts.{env}.{service}`
//! with a proof record first; counter-proposals are answered on `cn.negotiate.{env}.{service}`
//! (core request/reply) and the model on `cn.model.risk-negotiator.{instance}`. Every
//! negotiation round and every learned outcome is on the proof log.

pub mod lifecycle;
pub mod negotiate;
pub mod refusal;

// The pure model is shared with `cnctl contract from-git --offline`.
pub use risk_model::{draft, learning, model};

use std::collections::HashMap;

use agent_runtime::store::{Store, Table};
use agent_runtime::{
    AgentSpec, Context, HandleError, Handler, NoWork, ProofDraft, Reply, RuntimeArgs, RuntimeError,
};
use bus_schema::fleet::{NegotiatorInput, NegotiatorRequest};
use bus_schema::proof::ProofKind;

use bus_schema::{
    AgentName, Contract, ContractRequest, ContractStatus, CounterProposal, DeployEvent, Guardrails,
    Incident, RejectReason, Timestamp, Uuid, Validate, subject,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use draft::{ContractFacts, DraftInputs};
use learning::{Label, Learner};
use lifecycle::LifecycleEvent;
use model::Model;
use negotiate::NegotiationFacts;

pub const NAME: AgentName = bus_schema::fleet::RISK_NEGOTIATOR;

/// Drafts, negotiates and learns deployment contracts.
#[derive(Debug, clap::Parser)]
#[command(name = "risk-negotiator", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn spec() -> AgentSpec {
    AgentSpec::new(bus_schema::fleet::risk_negotiator(), env!("CARGO_PKG_VERSION"))
}

/// A contract with what negotiation needs to know about its change.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    contract: Contract,
    facts: ContractFacts,
    /// Negotiation rounds answered, changed or not (the reply's round number).
    rounds: u32,
    /// The guardrails as drafted, which bound every relax; `None` in contracts stored before
    /// they were kept, which are then bounded against their current guardrails.
    #[serde(default)]
    drafted: Option<Guardrails>,
}

impl Stored {
    fn drafted(&self) -> &Guardrails {
        self.drafted.as_ref().unwrap_or(&self.contract.guardrails)
    }

    /// Open for negotiation, a freeze or a newer draft: not yet deploying, not closed.
    fn is_open(&self) -> bool {
        matches!(
            self.contract.status,
            ContractStatus::Draft | ContractStatus::Negotiated | ContractStatus::Accepted
        )
    }
}

/// What one input changes, taken into memory (and its contracts and budget written to the
/// state file) only once what the input published is stored, so that a failed publish or write
/// leaves the negotiator as it was.
#[derive(Debug, Default)]
struct Pending {
    contracts: Vec<Stored>,
    model: Option<Model>,
    learner: Option<Learner>,
    budget: Option<(String, f64)>,
}

const CONTRACTS: Table<Stored> = Table::new("contracts");
/// The risk model (`.v2`: standardised features and a calibration step; a model stored by an
/// earlier version learned on other features and is not read, the negotiator starts afresh).
const MODEL: Table<Model> = Table::new("model.v2");
const LEARNER: Table<Learner> = Table::new("learner");
const BUDGETS: Table<f64> = Table::new("budgets");
const SINGLETON: &str = "current";

/// The negotiator's bus shell.
#[derive(Debug)]
pub struct Negotiator {
    store: Store,
    contracts: HashMap<Uuid, Stored>,
    model: Model,
    learner: Learner,
    /// Error budget left, by `env/service`.
    budgets: HashMap<String, f64>,
    /// The model or the learner changed since the last checkpoint. They grow with the deploy
    /// history, so they are written once per snapshot rather than once per input.
    unsaved: bool,
}

fn key(env: &impl std::fmt::Display, service: &impl std::fmt::Display) -> String {
    format!("{env}/{service}")
}

/// A contract that would fail the schema's validation is never published.
fn check_valid(contract: &Contract, what: &str) -> Result<(), HandleError> {
    contract.validate().map_err(|e| HandleError::Reject {
        reason: RejectReason::Refused,
        message: format!(
            "the {what} contract {} would not pass validation ({e}); nothing was published",
            contract.contract_id
        ),
    })
}

impl Negotiator {
    pub fn load(store: Store) -> Result<Self, RuntimeError> {
        let contracts = store
            .scan(&CONTRACTS)?
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect();
        let model = store.get(&MODEL, SINGLETON)?.unwrap_or_default();
        let learner = store.get(&LEARNER, SINGLETON)?.unwrap_or_default();
        let budgets = store.scan(&BUDGETS)?.into_iter().collect();
        Ok(Self { store, contracts, model, learner, budgets, unsaved: false })
    }

    /// Publishes a contract (a draft or a status change), its proof record first.
    async fn publish(
        ctx: &mut Context<'_>,
        kind: ProofKind,
        contract: &Contract,
        extra: serde_json::Value,
    ) -> Result<(), HandleError> {
        let mut detail = json!({
            "contract_id": contract.contract_id,
            "deployment_id": contract.deployment_id,
            "version": contract.version,
            "status": contract.status,
            "revision": contract.revision,
            "reason": contract.reason,
        });
        if let (Some(d), Some(e)) = (detail.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        ctx.prove(ProofDraft::new(kind).scope(&contract.env, &contract.service).detail(detail))
            .await?;
        ctx.publish(&subject::CONTRACTS.subject(&contract.env, &contract.service), contract)
            .await?;
        Ok(())
    }

    /// Takes what an input changed into memory and writes its contracts and budget in one
    /// transaction — once what the input published is stored, so a redelivery after a failed
    /// publish decides again. The model and the learner wait for the next checkpoint.
    async fn commit(&mut self, ctx: &mut Context<'_>, pending: Pending) -> Result<(), HandleError> {
        ctx.confirm().await?;
        self.store.write(|tx| {
            for s in &pending.contracts {
                tx.put(&CONTRACTS, &s.contract.contract_id.to_string(), s)?;
            }
            if let Some((k, b)) = &pending.budget {
                tx.put(&BUDGETS, k, b)?;
            }
            Ok(())
        })?;
        for s in pending.contracts {
            self.contracts.insert(s.contract.contract_id, s);
        }
        if let Some(model) = pending.model {
            self.model = model;
            self.unsaved = true;
        }
        if let Some(learner) = pending.learner {
            self.learner = learner;
            self.unsaved = true;
        }
        if let Some((k, b)) = pending.budget {
            self.budgets.insert(k, b);
        }
        Ok(())
    }

    async fn on_request(
        &mut self,
        ctx: &mut Context<'_>,
        req: ContractRequest,
    ) -> Result<(), HandleError> {
        let budget = self.budgets.get(&key(&req.env, &req.service)).copied();
        let inputs = DraftInputs {
            history: self.learner.history(req.env.as_str(), req.service.as_str()),
            model: &self.model,
            budget_remaining: budget,
        };
        let now = Timestamp::now();
        let contract = draft::draft(&req, &inputs, &ctx.meta().input_id.clone(), now);
        check_valid(&contract, "drafted")?;
        let risk = &contract.risk;
        let extra = json!({
            "risk": {"score": risk.score, "level": risk.level, "confidence": risk.confidence,
                     "factors": risk.factors.iter().map(|f| json!({"name": f.name, "contribution": f.contribution})).collect::<Vec<_>>()},
            "validators": contract.validators.iter().map(|v| v.kind).collect::<Vec<_>>(),
            "canary_stages": contract.canary.iter().map(|s| s.weight_percent).collect::<Vec<_>>(),
            "budget_remaining": budget,
        });
        Self::publish(ctx, ProofKind::ContractDrafted, &contract, extra).await?;
        // Older open drafts of the same deployment give way, so its deploy moves only this one.
        let older: Vec<Stored> = self
            .contracts
            .values()
            .filter(|s| s.is_open() && s.contract.contract_id != contract.contract_id)
            .filter(|s| {
                (&s.contract.env, &s.contract.service, &s.contract.deployment_id)
                    == (&contract.env, &contract.service, &contract.deployment_id)
            })
            .cloned()
            .collect();
        let mut pending = Pending::default();
        for stored in older {
            let Ok(mut steps) = lifecycle::apply(
                &stored.contract,
                LifecycleEvent::Superseded(contract.contract_id),
                now,
            ) else {
                continue;
            };
            let Some(superseded) = steps.pop() else { continue };
            Self::publish(
                ctx,
                ProofKind::ContractStatusChanged,
                &superseded,
                json!({"superseded_by": contract.contract_id}),
            )
            .await?;
            pending.contracts.push(Stored { contract: superseded, ..stored });
        }
        let mut learner = self.learner.clone();
        learner.remember(&contract);
        pending.learner = Some(learner);
        pending.contracts.push(Stored {
            facts: draft::facts(&req),
            drafted: Some(contract.guardrails.clone()),
            contract,
            rounds: 0,
        });
        self.commit(ctx, pending).await
    }

    /// Feeds labels to `model`, each on the proof log.
    async fn learn(
        ctx: &mut Context<'_>,
        model: &mut Model,
        labels: Vec<Label>,
        env: &bus_schema::Env,
        service: &bus_schema::ServiceName,
    ) -> Result<(), HandleError> {
        for label in labels {
            let before = model.predict(&label.factors);
            model.learn(&label.factors, label.failed, label.at);
            let after = model.predict(&label.factors);
            let factors: Vec<&str> = label.factors.iter().map(|f| f.name.as_str()).collect();
            let detail = json!({"model": "deploy_risk", "failed": label.failed, "factors": factors, "predicted_before": before, "predicted_after": after, "observations": model.observations()});
            ctx.prove(ProofDraft::new(ProofKind::PolicyLearned).scope(env, service).detail(detail))
                .await?;
        }
        Ok(())
    }

    async fn on_deploy(
        &mut self,
        ctx: &mut Context<'_>,
        d: DeployEvent,
    ) -> Result<(), HandleError> {
        let now = Timestamp::now();
        let matching: Vec<Stored> = self
            .contracts
            .values()
            .filter(|s| lifecycle::matches(&s.contract, &d))
            .cloned()
            .collect();
        let mut pending = Pending::default();
        for stored in matching {
            let Ok(steps) = lifecycle::apply(&stored.contract, LifecycleEvent::Deploy(&d), now)
            else {
                continue;
            };
            for step in &steps {
                Self::publish(
                    ctx,
                    ProofKind::ContractStatusChanged,
                    step,
                    json!({"deploy_status": d.status}),
                )
                .await?;
            }
            if let Some(last) = steps.into_iter().last() {
                pending.contracts.push(Stored { contract: last, ..stored });
            }
        }
        // What the deploy teaches comes after what it did to the contracts.
        // Learned in event time, but never past this clock: a future-stamped event would
        // otherwise end quiet windows early.
        let (mut learner, mut model) = (self.learner.clone(), self.model.clone());
        let labels =
            learner.on_deploy(&DeployEvent { timestamp: d.timestamp.min(now), ..d.clone() });
        Self::learn(ctx, &mut model, labels, &d.env, &d.service).await?;
        (pending.learner, pending.model) = (Some(learner), Some(model));
        self.commit(ctx, pending).await
    }

    async fn on_incident(&mut self, ctx: &mut Context<'_>, i: Incident) -> Result<(), HandleError> {
        let mut learner = self.learner.clone();
        let labels = learner
            .on_incident(&Incident { opened_at: i.opened_at.min(Timestamp::now()), ..i.clone() });
        let mut model = self.model.clone();
        Self::learn(ctx, &mut model, labels, &i.env, &i.service).await?;
        self.commit(
            ctx,
            Pending { learner: Some(learner), model: Some(model), ..Pending::default() },
        )
        .await
    }

    /// While the budget is spent, every open contract of the service is rejected (urgent
    /// fixes and deploys under way excepted); the budget is stored with the rejections, after
    /// they are published, so a failed publish is retried rather than forgotten.
    async fn on_slo(
        &mut self,
        ctx: &mut Context<'_>,
        s: bus_schema::SloStatus,
    ) -> Result<(), HandleError> {
        let mut pending = Pending {
            budget: Some((key(&s.env, &s.service), s.budget_remaining)),
            ..Pending::default()
        };
        if draft::budget_spent(Some(s.budget_remaining)) {
            let open: Vec<Stored> = self
                .contracts
                .values()
                .filter(|c| {
                    c.contract.env == s.env
                        && c.contract.service == s.service
                        && !c.facts.urgent
                        && c.is_open()
                })
                .cloned()
                .collect();
            for stored in open {
                let Ok(mut steps) =
                    lifecycle::apply(&stored.contract, LifecycleEvent::Freeze, Timestamp::now())
                else {
                    continue;
                };
                let Some(rejected) = steps.pop() else { continue };
                Self::publish(
                    ctx,
                    ProofKind::ContractStatusChanged,
                    &rejected,
                    json!({"budget_remaining": s.budget_remaining}),
                )
                .await?;
                pending.contracts.push(Stored { contract: rejected, ..stored });
            }
        }
        self.commit(ctx, pending).await
    }

    /// One negotiation round: judged, recorded, and the changed contract published.
    async fn on_counter(
        &mut self,
        ctx: &mut Context<'_>,
        counter: CounterProposal,
    ) -> Result<Reply, HandleError> {
        let Some(stored) = self.contracts.get(&counter.contract_id).cloned() else {
            return Err(HandleError::Reject {
                reason: RejectReason::Refused,
                message: format!("no contract {} is known to the negotiator", counter.contract_id),
            });
        };
        let round = stored.rounds + 1;
        let facts = NegotiationFacts::new(
            &stored.facts,
            stored.drafted(),
            self.budgets.get(&key(&counter.env, &counter.service)).copied(),
        );
        let (reply, contract) =
            negotiate::negotiate(&stored.contract, &counter, &facts, round, Timestamp::now());
        if contract != stored.contract {
            check_valid(&contract, "negotiated")?;
        }
        let decisions: Vec<serde_json::Value> = reply
            .decisions
            .iter()
            .map(|d| json!({"ask": d.ask, "accepted": d.accepted, "reason": d.reason}))
            .collect();
        let detail = json!({
            "contract_id": counter.contract_id, "round": round, "requested_by": counter.requested_by, "justification": counter.justification,
            "accepted": reply.accepted, "reason": reply.reason, "decisions": decisions, "status": contract.status, "revision": contract.revision,
        });
        ctx.prove(
            ProofDraft::new(ProofKind::ContractNegotiated)
                .scope(&counter.env, &counter.service)
                .detail(detail),
        )
        .await?;
        if contract != stored.contract {
            Self::publish(
                ctx,
                ProofKind::ContractStatusChanged,
                &contract,
                json!({"round": round}),
            )
            .await?;
        }
        self.commit(
            ctx,
            Pending {
                contracts: vec![Stored { contract, rounds: round, ..stored }],
                ..Pending::default()
            },
        )
        .await?;
        Reply::of(&reply)
    }
}

impl Handler for Negotiator {
    type Input = NegotiatorInput;
    type Request = NegotiatorRequest;
    type Work = NoWork;

    fn checkpoint(&mut self) -> Result<(), RuntimeError> {
        if self.unsaved {
            self.store.write(|tx| {
                tx.put(&MODEL, SINGLETON, &self.model)?;
                tx.put(&LEARNER, SINGLETON, &self.learner)
            })?;
            self.unsaved = false;
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        ctx: &mut Context<'_>,
        input: NegotiatorInput,
    ) -> Result<(), HandleError> {
        match input {
            NegotiatorInput::Request(req) => self.on_request(ctx, req).await,
            NegotiatorInput::Deploy(d) => self.on_deploy(ctx, d).await,
            NegotiatorInput::Incident(i) => self.on_incident(ctx, i).await,
            NegotiatorInput::Slo(s) => self.on_slo(ctx, s).await,
        }
    }

    async fn respond(
        &mut self,
        ctx: &mut Context<'_>,
        request: NegotiatorRequest,
    ) -> Result<Reply, HandleError> {
        match request {
            NegotiatorRequest::Counter(counter) => self.on_counter(ctx, counter).await,
            // Whichever instance the queue group picks answers, with its own model.
            NegotiatorRequest::Model(_) => Reply::of(&self.model.stats()),
        }
    }
}
