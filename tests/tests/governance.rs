//! Governance and the executor through the real fleet: humans decide what policy sends them,
//! decisions expire, only genuine unused unexpired approvals are executed, and crashes lose
//! nothing and execute nothing twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::time::Duration;

use bus_schema::codec::{Outgoing, decode};
use bus_schema::proof::{ProofKind, ProofRecord};
use bus_schema::{Action, Encoding, Limits, SignedApproval, Timestamp, subject};
use cn_tests::fleet::Fleet;
use cn_tests::proof_log::{StoredRecord, of_kind};
use cn_tests::scenario::{
    crash, crash_restarted, deploy, failed_prod_deploy, for_service, latency_within_the_cooldown,
    pipeline_pub,
};
use serde_json::json;

/// A failed prod deploy of `service`, which the fleet answers with a rollback waiting for a human.
async fn pending_rollback(fleet: &Fleet, service: &str) -> ProofRecord {
    failed_prod_deploy(fleet, service).await;
    let records = fleet
        .records_until("the rollback to wait for a human", |r| {
            !for_service(r, ProofKind::ActionPendingApproval, service).is_empty()
        })
        .await
        .unwrap();
    for_service(&records, ProofKind::ActionPendingApproval, service).remove(0)
}

/// Publishes an operator's decision as JSON, as `nats pub` would.
async fn decide(fleet: &Fleet, service: &str, proposal: &str, decision: &str, reason: &str) {
    let client = fleet.client_as("operator").await.unwrap();
    let body = json!({"proposal_id": proposal, "decision": decision, "operator": "oncall-sre", "reason": reason});
    client.publish(format!("cn.approvals.prod.{service}"), body.to_string().into()).await.unwrap();
    client.flush().await.unwrap();
}

fn rejected_by_governance(records: &[StoredRecord]) -> Vec<ProofRecord> {
    of_kind(records, ProofKind::EventRejected)
        .into_iter()
        .filter(|r| r.agent.as_str() == "governance-gate")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prod_rollback_approved_by_an_operator_is_executed_exactly_once() {
    let fleet = Fleet::start().await.unwrap();
    let pending = pending_rollback(&fleet, "checkout").await;
    let proposal = pending.proposal_id.unwrap().to_string();
    decide(&fleet, "checkout", &proposal, "approve", "checked dashboards").await;
    let records = fleet
        .records_until("the rollback to be executed", |r| {
            !for_service(r, ProofKind::ActionExecuted, "checkout").is_empty()
        })
        .await
        .unwrap();

    let human = for_service(&records, ProofKind::HumanDecision, "checkout").remove(0);
    assert_eq!(
        (human.detail["operator"].as_str(), human.detail["reason"].as_str()),
        (Some("oncall-sre"), Some("checked dashboards"))
    );
    assert_eq!(
        human.correlation_id, pending.correlation_id,
        "the decision continues the incident's chain"
    );
    let approved = for_service(&records, ProofKind::ActionApproved, "checkout").remove(0);
    assert_eq!(approved.detail["approved_by"], "oncall-sre");
    assert_eq!(approved.action, Some(Action::Rollback));

    // The same decision again is refused as already decided; nothing runs twice.
    decide(&fleet, "checkout", &proposal, "approve", "again").await;
    let records = fleet
        .records_until("the repeat to be rejected", |r| !rejected_by_governance(r).is_empty())
        .await
        .unwrap();
    assert!(
        rejected_by_governance(&records)[0].detail["error"]
            .as_str()
            .unwrap()
            .contains("already approved by oncall-sre")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        for_service(&fleet.records().await.unwrap(), ProofKind::ActionExecuted, "checkout").len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_rollback_is_never_executed_and_unknown_decisions_are_rejected() {
    let fleet = Fleet::start().await.unwrap();
    let pending = pending_rollback(&fleet, "billing").await;
    let id = pending.proposal_id.unwrap().to_string();
    // An approval published on another service's subject does not count.
    decide(&fleet, "checkout", &id, "approve", "wrong window").await;
    decide(&fleet, "billing", &id, "deny", "a fix-forward is on its way").await;
    decide(&fleet, "billing", "00000000-0000-0000-0000-000000000042", "approve", "made up").await;
    let records = fleet
        .records_until("the denial and the rejections", |r| {
            !for_service(r, ProofKind::ActionRefused, "billing").is_empty()
                && rejected_by_governance(r).len() >= 2
        })
        .await
        .unwrap();
    let refused = for_service(&records, ProofKind::ActionRefused, "billing").remove(0);
    assert_eq!(refused.reason.as_deref(), Some("approval_denied"));
    assert_eq!(refused.detail["reason"], "a fix-forward is on its way");
    let errors: Vec<String> = rejected_by_governance(&records)
        .iter()
        .map(|r| r.detail["error"].as_str().unwrap().to_owned())
        .collect();
    assert!(errors[0].contains("must be published on cn.approvals.prod.billing"), "{errors:?}");
    assert!(errors[1].contains("no approval is waiting"), "{errors:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records = fleet.records().await.unwrap();
    assert!(for_service(&records, ProofKind::ActionApproved, "billing").is_empty());
    assert!(for_service(&records, ProofKind::ActionExecuted, "billing").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_answers_expires_and_a_late_approval_changes_nothing() {
    let fleet =
        Fleet::start_with(&[("governance-gate", &["--human-approval-ttl", "2s"])]).await.unwrap();
    let pending = pending_rollback(&fleet, "search").await;
    let records = fleet
        .records_until("the request to expire", |r| {
            !for_service(r, ProofKind::ActionRefused, "search").is_empty()
        })
        .await
        .unwrap();
    let expired = for_service(&records, ProofKind::ActionRefused, "search").remove(0);
    assert_eq!(expired.reason.as_deref(), Some("approval_expired"));
    assert_eq!(expired.correlation_id, pending.correlation_id);
    decide(
        &fleet,
        "search",
        &pending.proposal_id.unwrap().to_string(),
        "approve",
        "sorry, was at lunch",
    )
    .await;
    let records = fleet
        .records_until("the late approval to be rejected", |r| {
            !rejected_by_governance(r).is_empty()
        })
        .await
        .unwrap();
    assert!(
        rejected_by_governance(&records)[0].detail["error"]
            .as_str()
            .unwrap()
            .contains("already refused: approval_expired")
    );
    let executed = for_service(&records, ProofKind::ActionExecuted, "search");
    assert!(
        executed.iter().all(|r| r.action != Some(Action::Rollback)),
        "the rollback never ran: {executed:#?}"
    );
}

/// Publishes an approval with governance's NATS credentials (only governance may).
async fn publish_as_governance(fleet: &Fleet, approval: &SignedApproval, msg_id: &str) {
    let client = fleet.client_as("governance-gate").await.unwrap();
    let out = Outgoing::new(
        &subject::APPROVED.subject(&approval.claims.env, &approval.claims.service),
        approval,
    )
    .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/msgpack");
    headers.insert("Nats-Msg-Id", msg_id);
    async_nats::jetstream::new(client)
        .publish_with_headers(out.subject, headers, out.payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_and_replayed_approvals_are_refused_and_nothing_runs() {
    let fleet = Fleet::start().await.unwrap();
    pipeline_pub(
        &fleet,
        "cn.events.deploy.stage.cart",
        deploy("stage", "cart", "2.0.0", Some("1.9.0"), "succeeded"),
    )
    .await;
    pipeline_pub(&fleet, "cn.events.metric.stage.cart", crash("stage", "cart", true)).await;
    fleet
        .records_until("the genuine restart", |r| {
            !for_service(r, ProofKind::ActionExecuted, "cart").is_empty()
        })
        .await
        .unwrap();
    let operator = async_nats::jetstream::new(fleet.client_as("operator").await.unwrap());
    let stored = operator
        .get_stream("CN_WORK")
        .await
        .unwrap()
        .get_last_raw_message_by_subject("cn.actions.approved.stage.cart")
        .await
        .unwrap();
    let genuine: SignedApproval =
        decode(Encoding::MsgPack, &stored.payload, &Limits::default()).unwrap();

    publish_as_governance(&fleet, &genuine, "test:replay").await;
    let mut tampered = genuine.clone();
    tampered.claims.action = Action::Rollback;
    tampered.claims.approval_id = bus_schema::Uuid::from_u128(99);
    publish_as_governance(&fleet, &tampered, "test:tampered").await;
    let mut claims = genuine.claims.clone();
    claims.approval_id = bus_schema::Uuid::from_u128(100);
    claims.issued_at = Timestamp::now().minus(Duration::from_secs(600));
    claims.expires_at = Timestamp::now().minus(Duration::from_secs(300));
    publish_as_governance(&fleet, &fleet.signing_key().unwrap().sign(claims), "test:expired").await;

    let records = fleet
        .records_until("three refusals", |r| {
            for_service(r, ProofKind::ExecutionRefused, "cart").len() >= 3
        })
        .await
        .unwrap();
    let mut reasons: Vec<String> = for_service(&records, ProofKind::ExecutionRefused, "cart")
        .iter()
        .filter_map(|r| r.reason.clone())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["bad_signature", "expired", "replayed"]);
    assert_eq!(
        for_service(&records, ProofKind::ActionExecuted, "cart").len(),
        1,
        "only the genuine approval ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_governance_and_the_executor_mid_stream_loses_nothing_and_runs_nothing_twice() {
    let mut fleet = Fleet::start().await.unwrap();
    let services: Vec<String> = (0..24).map(|i| format!("svc-{i:02}")).collect();
    for s in &services {
        pipeline_pub(
            &fleet,
            &format!("cn.events.deploy.dev.{s}"),
            deploy("dev", s, "1.0.0", None, "succeeded"),
        )
        .await;
    }
    let done = |r: &[StoredRecord]| {
        of_kind(r, ProofKind::ActionExecuted).len() + of_kind(r, ProofKind::ActionFailed).len()
    };
    for (i, s) in services.iter().enumerate() {
        pipeline_pub(&fleet, &format!("cn.events.metric.dev.{s}"), crash("dev", s, true)).await;
        if i == 8 {
            fleet.records_until("a few executions", |r| done(r) >= 3).await.unwrap();
            fleet.agent("governance-gate").unwrap().kill9();
            fleet.agent("governance-gate").unwrap().restart().unwrap();
        }
        if i == 16 {
            fleet.agent("executor").unwrap().kill9();
            fleet.agent("executor").unwrap().restart().unwrap();
        }
    }
    let restarts = |r: &[StoredRecord]| {
        let of = |kind| {
            of_kind(r, kind).into_iter().filter(|x| x.action == Some(Action::Restart)).count()
        };
        of(ProofKind::ActionExecuted) + of(ProofKind::ActionFailed)
    };
    fleet
        .records_until("every restart to be carried out", |r| restarts(r) >= services.len())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = fleet.records().await.unwrap();
    for s in &services {
        let is_restart = |r: &ProofRecord| r.action == Some(Action::Restart);
        let executed = for_service(&records, ProofKind::ActionExecuted, s)
            .into_iter()
            .filter(is_restart)
            .count();
        let interrupted = for_service(&records, ProofKind::ActionFailed, s)
            .into_iter()
            .filter(is_restart)
            .count();
        assert_eq!(
            executed + interrupted,
            1,
            "{s}: executed {executed}, interrupted {interrupted}"
        );
        assert_eq!(
            for_service(&records, ProofKind::ActionApproved, s)
                .into_iter()
                .filter(is_restart)
                .count(),
            1,
            "{s}: one restart approved"
        );
        // An interrupted restart is judged not recovered at once, and the next candidate follows;
        // an executed one waits for its verdict.
        let others = for_service(&records, ProofKind::ActionApproved, s).len() - 1;
        assert!(
            others <= interrupted,
            "{s}: {others} follow-ups after {interrupted} interrupted restarts"
        );
    }
    assert!(
        of_kind(&records, ProofKind::ExecutionRefused).is_empty(),
        "no replays were even attempted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldowns_survive_a_governance_crash() {
    let mut fleet = Fleet::start().await.unwrap();
    crash_restarted(&fleet, "cart").await;
    // Governance is killed after the first restart: the cooldown it remembered still holds
    // the second one back.
    fleet.agent("governance-gate").unwrap().kill9();
    fleet.agent("governance-gate").unwrap().restart().unwrap();
    let records = latency_within_the_cooldown(&fleet, "cart").await;
    assert_eq!(
        for_service(&records, ProofKind::ActionRefused, "cart")[0].reason.as_deref(),
        Some("cooldown_active")
    );
    let restarts = for_service(&records, ProofKind::ActionExecuted, "cart")
        .into_iter()
        .filter(|r| r.action == Some(Action::Restart))
        .count();
    assert_eq!(restarts, 1);
}
