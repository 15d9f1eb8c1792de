//! Short chaos runs of the real fleet (`scripts/chaos` runs a long one): a minute of load with
//! six agent kills, a nats-server restart and every hostile payload, on one server and on a
//! three-node cluster, and nothing may be lost, executed wrongly, broken or let through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::time::Duration;

use cn_tests::chaos::{Plan, Report, run};

/// Six services under load for a minute or so, with kills every `kill_every`.
fn plan(seed: u64, kill_every_s: u64, nats_restarts: u32, cluster: usize) -> Plan {
    Plan {
        duration: Duration::from_secs(if cluster > 1 { 50 } else { 65 }),
        kill_every: Duration::from_secs(kill_every_s),
        nats_restarts,
        cluster,
        services: 6,
        seed,
        sample_every: Duration::from_secs(2),
        crash_every: Duration::from_secs(if cluster > 1 { 5 } else { 6 }),
        failed_deploy_every: Duration::from_secs(20),
        settle_timeout: Duration::from_secs(45),
    }
}

/// Runs `plan`, prints its report, and fails on any failing figure; the report and its table.
async fn run_clean(plan: &Plan) -> (Report, String) {
    let report = run(plan, &|line: &str| eprintln!("{line}")).await.unwrap();
    let table = report.table();
    eprintln!("{table}");
    assert!(report.failures().is_empty(), "{table}");
    (report, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_kills_restarts_and_hostile_input_loses_nothing_and_lets_nothing_through() {
    let (report, table) = run_clean(&plan(7, 10, 1, 1)).await;
    assert!(report.kills.len() >= 5 && report.nats_restarts.len() == 1, "{table}");
    assert!(
        report.events.acked > 100 && report.decisions.executions > 0,
        "the load did something: {table}"
    );
    let h = &report.hostile;
    assert!(h.must_reject > 50, "{table}");
    assert_eq!(h.rejected, h.must_reject, "every hostile payload rejected with a reason: {table}");
    assert!(h.valid_rejected.is_empty(), "valid-but-odd payloads were accepted: {table}");
}

/// The same on a three-node cluster with every stream replicated three times: two of the
/// nodes are killed in turn under load, and the fleet goes on through the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_losing_a_node_at_a_time_loses_nothing_and_executes_nothing_twice() {
    let (report, table) = run_clean(&plan(11, 15, 2, 3)).await;
    assert_eq!(report.nodes, 3, "{table}");
    assert!(report.replicas.iter().all(|(_, n)| *n == 3), "{table}");
    assert_eq!(report.nats_restarts.len(), 2, "{table}");
    assert!(
        report.events.acked > 80 && report.decisions.executions > 0,
        "the load did something: {table}"
    );
}
