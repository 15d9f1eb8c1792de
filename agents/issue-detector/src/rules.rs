//! The detection rules: pure functions from the open incidents and one event to the
//! incidents to open or resolve.
//!
//! A signal is *bad* above its threshold and *healthy* at or below it; a sample that does not
//! carry a signal says nothing about it. The first bad sample of a kind opens an incident for
//! that env/service/kind (if none is open); the first healthy one resolves it. Ids are derived
//! from the event that caused the change, so handling an event twice changes nothing.

use std::collections::BTreeMap;

use bus_schema::{
    DeployEvent, DeployStatus, Env, Evidence, Incident, IncidentKind, IncidentStatus, MetricSample, ServiceName, Severity,
    Timestamp, derive_id,
};

/// Thresholds above which a signal is bad.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct Thresholds {
    /// Error rate (fraction of requests) above which an incident opens.
    #[arg(long = "error-rate-threshold", env = "CN_ERROR_RATE_THRESHOLD", default_value_t = 0.05)]
    pub error_rate: f64,
    /// p95 latency in ms above which an incident opens.
    #[arg(long = "p95-threshold-ms", env = "CN_P95_THRESHOLD_MS", default_value_t = 1000.0)]
    pub p95_ms: f64,
    /// CPU or memory percent above which the service is overloaded.
    #[arg(long = "saturation-threshold", env = "CN_SATURATION_THRESHOLD", default_value_t = 90.0)]
    pub saturation_percent: f64,
}

impl Thresholds {
    /// Checks the thresholds are in their units' ranges.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!("--error-rate-threshold {} must be a fraction in 0..=1", self.error_rate));
        }
        if !(self.p95_ms.is_finite() && self.p95_ms > 0.0) {
            return Err(format!("--p95-threshold-ms {} must be a positive number of milliseconds", self.p95_ms));
        }
        if !(0.0..=100.0).contains(&self.saturation_percent) {
            return Err(format!("--saturation-threshold {} must be a percentage in 0..=100", self.saturation_percent));
        }
        Ok(())
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { error_rate: 0.05, p95_ms: 1000.0, saturation_percent: 90.0 }
    }
}

/// Identifies an open incident: one per env/service/kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IncidentKey {
    pub env: Env,
    pub service: ServiceName,
    pub kind: IncidentKind,
}

impl IncidentKey {
    /// `env/service/kind`, the key in the state file.
    pub fn storage_key(&self) -> String {
        format!("{}/{}/{}", self.env, self.service, self.kind)
    }
}

/// The open incidents.
pub type Open = BTreeMap<IncidentKey, Incident>;

/// What one signal of a sample says.
#[derive(Debug, Clone, PartialEq)]
enum Reading {
    Bad(Vec<Evidence>, Severity),
    Healthy,
}

fn evidence(signal: &str, value: f64, threshold: f64) -> Evidence {
    Evidence { signal: signal.to_owned(), value, threshold, window_s: 0, detail: String::new() }
}

/// Reads every kind a metric sample speaks about.
fn read_metric(m: &MetricSample, t: &Thresholds) -> Vec<(IncidentKind, Reading)> {
    let mut out = Vec::new();
    if let Some(crash) = m.crash_looping {
        let restarts = f64::from(m.restarts.unwrap_or(0));
        out.push((
            IncidentKind::CrashLoop,
            if crash { Reading::Bad(vec![evidence("crash_looping", 1.0, 0.0), evidence("restarts", restarts, 0.0)], Severity::High) } else { Reading::Healthy },
        ));
    }
    if let Some(rate) = m.error_rate {
        let severity = if rate > 2.0 * t.error_rate { Severity::High } else { Severity::Medium };
        out.push((IncidentKind::HighErrorRate, threshold_reading("error_rate", rate, t.error_rate, severity)));
    }
    if let Some(p95) = m.p95_latency_ms {
        out.push((IncidentKind::HighLatency, threshold_reading("p95_latency_ms", p95, t.p95_ms, Severity::Medium)));
    }
    let saturation: Vec<(&str, f64)> =
        [("cpu_percent", m.cpu_percent), ("memory_percent", m.memory_percent)].into_iter().filter_map(|(n, v)| Some((n, v?))).collect();
    if !saturation.is_empty() {
        let bad: Vec<Evidence> =
            saturation.iter().filter(|(_, v)| *v > t.saturation_percent).map(|(n, v)| evidence(n, *v, t.saturation_percent)).collect();
        out.push((IncidentKind::Overload, if bad.is_empty() { Reading::Healthy } else { Reading::Bad(bad, Severity::High) }));
    }
    out
}

fn threshold_reading(signal: &str, value: f64, threshold: f64, severity: Severity) -> Reading {
    if value > threshold { Reading::Bad(vec![evidence(signal, value, threshold)], severity) } else { Reading::Healthy }
}

fn read_deploy(d: &DeployEvent) -> Option<Reading> {
    match d.status {
        DeployStatus::Failed => {
            let mut e = evidence("deploy_status", 1.0, 0.0);
            e.detail = format!("deploy of {} failed", d.version);
            Some(Reading::Bad(vec![e], Severity::High))
        }
        DeployStatus::Succeeded | DeployStatus::RolledBack => Some(Reading::Healthy),
        DeployStatus::Started => None,
    }
}

/// The incidents a metric sample opens or resolves.
pub fn on_metric(open: &Open, m: &MetricSample, t: &Thresholds, input_id: &str) -> Vec<Incident> {
    read_metric(m, t)
        .into_iter()
        .filter_map(|(kind, reading)| apply(open, &m.env, &m.service, kind, reading, m.timestamp, input_id, None))
        .collect()
}

/// The incident a deploy event opens (failed) or resolves (succeeded, rolled back).
pub fn on_deploy(open: &Open, d: &DeployEvent, input_id: &str) -> Option<Incident> {
    let reading = read_deploy(d)?;
    let suspect = (d.status == DeployStatus::Failed).then(|| d.version.clone());
    apply(open, &d.env, &d.service, IncidentKind::DeployFailed, reading, d.timestamp, input_id, suspect)
}

#[allow(clippy::too_many_arguments)]
fn apply(
    open: &Open,
    env: &Env,
    service: &ServiceName,
    kind: IncidentKind,
    reading: Reading,
    at: Timestamp,
    input_id: &str,
    suspect_version: Option<String>,
) -> Option<Incident> {
    let key = IncidentKey { env: env.clone(), service: service.clone(), kind };
    match (open.get(&key), reading) {
        (None, Reading::Bad(evidence, severity)) => Some(Incident {
            incident_id: derive_id(&["incident", input_id, kind.as_str()]),
            env: env.clone(),
            service: service.clone(),
            kind,
            severity,
            status: IncidentStatus::Opened,
            summary: summary(kind, &evidence),
            opened_at: at,
            updated_at: at,
            resolved_at: None,
            evidence,
            signal_conflict: false,
            suspect_version,
            time_to_recover_s: None,
            sample_count: 1,
        }),
        (Some(incident), Reading::Healthy) => Some(Incident {
            status: IncidentStatus::Resolved,
            updated_at: at,
            resolved_at: Some(at),
            time_to_recover_s: Some(at.since(incident.opened_at).as_secs_f64()),
            ..incident.clone()
        }),
        _ => None,
    }
}

fn summary(kind: IncidentKind, evidence: &[Evidence]) -> String {
    let signals: Vec<String> = evidence.iter().map(|e| format!("{}={}", e.signal, e.value)).collect();
    format!("{kind}: {}", signals.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(json: serde_json::Value) -> MetricSample {
        let mut base = serde_json::json!({"service": "api", "env": "stage", "timestamp": "2026-11-22T10:00:00Z"});
        base.as_object_mut().unwrap().extend(json.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn kinds(incidents: &[Incident]) -> Vec<(IncidentKind, IncidentStatus)> {
        incidents.iter().map(|i| (i.kind, i.status)).collect()
    }

    fn open_all(incidents: Vec<Incident>) -> Open {
        incidents
            .into_iter()
            .map(|i| (IncidentKey { env: i.env.clone(), service: i.service.clone(), kind: i.kind }, i))
            .collect()
    }

    #[test]
    fn the_design_example_opens_one_incident_per_bad_signal() {
        let m = sample(serde_json::json!({"error_rate": 0.13, "p95_latency_ms": 1450, "cpu_percent": 91, "crash_looping": true, "restarts": 4}));
        let got = on_metric(&Open::new(), &m, &Thresholds::default(), "CN_EVENTS:1");
        use IncidentKind::*;
        assert_eq!(
            kinds(&got),
            vec![(CrashLoop, IncidentStatus::Opened), (HighErrorRate, IncidentStatus::Opened), (HighLatency, IncidentStatus::Opened), (Overload, IncidentStatus::Opened)]
        );
        assert_eq!(got[1].severity, Severity::High, "0.13 is over twice the 0.05 threshold");
        assert_eq!(got[1].evidence[0].value, 0.13);
    }

    #[test]
    fn thresholds_are_exclusive() {
        let m = sample(serde_json::json!({"error_rate": 0.05, "p95_latency_ms": 1000, "cpu_percent": 90}));
        assert!(on_metric(&Open::new(), &m, &Thresholds::default(), "x").is_empty());
    }

    #[test]
    fn an_open_incident_is_not_opened_again_and_resolves_on_a_healthy_sample() {
        let t = Thresholds::default();
        let open = open_all(on_metric(&Open::new(), &sample(serde_json::json!({"crash_looping": true})), &t, "a"));
        assert!(on_metric(&open, &sample(serde_json::json!({"crash_looping": true})), &t, "b").is_empty());
        // Samples without the signal say nothing about it.
        assert!(on_metric(&open, &sample(serde_json::json!({"qps": 10})), &t, "c").is_empty());
        let mut healthy = sample(serde_json::json!({"crash_looping": false}));
        healthy.timestamp = "2026-11-22T10:01:30Z".parse().unwrap();
        let resolved = on_metric(&open, &healthy, &t, "d");
        assert_eq!(kinds(&resolved), vec![(IncidentKind::CrashLoop, IncidentStatus::Resolved)]);
        assert_eq!(resolved[0].incident_id, open.values().next().unwrap().incident_id);
        assert_eq!(resolved[0].time_to_recover_s, Some(90.0));
    }

    #[test]
    fn ids_come_from_the_input_so_a_repeat_is_the_same_incident() {
        let m = sample(serde_json::json!({"crash_looping": true}));
        let t = Thresholds::default();
        assert_eq!(on_metric(&Open::new(), &m, &t, "CN_EVENTS:9"), on_metric(&Open::new(), &m, &t, "CN_EVENTS:9"));
        assert_ne!(on_metric(&Open::new(), &m, &t, "CN_EVENTS:9")[0].incident_id, on_metric(&Open::new(), &m, &t, "CN_EVENTS:10")[0].incident_id);
    }

    #[test]
    fn deploys_open_on_failure_and_resolve_on_success() {
        let failed: DeployEvent = serde_json::from_value(serde_json::json!({
            "service": "api", "env": "prod", "version": "1.15.0", "status": "failed", "timestamp": "2026-11-22T10:00:00Z"
        }))
        .unwrap();
        let opened = on_deploy(&Open::new(), &failed, "x").unwrap();
        assert_eq!((opened.kind, opened.suspect_version.as_deref()), (IncidentKind::DeployFailed, Some("1.15.0")));
        let open = open_all(vec![opened]);
        let ok = DeployEvent { status: DeployStatus::Succeeded, ..failed.clone() };
        assert_eq!(on_deploy(&open, &ok, "y").unwrap().status, IncidentStatus::Resolved);
        let started = DeployEvent { status: DeployStatus::Started, ..failed };
        assert_eq!(on_deploy(&open, &started, "z"), None);
    }
}
