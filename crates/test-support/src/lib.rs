//! Test support: a real `nats-server` per test, an agent run in-process, and a probe agent.
//!
//! No mocks of the bus: every integration test starts its own server on a random port with a
//! temporary JetStream store and a scenario config, and the server is killed when the
//! [`NatsServer`] is dropped. This crate links only the shared tier, so an agent's own tests
//! may use it; the fleet of real binaries, the learning evaluation and the chaos run are in
//! `tests/` (the only crate that links agents).

mod nats_server;
pub mod probe;

pub use nats_server::{NatsCluster, NatsServer, Setup};

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use agent_runtime::{Agent, AgentSpec, Handler, RunSummary, RuntimeArgs, RuntimeError};
use clap::Parser;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runtime flags for an agent under test: fast heartbeats, short grace, quick retries.
pub fn runtime_args(
    nats_url: &str,
    data_dir: &Path,
    instance: &str,
    extra: &[&str],
) -> anyhow::Result<RuntimeArgs> {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        runtime: RuntimeArgs,
    }
    let data_dir = data_dir.to_string_lossy().into_owned();
    let mut argv = vec![
        "test-agent",
        "--nats-url",
        nats_url,
        "--data-dir",
        &data_dir,
        "--instance",
        instance,
        "--heartbeat-interval",
        "200ms",
        "--shutdown-grace",
        "5s",
    ];
    argv.extend_from_slice(extra);
    Ok(Cli::try_parse_from(argv)?.runtime)
}

/// An agent running in this process, stopped through its token.
#[derive(Debug)]
pub struct RunningAgent {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<RunSummary, RuntimeError>>,
}

impl RunningAgent {
    /// Starts `spec` with `handler` (start-up errors are returned, not spawned).
    pub async fn start<H: Handler + 'static>(
        spec: AgentSpec,
        args: RuntimeArgs,
        handler: H,
    ) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let agent = Agent::start(spec, args, shutdown.clone()).await?;
        let task = tokio::spawn(agent.run(handler));
        Ok(Self { shutdown, task })
    }

    /// Fires the shutdown token (what SIGTERM does) and waits for the run to end.
    pub async fn stop(self) -> anyhow::Result<RunSummary> {
        self.shutdown.cancel();
        Ok(self.task.await??)
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            let detail = last_err.map(|e| format!(" (last error: {e:#})")).unwrap_or_default();
            anyhow::bail!("timed out after {timeout:?} waiting for {what}{detail}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
