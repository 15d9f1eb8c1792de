use std::process::ExitCode;

use rl_optimizer::{Cli, Optimizer, spec};

fn main() -> ExitCode {
    let cli: Cli = agent_runtime::config::parse_args();
    let settings = match cli.optimizer.settings() {
        Ok(s) => s,
        Err(e) => return agent_runtime::config::config_failure("rl-optimizer", &e),
    };
    let instance = cli.runtime.instance.clone();
    agent_runtime::run_agent(spec(), cli.runtime, move |agent| {
        Ok(Optimizer::load(agent.store().clone(), settings.clone(), &instance)?)
    })
}
