//! The risk negotiator: contract requests in, deployment contracts out — negotiated with the
//! developer, gated on the error budget, and learning from how deploys turned out.
//!
//! - [`draft`]: the explained risk model and the contract that follows from it.
//! - [`model`]: an online logistic regression over the risk factors, with its calibration.
//! - [`learning`]: deploy outcomes (succeeded, rolled back, caused an incident) as labels.
//! - [`negotiate`]: counter-proposals judged within bounds set by risk and confidence.
//! - [`lifecycle`]: draft → negotiated → accepted/rejected → deploying → completed/rolled_back.
//!
//! The bus shell keeps contracts, the model, the learner and each service's remaining error
//! budget in redb. Contracts and their status changes go out on `cn.contracts.{env}.{service}`
//! with a proof record first; counter-proposals are answered on `cn.negotiate.{env}.{service}`
//! (core request/reply) and the model on `cn.model.risk-negotiator.{instance}`. Every
//! negotiation round and every learned outcome is on the proof log.

pub mod draft;
pub mod learning;
pub mod lifecycle;
pub mod model;
pub mod negotiate;

use std::collections::HashMap;

use agent_runtime::store::{Store, Table};
use agent_runtime::{AgentSpec, Context, HandleError, Handler, ProofDraft, Reply, Request, RuntimeArgs, RuntimeError};
use bus_schema::proof::ProofKind;
use bus_schema::{AgentName, Contract, ContractRequest, CounterProposal, DeployEvent, Inbound, Incident, RejectReason, Timestamp, Uuid, subject};
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
    rounds: u32,
}

const CONTRACTS: Table<Stored> = Table::new("contracts");
const MODEL: Table<Model> = Table::new("model");
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
}

fn key(env: &impl std::fmt::Display, service: &impl std::fmt::Display) -> String {
    format!("{env}/{service}")
}

impl Negotiator {
    pub fn load(store: Store) -> Result<Self, RuntimeError> {
        let contracts = store.scan(&CONTRACTS)?.into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect();
        let model = store.get(&MODEL, SINGLETON)?.unwrap_or_default();
        let learner = store.get(&LEARNER, SINGLETON)?.unwrap_or_default();
        let budgets = store.scan(&BUDGETS)?.into_iter().collect();
        Ok(Self { store, contracts, model, learner, budgets })
    }

    /// Publishes a contract (a draft or a status change), its proof record first.
    async fn publish(ctx: &mut Context<'_>, kind: ProofKind, contract: &Contract, extra: serde_json::Value) -> Result<(), HandleError> {
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
        ctx.prove(ProofDraft::new(kind).scope(&contract.env, &contract.service).detail(detail)).await?;
        ctx.publish(&subject::CONTRACTS.subject(&contract.env, &contract.service), contract).await?;
        Ok(())
    }

    async fn on_request(&mut self, ctx: &mut Context<'_>, req: ContractRequest) -> Result<(), HandleError> {
        let budget = self.budgets.get(&key(&req.env, &req.service)).copied();
        let history = self.learner.history(req.env.as_str(), req.service.as_str()).clone();
        let inputs = DraftInputs { history: &history, model: &self.model, budget_remaining: budget };
        let contract = draft::draft(&req, &inputs, &ctx.meta().input_id.clone(), Timestamp::now());
        let risk = &contract.risk;
        let extra = json!({
            "risk": {"score": risk.score, "level": risk.level, "confidence": risk.confidence,
                     "factors": risk.factors.iter().map(|f| json!({"name": f.name, "contribution": f.contribution})).collect::<Vec<_>>()},
            "validators": contract.validators.iter().map(|v| v.kind).collect::<Vec<_>>(),
            "canary_stages": contract.canary.iter().map(|s| s.weight_percent).collect::<Vec<_>>(),
            "budget_remaining": budget,
        });
        Self::publish(ctx, ProofKind::ContractDrafted, &contract, extra).await?;
        self.learner.remember(&contract);
        let stored = Stored { facts: draft::facts(&req), contract, rounds: 0 };
        self.store.write(|tx| {
            tx.put(&CONTRACTS, &stored.contract.contract_id.to_string(), &stored)?;
            tx.put(&LEARNER, SINGLETON, &self.learner)
        })?;
        self.contracts.insert(stored.contract.contract_id, stored);
        Ok(())
    }

    /// Feeds labels to the model, each on the proof log.
    async fn learn(&mut self, ctx: &mut Context<'_>, labels: Vec<Label>, env: &bus_schema::Env, service: &bus_schema::ServiceName) -> Result<(), HandleError> {
        for label in labels {
            let before = self.model.predict(&label.factors);
            self.model.learn(&label.factors, label.failed, label.at);
            let after = self.model.predict(&label.factors);
            let factors: Vec<&str> = label.factors.iter().map(|f| f.name.as_str()).collect();
            let detail = json!({"model": "deploy_risk", "failed": label.failed, "factors": factors, "predicted_before": before, "predicted_after": after, "observations": self.model.observations()});
            ctx.prove(ProofDraft::new(ProofKind::PolicyLearned).scope(env, service).detail(detail)).await?;
        }
        Ok(())
    }

    async fn on_deploy(&mut self, ctx: &mut Context<'_>, d: DeployEvent) -> Result<(), HandleError> {
        let matching: Vec<Uuid> = self.contracts.values().filter(|s| lifecycle::matches(&s.contract, &d)).map(|s| s.contract.contract_id).collect();
        let mut changed = Vec::new();
        for id in matching {
            let Some(stored) = self.contracts.get(&id) else { continue };
            let Ok(steps) = lifecycle::apply(&stored.contract, LifecycleEvent::Deploy(&d), Timestamp::now()) else { continue };
            for step in &steps {
                Self::publish(ctx, ProofKind::ContractStatusChanged, step, json!({"deploy_status": d.status})).await?;
            }
            if let Some(last) = steps.into_iter().last() {
                changed.push(Stored { contract: last, ..stored.clone() });
            }
        }
        // What the deploy teaches comes after what it did to the contracts.
        let mut labels = self.learner.settle(d.timestamp);
        labels.extend(self.learner.on_deploy(&d));
        self.learn(ctx, labels, &d.env, &d.service).await?;
        self.save(changed)
    }

    async fn on_incident(&mut self, ctx: &mut Context<'_>, i: Incident) -> Result<(), HandleError> {
        let labels = self.learner.on_incident(&i);
        if labels.is_empty() {
            return Ok(());
        }
        self.learn(ctx, labels, &i.env, &i.service).await?;
        self.save(Vec::new())
    }

    /// A spent budget rejects the service's open contracts (urgent fixes excepted).
    async fn on_slo(&mut self, ctx: &mut Context<'_>, s: bus_schema::SloStatus) -> Result<(), HandleError> {
        let k = key(&s.env, &s.service);
        let newly_spent = s.budget_remaining <= 0.0 && self.budgets.get(&k).is_none_or(|b| *b > 0.0);
        self.budgets.insert(k.clone(), s.budget_remaining);
        self.store.put(&BUDGETS, &k, &s.budget_remaining)?;
        if !newly_spent {
            return Ok(());
        }
        let open: Vec<Stored> =
            self.contracts.values().filter(|c| c.contract.env == s.env && c.contract.service == s.service && !c.facts.urgent).cloned().collect();
        let mut changed = Vec::new();
        for stored in open {
            let Ok(mut steps) = lifecycle::apply(&stored.contract, LifecycleEvent::Freeze, Timestamp::now()) else { continue };
            let Some(rejected) = steps.pop() else { continue };
            Self::publish(ctx, ProofKind::ContractStatusChanged, &rejected, json!({"budget_remaining": s.budget_remaining})).await?;
            changed.push(Stored { contract: rejected, ..stored });
        }
        self.save(changed)
    }

    fn save(&mut self, changed: Vec<Stored>) -> Result<(), HandleError> {
        self.store.write(|tx| {
            for s in &changed {
                tx.put(&CONTRACTS, &s.contract.contract_id.to_string(), s)?;
            }
            tx.put(&MODEL, SINGLETON, &self.model)?;
            tx.put(&LEARNER, SINGLETON, &self.learner)
        })?;
        for s in changed {
            self.contracts.insert(s.contract.contract_id, s);
        }
        Ok(())
    }

    /// One negotiation round: judged, recorded, and the changed contract published.
    async fn on_counter(&mut self, ctx: &mut Context<'_>, counter: CounterProposal) -> Result<Reply, HandleError> {
        let Some(stored) = self.contracts.get(&counter.contract_id).cloned() else {
            return Err(HandleError::Reject { reason: RejectReason::Refused, message: format!("no contract {} is known to the negotiator", counter.contract_id) });
        };
        let round = stored.rounds + 1;
        let facts = NegotiationFacts::new(&stored.facts, self.budgets.get(&key(&counter.env, &counter.service)).copied());
        let (reply, contract) = negotiate::negotiate(&stored.contract, &counter, &facts, round, Timestamp::now());
        let decisions: Vec<serde_json::Value> = reply.decisions.iter().map(|d| json!({"ask": d.ask, "accepted": d.accepted, "reason": d.reason})).collect();
        let detail = json!({
            "contract_id": counter.contract_id, "round": round, "requested_by": counter.requested_by, "justification": counter.justification,
            "accepted": reply.accepted, "decisions": decisions, "status": contract.status, "revision": contract.revision,
        });
        ctx.prove(ProofDraft::new(ProofKind::ContractNegotiated).scope(&counter.env, &counter.service).detail(detail)).await?;
        if contract != stored.contract {
            Self::publish(ctx, ProofKind::ContractStatusChanged, &contract, json!({"round": round})).await?;
        }
        self.save(vec![Stored { contract, rounds: round, ..stored }])?;
        Reply::of(&reply)
    }
}

impl Handler for Negotiator {
    async fn handle(&mut self, ctx: &mut Context<'_>, input: Inbound) -> Result<(), HandleError> {
        match input {
            Inbound::ContractRequest(req) => self.on_request(ctx, req).await,
            Inbound::Deploy(d) => self.on_deploy(ctx, d).await,
            Inbound::Incident(i) => self.on_incident(ctx, i).await,
            Inbound::Slo(s) => self.on_slo(ctx, s).await,
            _ => Ok(()),
        }
    }

    async fn respond(&mut self, ctx: &mut Context<'_>, request: Request) -> Result<Reply, HandleError> {
        match request {
            Request::Input(input) => match *input {
                Inbound::Negotiate(counter) => self.on_counter(ctx, counter).await,
                other => Err(HandleError::Reject { reason: RejectReason::Refused, message: format!("not a counter-proposal: {other:?}") }),
            },
            Request::Query(subject) if subject.starts_with("cn.model.") => Reply::of(&self.model.stats()),
            Request::Query(subject) => Err(HandleError::Reject { reason: RejectReason::InvalidSubject, message: format!("nothing is answered on {subject}") }),
        }
    }
}
