//! The optimizer: proposes a remediation for every newly opened (or reopened) incident and
//! learns from the outcomes which remediation works where — tabular Q-learning behind a shield.
//!
//! - [`state`]: the learning state of an incident (kind, severity, env, deploy, tried).
//! - [`qlearn`]: values, the choice, the update, reward and confidence, with their formulas.
//! - [`shield`]: only actions governance allows in the env; exploring never in prod.
//! - [`decide`]: the pure core the shell below stores and publishes.
//! - [`memory`]: per-incident memory (proposals, refusals, outcomes learned from).
//! - [`settings`]: `--mode learning|frozen|shadow`, α, γ, ε, `--explore-envs`, `--policy`.
//!
//! Proposals go to `cn.actions.proposed.{env}.{service}` with an `action_proposed` record that
//! carries the explanation (in shadow mode only the record, marked `"shadow": true`). An
//! outcome of one of its proposals updates the table; when that changes a state's preferred
//! action a `policy_learned` record says from what to what. Refusals are remembered, never
//! rewarded. `cn.policy.rl-optimizer.{instance}` answers with the learned table
//! (`cnctl policy show`). Table, memory and counters live in the agent's redb file and are
//! written before anything is published, so a redelivered input republishes the same thing.

pub mod decide;
pub mod memory;
pub mod prior;
pub mod qlearn;
pub mod settings;
pub mod shield;
pub mod state;

use std::collections::BTreeMap;

use agent_runtime::store::{Store, Table};
use agent_runtime::{AgentSpec, Context, HandleError, Handler, ProofDraft, Reply, Request, RuntimeArgs, RuntimeError};
use bus_schema::proof::ProofKind;
use bus_schema::{AgentName, Inbound, Incident, InstanceId, IncidentStatus, LearnedPolicy, Outcome, PolicyEntry, RejectReason, Refusal, Timestamp, Uuid, subject};
use serde_json::json;

use memory::{IncidentMemory, MAX_INCIDENTS, Proposed};
use qlearn::{QTable, Row};
use settings::Settings;

pub const NAME: AgentName = bus_schema::fleet::RL_OPTIMIZER;

/// The table's rows, by state key.
const Q: Table<Row> = Table::new("q");
/// Counters (`updates`).
const COUNTERS: Table<u64> = Table::new("counters");
/// Per-incident memory, by incident id.
const INCIDENTS: Table<IncidentMemory> = Table::new("incidents");
/// A LearnedPolicy reply lists at most this many entries (the contract's limit).
const MAX_ENTRIES: usize = 10_000;

/// Proposes a remediation for every new incident and learns from outcomes.
#[derive(Debug, clap::Parser)]
#[command(name = "rl-optimizer", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub optimizer: settings::OptimizerArgs,
}

pub fn spec() -> AgentSpec {
    AgentSpec::new(bus_schema::fleet::rl_optimizer(), env!("CARGO_PKG_VERSION"))
}

/// The optimizer's bus shell.
#[derive(Debug)]
pub struct Optimizer {
    store: Store,
    settings: Settings,
    table: QTable,
    memory: BTreeMap<Uuid, IncidentMemory>,
    /// This instance's `cn.policy.rl-optimizer.{instance}`: the runtime listens on every
    /// instance's subject, and only our own is answered with our table.
    policy_subject: String,
}

impl Optimizer {
    /// Loads the table and the memory from the agent's state file.
    pub fn load(store: Store, settings: Settings, instance: &InstanceId) -> Result<Self, RuntimeError> {
        let updates = store.get(&COUNTERS, "updates")?.unwrap_or(0);
        let table = QTable::from_rows(store.scan(&Q)?, updates);
        let memory = store.scan(&INCIDENTS)?.into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect();
        let policy_subject = subject::POLICY.subject(&NAME, instance).as_str().to_owned();
        Ok(Self { store, settings, table, memory, policy_subject })
    }

    /// The learned table as the `cn.policy.*` reply.
    pub fn learned_policy(&self) -> LearnedPolicy {
        let entries = self
            .table
            .rows()
            .iter()
            .flat_map(|(state, row)| {
                row.iter().filter_map(|(action, e)| Some(PolicyEntry { state: state.clone(), action: action.parse().ok()?, value: e.value, visits: e.visits }))
            })
            .take(MAX_ENTRIES)
            .collect();
        LearnedPolicy {
            mode: self.settings.mode.as_str().to_owned(),
            alpha: self.settings.params.alpha,
            gamma: self.settings.params.gamma,
            epsilon: self.settings.exploration.epsilon,
            updates: self.table.updates,
            entries,
        }
    }

    /// Stores one incident's memory (and forgets what no longer fits).
    fn save_incident(&mut self, id: Uuid, mem: IncidentMemory) -> Result<(), RuntimeError> {
        let mut next = self.memory.clone();
        next.insert(id, mem.clone());
        let forget = memory::to_forget(&next, MAX_INCIDENTS);
        self.store.write(|tx| {
            tx.put(&INCIDENTS, &id.to_string(), &mem)?;
            forget.iter().try_for_each(|f| tx.remove(&INCIDENTS, &f.to_string()))
        })?;
        self.memory.insert(id, mem);
        for f in forget {
            self.memory.remove(&f);
        }
        Ok(())
    }

    async fn on_incident(&mut self, ctx: &mut Context<'_>, incident: Incident) -> Result<(), HandleError> {
        let now = Timestamp::now();
        let mut mem = self.memory.get(&incident.incident_id).cloned().unwrap_or_else(|| IncidentMemory::new(now));
        mem.last_seen = now;
        match incident.status {
            IncidentStatus::Updated => return Ok(()),
            IncidentStatus::Resolved => {
                if self.memory.contains_key(&incident.incident_id) {
                    mem.resolved = true;
                    self.save_incident(incident.incident_id, mem)?;
                }
                return Ok(());
            }
            IncidentStatus::Opened => {}
        }
        mem.resolved = false;
        let proposed = match mem.for_opening(incident.reopen_count) {
            // A redelivery: publish exactly what was decided then.
            Some(p) => p.clone(),
            None => {
                let Some(d) = decide::decide(&self.settings, &self.table, &incident, &mem.tried(), &NAME, now) else {
                    tracing::warn!(env = %incident.env, "the policy allows no action in this environment; nothing proposed");
                    return Ok(());
                };
                let shadow = self.settings.mode == settings::Mode::Shadow;
                let p = Proposed {
                    proposal: d.proposal,
                    reopen_count: incident.reopen_count,
                    state: d.state,
                    candidates: d.candidates,
                    shadow,
                    refused: None,
                    learned: None,
                    judged: false,
                };
                mem.push(p.clone());
                self.save_incident(incident.incident_id, mem)?;
                p
            }
        };
        let proposal = &proposed.proposal;
        let candidates: Vec<_> = proposal.candidates.iter().map(|c| json!({"action": c.action, "value": c.value})).collect();
        let draft = ProofDraft::new(ProofKind::ActionProposed)
            .scope(&proposal.env, &proposal.service)
            .action(&proposal.action)
            .proposal(proposal.proposal_id)
            .incident(incident.incident_id)
            .detail(json!({
                "confidence": proposal.confidence, "explanation": proposal.explanation, "incident_kind": incident.kind,
                "state": proposed.state.key(), "candidates": candidates, "exploratory": proposal.exploratory,
                "mode": self.settings.mode.as_str(), "shadow": proposed.shadow,
            }));
        ctx.prove(draft).await?;
        if !proposed.shadow {
            ctx.publish(&subject::PROPOSED.subject(&proposal.env, &proposal.service), proposal).await?;
        }
        Ok(())
    }

    async fn on_outcome(&mut self, ctx: &mut Context<'_>, outcome: Outcome) -> Result<(), HandleError> {
        let Some(proposal_id) = outcome.proposal_id else { return Ok(()) };
        let Some(mut mem) = self.memory.get(&outcome.incident_id).cloned() else { return Ok(()) };
        let Some(p) = mem.find_mut(proposal_id) else { return Ok(()) };
        if outcome.action != p.proposal.action {
            tracing::warn!(%proposal_id, outcome = %outcome.action, proposed = %p.proposal.action, "an outcome for another action than proposed; not learned from");
            return Ok(());
        }
        if !p.judged {
            p.judged = true;
            let mut table = self.table.clone();
            p.learned = decide::learn(&self.settings, &mut table, &p.state, &p.candidates, &outcome);
            let key = p.state.key();
            let row = table.row(&key).cloned();
            let updates = table.updates;
            let (id, mem_now) = (outcome.incident_id, mem.clone());
            self.store.write(|tx| {
                if let Some(row) = &row {
                    tx.put(&Q, &key, row)?;
                }
                tx.put(&COUNTERS, "updates", &updates)?;
                tx.put(&INCIDENTS, &id.to_string(), &mem_now)
            })?;
            self.table = table;
            self.memory.insert(id, mem_now);
        }
        // Written from what was stored, so a redelivered outcome records the same change.
        let learned = mem.proposals.iter().find(|p| p.proposal.proposal_id == proposal_id).and_then(|p| p.learned.clone());
        if let Some(change) = learned.as_ref().and_then(|u| u.changed.as_ref()) {
            let values: Vec<_> = change.values.iter().map(|(a, v)| json!({"action": a, "value": v})).collect();
            let draft = ProofDraft::new(ProofKind::PolicyLearned)
                .scope(&outcome.env, &outcome.service)
                .action(&change.new_best)
                .proposal(proposal_id)
                .incident(outcome.incident_id)
                .detail(json!({
                    "state": change.state, "old_best": change.old_best, "new_best": change.new_best, "values": values,
                    "outcome": {"action": outcome.action, "recovered": outcome.recovered, "time_to_recover_s": outcome.time_to_recover_s},
                    "update": learned,
                }));
            ctx.prove(draft).await?;
        }
        Ok(())
    }

    fn on_refusal(&mut self, refusal: Refusal) -> Result<(), HandleError> {
        let Some(incident_id) = refusal.incident_id else { return Ok(()) };
        let Some(mut mem) = self.memory.get(&incident_id).cloned() else { return Ok(()) };
        let Some(p) = mem.find_mut(refusal.proposal_id) else { return Ok(()) };
        if p.refused.is_some() {
            return Ok(());
        }
        // Remembered, not rewarded: nothing was done, so there is nothing to learn about the action.
        p.refused = Some(refusal.reason.as_str().to_owned());
        self.save_incident(incident_id, mem)?;
        Ok(())
    }
}

impl Handler for Optimizer {
    async fn handle(&mut self, ctx: &mut Context<'_>, input: Inbound) -> Result<(), HandleError> {
        match input {
            Inbound::Incident(incident) => self.on_incident(ctx, incident).await,
            Inbound::Outcome(outcome) => self.on_outcome(ctx, outcome).await,
            Inbound::Refused(refusal) => self.on_refusal(refusal),
            _ => Ok(()),
        }
    }

    async fn respond(&mut self, _ctx: &mut Context<'_>, request: Request) -> Result<Reply, HandleError> {
        match request {
            Request::Query(subject) if subject == self.policy_subject => Reply::of(&self.learned_policy()),
            Request::Query(subject) => Err(HandleError::Reject { reason: RejectReason::InvalidSubject, message: format!("nothing is answered on {subject}") }),
            Request::Input(other) => Err(HandleError::Reject { reason: RejectReason::Refused, message: format!("not a query: {other:?}") }),
        }
    }
}
