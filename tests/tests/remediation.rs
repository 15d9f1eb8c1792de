//! Remediation that keeps going until the service is well, through the fleet of real binaries:
//! events published the way pipelines publish them (JSON, optional fields left out), the
//! verification window moved by the samples' own timestamps, assertions on the proof log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::time::Duration;

use bus_schema::Action;
use bus_schema::proof::{ProofKind, ProofRecord};
use cn_tests::fleet::Fleet;
use cn_tests::proof_log::{StoredRecord, of_kind};
use cn_tests::scenario::{cnctl, for_service, metric_at, pipeline_pub};
use serde_json::{Value, json};

/// The fleet, with a policy for governance and the optimizer that is the defaults with a restart
/// cooldown short enough for a test that restarts the same service twice within a minute.
async fn fleet_with_quick_restarts() -> Fleet {
    Fleet::start_with_policy("[cooldowns]\nrestart = \"1s\"\n").await.unwrap()
}

fn at(offset_s: i64) -> Value {
    metric_at("stage", "x", offset_s, json!({}))["timestamp"].clone()
}

fn deploy_at(service: &str, version: &str, previous: Option<&str>, offset_s: i64) -> Value {
    json!({"service": service, "env": "stage", "version": version, "previous_version": previous, "status": "succeeded", "timestamp": at(offset_s)})
}

fn count(records: &[StoredRecord], kind: ProofKind, pred: impl Fn(&ProofRecord) -> bool) -> usize {
    of_kind(records, kind).iter().filter(|r| pred(r)).count()
}

/// The realistic pipeline: `crash_looping` only while crashing, then its usual metrics without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_crash_loops_reported_only_while_crashing_are_restarted_resolved_and_restarted_again()
{
    const N: usize = 60;
    let fleet = fleet_with_quick_restarts().await;
    let base = -2400; // 40 minutes ago, in the samples' own clock
    let services: Vec<String> = (0..N).map(|n| format!("svc-{n:02}")).collect();
    let metric = |s: &str, offset: i64, fields: Value| {
        let mut m = metric_at("stage", s, offset, fields);
        m["source"] = json!("prometheus");
        m
    };

    // Deployed, then crash-looping once.
    for s in &services {
        pipeline_pub(
            &fleet,
            &format!("cn.events.deploy.stage.{s}"),
            deploy_at(s, "1.0.0", None, base),
        )
        .await;
        pipeline_pub(
            &fleet,
            &format!("cn.events.metric.stage.{s}"),
            metric(s, base + 10, json!({"crash_looping": true, "restarts": 3})),
        )
        .await;
    }
    let restarted = |r: &ProofRecord| r.action == Some(Action::Restart);
    fleet
        .records_until("every crash loop restarted", |r| {
            count(r, ProofKind::ActionExecuted, restarted) >= N
        })
        .await
        .unwrap();

    // Then healthy, as the pipeline reports it: latency and errors, the restart counter steady,
    // no crash_looping field — for ten minutes of the service's time.
    for k in 1..=20 {
        for s in &services {
            pipeline_pub(
                &fleet,
                &format!("cn.events.metric.stage.{s}"),
                metric(
                    s,
                    base + 10 + 30 * k,
                    json!({"error_rate": 0.001, "p95_latency_ms": 140, "restarts": 3}),
                ),
            )
            .await;
        }
    }
    let recovered = |r: &ProofRecord| r.detail["recovered"] == json!(true);
    let records = fleet
        .records_until("every incident resolved and every restart judged recovered", |r| {
            count(r, ProofKind::IncidentResolved, |_| true) >= N
                && count(r, ProofKind::OutcomeRecorded, recovered) >= N
        })
        .await
        .unwrap();
    for s in &services {
        let opened = for_service(&records, ProofKind::IncidentOpened, s);
        let resolved = for_service(&records, ProofKind::IncidentResolved, s);
        assert_eq!((opened.len(), resolved.len()), (1, 1), "{s}: one incident, resolved once");
        assert_eq!(opened[0].detail["kind"], "crash_loop");
        let outcome = for_service(&records, ProofKind::OutcomeRecorded, s).remove(0);
        assert_eq!(
            (outcome.action.clone(), &outcome.detail["recovered"]),
            (Some(Action::Restart), &json!(true)),
            "{s}: {outcome:#?}"
        );
    }
    assert_eq!(count(&records, ProofKind::ActionRefused, |_| true), 0, "nothing refused");

    // Twenty minutes later (past the flap window) each crash-loops again: still restarted.
    for s in &services {
        pipeline_pub(
            &fleet,
            &format!("cn.events.metric.stage.{s}"),
            metric(s, base + 1800, json!({"crash_looping": true, "restarts": 4})),
        )
        .await;
    }
    let records = fleet
        .records_until("every second crash loop restarted", |r| {
            count(r, ProofKind::ActionExecuted, restarted) >= 2 * N
        })
        .await
        .unwrap();
    let proposed = of_kind(&records, ProofKind::ActionProposed);
    assert_eq!(
        proposed.len(),
        2 * N,
        "a proposal per crash loop and nothing else: {:?}",
        proposed.iter().map(|p| &p.action).collect::<Vec<_>>()
    );
    assert!(
        proposed
            .iter()
            .all(|p| p.action == Some(Action::Restart) && p.detail["propensity"] == json!(1.0))
    );

    // Off-policy evaluation from this log: the optimizer's own table is what ran, so the logs
    // support its estimate; a table that would do nothing instead never ran (no exploration by
    // default), so they cannot.
    let own = cnctl(&fleet, "operator", &["policy", "evaluate"], None);
    let text = String::from_utf8_lossy(&own.stdout);
    assert_eq!(own.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&own.stderr));
    let decisions: usize = text
        .split("decisions with an outcome or refusal: ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(decisions >= N, "every judged restart is a decision: {text}");
    assert!(text.contains("the logs support this estimate"), "{text}");
    let shown = cnctl(&fleet, "operator", &["policy", "show", "--json"], None);
    let mut table: Value = serde_json::from_slice(&shown.stdout).unwrap();
    let mut flipped = Vec::new();
    for e in table["entries"].as_array().unwrap() {
        flipped.push(json!({"state": e["state"], "action": "restart", "value": -2.0, "visits": 0}));
        flipped.push(json!({"state": e["state"], "action": "noop", "value": 2.0, "visits": 0}));
    }
    table["entries"] = json!(flipped);
    let file = fleet.dir.path().join("do-nothing.json");
    std::fs::write(&file, table.to_string()).unwrap();
    let other = cnctl(
        &fleet,
        "operator",
        &["policy", "evaluate", "--table", file.to_str().unwrap(), "--json"],
        None,
    );
    let report: Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(other.status.code(), Some(1), "{report}");
    assert_eq!(report["report"]["supported"], false, "{report}");
    assert_eq!(report["report"]["agreed"], 0, "{report}");
}

/// A crash loop after a deploy that nothing the executor does (dry-run) cures: each action's
/// verdict is followed by the next candidate at once, and after three a human is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_that_does_not_cure_is_followed_by_the_next_and_a_spent_budget_goes_to_a_human() {
    let fleet = Fleet::start().await.unwrap();
    let (s, subject) = ("ledger", "cn.events.metric.stage.ledger");
    let base = -3000; // 50 minutes ago
    // Healthy for five minutes on 1.0.0, then 1.1.0 is deployed and it crash-loops.
    pipeline_pub(&fleet, "cn.events.deploy.stage.ledger", deploy_at(s, "1.0.0", None, base)).await;
    for k in 0..10 {
        pipeline_pub(
            &fleet,
            subject,
            metric_at(
                "stage",
                s,
                base + 30 * k,
                json!({"crash_looping": false, "error_rate": 0.001}),
            ),
        )
        .await;
    }
    pipeline_pub(
        &fleet,
        "cn.events.deploy.stage.ledger",
        deploy_at(s, "1.1.0", Some("1.0.0"), base + 300),
    )
    .await;
    let mut t = base + 360;
    pipeline_pub(
        &fleet,
        subject,
        metric_at("stage", s, t, json!({"crash_looping": true, "restarts": 5})),
    )
    .await;

    let mut actions = Vec::new();
    for round in 1..=3 {
        let records = fleet
            .records_until("the next action executed", |r| {
                for_service(r, ProofKind::ActionExecuted, s).len() >= round
            })
            .await
            .unwrap();
        let executed = for_service(&records, ProofKind::ActionExecuted, s).remove(round - 1);
        actions.push(executed.action.clone().unwrap());
        // The crash loop goes on for one verification window (5 min of the service's time)...
        for _ in 0..11 {
            t += 30;
            pipeline_pub(
                &fleet,
                subject,
                metric_at("stage", s, t, json!({"crash_looping": true, "restarts": 5})),
            )
            .await;
        }
        // ... and the verdict is followed by the next proposal with no further sample.
        let records = fleet
            .records_until("the verdict and the next proposal", |r| {
                for_service(r, ProofKind::OutcomeRecorded, s).len() >= round
                    && for_service(r, ProofKind::ActionProposed, s).len() > round
            })
            .await
            .unwrap();
        let outcome = for_service(&records, ProofKind::OutcomeRecorded, s).remove(round - 1);
        assert_eq!(outcome.detail["recovered"], json!(false), "{outcome:#?}");
        let next = for_service(&records, ProofKind::ActionProposed, s).remove(round);
        assert_eq!(
            next.detail["trigger"],
            json!(format!("outcome:{}", outcome.proposal_id.unwrap())),
            "{next:#?}"
        );
    }
    // restart, then the rollback the evidence against 1.1.0 offers, then scale_up: never twice.
    assert_eq!(actions, [Action::Restart, Action::Rollback, Action::ScaleUp]);

    // The budget of three is spent: a human is asked, with what was tried.
    let records = fleet
        .records_until("the escalation", |r| {
            !for_service(r, ProofKind::ActionPendingApproval, s).is_empty()
        })
        .await
        .unwrap();
    let escalation = for_service(&records, ProofKind::ActionProposed, s).remove(3);
    assert_eq!(escalation.detail["require_human"], json!(true), "{escalation:#?}");
    let why = escalation.detail["explanation"].as_str().unwrap();
    assert!(
        why.contains("budget of 3 actions")
            && why.contains(
                "restart (not recovered), rollback (not recovered), scale_up (not recovered)"
            ),
        "{why}"
    );
    let pending = for_service(&records, ProofKind::ActionPendingApproval, s).remove(0);
    assert_eq!(pending.proposal_id, escalation.proposal_id);
    assert!(pending.detail["why"].as_str().unwrap().contains("asks a human"), "{pending:#?}");
    // The on-call sees it where they look for what waits for them.
    let list = cnctl(&fleet, "operator", &["approvals", "list"], None);
    let text = String::from_utf8_lossy(&list.stdout);
    let short = &escalation.proposal_id.unwrap().to_string()[..8];
    assert!(
        list.status.success() && text.contains(short) && text.contains("stage/ledger"),
        "{text}\n{}",
        String::from_utf8_lossy(&list.stderr)
    );
    // And nothing more is tried on its own.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = fleet.records().await.unwrap();
    assert_eq!(for_service(&records, ProofKind::ActionProposed, s).len(), 4);
    assert!(
        for_service(&records, ProofKind::ActionRefused, s).is_empty(),
        "{:#?}",
        for_service(&records, ProofKind::ActionRefused, s)
    );
}

/// A pipeline that scrapes on an interval sends each service's samples as one batch
/// (`cn.events.metric-batch`): the crash inside a batch is restarted like a single sample's, a
/// sample far behind the others is not judged while the rest are (one record for the batch,
/// with env, service and the sample's place in it), and a batch with an invalid sample is
/// rejected whole, naming the sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loops_sent_in_metric_batches_are_restarted_and_a_late_sample_is_rejected_alone() {
    const N: usize = 8;
    let fleet = fleet_with_quick_restarts().await;
    let base = -2400;
    let services: Vec<String> = (0..N).map(|n| format!("batch-{n}")).collect();
    let healthy = json!({"error_rate": 0.001, "p95_latency_ms": 140, "restarts": 3});
    for s in &services {
        pipeline_pub(
            &fleet,
            &format!("cn.events.deploy.stage.{s}"),
            deploy_at(s, "1.0.0", None, base),
        )
        .await;
        let batch = json!({"samples": [
            metric_at("stage", s, base + 10, healthy.clone()),
            metric_at("stage", s, base + 40, healthy.clone()),
            metric_at("stage", s, base - 3600, healthy.clone()), // an hour behind: not judged
            metric_at("stage", s, base + 70, json!({"crash_looping": true, "restarts": 4})),
        ]});
        pipeline_pub(&fleet, &format!("cn.events.metric-batch.stage.{s}"), batch).await;
    }
    let restarted = |r: &ProofRecord| r.action == Some(Action::Restart);
    let records = fleet
        .records_until("every crash loop in a batch restarted", |r| {
            count(r, ProofKind::ActionExecuted, restarted) >= N
        })
        .await
        .unwrap();
    for s in &services {
        let opened = for_service(&records, ProofKind::IncidentOpened, s);
        assert_eq!(opened.len(), 1, "{s}: one incident");
        assert_eq!(opened[0].detail["kind"], "crash_loop");
        let rejected = for_service(&records, ProofKind::EventRejected, s);
        assert_eq!(rejected.len(), 1, "{s}: the late sample alone: {rejected:#?}");
        assert_eq!(rejected[0].reason.as_deref(), Some("out_of_order"));
        assert_eq!(rejected[0].detail["rejected"], 1, "{s}");
        assert_eq!(rejected[0].detail["samples"][0]["sample"], 2, "{s}");
        assert!(rejected[0].detail["error"].as_str().unwrap().contains("behind"), "{s}");
    }

    // Then healthy again, ten minutes of samples in two batches: resolved and judged recovered.
    for s in &services {
        for half in 0..2 {
            let samples: Vec<Value> = (1..=10)
                .map(|k| metric_at("stage", s, base + 70 + 30 * (10 * half + k), healthy.clone()))
                .collect();
            pipeline_pub(
                &fleet,
                &format!("cn.events.metric-batch.stage.{s}"),
                json!({"samples": samples}),
            )
            .await;
        }
    }
    let recovered = |r: &ProofRecord| r.detail["recovered"] == json!(true);
    fleet
        .records_until("every incident from a batch resolved and judged recovered", |r| {
            count(r, ProofKind::IncidentResolved, |_| true) >= N
                && count(r, ProofKind::OutcomeRecorded, recovered) >= N
        })
        .await
        .unwrap();

    // A batch with one invalid sample: rejected whole by every reader, naming the sample.
    let s = &services[0];
    let mut bad = metric_at("stage", s, base + 800, healthy.clone());
    bad["error_rate"] = json!(7);
    let batch = json!({"samples": [metric_at("stage", s, base + 790, json!({"crash_looping": true})), bad]});
    pipeline_pub(&fleet, &format!("cn.events.metric-batch.stage.{s}"), batch).await;
    let records = fleet
        .records_until("the invalid batch rejected by both its readers", |r| {
            of_kind(r, ProofKind::EventRejected)
                .iter()
                .filter(|r| r.reason.as_deref() == Some("out_of_range"))
                .count()
                >= 2
        })
        .await
        .unwrap();
    let invalid: Vec<_> = of_kind(&records, ProofKind::EventRejected)
        .into_iter()
        .filter(|r| r.reason.as_deref() == Some("out_of_range"))
        .collect();
    let mut readers: Vec<&str> = invalid.iter().map(|r| r.agent.as_str()).collect();
    readers.sort_unstable();
    assert_eq!(readers, ["deploy-agent", "issue-detector"]);
    for r in &invalid {
        let error = r.detail["error"].as_str().unwrap();
        assert!(error.starts_with("samples[1].error_rate = 7"), "{error}");
    }
    assert_eq!(
        for_service(&records, ProofKind::IncidentOpened, s).len(),
        1,
        "the crash in the rejected batch was not applied"
    );
}
