//! The issue detector: deploy, metric and log events and execution results in; incidents,
//! outcomes and SLO status out.
//!
//! - [`window`]: event-time windows per service, bounded memory.
//! - [`detect`], [`slo`], [`logs`]: the detectors, each giving a verdict with evidence.
//! - [`lifecycle`]: one open incident per env/service/kind, updates, resolution, flap damping,
//!   causes explaining symptoms.
//! - [`outcome`]: did an executed action help?
//! - [`engine`]: one service's reaction to one event (pure).
//! - [`Detector`]: the bus shell. For each event it works on a copy of the service's state,
//!   publishes what changed (proof record first), and only then keeps the copy, so a retried
//!   event reproduces the same de-duplicated outputs. A state that produced a decision is
//!   written to redb before the input is acked; windows alone are saved every
//!   [`FLUSH_EVERY`] and on shutdown, so a crash can lose a second of window samples but never
//!   an incident or a pending verdict.

pub mod config;
pub mod detect;
pub mod engine;
pub mod lifecycle;
pub mod logs;
pub mod outcome;
pub mod service;
pub mod slo;
pub mod window;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use agent_runtime::store::{Store, Table};
use agent_runtime::{AgentSpec, Context, HandleError, Handler, ProofDraft, RuntimeArgs, RuntimeError};
use bus_schema::proof::ProofKind;
use bus_schema::{AgentName, Env, Inbound, IncidentStatus, RejectReason, ServiceName, Timestamp, subject};
use serde_json::json;

use config::DetectorConfig;
use engine::Output;
use service::ServiceState;

pub const NAME: AgentName = bus_schema::fleet::ISSUE_DETECTOR;

/// How often window-only changes are saved.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Turns deploy, metric and log events into incidents, judges whether actions helped, and
/// publishes each service's SLO burn rates and remaining error budget.
#[derive(Debug, clap::Parser)]
#[command(name = "issue-detector", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub detector: config::Flags,
}

pub fn spec() -> AgentSpec {
    // Handling a sample takes well under a millisecond unless it opens or resolves an
    // incident, so prefetching is safe and is what lets the detector keep up with ingest.
    AgentSpec { prefetch: 64, ..AgentSpec::new(bus_schema::fleet::issue_detector(), env!("CARGO_PKG_VERSION")) }
}

const SERVICES: Table<ServiceState> = Table::new("services");

/// The detector's bus shell.
#[derive(Debug)]
pub struct Detector {
    store: Store,
    config: DetectorConfig,
    services: HashMap<String, ServiceState>,
    dirty: BTreeSet<String>,
    last_flush: Instant,
}

impl Detector {
    /// Loads every service's state from the state file.
    pub fn load(store: Store, config: DetectorConfig) -> Result<Self, RuntimeError> {
        let services = store.scan(&SERVICES)?.into_iter().collect();
        Ok(Self { store, config, services, dirty: BTreeSet::new(), last_flush: Instant::now() })
    }

    fn state(&self, env: &Env, service: &ServiceName) -> ServiceState {
        self.services.get(&service::key(env, service)).cloned().unwrap_or_else(|| ServiceState::new(env.clone(), service.clone()))
    }

    async fn emit(ctx: &mut Context<'_>, out: &Output) -> Result<(), HandleError> {
        for incident in &out.incidents {
            let kind = match incident.status {
                IncidentStatus::Resolved => ProofKind::IncidentResolved,
                IncidentStatus::Updated => ProofKind::IncidentUpdated,
                IncidentStatus::Opened => ProofKind::IncidentOpened,
            };
            let draft = ProofDraft::new(kind).scope(&incident.env, &incident.service).incident(incident.incident_id).detail(json!({
                "kind": incident.kind,
                "severity": incident.severity,
                "summary": incident.summary,
                "evidence": incident.evidence,
                "signal_conflict": incident.signal_conflict,
                "suspect_version": incident.suspect_version,
                "sample_count": incident.sample_count,
                "reopen_count": incident.reopen_count,
                "time_to_recover_s": incident.time_to_recover_s,
            }));
            // The record first, so the proof log reads in causal order.
            ctx.prove(draft).await?;
            ctx.publish(&subject::INCIDENTS.subject(&incident.env, &incident.service), incident).await?;
        }
        for (outcome, correlation) in &out.outcomes {
            let mut draft = ProofDraft::new(ProofKind::OutcomeRecorded)
                .scope(&outcome.env, &outcome.service)
                .action(&outcome.action)
                .incident(outcome.incident_id)
                .correlation(correlation.clone())
                .detail(json!({"recovered": outcome.recovered, "time_to_recover_s": outcome.time_to_recover_s, "detail": outcome.detail}));
            if let Some(p) = outcome.proposal_id {
                draft = draft.proposal(p);
            }
            ctx.prove(draft).await?;
            ctx.publish_in_chain(&subject::OUTCOMES.subject(&outcome.env, &outcome.service), outcome, correlation.clone()).await?;
        }
        // Burn rates and budget are telemetry, not decisions: published, not proved.
        if let Some(slo) = &out.slo {
            ctx.publish(&subject::SLO.subject(&slo.env, &slo.service), slo).await?;
        }
        Ok(())
    }

    /// Keeps the new state; saves it now if it produced a decision, else soon.
    fn keep(&mut self, state: ServiceState, decided: bool) -> Result<(), RuntimeError> {
        let key = state.key();
        if decided {
            self.store.put(&SERVICES, &key, &state)?;
            self.dirty.remove(&key);
        } else {
            self.dirty.insert(key.clone());
        }
        self.services.insert(key, state);
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Saves every state changed since the last save, in one transaction.
    pub fn flush(&mut self) -> Result<(), RuntimeError> {
        let dirty = std::mem::take(&mut self.dirty);
        let services = &self.services;
        self.store.write(|txn| {
            for key in &dirty {
                if let Some(state) = services.get(key) {
                    txn.put(&SERVICES, key, state)?;
                }
            }
            Ok(())
        })?;
        self.last_flush = Instant::now();
        Ok(())
    }
}

fn out_of_order(e: service::NotAdmitted) -> HandleError {
    HandleError::Reject { reason: RejectReason::OutOfOrder, message: format!("timestamp is {e}; not judged") }
}

impl Handler for Detector {
    async fn handle(&mut self, ctx: &mut Context<'_>, input: Inbound) -> Result<(), HandleError> {
        let input_id = ctx.meta().input_id.clone();
        // Deploys and execution results are rare and start watches that must survive a crash:
        // they are saved before the ack like decisions are.
        let (state, out, save_now) = match input {
            Inbound::Metric(m) => {
                let mut state = self.state(&m.env, &m.service);
                let out = state.on_metric(&m, &self.config, &input_id, Timestamp::now()).map_err(out_of_order)?;
                (state, out, false)
            }
            Inbound::Log(l) => {
                let mut state = self.state(&l.env, &l.service);
                let out = state.on_log(&l, &self.config, &input_id, Timestamp::now()).map_err(out_of_order)?;
                (state, out, false)
            }
            Inbound::Deploy(d) => {
                let mut state = self.state(&d.env, &d.service);
                let out = state.on_deploy(&d, &self.config, &input_id);
                (state, out, true)
            }
            Inbound::Executed(r) => {
                let mut state = self.state(&r.env, &r.service);
                let correlation = ctx.meta().correlation_id.clone();
                let out = state.on_executed(&r, &self.config, &correlation);
                (state, out, true)
            }
            _ => return Ok(()),
        };
        Self::emit(ctx, &out).await?;
        self.keep(state, save_now || out.is_decision())?;
        Ok(())
    }

    fn on_stop(&mut self) -> Result<(), RuntimeError> {
        self.flush()
    }
}
