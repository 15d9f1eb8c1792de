//! The executor: acts only on a valid signed approval, once.
//!
//! Before anything happens it checks, in order: that the approval was never used before
//! (`replayed`), that a trusted governance key signed exactly these claims (`bad_signature`),
//! that it has not expired (`expired`), and that it knows how to perform the action
//! (`unknown_action`). The use is recorded in redb *before* acting, so a crash mid-action is
//! reported as interrupted on redelivery instead of being run again blindly.
//!
//! Backends: `dry-run` (the default) records what it would do; `sim` asks the simulator to act,
//! over the bus; `command` runs the operator's argv template for the action ([`command`]).
//! A failed execution is reported, never retried.

pub mod command;
pub mod keys;

use std::path::PathBuf;

use agent_runtime::store::{Store, Table};
use agent_runtime::{
    AgentSpec, Context, HandleError, Handler, NoRequests, NoWork, ProofDraft, RuntimeArgs,
};
use bus_schema::approval::{self, ApprovalVerifier};
use bus_schema::fleet::ExecutorInput;
use bus_schema::proof::ProofKind;
use bus_schema::{
    AgentName, Backend, ExecutionResult, ExecutionStatus, ReasonCode, SignedApproval, SimAction,
    Timestamp, subject,
};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::command::Commands;

pub const NAME: AgentName = bus_schema::fleet::EXECUTOR;

/// Acts only on valid signed approvals; dry-run by default.
#[derive(Debug, clap::Parser)]
#[command(name = "executor", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Governance public key file(s) to trust (from `cnctl keygen`); repeat or comma-separate to
    /// trust several during a key rotation.
    #[arg(
        long = "verify-key",
        env = "CN_VERIFY_KEY_FILES",
        value_delimiter = ',',
        required = true
    )]
    pub verify_keys: Vec<PathBuf>,
    /// How approved actions are carried out.
    #[arg(long, env = "CN_EXECUTOR_BACKEND", value_enum, default_value = "dry-run")]
    pub backend: BackendChoice,
    /// TOML file with the argv template of each action the command backend may run
    /// ([action.NAME] argv = [...], timeout = "60s"); required with --backend command.
    #[arg(long, env = "CN_EXECUTOR_COMMANDS")]
    pub commands: Option<PathBuf>,
}

/// The backend named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Record what would be done; touch nothing.
    DryRun,
    /// Ask the simulator to act, on cn.sim.actions.{env}.{service}.
    Sim,
    /// Run the action's argv template from --commands, without a shell.
    Command,
}

/// How this executor carries out approved actions.
#[derive(Debug, Clone)]
pub enum ExecBackend {
    DryRun,
    Sim,
    Command(Commands),
}

impl ExecBackend {
    fn kind(&self) -> Backend {
        match self {
            Self::DryRun => Backend::DryRun,
            Self::Sim => Backend::Sim,
            Self::Command(_) => Backend::Command,
        }
    }
}

impl Cli {
    /// Reads the trusted public keys; a missing or malformed key is a configuration error.
    pub fn trusted_keys(&self) -> Result<Vec<ApprovalVerifier>, keys::VerifyKeyError> {
        self.verify_keys.iter().map(|path| keys::read_verifier(path)).collect()
    }

    /// The backend, with its commands file read and checked; a problem is a configuration error.
    pub fn exec_backend(&self) -> Result<ExecBackend, command::BackendError> {
        match (self.backend, &self.commands) {
            (BackendChoice::Command, Some(path)) => Ok(ExecBackend::Command(Commands::load(path)?)),
            (BackendChoice::Command, None) => Err(command::BackendError::NoCommandsFile),
            (other, Some(_)) => {
                let name =
                    other.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
                Err(command::BackendError::CommandsUnused { backend: name })
            }
            (BackendChoice::DryRun, None) => Ok(ExecBackend::DryRun),
            (BackendChoice::Sim, None) => Ok(ExecBackend::Sim),
        }
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
    backend: ExecBackend,
}

impl Executor {
    pub fn new(store: Store, trusted: Vec<ApprovalVerifier>, backend: ExecBackend) -> Self {
        Self { store, trusted, backend }
    }

    fn result(
        &self,
        a: &SignedApproval,
        status: ExecutionStatus,
        refusal: Option<ReasonCode>,
        detail: String,
        started: Timestamp,
    ) -> ExecutionResult {
        let c = &a.claims;
        ExecutionResult {
            proposal_id: c.proposal_id,
            approval_id: Some(c.approval_id),
            incident_id: c.incident_id,
            env: c.env.clone(),
            service: c.service.clone(),
            action: c.action.clone(),
            backend: self.backend.kind(),
            status,
            refusal,
            exit_code: None,
            output_tail: None,
            detail,
            started_at: started,
            finished_at: Timestamp::now(),
        }
    }

    /// Checks a fresh approval whose signature was verified before acting; `Err` is the
    /// refusal.
    fn check(&self, a: &SignedApproval, now: Timestamp) -> Result<(), (ReasonCode, String)> {
        approval::check_expiry(a, now).map_err(|e| (ReasonCode::Expired, e.to_string()))?;
        let action = &a.claims.action;
        match &self.backend {
            ExecBackend::Command(commands) if commands.get(action).is_none() => Err((
                ReasonCode::UnknownAction,
                format!("no command is configured for {action}; configured: {}", commands.names()),
            )),
            ExecBackend::DryRun | ExecBackend::Sim if !action.is_built_in() => Err((
                ReasonCode::UnknownAction,
                format!("no backend action is configured for {action}"),
            )),
            _ => Ok(()),
        }
    }

    /// Carries out a checked approval whose use is already recorded.
    async fn act(
        &self,
        ctx: &mut Context<'_>,
        a: &SignedApproval,
        started: Timestamp,
    ) -> Result<ExecutionResult, HandleError> {
        let c = &a.claims;
        let done = |status, detail| self.result(a, status, None, detail, started);
        match &self.backend {
            ExecBackend::DryRun => Ok(done(
                ExecutionStatus::Executed,
                format!("dry-run: would {} {}/{}", c.action, c.env, c.service),
            )),
            ExecBackend::Sim => {
                let order = SimAction {
                    proposal_id: c.proposal_id,
                    env: c.env.clone(),
                    service: c.service.clone(),
                    action: c.action.clone(),
                    params: c.params.clone(),
                    issued_at: started,
                };
                match ctx
                    .publish_confirmed(&subject::SIM_ACTIONS.subject(&c.env, &c.service), &order)
                    .await
                {
                    Ok(_) => {
                        Ok(done(ExecutionStatus::Executed, "sent to the simulator".to_owned()))
                    }
                    Err(e) if e.is_fatal() => Err(HandleError::Fatal(e)),
                    // It may or may not have been stored: reported, not retried.
                    Err(e) => Ok(done(
                        ExecutionStatus::Failed,
                        format!("the simulator's order was not confirmed: {e}; not retried"),
                    )),
                }
            }
            ExecBackend::Command(commands) => {
                let Some(template) = commands.get(&c.action) else {
                    return Ok(done(
                        ExecutionStatus::Failed,
                        format!("no command is configured for {}", c.action),
                    ));
                };
                let ran = command::execute(template, c).await;
                Ok(ExecutionResult {
                    exit_code: ran.exit_code,
                    output_tail: ran.output_tail,
                    ..done(ran.status, ran.detail)
                })
            }
        }
    }

    async fn publish(&self, ctx: &mut Context<'_>, r: &ExecutionResult) -> Result<(), HandleError> {
        let kind = match r.status {
            ExecutionStatus::Executed => ProofKind::ActionExecuted,
            ExecutionStatus::Failed => ProofKind::ActionFailed,
            ExecutionStatus::Refused => ProofKind::ExecutionRefused,
        };
        let mut draft = ProofDraft::new(kind).scope(&r.env, &r.service).action(&r.action).proposal(r.proposal_id).detail(json!({
            "approval_id": r.approval_id, "backend": r.backend, "status": r.status, "detail": r.detail, "exit_code": r.exit_code,
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

    async fn on_approval(
        &mut self,
        ctx: &mut Context<'_>,
        a: SignedApproval,
    ) -> Result<(), HandleError> {
        let input_id = ctx.meta().input_id.clone();
        let key = a.claims.approval_id.to_string();
        let started = Timestamp::now();
        // Nothing about an approval is believed before its signature: a forged message that
        // reuses a consumed approval id is bad_signature, not a replay of the genuine one.
        if approval::verify_signature(&a, &self.trusted).is_err() {
            let detail = "the signature does not match a trusted governance key".to_owned();
            let refused = self.result(
                &a,
                ExecutionStatus::Refused,
                Some(ReasonCode::BadSignature),
                detail,
                started,
            );
            return self.publish(ctx, &refused).await;
        }
        let result = match self.store.get(&USED, &key)? {
            // This very input again (redelivered): report what happened, never act twice.
            Some(Use { input_id: by, result }) if by == input_id => result.unwrap_or_else(|| {
                let detail = "interrupted: the executor stopped while acting; not retried, check the service";
                self.result(&a, ExecutionStatus::Failed, None, detail.to_owned(), started)
            }),
            Some(Use { input_id: by, .. }) => {
                let detail = format!("approval {} was already used by input {by}", a.claims.approval_id);
                let refused = self.result(&a, ExecutionStatus::Refused, Some(ReasonCode::Replayed), detail, started);
                return self.publish(ctx, &refused).await;
            }
            None => {
                if let Err((code, detail)) = self.check(&a, started) {
                    let refused = self.result(&a, ExecutionStatus::Refused, Some(code), detail, started);
                    return self.publish(ctx, &refused).await;
                }
                // Claimed before acting: a crash from here on is reported, not retried. Only a
                // real action needs the claim on disk first; a replayed dry run or simulated
                // action repeats outputs JetStream drops.
                let claim = Use { input_id: input_id.clone(), result: None };
                if matches!(self.backend, ExecBackend::Command(_)) {
                    self.store.write_durably(|tx| tx.put(&USED, &key, &claim))?;
                } else {
                    self.store.put(&USED, &key, &claim)?;
                }
                self.act(ctx, &a, started).await?
            }
        };
        // A crash from here on replays the input into the claim above, which reports (and
        // republishes under the same id) an interrupted action rather than acting twice.
        self.store.put(&USED, &key, &Use { input_id, result: Some(result.clone()) })?;
        self.publish(ctx, &result).await
    }
}

impl Handler for Executor {
    type Input = ExecutorInput;
    type Request = NoRequests;
    type Work = NoWork;

    async fn handle(
        &mut self,
        ctx: &mut Context<'_>,
        input: ExecutorInput,
    ) -> Result<(), HandleError> {
        match input {
            ExecutorInput::Approval(a) => self.on_approval(ctx, a).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The backend the arguments give, or clap's or `exec_backend`'s error.
    fn backend(args: &[&str]) -> Result<ExecBackend, Box<dyn std::error::Error>> {
        let argv =
            ["executor", "--verify-key", "governance.pub"].into_iter().chain(args.iter().copied());
        Ok(Cli::try_parse_from(argv)?.exec_backend()?)
    }

    #[test]
    fn the_backend_is_dry_run_unless_chosen_and_command_needs_a_valid_commands_file() {
        assert!(matches!(backend(&[]), Ok(ExecBackend::DryRun)));
        assert!(matches!(backend(&["--backend", "sim"]), Ok(ExecBackend::Sim)));
        assert!(
            backend(&["--backend", "shell"])
                .unwrap_err()
                .to_string()
                .contains("possible values: dry-run, sim, command")
        );
        assert!(
            backend(&["--backend", "command"])
                .unwrap_err()
                .to_string()
                .contains("--backend command needs --commands FILE")
        );
        assert!(
            backend(&["--commands", "c.toml"])
                .unwrap_err()
                .to_string()
                .contains("only read by --backend command, and the backend is dry-run")
        );
        let missing =
            backend(&["--backend", "command", "--commands", "/nonexistent/commands.toml"])
                .unwrap_err()
                .to_string();
        assert!(missing.contains("cannot read --commands /nonexistent/commands.toml"), "{missing}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("commands.toml");
        let path = file.to_str().unwrap();
        std::fs::write(&file, "[action.restart]\nargv = [\"kubectl\", \"{svc}\"]\n").unwrap();
        let bad = backend(&["--backend", "command", "--commands", path]).unwrap_err().to_string();
        assert!(
            bad.contains(&format!("--commands {path}: action \"restart\": argv[1]"))
                && bad.contains("{svc}"),
            "{bad}"
        );
        std::fs::write(&file, "[action.restart]\nargv = [\"kubectl\", \"{service}\"]\n").unwrap();
        let Ok(ExecBackend::Command(commands)) =
            backend(&["--backend", "command", "--commands", path])
        else {
            panic!("a valid file")
        };
        assert_eq!(commands.names(), "restart");
    }
}
