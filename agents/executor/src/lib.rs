//! The executor: acts only on a valid signed approval, once.
//!
//! Before anything happens it checks, in order: that the approval was never used before
//! (`replayed`), that a trusted governance key signed exactly these claims (`bad_signature`),
//! that it has not expired (`expired`), and that it knows how to perform the action
//! (`unknown_action`). The use is recorded in redb *before* acting, so a crash mid-action is
//! reported as interrupted on redelivery instead of being run again blindly.
//!
//! Backends: `dry-run` (the default and, for now, the only one) records what it would do.

use std::path::PathBuf;

use agent_runtime::store::{Store, Table};
use agent_runtime::{AgentSpec, Context, HandleError, Handler, ProofDraft, RuntimeArgs};
use bus_schema::approval::{self, ApprovalError, ApprovalVerifier};
use bus_schema::proof::ProofKind;
use bus_schema::{AgentName, Backend, ExecutionResult, ExecutionStatus, Inbound, ReasonCode, SignedApproval, Timestamp, subject};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const NAME: AgentName = bus_schema::fleet::EXECUTOR;

/// Acts only on valid signed approvals; dry-run by default.
#[derive(Debug, clap::Parser)]
#[command(name = "executor", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Governance public key file(s) to trust (from `cnctl keygen`); repeat or comma-separate to
    /// trust several during a key rotation.
    #[arg(long = "verify-key", env = "CN_VERIFY_KEY_FILES", value_delimiter = ',', required = true)]
    pub verify_keys: Vec<PathBuf>,
}

impl Cli {
    /// Reads the trusted public keys; a missing or malformed key is a configuration error.
    pub fn trusted_keys(&self) -> Result<Vec<ApprovalVerifier>, String> {
        self.verify_keys
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read --verify-key {}: {e}", path.display()))?;
                ApprovalVerifier::from_hex(&text).map_err(|e| format!("--verify-key {}: {e}", path.display()))
            })
            .collect()
    }
}

pub fn spec() -> AgentSpec {
    AgentSpec::new(bus_schema::fleet::executor(), env!("CARGO_PKG_VERSION"))
}

/// An approval this executor has consumed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Use {
    /// The input that consumed it: a redelivery of the same input is not a replay.
    input_id: String,
    /// Set once the action finished.
    result: Option<ExecutionResult>,
}

const USED: Table<Use> = Table::new("approvals.used");

/// The executor's bus shell.
#[derive(Debug)]
pub struct Executor {
    store: Store,
    trusted: Vec<ApprovalVerifier>,
}

impl Executor {
    pub fn new(store: Store, trusted: Vec<ApprovalVerifier>) -> Self {
        Self { store, trusted }
    }

    fn result(a: &SignedApproval, status: ExecutionStatus, refusal: Option<ReasonCode>, detail: String, started: Timestamp) -> ExecutionResult {
        let c = &a.claims;
        ExecutionResult {
            proposal_id: c.proposal_id,
            approval_id: Some(c.approval_id),
            incident_id: c.incident_id,
            env: c.env.clone(),
            service: c.service.clone(),
            action: c.action.clone(),
            backend: Backend::DryRun,
            status,
            refusal,
            exit_code: None,
            output_tail: None,
            detail,
            started_at: started,
            finished_at: Timestamp::now(),
        }
    }

    /// Checks a fresh approval before acting; `Err` is the refusal.
    fn check(&self, a: &SignedApproval, now: Timestamp) -> Result<(), (ReasonCode, String)> {
        approval::verify(a, &self.trusted, now).map_err(|e| match e {
            ApprovalError::Expired { .. } => (ReasonCode::Expired, e.to_string()),
            ApprovalError::UnknownKey(_) | ApprovalError::BadSignature => (ReasonCode::BadSignature, e.to_string()),
        })?;
        if !a.claims.action.is_built_in() {
            return Err((ReasonCode::UnknownAction, format!("no backend action is configured for {}", a.claims.action)));
        }
        Ok(())
    }

    async fn publish(&self, ctx: &mut Context<'_>, r: &ExecutionResult) -> Result<(), HandleError> {
        let kind = match r.status {
            ExecutionStatus::Executed => ProofKind::ActionExecuted,
            ExecutionStatus::Failed => ProofKind::ActionFailed,
            ExecutionStatus::Refused => ProofKind::ExecutionRefused,
        };
        let mut draft = ProofDraft::new(kind).scope(&r.env, &r.service).action(&r.action).proposal(r.proposal_id).detail(json!({
            "approval_id": r.approval_id, "backend": r.backend, "status": r.status, "detail": r.detail,
        }));
        if let Some(id) = r.incident_id {
            draft = draft.incident(id);
        }
        if let Some(code) = r.refusal {
            draft = draft.reason(code.as_str());
        }
        // The record first, so the proof log reads in causal order.
        ctx.prove(draft).await?;
        ctx.publish(&subject::EXECUTED.subject(&r.env, &r.service), r).await?;
        Ok(())
    }

    async fn on_approval(&mut self, ctx: &mut Context<'_>, a: SignedApproval) -> Result<(), HandleError> {
        let input_id = ctx.meta().input_id.clone();
        let key = a.claims.approval_id.to_string();
        let started = Timestamp::now();
        let result = match self.store.get(&USED, &key)? {
            // This very input again (redelivered): report what happened, never act twice.
            Some(Use { input_id: by, result }) if by == input_id => result.unwrap_or_else(|| {
                let detail = "interrupted: the executor stopped while acting; not retried, check the service";
                Self::result(&a, ExecutionStatus::Failed, None, detail.to_owned(), started)
            }),
            Some(Use { input_id: by, .. }) => {
                let detail = format!("approval {} was already used by input {by}", a.claims.approval_id);
                let refused = Self::result(&a, ExecutionStatus::Refused, Some(ReasonCode::Replayed), detail, started);
                return self.publish(ctx, &refused).await;
            }
            None => {
                if let Err((code, detail)) = self.check(&a, started) {
                    let refused = Self::result(&a, ExecutionStatus::Refused, Some(code), detail, started);
                    return self.publish(ctx, &refused).await;
                }
                // Recorded before acting: a crash from here on is reported, not retried.
                self.store.put(&USED, &key, &Use { input_id: input_id.clone(), result: None })?;
                let c = &a.claims;
                let detail = format!("dry-run: would {} {}/{}", c.action, c.env, c.service);
                Self::result(&a, ExecutionStatus::Executed, None, detail, started)
            }
        };
        self.publish(ctx, &result).await?;
        self.store.put(&USED, &key, &Use { input_id, result: Some(result) })?;
        Ok(())
    }
}

impl Handler for Executor {
    async fn handle(&mut self, ctx: &mut Context<'_>, input: Inbound) -> Result<(), HandleError> {
        match input {
            Inbound::Approved(a) => self.on_approval(ctx, a).await,
            _ => Ok(()),
        }
    }
}
