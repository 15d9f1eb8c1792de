use std::process::ExitCode;

use executor::{Cli, Executor, spec};

fn main() -> ExitCode {
    let cli: Cli = agent_runtime::config::parse_args();
    let trusted = match cli.trusted_keys() {
        Ok(k) => k,
        Err(e) => return agent_runtime::config::config_failure("executor", &e),
    };
    let backend = match cli.exec_backend() {
        Ok(b) => b,
        Err(e) => return agent_runtime::config::config_failure("executor", &e),
    };
    agent_runtime::run_agent(spec(), cli.runtime, move |agent| {
        Ok(Executor::new(agent.store().clone(), trusted.clone(), backend.clone()))
    })
}
