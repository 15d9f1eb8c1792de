//! Least privilege and input rules under abuse, with the real binaries and
//! `deploy/permissions.conf`: each test is one hole an attacker with a fleet credential tried.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use bus_schema::fleet::fleet;
use bus_schema::headers;
use bus_schema::proof::{ProofKind, ProofRecord};
use cn_tests::fleet::{Fleet, binary};
use cn_tests::proof_log::of_kind;
use cn_tests::scenario::{cnctl, crash, deploy, for_service, pipeline_pub};
use serde_json::{Value, json};

/// Publishes as the pipeline through JetStream with a message id, returning its stream sequence.
async fn publish_with_id(fleet: &Fleet, subject: &str, body: &Value, id: &str) -> u64 {
    let js = jetstream::new(fleet.client_as("pipeline").await.unwrap());
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::MSG_ID, id);
    js.publish_with_headers(subject.to_owned(), h, body.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

/// Whether a core request on `subject` is refused: a denied publish never reaches a responder,
/// so it fails or times out.
async fn denied(client: &async_nats::Client, subject: &str) -> bool {
    !matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            client.request(subject.to_owned(), "1".into())
        )
        .await,
        Ok(Ok(_))
    )
}

/// The agents with an input whose filter covers `subject`.
fn consumers_of(subject: &str) -> Vec<String> {
    let covers = |pattern: &str| {
        let (p, s): (Vec<&str>, Vec<&str>) =
            (pattern.split('.').collect(), subject.split('.').collect());
        p.iter()
            .enumerate()
            .all(|(i, t)| *t == ">" || s.get(i).is_some_and(|x| *t == "*" || t == x))
            && (p.last() == Some(&">") || p.len() == s.len())
    };
    fleet()
        .into_iter()
        .filter(|a| a.inputs.iter().any(|i| covers(i.filter.pattern())))
        .map(|a| a.name.to_string())
        .collect()
}

fn rejections_of(records: &[cn_tests::proof_log::StoredRecord], id: &str) -> Vec<ProofRecord> {
    of_kind(records, ProofKind::EventRejected)
        .into_iter()
        .filter(|r| r.correlation_id.as_deref() == Some(id))
        .collect()
}

/// Waits until every agent consuming `subject` rejected the message `id`, and returns why.
async fn rejected_by_every_consumer(fleet: &Fleet, subject: &str, id: &str) -> Vec<ProofRecord> {
    let expected = consumers_of(subject);
    assert!(expected.len() >= 4, "deploy events feed most of the fleet: {expected:?}");
    let records = fleet
        .records_until(&format!("{id} rejected by {expected:?}"), |r| {
            let by: Vec<String> =
                rejections_of(r, id).iter().map(|x| x.agent.to_string()).collect();
            expected.iter().all(|a| by.contains(a))
        })
        .await
        .unwrap();
    rejections_of(&records, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cannot_pull_from_ack_take_over_or_delete_an_agents_durable() {
    let fleet = Fleet::start().await.unwrap();
    let operator = fleet.client_as("operator").await.unwrap();
    let js = jetstream::new(operator.clone());
    let durable = "deploy-agent-onboarding";
    let events = js.get_stream("CN_EVENTS").await.unwrap();
    // Reading its settings is allowed; pulling from it is not.
    let consumer = events
        .get_consumer::<pull::Config>(durable)
        .await
        .expect("the operator reads consumer info");
    let pulled = tokio::time::timeout(Duration::from_secs(3), async {
        let mut batch =
            consumer.fetch().max_messages(1).expires(Duration::from_secs(1)).messages().await?;
        futures_util::StreamExt::next(&mut batch).await.transpose()
    })
    .await;
    assert!(!matches!(pulled, Ok(Ok(Some(_)))), "the operator pulled a message from {durable}");
    assert!(
        denied(&operator, &format!("$JS.API.CONSUMER.MSG.NEXT.CN_EVENTS.{durable}")).await,
        "MSG.NEXT on an agent durable must be denied"
    );
    assert!(
        denied(&operator, &format!("$JS.API.CONSUMER.DELETE.CN_EVENTS.{durable}")).await,
        "the operator may not delete {durable}"
    );
    assert!(events.consumer_info(durable).await.is_ok(), "{durable} is still there");
    // Through the ephemeral create subject, naming the durable: refused by the server.
    let sneak = json!({"stream_name": "CN_EVENTS", "config": {"durable_name": durable, "ack_policy": "none", "deliver_policy": "new", "filter_subject": "cn.requests.onboard.>"}});
    let reply = operator
        .request("$JS.API.CONSUMER.CREATE.CN_EVENTS", sneak.to_string().into())
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(
        answer.get("error").is_some(),
        "the server let the operator redefine {durable}: {answer}"
    );

    // Meanwhile an onboarding request is still decided by the deploy agent.
    let request = json!({"app_name": "ledger", "repo_url": "https://git.example.com/org/ledger.git", "runtime": "backend", "env": "dev"});
    publish_with_id(&fleet, "cn.requests.onboard.dev", &request, "onboard-ledger").await;
    fleet
        .records_until("the onboarding verdict", |r| {
            of_kind(r, ProofKind::OnboardingAccepted)
                .iter()
                .chain(of_kind(r, ProofKind::OnboardingRefused).iter())
                .any(|x| x.correlation_id.as_deref() == Some("onboard-ledger"))
        })
        .await
        .unwrap();
    // The operator's own ephemeral consumers (tail, approvals) still work.
    let out = cnctl(&fleet, "operator", &["approvals", "list"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_agent_consumer_is_recreated_where_the_agent_left_off_and_no_input_is_lost() {
    let mut fleet = Fleet::start().await.unwrap();
    let admin = jetstream::new(fleet.client_as("bootstrap").await.unwrap());
    pipeline_pub(&fleet, "cn.events.metric.stage.alpha", crash("stage", "alpha", true)).await;
    fleet
        .records_until("alpha's incident", |r| {
            !for_service(r, ProofKind::IncidentOpened, "alpha").is_empty()
        })
        .await
        .unwrap();

    // 1. Deleted under a running detector: a crash published meanwhile still opens its incident.
    delete_consumer(&admin, "issue-detector-events").await;
    let beta_seq = publish_with_id(
        &fleet,
        "cn.events.metric.stage.beta",
        &crash("stage", "beta", true),
        "beta-crash",
    )
    .await;
    let records = fleet
        .records_until("beta's incident after the consumer was recreated", |r| {
            !for_service(r, ProofKind::IncidentOpened, "beta").is_empty()
        })
        .await
        .unwrap();
    let recreated: Vec<ProofRecord> = of_kind(&records, ProofKind::ConsumerRecreated)
        .into_iter()
        .filter(|r| r.agent.as_str() == "issue-detector")
        .collect();
    assert_eq!(recreated.len(), 1, "{recreated:#?}");
    assert_eq!(recreated[0].reason.as_deref(), Some("deleted_while_running"));
    assert_eq!(recreated[0].detail["consumer"], "issue-detector-events");
    let from = recreated[0].detail["from_seq"].as_u64().unwrap();
    assert!(
        from > 1 && from <= beta_seq,
        "recreated from {from}: after what was applied, not after beta ({beta_seq})"
    );
    assert_eq!(
        for_service(&records, ProofKind::IncidentOpened, "alpha").len(),
        1,
        "alpha's crash was not read again"
    );

    // 2. Deleted while the detector is down: recreated at start from its stored position.
    tokio::time::sleep(Duration::from_millis(1500)).await; // the position is stored about once a second
    fleet.agent("issue-detector").unwrap().kill9();
    delete_consumer(&admin, "issue-detector-events").await;
    let gamma_seq = publish_with_id(
        &fleet,
        "cn.events.metric.stage.gamma",
        &crash("stage", "gamma", true),
        "gamma-crash",
    )
    .await;
    fleet.agent("issue-detector").unwrap().restart().unwrap();
    let records = fleet
        .records_until("gamma's incident", |r| {
            !for_service(r, ProofKind::IncidentOpened, "gamma").is_empty()
        })
        .await
        .unwrap();
    let at_start: Vec<ProofRecord> = of_kind(&records, ProofKind::ConsumerRecreated)
        .into_iter()
        .filter(|r| r.reason.as_deref() == Some("missing_at_start"))
        .collect();
    assert_eq!(at_start.len(), 1, "{at_start:#?}");
    let from = at_start[0].detail["from_seq"].as_u64().unwrap();
    assert!(
        from > beta_seq && from <= gamma_seq,
        "recreated from {from}, expected after beta ({beta_seq}) and at most gamma ({gamma_seq})"
    );
    for service in ["alpha", "beta", "gamma"] {
        assert_eq!(
            for_service(&records, ProofKind::IncidentOpened, service).len(),
            1,
            "{service}: one incident, none re-read"
        );
    }
    let status = cnctl(&fleet, "operator", &["status", "--json"], None);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let detector = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "issue-detector")
        .unwrap();
    assert!(detector["status"].get("degraded").is_none(), "healthy again: {detector}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_may_not_change_streams_and_refuse_to_run_on_a_weakened_proof_stream() {
    let mut fleet = Fleet::start().await.unwrap();
    let executor = jetstream::new(fleet.client_as("executor").await.unwrap());
    let mut weaker = agent_runtime::streams::config(bus_schema::subject::Stream::Proof);
    weaker.max_messages = 1000;
    let update =
        tokio::time::timeout(Duration::from_secs(5), executor.update_stream(&weaker)).await;
    assert!(!matches!(update, Ok(Ok(_))), "the executor changed CN_PROOF: {update:?}");
    let info = executor.get_stream("CN_PROOF").await.unwrap().info().await.unwrap().config.clone();
    assert!(info.max_messages <= 0, "CN_PROOF is still unlimited: {}", info.max_messages);

    // Only bootstrap may weaken it (e.g. by mistake); then no agent starts on it.
    let admin = jetstream::new(fleet.client_as("bootstrap").await.unwrap());
    weaker.max_age = Duration::from_secs(3600);
    admin.update_stream(&weaker).await.unwrap();
    fleet.agent("executor").unwrap().stop().unwrap();
    let keys = fleet.dir.path().join("keys");
    let data = tempfile::tempdir().unwrap();
    let run = Command::new(binary("executor").unwrap())
        .args([
            "--nats-url",
            &fleet.server.url(),
            "--nats-user",
            "executor",
            "--data-dir",
            &data.path().to_string_lossy(),
            "--verify-key",
        ])
        .arg(keys.join("governance.pub"))
        .arg("--nats-password-file")
        .arg(fleet.password_file("executor"))
        .env_remove("NATS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("CN_PROOF")
            && stderr.contains("max_msgs is 1000")
            && stderr.contains("max_age is 3600s"),
        "{stderr}"
    );
    assert!(stderr.contains("cnctl streams ensure"), "says how to fix it: {stderr}");
    let check = cnctl(&fleet, "operator", &["streams", "check"], None);
    assert_eq!(check.status.code(), Some(1), "{}", String::from_utf8_lossy(&check.stdout));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("CN_PROOF: WEAKENED: max_msgs is 1000")
    );

    // Only the bootstrap step may restore it; then the executor runs again.
    let refused = cnctl(&fleet, "operator", &["streams", "ensure"], None);
    assert!(!refused.status.success(), "the operator may not update streams");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("only the bootstrap user"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let ensure = cnctl(&fleet, "bootstrap", &["streams", "ensure"], None);
    assert!(ensure.status.success(), "{}", String::from_utf8_lossy(&ensure.stderr));
    assert!(cnctl(&fleet, "operator", &["streams", "check"], None).status.success());
    fleet.agent("executor").unwrap().restart().unwrap();
    fleet
        .records_until("the executor started again", |r| {
            of_kind(r, ProofKind::AgentStarted)
                .iter()
                .filter(|x| x.agent.as_str() == "executor")
                .count()
                >= 2
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_rejects_a_far_future_deploy_and_a_version_with_a_bidi_override() {
    let fleet = Fleet::start().await.unwrap();
    let subject = "cn.events.deploy.stage.orders";
    let mut future = deploy("stage", "orders", "2.0.0", Some("1.9.0"), "succeeded");
    future["timestamp"] = json!("2199-01-01T00:00:00Z");
    publish_with_id(&fleet, subject, &future, "deploy-2199").await;
    let rejected = rejected_by_every_consumer(&fleet, subject, "deploy-2199").await;
    for r in &rejected {
        assert_eq!(r.reason.as_deref(), Some("out_of_order"), "{r:#?}");
        assert!(
            r.detail["error"].as_str().unwrap().contains("ahead of the clock at arrival"),
            "{r:#?}"
        );
    }

    let reversed = deploy("stage", "orders", "2.0.1", Some("1.9.0\u{202e}1.2"), "failed");
    publish_with_id(&fleet, subject, &reversed, "deploy-bidi").await;
    for r in rejected_by_every_consumer(&fleet, subject, "deploy-bidi").await {
        assert_eq!(r.reason.as_deref(), Some("invalid_field"), "{r:#?}");
        assert!(
            r.detail["error"].as_str().unwrap().contains("previous_version")
                && r.detail["error"].as_str().unwrap().contains("U+202E"),
            "{r:#?}"
        );
    }
    // A deploy stamped now, with a clean version, still flows.
    let good = deploy("stage", "orders", "2.0.2", Some("2.0.1"), "succeeded");
    publish_with_id(&fleet, subject, &good, "deploy-good").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records = fleet.records().await.unwrap();
    assert!(
        rejections_of(&records, "deploy-good").is_empty(),
        "{:#?}",
        rejections_of(&records, "deploy-good")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_onboards_with_the_ci_role_which_cannot_approve_and_the_auditor_sees_status() {
    let fleet = Fleet::start().await.unwrap();
    let out = cnctl(
        &fleet,
        "ci",
        &[
            "onboard",
            "--app",
            "billing",
            "--repo",
            "https://git.example.com/org/billing.git",
            "--runtime",
            "backend",
            "--env",
            "dev",
            "--wait",
            "30s",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("billing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // ci may not decide approvals, nor pull from an agent's durable.
    let ci = fleet.client_as("ci").await.unwrap();
    let decision = json!({"proposal_id": bus_schema::Uuid::new_v4(), "decision": "approve", "operator": "ci", "reason": "x"});
    let js = jetstream::new(ci.clone());
    let stored = tokio::time::timeout(Duration::from_secs(2), async {
        js.publish("cn.approvals.prod.billing", decision.to_string().into())
            .await?
            .await
            .map_err(Into::into)
    })
    .await;
    assert!(!matches!(stored, Ok(Ok::<_, async_nats::Error>(_))), "ci stored a human decision");
    assert!(denied(&ci, "$JS.API.CONSUMER.MSG.NEXT.CN_WORK.governance-gate-proposals").await);

    let status = cnctl(&fleet, "auditor", &["status"], None);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}\n{}", String::from_utf8_lossy(&status.stderr));
    assert!(text.contains("governance-gate") && !text.contains("MISSING"), "{text}");
    let pipeline = cnctl(&fleet, "pipeline", &["status", "--wait", "300ms"], None);
    assert!(
        String::from_utf8_lossy(&pipeline.stderr).contains("may not ask"),
        "{}",
        String::from_utf8_lossy(&pipeline.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_reusing_one_message_id_are_each_rejected_on_the_record() {
    let fleet = Fleet::start().await.unwrap();
    let pipeline = fleet.client_as("pipeline").await.unwrap();
    for service in ["h-a", "h-b", "h-c"] {
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::MSG_ID, "same-id");
        h.insert(headers::CONTENT_TYPE, headers::JSON);
        let reply = pipeline
            .request_with_headers(
                format!("cn.negotiate.stage.{service}"),
                h,
                "{\"not\": \"a counter-proposal\"}".into(),
            )
            .await
            .unwrap();
        assert!(
            reply.headers.as_ref().and_then(|h| h.get(headers::ERROR)).is_some(),
            "{service}: answered with an error"
        );
    }
    let records = fleet
        .records_until("three rejections", |r| rejections_of(r, "same-id").len() >= 3)
        .await
        .unwrap();
    let subjects: Vec<String> = rejections_of(&records, "same-id")
        .iter()
        .map(|r| r.detail["subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        subjects,
        ["cn.negotiate.stage.h-a", "cn.negotiate.stage.h-b", "cn.negotiate.stage.h-c"]
    );
}

/// A rejection the agent cannot record is not answered as a refusal without a record: the
/// requester is told `Cn-Error: retry`, and asked again with the same message id once the
/// proof log takes records again, the request is rejected on the record, once. (The proof log
/// is made to refuse records by shrinking CN_PROOF's largest message, which removes nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_that_cannot_be_recorded_is_answered_retry_and_recorded_when_asked_again() {
    let mut fleet = Fleet::start().await.unwrap();
    let admin = jetstream::new(fleet.client_as("bootstrap").await.unwrap());
    let config = admin.get_stream("CN_PROOF").await.unwrap().info().await.unwrap().config.clone();
    let set_max_size = |max_message_size: i32| {
        let (admin, config) = (admin.clone(), config.clone());
        async move {
            admin
                .update_stream(jetstream::stream::Config { max_message_size, ..config })
                .await
                .unwrap();
        }
    };
    let pipeline = fleet.client_as("pipeline").await.unwrap();
    let ask = || {
        let pipeline = pipeline.clone();
        async move {
            let mut h = async_nats::HeaderMap::new();
            h.insert(headers::MSG_ID, "unrecorded-1");
            h.insert(headers::CONTENT_TYPE, headers::JSON);
            let reply = pipeline
                .request_with_headers(
                    "cn.negotiate.stage.h-retry".to_owned(),
                    h,
                    "{\"not\": 1".into(),
                )
                .await
                .unwrap();
            let error = reply
                .headers
                .as_ref()
                .and_then(|h| h.get(headers::ERROR))
                .map(|v| v.as_str().to_owned());
            (error, String::from_utf8_lossy(&reply.payload).into_owned())
        }
    };

    set_max_size(64).await;
    let (error, body) = ask().await;
    assert_eq!(error.as_deref(), Some("retry"), "{body}");
    assert!(body.contains("could not record the rejection"), "{body}");
    assert!(
        fleet.agent("risk-negotiator").unwrap().exited().is_none(),
        "the negotiator keeps running"
    );

    set_max_size(config.max_message_size).await;
    let (error, body) = ask().await;
    assert_eq!(error.as_deref(), Some("malformed"), "{body}");
    let records = fleet
        .records_until("the rejection", |r| !rejections_of(r, "unrecorded-1").is_empty())
        .await
        .unwrap();
    let rejected = rejections_of(&records, "unrecorded-1");
    assert_eq!(rejected.len(), 1, "recorded once: {rejected:?}");
    assert_eq!(rejected[0].agent.as_str(), "risk-negotiator");
    assert_eq!(rejected[0].detail["subject"], "cn.negotiate.stage.h-retry");
}

/// Deletes a consumer of CN_EVENTS as an admin would. nats-server 2.9.10 sometimes fails to
/// delete a consumer while it is writing the consumer's state ("unlinkat …: directory not
/// empty", 10051); an admin tries again, and so does this, until the consumer is gone.
async fn delete_consumer(admin: &jetstream::Context, durable: &str) {
    cn_tests::eventually(Duration::from_secs(10), "the consumer to be deleted", || async {
        match admin.delete_consumer_from_stream(durable, "CN_EVENTS").await {
            Ok(_) => Ok(Some(())),
            Err(e) if e.to_string().contains("consumer not found") => Ok(Some(())),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        }
    })
    .await
    .unwrap();
}

/// No user has `allow_responses`: an agent's user reads replies under its own inbox prefix
/// only, so a stolen agent credential cannot listen in on the replies other clients get
/// (status answers, JetStream acks, pulled messages). The operator, whose inbox is the default
/// one, hears the same replies: the check would see a leak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_credential_cannot_listen_in_on_other_clients_replies() {
    let fleet = Fleet::start().await.unwrap();
    let listen_as = |user: &'static str| {
        let fleet = &fleet;
        async move {
            // The default inbox prefix: listening where other clients get their replies.
            let client = fleet.options_as(user).unwrap().connect(fleet.server.url()).await.unwrap();
            let sub = client.subscribe("_INBOX.>").await.unwrap();
            client.flush().await.unwrap();
            (client, sub)
        }
    };
    let (_executor, mut executor_heard) = listen_as("executor").await;
    let (_operator, mut operator_heard) = listen_as("operator").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let status = cnctl(&fleet, "auditor", &["status"], None);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    assert!(heard(&mut operator_heard).await, "the control: a default inbox hears the replies");
    assert!(!heard(&mut executor_heard).await, "the executor's user heard someone else's reply");
}

/// Whether `sub` receives a message within half a second.
async fn heard(sub: &mut async_nats::Subscriber) -> bool {
    use futures_util::StreamExt;
    matches!(tokio::time::timeout(Duration::from_millis(500), sub.next()).await, Ok(Some(_)))
}
