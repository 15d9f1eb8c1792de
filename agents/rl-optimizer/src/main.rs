use std::process::ExitCode;

use rl_optimizer::{Cli, Optimizer, spec};

fn main() -> ExitCode {
    let cli: Cli = agent_runtime::config::parse_args();
    agent_runtime::run_agent(spec(), cli.runtime, |_agent| Ok(Optimizer))
}
