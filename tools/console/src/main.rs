//! `cn-console`: the operator's page, metrics and notifications. See the crate docs.

use std::net::SocketAddr;
use std::process::ExitCode;

use agent_runtime::config::NatsArgs;
use agent_runtime::telemetry::{self, LogFormat};
use clap::Parser;
use cn_console::notify::{Format, Settings, Target};

/// The operator's console for Chaos Negotiator: a live page of the fleet (open incidents with
/// their evidence and what was tried, approvals waiting for a human, rollouts, SLO burn, the
/// proof log), Prometheus metrics at /metrics, and webhooks when a human is needed. All of it
/// is derived from the proof log (read from its start, then followed).
///
/// Reads as a NATS user that may read CN_PROOF (the `auditor` user: read-only page, metrics);
/// the `console` user of scripts/up may also read the SLO statuses, decide (with
/// --allow-decisions) and write the notifications' proof chain (cn.proof.console.{instance}).
/// Example: NATS_USER=console NATS_PASSWORD_FILE=data/creds/console.password CN_CONSOLE_SLACK_WEBHOOKS=https://hooks.slack.com/services/… cn-console --allow-decisions --decision-token-file data/creds/console.token
/// (webhook URLs carry secrets: pass them in the environment, not on the command line)
///
/// With OTEL_EXPORTER_OTLP_ENDPOINT set (http://…), also sends a span per traced proof record
/// over OTLP/HTTP (docs/operations.md, Tracing).
#[derive(Debug, Parser)]
#[command(name = "cn-console", version)]
struct Cli {
    /// Address to serve HTTP on (port 0: any free port; the address is printed).
    #[arg(long, env = "CN_CONSOLE_LISTEN", default_value = "127.0.0.1:9464")]
    listen: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, env = "CN_LOG_FORMAT", default_value = "plain")]
    log_format: LogFormat,
    /// Log filter, e.g. info or info,async_nats=warn.
    #[arg(long, env = "CN_LOG", default_value = "info")]
    log: String,
    /// Let people approve and deny pending actions from the page, with their name, a reason
    /// and the decision token, through governance like `cnctl approvals`. The NATS user must be
    /// allowed to publish decisions (scripts/up runs the console as `console` with this on).
    #[arg(long, env = "CN_CONSOLE_ALLOW_DECISIONS", requires = "decision_token_file")]
    allow_decisions: bool,
    /// The file of the secret people give on the page to decide (`cnctl creds init` writes
    /// console.token next to the passwords). Reaching the port is not enough to decide.
    #[arg(long, env = "CN_CONSOLE_DECISION_TOKEN_FILE", value_name = "FILE")]
    decision_token_file: Option<std::path::PathBuf>,
    /// Post pending approvals and escalations to this URL as CloudEvents (JSON); repeat the
    /// flag, or separate URLs with commas in the variable. URLs are secrets: records and logs
    /// name a target by its host only.
    #[arg(
        long = "webhook",
        value_name = "URL",
        env = "CN_CONSOLE_WEBHOOKS",
        value_delimiter = ','
    )]
    webhooks: Vec<String>,
    /// The same as Slack-compatible text (`{"text": …}`: Slack, Mattermost, Google Chat).
    #[arg(
        long = "slack-webhook",
        value_name = "URL",
        env = "CN_CONSOLE_SLACK_WEBHOOKS",
        value_delimiter = ','
    )]
    slack_webhooks: Vec<String>,
    /// At most this many posts a minute to each webhook.
    #[arg(long, env = "CN_CONSOLE_WEBHOOK_RATE", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    webhook_per_minute: u32,
    /// Tries per notification: connection errors, timeouts, 429 and 5xx are retried after
    /// 1 s, 2 s, 4 s, …
    #[arg(long, env = "CN_CONSOLE_WEBHOOK_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    webhook_attempts: u32,
    /// The page's address as people reach it (e.g. through your authenticating proxy): linked
    /// from notifications, and a name decisions may be sent to besides the loopback ones.
    #[arg(long, env = "CN_CONSOLE_PUBLIC_URL")]
    public_url: Option<String>,
    /// This console's instance id: its proof chain is cn.proof.console.{instance}.
    #[arg(long, env = "CN_CONSOLE_INSTANCE", default_value = "0")]
    instance: String,
    /// Where the console keeps its proof chain's state (default: a temporary directory; the
    /// chain's head is read back from CN_PROOF either way).
    #[arg(long, env = "CN_CONSOLE_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    nats: NatsArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(cli.log_format, &cli.log) {
        eprintln!("error: {e}");
        return ExitCode::from(64);
    }
    let mut targets = Vec::new();
    let given = cli.webhooks.iter().map(|u| (u, Format::CloudEvents));
    for (url, format) in given.chain(cli.slack_webhooks.iter().map(|u| (u, Format::Slack))) {
        match Target::new(url.trim(), format) {
            Ok(t) => targets.push(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(64);
            }
        }
    }
    let notify = Settings {
        targets,
        per_minute: cli.webhook_per_minute,
        attempts: cli.webhook_attempts,
        backoff: std::time::Duration::from_secs(1),
        page_url: cli.public_url.clone(),
        instance: cli.instance,
    };
    let decision_token = match &cli.decision_token_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| cn_console::web::Token::new(&t))
        {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: the decision token in {}: {e}", path.display());
                return ExitCode::from(64);
            }
        },
    };
    let options = cn_console::Options {
        allow_decisions: cli.allow_decisions,
        decision_token,
        public_url: cli.public_url,
        notify: Some(notify),
        state_dir: cli.state_dir,
    };
    match cn_console::run(&cli.nats, cli.listen, options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            // A configuration the console cannot use is a usage error, as for bad flags.
            match e {
                cn_console::ConsoleError::Otlp(_) => ExitCode::from(64),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
