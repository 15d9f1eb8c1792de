//! Shared test helpers: incidents and outcomes without a bus.
#![allow(dead_code, clippy::unwrap_used)]

use bus_schema::{Action, Incident, IncidentKind, IncidentStatus, Outcome, Severity, Timestamp, Uuid, derive_id};

pub fn incident(n: u64, env: &str, kind: IncidentKind, deploy: bool) -> Incident {
    let t = Timestamp::now();
    Incident {
        incident_id: derive_id(&["test-incident", &n.to_string(), env, kind.as_str()]),
        env: env.parse().unwrap(),
        service: "payments-api".parse().unwrap(),
        kind,
        severity: Severity::High,
        status: IncidentStatus::Opened,
        summary: "test".into(),
        opened_at: t,
        updated_at: t,
        resolved_at: None,
        evidence: vec![],
        signal_conflict: false,
        suspect_version: deploy.then(|| "1.2.3".to_owned()),
        time_to_recover_s: None,
        sample_count: 1,
        reopen_count: 0,
    }
}

pub fn outcome(incident: &Incident, proposal_id: Uuid, action: &Action, recovered: bool, ttr: Option<f64>) -> Outcome {
    Outcome {
        incident_id: incident.incident_id,
        proposal_id: Some(proposal_id),
        env: incident.env.clone(),
        service: incident.service.clone(),
        action: action.clone(),
        recovered,
        time_to_recover_s: ttr,
        judged_at: Timestamp::now(),
        detail: String::new(),
    }
}
