//! Webhooks when a human is needed, against the real fleet: a failed prod deploy makes
//! governance ask a human about a rollback; the console posts it to a CloudEvents webhook whose
//! first answer is a 503 and to a Slack-compatible one. The CloudEvents receiver gets it once,
//! on the second try; each delivery has its `notification_sent` record on the console's chain;
//! a restarted console does not post it again; the chain verifies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::time::Duration;

use bus_schema::proof::{ProofKind, ProofRecord};
use cn_tests::console::Console;
use cn_tests::fleet::Fleet;
use cn_tests::http_sink::HttpSink;
use cn_tests::proof_log::StoredRecord;
use cn_tests::scenario::{cnctl, failed_prod_deploy, http_get};
use serde_json::Value;

fn notifications(records: &[StoredRecord], kind: ProofKind) -> Vec<ProofRecord> {
    records
        .iter()
        .filter_map(|r| r.record.clone())
        .filter(|r| r.kind == kind && r.agent.as_str() == "console")
        .collect()
}

/// How many proof records the console has read (its page's state says).
fn records_read(console: &Console) -> usize {
    let response = http_get(&console.addr, "/api/state").unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let state: Value = serde_json::from_str(body).unwrap_or_default();
    state["records"].as_u64().unwrap_or(0).try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_rollback_is_posted_once_despite_a_failure_and_not_again_after_a_restart() {
    let fleet = Fleet::start().await.unwrap();
    let cloudevents = HttpSink::failing_first(1).unwrap();
    let slack = HttpSink::start().unwrap();
    let state = tempfile::tempdir().unwrap();
    let args = [
        "--webhook".to_owned(),
        cloudevents.url("/hooks/cn?token=secret"),
        "--slack-webhook".to_owned(),
        slack.url("/services/T0/B0/SECRET"),
        "--state-dir".to_owned(),
        state.path().display().to_string(),
        "--public-url".to_owned(),
        "http://console.example:9464".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let console = Console::start(&fleet, "console", &args, &[]).unwrap();

    failed_prod_deploy(&fleet, "payments").await;
    let records = fleet
        .records_until("both notifications to be recorded as sent", |r| {
            notifications(r, ProofKind::NotificationSent).len() >= 2
        })
        .await
        .unwrap();
    let pending = records
        .iter()
        .filter_map(|r| r.record.clone())
        .find(|r| r.kind == ProofKind::ActionPendingApproval)
        .unwrap();
    let proposal = pending.proposal_id.unwrap().to_string();

    // The CloudEvents receiver: one 503, then the event, once.
    let got = cloudevents.requests();
    assert_eq!(got.iter().map(|r| r.status).collect::<Vec<_>>(), [503, 200], "{got:?}");
    assert_eq!(got[0].body, got[1].body, "the retry posts the same event");
    let delivered = &got[1];
    assert_eq!(delivered.path(), "/hooks/cn?token=secret");
    assert_eq!(delivered.header("content-type").as_deref(), Some("application/cloudevents+json"));
    let event: Value = serde_json::from_slice(&delivered.body).unwrap();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "cn.v1.notification.approval_pending");
    assert_eq!(event["subject"], "prod/payments");
    assert_eq!(event["data"]["proposal_id"], proposal.as_str());
    assert_eq!(event["data"]["action"], "rollback");
    assert_eq!(event["data"]["console"], "http://console.example:9464");
    assert!(event["data"]["why"].as_str().unwrap().contains("human"), "{event}");

    // The Slack-compatible one: text a person reads.
    let got = slack.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    let text: Value = serde_json::from_slice(&got[0].body).unwrap();
    let text = text["text"].as_str().unwrap();
    assert!(text.contains("rollback on prod/payments waits for your approval"), "{text}");
    assert!(text.contains(&format!("cnctl approvals approve|deny {proposal}")), "{text}");

    // The proof records: one per delivery, naming the target by host only.
    let sent = notifications(&records, ProofKind::NotificationSent);
    let to = |format: &str| sent.iter().find(|r| r.detail["format"] == format).unwrap();
    let ce = to("cloudevents");
    assert_eq!(ce.detail["attempts"], 2, "{:?}", ce.detail);
    assert_eq!(ce.proposal_id, pending.proposal_id);
    assert_eq!(to("slack").detail["attempts"], 1);
    let shown = serde_json::to_string(&sent.iter().map(|r| &r.detail).collect::<Vec<_>>()).unwrap();
    assert!(!shown.contains("secret") && !shown.contains("SECRET"), "{shown}");
    assert!(notifications(&records, ProofKind::NotificationFailed).is_empty());

    // A restarted console reads its own records and posts nothing again.
    drop(console);
    let again = Console::start(&fleet, "console", &args, &[]).unwrap();
    let stored = fleet.records().await.unwrap().len();
    cn_tests::eventually(Duration::from_secs(10), "the restarted console to read the log", || {
        let read = records_read(&again);
        async move { Ok((read >= stored).then_some(())) }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cloudevents.requests().len(), 2, "no new post after the restart");
    assert_eq!(slack.requests().len(), 1, "no new post after the restart");

    let verify = cnctl(&fleet, "auditor", &["proof", "verify"], None);
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{out}{}", String::from_utf8_lossy(&verify.stderr));
    assert!(out.contains("console"), "the console's chain is verified too: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_answers_well_is_recorded_as_failed() {
    let fleet = Fleet::start().await.unwrap();
    let down = HttpSink::failing_first(usize::MAX).unwrap();
    let state = tempfile::tempdir().unwrap();
    let url = down.url("/hook");
    let dir = state.path().display().to_string();
    let args = ["--webhook", &url, "--webhook-attempts", "2", "--state-dir", &dir];
    let _console = Console::start(&fleet, "console", &args, &[]).unwrap();
    failed_prod_deploy(&fleet, "payments").await;
    let records = fleet
        .records_until("the failure to be recorded", |r| {
            !notifications(r, ProofKind::NotificationFailed).is_empty()
        })
        .await
        .unwrap();
    let failed = &notifications(&records, ProofKind::NotificationFailed)[0];
    assert_eq!(failed.detail["attempts"], 2, "{:?}", failed.detail);
    assert!(failed.detail["error"].as_str().unwrap().contains("503"), "{:?}", failed.detail);
    assert_eq!(down.requests().len(), 2);
}
