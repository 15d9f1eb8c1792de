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
    /// Create CN_EVENTS, CN_WORK and CN_PROOF, or restore their contract settings. Run as the
    /// bootstrap user: NATS_USER=bootstrap NATS_PASSWORD_FILE=data/creds/bootstrap.password
    Ensure {
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
        StreamsCommand::Ensure { nats } => {
            let js = jetstream::new(crate::connect(&nats).await?);
            streams::ensure_streams(&js).await.map_err(|e| {
                let hint = if e.to_string().contains("timed out") || e.to_string().to_ascii_lowercase().contains("permission") {
                    " (only the bootstrap user may create or update streams: set --nats-user bootstrap)"
                } else {
                    ""
                };
                format!("{e}{hint}")
            })?;
            outln!("streams ready: {}", Stream::ALL.map(|s| s.name()).join(", "));
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
                            outln!("{}: as the contract says", s.name());
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
