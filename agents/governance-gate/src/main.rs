use std::process::ExitCode;

use governance_gate::{Cli, Governance, spec};

fn main() -> ExitCode {
    let cli: Cli = agent_runtime::config::parse_args();
    let signer = match cli.signer() {
        Ok(s) => s,
        Err(e) => return agent_runtime::config::config_failure("governance-gate", &e),
    };
    let policy = match cli.policy() {
        Ok(p) => p,
        Err(e) => return agent_runtime::config::config_failure("governance-gate", &e),
    };
    agent_runtime::run_agent(spec(), cli.runtime, move |agent| {
        for warning in policy.warnings() {
            tracing::warn!("policy: {warning}");
        }
        Ok(Governance::load(
            agent.store().clone(),
            policy.clone(),
            signer.clone(),
            cli.approval_ttl,
            cli.human_approval_ttl,
        )?)
    })
}
