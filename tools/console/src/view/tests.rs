use super::*;

const INCIDENT: &str = "68756a56-e0c4-8fe1-a92c-851fb994b852";
const PROPOSAL: &str = "2f05cba9-9710-8229-8e68-39100bf2ca92";

/// A record as the agents store it, with `extra` fields merged in.
fn record(agent: &str, seq: u64, second: u32, kind: &str, extra: Value) -> ProofRecord {
    let mut r = json!({
        "v": 1, "agent": agent, "instance": "0", "seq": seq,
        "ts": format!("2026-12-06T14:00:{second:02}Z"), "kind": kind,
        "env": "prod", "service": "payments",
        "prev_hash": "0".repeat(64),
    });
    if let (Some(r), Value::Object(e)) = (r.as_object_mut(), extra) {
        r.extend(e);
    }
    serde_json::from_value(r).unwrap()
}

fn incident(kind: &str, second: u32, detail: Value) -> ProofRecord {
    record(
        "issue-detector",
        u64::from(second),
        second,
        kind,
        json!({"incident_id": INCIDENT, "detail": detail}),
    )
}

fn about_proposal(agent: &str, kind: &str, second: u32, detail: Value) -> ProofRecord {
    record(
        agent,
        u64::from(second),
        second,
        kind,
        json!({"incident_id": INCIDENT, "proposal_id": PROPOSAL, "action": "rollback", "detail": detail}),
    )
}

#[test]
fn an_incident_shows_its_evidence_and_what_was_tried_until_it_is_resolved() {
    let mut v = View::default();
    v.observe(&incident("incident_opened", 1, json!({"kind": "deploy_regression", "severity": "high", "evidence": [{"signal": "error_rate", "value": 0.09}]})));
    v.observe(&about_proposal("rl-optimizer", "action_proposed", 2, json!({})));
    v.observe(&about_proposal("governance-gate", "action_pending_approval", 3, json!({"confidence": 0.8, "expires_at": "2026-12-06T14:15:00Z", "why": "rollback in prod needs a human's approval"})));
    let s = v.snapshot(true);
    assert_eq!(s["incidents"][0]["kind"], "deploy_regression");
    assert_eq!(s["incidents"][0]["evidence"][0]["signal"], "error_rate");
    let tried: Vec<_> = s["incidents"][0]["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tried, ["action_proposed", "action_pending_approval"]);
    assert_eq!(s["approvals"][0]["proposal_id"], PROPOSAL);
    assert_eq!(s["approvals"][0]["why"], "rollback in prod needs a human's approval");
    assert_eq!(v.pending_scope(&PROPOSAL.parse().unwrap()).unwrap().env.as_str(), "prod");

    // A human decides: the approval is no longer pending; the incident resolves.
    v.observe(&about_proposal("governance-gate", "human_decision", 4, json!({"operator": "ana"})));
    v.observe(&incident("incident_resolved", 5, json!({})));
    let s = v.snapshot(true);
    assert_eq!(s["approvals"].as_array().unwrap().len(), 0);
    assert_eq!(s["incidents"].as_array().unwrap().len(), 0);
    assert_eq!(s["resolved"][0]["id"], INCIDENT);
    assert_eq!(s["resolved"][0]["tried"][2]["note"], "by ana");
    assert_eq!(s["log"][0]["kind"], "incident_resolved", "the log is newest first");
    assert_eq!(s["records"], 5);
}

#[test]
fn a_refusal_or_an_approval_ends_the_wait_for_a_human() {
    for kind in ["action_approved", "action_refused"] {
        let mut v = View::default();
        v.observe(&about_proposal("governance-gate", "action_pending_approval", 1, json!({})));
        v.observe(&about_proposal("governance-gate", kind, 2, json!({})));
        assert!(v.pending_scope(&PROPOSAL.parse().unwrap()).is_none(), "{kind}");
    }
}

#[test]
fn a_rollout_lists_its_stages_with_canary_and_stable_side_by_side() {
    let mut v = View::default();
    let rollout = |kind: &str, second: u32, reason: &str, detail: Value| {
        let mut d = json!({"rollout_id": "r1", "version": "1.4.0"});
        d.as_object_mut().unwrap().extend(detail.as_object().unwrap().clone());
        record(
            "deploy-agent",
            u64::from(second),
            second,
            kind,
            json!({"reason": reason, "detail": d}),
        )
    };
    v.observe(&rollout(
        "canary_stage",
        1,
        "rollout_started",
        json!({"stable_version": "1.3.9", "weights": [10, 50]}),
    ));
    v.observe(&rollout("canary_stage", 2, "passed", json!({"stage": 1, "of": 2, "weight_percent": 10, "reasons": ["no difference"], "errors": {"canary_mean_error_rate": 0.01, "stable_mean_error_rate": 0.009}, "latency": {"canary_median_p95_ms": 210.0, "stable_median_p95_ms": 200.0}})));
    v.observe(&rollout("canary_promoted", 3, "promoted", json!({})));
    let s = v.snapshot(false);
    let r = &s["rollouts"][0];
    assert_eq!(r["state"], "promoted");
    assert_eq!(r["stable_version"], "1.3.9");
    assert_eq!(r["weights"], json!([10, 50]));
    assert_eq!(r["stages"].as_array().unwrap().len(), 1, "the start is not a stage");
    assert_eq!(r["stages"][0]["canary_p95_ms"], 210.0);
    assert_eq!(r["stages"][0]["stable_error_rate"], 0.009);
    assert_eq!(s["decide"], false);
}

#[test]
fn slo_statuses_build_a_burn_history_and_ignore_older_ones() {
    let mut v = View::default();
    let status = |second: u32, rate: f64, left: f64| -> SloStatus {
        serde_json::from_value(json!({
            "env": "prod", "service": "payments", "objective": 0.999, "window_days": 30,
            "burn_rates": [{"window_s": 3600, "rate": rate / 2.0}, {"window_s": 300, "rate": rate}],
            "budget_remaining": left, "ts": format!("2026-12-06T14:00:{second:02}Z"),
        }))
        .unwrap()
    };
    v.observe_slo(&status(1, 2.0, 0.9));
    v.observe_slo(&status(3, 14.0, 0.8));
    v.observe_slo(&status(2, 1.0, 0.95));
    let s = v.snapshot(false);
    let slo = &s["slos"][0];
    assert_eq!(slo["budget_remaining"], 0.8);
    assert_eq!(slo["burn_rates"][0], json!([300, 14.0]), "shortest window first");
    assert_eq!(slo["history"].as_array().unwrap().len(), 2);
    assert_eq!(slo["history"][1][1], 14.0);
}

#[test]
fn agents_show_their_version_last_record_and_rejections() {
    let mut v = View::default();
    v.observe(&record("executor", 1, 1, "agent_started", json!({"detail": {"version": "0.10.0"}})));
    v.observe(&record("executor", 2, 2, "event_rejected", json!({"reason": "malformed"})));
    v.observe(&record("executor", 3, 3, "agent_stopped", json!({})));
    let s = v.snapshot(false);
    let a = &s["agents"][0];
    assert_eq!(
        (a["version"].as_str(), a["seq"].as_u64(), a["rejected"].as_u64()),
        (Some("0.10.0"), Some(3), Some(1))
    );
    assert_eq!(a["stopped"], true);
}

#[test]
fn a_reopened_incident_comes_back_with_its_history_and_is_listed_once() {
    let mut v = View::default();
    v.observe(&incident("incident_opened", 1, json!({"kind": "crash_loop"})));
    v.observe(&about_proposal("executor", "action_executed", 2, json!({"detail": "restarted"})));
    v.observe(&incident("incident_resolved", 3, json!({})));
    // The outcome is judged after the incident resolved: it still belongs to its history.
    v.observe(&about_proposal(
        "issue-detector",
        "outcome_recorded",
        4,
        json!({"detail": "resolved 30 s after"}),
    ));
    let s = v.snapshot(false);
    assert_eq!(s["resolved"][0]["tried"].as_array().unwrap().len(), 2, "{s:#}");

    v.observe(&incident("incident_opened", 5, json!({"kind": "crash_loop"})));
    let s = v.snapshot(false);
    assert_eq!(s["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(s["resolved"].as_array().unwrap().len(), 0, "not open and resolved at once");
    assert_eq!(s["incidents"][0]["opened_at"], "2026-12-06T14:00:01Z", "first opened at 1");
    assert_eq!(s["incidents"][0]["tried"].as_array().unwrap().len(), 2);

    v.observe(&incident("incident_resolved", 6, json!({})));
    let s = v.snapshot(false);
    assert_eq!(s["resolved"].as_array().unwrap().len(), 1, "listed once");
}
