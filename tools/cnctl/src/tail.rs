//! `cnctl tail`: follow the proof log.
//!
//! One line per record by default:
//!
//! ```text
//! 2026-11-22T10:00:00.123Z governance-gate.0 #17 action_refused prod/payments-api rollback reason=not_eligible_in_env corr=CN_EVENTS:5 {"allowed":[…]}
//! ```
//!
//! `--json` prints the records exactly as stored, `--cloudevents` each as a CloudEvent in the
//! JSON format (its data the record as stored). Filters: `--env`, `--service`, `--kind`
//! (repeatable), `--agent`; `--since` takes a duration (`10m`), an RFC 3339 time or `all`.

use std::process::ExitCode;
use std::time::Duration;

use agent_runtime::config::{DurationError, NatsArgs, parse_duration};
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use bus_schema::proof::{ProofKind, ProofRecord};
use bus_schema::subject::{PROOF, Stream};
use bus_schema::{AgentName, Env, ServiceName, Timestamp};
use futures_util::StreamExt;

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Print each record as stored (JSON), one per line.
    #[arg(long, conflicts_with = "cloudevents")]
    pub json: bool,
    /// Print each record as a CloudEvent (JSON format, one per line): type
    /// cn.v1.proof.{kind}, source /cn/proof/{agent}/{instance}, id the record's sequence,
    /// data the record as stored.
    #[arg(long)]
    pub cloudevents: bool,
    /// Only records about this environment.
    #[arg(long)]
    pub env: Option<Env>,
    /// Only records about this service.
    #[arg(long)]
    pub service: Option<ServiceName>,
    /// Only these kinds (repeat the flag), e.g. --kind action_approved --kind action_refused.
    #[arg(long = "kind")]
    pub kinds: Vec<ProofKind>,
    /// Only this agent's records (every instance).
    #[arg(long)]
    pub agent: Option<AgentName>,
    /// Start this long ago (10m, 2h), at an RFC 3339 time, or `all`.
    #[arg(long, default_value = "15m", value_parser = parse_since)]
    pub since: Since,
    /// Stop after the records already stored instead of following.
    #[arg(long)]
    pub no_follow: bool,
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Since {
    All,
    At(Timestamp),
}

pub(crate) fn parse_since(s: &str) -> Result<Since, SinceError> {
    if s == "all" {
        return Ok(Since::All);
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(Since::At(t));
    }
    parse_duration(s)
        .map(|d| Since::At(Timestamp::now().minus(d)))
        .map_err(|source| SinceError { input: s.to_owned(), source })
}

/// A `--since` that is neither a duration, a time nor `all` (the source says why it is not a
/// duration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration (10m), an RFC 3339 time or `all`")]
pub(crate) struct SinceError {
    input: String,
    source: DurationError,
}

impl TailArgs {
    fn matches(&self, r: &ProofRecord) -> bool {
        (self.env.is_none() || r.env == self.env)
            && (self.service.is_none() || r.service == self.service)
            && (self.kinds.is_empty() || self.kinds.contains(&r.kind))
    }
}

/// A record as one readable line.
pub fn format_line(r: &ProofRecord) -> String {
    let mut line = format!("{} {}.{} #{} {}", r.ts.millis(), r.agent, r.instance, r.seq, r.kind);
    match (&r.env, &r.service) {
        (Some(e), Some(s)) => line.push_str(&format!(" {e}/{s}")),
        (Some(e), None) => line.push_str(&format!(" {e}")),
        _ => {}
    }
    if let Some(a) = &r.action {
        line.push_str(&format!(" {a}"));
    }
    if let Some(reason) = &r.reason {
        line.push_str(&format!(" reason={reason}"));
    }
    if let Some(c) = &r.correlation_id {
        line.push_str(&format!(" corr={c}"));
    }
    if !r.detail.is_null() {
        let detail = r.detail.to_string();
        let shown: String = detail.chars().take(240).collect();
        line.push(' ');
        line.push_str(&shown);
        if shown.len() < detail.len() {
            line.push('…');
        }
    }
    line
}

/// [`format_line`], escaped for the terminal, with its kind in colour (when colour is on).
pub fn coloured_line(r: &ProofRecord) -> String {
    let plain = format_line(r);
    let line = bus_schema::display::escape(&plain);
    let kind = r.kind.to_string();
    let painted = crate::style::paint(&kind, crate::style::tone_of_kind(&kind));
    line.replacen(&format!(" {kind} "), &format!(" {painted} "), 1)
}

/// An ephemeral consumer over CN_PROOF (nothing to ack, removed when idle).
pub async fn proof_consumer(
    js: &jetstream::Context,
    filter: String,
    since: Since,
) -> Result<jetstream::consumer::PullConsumer, Failure> {
    let stream = js
        .get_stream(Stream::Proof.name())
        .await
        .map_err(|e| format!("cannot open CN_PROOF: {e}"))?;
    let deliver_policy = match since {
        Since::All => DeliverPolicy::All,
        Since::At(t) => DeliverPolicy::ByStartTime { start_time: t.to_offset_date_time() },
    };
    let config = pull::Config {
        filter_subject: filter,
        deliver_policy,
        ack_policy: AckPolicy::None,
        inactive_threshold: Duration::from_secs(30),
        ..Default::default()
    };
    Ok(stream.create_consumer(config).await.map_err(|e| format!("cannot read CN_PROOF: {e}"))?)
}

pub async fn run(nats: &NatsArgs, args: TailArgs) -> Result<ExitCode, Failure> {
    let client = crate::connect(nats).await?;
    let js = jetstream::new(client);
    let filter = match &args.agent {
        Some(a) => PROOF.agent(a).pattern().to_owned(),
        None => PROOF.all().pattern().to_owned(),
    };
    let consumer = proof_consumer(&js, filter, args.since).await?;
    let mut messages =
        consumer.messages().await.map_err(|e| format!("cannot read CN_PROOF: {e}"))?;
    let mut pending = consumer.cached_info().num_pending;
    if args.no_follow && pending == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| format!("reading CN_PROOF: {e}"))?;
        pending = msg.info().map(|i| i.pending).unwrap_or(0);
        match serde_json::from_slice::<ProofRecord>(&msg.payload) {
            Ok(r) if args.matches(&r) => {
                if args.json {
                    outln!("{}", String::from_utf8_lossy(&msg.payload));
                } else if args.cloudevents {
                    outln!("{}", as_cloudevent(&r, &msg.payload));
                } else {
                    outln!("{}", coloured_line(&r));
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("unreadable record on {}: {e}", msg.subject),
        }
        if args.no_follow && pending == 0 {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A record as a CloudEvent in the JSON format, one line.
fn as_cloudevent(record: &ProofRecord, stored: &[u8]) -> String {
    let event = serde_json::from_slice(stored)
        .map_err(|e| e.to_string())
        .and_then(|raw| {
            bus_schema::cloudevent::of_proof_record(record, raw).map_err(|e| e.to_string())
        })
        .and_then(|event| serde_json::to_string(&event).map_err(|e| e.to_string()));
    event.unwrap_or_else(|e| {
        // A record read is a valid one, so this is a bug: say so rather than skip it.
        serde_json::json!({"error": format!("record {} of {}.{} as a CloudEvent: {e}", record.seq, record.agent, record.instance)}).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_as_one_line() {
        let r: ProofRecord = serde_json::from_value(serde_json::json!({
            "v":1,"agent":"governance-gate","instance":"0","seq":17,"ts":"2026-11-22T10:00:00.123Z",
            "kind":"action_refused","correlation_id":"CN_EVENTS:5","env":"prod","service":"payments-api",
            "action":"rollback","reason":"not_eligible_in_env","detail":{"allowed":["noop"]},"prev_hash":"0".repeat(64)
        }))
        .unwrap();
        assert_eq!(
            format_line(&r),
            "2026-11-22T10:00:00.123Z governance-gate.0 #17 action_refused prod/payments-api rollback reason=not_eligible_in_env corr=CN_EVENTS:5 {\"allowed\":[\"noop\"]}"
        );
    }

    #[test]
    fn since_takes_durations_times_and_all() {
        assert_eq!(parse_since("all"), Ok(Since::All));
        assert_eq!(
            parse_since("2026-11-22T10:00:00Z"),
            Ok(Since::At("2026-11-22T10:00:00Z".parse().unwrap()))
        );
        assert!(matches!(parse_since("10m"), Ok(Since::At(_))));
        assert!(parse_since("yesterday").unwrap_err().to_string().contains("not a duration"));
    }
}
