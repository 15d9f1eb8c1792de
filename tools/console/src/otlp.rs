//! Spans of the traced proof records, sent over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set (docs/operations.md, Tracing).
//!
//! A pipeline's `traceparent` comes back on every proof record of the chain it started, each
//! record with the trace's id and a span id of its own ([`bus_schema::trace`]). The console reads
//! every record anyway, so it is the one that turns each such record into a span: named
//! `cn.{kind}`, with the record's trace and span ids, starting and ending at the record's `ts`
//! (a record is an instant; the gaps between a trace's spans show how long each hop took), and
//! the record's fields as `cn.*` attributes. The agents link no tracing SDK.
//!
//! Only live records are exported: those at most [`LIVE`] older than the moment the console
//! reads them, so a restarted console, which reads the log from its start, sends again only
//! the last [`LIVE`] of the history (a collector sees those spans twice). Records of a trace whose sampled flag is off are not exported.
//!
//! Exporting never holds up the follower: spans go through a bounded queue to a task that sends
//! them in batches. A span that finds the queue full is dropped and counted; drops and failed
//! exports are logged at most once a minute each, with how many spans they cost.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bus_schema::Timestamp;
use bus_schema::proof::{ProofKind, ProofRecord};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{
    OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How old a record may be when the console reads it and still be exported.
pub const LIVE: Duration = Duration::from_secs(5 * 60);

/// The service name of every exported span's resource.
pub const SERVICE_NAME: &str = "chaos-negotiator";

/// Spans waiting to be sent; past this they are dropped.
const QUEUE: usize = 2048;
/// Spans in one export request at most.
const BATCH: usize = 512;
/// How long the first span of a batch waits for company.
const LINGER: Duration = Duration::from_secs(1);
/// Drops and failures are logged at most this often.
const QUIET: Duration = Duration::from_secs(60);

/// The OTLP configuration in the environment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP span export: {0}")]
    Config(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("OTLP span export: {name}={value:?}: {problem}")]
    Unsupported { name: &'static str, value: String, problem: &'static str },
}

/// Hands traced records to the sending task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Exporter {
    queue: mpsc::Sender<SpanData>,
    dropped: Arc<AtomicU64>,
}

impl Exporter {
    /// An exporter configured by the standard `OTEL_EXPORTER_OTLP_*` variables (endpoint,
    /// protocol `http/protobuf` or `http/json`, headers, timeout), or none when no endpoint is
    /// set. Spawns the sending task, so call it inside the tokio runtime.
    pub fn from_env() -> Result<Option<Exporter>, OtlpError> {
        let Some((_, endpoint)) =
            setting(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT)
        else {
            return Ok(None);
        };
        if let Some((name, protocol)) =
            setting(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL)
            && protocol.trim().eq_ignore_ascii_case("grpc")
        {
            let problem = "the console speaks OTLP/HTTP only: http/protobuf or http/json";
            return Err(OtlpError::Unsupported { name, value: protocol, problem });
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
        exporter.set_resource(&Resource::builder().with_service_name(SERVICE_NAME).build());
        let (queue, spans) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tracing::info!(%endpoint, "exporting the spans of traced proof records over OTLP/HTTP");
        tokio::spawn(send_batches(exporter, endpoint, spans, dropped.clone()));
        Ok(Some(Exporter { queue, dropped }))
    }

    /// Queues the record's span if it has one ([`span_of`], live as of now); never waits.
    pub fn offer(&self, record: &ProofRecord) {
        let Some(span) = span_of(record, Timestamp::now()) else {
            return;
        };
        if self.queue.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The first of the two variables that is set and not empty, and its value.
fn setting(first: &'static str, then: &'static str) -> Option<(&'static str, String)> {
    [first, then]
        .into_iter()
        .find_map(|name| Some((name, std::env::var(name).ok().filter(|v| !v.is_empty())?)))
}

/// The span of `record` if it carries a sampled trace and is live at `now` (no older than
/// [`LIVE`]).
pub fn span_of(record: &ProofRecord, now: Timestamp) -> Option<SpanData> {
    let traceparent = record.traceparent.as_ref().filter(|tp| tp.sampled())?;
    if now.since(record.ts) > LIVE {
        return None;
    }
    let trace_id = TraceId::from_hex(&traceparent.trace_id()).ok()?;
    let span_id = SpanId::from_hex(&traceparent.parent_id()).ok()?;
    let nanos = u64::try_from(record.ts.unix_nanos()).ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
    let status = match (record.kind, &record.reason) {
        (ProofKind::ActionFailed, reason) => {
            Status::error(reason.clone().unwrap_or_else(|| "action failed".to_owned()))
        }
        _ => Status::Unset,
    };
    Some(SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Owned(format!("cn.{}", record.kind)),
        start_time: at,
        end_time: at,
        attributes: attributes(record),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: InstrumentationScope::builder("cn-console")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    })
}

/// The record's identity and the fields it has, as `cn.*` attributes.
fn attributes(record: &ProofRecord) -> Vec<KeyValue> {
    let text = |s: &str| Some(s.to_owned());
    let optional = [
        ("cn.env", record.env.as_ref().and_then(|e| text(e.as_str()))),
        ("cn.service", record.service.as_ref().and_then(|s| text(s.as_str()))),
        ("cn.action", record.action.as_ref().and_then(|a| text(a.as_str()))),
        ("cn.reason", record.reason.clone()),
        ("cn.proposal_id", record.proposal_id.map(|id| id.to_string())),
        ("cn.incident_id", record.incident_id.map(|id| id.to_string())),
        ("cn.correlation_id", record.correlation_id.clone()),
    ];
    let mut attributes = vec![
        KeyValue::new("cn.agent", record.agent.as_str().to_owned()),
        KeyValue::new("cn.instance", record.instance.as_str().to_owned()),
        KeyValue::new("cn.seq", i64::try_from(record.seq).unwrap_or(i64::MAX)),
    ];
    attributes
        .extend(optional.into_iter().filter_map(|(key, value)| Some(KeyValue::new(key, value?))));
    attributes
}

/// Sends the queued spans in batches of up to [`BATCH`], each after at most [`LINGER`], one
/// request at a time, until every [`Exporter`] handle is gone.
async fn send_batches(
    exporter: opentelemetry_otlp::SpanExporter,
    endpoint: String,
    mut spans: mpsc::Receiver<SpanData>,
    dropped: Arc<AtomicU64>,
) {
    let mut drops = Losses::default();
    let mut failures = Losses::default();
    while let Some(first) = spans.recv().await {
        let mut batch = vec![first];
        let deadline = Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, spans.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let size = batch.len() as u64;
        match exporter.export(batch).await {
            Ok(()) => {
                if let Some(lost) = failures.recovered() {
                    tracing::warn!(%endpoint, lost, "OTLP span export works again; spans lost meanwhile");
                }
            }
            Err(e) => {
                if let Some(lost) = failures.add(size, Instant::now()) {
                    tracing::error!(%endpoint, error = %e, lost, "OTLP span export failed; spans lost (logged at most once a minute)");
                }
            }
        }
        if let Some(lost) = drops.add(dropped.swap(0, Ordering::Relaxed), Instant::now()) {
            tracing::warn!(
                lost,
                "OTLP span queue full; spans dropped (logged at most once a minute)"
            );
        }
    }
}

/// Spans lost since the last time it was said, and when that was: a log line at most once
/// per [`QUIET`].
#[derive(Debug, Default)]
struct Losses {
    unsaid: u64,
    said_at: Option<Instant>,
}

impl Losses {
    /// Counts `spans` more; returns the count to log when it is time to say so.
    fn add(&mut self, spans: u64, now: Instant) -> Option<u64> {
        self.unsaid += spans;
        let quiet = self.said_at.is_some_and(|at| now.duration_since(at) < QUIET);
        if self.unsaid == 0 || quiet {
            return None;
        }
        self.said_at = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }

    /// After a success: the losses not yet logged, if any, and a clean slate.
    fn recovered(&mut self) -> Option<u64> {
        self.said_at = None;
        Some(std::mem::take(&mut self.unsaid)).filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use opentelemetry::Value;

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn executed(traceparent: &str) -> ProofRecord {
        serde_json::from_value(serde_json::json!({
            "v": 1, "agent": "executor", "instance": "0", "seq": 7,
            "ts": "2026-02-20T17:00:00.250Z", "kind": "action_executed",
            "correlation_id": "c-1", "traceparent": traceparent, "env": "stage",
            "service": "traced", "action": "restart",
            "incident_id": "00000000-0000-0000-0000-000000000001",
            "proposal_id": "00000000-0000-0000-0000-000000000002",
            "prev_hash": "0".repeat(64),
        }))
        .unwrap()
    }

    fn at(ts: &str) -> Timestamp {
        serde_json::from_value(serde_json::json!(ts)).unwrap()
    }

    #[test]
    fn a_traced_record_becomes_a_span_with_its_ids_name_time_and_fields() {
        let record = executed(&format!("00-{TRACE}-00f067aa0ba902b7-01"));
        let span = span_of(&record, at("2026-02-20T17:01:00Z")).unwrap();
        assert_eq!(span.span_context.trace_id().to_string(), TRACE);
        assert_eq!(span.span_context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(span.span_context.is_sampled());
        assert_eq!(span.parent_span_id, SpanId::INVALID);
        assert_eq!(span.name, "cn.action_executed");
        let ts = SystemTime::UNIX_EPOCH + Duration::from_millis(1_771_606_800_250);
        assert_eq!((span.start_time, span.end_time), (ts, ts));
        assert_eq!(span.status, Status::Unset);
        let attribute = |key: &str| {
            span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.clone())
        };
        for (key, value) in [
            ("cn.agent", "executor"),
            ("cn.instance", "0"),
            ("cn.env", "stage"),
            ("cn.service", "traced"),
            ("cn.action", "restart"),
            ("cn.incident_id", "00000000-0000-0000-0000-000000000001"),
            ("cn.proposal_id", "00000000-0000-0000-0000-000000000002"),
            ("cn.correlation_id", "c-1"),
        ] {
            assert_eq!(attribute(key), Some(Value::from(value.to_owned())), "{key}");
        }
        assert_eq!(attribute("cn.seq"), Some(Value::I64(7)));
        assert_eq!(attribute("cn.reason"), None, "absent fields are left out");
    }

    #[test]
    fn only_live_sampled_traced_records_have_a_span() {
        let sampled = executed(&format!("00-{TRACE}-00f067aa0ba902b7-01"));
        assert!(span_of(&sampled, at("2026-02-20T17:05:00.250Z")).is_some(), "5 min: live");
        assert!(span_of(&sampled, at("2026-02-20T17:05:00.251Z")).is_none(), "history");
        assert!(span_of(&sampled, at("2026-02-20T16:59:00Z")).is_some(), "a clock behind");
        let unsampled = executed(&format!("00-{TRACE}-00f067aa0ba902b7-00"));
        assert!(span_of(&unsampled, at("2026-02-20T17:00:01Z")).is_none());
        let mut untraced = sampled.clone();
        untraced.traceparent = None;
        assert!(span_of(&untraced, at("2026-02-20T17:00:01Z")).is_none());
    }

    #[test]
    fn a_failed_action_is_an_error_span_with_its_reason() {
        let mut failed = executed(&format!("00-{TRACE}-00f067aa0ba902b7-01"));
        failed.kind = ProofKind::ActionFailed;
        failed.reason = Some("exit_status".to_owned());
        let span = span_of(&failed, at("2026-02-20T17:00:01Z")).unwrap();
        assert_eq!(span.name, "cn.action_failed");
        assert_eq!(span.status, Status::error("exit_status"));
    }

    #[test]
    fn losses_are_said_at_most_once_a_quiet_period_and_none_is_forgotten() {
        let mut losses = Losses::default();
        let start = Instant::now();
        assert_eq!(losses.add(0, start), None, "nothing lost, nothing said");
        assert_eq!(losses.add(3, start), Some(3), "the first loss is said at once");
        assert_eq!(losses.add(2, start + Duration::from_secs(1)), None);
        assert_eq!(losses.add(1, start + QUIET), Some(3), "then once a quiet period");
        assert_eq!(losses.add(4, start + QUIET), None);
        assert_eq!(losses.recovered(), Some(4), "a success tells the rest");
        assert_eq!(losses.recovered(), None);
        assert_eq!(losses.add(1, start + QUIET), Some(1), "and starts over");
    }
}
