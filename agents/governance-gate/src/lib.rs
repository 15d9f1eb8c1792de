//! The governance gate: nothing acts unless it says yes.
//!
//! Every proposal passes the gates in [`gates`] against the [`policy`](::policy) and what governance
//! remembers ([`ledger`]: deploys, approvals, outcome back-offs, error budgets, incidents). The
//! verdict is published — a signed approval on `cn.actions.approved.*` (only governance may
//! publish there), a refusal with its reason code, or a pending approval for a human — and
//! recorded on the proof log first. Each decision is stored by proposal id, so a redelivered
//! proposal gets the same answer instead of being decided again.
//!
//! Human decisions arrive on `cn.approvals.*` (only the `operator` and `console` NATS users may publish
//! there). An approval runs the gates again (a human overrides the human gate, not the
//! others); a denial or an expired request is refused with `approval_denied` or
//! `approval_expired`, and every decision records who and why. A request nobody answers is
//! refused as `approval_expired` when it expires, by the runtime's clock.

pub mod gates;
pub mod keys;
pub mod ledger;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use agent_runtime::config::parse_duration;
use agent_runtime::store::{Store, Table};
use agent_runtime::{
    AgentSpec, Context, Due, HandleError, Handler, NoRequests, ProofDraft, RuntimeArgs,
    RuntimeError,
};
use bus_schema::approval::{ApprovalSigner, proposal_hash};
use bus_schema::fleet::{GovernanceInput, GovernanceInputName};
use bus_schema::inputs::InputName;
use bus_schema::proof::ProofKind;
use bus_schema::{
    ActionProposal, AgentName, ApprovalClaims, Decision, HumanDecision, PendingApproval,
    ReasonCode, Refusal, RejectReason, SignedApproval, Timestamp, Uuid, derive_id, subject,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use gates::{Mode, Verdict, View};
use ledger::{IncidentLedger, ServiceLedger, service_key};
use policy::{Policy, PolicyError};

pub const NAME: AgentName = bus_schema::fleet::GOVERNANCE_GATE;

/// Approves, refuses or asks a human about every proposed action; signs what it approves.
#[derive(Debug, clap::Parser)]
#[command(name = "governance-gate", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// File with governance's Ed25519 signing key (create one with `cnctl keygen`).
    #[arg(long, env = "CN_SIGNING_KEY_FILE")]
    pub signing_key: PathBuf,
    /// Policy file (TOML); without one the built-in defaults apply (deploy/policy.toml). Check it first with
    /// `cnctl policy check FILE`; deploy/policy.toml documents every key.
    #[arg(long, env = "CN_POLICY_FILE", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// How long a signed approval stays valid for the executor.
    #[arg(long, env = "CN_APPROVAL_TTL", default_value = "5m", value_parser = parse_duration)]
    pub approval_ttl: Duration,
    /// How long a pending approval waits for a human before it is refused as approval_expired.
    #[arg(long, env = "CN_HUMAN_APPROVAL_TTL", default_value = "15m", value_parser = parse_duration)]
    pub human_approval_ttl: Duration,
}

impl Cli {
    /// Reads the signing key; a missing or malformed key is a configuration error.
    pub fn signer(&self) -> Result<ApprovalSigner, keys::SigningKeyError> {
        keys::read_signer(&self.signing_key)
    }

    /// The policy file's policy, or the defaults.
    pub fn policy(&self) -> Result<Policy, PolicyError> {
        match &self.policy {
            Some(path) => Policy::from_file(path),
            None => Ok(Policy::default()),
        }
    }
}

pub fn spec() -> AgentSpec {
    AgentSpec::new(bus_schema::fleet::governance_gate(), env!("CARGO_PKG_VERSION"))
}

/// A decision as published.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Decided {
    Approved(SignedApproval),
    Refused(Refusal),
    Pending(PendingApproval),
}

/// A decision, what it is about, the input that made it (a redelivery of that input
/// republishes it) and its chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The proposal as decided (a rollback carries the version governance rolls back to).
    proposal: ActionProposal,
    /// The hash of the proposal as received: the same id with other content is refused.
    received_hash: String,
    decided: Decided,
    input_id: String,
    correlation_id: String,
}

const SERVICES: Table<ServiceLedger> = Table::new("ledger.services");
const INCIDENTS: Table<IncidentLedger> = Table::new("ledger.incidents");
const DECISIONS: Table<Record> = Table::new("decisions.v2");
/// Expiry refusals stored but not yet published, by proposal: their chain.
const UNPUBLISHED: Table<String> = Table::new("expiries.unpublished");

/// Deliveries of a proposal that wait for its incident or deploy events to be read first
/// (with the runtime's back-off, about 7 s); after that an unknown incident is refused as a
/// missing prerequisite — the safe side.
const INCIDENT_WAIT_ATTEMPTS: u32 = 4;

/// Incidents remembered for their conflict flag and action budget.
const MAX_INCIDENTS: usize = 50_000;

/// Governance's bus shell.
#[derive(Debug)]
pub struct Governance {
    store: Store,
    policy: Policy,
    services: HashMap<String, ServiceLedger>,
    incidents: HashMap<Uuid, IncidentLedger>,
    /// Requests waiting for a human: expiry and chain.
    pending: BTreeMap<Uuid, (Timestamp, String)>,
    /// Expiries stored but not yet published (the publish failed, or the agent stopped before
    /// its ack): chain. Kept in the state file too, so a restart publishes them.
    unpublished: BTreeMap<Uuid, String>,
    signer: ApprovalSigner,
    approval_ttl: Duration,
    human_ttl: Duration,
}

impl Governance {
    pub fn load(
        store: Store,
        policy: Policy,
        signer: ApprovalSigner,
        approval_ttl: Duration,
        human_ttl: Duration,
    ) -> Result<Self, RuntimeError> {
        let services = store.scan(&SERVICES)?.into_iter().collect();
        let incidents = store
            .scan(&INCIDENTS)?
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect();
        let pending = store
            .scan(&DECISIONS)?
            .into_iter()
            .filter_map(|(_, r)| match r.decided {
                Decided::Pending(pa) => {
                    Some((pa.proposal.proposal_id, (pa.expires_at, r.correlation_id)))
                }
                _ => None,
            })
            .collect();
        let unpublished = store
            .scan(&UNPUBLISHED)?
            .into_iter()
            .filter_map(|(k, chain)| Some((k.parse().ok()?, chain)))
            .collect();
        Ok(Self {
            store,
            policy,
            services,
            incidents,
            pending,
            unpublished,
            signer,
            approval_ttl,
            human_ttl,
        })
    }

    fn view(&self, p: &ActionProposal) -> View<'_> {
        View {
            service: self.services.get(&service_key(p.env.as_str(), p.service.as_str())),
            incident: p.incident_id.and_then(|id| self.incidents.get(&id)),
        }
    }

    fn sign(&self, p: &ActionProposal, approved_by: &str, now: Timestamp) -> SignedApproval {
        self.signer.sign(ApprovalClaims {
            approval_id: derive_id(&["approval", &p.proposal_id.to_string()]),
            proposal_id: p.proposal_id,
            proposal_hash: proposal_hash(p),
            incident_id: p.incident_id,
            env: p.env.clone(),
            service: p.service.clone(),
            action: p.action.clone(),
            params: p.params.clone(),
            approved_by: approved_by.to_owned(),
            issued_at: now,
            expires_at: now.plus(self.approval_ttl),
        })
    }

    fn refusal(p: &ActionProposal, reason: ReasonCode, detail: &Value, now: Timestamp) -> Refusal {
        Refusal::of(p, reason, detail.to_string(), now)
    }

    fn decide(&self, p: &ActionProposal, now: Timestamp) -> Decided {
        match gates::decide(&self.policy, self.view(p), p, now, Mode::Proposal) {
            Verdict::Approve => Decided::Approved(self.sign(p, "policy", now)),
            Verdict::Refuse { reason, detail } => {
                Decided::Refused(Self::refusal(p, reason, &detail, now))
            }
            Verdict::NeedsHuman { why } => Decided::Pending(PendingApproval {
                proposal: p.clone(),
                reason: why,
                requested_at: now,
                expires_at: now.plus(self.human_ttl),
            }),
        }
    }

    /// Records and publishes a decision about `p`.
    async fn publish(
        ctx: &mut Context<'_>,
        p: &ActionProposal,
        decided: &Decided,
    ) -> Result<(), HandleError> {
        let record = |kind: ProofKind| {
            let draft = ProofDraft::new(kind)
                .scope(&p.env, &p.service)
                .action(&p.action)
                .proposal(p.proposal_id);
            match p.incident_id {
                Some(id) => draft.incident(id),
                None => draft,
            }
        };
        // Each record goes first, so the proof log reads in causal order.
        match decided {
            Decided::Approved(a) => {
                ctx.prove(record(ProofKind::ActionApproved).detail(json!({
                    "approval_id": a.claims.approval_id, "expires_at": a.claims.expires_at,
                    "key_id": a.key_id, "approved_by": a.claims.approved_by, "confidence": p.confidence,
                })))
                .await?;
                ctx.publish(&subject::APPROVED.subject(&p.env, &p.service), a).await?;
            }
            Decided::Refused(r) => {
                let detail: Value = serde_json::from_str(&r.detail).unwrap_or(json!(r.detail));
                ctx.prove(
                    record(ProofKind::ActionRefused).reason(r.reason.as_str()).detail(detail),
                )
                .await?;
                ctx.publish(&subject::REFUSED.subject(&p.env, &p.service), r).await?;
            }
            Decided::Pending(pa) => {
                // `escalation`: the proposer itself asked for a human (notifications say so).
                let detail = json!({"why": pa.reason, "expires_at": pa.expires_at, "confidence": p.confidence, "escalation": p.require_human});
                ctx.prove(
                    record(ProofKind::ActionPendingApproval)
                        .reason(ReasonCode::ApprovalRequired.as_str())
                        .detail(detail),
                )
                .await?;
                ctx.publish(&subject::PENDING.subject(&p.env, &p.service), pa).await?;
            }
        }
        Ok(())
    }

    /// Stores a decision; an approval also goes into the ledgers.
    fn keep(&mut self, record: Record) -> Result<(), RuntimeError> {
        let p = &record.proposal;
        let key = service_key(p.env.as_str(), p.service.as_str());
        let mut service = self.services.get(&key).cloned().unwrap_or_default();
        let mut incident =
            p.incident_id.map(|id| self.incidents.get(&id).cloned().unwrap_or_default());
        // Observing changes nothing: it uses up no cooldown, repetition or incident budget.
        let approved =
            matches!(record.decided, Decided::Approved(_)) && !gates::changes_nothing(&p.action);
        if let (Decided::Approved(a), true) = (&record.decided, approved) {
            service.on_approved(p, a.claims.issued_at, &self.policy);
            if let Some(i) = incident.as_mut() {
                i.approved_actions += 1;
            }
        }
        self.store.write(|tx| {
            tx.put(&DECISIONS, &p.proposal_id.to_string(), &record)?;
            if approved {
                tx.put(&SERVICES, &key, &service)?;
                if let (Some(id), Some(i)) = (p.incident_id, &incident) {
                    tx.put(&INCIDENTS, &id.to_string(), i)?;
                }
            }
            Ok(())
        })?;
        if approved {
            self.services.insert(key, service);
            if let (Some(id), Some(i)) = (p.incident_id, incident) {
                self.incidents.insert(id, i);
            }
        }
        match &record.decided {
            Decided::Pending(pa) => {
                self.pending.insert(p.proposal_id, (pa.expires_at, record.correlation_id.clone()))
            }
            _ => self.pending.remove(&p.proposal_id),
        };
        Ok(())
    }

    async fn on_proposal(
        &mut self,
        ctx: &mut Context<'_>,
        p: ActionProposal,
    ) -> Result<(), HandleError> {
        if let Some(known) = self.store.get(&DECISIONS, &p.proposal_id.to_string())? {
            if known.received_hash != proposal_hash(&p) {
                return Err(HandleError::Reject {
                    reason: RejectReason::Refused,
                    message: format!(
                        "proposal id {} was already decided for different content; a new proposal needs a new id",
                        p.proposal_id
                    ),
                });
            }
            // Decided before (a redelivery, or the same proposal published twice): same answer.
            return Self::publish(ctx, &known.proposal, &known.decided).await;
        }
        // Incidents and proposals come from different consumers, in no guaranteed order: the
        // incident a proposal is about (its conflict flag, its budget) is asked of the stream
        // (the service's last incident message), else read first from the incidents consumer
        // for a few attempts; after that an unknown incident is a missing prerequisite.
        if let Some(id) = p.incident_id.filter(|id| !self.incidents.contains_key(id)) {
            match ctx.last_stored(&subject::INCIDENTS.subject(&p.env, &p.service)).await {
                Ok(Some(incident)) if incident.incident_id == id => self.on_incident(&incident)?,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "waiting for the incidents consumer instead"),
            }
        }
        if p.incident_id.is_some_and(|id| !self.incidents.contains_key(&id))
            && ctx.meta().delivered < INCIDENT_WAIT_ATTEMPTS
        {
            let behind = ctx.backlog_on_server(GovernanceInputName::Incident).await?;
            if behind > 0 {
                return Err(HandleError::Retry(format!(
                    "{behind} incidents not read yet; deciding after them"
                )));
            }
        }
        let received_hash = proposal_hash(&p);
        let p = self.with_rollback_target(p);
        let decided = self.decide(&p, Timestamp::now());
        // Likewise a prerequisite that looks missing may be in a deploy event not read yet, and
        // the verdict a service waits for may be in an outcome not read yet (the proposer
        // often reacts to that very outcome).
        if let Decided::Refused(r) = &decided {
            let unread = match r.reason {
                ReasonCode::MissingPrerequisite => Some(GovernanceInputName::Deploy),
                ReasonCode::VerificationPending => Some(GovernanceInputName::Outcome),
                _ => None,
            };
            if let Some(input) = unread.filter(|_| ctx.meta().delivered < INCIDENT_WAIT_ATTEMPTS) {
                let behind = ctx.backlog_on_server(input).await?;
                if behind > 0 {
                    return Err(HandleError::Retry(format!(
                        "{behind} {} not read yet; deciding after them",
                        input.as_str()
                    )));
                }
            }
        }
        // Stored before it is published: a crash in between republishes this same decision.
        let record = Record {
            proposal: p,
            received_hash,
            decided,
            input_id: ctx.meta().input_id.clone(),
            correlation_id: ctx.meta().correlation_id.clone(),
        };
        self.keep(record.clone())?;
        Self::publish(ctx, &record.proposal, &record.decided).await
    }

    /// A rollback names the version it goes back to, as governance knows it now; a human who
    /// approves it later approves that version, and the gates refuse it if it changed.
    fn with_rollback_target(&self, mut p: ActionProposal) -> ActionProposal {
        if p.action == bus_schema::Action::Rollback && p.params.target_version.is_none() {
            let target = self
                .services
                .get(&service_key(p.env.as_str(), p.service.as_str()))
                .and_then(|s| s.deploys.rollback_target());
            p.params.target_version = target.map(str::to_owned);
        }
        p
    }

    async fn on_human(
        &mut self,
        ctx: &mut Context<'_>,
        h: HumanDecision,
    ) -> Result<(), HandleError> {
        let refuse =
            |message: String| HandleError::Reject { reason: RejectReason::Refused, message };
        let Some(record) = self.store.get(&DECISIONS, &h.proposal_id.to_string())? else {
            return Err(refuse(format!("no approval is waiting for proposal {}", h.proposal_id)));
        };
        let input_id = ctx.meta().input_id.clone();
        let pa = match record.decided {
            Decided::Pending(pa) => pa,
            // This decision again (redelivered, perhaps after a crash before it went out): the
            // same records and answer, which the proof writer and JetStream de-duplicate.
            decided if record.input_id == input_id => {
                let p = &record.proposal;
                let mut draft = ProofDraft::new(ProofKind::HumanDecision)
                    .scope(&p.env, &p.service)
                    .action(&p.action)
                    .proposal(p.proposal_id)
                    .correlation(record.correlation_id.clone())
                    .detail(
                        json!({"decision": h.decision, "operator": h.operator, "reason": h.reason}),
                    );
                if let Some(id) = p.incident_id {
                    draft = draft.incident(id);
                }
                ctx.prove(draft).await?;
                return Self::publish(ctx, p, &decided).await;
            }
            Decided::Approved(a) => {
                return Err(refuse(format!(
                    "proposal {} was already approved by {}",
                    h.proposal_id, a.claims.approved_by
                )));
            }
            Decided::Refused(r) => {
                return Err(refuse(format!(
                    "proposal {} was already refused: {}",
                    h.proposal_id, r.reason
                )));
            }
        };
        let p = pa.proposal.clone();
        let expected = subject::HUMAN_DECISIONS.subject(&p.env, &p.service);
        if ctx.meta().subject != expected.as_str() {
            return Err(refuse(format!(
                "a decision about {}/{} must be published on {expected}, not {}",
                p.env,
                p.service,
                ctx.meta().subject
            )));
        }
        let now = Timestamp::now();
        let who = json!({"operator": h.operator, "reason": h.reason});
        let decided = if now >= pa.expires_at {
            Decided::Refused(Self::refusal(
                &p,
                ReasonCode::ApprovalExpired,
                &json!({"expired_at": pa.expires_at, "late_decision": who}),
                now,
            ))
        } else if h.decision == Decision::Deny {
            Decided::Refused(Self::refusal(&p, ReasonCode::ApprovalDenied, &who, now))
        } else {
            match gates::decide(&self.policy, self.view(&p), &p, now, Mode::HumanApproved) {
                Verdict::Approve | Verdict::NeedsHuman { .. } => {
                    Decided::Approved(self.sign(&p, &h.operator, now))
                }
                Verdict::Refuse { reason, detail } => Decided::Refused(Self::refusal(
                    &p,
                    reason,
                    &json!({"gate": detail, "approved_by": who}),
                    now,
                )),
            }
        };
        let mut draft = ProofDraft::new(ProofKind::HumanDecision)
            .scope(&p.env, &p.service)
            .action(&p.action)
            .proposal(p.proposal_id)
            .correlation(record.correlation_id.clone())
            .detail(json!({"decision": h.decision, "operator": h.operator, "reason": h.reason, "requested_at": pa.requested_at, "expires_at": pa.expires_at}));
        if let Some(id) = p.incident_id {
            draft = draft.incident(id);
        }
        let record = Record {
            proposal: p,
            received_hash: record.received_hash,
            decided,
            input_id,
            correlation_id: record.correlation_id,
        };
        self.keep(record.clone())?;
        ctx.prove(draft).await?;
        Self::publish(ctx, &record.proposal, &record.decided).await
    }

    /// Forgets that an expiry refusal waits to be published.
    fn published(&mut self, id: Uuid) -> Result<(), RuntimeError> {
        if self.unpublished.remove(&id).is_some() {
            self.store.remove(&UNPUBLISHED, &id.to_string())?;
        }
        Ok(())
    }

    fn on_incident(&mut self, i: &bus_schema::Incident) -> Result<(), RuntimeError> {
        let mut ledger = self.incidents.get(&i.incident_id).cloned().unwrap_or_default();
        ledger.on_incident(i);
        self.store.put(&INCIDENTS, &i.incident_id.to_string(), &ledger)?;
        self.incidents.insert(i.incident_id, ledger);
        self.forget_old_incidents()
    }

    /// Keeps the incident ledger bounded: beyond [`MAX_INCIDENTS`], the least recently seen
    /// tenth is forgotten (an incident that old has long been resolved).
    fn forget_old_incidents(&mut self) -> Result<(), RuntimeError> {
        if self.incidents.len() <= MAX_INCIDENTS {
            return Ok(());
        }
        let mut by_age: Vec<(Option<Timestamp>, Uuid)> =
            self.incidents.iter().map(|(id, l)| (l.last_seen, *id)).collect();
        by_age.sort();
        let old: Vec<Uuid> =
            by_age.into_iter().take(MAX_INCIDENTS / 10).map(|(_, id)| id).collect();
        self.store
            .write(|tx| old.iter().try_for_each(|id| tx.remove(&INCIDENTS, &id.to_string())))?;
        for id in old {
            self.incidents.remove(&id);
        }
        Ok(())
    }

    fn update_service(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut ServiceLedger, &Policy),
    ) -> Result<(), RuntimeError> {
        let mut ledger = self.services.get(key).cloned().unwrap_or_default();
        f(&mut ledger, &self.policy);
        self.store.put(&SERVICES, key, &ledger)?;
        self.services.insert(key.to_owned(), ledger);
        Ok(())
    }
}

/// A pending approval to expire (or whose expiry is stored but not yet published).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry(Uuid);

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "expire:{}", self.0)
    }
}

impl Handler for Governance {
    type Input = GovernanceInput;
    type Request = NoRequests;
    type Work = Expiry;

    async fn handle(
        &mut self,
        ctx: &mut Context<'_>,
        input: GovernanceInput,
    ) -> Result<(), HandleError> {
        use GovernanceInput as I;
        match input {
            I::Proposal(p) => self.on_proposal(ctx, p).await,
            I::Decision(h) => self.on_human(ctx, h).await,
            // Facts the gates weigh.
            I::Deploy(d) => Ok(self
                .update_service(&service_key(d.env.as_str(), d.service.as_str()), |s, _| {
                    s.on_deploy(&d)
                })?),
            I::Slo(s) => Ok(self
                .update_service(&service_key(s.env.as_str(), s.service.as_str()), |l, _| {
                    l.on_slo(&s)
                })?),
            I::Outcome(o) => Ok(self.update_service(
                &service_key(o.env.as_str(), o.service.as_str()),
                |l, policy| l.on_outcome(&o, policy),
            )?),
            I::Incident(i) => Ok(self.on_incident(&i)?),
        }
    }

    fn due(&mut self, now: Timestamp) -> Vec<Due<Expiry>> {
        let expired = self
            .pending
            .iter()
            .filter(|(_, (expires, _))| *expires <= now)
            .map(|(id, (_, correlation))| (*id, correlation.clone()));
        expired
            .chain(self.unpublished.iter().map(|(id, c)| (*id, c.clone())))
            .map(|(id, correlation_id)| Due { key: Expiry(id), correlation_id })
            .collect()
    }

    /// A request nobody answered in time is refused as `approval_expired`: stored, then
    /// published; a publish that fails is tried again on the next tick.
    async fn handle_due(
        &mut self,
        ctx: &mut Context<'_>,
        due: Due<Expiry>,
    ) -> Result<(), HandleError> {
        let Expiry(id) = due.key;
        let Some(record) = self.store.get(&DECISIONS, &id.to_string())? else { return Ok(()) };
        let record = match record.decided {
            Decided::Pending(pa) => {
                let now = Timestamp::now();
                let p = pa.proposal.clone();
                let waited = now.since(pa.requested_at).as_secs();
                let detail = json!({"expired_at": pa.expires_at, "waited_s": waited, "hint": "nobody approved or denied it in time"});
                let decided =
                    Decided::Refused(Self::refusal(&p, ReasonCode::ApprovalExpired, &detail, now));
                let record = Record {
                    proposal: p,
                    received_hash: record.received_hash,
                    decided,
                    input_id: ctx.meta().input_id.clone(),
                    correlation_id: record.correlation_id,
                };
                self.keep(record.clone())?;
                self.store.put(&UNPUBLISHED, &id.to_string(), &record.correlation_id)?;
                self.unpublished.insert(id, record.correlation_id.clone());
                record
            }
            // Stored by an earlier tick whose publish failed: publish it now.
            _ if record.input_id == ctx.meta().input_id => record,
            _ => {
                self.pending.remove(&id);
                self.published(id)?;
                return Ok(());
            }
        };
        Self::publish(ctx, &record.proposal, &record.decided).await?;
        ctx.confirm().await?;
        Ok(self.published(id)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An expiry refusal stored but not published when the agent stopped is published after a
    /// restart: the state file remembers it, and it is due at once.
    #[test]
    fn an_expiry_left_unpublished_is_due_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("governance.redb");
        let id = Uuid::new_v4();
        {
            let store = Store::open(&path).unwrap();
            store
                .write_durably(|tx| tx.put(&UNPUBLISHED, &id.to_string(), &"chain-1".to_owned()))
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let signer = ApprovalSigner::generate().unwrap();
        let ttl = Duration::from_secs(60);
        let mut gov = Governance::load(store, Policy::default(), signer, ttl, ttl).unwrap();
        let due = gov.due(Timestamp::now());
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].key.0, due[0].correlation_id.as_str()), (id, "chain-1"));

        gov.published(id).unwrap();
        assert!(gov.due(Timestamp::now()).is_empty());
        assert!(gov.store.scan(&UNPUBLISHED).unwrap().is_empty(), "forgotten in the state file");
    }
}
