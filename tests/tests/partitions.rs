//! Agents scaled out by partition: two detector, two governance and two executor instances
//! split the services, and one of each dies mid-stream (`kill -9`). The other takes its
//! partitions over, with their state: no incident lost or opened twice, no cooldown broken,
//! nothing executed twice or without approval, every chain intact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bus_schema::partition::{PARTITIONS, of_service};
use bus_schema::proof::{ProofKind, ProofRecord};
use cn_tests::chaos::judge;
use cn_tests::fleet::Fleet;
use cn_tests::proof_log::{self, StoredRecord};
use cn_tests::scenario::{cnctl, deploy, for_service, metric_at};
use serde_json::{Value, json};

const SCALED: [&str; 3] = ["issue-detector", "governance-gate", "executor"];

/// Two services in each partition.
fn services() -> Vec<String> {
    let mut per: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        let name = format!("svc-{i}");
        let p = of_service(&name);
        if per.get(&p).map_or(0, Vec::len) < 2 {
            per.entry(p).or_default().push(name);
        }
        if per.len() == usize::from(PARTITIONS) && per.values().all(|v| v.len() == 2) {
            break;
        }
    }
    per.into_values().flatten().collect()
}

/// Publishes as a pipeline does, on one connection, and waits for the server to have it all.
async fn publish(client: &async_nats::Client, messages: Vec<(String, Value)>) {
    for (subject, body) in messages {
        client.publish(subject, body.to_string().into()).await.unwrap();
    }
    client.flush().await.unwrap();
}

/// A deploy 700 s ago and a crash loop 600 s ago, as in `scenario::crash_restarted`.
fn crash_loop(service: &str) -> Vec<(String, Value)> {
    let mut deployed = deploy("stage", service, "2.0.0", Some("1.9.0"), "succeeded");
    deployed["timestamp"] = metric_at("stage", service, -700, json!({}))["timestamp"].clone();
    vec![
        (format!("cn.events.deploy.stage.{service}"), deployed),
        (
            format!("cn.events.metric.stage.{service}"),
            metric_at("stage", service, -600, json!({"crash_looping": true, "restarts": 4})),
        ),
    ]
}

/// After the restart: recovered samples, then high latency within the restart's cooldown, as
/// in `scenario::latency_within_the_cooldown`.
fn latency_after(service: &str) -> Vec<(String, Value)> {
    let subject = format!("cn.events.metric.stage.{service}");
    let mut out = Vec::new();
    for offset in (-590..-250).step_by(10) {
        let m = json!({"crash_looping": false, "p95_latency_ms": 150});
        out.push((subject.clone(), metric_at("stage", service, offset, m)));
    }
    for offset in (-240..-90).step_by(10) {
        let m = json!({"crash_looping": false, "p95_latency_ms": 2500});
        out.push((subject.clone(), metric_at("stage", service, offset, m)));
    }
    out
}

fn incidents(records: &[StoredRecord], service: &str, kind: &str) -> Vec<ProofRecord> {
    let mut seen = std::collections::BTreeSet::new();
    for_service(records, ProofKind::IncidentOpened, service)
        .into_iter()
        .filter(|r| r.detail["kind"] == kind)
        .filter(|r| seen.insert(r.incident_id))
        .collect()
}

/// When each partition was last started by `instance` after `since` (its agent_started
/// records on the partitions' chains).
fn taken_over(
    records: &[StoredRecord],
    agent: &str,
    instance: &str,
) -> BTreeMap<u16, bus_schema::Timestamp> {
    let mut out = BTreeMap::new();
    for r in proof_log::of_kind(records, ProofKind::AgentStarted) {
        if r.agent.as_str() != agent || r.detail["holder"]["instance"] != instance {
            continue;
        }
        let p = u16::try_from(r.detail["partition"].as_u64().unwrap()).unwrap();
        out.insert(p, r.ts);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_the_services_and_one_takes_over_when_the_other_dies() {
    let ids: &[&str] = &["a", "b"];
    let instances: Vec<(&str, &[&str])> = SCALED.iter().map(|a| (*a, ids)).collect();
    let mut fleet = Fleet::start_partitioned(&instances).await.unwrap();
    let services = services();

    // Every partition is held, four by each instance, and each partition's consumer reads only
    // its services.
    for agent in SCALED {
        let holders = fleet.partition_holders(agent).await.unwrap();
        for id in ids {
            let n = holders.values().filter(|h| h.as_deref() == Some(*id)).count();
            assert_eq!(n, usize::from(PARTITIONS) / 2, "{agent} {id}: {holders:?}");
        }
    }
    let shown = cnctl(&fleet, "operator", &["partitions", "show", "--service", &services[0]], None);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}{}", String::from_utf8_lossy(&shown.stderr));
    assert!(text.contains("issue-detector: a (") && text.contains("<- svc-"), "{text}");

    // Crash loops in every partition, each restarted once.
    let pipeline = fleet.client_as("pipeline").await.unwrap();
    publish(&pipeline, services.iter().flat_map(|s| crash_loop(s)).collect()).await;
    fleet
        .records_until("every crash loop restarted", |r| {
            services.iter().all(|s| !for_service(r, ProofKind::ActionExecuted, s).is_empty())
        })
        .await
        .unwrap();

    // Instance a of every scaled agent dies; the pipeline goes on: each service recovers, then
    // its latency climbs within the restart's 60 s cooldown.
    let holders_before = fleet.partition_holders("governance-gate").await.unwrap();
    let killed_at = bus_schema::Timestamp::now();
    let clock = Instant::now();
    for agent in SCALED {
        fleet.agent(&format!("{agent}#a")).unwrap().kill9();
    }
    publish(&pipeline, services.iter().flat_map(|s| latency_after(s)).collect()).await;

    // b holds every partition, and took a's over within the TTL (6 s) and a few ticks.
    for agent in SCALED {
        fleet.wait_until_shared(agent, &["b"], Duration::from_secs(30)).await.unwrap();
    }
    let held_after = clock.elapsed();
    let records = fleet
        .records_until("the latency restarts refused for the cooldown, every partition b's", |r| {
            let refused = services.iter().all(|s| {
                for_service(r, ProofKind::ActionRefused, s)
                    .iter()
                    .any(|x| x.reason.as_deref() == Some("cooldown_active"))
            });
            // A claimed partition starts after its first renewal: its agent_started follows.
            let started =
                SCALED.iter().all(|a| taken_over(r, a, "b").len() == usize::from(PARTITIONS));
            refused && started
        })
        .await
        .unwrap();
    let mut takeover = Vec::new();
    for agent in SCALED {
        let by_b = taken_over(&records, agent, "b");
        for p in 0..PARTITIONS {
            let at = by_b[&p];
            if at > killed_at {
                takeover.push(at.since(killed_at));
            }
        }
    }
    let slowest = takeover.iter().max().copied().unwrap_or_default();
    println!(
        "{} partitions taken over by b; the last {:.1} s after the kill; every lease b's {:.1} s after",
        takeover.len(),
        slowest.as_secs_f64(),
        held_after.as_secs_f64()
    );
    let a_held = holders_before.values().filter(|h| h.as_deref() == Some("a")).count();
    assert_eq!(takeover.len(), a_held * SCALED.len(), "every partition a held moved to b");
    assert!(slowest < Duration::from_secs(15), "taken over within 15 s: {slowest:?}");

    // The state moved with the partitions: one crash incident and one latency incident per
    // service, one restart each (the second refused for the cooldown), and the fleet's rules.
    for s in &services {
        assert_eq!(incidents(&records, s, "crash_loop").len(), 1, "{s}");
        assert_eq!(incidents(&records, s, "high_latency").len(), 1, "{s}");
        let restarts = for_service(&records, ProofKind::ActionExecuted, s)
            .iter()
            .filter(|r| r.action == Some(bus_schema::Action::Restart))
            .count();
        assert_eq!(restarts, 1, "{s}: restarted once within the cooldown");
    }
    let d = judge::decisions(&records, &policy::Policy::default());
    assert!(d.executed_twice.is_empty(), "{:?}", d.executed_twice);
    assert!(d.without_approval.is_empty(), "{:?}", d.without_approval);
    assert!(d.cooldown_violations.is_empty(), "{:?}", d.cooldown_violations);
    assert!(d.incidents_doubled.is_empty(), "{:?}", d.incidents_doubled);

    // a comes back: the partitions are shared again, handed over cleanly by b.
    for agent in SCALED {
        fleet.agent(&format!("{agent}#a")).unwrap().restart().unwrap();
    }
    for agent in SCALED {
        fleet.wait_until_shared(agent, ids, Duration::from_secs(30)).await.unwrap();
    }
    let verify = cnctl(&fleet, "auditor", &["proof", "verify"], None);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}");
    for agent in SCALED {
        for p in 0..PARTITIONS {
            assert!(text.contains(&format!("cn.proof.{agent}.p{p}")), "{agent} p{p}: {text}");
        }
    }
}

/// An instance started `--partitioned` where it cannot work says so and exits 64: on a server
/// without the mappings (every partition's consumer would match nothing), and for an agent
/// whose state is not per service.
#[test]
fn partitioned_instances_refuse_a_server_without_the_mappings_and_agents_that_cannot_split() {
    let server = test_support::NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let run = |agent: &str| {
        std::process::Command::new(cn_tests::fleet::binary(agent).unwrap())
            .args(["--nats-url", &server.url(), "--partitioned", "--instance", "a"])
            .arg("--data-dir")
            .arg(data.path())
            .env_remove("NATS_URL")
            .output()
            .unwrap()
    };
    let detector = run("issue-detector");
    let said = String::from_utf8_lossy(&detector.stderr);
    assert_eq!(detector.status.code(), Some(64), "{said}");
    assert!(said.contains("include deploy/partitions.conf"), "{said}");
    let optimizer = run("rl-optimizer");
    let said = String::from_utf8_lossy(&optimizer.stderr);
    assert_eq!(optimizer.status.code(), Some(64), "{said}");
    assert!(said.contains("runs as one instance"), "{said}");
}
