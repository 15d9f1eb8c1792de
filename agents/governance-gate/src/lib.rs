//! The governance gate: nothing acts unless it says yes.
//!
//! Every proposal passes the gates in [`gates`] against the [`policy`] and what governance
//! knows ([`facts`], from deploy events, and the cooldown ledger). The verdict is published —
//! a signed approval on `cn.actions.approved.*` (only governance may publish there), a refusal
//! with its reason code, or a pending approval for a human — and recorded on the proof log.
//! Each decision is stored by proposal id, so a redelivered proposal gets the same answer
//! instead of being decided again (which would, for one, run into its own cooldown).

pub mod gates;
pub mod policy;

use std::path::PathBuf;
use std::time::Duration;

use agent_runtime::config::parse_duration;
use agent_runtime::store::{Store, Table};
use agent_runtime::{AgentSpec, Context, HandleError, Handler, ProofDraft, RuntimeArgs, RuntimeError};
use bus_schema::approval::{ApprovalSigner, proposal_hash};
use bus_schema::proof::ProofKind;
use bus_schema::{
    ActionProposal, AgentName, ApprovalClaims, DeployHistory, Inbound, PendingApproval, ReasonCode, Refusal, SignedApproval, Timestamp, derive_id, subject,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use gates::{Facts, Verdict, cooldown_key, service_key};
use policy::Policy;

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
    /// How long a signed approval stays valid for the executor.
    #[arg(long, env = "CN_APPROVAL_TTL", default_value = "5m", value_parser = parse_duration)]
    pub approval_ttl: Duration,
    /// How long a pending approval waits for a human.
    #[arg(long, env = "CN_HUMAN_APPROVAL_TTL", default_value = "15m", value_parser = parse_duration)]
    pub human_approval_ttl: Duration,
}

impl Cli {
    /// Reads the signing key; a missing or malformed key is a configuration error.
    pub fn signer(&self) -> Result<ApprovalSigner, String> {
        let text = std::fs::read_to_string(&self.signing_key)
            .map_err(|e| format!("cannot read --signing-key {}: {e} (create one with `cnctl keygen`)", self.signing_key.display()))?;
        ApprovalSigner::from_hex(&text).map_err(|e| format!("--signing-key {}: {e}", self.signing_key.display()))
    }
}

pub fn spec() -> AgentSpec {
    AgentSpec::new(bus_schema::fleet::governance_gate(), env!("CARGO_PKG_VERSION"))
}

/// A decision as published, kept to answer a redelivered proposal the same way.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Decided {
    Approved(SignedApproval),
    Refused(Refusal),
    Pending(PendingApproval),
}

const SERVICES: Table<DeployHistory> = Table::new("services");
const LAST_APPROVED: Table<Timestamp> = Table::new("cooldowns.last_approved");
const DECISIONS: Table<Decided> = Table::new("decisions");

/// Governance's bus shell.
#[derive(Debug)]
pub struct Governance {
    store: Store,
    policy: Policy,
    facts: Facts,
    signer: ApprovalSigner,
    approval_ttl: Duration,
    human_ttl: Duration,
}

impl Governance {
    pub fn load(store: Store, policy: Policy, signer: ApprovalSigner, approval_ttl: Duration, human_ttl: Duration) -> Result<Self, RuntimeError> {
        let facts = Facts {
            services: store.scan(&SERVICES)?.into_iter().collect(),
            last_approved: store.scan(&LAST_APPROVED)?.into_iter().collect(),
        };
        Ok(Self { store, policy, facts, signer, approval_ttl, human_ttl })
    }

    fn decide(&self, p: &ActionProposal, now: Timestamp) -> Decided {
        match gates::decide(&self.policy, &self.facts, p, now) {
            Verdict::Approve => Decided::Approved(self.signer.sign(ApprovalClaims {
                approval_id: derive_id(&["approval", &p.proposal_id.to_string()]),
                proposal_id: p.proposal_id,
                proposal_hash: proposal_hash(p),
                incident_id: p.incident_id,
                env: p.env.clone(),
                service: p.service.clone(),
                action: p.action.clone(),
                params: p.params.clone(),
                approved_by: "policy".to_owned(),
                issued_at: now,
                expires_at: now.plus(self.approval_ttl),
            })),
            Verdict::Refuse { reason, detail } => Decided::Refused(Refusal {
                proposal_id: p.proposal_id,
                incident_id: p.incident_id,
                env: p.env.clone(),
                service: p.service.clone(),
                action: p.action.clone(),
                reason,
                detail: detail.to_string(),
                refused_at: now,
            }),
            Verdict::NeedsHuman { why } => {
                Decided::Pending(PendingApproval { proposal: p.clone(), reason: why, requested_at: now, expires_at: now.plus(self.human_ttl) })
            }
        }
    }

    async fn on_proposal(&mut self, ctx: &mut Context<'_>, p: ActionProposal) -> Result<(), HandleError> {
        let key = p.proposal_id.to_string();
        let (decided, fresh) = match self.store.get(&DECISIONS, &key)? {
            Some(d) => (d, false),
            None => (self.decide(&p, Timestamp::now()), true),
        };
        // Deploy events and proposals come from different streams, in no guaranteed order. A
        // prerequisite that looks missing may be in a deploy event not read yet: decide after it.
        if let Decided::Refused(r) = &decided {
            if fresh && r.reason == ReasonCode::MissingPrerequisite {
                let behind = ctx.backlog("deploys").await?;
                if behind > 0 {
                    return Err(HandleError::Retry(format!("{behind} deploy events not read yet; deciding after them")));
                }
            }
        }
        let record = |kind: ProofKind| {
            let draft = ProofDraft::new(kind).scope(&p.env, &p.service).action(&p.action).proposal(p.proposal_id);
            match p.incident_id {
                Some(id) => draft.incident(id),
                None => draft,
            }
        };
        match &decided {
            // Each record goes first, so the proof log reads in causal order.
            Decided::Approved(a) => {
                ctx.prove(record(ProofKind::ActionApproved).detail(json!({
                    "approval_id": a.claims.approval_id, "expires_at": a.claims.expires_at,
                    "key_id": a.key_id, "approved_by": a.claims.approved_by, "confidence": p.confidence,
                })))
                .await?;
                ctx.publish(&subject::APPROVED.subject(&p.env, &p.service), a).await?;
            }
            Decided::Refused(r) => {
                let detail: serde_json::Value = serde_json::from_str(&r.detail).unwrap_or(json!(r.detail));
                ctx.prove(record(ProofKind::ActionRefused).reason(r.reason.as_str()).detail(detail)).await?;
                ctx.publish(&subject::REFUSED.subject(&p.env, &p.service), r).await?;
            }
            Decided::Pending(pa) => {
                let detail = json!({"why": pa.reason, "expires_at": pa.expires_at});
                ctx.prove(record(ProofKind::ActionPendingApproval).reason(ReasonCode::ApprovalRequired.as_str()).detail(detail)).await?;
                ctx.publish(&subject::PENDING.subject(&p.env, &p.service), pa).await?;
            }
        }
        if fresh {
            let ck = cooldown_key(&p);
            let approved_at = match &decided {
                Decided::Approved(a) => Some(a.claims.issued_at),
                _ => None,
            };
            self.store.write(|tx| {
                tx.put(&DECISIONS, &key, &decided)?;
                if let Some(at) = approved_at {
                    tx.put(&LAST_APPROVED, &ck, &at)?;
                }
                Ok(())
            })?;
            if let Some(at) = approved_at {
                self.facts.last_approved.insert(ck, at);
            }
        }
        Ok(())
    }
}

impl Handler for Governance {
    async fn handle(&mut self, ctx: &mut Context<'_>, input: Inbound) -> Result<(), HandleError> {
        match input {
            Inbound::Deploy(d) => {
                let key = service_key(d.env.as_str(), d.service.as_str());
                let mut facts = self.facts.services.get(&key).cloned().unwrap_or_default();
                facts.apply(&d);
                self.store.put(&SERVICES, &key, &facts)?;
                self.facts.services.insert(key, facts);
                Ok(())
            }
            Inbound::Proposed(p) => self.on_proposal(ctx, p).await,
            _ => Ok(()),
        }
    }
}
