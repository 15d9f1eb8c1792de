use std::process::ExitCode;

use issue_detector::config::DetectorConfig;
use issue_detector::{Cli, Detector, spec};

fn main() -> ExitCode {
    let cli: Cli = agent_runtime::config::parse_args();
    let config = match DetectorConfig::load(&cli.detector) {
        Ok(config) => config,
        Err(e) => return agent_runtime::config::config_failure("issue-detector", &e),
    };
    agent_runtime::run_agent(spec(), cli.runtime, move |agent| {
        Ok(Detector::load(agent.store().clone(), config.clone())?)
    })
}
