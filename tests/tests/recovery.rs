//! Recovery from a snapshot plus replay. Agents write their state file about once a second and
//! ack inputs as soon as their effects are stored on JetStream, so a SIGKILL loses up to a
//! second of state; at the next start each agent replays what it handled after its last
//! snapshot. Killed in the middle of a burst, nothing acked may be lost, no effect may happen
//! twice, and every proof chain must verify.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use bus_schema::Timestamp;
use bus_schema::proof::ProofKind;
use cn_tests::chaos::judge;
use cn_tests::fleet::Fleet;
use cn_tests::{eventually, proof_log};
use policy::Policy;
use serde_json::json;

const SERVICES: usize = 24;
const SAMPLES_EACH: usize = 60;
/// The agents killed mid-burst: the whole chain from sample to execution, and the negotiator,
/// which learns from the same incidents and writes what it learned only at its checkpoints.
const KILLED: [&str; 5] =
    ["issue-detector", "rl-optimizer", "governance-gate", "executor", "risk-negotiator"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_killed_mid_burst_recover_from_snapshot_and_replay_losing_and_repeating_nothing() {
    let mut fleet = Fleet::start().await.unwrap();
    let js = jetstream::new(fleet.client_as("pipeline").await.unwrap());
    let services: Vec<String> = (0..SERVICES).map(|i| format!("burst-{i:02}")).collect();

    // Every service crash-loops; samples interleave across services, as many pipelines would.
    let mut acks = Vec::new();
    for n in 0..SAMPLES_EACH {
        for s in &services {
            let body = json!({"service": s, "env": "stage", "crash_looping": true,
                "restarts": n + 1, "timestamp": Timestamp::now()});
            let subject = format!("cn.events.metric.stage.{s}");
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("burst-{s}-{n}").as_str());
            headers.insert("Content-Type", "application/json");
            let ack = js
                .publish_with_headers(subject, headers, serde_json::to_vec(&body).unwrap().into())
                .await
                .unwrap();
            acks.push(ack);
        }
        if n == SAMPLES_EACH / 3 {
            // A third of the burst is out: the agents are busy with it when they die.
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            for agent in KILLED {
                fleet.agent(agent).unwrap().kill9();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            for agent in KILLED {
                fleet.agent(agent).unwrap().restart().unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }

    let records = fleet
        .records_until("every service's crash loop to be executed on", |records| {
            let executed = of_kind_by_service(records, ProofKind::ActionExecuted);
            services.iter().all(|s| executed.contains_key(s.as_str()))
        })
        .await
        .unwrap();

    // Nothing acked was lost: the detector finished every sample.
    let operator = jetstream::new(fleet.client_as("operator").await.unwrap());
    eventually(Duration::from_secs(30), "the detector to finish the burst", || async {
        let stream = operator.get_stream("CN_EVENTS").await?;
        let info = stream.consumer_info("issue-detector-events").await?;
        Ok((info.num_pending == 0 && info.num_ack_pending == 0).then_some(()))
    })
    .await
    .unwrap();
    let records = fleet.records().await.unwrap_or(records);

    let opened = of_kind_by_service(&records, ProofKind::IncidentOpened);
    for s in &services {
        assert_eq!(
            opened.get(s.as_str()).copied(),
            Some(1),
            "{s}: one crash loop, one incident (none lost, none opened twice): {opened:?}"
        );
    }
    let decisions = judge::decisions(&records, &Policy::default());
    assert!(decisions.executed_twice.is_empty(), "{:?}", decisions.executed_twice);
    assert!(decisions.without_approval.is_empty(), "{:?}", decisions.without_approval);
    let proof = judge::proof(&records);
    assert!(proof.intact, "{:?}", proof.breaks);
    assert_eq!(
        proof_log::of_kind(&records, ProofKind::AgentStarted).len(),
        7 + KILLED.len(),
        "each killed agent started once more"
    );
    // The point of the test: the detector did recover by replaying after its snapshot.
    let log = fleet.agent("issue-detector").unwrap().log();
    for line in log.lines().filter(|l| l.contains("replay")) {
        eprintln!("issue-detector: {line}");
    }
    assert!(log.contains("replaying the inputs handled after the last snapshot"), "{log}");
    assert!(log.contains("replay finished"), "{log}");
}

/// How many records of `kind` each service has.
fn of_kind_by_service(
    records: &[proof_log::StoredRecord],
    kind: ProofKind,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in proof_log::of_kind(records, kind) {
        if let Some(s) = &r.service {
            *out.entry(s.to_string()).or_insert(0) += 1;
        }
    }
    out
}
