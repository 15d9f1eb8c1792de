use std::process::ExitCode;

use deploy_agent::{Cli, DeployAgent, spec};

fn main() -> ExitCode {
    let cli: Cli = agent_runtime::config::parse_args();
    agent_runtime::run_agent(spec(), cli.runtime, move |agent| {
        Ok(DeployAgent::load(agent.store().clone(), cli.allow_prod_onboarding, cli.canary_silence)?)
    })
}
