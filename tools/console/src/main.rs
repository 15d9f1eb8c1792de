//! `cn-console`: the fleet's metrics over HTTP. See the crate docs.

use std::net::SocketAddr;
use std::process::ExitCode;

use agent_runtime::config::NatsArgs;
use agent_runtime::telemetry::{self, LogFormat};
use clap::Parser;

/// The operator's console for Chaos Negotiator: Prometheus metrics of the fleet at /metrics,
/// derived from the proof log (read from its start, then followed).
///
/// Reads as a NATS user that may read CN_PROOF (the `auditor` user of scripts/up).
/// Example: NATS_USER=auditor NATS_PASSWORD_FILE=data/creds/auditor.password cn-console --listen 127.0.0.1:9464
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
    match cn_console::run(&cli.nats, cli.listen).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
