//! `cnctl status`: which agents are alive.
//!
//! Every agent registers as a NATS micro service named after itself. Status finds them as the
//! runtime's [`agent_runtime::discovery`] does (`$SRV.PING`, then each instance's status endpoint
//! `cn.status.{agent}.{instance}` for its counters), and lists fleet agents that did not
//! answer. An agent whose consumer is gone (deleted under it, until it is recreated) shows as
//! DEGRADED. It exits 1 when a fleet agent is missing (the simulator is optional), so scripts
//! can wait on it.

use std::process::ExitCode;
use std::time::Duration;

use agent_runtime::config::{NatsArgs, parse_duration};
// The bench finds the agents the same way.
pub use agent_runtime::discovery::discover;
use bus_schema::Timestamp;
use bus_schema::fleet::fleet;
use serde_json::{Value, json};

use crate::Failure;
use crate::style::{Tone, paint};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for agents to answer.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub wait: Duration,
}

pub async fn run(nats: &NatsArgs, args: StatusArgs) -> Result<ExitCode, Failure> {
    let client = crate::connect(nats).await?;
    let seen = discover(&client, args.wait).await?;
    // The simulator runs only in demos; a fleet fed by real pipelines has none.
    let missing: Vec<String> = fleet()
        .iter()
        .filter(|a| a.name != bus_schema::fleet::SIMULATOR)
        .map(|a| a.name.to_string())
        .filter(|name| !seen.iter().any(|s| &s.agent == name))
        .collect();
    let now = Timestamp::now();
    if args.json {
        let agents: Vec<Value> = seen
            .iter()
            .map(|s| json!({"agent": s.agent, "instance": s.instance, "status": s.status}))
            .collect();
        outln!("{}", json!({"agents": agents, "missing": missing}));
    } else {
        outln!(
            "{:<18} {:<9} {:<8} {:>9} {:>10} {:>9} {:>10}  state",
            "AGENT",
            "INSTANCE",
            "VERSION",
            "UP",
            "PROCESSED",
            "REJECTED",
            "PROOF SEQ"
        );
        for s in &seen {
            match &s.status {
                Some(st) => {
                    let hb = &st.heartbeat;
                    let up = now.since(hb.started_at).as_secs();
                    let state = if st.stopping {
                        paint("stopping", Tone::Waiting)
                    } else if !st.degraded.is_empty() {
                        paint(&format!("DEGRADED: {}", st.degraded.join("; ")), Tone::Waiting)
                    } else {
                        paint("running", Tone::Good)
                    };
                    outln!(
                        "{:<18} {:<9} {:<8} {:>8}s {:>10} {:>9} {:>10}  {state}",
                        s.agent,
                        s.instance,
                        hb.version,
                        up,
                        hb.processed,
                        hb.rejected,
                        hb.proof_seq
                    );
                }
                None => outln!(
                    "{:<18} {:<9} (answered the ping, but not its status endpoint)",
                    s.agent,
                    s.instance
                ),
            }
        }
        for m in &missing {
            outln!("{m:<18} -         {}", paint("MISSING: no instance answered", Tone::Bad));
        }
    }
    if seen.is_empty() {
        let user = nats.user.as_deref().unwrap_or("(no user)");
        eprintln!(
            "no agent answered. Either the fleet is down, or NATS user {user} may not ask: status needs \
             publish rights on $SRV.PING and cn.status.>, which the operator and auditor users have"
        );
    }
    Ok(if missing.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
