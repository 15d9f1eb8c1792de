//! `chaos`: a chaos run of the real fleet — load, agent kills, nats-server restarts and hostile
//! payloads at once — and a report of what was lost, broken or let through (see
//! `cn_tests::chaos`). Run it with `scripts/chaos`.

use std::process::ExitCode;
use std::time::Duration;

use agent_runtime::config::parse_duration;
use clap::Parser;
use cn_tests::chaos::{Plan, run};

/// A chaos run of the real fleet, and an honest count of what survived it.
///
/// Runs the whole fleet under load while killing agents (kill -9) and nats-server, sends
/// hostile payloads, then checks that no acked event was lost, nothing was executed twice or
/// without approval, no prod rollback ran without a human, no cooldown was broken, every proof
/// chain verifies, no agent crashed and every hostile payload was rejected with a reason.
/// Exits 0 if all of that holds, 1 if not (naming the failing figures), 2 if the run could not
/// be carried out.
#[derive(Debug, Parser)]
#[command(name = "chaos", version, about, long_about)]
struct Cli {
    /// How long the load and the faults go on (e.g. 10m, 90s).
    #[arg(long, env = "CN_CHAOS_DURATION", default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Kill -9 an agent this often (every agent but the simulator, in shuffled rounds); it is
    /// started again 0.5–2 s later.
    #[arg(long, env = "CN_CHAOS_KILL_EVERY", default_value = "10s", value_parser = parse_duration)]
    kill_every: Duration,
    /// Kill -9 and restart nats-server this many times, evenly spread over the run.
    #[arg(long, env = "CN_CHAOS_NATS_RESTARTS", default_value_t = 3)]
    nats_restarts: u32,
    /// Run on a cluster of this many nats-servers (routes on loopback, every stream with as
    /// many replicas); the restarts then kill one node at a time, in turn.
    #[arg(long, env = "CN_CHAOS_CLUSTER", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    cluster: u64,
    /// Services sending metrics (two in three in stage, where crash loops happen; the rest in prod,
    /// where deploys fail).
    #[arg(long, env = "CN_CHAOS_SERVICES", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=500))]
    services: u64,
    /// Seed for every random choice (victims, timings, crash loops, hostile bytes); default: the clock.
    #[arg(long, env = "CN_CHAOS_SEED")]
    seed: Option<u64>,
    /// Each service sends a metric sample this often.
    #[arg(long, env = "CN_CHAOS_SAMPLE_EVERY", default_value = "2s", value_parser = parse_duration)]
    sample_every: Duration,
    /// A stage service starts crash-looping this often.
    #[arg(long, env = "CN_CHAOS_CRASH_EVERY", default_value = "6s", value_parser = parse_duration)]
    crash_every: Duration,
    /// A prod deploy fails this often.
    #[arg(long, env = "CN_CHAOS_FAILED_DEPLOY_EVERY", default_value = "30s", value_parser = parse_duration)]
    failed_deploy_every: Duration,
    /// How long the fleet may take, once the load stops, to drain every consumer.
    #[arg(long, env = "CN_CHAOS_SETTLE_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    settle_timeout: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(chaos(cli)),
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::from(2)
        }
    }
}

async fn chaos(cli: Cli) -> ExitCode {
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let plan = Plan {
        duration: cli.duration,
        kill_every: cli.kill_every,
        nats_restarts: cli.nats_restarts,
        cluster: usize::try_from(cli.cluster).unwrap_or(1),
        services: usize::try_from(cli.services).unwrap_or(30),
        seed,
        sample_every: cli.sample_every,
        crash_every: cli.crash_every,
        failed_deploy_every: cli.failed_deploy_every,
        settle_timeout: cli.settle_timeout,
    };
    let progress = |line: &str| eprintln!("{line}");
    // Ctrl-C drops the run, and with it the fleet: every process it started is killed.
    let result = tokio::select! {
        r = run(&plan, &progress) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("chaos: interrupted; the fleet was stopped");
            return ExitCode::from(130);
        }
    };
    match result {
        Ok(report) => {
            if cli.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.table());
            }
            if report.failures().is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
