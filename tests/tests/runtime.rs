//! The agent runtime end to end against a real nats-server, with a small probe agent:
//! bad input is rejected and recorded, poison is bounded, redeliveries produce no duplicate
//! outputs, shutdown finishes the input in hand, and the agent is discoverable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::time::Duration;

use async_nats::jetstream;
use bus_schema::proof::ProofKind;
use bus_schema::{AgentStatus, Heartbeat, Timestamp};
use cn_tests::probe::{Probe, spec};
use cn_tests::{NatsServer, RunningAgent, eventually, proof_log, runtime_args};
use futures_util::StreamExt;
use serde_json::json;

fn metric(service: &str, n: u64) -> String {
    let ts =
        Timestamp::from_unix_nanos(1_790_000_000_000_000_000 + i128::from(n) * 1_000_000).unwrap();
    json!({"service": service, "env": "prod", "crash_looping": true, "timestamp": ts.to_string()})
        .to_string()
}

async fn publish(
    js: &jetstream::Context,
    subject: &str,
    body: impl Into<bytes::Bytes>,
) -> anyhow::Result<()> {
    js.publish(subject.to_owned(), body.into()).await?.await?;
    Ok(())
}

async fn records_until(
    js: &jetstream::Context,
    what: &str,
    done: impl Fn(&[proof_log::StoredRecord]) -> bool,
) -> anyhow::Result<Vec<proof_log::StoredRecord>> {
    eventually(Duration::from_secs(20), what, || async {
        let records = proof_log::read_all(js).await?;
        Ok(done(&records).then_some(records))
    })
    .await
}

async fn incidents_for(js: &jetstream::Context, service: &str) -> anyhow::Result<u64> {
    let stream = js.get_stream("CN_WORK").await?;
    let mut subjects = stream.info_with_subjects(format!("cn.incidents.prod.{service}")).await?;
    let mut total = 0;
    while let Some(entry) = subjects.next().await {
        total += entry?.1 as u64;
    }
    Ok(total)
}

struct Fixture {
    server: NatsServer,
    dir: tempfile::TempDir,
    js: jetstream::Context,
}

async fn fixture() -> anyhow::Result<Fixture> {
    let server = NatsServer::start()?;
    let js = jetstream::new(server.client().await?);
    Ok(Fixture { dir: tempfile::tempdir()?, js, server })
}

impl Fixture {
    async fn start(&self, probe: Probe, extra: &[&str]) -> anyhow::Result<RunningAgent> {
        let args = runtime_args(&self.server.url(), self.dir.path(), "0", extra)?;
        RunningAgent::start(spec(), args, probe).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_with_its_reason_and_the_next_good_event_is_processed()
-> anyhow::Result<()> {
    let f = fixture().await?;
    let agent = f.start(Probe::default(), &[]).await?;
    let js = &f.js;
    publish(js, "cn.events.metric.prod.api", "{\"service\": \"api\", ").await?;
    publish(js, "cn.events.metric.prod.pay.ments", metric("pay", 1)).await?;
    publish(js, "cn.events.metric.prod.api", json!({"service":"api","env":"prod","error_rate":"high","timestamp":"2026-02-20T17:01:00Z"}).to_string()).await?;
    publish(
        js,
        "cn.events.metric.prod.api",
        json!({"service":"api","env":"prod","cpu_percent":140,"timestamp":"2026-02-20T17:01:00Z"})
            .to_string(),
    )
    .await?;
    publish(js, "cn.events.metric.prod.api", format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000)))
        .await?;
    publish(
        js,
        "cn.events.metric.prod.api",
        json!({"service":"other","env":"prod","timestamp":"2026-02-20T17:01:00Z"}).to_string(),
    )
    .await?;
    publish(js, "cn.events.metric.prod.good", metric("good", 2)).await?;

    let records = records_until(js, "the good event's incident", |r| {
        !proof_log::of_kind(r, ProofKind::IncidentOpened).is_empty()
    })
    .await?;
    let rejected = proof_log::of_kind(&records, ProofKind::EventRejected);
    let reasons: Vec<&str> = rejected.iter().filter_map(|r| r.reason.as_deref()).collect();
    assert_eq!(
        reasons,
        vec![
            "malformed",
            "invalid_subject",
            "invalid_field",
            "out_of_range",
            "too_large",
            "scope_mismatch"
        ]
    );
    // Each record says what was wrong and where to find the input.
    assert!(
        rejected[1].detail["error"]
            .as_str()
            .unwrap()
            .contains("expected cn.events.metric.{env}.{service}"),
        "{}",
        rejected[1].detail
    );
    assert!(
        rejected[2].detail["error"].as_str().unwrap().starts_with("error_rate: invalid type"),
        "{}",
        rejected[2].detail
    );
    assert_eq!(rejected[0].detail["stream"], "CN_EVENTS");
    assert_eq!(rejected[0].detail["stream_seq"], 1);
    assert_eq!(rejected[4].detail["size"].as_u64().unwrap(), 70_010);
    assert!(rejected[4].detail["payload_excerpt"].as_str().unwrap().len() <= 256);
    assert_eq!(incidents_for(js, "good").await?, 1);

    let summary = agent.stop().await?;
    assert_eq!((summary.processed, summary.rejected), (1, 6));
    let records = proof_log::read_all(js).await?;
    assert!(proof_log::audit(&records).is_intact());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_ends_as_event_rejected_while_later_messages_keep_flowing()
-> anyhow::Result<()> {
    let f = fixture().await?;
    let probe = Probe::default();
    let agent = f.start(probe.clone(), &["--max-attempts", "3"]).await?;
    let js = &f.js;
    publish(js, "cn.events.metric.prod.poison", metric("poison", 1)).await?;
    for (i, s) in ["a", "b", "c"].iter().enumerate() {
        publish(js, &format!("cn.events.metric.prod.{s}"), metric(s, i as u64 + 2)).await?;
    }
    let records = records_until(js, "the poison message's rejection", |r| {
        !proof_log::of_kind(r, ProofKind::EventRejected).is_empty()
    })
    .await?;
    let rejected = proof_log::of_kind(&records, ProofKind::EventRejected);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason.as_deref(), Some("max_deliveries_exceeded"));
    assert_eq!(rejected[0].detail["delivered"], 3);
    assert!(rejected[0].detail["error"].as_str().unwrap().contains("downstream unavailable"));
    assert_eq!(probe.seen.lock().unwrap().attempts["poison"], 3, "exactly the configured attempts");

    // The later messages did not wait for the poison message to be given up on.
    let opened = proof_log::of_kind(&records, ProofKind::IncidentOpened);
    assert_eq!(opened.len(), 3);
    assert!(opened.iter().all(|o| o.seq < rejected[0].seq));

    agent.stop().await?;
    // Nothing is left pending: the poison message was acked after its record was stored.
    let consumer = js.get_stream("CN_EVENTS").await?.consumer_info("probe-agent-metrics").await?;
    assert_eq!((consumer.num_ack_pending, consumer.num_pending), (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_input_yields_no_duplicate_output_or_record() -> anyhow::Result<()> {
    let f = fixture().await?;
    let probe = Probe::default();
    let agent = f.start(probe.clone(), &[]).await?;
    let js = &f.js;
    publish(js, "cn.events.metric.prod.flaky", metric("flaky", 1)).await?;
    let records = records_until(js, "the flaky input's incident record", |r| {
        !proof_log::of_kind(r, ProofKind::IncidentOpened).is_empty()
    })
    .await?;
    assert_eq!(probe.seen.lock().unwrap().attempts["flaky"], 2, "handled twice");
    assert_eq!(
        incidents_for(js, "flaky").await?,
        1,
        "the second publish was dropped as a duplicate"
    );
    assert_eq!(proof_log::of_kind(&records, ProofKind::IncidentOpened).len(), 1);
    agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_reads_the_last_message_stored_on_a_subject() -> anyhow::Result<()> {
    let f = fixture().await?;
    let probe = Probe::default();
    let agent = f.start(probe.clone(), &[]).await?;
    let js = &f.js;
    for n in 1..=2 {
        publish(js, "cn.events.metric.prod.recall-api", metric("recall-api", n)).await?;
    }
    let recalled = eventually(Duration::from_secs(10), "both samples handled", || async {
        let seen = probe.seen.lock().unwrap();
        Ok((seen.recalled.len() == 2).then(|| seen.recalled.clone()))
    })
    .await?;
    // Nothing stored before the first; the first sample's incident before the second.
    assert_eq!(recalled[0], None);
    // CN_WORK holds only the probe's incidents: the first is the first sample's.
    let first = js.get_stream("CN_WORK").await?.get_raw_message(1).await?;
    let first: bus_schema::Incident = bus_schema::codec::decode(
        <bus_schema::Incident as bus_schema::Payload>::ENCODING,
        &first.payload,
        &bus_schema::Limits::DEFAULT,
    )?;
    assert_eq!(first.service.as_str(), "recall-api");
    assert_eq!(recalled[1], Some(first.incident_id), "the incident the first sample stored");
    agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_input_in_hand_then_records_agent_stopped() -> anyhow::Result<()> {
    let f = fixture().await?;
    let probe = Probe::default();
    let agent = f.start(probe.clone(), &[]).await?;
    let js = &f.js;
    publish(js, "cn.events.metric.prod.slow-api", metric("slow-api", 1)).await?;
    eventually(Duration::from_secs(10), "the probe to start handling", || async {
        Ok(probe.seen.lock().unwrap().handling.clone())
    })
    .await?;
    // SIGTERM arrives while the input is in hand.
    let summary = agent.stop().await?;
    assert!(summary.clean);
    assert_eq!(summary.processed, 1, "the in-flight input was finished, not abandoned");

    assert_eq!(incidents_for(js, "slow-api").await?, 1);
    let consumer = js.get_stream("CN_EVENTS").await?.consumer_info("probe-agent-metrics").await?;
    assert_eq!(consumer.num_ack_pending, 0, "and acked");
    assert_eq!(consumer.num_redelivered, 0);

    let records = proof_log::read_all(js).await?;
    let kinds: Vec<ProofKind> = records.iter().filter_map(|r| r.kind()).collect();
    assert_eq!(
        kinds,
        vec![ProofKind::AgentStarted, ProofKind::IncidentOpened, ProofKind::AgentStopped]
    );
    let stopped = proof_log::of_kind(&records, ProofKind::AgentStopped);
    assert_eq!(stopped[0].detail["processed"], 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_continues_its_chain_and_its_consumer() -> anyhow::Result<()> {
    let f = fixture().await?;
    let js = &f.js;
    let agent = f.start(Probe::default(), &[]).await?;
    publish(js, "cn.events.metric.prod.one", metric("one", 1)).await?;
    records_until(js, "the first incident", |r| {
        !proof_log::of_kind(r, ProofKind::IncidentOpened).is_empty()
    })
    .await?;
    agent.stop().await?;

    publish(js, "cn.events.metric.prod.two", metric("two", 2)).await?;
    let probe = Probe::default();
    let agent = f.start(probe.clone(), &[]).await?;
    records_until(js, "the second incident", |r| {
        proof_log::of_kind(r, ProofKind::IncidentOpened).len() == 2
    })
    .await?;
    agent.stop().await?;
    assert_eq!(
        probe.seen.lock().unwrap().attempts.keys().collect::<Vec<_>>(),
        vec!["two"],
        "the first input is not handled again"
    );

    let records = proof_log::read_all(js).await?;
    let kinds: Vec<ProofKind> = records.iter().filter_map(|r| r.kind()).collect();
    use ProofKind::*;
    assert_eq!(
        kinds,
        vec![
            AgentStarted,
            IncidentOpened,
            AgentStopped,
            AgentStarted,
            IncidentOpened,
            AgentStopped
        ]
    );
    let audit = proof_log::audit(&records);
    assert!(audit.is_intact(), "{:?}", audit.reports());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_is_discoverable_by_heartbeat_micro_ping_and_status() -> anyhow::Result<()> {
    let f = fixture().await?;
    let client = f.server.client().await?;
    let mut beats = client.subscribe("cn.heartbeat.probe-agent.0").await?;
    let agent = f.start(Probe::default(), &[]).await?;

    let beat = tokio::time::timeout(Duration::from_secs(5), beats.next()).await?.unwrap();
    let beat: Heartbeat = rmp_serde_decode(&beat.payload)?;
    assert_eq!((beat.agent.as_str(), beat.instance.as_str()), ("probe-agent", "0"));
    assert!(beat.proof_seq >= 1, "agent_started is on the chain");

    let pong = client.request("$SRV.PING.probe-agent", "".into()).await?;
    let pong: serde_json::Value = serde_json::from_slice(&pong.payload)?;
    assert_eq!(pong["name"], "probe-agent");
    assert_eq!(pong["metadata"]["instance"], "0");

    let reply = client.request("cn.status.probe-agent.0", "".into()).await?;
    let status: AgentStatus = serde_json::from_slice(&reply.payload)?;
    assert_eq!(status.consumers, vec!["probe-agent-metrics", "probe-agent-logs"]);
    assert!(!status.stopping);

    agent.stop().await?;
    Ok(())
}

fn rmp_serde_decode(bytes: &[u8]) -> anyhow::Result<Heartbeat> {
    Ok(bus_schema::codec::decode(
        bus_schema::Encoding::MsgPack,
        bytes,
        &bus_schema::Limits::DEFAULT,
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_backlog_stops_within_the_grace_and_hands_the_rest_back() {
    let f = fixture().await.unwrap();
    let probe = Probe::default();
    let agent = f.start(probe.clone(), &[]).await.unwrap();
    for i in 0..5 {
        publish(&f.js, &format!("cn.events.metric.prod.slow-{i}"), metric(&format!("slow-{i}"), i))
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(10), "the first slow input to be in hand", || async {
        Ok(probe.seen.lock().unwrap().handling.clone())
    })
    .await
    .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(10), agent.stop())
        .await
        .expect("stopped within the grace")
        .unwrap();
    assert!(summary.clean);
    let first_run = summary.processed;
    assert!(
        (1..5).contains(&first_run),
        "finished what it had in hand, not the whole backlog: {first_run}"
    );

    // What was not handled comes back to the next instance, and nothing is handled twice.
    let probe = Probe::default();
    let agent = f.start(probe.clone(), &[]).await.unwrap();
    records_until(&f.js, "every slow input's incident", |r| {
        proof_log::of_kind(r, ProofKind::IncidentOpened).len() == 5
    })
    .await
    .unwrap();
    let summary = agent.stop().await.unwrap();
    assert_eq!(first_run + summary.processed, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_ack_wait_is_not_redelivered_under_it() {
    let f = fixture().await.unwrap();
    let probe = Probe::default();
    let agent = f.start(probe.clone(), &["--ack-wait", "1s"]).await.unwrap();
    publish(&f.js, "cn.events.metric.prod.slow-one", metric("slow-one", 1)).await.unwrap();
    publish(&f.js, "cn.events.metric.prod.after", metric("after", 2)).await.unwrap();
    records_until(&f.js, "both incidents", |r| {
        proof_log::of_kind(r, ProofKind::IncidentOpened).len() == 2
    })
    .await
    .unwrap();
    agent.stop().await.unwrap();
    assert_eq!(
        probe.seen.lock().unwrap().attempts["slow-one"],
        1,
        "handled once, though it took longer than the ack wait"
    );
    let consumer =
        f.js.get_stream("CN_EVENTS")
            .await
            .unwrap()
            .consumer_info("probe-agent-metrics")
            .await
            .unwrap();
    assert_eq!(consumer.num_redelivered, 0);
}
