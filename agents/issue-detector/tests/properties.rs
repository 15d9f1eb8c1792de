//! Whatever a pipeline sends, in whatever order, the detector's outputs stay valid: every
//! incident, outcome and SLO status passes the bus contract's checks (so publishing it cannot
//! fail), numbers stay finite, and there is never more than one open incident per kind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::collections::BTreeMap;
use std::time::Duration;

use bus_schema::{
    DeployEvent, IncidentKind, IncidentStatus, LogEvent, MetricSample, Timestamp, Uuid, Validate,
};
use issue_detector::config::DetectorConfig;
use issue_detector::engine::Output;
use issue_detector::service::ServiceState;
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Event {
    Metric {
        at: u64,
        error_rate: Option<f64>,
        p95: Option<f64>,
        cpu: Option<f64>,
        crash: Option<bool>,
        source: u8,
    },
    Deploy {
        at: u64,
        status: &'static str,
        version: u8,
    },
    Log {
        at: u64,
        message: &'static str,
    },
}

fn event() -> impl Strategy<Value = Event> {
    let fraction = prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0_f64];
    let metric = (
        0..14_400_u64,
        proptest::option::of(fraction),
        proptest::option::of(0.0..1e6_f64),
        proptest::option::of(0.0..=100.0_f64),
        proptest::option::of(any::<bool>()),
        0..3_u8,
    )
        .prop_map(|(at, error_rate, p95, cpu, crash, source)| Event::Metric {
            at,
            error_rate,
            p95,
            cpu,
            crash,
            source,
        });
    let deploy = (
        0..14_400_u64,
        prop_oneof![Just("started"), Just("succeeded"), Just("failed"), Just("rolled_back")],
        0..4_u8,
    )
        .prop_map(|(at, status, version)| Event::Deploy { at, status, version });
    let log = (
        0..14_400_u64,
        prop_oneof![Just("out of memory"), Just("all good"), Just("connection refused"), Just("")],
    )
        .prop_map(|(at, message)| Event::Log { at, message });
    prop_oneof![6 => metric, 1 => deploy, 1 => log]
}

fn at(s: u64) -> String {
    let t0: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
    t0.plus(Duration::from_secs(s)).to_string()
}

fn check(out: &Output, open: &mut BTreeMap<IncidentKind, Uuid>) {
    for i in &out.incidents {
        i.validate().unwrap();
        assert!(i.evidence.iter().all(|e| e.value.is_finite() && e.threshold.is_finite()), "{i:?}");
        match i.status {
            IncidentStatus::Opened => {
                let before = open.insert(i.kind, i.incident_id);
                assert!(before.is_none(), "a second open {} incident: {i:?}", i.kind);
            }
            IncidentStatus::Updated => assert_eq!(
                open.get(&i.kind),
                Some(&i.incident_id),
                "update of an incident that is not open"
            ),
            IncidentStatus::Resolved => assert_eq!(
                open.remove(&i.kind),
                Some(i.incident_id),
                "resolved an incident that is not open"
            ),
        }
    }
    for (o, _) in &out.outcomes {
        o.validate().unwrap();
    }
    if let Some(slo) = &out.slo {
        slo.validate().unwrap();
        assert!(slo.burn_rates.iter().all(|b| b.rate.is_finite()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn outputs_stay_valid_and_one_incident_per_kind_is_open(events in proptest::collection::vec(event(), 1..300)) {
        let config = DetectorConfig::default();
        let mut state = ServiceState::new("prod".parse().unwrap(), "api".parse().unwrap());
        let mut open = BTreeMap::new();
        for (n, e) in events.into_iter().enumerate() {
            let id = format!("CN_EVENTS:p:{n}");
            let out = match e {
                Event::Metric { at: t, error_rate, p95, cpu, crash, source } => {
                    let m: MetricSample = serde_json::from_value(json!({"service": "api", "env": "prod", "timestamp": at(t), "error_rate": error_rate,
                        "p95_latency_ms": p95, "cpu_percent": cpu, "crash_looping": crash, "source": format!("s{source}")})).unwrap();
                    let wall = m.timestamp;
                    match state.on_metric(&m, &config, &id, wall) {
                        Ok(out) => out,
                        Err(_) => continue,
                    }
                }
                Event::Deploy { at: t, status, version } => {
                    let d: DeployEvent = serde_json::from_value(json!({"service": "api", "env": "prod", "timestamp": at(t), "status": status, "version": format!("1.{version}.0")})).unwrap();
                    match state.on_deploy(&d, &config, &id, d.timestamp) { Ok(out) => out, Err(_) => continue }
                }
                Event::Log { at: t, message } => {
                    let l: LogEvent = serde_json::from_value(json!({"service": "api", "env": "prod", "timestamp": at(t), "level": "error", "message": message})).unwrap();
                    let wall = l.timestamp;
                    match state.on_log(&l, &config, &id, wall) {
                        Ok(out) => out,
                        Err(_) => continue,
                    }
                }
            };
            check(&out, &mut open);
        }
        let still_open: Vec<IncidentKind> = state.incidents.open().map(|i| i.kind).collect();
        prop_assert_eq!(still_open, open.keys().copied().collect::<Vec<_>>());
    }
}
