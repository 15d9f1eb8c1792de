//! The optimizer: works each incident as an episode — proposes a remediation when it opens,
//! the next candidate when an action did not cure it or was refused, and a human when the
//! budget is spent or nothing is left — and learns from each action's own outcome which
//! remediation works where, per service and incident context.
//!
//! - [`context`]: the learning context of an incident (kind, env, deploy implicated).
//! - [`prior`]: day-one knowledge.
//! - [`values`]: the hierarchy of learned values (prior → context → service) and confidence.
//! - [`shield`]: only what governance would allow and not refuse for a missing prerequisite;
//!   exploring only where the policy says.
//! - [`decide`]: the choice, with its propensity.
//! - [`episode`]: per-incident memory.
//! - [`core`]: the pure core the shell below stores and publishes.
//! - [`promotion`]: `--mode gated`: a candidate learned in shadow, promoted on evidence.
//! - [`settings`]: `--mode learning|frozen|shadow|gated`, α, ε, `--policy`.
//!
//! Proposals go to `cn.actions.proposed.{env}.{service}` with an `action_proposed` record that
//! carries the explanation (in shadow mode only the record, marked `"shadow": true`); each has
//! an id of its own, so publishing it again under another input is deduplicated. When an
//! outcome changes what a service would try first, a `policy_learned` record says from what
//! to what. `cn.policy.rl-optimizer.{instance}` answers with the learned values (`cnctl policy
//! show`). Values, episodes and deploy facts live in the agent's redb file and are written
//! before anything is published, so a redelivered input republishes the same thing.

pub mod context;
pub mod core;
pub mod decide;
pub mod episode;
pub mod prior;
pub mod promotion;
pub mod settings;
pub mod shield;
pub mod values;

use agent_runtime::store::{Store, Table};
use agent_runtime::{
    AgentSpec, Context, Due, HandleError, Handler, ProofDraft, Reply, RuntimeArgs, RuntimeError,
};
use bus_schema::fleet::{OptimizerInput, OptimizerInputName, OptimizerRequest};
use bus_schema::inputs::Query;
use bus_schema::proof::ProofKind;
use bus_schema::{
    AgentName, InstanceId, LearnedPolicy, PolicyEntry, RejectReason, Timestamp, Uuid, subject,
};
use serde_json::json;

use crate::core::{Core, Effect};
use episode::IncidentMemory;
use settings::Settings;
use shield::ServiceFacts;
use values::{Row, Values};

pub const NAME: AgentName = bus_schema::fleet::RL_OPTIMIZER;

/// Learned values, by `{env}/{service}@{context}`.
const VALUES: Table<Row> = Table::new("values.v2");
/// Counters (`updates`).
const COUNTERS: Table<u64> = Table::new("counters");
/// Per-incident episodes, by incident id.
const INCIDENTS: Table<IncidentMemory> = Table::new("episodes.v2");
/// What deploy events said about each service, by `env/service`.
const FACTS: Table<ServiceFacts> = Table::new("facts");
/// `--mode gated`: the candidate's values, like [`VALUES`].
const SHADOW: Table<Row> = Table::new("shadow.v1");
/// `--mode gated`: the decisions the candidate is evaluated on (one key, `log`).
const DECISIONS: Table<promotion::Log> = Table::new("decisions.v1");
/// Deliveries of an incident that wait for unread deploy events before deciding anyway.
const DEPLOY_WAIT_ATTEMPTS: u32 = 3;
/// A LearnedPolicy reply lists at most this many entries (the contract's limit).
const MAX_ENTRIES: usize = 10_000;

/// Works every incident until the service is well or a human has it, and learns from outcomes.
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
    core: Core,
    /// This instance's `cn.policy.rl-optimizer.{instance}`: the runtime listens on every
    /// instance's subject, and only our own is answered with our values.
    policy_subject: String,
}

impl Optimizer {
    /// Loads values, episodes and deploy facts from the agent's state file.
    pub fn load(
        store: Store,
        settings: Settings,
        instance: &InstanceId,
    ) -> Result<Self, RuntimeError> {
        let updates = store.get(&COUNTERS, "updates")?.unwrap_or(0);
        let values = Values::from_rows(store.scan(&VALUES)?, settings.alpha, updates);
        let mut core = Core::new(settings, values, NAME);
        core.memory = store
            .scan(&INCIDENTS)?
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect();
        core.facts = store.scan(&FACTS)?.into_iter().collect();
        if core.settings.mode == settings::Mode::Gated {
            let rows = store.scan(&SHADOW)?;
            core.shadow = Some(if rows.is_empty() {
                core.values.clone()
            } else {
                Values::from_rows(rows, core.settings.alpha, 0)
            });
            core.log = store.get(&DECISIONS, "log")?.unwrap_or_default();
        }
        let policy_subject = subject::POLICY.subject(&NAME, instance).as_str().to_owned();
        Ok(Self { store, core, policy_subject })
    }

    /// The learned values as the `cn.policy.*` reply: each service's own mean reward per
    /// action and context, and how many outcomes it is based on.
    pub fn learned_policy(&self) -> LearnedPolicy {
        let entries = self
            .core
            .values
            .rows()
            .iter()
            .flat_map(|(key, row)| {
                row.iter().filter_map(|(action, s)| {
                    Some(PolicyEntry {
                        state: key.clone(),
                        action: action.parse().ok()?,
                        value: s.reward,
                        visits: s.n,
                    })
                })
            })
            .take(MAX_ENTRIES)
            .collect();
        let settings = &self.core.settings;
        let candidate = self.core.shadow.as_ref().map(|s| {
            let mut entries = self.core.log.entries(s);
            entries.truncate(MAX_ENTRIES);
            entries
        });
        LearnedPolicy {
            mode: settings.mode.as_str().to_owned(),
            alpha: settings.alpha,
            gamma: 0.0,
            epsilon: settings.epsilon,
            updates: self.core.values.updates,
            entries,
            candidate,
            promotion: self.core.log.last.clone(),
        }
    }

    /// Stores what the core changed, in one transaction.
    fn persist(&mut self) -> Result<(), RuntimeError> {
        let dirty = self.core.take_dirty();
        let core = &self.core;
        self.store.write(|tx| {
            for id in &dirty.incidents {
                if let Some(m) = core.memory.get(id) {
                    tx.put(&INCIDENTS, &id.to_string(), m)?;
                }
            }
            for id in &dirty.forgotten {
                tx.remove(&INCIDENTS, &id.to_string())?;
            }
            for key in &dirty.rows {
                if let Some(row) = core.values.row(key) {
                    tx.put(&VALUES, key, row)?;
                }
            }
            for key in &dirty.facts {
                if let Some(f) = core.facts.get(key) {
                    tx.put(&FACTS, key, f)?;
                }
            }
            if !dirty.rows.is_empty() {
                tx.put(&COUNTERS, "updates", &core.values.updates)?;
            }
            if let Some(shadow) = &core.shadow {
                for key in &dirty.shadow_rows {
                    if let Some(row) = shadow.row(key) {
                        tx.put(&SHADOW, key, row)?;
                    }
                }
            }
            if dirty.log {
                tx.put(&DECISIONS, "log", &core.log)?;
            }
            Ok(())
        })
    }

    /// Stores, then records and publishes what the core decided.
    async fn emit(
        &mut self,
        ctx: &mut Context<'_>,
        effects: Vec<Effect>,
    ) -> Result<(), HandleError> {
        self.persist()?;
        let mut proposed = Vec::new();
        let mut learned = Vec::new();
        for effect in effects {
            match effect {
                Effect::Propose(p) => {
                    let proposal = &p.proposal;
                    proposed.extend(proposal.incident_id.map(|i| (i, proposal.proposal_id)));
                    let key = format!("proposal:{}", proposal.proposal_id);
                    let detail: serde_json::Value =
                        serde_json::from_str(&p.detail).unwrap_or(json!({}));
                    let mut draft = ProofDraft::new(ProofKind::ActionProposed)
                        .scope(&proposal.env, &proposal.service)
                        .action(&proposal.action)
                        .proposal(proposal.proposal_id)
                        .correlation(self.correlation(proposal.incident_id, ctx))
                        .detail(detail);
                    if let Some(id) = proposal.incident_id {
                        draft = draft.incident(id);
                    }
                    ctx.prove_keyed(draft, &key).await?;
                    if p.status != episode::Status::Shadow {
                        let correlation = self.correlation(proposal.incident_id, ctx);
                        ctx.publish_keyed(
                            &subject::PROPOSED.subject(&proposal.env, &proposal.service),
                            proposal,
                            correlation,
                            &key,
                        )
                        .await?;
                    }
                }
                Effect::Promoted(p) => {
                    let changes: Vec<_> = p
                        .changes
                        .iter()
                        .map(|(state, from, to)| json!({"state": state, "from": from, "to": to}))
                        .collect();
                    let estimates = |r: &policy_eval::estimate::Report| json!({"ips": r.ips, "snips": r.snips, "dr": r.dr, "ess": r.ess, "agreed": r.agreed});
                    let draft = ProofDraft::new(ProofKind::PolicyPromoted)
                        .correlation(ctx.meta().correlation_id.clone())
                        .detail(json!({
                            "evidence": p.evidence, "changes": changes,
                            "candidate": estimates(&p.candidate), "running": estimates(&p.running),
                            "rule": format!("the lower of the candidate's SNIPS and DR {:.0} % bounds beats the running policy's SNIPS value by {}", p.evidence.level * 100.0, p.evidence.margin),
                        }));
                    let key = format!("promoted:{}", self.core.log.promotions);
                    ctx.prove_keyed(draft, &key).await?;
                }
                Effect::Learned(l) => {
                    let (o, change) = (&l.outcome, &l.change);
                    learned.extend(o.proposal_id.map(|p| (o.incident_id, p)));
                    let values: Vec<_> = change
                        .values
                        .iter()
                        .map(|(a, v)| json!({"action": a, "value": v}))
                        .collect();
                    let mut draft = ProofDraft::new(ProofKind::PolicyLearned)
                        .scope(&o.env, &o.service)
                        .action(&change.new_best)
                        .incident(o.incident_id)
                        .detail(json!({
                            "state": change.state, "old_best": change.old_best, "new_best": change.new_best, "values": values,
                            "outcome": {"action": o.action, "recovered": o.recovered, "time_to_recover_s": o.time_to_recover_s, "revised": o.revised},
                            "update": l.update,
                        }));
                    if let Some(p) = o.proposal_id {
                        draft = draft.proposal(p);
                    }
                    let key =
                        format!("learned:{}:{}", o.proposal_id.unwrap_or_default(), o.revised);
                    ctx.prove_keyed(draft, &key).await?;
                }
            }
        }
        // Stored, so not to be sent again (`Core::unpublished`, `Proposed::unrecorded`).
        if !proposed.is_empty() || !learned.is_empty() {
            ctx.confirm().await?;
            for (incident, proposal) in proposed {
                self.core.published(incident, proposal);
            }
            for (incident, proposal) in learned {
                self.core.recorded(incident, proposal);
            }
            self.persist()?;
        }
        Ok(())
    }

    /// The chain an incident's proposals continue.
    fn correlation(&self, incident: Option<Uuid>, ctx: &Context<'_>) -> String {
        incident
            .and_then(|id| self.core.memory.get(&id))
            .map_or_else(|| ctx.meta().correlation_id.clone(), |m| m.correlation_id.clone())
    }
}

/// The optimizer's due work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// An incident whose wait for another verdict ran out, and the trigger it goes on from.
    Due { incident: Uuid, trigger: String },
    /// A proposal not known to be stored, to send again under the same ids.
    Resend { incident: Uuid, proposal: Uuid },
}

impl std::fmt::Display for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wake::Due { incident, trigger } => write!(f, "{incident}/{trigger}"),
            Wake::Resend { incident, proposal } => write!(f, "{incident}/resend:{proposal}"),
        }
    }
}

impl Handler for Optimizer {
    type Input = OptimizerInput;
    type Request = OptimizerRequest;
    type Work = Wake;

    async fn handle(
        &mut self,
        ctx: &mut Context<'_>,
        input: OptimizerInput,
    ) -> Result<(), HandleError> {
        let now = Timestamp::now();
        let effects = match input {
            OptimizerInput::Incident(incident) => {
                // Deploy events come on another consumer: what they say (is the service known,
                // is there a version to roll back to) is read first, for a few attempts.
                // Only before a decision: an update or a resolution of a known incident decides
                // nothing.
                let decides = incident.status == bus_schema::IncidentStatus::Opened
                    || !self.core.memory.contains_key(&incident.incident_id);
                if decides
                    && incident.status != bus_schema::IncidentStatus::Resolved
                    && ctx.meta().delivered < DEPLOY_WAIT_ATTEMPTS
                {
                    // Where the deploy history decides what is offered — a service with no
                    // deploy read yet (is it known at all?), an incident that implicates a
                    // deploy (is there a version to roll back to?) — ask the server, exactly:
                    // the runtime's own count misses a deploy the server has sent and the agent
                    // not read, and a missed failed deploy leaves nothing to roll back to.
                    // Otherwise that count is enough and costs no round trip on the way.
                    use bus_schema::IncidentKind as K;
                    let exact = !self.core.knows_service(&incident.env, &incident.service)
                        || incident.suspect_version.is_some()
                        || matches!(incident.kind, K::DeployFailed | K::DeployRegression);
                    let behind = if exact {
                        ctx.backlog_on_server(OptimizerInputName::Deploy).await?
                    } else {
                        ctx.backlog(OptimizerInputName::Deploy).await?
                    };
                    if behind > 0 {
                        return Err(HandleError::Retry(format!(
                            "{behind} deploy events not read yet; deciding after them"
                        )));
                    }
                }
                let correlation = ctx.meta().correlation_id.clone();
                self.core.on_incident(&incident, &correlation, now)
            }
            OptimizerInput::Outcome(outcome) => self.core.on_outcome(&outcome, now),
            OptimizerInput::Refused(refusal) => self.core.on_refusal(&refusal, now),
            OptimizerInput::Deploy(deploy) => {
                self.core.on_deploy(&deploy);
                Vec::new()
            }
        };
        self.emit(ctx, effects).await
    }

    /// Proposals whose publish is not known to be stored (first: the resend is what an
    /// episode waits for), then incidents whose wait ran out.
    fn due(&mut self, now: Timestamp) -> Vec<Due<Wake>> {
        let resends = self
            .core
            .unpublished()
            .into_iter()
            .map(|(incident, proposal)| (incident, Wake::Resend { incident, proposal }));
        let waits = self
            .core
            .due(now)
            .into_iter()
            .map(|(incident, trigger)| (incident, Wake::Due { incident, trigger }));
        resends
            .chain(waits)
            .map(|(id, key)| {
                let correlation_id =
                    self.core.memory.get(&id).map(|m| m.correlation_id.clone()).unwrap_or_default();
                Due { key, correlation_id }
            })
            .collect()
    }

    /// A wait for another action's verdict ran out: the incident goes on. Or a proposal is
    /// sent again.
    async fn handle_due(
        &mut self,
        ctx: &mut Context<'_>,
        due: Due<Wake>,
    ) -> Result<(), HandleError> {
        let effects = match due.key {
            Wake::Due { incident, trigger } => self.core.wake(incident, &trigger, Timestamp::now()),
            Wake::Resend { incident, proposal } => self.core.resend(incident, proposal),
        };
        self.emit(ctx, effects).await
    }

    async fn respond(
        &mut self,
        _ctx: &mut Context<'_>,
        request: OptimizerRequest,
    ) -> Result<Reply, HandleError> {
        match request {
            OptimizerRequest::Policy(Query { subject }) if subject == self.policy_subject => {
                Reply::of(&self.learned_policy())
            }
            // Another instance's (the queue group spans the agent's instances).
            OptimizerRequest::Policy(Query { subject }) => Err(HandleError::Reject {
                reason: RejectReason::InvalidSubject,
                message: format!("nothing is answered on {subject}"),
            }),
        }
    }
}
