//! A small agent for exercising the runtime: it turns metric samples into incidents.
//!
//! Its behaviour is chosen by service name so tests can provoke each path: `poison` always
//! fails, `flaky` publishes and then fails once (a crash after publishing), `slow…` takes a
//! second and a half, `recall…` first reads the service's last stored incident. It runs in-process in the runtime tests and as the `probe-agent` binary
//! in the process tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::{AgentSpec, Context, HandleError, Handler, NoRequests, NoWork, ProofDraft};
use bus_schema::proof::ProofKind;
use bus_schema::{
    AgentName, Incident, IncidentKind, IncidentStatus, LogEvent, MetricSample, Severity, Uuid,
    subject,
};

bus_schema::inputs! {
    /// Metric and log events. Two inputs, like most agents: logs stay idle in these tests, and
    /// must not starve metrics.
    pub enum ProbeInput, names ProbeInputName {
        Metric(MetricSample) = "metrics" from subject::METRIC_EVENTS,
        Log(LogEvent) = "logs" from subject::LOG_EVENTS,
    }
}

/// What the probe did, for the test to check.
#[derive(Debug, Default)]
pub struct Seen {
    /// Handling attempts per service.
    pub attempts: HashMap<String, u32>,
    /// The service of the input being (or last) handled.
    pub handling: Option<String>,
    /// For `recall…` services: the incident already stored for the service when each sample
    /// came (`Context::last_stored`), in order.
    pub recalled: Vec<Option<Uuid>>,
}

/// The probe's handler. Clones share what they saw.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub seen: Arc<Mutex<Seen>>,
}

impl Handler for Probe {
    type Input = ProbeInput;
    type Request = NoRequests;
    type Work = NoWork;

    async fn handle(
        &mut self,
        ctx: &mut Context<'_>,
        input: ProbeInput,
    ) -> Result<(), HandleError> {
        let m = match input {
            ProbeInput::Metric(m) => m,
            ProbeInput::Log(_) => return Ok(()),
        };
        let service = m.service.to_string();
        let attempt = {
            let mut seen =
                self.seen.lock().map_err(|_| HandleError::Retry("probe state poisoned".into()))?;
            seen.handling = Some(service.clone());
            let n = seen.attempts.entry(service.clone()).or_default();
            *n += 1;
            *n
        };
        if service == "poison" {
            return Err(HandleError::Retry("simulated: downstream unavailable".into()));
        }
        if service.starts_with("slow") {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let incident = incident_for(&m);
        if service.starts_with("recall") {
            let subject = subject::INCIDENTS.subject(&m.env, &m.service);
            let stored = ctx.last_stored(&subject).await?.map(|i| i.incident_id);
            let mut seen =
                self.seen.lock().map_err(|_| HandleError::Retry("probe state poisoned".into()))?;
            seen.recalled.push(stored);
        }
        ctx.publish(&subject::INCIDENTS.subject(&m.env, &m.service), &incident).await?;
        if service == "flaky" && attempt == 1 {
            return Err(HandleError::Retry("simulated: crashed after publishing".into()));
        }
        ctx.prove(
            ProofDraft::new(ProofKind::IncidentOpened)
                .scope(&m.env, &m.service)
                .incident(incident.incident_id),
        )
        .await?;
        Ok(())
    }
}

fn incident_for(m: &MetricSample) -> Incident {
    Incident {
        // Derived from the input so a retry builds the same incident.
        incident_id: Uuid::from_u128(u128::from(m.timestamp.unix_millis().unsigned_abs())),
        env: m.env.clone(),
        service: m.service.clone(),
        kind: IncidentKind::CrashLoop,
        severity: Severity::High,
        status: IncidentStatus::Opened,
        summary: "probe".into(),
        opened_at: m.timestamp,
        updated_at: m.timestamp,
        resolved_at: None,
        evidence: vec![],
        signal_conflict: false,
        suspect_version: None,
        time_to_recover_s: None,
        sample_count: 1,
        reopen_count: 0,
    }
}

const NAME: AgentName = AgentName::from_static("probe-agent");

/// The probe's spec: one message at a time.
pub fn spec() -> AgentSpec {
    AgentSpec {
        name: NAME,
        version: "0.1.0",
        description: "integration-test probe",
        prefetch: 1,
        partitioned: false,
    }
}
