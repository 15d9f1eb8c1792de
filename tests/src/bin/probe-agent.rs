//! The probe agent as a real process, for tests of signals, exit codes and flags.

use std::process::ExitCode;

use agent_runtime::RuntimeArgs;
use cn_tests::probe::{Probe, spec};

/// Turns metric samples into incidents (a test agent for the Chaos Negotiator runtime).
#[derive(Debug, clap::Parser)]
#[command(name = "probe-agent", version)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn main() -> ExitCode {
    let cli: Cli = agent_runtime::config::parse_args();
    agent_runtime::run_agent(spec(), cli.runtime, |_agent| Ok(Probe::default()))
}
