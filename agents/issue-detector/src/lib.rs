//! The issue detector: deploy and metric events in, incidents out.
//!
//! [`rules`] decides; [`Detector`] is the bus shell around it. It keeps the open incidents in
//! memory and in its redb file, publishes every opened or resolved incident on
//! `cn.incidents.{env}.{service}` with an `incident_opened`/`incident_resolved` record, and
//! changes its state only after both are stored, so a redelivered event reproduces the same
//! (de-duplicated) outputs instead of skipping them.
//!
//! Defaults: error rate above 0.05, p95 above 1000 ms, CPU or memory above 90 %, a crash loop,
//! or a failed deploy opens an incident; the first healthy reading of that signal resolves it.

pub mod rules;

use agent_runtime::store::{Store, Table};
use agent_runtime::{AgentSpec, Context, HandleError, Handler, ProofDraft, RuntimeArgs, RuntimeError};
use bus_schema::proof::ProofKind;
use bus_schema::{AgentName, Inbound, Incident, IncidentStatus, subject};
use serde_json::json;

use rules::{IncidentKey, Open, Thresholds};

pub const NAME: AgentName = bus_schema::fleet::ISSUE_DETECTOR;

/// Turns deploy, metric and log events into incidents.
#[derive(Debug, clap::Parser)]
#[command(name = "issue-detector", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub thresholds: Thresholds,
}

pub fn spec() -> AgentSpec {
    // Handling a sample takes well under a millisecond unless it opens or resolves an
    // incident, so prefetching is safe and is what lets the detector keep up with ingest.
    AgentSpec { prefetch: 64, ..AgentSpec::new(bus_schema::fleet::issue_detector(), env!("CARGO_PKG_VERSION")) }
}

const OPEN: Table<Incident> = Table::new("incidents.open");

/// The detector's bus shell.
#[derive(Debug)]
pub struct Detector {
    store: Store,
    thresholds: Thresholds,
    open: Open,
}

impl Detector {
    /// Loads the open incidents from the state file.
    pub fn load(store: Store, thresholds: Thresholds) -> Result<Self, RuntimeError> {
        let open = store
            .scan(&OPEN)?
            .into_iter()
            .map(|(_, i)| (IncidentKey { env: i.env.clone(), service: i.service.clone(), kind: i.kind }, i))
            .collect();
        Ok(Self { store, thresholds, open })
    }

    async fn publish(&mut self, ctx: &mut Context<'_>, incidents: Vec<Incident>) -> Result<(), HandleError> {
        for incident in &incidents {
            let kind = match incident.status {
                IncidentStatus::Resolved => ProofKind::IncidentResolved,
                IncidentStatus::Updated => ProofKind::IncidentUpdated,
                IncidentStatus::Opened => ProofKind::IncidentOpened,
            };
            let draft = ProofDraft::new(kind).scope(&incident.env, &incident.service).incident(incident.incident_id).detail(json!({
                "kind": incident.kind,
                "severity": incident.severity,
                "summary": incident.summary,
                "evidence": incident.evidence.iter().map(|e| json!({"signal": e.signal, "value": e.value, "threshold": e.threshold})).collect::<Vec<_>>(),
                "time_to_recover_s": incident.time_to_recover_s,
            }));
            // The record first, so the proof log reads in causal order.
            ctx.prove(draft).await?;
            ctx.publish(&subject::INCIDENTS.subject(&incident.env, &incident.service), incident).await?;
        }
        // Outputs are stored; now the state may move on.
        for incident in incidents {
            let key = IncidentKey { env: incident.env.clone(), service: incident.service.clone(), kind: incident.kind };
            if incident.status == IncidentStatus::Resolved {
                self.store.remove(&OPEN, &key.storage_key())?;
                self.open.remove(&key);
            } else {
                self.store.put(&OPEN, &key.storage_key(), &incident)?;
                self.open.insert(key, incident);
            }
        }
        Ok(())
    }
}

impl Handler for Detector {
    async fn handle(&mut self, ctx: &mut Context<'_>, input: Inbound) -> Result<(), HandleError> {
        let input_id = ctx.meta().input_id.clone();
        let changes = match input {
            Inbound::Metric(m) => rules::on_metric(&self.open, &m, &self.thresholds, &input_id),
            Inbound::Deploy(d) => rules::on_deploy(&self.open, &d, &input_id).into_iter().collect(),
            _ => Vec::new(),
        };
        self.publish(ctx, changes).await
    }
}
