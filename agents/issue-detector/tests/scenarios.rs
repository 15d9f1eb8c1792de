//! The detector's stories, table-driven over recorded sample sequences, through the same code
//! the agent runs for each event (windows, detectors, lifecycle, outcomes), without a bus.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::time::Duration;

use bus_schema::{
    DeployEvent, ExecutionResult, Incident, IncidentKind, IncidentStatus, LogEvent, MetricSample,
    Outcome, Severity, Timestamp, Uuid,
};
use issue_detector::config::DetectorConfig;
use issue_detector::engine::Output;
use issue_detector::service::ServiceState;
use serde_json::{Value, json};

const T0: &str = "2026-11-22T10:00:00Z";

fn at(offset_s: i64) -> Timestamp {
    let t0: Timestamp = T0.parse().unwrap();
    if offset_s >= 0 {
        t0.plus(Duration::from_secs(offset_s as u64))
    } else {
        t0.minus(Duration::from_secs((-offset_s) as u64))
    }
}

/// One service and everything the detector published for it.
struct World {
    state: ServiceState,
    config: DetectorConfig,
    n: u64,
    incidents: Vec<Incident>,
    outcomes: Vec<Outcome>,
    budget: Vec<f64>,
}

impl World {
    fn new() -> Self {
        Self::with(DetectorConfig::default())
    }

    fn with(config: DetectorConfig) -> Self {
        Self {
            state: ServiceState::new("prod".parse().unwrap(), "api".parse().unwrap()),
            config,
            n: 0,
            incidents: Vec::new(),
            outcomes: Vec::new(),
            budget: Vec::new(),
        }
    }

    fn input(&mut self) -> String {
        self.n += 1;
        format!("CN_EVENTS:test:{}", self.n)
    }

    fn take(&mut self, out: Output) -> Output {
        self.incidents.extend(out.incidents.clone());
        self.outcomes.extend(out.outcomes.iter().map(|(o, _)| o.clone()));
        self.budget.extend(out.slo.iter().map(|s| s.budget_remaining));
        out
    }

    fn metric(&mut self, offset_s: i64, fields: Value) -> Output {
        let mut body =
            json!({"service": "api", "env": "prod", "timestamp": at(offset_s).to_string()});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        let m: MetricSample = serde_json::from_value(body).unwrap();
        let id = self.input();
        let out = self.state.on_metric(&m, &self.config, &id, m.timestamp).unwrap();
        self.take(out)
    }

    /// The same fields every `step_s` over `[from, to)`.
    fn metrics(&mut self, from: i64, to: i64, step_s: usize, fields: Value) {
        for offset in (from..to).step_by(step_s) {
            self.metric(offset, fields.clone());
        }
    }

    fn deploy(&mut self, offset_s: i64, version: &str, previous: &str, status: &str) {
        let d: DeployEvent = serde_json::from_value(json!({"service": "api", "env": "prod", "version": version, "previous_version": previous, "status": status, "timestamp": at(offset_s).to_string()})).unwrap();
        let id = self.input();
        let out = self.state.on_deploy(&d, &self.config, &id, d.timestamp).unwrap();
        self.take(out);
    }

    fn log(&mut self, offset_s: i64, level: &str, message: &str) {
        let l: LogEvent = serde_json::from_value(json!({"service": "api", "env": "prod", "level": level, "message": message, "timestamp": at(offset_s).to_string()})).unwrap();
        let id = self.input();
        let out = self.state.on_log(&l, &self.config, &id, l.timestamp).unwrap();
        self.take(out);
    }

    fn executed(&mut self, incident: Uuid, status: &str, offset_s: i64) -> Uuid {
        self.executed_by(incident, "restart", "dry_run", status, offset_s)
    }

    fn executed_by(
        &mut self,
        incident: Uuid,
        action: &str,
        backend: &str,
        status: &str,
        offset_s: i64,
    ) -> Uuid {
        let proposal = Uuid::from_u128(u128::from(self.n) + 1000);
        let r: ExecutionResult = serde_json::from_value(json!({
            "proposal_id": proposal, "incident_id": incident, "env": "prod", "service": "api", "action": action,
            "backend": backend, "status": status, "detail": "done", "started_at": at(offset_s).to_string(), "finished_at": at(offset_s).to_string()
        }))
        .unwrap();
        let id = self.input();
        let out = self.state.on_executed(&r, &self.config, &id, "corr-1");
        self.take(out);
        proposal
    }

    fn of(&self, kind: IncidentKind) -> Vec<&Incident> {
        self.incidents.iter().filter(|i| i.kind == kind).collect()
    }

    fn statuses(&self, kind: IncidentKind) -> Vec<IncidentStatus> {
        self.of(kind).iter().map(|i| i.status).collect()
    }

    fn opened(&self) -> Vec<IncidentKind> {
        self.incidents
            .iter()
            .filter(|i| i.status == IncidentStatus::Opened)
            .map(|i| i.kind)
            .collect()
    }
}

fn signals(i: &Incident) -> Vec<&str> {
    i.evidence.iter().map(|e| e.signal.as_str()).collect()
}

#[test]
fn the_design_example_gives_one_crash_loop_incident_whose_evidence_shows_all_three_signals() {
    let mut w = World::new();
    w.metrics(
        0,
        180,
        10,
        json!({"error_rate": 0.13, "p95_latency_ms": 1450, "crash_looping": true, "restarts": 4}),
    );
    assert_eq!(
        w.opened(),
        vec![IncidentKind::CrashLoop],
        "the crash explains the errors and latency"
    );
    let latest = w.incidents.last().unwrap();
    assert_eq!(latest.kind, IncidentKind::CrashLoop);
    for wanted in ["crash_looping", "error_rate", "p95_latency_ms"] {
        assert!(signals(latest).contains(&wanted), "{wanted} missing from {:?}", signals(latest));
    }
    let error = latest.evidence.iter().find(|e| e.signal == "error_rate").unwrap();
    assert_eq!((error.value, error.threshold), (0.13, 0.05));
}

#[test]
fn a_failing_canary_is_the_deploy_agents_to_judge_while_the_stable_version_is_ours() {
    let mut w = World::new();
    w.metrics(0, 300, 10, json!({"error_rate": 0.4, "crash_looping": true, "variant": "canary"}));
    assert!(w.opened().is_empty(), "canary samples open nothing: {:?}", w.opened());
    w.metrics(300, 480, 10, json!({"error_rate": 0.13, "variant": "stable"}));
    assert_eq!(w.opened(), vec![IncidentKind::HighErrorRate]);
}

#[test]
fn without_a_crash_the_same_errors_and_latency_open_their_own_incidents_once_sustained() {
    let mut w = World::new();
    w.metrics(0, 50, 10, json!({"error_rate": 0.13, "p95_latency_ms": 1450}));
    assert!(w.opened().is_empty(), "50 s is not yet sustained: {:?}", w.opened());
    w.metrics(50, 180, 10, json!({"error_rate": 0.13, "p95_latency_ms": 1450}));
    assert_eq!(w.opened(), vec![IncidentKind::HighErrorRate, IncidentKind::HighLatency]);
    let errors = w.of(IncidentKind::HighErrorRate)[0];
    assert_eq!(errors.severity, Severity::High, "0.13 is over twice the threshold");
    assert_eq!(
        (errors.evidence[0].signal.as_str(), errors.evidence[0].window_s),
        ("error_rate", 120)
    );
    assert!(
        signals(w.of(IncidentKind::HighLatency)[0]).contains(&"error_rate"),
        "related readings ride along"
    );
}

#[test]
fn a_single_short_spike_opens_nothing() {
    let cases = [
        json!({"error_rate": 0.9}),
        json!({"p95_latency_ms": 9000, "p99_latency_ms": 12000}),
        json!({"cpu_percent": 100, "memory_percent": 99}),
    ];
    for spike in cases {
        let mut w = World::new();
        w.metrics(0, 600, 10, json!({"error_rate": 0.001, "p95_latency_ms": 120, "p99_latency_ms": 200, "cpu_percent": 40, "memory_percent": 50}));
        w.metric(600, spike.clone());
        w.metric(605, spike.clone());
        w.metrics(610, 1200, 10, json!({"error_rate": 0.001, "p95_latency_ms": 120, "p99_latency_ms": 200, "cpu_percent": 40, "memory_percent": 50}));
        assert!(w.incidents.is_empty(), "{spike}: {:?}", w.incidents);
    }
}

#[test]
fn sustained_overload_and_latency_open_and_recover() {
    let mut w = World::new();
    w.metrics(0, 300, 10, json!({"cpu_percent": 97, "p99_latency_ms": 2500}));
    assert_eq!(w.opened(), vec![IncidentKind::HighLatency, IncidentKind::Overload]);
    w.metrics(300, 340, 10, json!({"cpu_percent": 30, "p99_latency_ms": 300}));
    assert_eq!(
        w.statuses(IncidentKind::Overload),
        vec![IncidentStatus::Opened, IncidentStatus::Resolved]
    );
    let resolved = w.of(IncidentKind::Overload)[1];
    assert!(resolved.time_to_recover_s.unwrap() > 0.0);
}

#[test]
fn a_sustained_burn_at_15x_pages_within_the_short_window() {
    let mut w = World::new();
    w.metrics(0, 600, 10, json!({"error_rate": 0.015}));
    let page = w.of(IncidentKind::SloBurn)[0];
    assert_eq!((page.status, page.severity), (IncidentStatus::Opened, Severity::Critical));
    assert!(page.opened_at <= at(300), "paged at {}", page.opened_at);
    assert_eq!(signals(page), ["burn_rate_1h", "burn_rate_5m", "error_budget_consumed"]);
    assert!((page.evidence[0].value - 15.0).abs() < 0.01, "{:?}", page.evidence);
    assert!(page.summary.contains("99.9"), "{}", page.summary);
    assert!(
        w.of(IncidentKind::HighErrorRate).is_empty(),
        "1.5 % errors are under the 5 % threshold"
    );
    assert!(*w.budget.last().unwrap() < 1.0);
}

#[test]
fn a_slow_burn_at_1_2x_raises_a_ticket_only() {
    let mut w = World::new();
    w.metrics(0, 8 * 3600, 60, json!({"error_rate": 0.0012}));
    let burns = w.of(IncidentKind::SloBurn);
    assert_eq!(w.opened(), vec![IncidentKind::SloBurn]);
    assert!(
        burns.iter().all(|i| i.severity == Severity::Low && i.incident_id == burns[0].incident_id),
        "never a page: {burns:#?}"
    );
    assert!(burns[0].opened_at >= at(3 * 3600), "half the 6 h short window must be covered first");
    assert_eq!(signals(burns[0])[..2], ["burn_rate_3d", "burn_rate_6h"]);
}

#[test]
fn a_burn_that_stops_opens_nothing_new_once_the_short_window_clears() {
    let mut w = World::new();
    w.metrics(-3 * 86_400, 0, 60, json!({"error_rate": 0.0}));
    w.metrics(0, 600, 10, json!({"error_rate": 0.1}));
    let paged = w.incidents.len();
    assert!(paged > 0);
    w.metrics(600, 6 * 3600, 30, json!({"error_rate": 0.0}));
    let later: Vec<&Incident> =
        w.incidents[paged..].iter().filter(|i| i.status == IncidentStatus::Opened).collect();
    assert!(later.is_empty(), "{later:#?}");
    assert!(
        w.incidents
            .iter()
            .filter(|i| i.status != IncidentStatus::Resolved)
            .all(|i| i.opened_at < at(600))
    );
}

#[test]
fn out_of_order_samples_within_the_bound_give_the_same_incidents() {
    let sequence: Vec<(i64, Value)> =
        (0..36).map(|i| (i * 10, json!({"error_rate": if i >= 6 { 0.3 } else { 0.0 }}))).collect();
    let mut in_order = World::new();
    for (t, f) in &sequence {
        in_order.metric(*t, f.clone());
    }
    let mut shuffled = World::new();
    // Pairs swapped, and every fifth sample a minute late.
    let mut order: Vec<usize> = (0..sequence.len()).collect();
    for pair in order.chunks_mut(2) {
        pair.reverse();
    }
    let (late, on_time): (Vec<usize>, Vec<usize>) = order.into_iter().partition(|i| i % 5 == 0);
    let mut order = on_time;
    for (k, i) in late.into_iter().enumerate() {
        order.insert((k * 5 + 6).min(order.len()), i);
    }
    for i in order {
        shuffled.metric(sequence[i].0, sequence[i].1.clone());
    }
    assert_eq!(
        in_order.opened(),
        vec![IncidentKind::HighErrorRate],
        "the error rate explains the SLO burn"
    );
    assert_eq!(shuffled.opened(), in_order.opened());
}

#[test]
fn samples_beyond_the_lateness_bound_are_refused_with_a_reason() {
    let mut w = World::new();
    w.metric(600, json!({"error_rate": 0.0}));
    let m: MetricSample = serde_json::from_value(
        json!({"service": "api", "env": "prod", "error_rate": 0.9, "timestamp": at(0).to_string()}),
    )
    .unwrap();
    let err = w.state.on_metric(&m, &w.config, "x", at(600)).unwrap_err();
    assert_eq!(err.to_string(), "600 s behind this service's newest sample (2026-11-22T10:10:00Z)");
    let future: MetricSample = serde_json::from_value(json!({"service": "api", "env": "prod", "error_rate": 0.9, "timestamp": "2199-01-01T00:00:00Z"})).unwrap();
    assert!(
        w.state
            .on_metric(&future, &w.config, "y", at(600))
            .unwrap_err()
            .to_string()
            .contains("ahead of this detector's clock")
    );
}

#[test]
fn a_thousand_bad_samples_make_one_incident_then_healthy_samples_resolve_it() {
    let mut w = World::new();
    w.metrics(0, 1000, 1, json!({"cpu_percent": 99}));
    let overload = w.of(IncidentKind::Overload);
    assert_eq!(overload.iter().filter(|i| i.status == IncidentStatus::Opened).count(), 1);
    assert!(overload.len() <= 5, "updates are rate-limited: {}", overload.len());
    assert!(overload.iter().all(|i| i.incident_id == overload[0].incident_id));
    w.metrics(1000, 1002, 1, json!({"cpu_percent": 20}));
    assert_ne!(
        w.statuses(IncidentKind::Overload).last(),
        Some(&IncidentStatus::Resolved),
        "two healthy samples are not enough"
    );
    w.metric(1002, json!({"cpu_percent": 20}));
    let last = *w.of(IncidentKind::Overload).last().unwrap();
    assert_eq!(last.status, IncidentStatus::Resolved);
    assert!(last.sample_count >= 900, "{}", last.sample_count);
}

#[test]
fn a_flapping_incident_reopens_under_its_own_id_and_needs_longer_to_resolve() {
    let mut w = World::new();
    w.metrics(0, 30, 10, json!({"crash_looping": true}));
    w.metrics(30, 60, 10, json!({"crash_looping": false}));
    w.metrics(60, 90, 10, json!({"crash_looping": true}));
    let crash = w.of(IncidentKind::CrashLoop);
    assert_eq!(
        crash.iter().map(|i| i.status).collect::<Vec<_>>(),
        [IncidentStatus::Opened, IncidentStatus::Resolved, IncidentStatus::Opened]
    );
    assert_eq!(crash[2].incident_id, crash[0].incident_id);
    assert_eq!(crash[2].reopen_count, 1);
    let first_id = crash[0].incident_id;
    w.metrics(90, 140, 10, json!({"crash_looping": false}));
    assert_eq!(
        w.of(IncidentKind::CrashLoop).len(),
        3,
        "five healthy samples do not resolve a reopened incident"
    );
    w.metric(140, json!({"crash_looping": false}));
    assert_eq!(w.of(IncidentKind::CrashLoop).last().unwrap().status, IncidentStatus::Resolved);
    // Long after the flap window a new crash is a new incident.
    w.metrics(3000, 3010, 10, json!({"crash_looping": true}));
    assert_ne!(w.of(IncidentKind::CrashLoop).last().unwrap().incident_id, first_id);
}

#[test]
fn a_regression_after_a_deploy_names_the_suspect_version() {
    struct Case {
        name: &'static str,
        after: Value,
        regression: bool,
    }
    let cases = [
        Case {
            name: "errors quadrupled above the floor",
            after: json!({"error_rate": 0.02, "p95_latency_ms": 200}),
            regression: true,
        },
        Case {
            name: "latency doubled",
            after: json!({"error_rate": 0.005, "p95_latency_ms": 450}),
            regression: true,
        },
        Case {
            name: "unchanged",
            after: json!({"error_rate": 0.005, "p95_latency_ms": 200}),
            regression: false,
        },
        Case {
            name: "doubled but under the 1 % floor",
            after: json!({"error_rate": 0.008, "p95_latency_ms": 200}),
            regression: false,
        },
    ];
    for case in cases {
        let mut w = World::new();
        w.metrics(0, 600, 10, json!({"error_rate": 0.005, "p95_latency_ms": 200}));
        w.deploy(600, "1.15.0", "1.14.2", "succeeded");
        w.metrics(600, 1200, 10, case.after);
        let found = w.of(IncidentKind::DeployRegression);
        assert_eq!(!found.is_empty(), case.regression, "{}: {found:#?}", case.name);
        if let Some(i) = found.first() {
            assert_eq!(i.suspect_version.as_deref(), Some("1.15.0"), "{}", case.name);
            assert!(i.summary.contains("1.14.2"), "{}", i.summary);
            assert!(i.evidence[0].detail.contains("since 1.15.0"), "{:?}", i.evidence[0]);
        }
    }
}

#[test]
fn a_rollback_resolves_the_regression_and_a_failed_deploy() {
    let mut w = World::new();
    w.metrics(0, 600, 10, json!({"error_rate": 0.002}));
    w.deploy(600, "1.15.0", "1.14.2", "succeeded");
    w.metrics(600, 900, 10, json!({"error_rate": 0.04}));
    w.deploy(900, "1.16.0", "1.15.0", "failed");
    assert_eq!(w.opened(), vec![IncidentKind::DeployRegression, IncidentKind::DeployFailed]);
    assert!(
        w.of(IncidentKind::HighErrorRate).is_empty() && w.of(IncidentKind::SloBurn).is_empty(),
        "explained by the regression"
    );
    w.deploy(960, "1.14.2", "1.15.0", "rolled_back");
    assert_eq!(w.statuses(IncidentKind::DeployRegression).last(), Some(&IncidentStatus::Resolved));
    assert_eq!(w.statuses(IncidentKind::DeployFailed).last(), Some(&IncidentStatus::Resolved));
}

#[test]
fn log_patterns_open_an_incident_naming_them_and_resolve_when_quiet() {
    let mut w = World::new();
    w.log(0, "info", "GET /health 200");
    w.log(5, "error", "java.lang.OutOfMemoryError: Java heap space");
    w.log(6, "error", "write /data/wal: no space left on device");
    let opened = w.of(IncidentKind::LogPattern);
    assert_eq!(opened[0].summary, "log_pattern: out_of_memory");
    assert!(
        signals(w.incidents.last().unwrap()).contains(&"log:disk_full"),
        "the second pattern is added"
    );
    w.metrics(10, 300, 30, json!({"error_rate": 0.0}));
    assert_ne!(
        w.statuses(IncidentKind::LogPattern).last(),
        Some(&IncidentStatus::Resolved),
        "still within the 5 min window"
    );
    w.metric(310, json!({"error_rate": 0.0}));
    assert_eq!(
        w.statuses(IncidentKind::LogPattern).last(),
        Some(&IncidentStatus::Resolved),
        "five quiet minutes"
    );
}

#[test]
fn conflicting_signals_are_flagged_on_the_incident() {
    let mut w = World::new();
    w.metric(0, json!({"crash_looping": true, "error_rate": 0.0}));
    let crash = w.of(IncidentKind::CrashLoop)[0];
    assert!(crash.signal_conflict);
    assert!(signals(crash).contains(&"conflict:crash_looping"));

    let mut w = World::new();
    for t in (0..300).step_by(10) {
        w.metric(t, json!({"cpu_percent": 96, "source": "node-exporter"}));
        w.metric(t + 1, json!({"cpu_percent": 95, "source": "kubelet"}));
    }
    assert!(!w.of(IncidentKind::Overload)[0].signal_conflict, "agreeing sources");
    w.metric(301, json!({"cpu_percent": 4, "source": "cadvisor"}));
    let flagged = *w.of(IncidentKind::Overload).last().unwrap();
    assert!(flagged.signal_conflict && flagged.status == IncidentStatus::Updated, "{flagged:#?}");
}

#[test]
fn an_action_followed_by_recovery_is_judged_recovered_with_its_time_to_recover() {
    let mut w = World::new();
    w.metrics(0, 30, 10, json!({"crash_looping": true}));
    let incident = w.of(IncidentKind::CrashLoop)[0].incident_id;
    let proposal = w.executed(incident, "executed", 25);
    w.metrics(60, 100, 10, json!({"crash_looping": false}));
    assert_eq!(w.statuses(IncidentKind::CrashLoop).last(), Some(&IncidentStatus::Resolved));
    assert!(w.outcomes.is_empty(), "judged only at the end of the verification window");
    w.metrics(100, 400, 10, json!({"crash_looping": false}));
    let o = &w.outcomes[0];
    assert_eq!((o.recovered, o.proposal_id, o.incident_id), (true, Some(proposal), incident));
    assert_eq!(
        o.time_to_recover_s,
        Some(20.0),
        "from the first sample after the action (t=60) to the resolution (t=80)"
    );
    assert_eq!(w.outcomes.len(), 1);
}

#[test]
fn an_action_that_helps_only_briefly_or_fails_is_judged_not_recovered() {
    let mut w = World::new();
    w.metrics(0, 30, 10, json!({"crash_looping": true}));
    let incident = w.of(IncidentKind::CrashLoop)[0].incident_id;
    w.executed(incident, "executed", 25);
    w.metrics(30, 70, 10, json!({"crash_looping": false}));
    w.metrics(70, 400, 10, json!({"crash_looping": true}));
    assert_eq!(w.outcomes.len(), 1);
    assert!(!w.outcomes[0].recovered);
    assert!(w.outcomes[0].detail.contains("came back"), "{}", w.outcomes[0].detail);

    w.executed(incident, "failed", 400);
    assert!(
        !w.outcomes[1].recovered && w.outcomes[1].detail.contains("failed"),
        "{:?}",
        w.outcomes[1]
    );
}

#[test]
fn state_saved_mid_incident_and_loaded_again_opens_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let table: agent_runtime::store::Table<ServiceState> =
        agent_runtime::store::Table::new("services");
    let mut w = World::new();
    w.metrics(0, 200, 10, json!({"error_rate": 0.2}));
    {
        let store = agent_runtime::store::Store::open(&dir.path().join("state.redb")).unwrap();
        store.put(&table, "prod/api", &w.state).unwrap();
        store.snapshot(false, |_| Ok(())).unwrap();
    }
    let store = agent_runtime::store::Store::open(&dir.path().join("state.redb")).unwrap();
    let loaded: ServiceState = store.get(&table, "prod/api").unwrap().unwrap();
    assert_eq!(loaded, w.state, "everything survives the round trip");
    w.state = loaded;
    w.metrics(200, 600, 10, json!({"error_rate": 0.2}));
    assert_eq!(w.opened(), vec![IncidentKind::HighErrorRate]);
}

#[test]
fn a_deploy_from_the_far_future_is_refused_and_does_not_blind_the_service() {
    let mut w = World::new();
    w.metric(0, json!({"error_rate": 0.0}));
    let d: DeployEvent = serde_json::from_value(json!({"service": "api", "env": "prod", "version": "9.9.9", "status": "succeeded", "timestamp": "2199-01-01T00:00:00Z"})).unwrap();
    assert!(
        w.state
            .on_deploy(&d, &w.config, "x", at(0))
            .unwrap_err()
            .to_string()
            .contains("ahead of this detector's clock")
    );
    w.metrics(10, 300, 10, json!({"cpu_percent": 99}));
    assert_eq!(w.opened(), vec![IncidentKind::Overload]);
}

#[test]
fn a_failed_deploy_long_ago_does_not_hide_new_errors() {
    let mut w = World::new();
    w.deploy(0, "2.0.0", "1.9.0", "failed");
    w.metrics(3600, 3900, 10, json!({"error_rate": 0.5}));
    assert_eq!(w.opened(), vec![IncidentKind::DeployFailed, IncidentKind::HighErrorRate]);
}

#[test]
fn an_explaining_incident_is_not_republished_for_every_sample() {
    let mut w = World::new();
    w.metrics(
        0,
        3000,
        10,
        json!({"error_rate": 0.13, "p95_latency_ms": 1450, "crash_looping": true, "restarts": 4}),
    );
    let crash = w.of(IncidentKind::CrashLoop);
    assert!(crash.len() <= 15, "{} publications for 300 samples", crash.len());
}

#[test]
fn an_slo_page_explained_by_the_error_rate_lends_it_its_severity_and_burn_rates() {
    let mut w = World::new();
    w.metrics(0, 600, 10, json!({"error_rate": 0.5}));
    assert_eq!(w.opened(), vec![IncidentKind::HighErrorRate]);
    let latest = *w.of(IncidentKind::HighErrorRate).last().unwrap();
    assert_eq!(latest.severity, Severity::Critical, "the page's severity");
    assert!(
        signals(latest).contains(&"burn_rate_5m")
            && signals(latest).contains(&"error_budget_consumed"),
        "{:?}",
        signals(latest)
    );
}

#[test]
fn one_source_reading_cpu_does_not_resolve_the_memory_another_source_reports() {
    let mut w = World::new();
    for t in (0..300).step_by(10) {
        w.metric(t, json!({"memory_percent": 97, "source": "a"}));
        w.metric(t + 5, json!({"cpu_percent": 20, "source": "b"}));
    }
    assert_eq!(w.statuses(IncidentKind::Overload)[0], IncidentStatus::Opened);
    assert!(!w.statuses(IncidentKind::Overload).contains(&IncidentStatus::Resolved));
}

#[test]
fn a_regression_stays_open_while_errors_stay_up_and_readings_without_them_say_nothing() {
    let mut w = World::new();
    w.metrics(0, 600, 10, json!({"error_rate": 0.002}));
    w.deploy(600, "1.15.0", "1.14.2", "succeeded");
    w.metrics(600, 1200, 10, json!({"error_rate": 0.03}));
    w.metrics(1200, 1500, 10, json!({"cpu_percent": 30}));
    // More than an hour after the deploy the baseline is still known.
    for t in (1500..5400).step_by(10) {
        w.metric(t, json!({"error_rate": 0.03}));
    }
    assert_eq!(w.statuses(IncidentKind::DeployRegression).first(), Some(&IncidentStatus::Opened));
    assert!(!w.statuses(IncidentKind::DeployRegression).contains(&IncidentStatus::Resolved));
    w.metrics(5400, 5430, 10, json!({"error_rate": 0.002}));
    assert_eq!(w.statuses(IncidentKind::DeployRegression).last(), Some(&IncidentStatus::Resolved));
}

#[test]
fn a_service_silent_when_the_action_ran_still_gets_the_whole_verification_window() {
    let mut w = World::new();
    w.metrics(0, 30, 10, json!({"crash_looping": true}));
    let incident = w.of(IncidentKind::CrashLoop)[0].incident_id;
    w.executed(incident, "executed", 1200);
    // Twenty minutes of silence, then the service reports again: the window starts now.
    w.metric(1220, json!({"crash_looping": true}));
    assert!(w.outcomes.is_empty());
    w.metrics(1230, 1500, 10, json!({"crash_looping": false}));
    assert!(w.outcomes.is_empty(), "judged 300 s after t=1220");
    w.metric(1530, json!({"crash_looping": false}));
    assert!(w.outcomes[0].recovered, "{:?}", w.outcomes);
}

#[test]
fn a_month_burning_exactly_the_budget_spends_exactly_the_budget() {
    let mut w = World::new();
    w.metrics(0, 30 * 86_400, 600, json!({"error_rate": 0.001}));
    let remaining = *w.budget.last().unwrap();
    assert!(remaining.abs() < 0.01, "{remaining}");
}

/// What a pipeline sends while a service crash-loops, and after: `crash_looping` only while it
/// is true, and its other metrics as ever.
#[test]
fn a_crash_loop_resolves_from_samples_that_omit_crash_looping_once_the_reports_stop() {
    let mut w = World::new();
    w.metric(0, json!({"crash_looping": true, "restarts": 4}));
    w.metrics(10, 60, 10, json!({"error_rate": 0.001, "p95_latency_ms": 120}));
    assert_eq!(
        w.statuses(IncidentKind::CrashLoop),
        vec![IncidentStatus::Opened],
        "less than crash_quiet_s (60 s) since the report"
    );
    w.metrics(60, 90, 10, json!({"error_rate": 0.001, "p95_latency_ms": 120}));
    let resolved = *w.of(IncidentKind::CrashLoop).last().unwrap();
    assert_eq!(
        resolved.status,
        IncidentStatus::Resolved,
        "three quiet samples after the quiet period"
    );
    assert_eq!(resolved.time_to_recover_s, Some(80.0));
}

#[test]
fn a_rising_restart_counter_keeps_a_crash_loop_open_and_a_steady_one_lets_it_resolve() {
    let mut w = World::new();
    w.metric(0, json!({"crash_looping": true, "restarts": 4}));
    for (k, t) in (70..400).step_by(10).enumerate() {
        w.metric(t, json!({"restarts": 5 + k}));
    }
    let open = |w: &World| !w.statuses(IncidentKind::CrashLoop).contains(&IncidentStatus::Resolved);
    assert!(open(&w), "still restarting, though nobody says crash_looping");
    w.metrics(400, 430, 10, json!({"restarts": 40}));
    assert!(open(&w), "the first steady reading is compared with a rising one");
    w.metric(430, json!({"restarts": 40}));
    assert_eq!(w.statuses(IncidentKind::CrashLoop).last(), Some(&IncidentStatus::Resolved));
}

#[test]
fn crash_reports_from_a_slower_source_do_not_make_the_incident_flap() {
    let mut w = World::new();
    // kube-state-metrics says crash_looping every 50 s; the app's exporter sends latency every 10 s.
    for t in (0..600).step_by(10) {
        let fields = if t % 50 == 0 {
            json!({"crash_looping": true, "source": "ksm"})
        } else {
            json!({"p95_latency_ms": 150, "source": "app"})
        };
        w.metric(t, fields);
    }
    let statuses = w.statuses(IncidentKind::CrashLoop);
    assert!(
        statuses[0] == IncidentStatus::Opened && !statuses.contains(&IncidentStatus::Resolved),
        "{statuses:?}"
    );
}

/// Every kind resolves from what a pipeline sends when the problem is gone: no kind needs a
/// field the pipeline only sends while something is wrong.
#[test]
fn every_kind_resolves_from_the_fields_a_pipeline_actually_sends() {
    let resolved =
        |w: &World, kind: IncidentKind| w.statuses(kind).last() == Some(&IncidentStatus::Resolved);
    // Errors, latency and saturation: the signal's own healthy readings.
    for (kind, bad, good) in [
        (IncidentKind::HighErrorRate, json!({"error_rate": 0.2}), json!({"error_rate": 0.001})),
        (
            IncidentKind::HighLatency,
            json!({"p95_latency_ms": 1500}),
            json!({"p95_latency_ms": 150}),
        ),
        (IncidentKind::Overload, json!({"cpu_percent": 97}), json!({"cpu_percent": 40})),
    ] {
        let mut w = World::new();
        w.metrics(0, 200, 10, bad);
        w.metrics(200, 240, 10, good);
        assert!(resolved(&w, kind), "{kind}: {:?}", w.statuses(kind));
    }
    // An SLO burn: healthy error rates once the burn stops.
    let mut w = World::new();
    w.metrics(0, 3600, 60, json!({"error_rate": 0.0005}));
    w.metrics(3600, 7200, 10, json!({"error_rate": 0.03}));
    assert_eq!(w.statuses(IncidentKind::SloBurn).first(), Some(&IncidentStatus::Opened));
    // The ticket rule looks back 6 h: it stops once those hours are healthy again.
    w.metrics(7200, 7200 + 8 * 3600, 60, json!({"error_rate": 0.0005}));
    assert!(resolved(&w, IncidentKind::SloBurn), "{:?}", w.statuses(IncidentKind::SloBurn));
    // A crash loop: see the tests above. A failed deploy: the next deploy that succeeds.
    let mut w = World::new();
    w.deploy(0, "2.0.0", "1.9.0", "failed");
    w.deploy(600, "2.0.1", "1.9.0", "succeeded");
    assert!(resolved(&w, IncidentKind::DeployFailed));
    // A log pattern: any later event once the matches have aged out of the pattern's window.
    let mut w = World::new();
    w.log(0, "error", "panic: index out of range");
    assert_eq!(w.statuses(IncidentKind::LogPattern), vec![IncidentStatus::Opened]);
    w.log(400, "info", "request served");
    assert!(resolved(&w, IncidentKind::LogPattern), "{:?}", w.statuses(IncidentKind::LogPattern));
}

#[test]
fn a_rollback_a_real_backend_carried_out_ends_a_failed_deploy_and_a_dry_run_does_not() {
    for (backend, ends) in [("dry_run", false), ("command", true)] {
        let mut w = World::new();
        w.metric(0, json!({"error_rate": 0.001}));
        w.deploy(10, "2.0.0", "1.9.0", "failed");
        let incident = w.of(IncidentKind::DeployFailed)[0].incident_id;
        w.executed_by(incident, "rollback", backend, "executed", 20);
        assert_eq!(
            w.statuses(IncidentKind::DeployFailed).last() == Some(&IncidentStatus::Resolved),
            ends,
            "{backend}"
        );
    }
}

/// A deploy is the suspect of a new problem only with evidence against it.
#[test]
fn a_deploy_is_a_suspect_only_when_the_problem_is_worse_after_it_than_before() {
    let suspect =
        |w: &World, kind: IncidentKind| w.of(kind).first().and_then(|i| i.suspect_version.clone());
    // Healthy for 10 minutes, deploy, then a crash loop: implicated, with the evidence listed.
    let mut w = World::new();
    w.metrics(0, 600, 10, json!({"error_rate": 0.001, "cpu_percent": 40, "crash_looping": false}));
    w.deploy(600, "1.2.0", "1.1.0", "succeeded");
    w.metrics(900, 960, 10, json!({"crash_looping": true, "restarts": 3}));
    assert_eq!(suspect(&w, IncidentKind::CrashLoop).as_deref(), Some("1.2.0"));
    let e = w.of(IncidentKind::CrashLoop)[0]
        .evidence
        .iter()
        .find(|e| e.signal == "deploy_implicated")
        .unwrap()
        .clone();
    assert!(
        e.detail.contains("1.2.0 deployed (from 1.1.0) 300 s before")
            && e.detail.contains("no crash loop was reported"),
        "{}",
        e.detail
    );

    // Crashing before the deploy already: the deploy did not cause it.
    let mut w = World::new();
    w.metrics(0, 600, 10, json!({"crash_looping": true}));
    w.metrics(600, 700, 10, json!({"crash_looping": false}));
    w.deploy(700, "1.2.0", "1.1.0", "succeeded");
    w.metrics(800, 900, 10, json!({"crash_looping": true}));
    assert_eq!(suspect(&w, IncidentKind::CrashLoop), None, "{:?}", w.of(IncidentKind::CrashLoop));

    // The first version the service is seen with, or a deploy with nothing observed before it.
    for (prev, observed_from) in [(None, 0), (Some("1.1.0"), 600)] {
        let mut w = World::new();
        w.metrics(observed_from, 600, 10, json!({"error_rate": 0.001}));
        let d: DeployEvent = serde_json::from_value(json!({"service": "api", "env": "prod", "version": "1.2.0", "previous_version": prev, "status": "succeeded", "timestamp": at(600).to_string()})).unwrap();
        let id = w.input();
        w.state.on_deploy(&d, &w.config, &id, d.timestamp).unwrap();
        w.metrics(700, 760, 10, json!({"crash_looping": true}));
        assert_eq!(
            suspect(&w, IncidentKind::CrashLoop),
            None,
            "previous {prev:?}, observed from {observed_from}"
        );
    }

    // An overload can implicate a deploy too: CPU well above its level before the deploy.
    let mut w = World::new();
    w.metrics(0, 600, 10, json!({"cpu_percent": 40}));
    w.deploy(600, "1.2.0", "1.1.0", "succeeded");
    w.metrics(600, 800, 10, json!({"cpu_percent": 97}));
    assert_eq!(suspect(&w, IncidentKind::Overload).as_deref(), Some("1.2.0"));
    // ... but not when the service ran that hot before it.
    let mut w = World::new();
    w.metrics(0, 600, 10, json!({"cpu_percent": 89}));
    w.deploy(600, "1.2.0", "1.1.0", "succeeded");
    w.metrics(600, 800, 10, json!({"cpu_percent": 97}));
    assert_eq!(suspect(&w, IncidentKind::Overload), None);
    // A deploy more than an hour before the problem is no suspect, whatever changed.
    let mut w = World::new();
    w.metrics(0, 600, 10, json!({"cpu_percent": 40}));
    w.deploy(600, "1.2.0", "1.1.0", "succeeded");
    w.metrics(600, 4500, 30, json!({"cpu_percent": 40}));
    w.metrics(4500, 4700, 10, json!({"cpu_percent": 97}));
    assert_eq!(suspect(&w, IncidentKind::Overload), None);
}

#[test]
fn a_recovery_that_does_not_hold_through_the_flap_window_is_revised_to_not_recovered() {
    let mut w = World::new();
    w.metrics(0, 30, 10, json!({"crash_looping": true}));
    let incident = w.of(IncidentKind::CrashLoop)[0].incident_id;
    let proposal = w.executed(incident, "executed", 25);
    // Resolved within the 5-min window and still resolved at its end: recovered...
    w.metrics(30, 600, 10, json!({"crash_looping": false}));
    assert_eq!(w.outcomes.len(), 1);
    assert!(w.outcomes[0].recovered && !w.outcomes[0].revised);
    // ... until it comes back 10 minutes after resolving, within the 15-min flap window.
    w.metrics(600, 700, 10, json!({"crash_looping": true}));
    assert_eq!(w.outcomes.len(), 2, "{:?}", w.outcomes);
    let revised = &w.outcomes[1];
    assert_eq!(
        (revised.recovered, revised.revised, revised.proposal_id),
        (false, true, Some(proposal))
    );
    assert!(revised.detail.contains("did not hold"), "{}", revised.detail);

    // A recovery that holds past the flap window is never revised.
    let mut w = World::new();
    w.metrics(0, 30, 10, json!({"crash_looping": true}));
    let incident = w.of(IncidentKind::CrashLoop)[0].incident_id;
    w.executed(incident, "executed", 25);
    w.metrics(30, 1200, 10, json!({"crash_looping": false}));
    w.metrics(1200, 1300, 10, json!({"crash_looping": true}));
    assert_eq!(w.outcomes.len(), 1, "{:?}", w.outcomes);
    assert!(w.state.holds.is_empty());
}

#[test]
fn an_action_run_during_anothers_window_supersedes_it_and_takes_the_credit() {
    let mut w = World::new();
    w.metrics(0, 30, 10, json!({"crash_looping": true}));
    let incident = w.of(IncidentKind::CrashLoop)[0].incident_id;
    let first = w.executed_by(incident, "restart", "dry_run", "executed", 25);
    w.metrics(30, 100, 10, json!({"crash_looping": true}));
    let noop = w.executed_by(incident, "noop", "dry_run", "executed", 100);
    assert!(w.outcomes.is_empty(), "observing supersedes nothing");
    let second = w.executed_by(incident, "rollback", "dry_run", "executed", 100);
    assert_eq!(w.outcomes.len(), 1);
    let o = &w.outcomes[0];
    assert_eq!((o.proposal_id, o.superseded_by, o.recovered), (Some(first), Some(second), false));
    assert!(!o.attributable() && o.detail.contains("superseded"), "{}", o.detail);
    w.metrics(110, 500, 10, json!({"crash_looping": false}));
    let judged: Vec<_> = w.outcomes.iter().skip(1).map(|o| (o.proposal_id, o.recovered)).collect();
    assert!(judged.contains(&(Some(second), true)), "{judged:?}");
    assert!(
        judged.iter().all(|(p, _)| *p != Some(first)),
        "the first is judged once, as superseded"
    );
    assert!(judged.contains(&(Some(noop), true)), "{judged:?}");
}
