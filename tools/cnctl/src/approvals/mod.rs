//! `cnctl approvals`: the operator's side of human approvals (docs/contract.md, Governance gates).
//!
//! When policy needs a human, governance stores a `PendingApproval` on
//! `cn.actions.pending.{env}.{service}`; it answers a `HumanDecision` on
//! `cn.approvals.{env}.{service}` (only the `operator` and `console` NATS users may publish there) with a signed
//! approval or a refusal (`approval_denied`, `approval_expired`, or a gate that still says no).
//! Everything lives in CN_WORK, so this command keeps no state: it reads the four families with
//! one short-lived consumer each (nats-server 2.9 takes one filter per consumer), matches them
//! by proposal id in a [`Ledger`] (the pure core, which the tests exercise), and either prints
//! what it found or publishes a decision and waits for governance's answer.
//!
//! A decision is refused here, before anything is sent, when the proposal is unknown, already
//! decided, or expired. Permission violations reach a NATS client only as asynchronous events,
//! so this command turns on the connect helper's error log (which names them) and bounds every
//! JetStream call, so that the wrong user gets a clear error instead of a hang.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agent_runtime::config::{EXIT_CONFIG, LogFormat, NatsArgs, parse_duration};
use agent_runtime::{Published, Publisher, Trace};
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use bus_schema::codec::{Limits, Payload, decode_by_content_type};
use bus_schema::subject::{APPROVED, HUMAN_DECISIONS, PENDING, REFUSED, ServiceFamily, Stream};
use bus_schema::{
    Decision, Env, Filter, HumanDecision, PendingApproval, ReasonCode, Refusal, ServiceName,
    SignedApproval, Timestamp, Uuid, Validate, headers,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::Failure;

/// Exit code when the decision is stored but governance has not answered within `--wait`.
pub const EXIT_NO_ANSWER: u8 = 2;
/// How long one JetStream call may take before we call it a failure (a permission violation
/// shows up as exactly that: a request nobody answers).
const JS_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest id prefix accepted, like git's abbreviated hashes.
const MIN_PREFIX: usize = 4;

const DECIDE_HELP: &str = "\
Publishes the decision on cn.approvals.{env}.{service} (only the `operator` NATS user may, and the console's), waits \
for JetStream to store it, then up to --wait for governance's signed approval or refusal.

Exit codes:
  0   governance answered (approved, or refused: approval_denied or a gate that still says no)
  1   unknown or ambiguous id, already decided, expired, or the decision was not stored
  2   the decision is stored but governance has not answered yet (see `cnctl approvals show ID`)
  64  bad usage (no --reason, no operator name)";

#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// List the approvals waiting for a human, soonest expiry first.
    List(ListArgs),
    /// Everything about one proposal: what, why it waits, until when, and any decision.
    Show {
        /// The proposal id, or a unique prefix of it (at least 4 characters).
        id: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending action; governance re-checks its other gates and signs it.
    #[command(after_help = DECIDE_HELP)]
    Approve(DecideArgs),
    /// Deny a pending action; governance refuses it as approval_denied.
    #[command(after_help = DECIDE_HELP)]
    Deny(DecideArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Also list the approvals already decided, with their outcome.
    #[arg(long)]
    pub all: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Only this environment.
    #[arg(long)]
    pub env: Option<Env>,
    /// Only this service.
    #[arg(long)]
    pub service: Option<ServiceName>,
}

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The proposal id, or a unique prefix of it (at least 4 characters).
    pub id: String,
    /// Why: recorded with the decision, on the bus and on the proof log.
    #[arg(long)]
    pub reason: String,
    /// Who decides [default: $USER, else your login name].
    #[arg(long, env = "CN_OPERATOR")]
    pub operator: Option<String>,
    /// How long to wait for governance's answer.
    #[arg(long, env = "CN_APPROVAL_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Print the approval as `approvals show --json` does, with the decision and governance's
    /// answer (state `approved` or `refused`; `sent` when it did not answer in time).
    #[arg(long)]
    pub json: bool,
}

mod bus;
mod ledger;
mod render;
#[cfg(test)]
mod tests;

use bus::*;
pub use ledger::*;
pub use render::*;

/// `--operator`, else `$CN_OPERATOR` (via clap), else the login name ([`crate::login_name`]).
pub fn operator_name(flag: Option<String>, user: Option<String>) -> Result<String, NoOperator> {
    flag.or(user).map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).ok_or(NoOperator)
}

/// Neither `--operator`, `$CN_OPERATOR` nor the login name names the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("who is deciding? pass --operator NAME or set CN_OPERATOR")]
pub struct NoOperator;

pub async fn run(nats: &NatsArgs, command: ApprovalsCommand) -> Result<ExitCode, Failure> {
    // The connect helper logs permission violations (they arrive asynchronously); show them.
    agent_runtime::telemetry::init(LogFormat::Plain, "agent_runtime=error")?;
    let now = Timestamp::now();
    match command {
        ApprovalsCommand::List(args) => {
            let ledger = Work::open(nats).await?.ledger(args.env.as_ref()).await?;
            let scope = Scope { env: args.env, service: args.service, all: args.all };
            let list = ledger.listed(&scope, now);
            if args.json {
                list.iter().for_each(|a| outln!("{}", to_json(a, now)));
            } else if list.is_empty() {
                outln!(
                    "{}",
                    if args.all {
                        "no approvals on record"
                    } else {
                        "no approvals are waiting for a human"
                    }
                );
            } else {
                out!("{}", render_table(&list, now));
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Show { id, json } => {
            let ledger = Work::open(nats).await?.ledger(None).await?;
            let a = ledger.find(&id)?;
            if json {
                outln!("{}", to_json(a, now));
            } else {
                out!("{}", render_detail(a, now));
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Approve(args) => decide(nats, Decision::Approve, args).await,
        ApprovalsCommand::Deny(args) => decide(nats, Decision::Deny, args).await,
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\nFor more information, try 'cnctl approvals --help'.");
    ExitCode::from(EXIT_CONFIG)
}

async fn decide(
    nats: &NatsArgs,
    decision: Decision,
    args: DecideArgs,
) -> Result<ExitCode, Failure> {
    let operator = match operator_name(args.operator, crate::login_name()) {
        Ok(o) => o,
        Err(e) => return Ok(usage(&e.to_string())),
    };
    let reason = args.reason.trim().to_owned();
    if reason.is_empty() {
        return Ok(usage("--reason must say why: every decision records who and why"));
    }
    let work = Work::open(nats).await?;
    let ledger = work.ledger(None).await?;
    let a = ledger.find(&args.id)?;
    if let Some(problem) = why_not(a, Timestamp::now()) {
        return Err(problem.into());
    }
    let h = HumanDecision { proposal_id: a.id(), decision, operator, reason };
    if let Err(e) = h.validate() {
        return Ok(usage(&e.to_string()));
    }
    let published = work.publish(a, &h).await?;
    let p = &a.pending.proposal;
    if args.json {
        let answer = work.answer(a, published.stream_seq, args.wait).await?;
        let answered = answer.is_some();
        let mut decided = a.clone();
        decided.sent = Some(Sent { decision: h, at: None });
        decided.answer = answer;
        let mut report = to_json(&decided, Timestamp::now());
        report["decision_stream_seq"] = json!(published.stream_seq);
        outln!("{report}");
        return Ok(if answered { ExitCode::SUCCESS } else { ExitCode::from(EXIT_NO_ANSWER) });
    }
    outln!(
        "decision `{decision}` on proposal {} ({}/{} {}) by {} stored on {} (stream seq {}); waiting up to {:?} for governance",
        p.proposal_id,
        p.env,
        p.service,
        p.action,
        h.operator,
        a.decision_subject(),
        published.stream_seq,
        args.wait
    );
    match work.answer(a, published.stream_seq, args.wait).await? {
        Some(answer) => {
            outln!("{}", answer_line(&answer));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "governance has not answered yet; check `cnctl approvals show {}`",
                p.proposal_id
            );
            Ok(ExitCode::from(EXIT_NO_ANSWER))
        }
    }
}
