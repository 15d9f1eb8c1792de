//! `cnctl`, the operator's CLI.
//!
//! ```text
//! cnctl publish deploy|metric|log|contract|onboard   publish an event or request (flags, --file or stdin)
//! cnctl onboard                                       onboard an app and wait for the deploy agent's verdict
//! cnctl tail                                          follow the proof log, readable or --json
//! cnctl proof verify                                  check every hash chain in CN_PROOF
//! cnctl status                                        which agents are alive
//! cnctl approvals list|show|approve|deny              actions waiting for a human, and the human's answer
//! cnctl contract request|from-git|counter|accept|stats  deployment contracts: draft, negotiate, calibration
//! cnctl rollout get [--watch]                          a service's canary rollout, live
//! cnctl policy check FILE | policy show               check a governance policy; what the optimizer learned
//! cnctl keygen                                        a governance signing key pair
//! cnctl creds init | cnctl permissions                NATS users and their permissions
//! cnctl streams ensure|check                          create the streams (as bootstrap); check their settings
//! cnctl partitions mappings|show                      the server's partition mappings; who holds which partition
//! cnctl bench                                         latency and ingest figures of a running fleet
//! cnctl completions bash|zsh|fish                      a shell completion script
//! ```
//!
//! Colour (`--color auto|always|never`) follows the terminal and `NO_COLOR` ([`style`]).
//!
//! Exit codes: 0 success, 1 a failed check (a broken chain, a missing agent) or an operation
//! that failed or an onboarding the deploy agent refused, 2 a decision governance has not answered yet (`approvals approve|deny`) or no
//! answer from the risk negotiator (`contract`), the optimizer (`policy show`) or the deploy agent (`onboard`), 3 an ask the negotiator refused (`contract
//! counter|accept`), 64 bad usage.

/// `print!` for cnctl's output: a reader that went away (`cnctl tail | head -1`) ends cnctl
/// quietly with exit 0, as it does ripgrep, instead of a panic; another write error ends it
/// with exit 1 and says why.
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), false) };
}

/// `println!` for cnctl's output (see [`out!`]).
macro_rules! outln {
    () => { $crate::write_stdout(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), true) };
}

pub mod approvals;
pub mod bench;
pub mod contract;
pub mod creds;
pub mod evaluate;
pub mod keys;
pub mod learned;
pub mod onboard;
pub mod partitions;
pub mod policy;
pub mod publish;
pub mod request;
pub mod rollout;
pub mod status;
pub mod streams;
pub mod style;
pub mod tail;
pub mod verdict;
pub mod verify;

use std::process::ExitCode;

use agent_runtime::config::NatsArgs;
use clap::{Parser, Subcommand};

/// The operator's CLI for Chaos Negotiator.
#[derive(Debug, Parser)]
#[command(
    name = "cnctl",
    version,
    about,
    long_about = None,
    after_help = "Connection: --nats-url/NATS_URL, --nats-user/NATS_USER, --nats-password-file/NATS_PASSWORD_FILE on every command that talks to NATS.\n\nExamples:\n  cnctl publish metric --env stage --service payments-api --crash-looping\n  cnctl tail --env prod --kind action_refused --since 1h\n  cnctl proof verify\n  cnctl status\n  cnctl approvals list\n  cnctl contract from-git HEAD~5..HEAD --env stage --service payments-api\n  cnctl policy check deploy/policy.toml"
)]
pub struct Cli {
    /// When to colour the output: auto (a terminal, and NO_COLOR not set), always, never.
    #[arg(long, global = true, value_enum, default_value_t, value_name = "WHEN")]
    pub color: style::ColorWhen,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a deploy, metric or log event, a contract request or an onboarding request.
    #[command(after_help = PUBLISH_HELP)]
    Publish {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        how: publish::PublishArgs,
        #[command(subcommand)]
        event: publish::Event,
    },
    /// Onboard an app: publish the request and wait for the deploy agent's verdict.
    #[command(after_help = onboard::ONBOARD_HELP)]
    Onboard {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        args: onboard::OnboardArgs,
    },
    /// Follow the proof log (CN_PROOF), readable by default.
    Tail {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        args: tail::TailArgs,
    },
    /// Work with the proof log.
    Proof {
        #[command(subcommand)]
        command: ProofCommand,
    },
    /// Show which agents are alive (micro-service discovery and their status endpoints).
    Status {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        args: status::StatusArgs,
    },
    /// Human approvals: list the actions waiting for a human, show one, approve or deny it.
    #[command(after_help = APPROVALS_HELP)]
    Approvals {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(subcommand)]
        command: approvals::ApprovalsCommand,
    },
    /// Deployment contracts: request one (from a file or git history), negotiate it, accept it,
    /// and see how well the risk model is calibrated.
    #[command(after_help = contract::CONTRACT_HELP)]
    Contract {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(subcommand)]
        command: contract::ContractCommand,
    },
    /// Canary rollouts: a service's latest one, its stages and verdicts; --watch follows it live.
    Rollout {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(subcommand)]
        command: rollout::RolloutCommand,
    },
    /// Governance policy files: check one before deploying it; show what the optimizer learned.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Create a governance signing key pair: DIR/governance.key (secret) and DIR/governance.pub.
    Keygen(keys::KeygenArgs),
    /// NATS credentials for the fleet and the people around it: bootstrap, pipeline, ci, operator, auditor.
    Creds {
        #[command(subcommand)]
        command: creds::CredsCommand,
    },
    /// Print the NATS authorization block (users and permissions) rendered from the fleet table.
    Permissions,
    /// The JetStream streams: create them or restore their settings (as the bootstrap user),
    /// or check them against the contract.
    Streams {
        #[command(subcommand)]
        command: streams::StreamsCommand,
    },
    /// Service partitions: the server's mappings, and which instance of each partitioned agent
    /// holds which partition.
    Partitions {
        #[command(subcommand)]
        command: partitions::PartitionsCommand,
    },
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    #[command(after_help = COMPLETIONS_HELP)]
    Completions { shell: clap_complete::Shell },
    /// Measure a running fleet (incident-to-execution latency, metric ingest rate) and print JSON.
    Bench {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
}

const COMPLETIONS_HELP: &str = "\
Examples:
  cnctl completions bash > ~/.local/share/bash-completion/completions/cnctl
  cnctl completions zsh > \"${fpath[1]}/_cnctl\"
  cnctl completions fish > ~/.config/fish/completions/cnctl.fish
  source <(cnctl completions bash)      # this shell only";

const PUBLISH_HELP: &str = "\
Without --wait, cnctl publish returns once JetStream has stored the message. With --wait it \
also waits until every agent that reads the subject is done with it and reports the verdict: \
accepted, or rejected with the reason (the same event_rejected record `cnctl tail` shows).

Exit codes:
  0   stored (and, with --wait, accepted by every agent that reads it)
  1   not stored (invalid, no permission), or rejected by an agent (--wait)
  2   an agent that reads it did not get to it within --timeout (--wait)

Examples:
  cnctl publish --wait metric --env stage --service payments-api --error-rate 0.02
  cnctl publish deploy --env prod --service payments-api --version 1.14.3 --wait --json
  cnctl publish metric --file sample.json --wait --timeout 30s";

const APPROVALS_HELP: &str = "\
When policy needs a human (in prod by default: rollback, scale_down, promote, custom actions), \
governance publishes a pending approval and waits, by default 15 minutes; then it refuses the \
action as approval_expired. A decision is published on cn.approvals.{env}.{service}, which only \
the `operator` NATS user may do; governance answers with a signed approval or a refusal \
(approval_denied, or a gate that still says no). Every decision records who (--operator, \
CN_OPERATOR, else $USER or your login name) and why (--reason, required). IDs may be abbreviated to a unique \
prefix of at least 4 characters.

Exit codes:
  0   listed or shown; or the decision was stored and governance answered (approved or refused)
  1   unknown or ambiguous id, already decided, expired, not stored (e.g. not the operator user)
  2   the decision was stored but governance did not answer within --wait
  64  bad usage (e.g. no --reason)

Examples:
  cnctl approvals list --env prod
  cnctl approvals list --all --json
  cnctl approvals show 3f2a9c1e
  cnctl approvals approve 3f2a9c1e --reason \"checked dashboards, 1.14.2 was healthy\"
  cnctl approvals deny 3f2a9c1e --reason \"fix forward instead\" --operator oncall-sre";

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load a policy file exactly as governance-gate --policy will and print what it allows in
    /// each environment; exits 1 naming the first mistake. Example: cnctl policy check deploy/policy.toml
    Check(policy::CheckArgs),
    /// Ask the rl-optimizer what it has learned: mode, α, γ, ε, updates and each state's action
    /// values and visits, best first; exits 2 when no optimizer answers.
    /// Example: cnctl policy show --state crash_loop
    Show(learned::ShowArgs),
    /// Estimate from the proof log what a candidate policy would earn before it acts: IPS,
    /// self-normalised IPS and doubly robust, with bootstrap intervals and the effective sample
    /// size; says when the logs cannot support an estimate (exit 1).
    /// Example: cnctl policy show --json > table.json; (edit); cnctl policy evaluate --table table.json
    Evaluate(evaluate::EvaluateArgs),
}

#[derive(Debug, Subcommand)]
pub enum ProofCommand {
    /// Check every chain in CN_PROOF and report the first break of each; exits 1 on a break.
    Verify {
        #[command(flatten)]
        nats: NatsArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Writes cnctl's output (the [`out!`] and [`outln!`] macros).
pub fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write as _;
    // anstream drops colour codes when colour is off (see `style`).
    let mut out = anstream::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("cnctl: cannot write the output: {e}");
            std::process::exit(1)
        }
    }
}

/// Who runs cnctl, for the records that say who decided or asked: `$USER`, else `$LOGNAME`,
/// else the account name of the process's user in /etc/passwd (a shell in a container often has
/// neither variable).
pub fn login_name() -> Option<String> {
    let from_env = ["USER", "LOGNAME"].iter().find_map(|v| std::env::var(v).ok());
    from_env.filter(|n| !n.trim().is_empty()).or_else(|| {
        use std::os::unix::fs::MetadataExt as _;
        let uid = std::fs::metadata("/proc/self").ok()?.uid();
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        account_of(&passwd, uid)
    })
}

/// The account name of `uid` in a passwd file's text.
fn account_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// A failure to report and exit 1.
pub type Failure = Box<dyn std::error::Error + Send + Sync>;

pub fn main(cli: Cli) -> ExitCode {
    cli.color.apply();
    // The bench measures the fleet: its client runs on one thread, so the figures carry no
    // hand-offs between the client's own worker threads.
    let mut builder = match cli.command {
        Command::Bench { .. } => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let message = e.to_string();
            match not_our_server(&message) {
                Some(hint) => eprintln!("error: {message}\n  {hint}"),
                None => eprintln!("error: {message}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Publish { nats, how, event } => publish::run(&nats, &how, event).await,
        Command::Onboard { nats, args } => onboard::run(&nats, args).await,
        Command::Tail { nats, args } => tail::run(&nats, args).await,
        Command::Proof { command: ProofCommand::Verify { nats, json } } => {
            verify::run(&nats, json).await
        }
        Command::Status { nats, args } => status::run(&nats, args).await,
        Command::Keygen(args) => keys::keygen(&args),
        Command::Creds { command } => creds::run(command),
        Command::Bench { nats, args } => bench::run(&nats, args).await,
        Command::Approvals { nats, command } => approvals::run(&nats, command).await,
        Command::Contract { nats, command } => contract::run(&nats, command).await,
        Command::Rollout { nats, command } => rollout::run(&nats, command).await,
        Command::Policy { command: PolicyCommand::Check(args) } => policy::check(&args),
        Command::Policy { command: PolicyCommand::Show(args) } => learned::show(&args).await,
        Command::Policy { command: PolicyCommand::Evaluate(args) } => evaluate::run(&args).await,
        Command::Streams { command } => streams::run(command).await,
        Command::Partitions { command } => partitions::run(command).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "cnctl",
                &mut script,
            );
            out!("{}", String::from_utf8_lossy(&script));
            Ok(ExitCode::SUCCESS)
        }
        Command::Permissions => {
            out!("{}", creds::render_permissions());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Connects as cnctl, failing fast with the cause and what to do about it (a refused password,
/// nothing listening).
pub async fn connect(nats: &NatsArgs) -> Result<async_nats::Client, Failure> {
    Ok(nats.connect("cnctl", None, agent_runtime::connect::FirstConnect::FailFast).await?)
}

/// What a JetStream error means on a server the fleet never set up (another NATS server on the
/// port, or streams not created yet), said once at the end of the error.
fn not_our_server(message: &str) -> Option<&'static str> {
    // async-nats' texts for: a publish no stream takes, a stream missing (JetStream error
    // 10059), JetStream switched off on the server.
    const SIGNS: [&str; 5] = [
        "no stream found",
        "stream not found",
        "error code 10059",
        "requested JetStream resource does not exist",
        "jetstream not enabled",
    ];
    SIGNS.iter().any(|s| message.contains(s)).then_some(
        "this NATS server has no Chaos Negotiator streams: is it the fleet's server (check --nats-url / NATS_URL)? scripts/up creates them, as does `cnctl streams ensure` as the bootstrap user",
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_account_is_found_by_its_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nana:x:1000:1000::/home/ana:/bin/sh\n";
        assert_eq!(super::account_of(passwd, 1000).as_deref(), Some("ana"));
        assert_eq!(super::account_of(passwd, 0).as_deref(), Some("root"));
        assert_eq!(super::account_of(passwd, 7), None);
    }
}
