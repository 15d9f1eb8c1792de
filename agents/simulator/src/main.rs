use std::process::ExitCode;

use bus_schema::Timestamp;
use simulator::{Cli, Simulator, spec};

fn main() -> ExitCode {
    let cli: Cli = agent_runtime::config::parse_args();
    let scenario = match Simulator::load_scenario(&cli.sim) {
        Ok(s) => s,
        Err(e) => return agent_runtime::config::config_failure("simulator", &e),
    };
    // The clock starts once the agent is connected, so a slow start does not eat the lead.
    agent_runtime::run_agent(spec(), cli.runtime, move |agent| {
        let resume = Simulator::resume_point(agent.store())?;
        Ok(Simulator::start(&cli.sim, scenario.as_ref(), Timestamp::now(), resume)
            .with_store(agent.store().clone()))
    })
}
