//! `cnctl contract`: the developer's side of deployment contracts (docs/contract.md).
//!
//! A contract starts as a `ContractRequest`: written by hand (`contract request FILE`) or built
//! from real git history (`contract from-git RANGE`: the files of the range with their change
//! type, lines added plus deleted, and the subjects of the commits that touched them). It is
//! published on `cn.requests.contract.{env}.{service}`; the risk negotiator drafts a `Contract`
//! on `cn.contracts.{env}.{service}` in CN_WORK, which this command waits for and prints with
//! every risk factor, guardrail, validator, canary stage and rollback step. `--offline` drafts
//! it locally with the negotiator's own pure core instead, without NATS.
//!
//! The developer then negotiates on `cn.negotiate.{env}.{service}` (core request/reply): ask to
//! shorten or skip the canary, relax a guardrail or waive a validator, always with a
//! justification (`contract counter`), or accept the contract as drafted (`contract accept`).
//! The negotiator answers each ask with accepted or refused and why. `contract stats` shows
//! how well the negotiator's learned risk model is calibrated.
//!
//! Git runs without a shell, with the range checked first (no leading `-`, no whitespace or
//! control characters) and passed after `--end-of-options`, so a range can never become an
//! option or a command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent_runtime::config::{EXIT_CONFIG, NatsArgs, parse_duration};
use bus_schema::{
    Ask, Contract, ContractRequest, CounterProposal, Env, InstanceId, ServiceName, Timestamp, Uuid,
    Validate, ValidatorKind,
};

use crate::Failure;

mod bus;
mod counter;
mod git;
mod render;
#[cfg(test)]
mod tests;

pub use counter::*;
pub use git::*;
pub use render::*;

/// Exit code when nobody answered in time: no contract within `--wait`, no negotiator.
pub const EXIT_NO_ANSWER: u8 = 2;
/// Exit code when the negotiator refused at least one ask (or the acceptance).
pub const EXIT_REFUSED: u8 = 3;

pub const CONTRACT_HELP: &str = "\
A contract request is published on cn.requests.contract.{env}.{service} (CN_EVENTS); the risk \
negotiator answers with a contract on cn.contracts.{env}.{service} (CN_WORK), which `request` and \
`from-git` wait for (reading CN_WORK needs the `ci` (pipelines) or `operator` NATS user). Negotiation is core NATS \
request/reply on cn.negotiate.{env}.{service}: every ask needs a --justification, and the \
negotiator accepts it within bounds or refuses it, always saying why. `from-git --offline` drafts \
the contract locally with the negotiator's model and needs no NATS.

Exit codes:
  0   the contract or the statistics were printed; every ask was accepted
  1   an error: unreadable request, unknown repository or range, git missing, not published
  2   nobody answered in time: no contract within --wait, no negotiator (is it running?)
  3   the negotiator refused at least one ask, or the acceptance
  64  bad usage (unknown guardrail or validator, no --justification, no requester name)

Examples:
  cnctl contract request deploy-001.json
  cnctl contract from-git HEAD~5..HEAD --env stage --service payments-api
  cnctl contract from-git --repo ../payments v1.14.2..v1.15.0 --env prod --service payments-api --dependency postgres
  cnctl contract from-git HEAD~5..HEAD --env stage --service cnctl --offline --json
  cnctl contract counter 5af3d880-0e99-8c5c-96ef-3a0b633874b9 --env prod --service payments-api --shorten-canary 2 \\
      --relax max_p95_latency_ms=400 --justification \"hotfix; the slow path is behind a flag\"
  cnctl contract accept 5af3d880-0e99-8c5c-96ef-3a0b633874b9 --env prod --service payments-api
  cnctl contract stats";

#[derive(Debug, clap::Subcommand)]
pub enum ContractCommand {
    /// Publish a contract request (JSON, docs/contract.md, Subjects) and print the contract the negotiator drafts.
    Request {
        /// The request as JSON (`-` for stdin).
        file: PathBuf,
        #[command(flatten)]
        out: Output,
        /// How long to wait for the contract.
        #[arg(long, env = "CN_CONTRACT_WAIT", default_value = "10s", value_parser = parse_duration)]
        wait: Duration,
    },
    /// Build a contract request from git history (files, lines, commit subjects) and print the
    /// contract: the negotiator's, or with --offline one drafted locally.
    FromGit(FromGitArgs),
    /// Ask the negotiator to change a contract: shorten or skip the canary, relax a guardrail,
    /// waive a validator; prints each ask's answer and why. Exits 3 when any ask is refused.
    Counter(CounterArgs),
    /// Accept a contract as it is (a counter-proposal with no asks).
    Accept(AcceptArgs),
    /// The negotiator's learned risk model: Brier score, reliability table, weights.
    Stats(StatsArgs),
}

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Output {
    /// Print JSON instead of the readable form.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct FromGitArgs {
    /// The changes: FROM..TO (what TO adds to FROM), or one commit.
    pub range: String,
    /// The git repository.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Environment, e.g. prod.
    #[arg(long)]
    pub env: Env,
    /// Service, e.g. payments-api.
    #[arg(long)]
    pub service: ServiceName,
    /// The version being deployed [default: `git describe --always` of the range's end].
    #[arg(long)]
    pub version: Option<String>,
    /// [default: SERVICE-SHORTSHA of the range's end].
    #[arg(long)]
    pub deployment_id: Option<String>,
    /// The deploy cannot be rolled back automatically.
    #[arg(long)]
    pub no_rollback: bool,
    /// A service this one depends on (repeat for each).
    #[arg(long = "dependency", value_name = "NAME")]
    pub dependencies: Vec<String>,
    /// Draft the contract locally with the negotiator's model; no NATS needed.
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub out: Output,
    /// How long to wait for the contract (not with --offline).
    #[arg(long, env = "CN_CONTRACT_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,
}

#[derive(Debug, clap::Args)]
pub struct Negotiation {
    /// The contract's id (as printed by `contract request` or `from-git`).
    pub contract_id: Uuid,
    /// Environment, e.g. prod.
    #[arg(long)]
    pub env: Env,
    /// Service, e.g. payments-api.
    #[arg(long)]
    pub service: ServiceName,
    /// Who asks [default: $USER, else your login name].
    #[arg(long, env = "CN_REQUESTED_BY")]
    pub requested_by: Option<String>,
    #[command(flatten)]
    pub out: Output,
    /// How long to wait for the negotiator's reply.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct CounterArgs {
    #[command(flatten)]
    pub target: Negotiation,
    /// Run the canary in N stages instead (N ≥ 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..))]
    pub shorten_canary: Option<u8>,
    /// Deploy without a canary.
    #[arg(long, conflicts_with = "shorten_canary")]
    pub skip_canary: bool,
    /// Loosen a guardrail: max_error_rate (0..1), max_p95_latency_ms or max_p99_latency_ms.
    /// Repeatable. (The traffic step follows the canary: use --shorten-canary.)
    #[arg(long = "relax", value_name = "GUARDRAIL=VALUE", value_parser = parse_relax)]
    pub relax: Vec<Relax>,
    /// Drop a required validator: tests, canary, rollback_plan, feature_flag,
    /// migration_rollback_script, security_review or load_test. Repeatable.
    #[arg(long = "waive", value_name = "VALIDATOR")]
    pub waive: Vec<ValidatorKind>,
    /// Why: the negotiator weighs it and records it on the proof log.
    #[arg(long)]
    pub justification: String,
}

#[derive(Debug, clap::Args)]
pub struct AcceptArgs {
    #[command(flatten)]
    pub target: Negotiation,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// The risk negotiator instance to ask.
    #[arg(long, default_value = "0")]
    pub instance: InstanceId,
    #[command(flatten)]
    pub out: Output,
    /// How long to wait for the answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `--requested-by`, else `$CN_REQUESTED_BY` (via clap), else the login name ([`crate::login_name`]).
pub fn requester_name(flag: Option<String>, user: Option<String>) -> Result<String, NoRequester> {
    flag.or(user).map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).ok_or(NoRequester)
}

/// Neither `--requested-by`, `$CN_REQUESTED_BY` nor the login name names the requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("who is asking? pass --requested-by NAME or set CN_REQUESTED_BY")]
pub struct NoRequester;

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\nFor more information, try 'cnctl contract --help'.");
    ExitCode::from(EXIT_CONFIG)
}

/// Runs one subcommand; NATS is reached only once the input is known to be good, and never by
/// `from-git --offline`.
pub async fn run(nats: &NatsArgs, command: ContractCommand) -> Result<ExitCode, Failure> {
    match command {
        ContractCommand::Request { file, out, wait } => {
            let request = bus::read_request(&file)?;
            bus::request_contract(nats, &request, out, wait).await
        }
        ContractCommand::FromGit(args) => from_git(nats, args).await,
        ContractCommand::Counter(args) => {
            let asks =
                asks_from_flags(args.shorten_canary, args.skip_canary, &args.relax, &args.waive);
            if asks.is_empty() {
                return Ok(usage(
                    "counter needs at least one ask (--shorten-canary, --skip-canary, --relax, --waive); to take the contract as it is, use `cnctl contract accept`",
                ));
            }
            if args.justification.trim().is_empty() {
                return Ok(usage("--justification must say why: every ask is weighed against it"));
            }
            negotiate(nats, args.target, asks, args.justification.trim().to_owned()).await
        }
        ContractCommand::Accept(args) => {
            negotiate(nats, args.target, Vec::new(), String::new()).await
        }
        ContractCommand::Stats(args) => stats(nats, args).await,
    }
}

async fn from_git(nats: &NatsArgs, args: FromGitArgs) -> Result<ExitCode, Failure> {
    let range = GitRange::parse(&args.range)?;
    let git = Git::open(&args.repo)?;
    let set = git.change_set(&range)?;
    eprintln!("{}", set.summary(&range));
    let end = git.short_sha(range.end())?;
    let request = ContractRequest {
        deployment_id: args.deployment_id.unwrap_or_else(|| format!("{}-{end}", args.service)),
        service: args.service,
        env: args.env,
        version: match args.version {
            Some(v) => v,
            None => git.describe(range.end())?,
        },
        changes: set.changes,
        current_error_rate: None,
        current_p95_latency_ms: None,
        target_p95_latency_ms: None,
        target_error_rate: None,
        rollback_capability: !args.no_rollback,
        dependencies: args.dependencies,
    };
    if args.offline {
        request.validate().map_err(|e| format!("the change set is not a valid request: {e}"))?;
        let contract = risk_model::draft::draft_offline(&request, Timestamp::now());
        print_contract(&contract, args.out)?;
        return Ok(ExitCode::SUCCESS);
    }
    bus::request_contract(nats, &request, args.out, args.wait).await
}

fn print_contract(contract: &Contract, out: Output) -> Result<(), Failure> {
    match out.json {
        true => emit(&format!("{}\n", serde_json::to_string(contract)?)),
        // Line by line: the layout's line breaks stay, anything else a payload holds is escaped.
        false => emit(
            &render_contract(contract)
                .lines()
                .map(|l| format!("{}\n", bus_schema::display::escape(l)))
                .collect::<String>(),
        ),
    }
}

/// Writes to stdout; a reader that stopped early (`| head`) ends cnctl quietly.
fn emit(text: &str) -> Result<(), Failure> {
    out!("{text}");
    Ok(())
}

async fn negotiate(
    nats: &NatsArgs,
    target: Negotiation,
    asks: Vec<Ask>,
    justification: String,
) -> Result<ExitCode, Failure> {
    let requested_by = match requester_name(target.requested_by.clone(), crate::login_name()) {
        Ok(name) => name,
        Err(e) => return Ok(usage(&e.to_string())),
    };
    let proposal = CounterProposal {
        contract_id: target.contract_id,
        env: target.env,
        service: target.service,
        requested_by,
        asks,
        justification,
    };
    if let Err(e) = proposal.validate() {
        return Ok(usage(&e.to_string()));
    }
    let client = crate::connect(nats).await?;
    let reply = match send_counter(&client, &proposal, target.timeout).await? {
        Answered::Reply(reply) => reply,
        Answered::Nobody(why) => {
            eprintln!("error: {why}; is the risk negotiator running? (`cnctl status`)");
            return Ok(ExitCode::from(EXIT_NO_ANSWER));
        }
    };
    match target.out.json {
        true => emit(&format!("{}\n", serde_json::to_string(&reply)?))?,
        false => emit(&render_reply(&reply))?,
    }
    Ok(if all_accepted(&reply) { ExitCode::SUCCESS } else { ExitCode::from(EXIT_REFUSED) })
}

async fn stats(nats: &NatsArgs, args: StatsArgs) -> Result<ExitCode, Failure> {
    let client = crate::connect(nats).await?;
    let stats = match model_stats(&client, &args.instance, args.timeout).await? {
        Answered::Reply(stats) => stats,
        Answered::Nobody(why) => {
            eprintln!(
                "error: {why}; is the risk negotiator (instance {}) running? (`cnctl status`)",
                args.instance
            );
            return Ok(ExitCode::from(EXIT_NO_ANSWER));
        }
    };
    match args.out.json {
        true => emit(&format!("{}\n", serde_json::to_string(&stats)?))?,
        false => emit(&render_stats(&stats))?,
    }
    Ok(ExitCode::SUCCESS)
}
