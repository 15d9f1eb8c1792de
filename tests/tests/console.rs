//! The console against a real fleet: its `/metrics` parse as OpenMetrics text, every series is
//! a `cn_` one, and they move when events flow: from the proof log, and from what the agents
//! and their consumers say when asked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::collections::BTreeMap;
use std::time::Duration;

use cn_tests::console::Console;
use cn_tests::fleet::Fleet;
use cn_tests::scenario::crash_restarted;

/// The console's `/metrics`, read as Prometheus would.
struct Scraper(Console);

impl Scraper {
    /// A console on a free port, as the read-only auditor.
    fn start(fleet: &Fleet) -> Self {
        Self(Console::start(fleet, "auditor", &[], &[]).unwrap())
    }

    /// `GET path`: the status line's code, the content type and the body.
    fn get(&self, path: &str) -> (u16, String, String) {
        let response = cn_tests::scenario::http_get(&self.0.addr, path).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let code = head.split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
            .unwrap_or_default();
        (code, content_type, body.to_owned())
    }

    /// The samples of `/metrics`, checked against the OpenMetrics text format.
    fn samples(&self) -> BTreeMap<String, f64> {
        let (code, content_type, body) = self.get("/metrics");
        assert_eq!(code, 200, "{body}");
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        parse_openmetrics(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
    }

    /// `/metrics` once `done` holds of it (the console reads the log from its start, and asks
    /// the agents every 5 s).
    async fn samples_until(
        &self,
        what: &str,
        done: impl Fn(&BTreeMap<String, f64>) -> bool,
    ) -> BTreeMap<String, f64> {
        for _ in 0..200 {
            let samples = self.samples();
            if done(&samples) {
                return samples;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {what} in /metrics after 20 s: {:#?}", self.samples())
    }
}

/// Parses OpenMetrics text: `# TYPE`/`# HELP`/`# UNIT` lines, samples `name{k="v",…} value`,
/// and the closing `# EOF`. Returns each sample by its name and labels as written.
fn parse_openmetrics(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    if lines.last() != Some(&"# EOF") {
        return Err("does not end with # EOF".into());
    }
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in &lines[..lines.len() - 1] {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or_default();
                    if ![
                        "counter",
                        "gauge",
                        "histogram",
                        "info",
                        "stateset",
                        "unknown",
                        "summary",
                        "gaugehistogram",
                    ]
                    .contains(&t)
                    {
                        return Err(format!("unknown type in {line:?}"));
                    }
                    types.insert(name.to_owned(), t.to_owned());
                }
                "HELP" | "UNIT" => {}
                _ => return Err(format!("unknown comment {line:?}")),
            }
            if !name_ok(name) {
                return Err(format!("bad metric name in {line:?}"));
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value in {line:?}"))?;
        let value: f64 = value.parse().map_err(|_| format!("bad value in {line:?}"))?;
        let name = series.split('{').next().unwrap_or_default();
        if !name_ok(name) {
            return Err(format!("bad sample name in {line:?}"));
        }
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
                let inner = inner.ok_or(format!("bad labels in {line:?}"))?;
                for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").ok_or(format!("bad label in {line:?}"))?;
                    if !name_ok(k) || v.contains('\n') {
                        return Err(format!("bad label {k:?} in {line:?}"));
                    }
                }
            }
        }
        let family = types.keys().filter(|t| name.starts_with(t.as_str())).max_by_key(|t| t.len());
        if family.is_none() {
            return Err(format!("sample {name} has no # TYPE before it"));
        }
        samples.insert(series.to_owned(), value);
    }
    Ok(samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_parse_and_move_when_a_crash_is_remediated() {
    let fleet = Fleet::start().await.unwrap();
    let console = Scraper::start(&fleet);
    assert_eq!(console.get("/healthz").0, 200);
    let started = |m: &BTreeMap<String, f64>| {
        m.keys().any(|k| {
            k.starts_with("cn_proof_records_total{") && k.contains("kind=\"agent_started\"")
        })
    };
    let before = console.samples_until("the fleet's start", started).await;
    assert!(before.keys().all(|k| k.starts_with("cn_")), "{before:#?}");

    crash_restarted(&fleet, "metered").await;
    let executed =
        |m: &BTreeMap<String, f64>| m.keys().any(|k| k.starts_with("cn_actions_executed_total{"));
    let after = console.samples_until("the restart", executed).await;
    let restarts: f64 = after
        .iter()
        .filter(|(k, _)| {
            k.starts_with("cn_actions_executed_total{") && k.contains("action=\"restart\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(restarts, 1.0, "{after:#?}");
    assert_eq!(after.get("cn_remediation_seconds_count"), Some(&1.0), "{after:#?}");
    let open: f64 =
        after.iter().filter(|(k, _)| k.starts_with("cn_incidents_open{")).map(|(_, v)| v).sum();
    assert!(open <= 1.0, "{after:#?}");
    let heads = |m: &BTreeMap<String, f64>| -> f64 {
        m.iter().filter(|(k, _)| k.starts_with("cn_chain_head{")).map(|(_, v)| v).sum()
    };
    assert!(heads(&after) > heads(&before), "the chains grew");

    // Each hop of the remediation, timed by the agent that acted.
    for agent in ["rl-optimizer", "governance-gate", "executor"] {
        let count = format!("cn_handling_seconds_count{{agent=\"{agent}\"}}");
        assert!(after.get(&count).is_some_and(|n| *n >= 1.0), "{count}: {after:#?}");
    }
    // What the detector says it handled (asked every 5 s), and how far its consumer is.
    let detector = |m: &BTreeMap<String, f64>| {
        m.iter().any(|(k, v)| {
            k.starts_with("cn_inputs_handled_total{agent=\"issue-detector\"") && *v > 0.0
        })
    };
    let asked = console.samples_until("the detector's handled inputs", detector).await;
    assert_eq!(asked.get("cn_agent_up{agent=\"issue-detector\",instance=\"0\"}"), Some(&1.0));
    let events = "{stream=\"CN_EVENTS\",consumer=\"issue-detector-events\"}";
    assert!(asked.contains_key(&format!("cn_consumer_pending{events}")), "{asked:#?}");
    assert!(asked.contains_key(&format!("cn_consumer_ack_pending{events}")), "{asked:#?}");
}
