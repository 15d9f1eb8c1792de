//! The shared runtime of every Chaos Negotiator agent.
//!
//! One connect helper ([`connect`]), one stream setup ([`streams`]), one consumer loop with
//! bounded redelivery and poison handling ([`agent`]), one publisher whose sends are
//! pipelined, an input acked once the acks of all it sent are in ([`publish`]), one proof writer ([`proof`]), one heartbeat and status endpoint
//! ([`status`]) and one way for tools to find the running agents ([`discovery`]), one
//! shutdown path ([`shutdown`]), one configuration ([`config`]) and a small typed redb layer
//! ([`store`]). An agent binary is a few lines:
//!
//! ```no_run
//! use agent_runtime::{AgentSpec, Context, HandleError, Handler, NoRequests, NoWork, RuntimeArgs};
//! use bus_schema::{subject, AgentName, MetricSample};
//!
//! #[derive(clap::Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     runtime: RuntimeArgs,
//! }
//!
//! bus_schema::inputs! {
//!     /// What the echo agent reads: one durable consumer, `echo-metrics`.
//!     enum Input, names InputName {
//!         Metric(MetricSample) = "metrics" from subject::METRIC_EVENTS,
//!     }
//! }
//!
//! struct Echo;
//! impl Handler for Echo {
//!     type Input = Input;
//!     type Request = NoRequests;
//!     type Work = NoWork;
//!
//!     async fn handle(&mut self, _ctx: &mut Context<'_>, input: Input) -> Result<(), HandleError> {
//!         match input {
//!             Input::Metric(m) => tracing::info!(service = %m.service, "a sample"),
//!         }
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let cli: Cli = agent_runtime::config::parse_args();
//!     let spec = AgentSpec {
//!         name: AgentName::from_static("echo"),
//!         version: env!("CARGO_PKG_VERSION"),
//!         description: "logs what it sees",
//!         prefetch: 1,
//!         partitioned: false,
//!     };
//!     agent_runtime::run_agent(spec, cli.runtime, |_agent| Ok(Echo))
//! }
//! ```

pub mod agent;
pub mod config;
pub mod connect;
pub mod consumer;
mod delivery;
pub mod discovery;
pub mod error;
pub mod handler;
pub mod lease;
pub mod outbox;
pub mod partitioned;
pub mod position;
pub mod proof;
pub mod publish;
pub mod rng;
pub mod shutdown;
pub mod spec;
pub mod status;
pub mod store;
pub mod streams;
pub mod telemetry;

use std::process::ExitCode;

pub use agent::{Agent, RunSummary};
pub use config::RuntimeArgs;
pub use error::RuntimeError;
pub use handler::{Context, Due, HandleError, Handler, InputMeta, NoRequests, NoWork, Reply};
pub use outbox::{DecidedBy, Outbox, Waiting};
pub use proof::{ProofDraft, ProofWriter};
pub use publish::{Published, Publisher, Trace};
pub use spec::AgentSpec;

/// Runs an agent binary to completion: logging, signals, start, run, exit code.
///
/// Exit codes: 0 after a clean stop, 64 for invalid configuration, 78 when a stream's settings
/// were weakened, 1 for any other failure.
///
/// With `--partitioned` the process is one instance of several: it runs the agent once per
/// partition of the services it holds a lease on ([`partitioned`]), calling `make_handler`
/// for each.
pub fn run_agent<H, F>(spec: AgentSpec, args: RuntimeArgs, make_handler: F) -> ExitCode
where
    H: Handler + 'static,
    F: Fn(&Agent) -> Result<H, Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let program = spec.name.to_string();
    if let Err(e) = telemetry::init(args.log_format, &args.log) {
        return config::config_failure(&program, &e);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(config::EXIT_FAILURE);
        }
    };
    runtime.block_on(async move {
        let shutdown = match shutdown::on_signals() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::from(config::EXIT_FAILURE);
            }
        };
        if args.partitioned {
            if !spec.partitioned {
                let e = format!(
                    "--partitioned: {} keeps state for every service together and runs as one instance",
                    spec.name
                );
                return config::config_failure(&program, &e);
            }
            let local = tokio::task::LocalSet::new();
            let make: std::rc::Rc<partitioned::MakeHandler<H>> = std::rc::Rc::new(make_handler);
            return match local.run_until(partitioned::run(spec, args, make, shutdown)).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(RuntimeError::Config(e)) => config::config_failure(&program, &e),
                Err(e) => {
                    tracing::error!(error = %e, "instance failed");
                    ExitCode::from(config::EXIT_FAILURE)
                }
            };
        }
        let agent = match Agent::start(spec, args, shutdown).await {
            Ok(a) => a,
            Err(RuntimeError::Config(e)) => return config::config_failure(&program, &e),
            Err(RuntimeError::ShuttingDown) => return ExitCode::SUCCESS,
            Err(e @ RuntimeError::StreamWeakened { .. }) => {
                tracing::error!(error = %e, "start-up refused");
                eprintln!("{program}: {e}");
                return ExitCode::from(config::EXIT_BUS_CONFIG);
            }
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                return ExitCode::from(config::EXIT_FAILURE);
            }
        };
        let handler = match make_handler(&agent) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                return ExitCode::from(config::EXIT_FAILURE);
            }
        };
        match agent.run(handler).await {
            Ok(_) | Err(RuntimeError::ShuttingDown) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "agent failed");
                ExitCode::from(config::EXIT_FAILURE)
            }
        }
    })
}
