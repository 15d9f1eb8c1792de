//! The issue detector: deploy, metric and log events and execution results in; incidents,
//! outcomes and SLO status out.
//!
//! - [`window`]: event-time windows per service, bounded memory.
//! - [`detect`], [`slo`], [`logs`]: the detectors, each giving a verdict with evidence.
//! - [`lifecycle`]: one open incident per env/service/kind, updates, resolution, flap damping,
//!   causes explaining symptoms.
//! - [`outcome`]: did an executed action help?
//! - [`engine`]: one service's reaction to one event (pure).
//! - [`Detector`]: the bus shell. Each service's state remembers the highest stream sequence
//!   it applied, so a redelivered input is never counted twice, and keeps what it decided in an
//!   outbox until it is stored on the bus (proof record first), so a failed publish is retried
//!   before anything newer for that service goes out. States live in memory and are written
//!   to the state file at each of the runtime's snapshots (about once a second) and at stop; a
//!   crash replays the inputs after the last snapshot into the saved states, which republish
//!   the same outputs under the same ids (JetStream drops them) and record nothing twice.

pub mod config;
mod config_error;
pub mod detect;
pub mod engine;
pub mod lifecycle;
pub mod logs;
pub mod outcome;
pub mod records;
pub mod service;
pub mod slo;
pub mod window;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use agent_runtime::store::{Store, Table};
use agent_runtime::{
    AgentSpec, Context, DecidedBy, HandleError, Handler, NoRequests, NoWork, ProofDraft,
    RuntimeArgs, RuntimeError,
};
use bus_schema::codec::Payload;
use bus_schema::fleet::DetectorInput;
use bus_schema::inputs::PipelineEvent;
use bus_schema::proof::ProofKind;
use bus_schema::{
    AgentName, Env, IncidentStatus, RejectReason, ServiceName, Subject, Timestamp, subject,
};
use serde_json::json;
use tracing::warn;

use config::DetectorConfig;
use engine::Pending;
use service::ServiceState;

pub const NAME: AgentName = bus_schema::fleet::ISSUE_DETECTOR;

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
    AgentSpec {
        prefetch: 64,
        ..AgentSpec::new(bus_schema::fleet::issue_detector(), env!("CARGO_PKG_VERSION"))
    }
}

const SERVICES: Table<ServiceState> = Table::new("services");

/// The detector's bus shell.
#[derive(Debug)]
pub struct Detector {
    store: Store,
    config: DetectorConfig,
    services: HashMap<String, ServiceState>,
    dirty: BTreeSet<String>,
}

impl Detector {
    /// Loads every service's state from the state file.
    pub fn load(store: Store, config: DetectorConfig) -> Result<Self, RuntimeError> {
        let services = store.scan(&SERVICES)?.into_iter().collect();
        Ok(Self { store, config, services, dirty: BTreeSet::new() })
    }

    /// Publishes one output of the outbox under the identity of the input that decided it
    /// (`decided_by`), whichever input publishes it: a retry under a later input repeats the
    /// same ids, which JetStream and the proof writer drop if the first attempt was stored.
    /// Outputs queued before that was kept go out under the current input.
    async fn emit(
        ctx: &mut Context<'_>,
        (env, service): (&Env, &ServiceName),
        item: &Pending,
        decided_by: Option<&DecidedBy>,
    ) -> Result<(), HandleError> {
        let key = decided_by.map(DecidedBy::key);
        let key = key.as_deref();
        let chain = decided_by
            .map_or_else(|| ctx.meta().correlation_id.clone(), |d| d.correlation_id.clone());
        match item {
            Pending::Incident(incident) => {
                let kind = match incident.status {
                    IncidentStatus::Resolved => ProofKind::IncidentResolved,
                    IncidentStatus::Updated => ProofKind::IncidentUpdated,
                    IncidentStatus::Opened => ProofKind::IncidentOpened,
                };
                let draft = ProofDraft::new(kind)
                    .scope(&incident.env, &incident.service)
                    .incident(incident.incident_id)
                    .detail(json!({
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
                prove(ctx, draft.correlation(chain.clone()), key).await?;
                let subject = subject::INCIDENTS.subject(&incident.env, &incident.service);
                publish(ctx, &subject, incident, chain, key).await?;
            }
            Pending::Outcome(outcome, correlation) => {
                let mut draft = ProofDraft::new(ProofKind::OutcomeRecorded)
                    .scope(&outcome.env, &outcome.service)
                    .action(&outcome.action)
                    .incident(outcome.incident_id)
                    .correlation(correlation.clone())
                    .detail(json!({
                        "recovered": outcome.recovered, "time_to_recover_s": outcome.time_to_recover_s, "detail": outcome.detail,
                        "revised": outcome.revised, "superseded_by": outcome.superseded_by,
                    }));
                if let Some(p) = outcome.proposal_id {
                    draft = draft.proposal(p);
                }
                prove(ctx, draft, key).await?;
                let subject = subject::OUTCOMES.subject(&outcome.env, &outcome.service);
                publish(ctx, &subject, outcome, correlation.clone(), key).await?;
            }
            Pending::Rejected(samples) => {
                // The batch's input, whichever input publishes this (a leftover goes out later).
                let input =
                    decided_by.map_or_else(|| ctx.meta().input_id.clone(), |d| d.input_id.clone());
                let shown: Vec<_> = samples
                    .iter()
                    .take(REJECTED_SHOWN)
                    .map(|(sample, error)| json!({"sample": sample, "error": error}))
                    .collect();
                let error = format!(
                    "{} sample(s) of a metric batch not judged (the rest were): {}",
                    samples.len(),
                    samples.first().map_or("", |(_, e)| e.as_str())
                );
                let draft = ProofDraft::new(ProofKind::EventRejected)
                    .scope(env, service)
                    .reason(RejectReason::OutOfOrder.as_str())
                    .correlation(chain)
                    .detail(json!({
                        "error": error,
                        "input_id": input,
                        "rejected": samples.len(),
                        "samples": shown,
                    }));
                prove(ctx, draft, key).await?;
            }
            // Burn rates and budget are telemetry, not decisions: published, not proved.
            Pending::Slo(slo) => {
                publish(ctx, &subject::SLO.subject(&slo.env, &slo.service), slo, chain, key)
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes every state changed since the last time, in one transaction, and forgets
    /// services that have been silent for longer than their SLO period with nothing open.
    pub fn flush(&mut self) -> Result<(), RuntimeError> {
        let idle = self.idle(Timestamp::now());
        let services = &self.services;
        let dirty = &self.dirty;
        self.store.write(|txn| {
            for key in dirty {
                if let Some(state) = services.get(key) {
                    txn.put(&SERVICES, key, state)?;
                }
            }
            for key in &idle {
                txn.remove(&SERVICES, key)?;
            }
            Ok(())
        })?;
        for key in &idle {
            self.services.remove(key);
        }
        self.dirty.clear();
        Ok(())
    }

    fn idle(&self, wall_clock: Timestamp) -> Vec<String> {
        self.services
            .iter()
            .filter(|(_, s)| {
                let period = Duration::from_secs(
                    u64::from(self.config.for_service(&s.env, &s.service).slo_period_days + 1)
                        * 86_400,
                );
                s.newest.is_some_and(|n| n < wall_clock.minus(period))
                    && s.incidents.open().next().is_none()
                    && s.verifications.is_empty()
                    && s.holds.is_empty()
                    && s.delivery.is_empty()
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// How many of a batch's rejected samples its record lists (it counts them all).
const REJECTED_SHOWN: usize = 10;

/// A sample too far out of order to judge, as a rejection with the reason.
fn out_of_order(e: service::NotAdmitted) -> HandleError {
    HandleError::Reject { reason: RejectReason::OutOfOrder, message: e.not_judged() }
}

/// Records a decision, once per `key` when it has one (else once per input).
async fn prove(
    ctx: &mut Context<'_>,
    draft: ProofDraft,
    key: Option<&str>,
) -> Result<(), RuntimeError> {
    match key {
        Some(key) => ctx.prove_keyed(draft, key).await.map(drop),
        None => ctx.prove(draft).await.map(drop),
    }
}

/// Publishes an output in `chain`, under `key` when it has one (else under the input's id).
async fn publish<P: Payload>(
    ctx: &mut Context<'_>,
    subject: &Subject<P>,
    payload: &P,
    chain: String,
    key: Option<&str>,
) -> Result<(), RuntimeError> {
    match key {
        Some(key) => ctx.publish_keyed(subject, payload, chain, key).await,
        None => ctx.publish_in_chain(subject, payload, chain).await,
    }
}

impl Handler for Detector {
    type Input = DetectorInput;
    type Request = NoRequests;
    type Work = NoWork;

    async fn handle(
        &mut self,
        ctx: &mut Context<'_>,
        input: DetectorInput,
    ) -> Result<(), HandleError> {
        use DetectorInput::{Event, Executed};
        let (env, service) = match &input {
            Event(PipelineEvent::Metric(m)) => (m.env.clone(), m.service.clone()),
            // Validation leaves no empty batch and makes every sample's service the same.
            Event(PipelineEvent::MetricBatch(b)) => match b.service() {
                Some((env, service)) => (env.clone(), service.clone()),
                None => return Ok(()),
            },
            Event(PipelineEvent::Log(l)) => (l.env.clone(), l.service.clone()),
            Event(PipelineEvent::Deploy(d)) => (d.env.clone(), d.service.clone()),
            Executed(r) => (r.env.clone(), r.service.clone()),
        };
        let key = service::key(&env, &service);
        let input_id = ctx.meta().input_id.clone();
        let correlation = ctx.meta().correlation_id.clone();
        let state =
            self.services.entry(key.clone()).or_insert_with(|| ServiceState::new(env, service));

        // Decide, unless this input was applied before (a redelivery after a lost ack, or a
        // retry after a failed publish): then only what is still unpublished goes out.
        if let Some(unapplied) = state.delivery.unapplied(ctx.meta()) {
            let wall_clock = Timestamp::now();
            let config = &self.config;
            let out = match input {
                Event(PipelineEvent::Metric(m)) => {
                    state.on_metric(&m, config, &input_id, wall_clock)
                }
                Event(PipelineEvent::MetricBatch(b)) => {
                    Ok(state.on_metric_batch(&b, config, &input_id, wall_clock))
                }
                Event(PipelineEvent::Log(l)) => state.on_log(&l, config, &input_id, wall_clock),
                Event(PipelineEvent::Deploy(d)) => {
                    state.on_deploy(&d, config, &input_id, wall_clock)
                }
                Executed(r) => Ok(state.on_executed(&r, config, &input_id, &correlation)),
            };
            // Rejected inputs changed nothing and are not marked: a retry is judged again.
            let out = out.map_err(out_of_order)?;
            if let Some((sample, why)) = out.rejected.first() {
                let n = out.rejected.len();
                warn!(input = %input_id, rejected = n, first = sample, "samples of a metric batch not judged: {}", why.not_judged());
            }
            state.delivery.applied(unapplied, out.into_pending());
        }
        self.dirty.insert(key);
        // Publish the outbox in order, pipelined, and mark it sent once all of it is stored; a
        // failure leaves it there for the retry (which publishes under the same ids).
        let mut waiting = 0;
        for w in state.delivery.waiting() {
            Self::emit(ctx, (&state.env, &state.service), w.output, w.decided_by).await?;
            waiting += 1;
        }
        if waiting > 0 {
            ctx.confirm().await?;
            state.delivery.sent_all(waiting);
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), RuntimeError> {
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_state_with_positions_and_an_outbox_survives_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("d.redb")).unwrap();
        let config = DetectorConfig::default();
        let start: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let mut s = ServiceState::new("prod".parse().unwrap(), "api".parse().unwrap());
        let mut pending = Vec::new();
        for i in 0..40_u64 {
            let m: bus_schema::MetricSample = serde_json::from_value(json!({
                "env": "prod", "service": "api", "timestamp": start.plus(Duration::from_secs(10 * i)),
                "error_rate": if i < 20 { 0.0 } else { 0.5 }, "latency_p99_ms": 120.0,
            }))
            .unwrap();
            let wall = start.plus(Duration::from_secs(3600));
            let out = s.on_metric(&m, &config, &format!("CN_EVENTS:e:{i}"), wall).unwrap();
            pending.extend(out.into_pending());
        }
        assert!(!pending.is_empty(), "the error burst decided something");
        let meta = agent_runtime::InputMeta {
            input: "events",
            subject: String::new(),
            stream: "CN_EVENTS".to_owned(),
            stream_seq: 40,
            delivered: 1,
            input_id: "CN_EVENTS:e:40".to_owned(),
            message_id: String::new(),
            correlation_id: String::new(),
            traceparent: None,
        };
        let unapplied = s.delivery.unapplied(&meta).unwrap();
        s.delivery.applied(unapplied, pending);
        store.put(&SERVICES, &s.key(), &s).unwrap();
        let back = store.get(&SERVICES, &s.key()).unwrap().expect("stored");
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&s).unwrap());
        assert!(back.delivery.unapplied(&meta).is_none(), "still knows what it applied");
    }

    #[test]
    fn services_silent_for_longer_than_their_slo_period_are_forgotten_unless_something_is_pending()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("d.redb")).unwrap();
        let mut detector = Detector::load(store.clone(), DetectorConfig::default()).unwrap();
        let now = Timestamp::now();
        for (name, days_ago) in [("fresh", 1_u64), ("gone", 40)] {
            let mut s = ServiceState::new("prod".parse().unwrap(), name.parse().unwrap());
            s.newest = Some(now.minus(Duration::from_secs(days_ago * 86_400)));
            detector.dirty.insert(s.key());
            detector.services.insert(s.key(), s);
        }
        detector.flush().unwrap();
        let mut kept: Vec<String> = detector.services.keys().cloned().collect();
        kept.sort();
        assert_eq!(kept, ["prod/fresh"]);
        assert_eq!(store.scan(&SERVICES).unwrap().len(), 1);
    }
}
