use bus_schema::ContractRequest;

use super::*;
use crate::draft::{DraftInputs, draft, draft_offline};
use crate::model::Model;

fn t(minutes: u64) -> Timestamp {
    "2026-11-22T10:00:00Z".parse::<Timestamp>().unwrap().plus(Duration::from_secs(60 * minutes))
}

fn request(service: &str, deployment_id: &str, version: &str, path: &str) -> ContractRequest {
    serde_json::from_value(serde_json::json!({
        "deployment_id": deployment_id, "service": service, "env": "stage", "version": version, "rollback_capability": true,
        "changes": [{"file_path": path, "change_type": "modify", "lines_changed": 120}],
    }))
    .unwrap()
}

fn deploy(service: &str, version: &str, status: &str, minute: u64) -> DeployEvent {
    serde_json::from_value(serde_json::json!({
        "service": service, "env": "stage", "version": version, "status": status, "timestamp": t(minute).to_string(),
    }))
    .unwrap()
}

fn incident(service: &str, kind: &str, suspect: &str, minute: u64) -> Incident {
    serde_json::from_value(serde_json::json!({
        "incident_id": "00000000-0000-0000-0000-000000000001", "env": "stage", "service": service, "kind": kind,
        "severity": "high", "status": "opened", "summary": "errors after deploy", "opened_at": t(minute).to_string(),
        "updated_at": t(minute).to_string(), "suspect_version": suspect,
    }))
    .unwrap()
}

fn tracked(service: &str, version: &str) -> Learner {
    let mut l = Learner::default();
    l.remember(&draft_offline(
        &request(service, &format!("d-{version}"), version, "src/cache/x.rs"),
        t(0),
    ));
    l
}

fn failed(labels: &[Label]) -> Vec<bool> {
    labels.iter().map(|l| l.failed).collect()
}

#[test]
fn failed_and_rolled_back_deploys_are_failures_at_once() {
    for status in ["failed", "rolled_back"] {
        let mut l = tracked("api", "v2");
        assert!(l.on_deploy(&deploy("api", "v2", "started", 1)).is_empty());
        let labels = l.on_deploy(&deploy("api", "v2", status, 2));
        assert_eq!(failed(&labels), vec![true], "{status}");
        assert_eq!(labels[0].factors[0].name, "caching");
        assert!(
            l.on_deploy(&deploy("api", "v2", status, 2)).is_empty(),
            "a redelivery teaches nothing twice"
        );
        assert_eq!(l.history("stage", "api").failures_since(t(3), Duration::from_secs(3600)), 1);
    }
}

#[test]
fn a_rollback_that_names_the_restored_version_labels_the_version_given_up() {
    // The simulator's and the deploy agent's rolled_back: version 1.0 runs again, v2 is given up.
    let mut l = tracked("api", "v2");
    l.on_deploy(&deploy("api", "v2", "started", 1));
    let mut back = deploy("api", "1.0", "rolled_back", 2);
    back.previous_version = Some("v2".into());
    assert_eq!(failed(&l.on_deploy(&back)), vec![true]);
    assert_eq!(
        l.history("stage", "api").recent.iter().map(|p| p.version.as_str()).collect::<Vec<_>>(),
        ["v2"]
    );
}

#[test]
fn a_success_counts_only_after_a_quiet_window() {
    let mut l = tracked("api", "v2");
    l.on_deploy(&deploy("api", "v2", "succeeded", 1));
    assert!(l.settle("stage", "api", t(30)).is_empty(), "still inside the window");
    assert_eq!(failed(&l.settle("stage", "api", t(31))), vec![false]);

    let mut l = tracked("api", "v2");
    l.on_deploy(&deploy("api", "v2", "succeeded", 1));
    assert_eq!(
        failed(&l.on_deploy(&deploy("api", "v3", "succeeded", 40))),
        vec![false],
        "a later event past the window"
    );

    let mut l = tracked("api", "v2");
    l.on_deploy(&deploy("api", "v2", "succeeded", 1));
    assert_eq!(
        failed(&l.on_deploy(&deploy("api", "v3", "started", 5))),
        vec![false],
        "the next deploy starts"
    );

    // Another service's events, however late, settle nothing here.
    let mut l = tracked("api", "v2");
    l.on_deploy(&deploy("api", "v2", "succeeded", 1));
    assert!(l.on_deploy(&deploy("search", "v7", "succeeded", 90)).is_empty());
    assert!(l.on_incident(&incident("search", "high_error_rate", "v7", 95)).is_empty());
    assert!(l.settle("stage", "search", t(99)).is_empty());
    assert_eq!(failed(&l.settle("stage", "api", t(99))), vec![false]);
}

#[test]
fn a_regression_blaming_the_version_within_the_window_is_a_failure() {
    let mut l = tracked("api", "v2");
    l.on_deploy(&deploy("api", "v2", "succeeded", 1));
    assert!(
        l.on_incident(&incident("api", "high_error_rate", "v2", 5)).is_empty(),
        "not a deploy incident"
    );
    assert!(
        l.on_incident(&incident("api", "deploy_regression", "v1", 5)).is_empty(),
        "another version"
    );
    assert_eq!(failed(&l.on_incident(&incident("api", "deploy_regression", "v2", 10))), vec![true]);
    assert!(l.on_incident(&incident("api", "deploy_regression", "v2", 10)).is_empty());
    assert_eq!(
        l.history("stage", "api")
            .recent
            .iter()
            .filter(|p| p.outcome == DeployOutcome::CausedIncident && p.version == "v2")
            .count(),
        1
    );

    let mut late = tracked("api", "v2");
    late.on_deploy(&deploy("api", "v2", "succeeded", 1));
    assert_eq!(
        failed(&late.on_incident(&incident("api", "deploy_failed", "v2", 90))),
        vec![false],
        "past the window: already a success"
    );
}

#[test]
fn history_is_bounded_and_state_round_trips() {
    let mut l = Learner::default();
    for i in 0..(HISTORY_LEN as u64 + 5) {
        l.on_deploy(&deploy("api", &format!("v{i}"), "failed", i));
    }
    assert_eq!(l.history("stage", "api").recent.len(), HISTORY_LEN);
    assert!(l.history("stage", "other").recent.is_empty());
    let back: Learner = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
    assert_eq!(back, l);
}

/// Learning end to end: failures of schema changes make later schema changes riskier, while an
/// unrelated change hardly moves.
#[test]
fn recorded_failures_raise_later_scores_for_similar_changes() {
    let (empty, mut model) = (ServiceHistory::default(), Model::default());
    let score = |model: &Model, req: &ContractRequest| {
        draft(req, &DraftInputs { history: &empty, model, budget_remaining: None }, "probe", t(0))
            .risk
    };
    let schema_probe = request("billing", "probe", "v100", "db/migrations/9.sql");
    let cache_probe = request("search", "probe", "v100", "src/cache/lru.rs");
    let (schema_before, cache_before) = (score(&model, &schema_probe), score(&model, &cache_probe));

    let mut learner = Learner::default();
    for i in 0..20u64 {
        let version = format!("v{i}");
        let c = draft(
            &request("orders", &format!("d{i}"), &version, "db/migrations/1.sql"),
            &DraftInputs { history: &empty, model: &model, budget_remaining: None },
            "x",
            t(i),
        );
        learner.remember(&c);
        for label in learner.on_deploy(&deploy("orders", &version, "rolled_back", i)) {
            model.learn(&label.factors, label.failed, label.at);
        }
    }
    assert_eq!(model.observations(), 20);
    let (schema_after, cache_after) = (score(&model, &schema_probe), score(&model, &cache_probe));
    assert!(
        schema_after.score >= schema_before.score + 5.0,
        "{schema_before:?} → {schema_after:?}"
    );
    assert!(
        schema_after.factors.iter().any(|f| f.name == "learned_history" && f.contribution > 0.0)
    );
    assert!(schema_after.confidence > schema_before.confidence);
    assert!(
        (cache_after.score - cache_before.score).abs() < 3.0,
        "{cache_before:?} → {cache_after:?}"
    );
}
