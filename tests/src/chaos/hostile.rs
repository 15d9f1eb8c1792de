//! Hostile input: what a broken or malicious pipeline could publish as the `pipeline` user.
//!
//! Each message names what the contract (docs/contract.md, Input rules) says should happen to it. Most must be
//! rejected by every agent that consumes the subject, with an `event_rejected` record: bytes
//! that are not JSON, JSON that is cut off, nested ten thousand levels deep, `NaN`, numbers no
//! field can hold, control characters and U+202E where a token is expected, subjects whose
//! tokens are invalid or disagree with the payload, MessagePack that lies about its lengths,
//! payloads over the agents' 64 KiB limit. A few are odd but valid — a payload exactly at the
//! limit, a deeply nested *unknown* field (unknown fields are ignored), a log message with
//! escape codes and U+202E (free text, escaped wherever it is shown) — and must be accepted.

use std::time::Duration;

use agent_runtime::rng::Rng;
use async_nats::HeaderMap;
use bus_schema::codec::{Encoding, Limits, encode_as};
use bus_schema::{MetricSample, Timestamp, headers};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::load::{Message, publish};

/// What the contract says an agent must do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `event_rejected`, with a reason, from every agent that consumes the subject.
    Reject,
    /// Valid, if odd: handled like any event.
    Accept,
}

/// How the message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A JetStream publish, stored on CN_EVENTS and pulled by durable consumers.
    Stored,
    /// A core NATS request, answered by the agent (cn.negotiate).
    Request,
}

/// One hostile message.
#[derive(Debug, Clone)]
pub struct Hostile {
    /// What it tries, e.g. `nested-arrays-10000`.
    pub name: &'static str,
    pub subject: String,
    pub headers: Vec<(&'static str, String)>,
    pub payload: Vec<u8>,
    pub expect: Expect,
    pub transport: Transport,
}

impl Hostile {
    fn stored(
        name: &'static str,
        subject: impl Into<String>,
        payload: impl Into<Vec<u8>>,
        expect: Expect,
    ) -> Self {
        Self {
            name,
            subject: subject.into(),
            headers: Vec::new(),
            payload: payload.into(),
            expect,
            transport: Transport::Stored,
        }
    }

    fn reject(name: &'static str, subject: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self::stored(name, subject, payload, Expect::Reject)
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn msgpack(self) -> Self {
        self.header(headers::CONTENT_TYPE, headers::MSGPACK)
    }

    fn request(mut self) -> Self {
        self.transport = Transport::Request;
        self
    }
}

fn metric(service: &str) -> String {
    format!("cn.events.metric.stage.{service}")
}

fn deploy(service: &str) -> String {
    format!("cn.events.deploy.stage.{service}")
}

/// A healthy metric sample for `service` in stage, as JSON.
fn sample(service: &str, now: &str) -> Value {
    json!({"service": service, "env": "stage", "error_rate": 0.001, "p95_latency_ms": 120, "timestamp": now})
}

/// A sample with one field replaced by raw JSON text (which serde_json could not produce).
fn sample_with_raw(service: &str, now: &str, field: &str, raw: &str) -> String {
    format!(r#"{{"service":"{service}","env":"stage","{field}":{raw},"timestamp":"{now}"}}"#)
}

/// A valid sample padded with an unknown field to exactly `size` bytes.
fn padded(service: &str, now: &str, size: usize) -> Vec<u8> {
    let mut body = sample(service, now);
    body["padding"] = json!("");
    let base = body.to_string().len();
    body["padding"] = json!("x".repeat(size.saturating_sub(base)));
    body.to_string().into_bytes()
}

fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| (rng.next_u64() & 0xff) as u8).collect()
}

/// A MessagePack string (fixstr or str8).
fn mp_str(out: &mut Vec<u8>, s: &str) {
    if s.len() < 32 {
        out.push(0xa0 | s.len() as u8);
    } else {
        out.push(0xd9);
        out.push(s.len().min(255) as u8);
    }
    out.extend_from_slice(&s.as_bytes()[..s.len().min(255)]);
}

/// Every hostile message of a run, stamped `now`. The same seed gives the same bytes.
pub fn catalogue(rng: &mut Rng, now: Timestamp) -> anyhow::Result<Vec<Hostile>> {
    let now = now.to_string();
    let limit = Limits::default().max_payload;
    let valid = |s: &str| sample(s, &now).to_string();
    let half = valid("h-trunc");
    let mut list = vec![
        Hostile::reject("random-bytes", metric("h-random"), random_bytes(rng, 512)),
        Hostile::reject("empty-payload", metric("h-empty"), Vec::new()),
        Hostile::reject("truncated-json", metric("h-trunc"), &half.as_bytes()[..half.len() / 2]),
        Hostile::reject("nested-arrays-10000", metric("h-nest"), nested("[", "1", "]", 10_000)),
        Hostile::reject("nested-objects-10000", metric("h-nest"), nested(r#"{"a":"#, "1", "}", 10_000)),
        Hostile::reject("nested-array-in-a-field", metric("h-nest"), sample_with_raw("h-nest", &now, "error_rate", &nested("[", "0.1", "]", 10_000))),
        Hostile::reject("nan-literal", metric("h-nan"), sample_with_raw("h-nan", &now, "error_rate", "NaN")),
        Hostile::reject("infinity-literal", metric("h-nan"), sample_with_raw("h-nan", &now, "cpu_percent", "Infinity")),
        Hostile::reject("minus-infinity-literal", metric("h-nan"), sample_with_raw("h-nan", &now, "p95_latency_ms", "-Infinity")),
        Hostile::reject("number-1e400", metric("h-big"), sample_with_raw("h-big", &now, "error_rate", "1e400")),
        Hostile::reject("restarts-2^64+1", metric("h-big"), sample_with_raw("h-big", &now, "restarts", "18446744073709551617")),
        Hostile::reject("restarts-2^32", metric("h-big"), sample_with_raw("h-big", &now, "restarts", "4294967296")),
        Hostile::reject("cpu-1e308", metric("h-big"), sample_with_raw("h-big", &now, "cpu_percent", "1e308")),
        Hostile::reject("negative-error-rate", metric("h-big"), sample_with_raw("h-big", &now, "error_rate", "-0.5")),
        Hostile::reject("control-char-in-service", metric("h-ctl"), json!({"service": "h-ctl\u{7}\u{1b}[2J", "env": "stage", "timestamp": now}).to_string()),
        Hostile::reject("rlo-in-service", metric("h-rlo"), json!({"service": "h-rlo\u{202e}lmx.exe", "env": "stage", "timestamp": now}).to_string()),
        Hostile::reject("rlo-in-subject-token", metric("h-rlo\u{202e}x"), valid("h-rlo")),
        Hostile::reject("control-char-in-subject-token", metric("h-ctl\u{1}x"), valid("h-ctl")),
        Hostile::reject("service-token-differs", metric("h-scope-a"), valid("h-scope-b")),
        Hostile::reject("env-token-differs", "cn.events.metric.dev.h-scope-c", valid("h-scope-c")),
        Hostile::reject("token-300-chars", metric(&"a".repeat(300)), valid("h-long")),
        Hostile::reject("token-3000-chars", metric(&"b".repeat(3000)), valid("h-long")),
        Hostile::reject("extra-token", format!("{}.extra", metric("h-extra")), valid("h-extra")),
        Hostile::reject("unknown-family", "cn.events.trace.stage.h-trace", valid("h-trace")),
        Hostile::reject("upper-case-token", "cn.events.metric.STAGE.h-upper", valid("h-upper")),
        Hostile::reject("short-subject", "cn.events.metric", valid("h-short")),
        Hostile::reject("duplicate-keys", metric("h-dup"), format!(r#"{{"service":"h-dup","service":"h-dup","env":"stage","timestamp":"{now}"}}"#)),
        Hostile::reject("wrong-type", metric("h-type"), sample_with_raw("h-type", &now, "crash_looping", r#""yes""#)),
        Hostile::reject("bad-timestamp", metric("h-time"), json!({"service": "h-time", "env": "stage", "timestamp": "2026-13-45T99:00:00Z"}).to_string()),
        Hostile::reject("timestamp-year-9999", metric("h-time"), json!({"service": "h-time", "env": "stage", "timestamp": "9999-01-01T00:00:00Z"}).to_string()),
        Hostile::reject("json-null", metric("h-null"), "null"),
        Hostile::reject("utf8-bom", metric("h-bom"), format!("\u{feff}{}", valid("h-bom"))),
        Hostile::reject("invalid-utf8", metric("h-utf8"), [&br#"{"service":"h-utf8"#[..], &[0xff, 0xfe], &br#"","env":"stage"}"#[..]].concat()),
        Hostile::reject("lone-surrogate", metric("h-utf8"), format!(r#"{{"service":"h-\ud800","env":"stage","timestamp":"{now}"}}"#)),
        Hostile::reject("rlo-in-version", deploy("h-ver-a"), json!({"service": "h-ver-a", "env": "stage", "version": "1.0\u{202e}1-lanif", "status": "succeeded", "timestamp": now}).to_string()),
        Hostile::reject("escape-codes-in-version", deploy("h-ver-b"), json!({"service": "h-ver-b", "env": "stage", "version": "1.0\u{0}\u{1b}[31mOK\u{1b}[0m", "status": "succeeded", "timestamp": now}).to_string()),
        Hostile::reject("version-300-bytes", deploy("h-ver"), json!({"service": "h-ver", "env": "stage", "version": "9".repeat(300), "status": "succeeded", "timestamp": now}).to_string()),
        Hostile::reject("unknown-deploy-status", deploy("h-ver"), json!({"service": "h-ver", "env": "stage", "version": "1.0.1", "status": "exploded", "timestamp": now}).to_string()),
        Hostile::reject("blank-version", deploy("h-ver"), json!({"service": "h-ver", "env": "stage", "version": "   ", "status": "failed", "timestamp": now}).to_string()),
        Hostile::reject("log-message-5000-bytes", "cn.events.log.stage.h-log", json!({"service": "h-log", "env": "stage", "level": "error", "message": "m".repeat(5000), "timestamp": now}).to_string()),
        Hostile::reject("unsupported-content-type", metric("h-xml"), "<metric service=\"h-xml\"/>").header(headers::CONTENT_TYPE, "text/xml"),
        Hostile::reject("over-the-limit-by-one", metric("h-size-c"), padded("h-size-c", &now, limit + 1)),
        Hostile::reject("200-kib", metric("h-size-d"), padded("h-size-d", &now, 200 * 1024)),
        Hostile::reject("hostile-correlation-header", metric("h-header"), &half.as_bytes()[..10])
            .header(headers::CORRELATION_ID, format!("\u{202e}{}", "c".repeat(300))),
        // Requests pipelines may send.
        Hostile::reject("contract-request-truncated", "cn.requests.contract.stage.h-req", &half.as_bytes()[..20]),
        Hostile::reject("contract-request-nested", "cn.requests.contract.stage.h-req", nested("[", "", "]", 10_000)),
        Hostile::reject("onboard-env-differs", "cn.requests.onboard.stage", json!({"app_name": "h-app", "repo_url": "https://example.com/h-app", "runtime": "backend", "env": "prod"}).to_string()),
        Hostile::reject("onboard-random-bytes", "cn.requests.onboard.stage", random_bytes(rng, 256)),
        Hostile::reject("negotiate-random-bytes", "cn.negotiate.stage.h-neg-a", random_bytes(rng, 256)).request(),
        Hostile::reject("negotiate-nested", "cn.negotiate.stage.h-neg-b", nested("[", "", "]", 10_000)).request(),
        // Valid, if odd.
        Hostile::stored("one-byte-under-the-limit", metric("h-size-a"), padded("h-size-a", &now, limit - 1), Expect::Accept),
        Hostile::stored("exactly-the-limit", metric("h-size-b"), padded("h-size-b", &now, limit), Expect::Accept),
        Hostile::stored("nested-unknown-field-10000", metric("h-deep"), sample_with_raw("h-deep", &now, "extra", &nested(r#"{"a":"#, "1", "}", 10_000)), Expect::Accept),
        Hostile::stored("escape-codes-and-rlo-in-a-log-message", "cn.events.log.stage.h-log-b", json!({"service": "h-log-b", "env": "stage", "level": "info", "message": "done \u{1b}[2J\u{0}\r\u{202e}txt.exe", "timestamp": now}).to_string(), Expect::Accept),
    ];
    list.extend(msgpack(rng, &now)?);
    Ok(list)
}

/// MessagePack that lies: garbage, truncation, lengths of 4 GiB, 10 000 levels, NaN.
fn msgpack(rng: &mut Rng, now: &str) -> anyhow::Result<Vec<Hostile>> {
    let mut deep = vec![0x84];
    for (k, v) in [("service", "h-mp"), ("env", "stage"), ("timestamp", now)] {
        mp_str(&mut deep, k);
        mp_str(&mut deep, v);
    }
    mp_str(&mut deep, "x");
    deep.extend(std::iter::repeat_n(0x91, 10_000));
    deep.push(0xc0);
    let mut truncated_map = vec![0x8f];
    mp_str(&mut truncated_map, "service");
    let mut nan = MetricSample {
        service: "h-mp".parse()?,
        env: "stage".parse()?,
        error_rate: Some(f64::NAN),
        p95_latency_ms: None,
        p99_latency_ms: None,
        cpu_percent: None,
        memory_percent: None,
        crash_looping: None,
        restarts: None,
        qps: None,
        variant: None,
        timestamp: now.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
        source: None,
    };
    let nan_bytes = encode_as(&nan, Encoding::MsgPack)?;
    nan.error_rate = Some(0.001);
    let valid = encode_as(&nan, Encoding::MsgPack)?;
    Ok(vec![
        Hostile::reject("msgpack-random-bytes", metric("h-mp"), random_bytes(rng, 512)).msgpack(),
        Hostile::reject("msgpack-reserved-byte", metric("h-mp"), vec![0xc1]).msgpack(),
        Hostile::reject("msgpack-truncated-map", metric("h-mp"), truncated_map).msgpack(),
        Hostile::reject(
            "msgpack-truncated-sample",
            metric("h-mp"),
            valid[..valid.len() / 2].to_vec(),
        )
        .msgpack(),
        Hostile::reject("msgpack-nested-10000", metric("h-mp"), deep).msgpack(),
        Hostile::reject(
            "msgpack-str32-claims-4gib",
            metric("h-mp"),
            vec![0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
        )
        .msgpack(),
        Hostile::reject(
            "msgpack-array32-claims-4g-items",
            metric("h-mp"),
            vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0],
        )
        .msgpack(),
        Hostile::reject("msgpack-nan", metric("h-mp"), nan_bytes).msgpack(),
        Hostile::reject(
            "msgpack-trailing-bytes",
            metric("h-mp"),
            [valid.as_slice(), &[0xc0, 0xc0]].concat(),
        )
        .msgpack(),
        Hostile::reject("json-sent-as-msgpack", metric("h-mp"), sample("h-mp", now).to_string())
            .msgpack(),
        Hostile::reject("msgpack-sent-as-json", metric("h-mp"), valid),
    ])
}

/// What became of one hostile message.
#[derive(Debug, Clone)]
pub struct HostileSent {
    /// Its `Nats-Msg-Id`, `hostile-{n}`.
    pub id: String,
    pub name: &'static str,
    pub subject: String,
    pub size: usize,
    pub expect: Expect,
    pub transport: Transport,
    /// Stored: CN_EVENTS' sequence from the ack (`None`: never acked).
    pub seq: Option<u64>,
    /// Request: whether a reply came, and its `Cn-Error` header.
    pub reply: Option<Option<String>>,
    /// Request: how often it was asked again.
    pub asked_again: AskedAgain,
    pub error: Option<String>,
}

/// How often requests were asked again, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AskedAgain {
    /// No answer within 5 s (or the request failed).
    pub unanswered: usize,
    /// Answered `Cn-Error: retry`.
    pub retry: usize,
}

/// Sends every message, one at a time, spread over `spread` (or until `stop`) in a seeded
/// order; a stored one is published until acked, a request sent until answered (or until
/// `give_up`).
pub async fn send_all(
    client: async_nats::Client,
    mut list: Vec<Hostile>,
    spread: Duration,
    rng: &mut Rng,
    stop: CancellationToken,
    give_up: CancellationToken,
) -> Vec<HostileSent> {
    for i in (1..list.len()).rev() {
        list.swap(i, rng.below(i + 1));
    }
    let js = async_nats::jetstream::new(client.clone());
    let gap = spread
        .checked_div(u32::try_from(list.len()).unwrap_or(u32::MAX).max(1))
        .unwrap_or_default();
    let mut out = Vec::new();
    for (n, h) in list.into_iter().enumerate() {
        // Once the load stops, the rest goes at once.
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(gap) => {}
        }
        let id = format!("hostile-{n}");
        let mut sent = HostileSent {
            id: id.clone(),
            name: h.name,
            subject: h.subject.clone(),
            size: h.payload.len(),
            expect: h.expect,
            transport: h.transport,
            seq: None,
            reply: None,
            asked_again: AskedAgain::default(),
            error: None,
        };
        let message =
            Message { id, subject: h.subject, headers: h.headers, payload: h.payload.into() };
        match h.transport {
            Transport::Stored => {
                let s = publish(&js, &message, &give_up).await;
                (sent.seq, sent.error) = (s.seq, s.error);
            }
            Transport::Request => {
                match request(&client, &message, &give_up, &mut sent.asked_again).await {
                    Ok(reply) => sent.reply = Some(reply),
                    Err(e) => sent.error = Some(e.to_string()),
                }
            }
        }
        out.push(sent);
    }
    out
}

/// Sends a core request until a reply other than `retry` comes; returns its `Cn-Error`
/// header.
async fn request(
    client: &async_nats::Client,
    m: &Message,
    give_up: &CancellationToken,
    asked_again: &mut AskedAgain,
) -> anyhow::Result<Option<String>> {
    loop {
        let mut h = HeaderMap::new();
        h.insert(headers::MSG_ID, m.id.as_str());
        for (name, value) in &m.headers {
            h.insert(*name, value.as_str());
        }
        let (error, retry) = match tokio::time::timeout(
            Duration::from_secs(5),
            client.request_with_headers(m.subject.clone(), h, m.payload.clone()),
        )
        .await
        {
            Ok(Ok(reply)) => {
                let error =
                    reply.headers.as_ref().and_then(|h| h.get(headers::ERROR)).map(|v| v.as_str());
                // `retry` is the agent saying it could not record its answer (the bus was
                // busy, e.g. electing a leader): a client asks again, as a pipeline would.
                if error != Some("retry") {
                    return Ok(error.map(str::to_owned));
                }
                let said: String =
                    String::from_utf8_lossy(&reply.payload).chars().take(200).collect();
                (anyhow::anyhow!("answered retry: {said}"), true)
            }
            Ok(Err(e)) => (anyhow::Error::new(e), false),
            Err(_) => (anyhow::anyhow!("no reply within 5s"), false),
        };
        tokio::select! {
            () = give_up.cancelled() => return Err(error),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if retry {
            asked_again.retry += 1;
        } else {
            asked_again.unanswered += 1;
        }
    }
}

pub use bus_schema::subject::wildcard_match as matches;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_whole_tokens() {
        assert!(matches("cn.events.>", "cn.events.metric.stage.a"));
        assert!(matches("cn.events.deploy.>", "cn.events.deploy.stage.a"));
        assert!(!matches("cn.events.deploy.>", "cn.events.deploy"));
        assert!(matches("cn.negotiate.*.*", "cn.negotiate.stage.a"));
        assert!(!matches("cn.events.metric.>", "cn.events.metrics.stage.a"));
    }

    #[test]
    fn the_sizes_straddle_the_limit() {
        let now = Timestamp::now().to_string();
        for size in [65_535, 65_536, 65_537] {
            assert_eq!(padded("h-size-a", &now, size).len(), size);
        }
    }

    #[test]
    fn every_message_the_contract_accepts_decodes_and_every_other_does_not() {
        let mut rng = Rng::new(7);
        for h in catalogue(&mut rng, Timestamp::now()).unwrap() {
            let content_type = h
                .headers
                .iter()
                .find(|(k, _)| *k == headers::CONTENT_TYPE)
                .map(|(_, v)| v.as_str());
            let decoded = bus_schema::codec::decode_inbound(
                &h.subject,
                content_type,
                &h.payload,
                &Limits::default(),
            );
            assert_eq!(decoded.is_ok(), h.expect == Expect::Accept, "{}: {decoded:?}", h.name);
        }
    }
}
