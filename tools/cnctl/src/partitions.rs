//! `cnctl partitions mappings|show`: the server's subject mappings that partition the services,
//! and which instance of each partitioned agent holds which partition.

use std::process::ExitCode;

use agent_runtime::config::NatsArgs;
use agent_runtime::lease::LeaseStore;
use async_nats::jetstream;
use bus_schema::fleet::fleet;
use bus_schema::partition::{PARTITIONS, format_set, of_service};

use crate::Failure;

#[derive(Debug, clap::Subcommand)]
pub enum PartitionsCommand {
    /// Print the nats-server `mappings` block that appends each service's partition token to
    /// every stored {env}.{service} subject (deploy/partitions.conf is this output).
    Mappings,
    /// Which instance of each partitioned agent holds which partition, and since when it
    /// wrote its lease. Read-only (the operator or auditor user).
    Show {
        /// Also say which partition, and so which instance, handles this service.
        #[arg(long)]
        service: Option<bus_schema::ServiceName>,
        #[command(flatten)]
        nats: NatsArgs,
    },
}

pub async fn run(command: PartitionsCommand) -> Result<ExitCode, Failure> {
    match command {
        PartitionsCommand::Mappings => {
            out!("{}", render_mappings());
            Ok(ExitCode::SUCCESS)
        }
        PartitionsCommand::Show { service, nats } => show(&nats, service.as_ref()).await,
    }
}

/// The `mappings` block for nats-server, as committed in `deploy/partitions.conf`.
pub fn render_mappings() -> String {
    bus_schema::subject::partition_mappings_conf()
}

async fn show(
    nats: &NatsArgs,
    service: Option<&bus_schema::ServiceName>,
) -> Result<ExitCode, Failure> {
    let js = jetstream::new(crate::connect(nats).await?);
    let now = bus_schema::Timestamp::now();
    if let Some(s) = service {
        outln!("{s} is in partition {} of {PARTITIONS}", of_service(s.as_str()));
    }
    for agent in fleet().into_iter().filter(|a| a.partitioned) {
        let leases = LeaseStore::new(js.clone(), agent.name.clone());
        let mut rows = Vec::new();
        for p in 0..PARTITIONS {
            let lease = leases.read_partition(p).await.map_err(|e| format!("{e}"))?;
            rows.push((p, lease));
        }
        if rows.iter().all(|(_, l)| l.is_none()) {
            outln!("{}: one instance for every service (not run --partitioned here)", agent.name);
            continue;
        }
        let mut holders: std::collections::BTreeMap<String, Vec<u16>> = Default::default();
        for (p, lease) in &rows {
            let name = match lease.as_ref().and_then(|(_, l)| l.holder.as_ref()) {
                Some(h) => format!("{} ({}, pid {})", h.instance, h.host, h.pid),
                None => "nobody".to_owned(),
            };
            holders.entry(name).or_default().push(*p);
        }
        let summary: Vec<String> =
            holders.iter().map(|(h, ps)| format!("{h}: {}", format_set(ps))).collect();
        outln!("{}: {}", agent.name, summary.join("; "));
        for (p, lease) in rows {
            let (holder, written) = match &lease {
                Some((_, l)) => (
                    l.holder.as_ref().map_or("-".to_owned(), |h| h.instance.clone()),
                    format!("{:.1}s ago", now.since(l.at).as_secs_f64()),
                ),
                None => ("-".to_owned(), "never".to_owned()),
            };
            let mark = match service {
                Some(s) if of_service(s.as_str()) == p => format!("  <- {s}"),
                _ => String::new(),
            };
            outln!("  p{p}  {holder:<12} written {written}{mark}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_mappings_are_the_rendered_ones() {
        let committed = include_str!("../../../deploy/partitions.conf");
        assert_eq!(
            committed,
            super::render_mappings(),
            "run: cnctl partitions mappings > deploy/partitions.conf"
        );
    }
}
