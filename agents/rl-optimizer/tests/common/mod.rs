//! Shared test helpers: incidents, deploys, outcomes and refusals without a bus.
#![allow(dead_code, clippy::unwrap_used)]

use bus_schema::{
    Action, DeployEvent, Incident, IncidentKind, IncidentStatus, Outcome, ReasonCode, Refusal,
    Severity, Timestamp, Uuid, derive_id,
};

pub fn incident(n: u64, env: &str, kind: IncidentKind, deploy: bool) -> Incident {
    incident_of(n, env, "payments-api", kind, deploy)
}

pub fn incident_of(n: u64, env: &str, service: &str, kind: IncidentKind, deploy: bool) -> Incident {
    let t = Timestamp::now();
    Incident {
        incident_id: derive_id(&["test-incident", &n.to_string(), env, service, kind.as_str()]),
        env: env.parse().unwrap(),
        service: service.parse().unwrap(),
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

/// Two successful deploys: governance knows the service and has a version to roll back to.
pub fn deploys(env: &str, service: &str) -> Vec<DeployEvent> {
    ["1.2.2", "1.2.3"]
        .iter()
        .map(|v| {
            serde_json::from_value(serde_json::json!({"service": service, "env": env, "version": v, "status": "succeeded", "timestamp": Timestamp::now().to_string()}))
                .unwrap()
        })
        .collect()
}

pub fn outcome(
    incident: &Incident,
    proposal_id: Uuid,
    action: &Action,
    recovered: bool,
    ttr: Option<f64>,
) -> Outcome {
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
        revised: false,
        superseded_by: None,
    }
}

pub fn refusal(
    incident: &Incident,
    proposal_id: Uuid,
    action: &Action,
    reason: ReasonCode,
    detail: serde_json::Value,
) -> Refusal {
    Refusal {
        proposal_id,
        incident_id: Some(incident.incident_id),
        env: incident.env.clone(),
        service: incident.service.clone(),
        action: action.clone(),
        reason,
        detail: detail.to_string(),
        refused_at: Timestamp::now(),
    }
}
