use std::process::ExitCode;

use issue_detector::{Cli, Detector, spec};

fn main() -> ExitCode {
    let cli: Cli = agent_runtime::config::parse_args();
    if let Err(e) = cli.thresholds.validate() {
        return agent_runtime::config::config_failure("issue-detector", &e);
    }
    agent_runtime::run_agent(spec(), cli.runtime, |agent| Ok(Detector::load(agent.store().clone(), cli.thresholds)?))
}
