use std::process::ExitCode;

use risk_negotiator::{Cli, Negotiator, spec};

fn main() -> ExitCode {
    let cli: Cli = agent_runtime::config::parse_args();
    agent_runtime::run_agent(spec(), cli.runtime, move |agent| {
        Ok(Negotiator::load(agent.store().clone())?)
    })
}
