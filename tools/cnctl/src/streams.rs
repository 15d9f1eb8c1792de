//! `cnctl streams ensure|check`: the bootstrap step that creates the JetStream streams, and a
//! look at whether their settings are still the contract's.
//!
//! Agents never create or change a stream: they check the settings at start and refuse to run
//! on a weakened one. `ensure` must run as the `bootstrap` user, the only one allowed to create
//! or update streams; scripts/up and docker compose run it before the agents start.

use std::process::ExitCode;

use agent_runtime::config::NatsArgs;
use agent_runtime::streams;
use async_nats::jetstream;
use bus_schema::subject::Stream;

use crate::Failure;

#[derive(Debug, clap::Subcommand)]
pub enum StreamsCommand {
    /// Create CN_EVENTS, CN_WORK, CN_PROOF and CN_LEASES, or restore their contract settings. Run as the
    /// bootstrap user: NATS_USER=bootstrap NATS_PASSWORD_FILE=data/creds/bootstrap.password
    Ensure {
        /// Copies of each stream on a NATS cluster (1 to 5; at most the number of servers).
        /// Default: 1 for a new stream; an existing one keeps its count.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
        replicas: Option<u8>,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Compare each stream's settings with the contract's; exits 1 naming each weakened setting.
    Check {
        #[command(flatten)]
        nats: NatsArgs,
    },
}

pub async fn run(command: StreamsCommand) -> Result<ExitCode, Failure> {
    match command {
        StreamsCommand::Ensure { replicas, nats } => {
            let js = jetstream::new(crate::connect(&nats).await?);
            let replicas = replicas.map(usize::from);
            streams::ensure_streams_replicated(&js, replicas).await.map_err(|e| {
                let hint = if e.to_string().contains("timed out") || e.to_string().to_ascii_lowercase().contains("permission") {
                    " (only the bootstrap user may create or update streams: set --nats-user bootstrap)"
                } else {
                    ""
                };
                format!("{e}{hint}")
            })?;
            let copies = replicas.map(|n| format!(" ({n} replicas each)")).unwrap_or_default();
            outln!("streams ready: {}{copies}", Stream::ALL.map(|s| s.name()).join(", "));
            Ok(ExitCode::SUCCESS)
        }
        StreamsCommand::Check { nats } => {
            let js = jetstream::new(crate::connect(&nats).await?);
            let mut ok = true;
            for s in Stream::ALL {
                let wanted = streams::config(s);
                match js.get_stream(s.name()).await {
                    Ok(mut stream) => {
                        let current = stream
                            .info()
                            .await
                            .map_err(|e| format!("{}: {e}", s.name()))?
                            .config
                            .clone();
                        let weakened = streams::weakened(&current, &wanted);
                        if weakened.is_empty() {
                            let n = current.num_replicas.max(1);
                            outln!(
                                "{}: as the contract says ({n} replica{})",
                                s.name(),
                                if n == 1 { "" } else { "s" }
                            );
                        } else {
                            ok = false;
                            outln!("{}: WEAKENED: {}", s.name(), weakened.join("; "));
                        }
                    }
                    Err(e) => {
                        ok = false;
                        outln!("{}: cannot read: {e}", s.name());
                    }
                }
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
