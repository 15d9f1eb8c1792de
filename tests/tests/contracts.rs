//! Deployment contracts through the real fleet: drafted, negotiated over request/reply, frozen
//! when the error budget is spent, followed through the deploy, and learned from.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::time::Duration;

use bus_schema::codec::{Outgoing, decode};
use bus_schema::proof::{ProofKind, ProofRecord};
use bus_schema::{
    Ask, CounterProposal, Encoding, Limits, ModelStats, NegotiationReply, Uuid, ValidatorKind,
    subject,
};
use cn_tests::fleet::Fleet;
use cn_tests::proof_log::StoredRecord;
use cn_tests::scenario::{cnctl, for_service, metric_at, pipeline_pub};
use serde_json::{Value, json};

fn request(service: &str, deployment: &str, tags: &[&str], rollback: bool) -> Value {
    json!({"deployment_id": deployment, "service": service, "env": "stage", "version": "2.1.0",
        "changes": [
            {"file_path": "src/cache/manager.py", "change_type": "modify", "lines_changed": 45, "risk_tags": tags, "description": "Optimize cache TTL strategy"},
            {"file_path": "src/cache/ttl.py", "change_type": "modify", "lines_changed": 12, "description": "TTL per key class"},
            {"file_path": "tests/test_cache.py", "change_type": "modify", "lines_changed": 30, "description": "Cover the new TTLs"},
            {"file_path": "docs/cache.md", "change_type": "modify", "lines_changed": 8, "description": "Document the TTLs"}],
        "current_error_rate": 0.0005, "current_p95_latency_ms": 180, "target_p95_latency_ms": 250, "target_error_rate": 0.001,
        "rollback_capability": rollback, "dependencies": ["redis"]})
}

fn drafted(records: &[StoredRecord], service: &str) -> Option<ProofRecord> {
    for_service(records, ProofKind::ContractDrafted, service).into_iter().next()
}

/// Sends a counter-proposal as the pipeline user (core request/reply) and decodes the reply.
async fn counter(
    fleet: &Fleet,
    service: &str,
    contract: Uuid,
    asks: Vec<Ask>,
    justification: &str,
) -> NegotiationReply {
    let c = CounterProposal {
        contract_id: contract,
        env: "stage".parse().unwrap(),
        service: service.parse().unwrap(),
        requested_by: "dev-ana".into(),
        asks,
        justification: justification.into(),
    };
    let out = Outgoing::new(&subject::NEGOTIATE.subject(&c.env, &c.service), &c).unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/msgpack");
    let client = fleet.client_as("pipeline").await.unwrap();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request_with_headers(out.subject, headers, out.payload.into()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        reply.headers.as_ref().and_then(|h| h.get(bus_schema::headers::ERROR)).is_none(),
        "{:?}",
        String::from_utf8_lossy(&reply.payload)
    );
    decode(Encoding::MsgPack, &reply.payload, &Limits::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acceptable_counter_changes_the_contract_and_a_non_negotiable_one_is_refused_with_the_reason()
 {
    let fleet = Fleet::start().await.unwrap();
    pipeline_pub(
        &fleet,
        "cn.requests.contract.stage.cart",
        request("cart", "deploy-7", &["caching"], true),
    )
    .await;
    let records = fleet.records_until("the draft", |r| drafted(r, "cart").is_some()).await.unwrap();
    let draft = drafted(&records, "cart").unwrap();
    let id: Uuid = draft.detail["contract_id"].as_str().unwrap().parse().unwrap();

    let refused = counter(
        &fleet,
        "cart",
        id,
        vec![Ask::WaiveValidator { validator: ValidatorKind::Tests }],
        "we are in a hurry",
    )
    .await;
    assert!(!refused.accepted);
    assert!(refused.decisions[0].reason.contains("tests"), "{:?}", refused.decisions);
    assert!(refused.reason.as_deref().is_some_and(|r| r.contains("tests")), "{:?}", refused.reason);
    assert!(refused.contract.is_none(), "nothing changed");

    // No deploy outcomes are known yet: however well the request is described, the canary
    // stays. Guardrails may still move within bounds of the draft.
    let stages = draft.detail["canary_stages"].as_array().unwrap().len();
    let shorter = counter(
        &fleet,
        "cart",
        id,
        vec![Ask::ShortenCanary { stages: 1.max(stages as u8 - 1) }],
        "a cache TTL tweak, behind a flag",
    )
    .await;
    assert!(
        !shorter.accepted && shorter.decisions[0].reason.contains("needs more evidence"),
        "{:?}",
        shorter.decisions
    );
    let relaxed = counter(
        &fleet,
        "cart",
        id,
        vec![Ask::RelaxGuardrail { guardrail: "max_p95_latency_ms".into(), value: 300.0 }],
        "the new TTLs add a lookup",
    )
    .await;
    assert!(relaxed.accepted && relaxed.reason.is_none(), "{:?}", relaxed.decisions);
    let changed = relaxed.contract.unwrap();
    assert_eq!(
        (changed.revision, changed.status.as_str()),
        (2, "negotiated"),
        "drafts are revision 1"
    );
    assert_eq!(changed.guardrails.max_p95_latency_ms, 300.0);
    assert_eq!(changed.canary.len(), stages);

    let records = fleet
        .records_until("three rounds", |r| {
            for_service(r, ProofKind::ContractNegotiated, "cart").len() >= 3
        })
        .await
        .unwrap();
    let rounds = for_service(&records, ProofKind::ContractNegotiated, "cart");
    let accepted: Vec<Option<bool>> =
        rounds.iter().map(|r| r.detail["accepted"].as_bool()).collect();
    assert_eq!(accepted, [Some(false), Some(false), Some(true)]);
    assert_eq!(rounds[2].detail["requested_by"], "dev-ana");
    let operator = async_nats::jetstream::new(fleet.client_as("operator").await.unwrap());
    let stored = operator
        .get_stream("CN_WORK")
        .await
        .unwrap()
        .get_last_raw_message_by_subject("cn.contracts.stage.cart")
        .await
        .unwrap();
    let published: bus_schema::Contract =
        decode(Encoding::MsgPack, &stored.payload, &Limits::default()).unwrap();
    assert_eq!(published.revision, 2, "the changed contract is published");

    // The same through cnctl, as a developer (the pipeline user) would.
    let id = id.to_string();
    let refused = cnctl(
        &fleet,
        "pipeline",
        &[
            "contract",
            "counter",
            &id,
            "--env",
            "stage",
            "--service",
            "cart",
            "--waive",
            "tests",
            "--justification",
            "hurry",
            "--requested-by",
            "dev-ana",
        ],
        None,
    );
    assert_eq!(refused.status.code(), Some(3), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("tests"),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let accepted = cnctl(
        &fleet,
        "pipeline",
        &[
            "contract",
            "accept",
            &id,
            "--env",
            "stage",
            "--service",
            "cart",
            "--requested-by",
            "dev-ana",
        ],
        None,
    );
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&accepted.stdout),
        String::from_utf8_lossy(&accepted.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_error_budget_freezes_contracts_except_security_fixes() {
    let fleet = Fleet::start().await.unwrap();
    // A contract drafted while the budget is healthy is rejected once it is spent.
    pipeline_pub(
        &fleet,
        "cn.requests.contract.stage.ledger",
        request("ledger", "early-1", &["caching"], true),
    )
    .await;
    fleet.records_until("the early draft", |r| drafted(r, "ledger").is_some()).await.unwrap();
    // Fifty minutes of total failure spend a 99.9 % budget (43 minutes a month), as the
    // detector measures it from the samples' own timestamps.
    for k in 0..310 {
        pipeline_pub(
            &fleet,
            "cn.events.metric.stage.ledger",
            metric_at("stage", "ledger", -3100 + 10 * k, json!({"error_rate": 1.0})),
        )
        .await;
    }
    fleet
        .records_until("the budget to run out", |r| {
            for_service(r, ProofKind::IncidentOpened, "ledger")
                .iter()
                .any(|i| i.detail["kind"] == "high_error_rate")
        })
        .await
        .unwrap();
    let operator = async_nats::jetstream::new(fleet.client_as("operator").await.unwrap());
    let work = operator.get_stream("CN_WORK").await.unwrap();
    let mut spent = false;
    for _ in 0..50 {
        if let Ok(m) = work.get_last_raw_message_by_subject("cn.slo.stage.ledger").await {
            let slo: bus_schema::SloStatus =
                decode(Encoding::MsgPack, &m.payload, &Limits::default()).unwrap();
            spent = slo.budget_remaining <= 0.0;
        }
        if spent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(spent, "the detector reports the budget spent");
    tokio::time::sleep(Duration::from_millis(500)).await;
    pipeline_pub(
        &fleet,
        "cn.requests.contract.stage.ledger",
        request("ledger", "feature-1", &["caching"], true),
    )
    .await;
    pipeline_pub(
        &fleet,
        "cn.requests.contract.stage.ledger",
        request("ledger", "cve-fix-1", &["security"], true),
    )
    .await;
    let records = fleet
        .records_until("both drafts", |r| {
            for_service(r, ProofKind::ContractDrafted, "ledger").len() >= 3
        })
        .await
        .unwrap();
    let drafts = for_service(&records, ProofKind::ContractDrafted, "ledger");
    let by = |d: &str| drafts.iter().find(|r| r.detail["deployment_id"] == d).unwrap().clone();
    assert_eq!(
        (by("feature-1").detail["status"].as_str(), by("feature-1").detail["reason"].as_str()),
        (Some("rejected"), Some("error_budget_freeze"))
    );
    assert_eq!(by("cve-fix-1").detail["status"], "draft", "a security fix passes the freeze");
    let frozen = |r: &ProofRecord| {
        r.detail["deployment_id"] == "early-1" && r.detail["status"] == "rejected"
    };
    let records = fleet
        .records_until("the early draft frozen", |r| {
            for_service(r, ProofKind::ContractStatusChanged, "ledger").iter().any(frozen)
        })
        .await
        .unwrap();
    let early = for_service(&records, ProofKind::ContractStatusChanged, "ledger")
        .into_iter()
        .find(frozen)
        .unwrap();
    assert_eq!(early.detail["reason"], "error_budget_freeze");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_follows_its_deploy_and_a_rollback_is_learned() {
    let fleet = Fleet::start().await.unwrap();
    // Drafted twice: the newer draft supersedes the older, and only it follows the deploy.
    pipeline_pub(
        &fleet,
        "cn.requests.contract.stage.search",
        request("search", "deploy-9", &[], true),
    )
    .await;
    fleet.records_until("the first draft", |r| drafted(r, "search").is_some()).await.unwrap();
    pipeline_pub(
        &fleet,
        "cn.requests.contract.stage.search",
        request("search", "deploy-9", &[], true),
    )
    .await;
    let records = fleet
        .records_until("the second draft", |r| {
            for_service(r, ProofKind::ContractDrafted, "search").len() >= 2
        })
        .await
        .unwrap();
    let drafts = for_service(&records, ProofKind::ContractDrafted, "search");
    let (older, newer) = (
        drafts[0].detail["contract_id"].as_str().unwrap(),
        drafts[1].detail["contract_id"].as_str().unwrap(),
    );
    let event = |status: &str| json!({"service": "search", "env": "stage", "version": "2.1.0", "previous_version": "2.0.0", "status": status, "deployment_id": "deploy-9", "timestamp": cn_tests::scenario::now()});
    pipeline_pub(&fleet, "cn.events.deploy.stage.search", event("started")).await;
    pipeline_pub(&fleet, "cn.events.deploy.stage.search", event("rolled_back")).await;
    let records = fleet
        .records_until("the outcome to be learned", |r| {
            !for_service(r, ProofKind::PolicyLearned, "search").is_empty()
        })
        .await
        .unwrap();
    let changes = for_service(&records, ProofKind::ContractStatusChanged, "search");
    let of = |id: &str| {
        changes
            .iter()
            .filter(|r| r.detail["contract_id"] == id)
            .map(|r| r.detail["status"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(older), ["rejected"]);
    assert_eq!(changes[0].detail["reason"], format!("superseded by {newer}"));
    assert_eq!(of(newer), ["accepted", "deploying", "rolled_back"]);
    assert_eq!(for_service(&records, ProofKind::PolicyLearned, "search")[0].detail["failed"], true);

    let client = fleet.client_as("operator").await.unwrap();
    let reply = client.request("cn.model.risk-negotiator.0", "".into()).await.unwrap();
    let stats: ModelStats = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(stats.observations, 1);
    assert!(stats.brier.is_some() && stats.ece.is_some() && stats.calibration.is_some());
    let shown = cnctl(&fleet, "operator", &["contract", "stats"], None);
    assert_eq!(shown.status.code(), Some(0), "{}", String::from_utf8_lossy(&shown.stderr));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("Brier score") && text.contains("expected calibration error"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
}
