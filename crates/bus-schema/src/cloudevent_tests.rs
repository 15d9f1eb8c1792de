//! CloudEvents on `cn.events.*`: both modes decode to the subject's payload; what breaks the
//! spec is rejected naming the attribute; hostile envelopes are errors, not panics.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::RejectReason;
use crate::codec::{DecodeError, Inbound, Limits, decode_message_at};

const SUBJECT: &str = "cn.events.metric.prod.payments-api";
const CLOCK: &str = "2026-02-20T17:02:00Z";

fn metric() -> Value {
    json!({"service":"payments-api","env":"prod","crash_looping":true,"restarts":4,
           "timestamp":"2026-02-20T17:01:00Z"})
}

fn decode(subject: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Inbound, DecodeError> {
    decode_message_at(subject, headers, body, &Limits::DEFAULT, CLOCK.parse().unwrap())
}

fn structured(event: &Value) -> Result<Inbound, DecodeError> {
    let ct = [("Content-Type", "application/cloudevents+json; charset=utf-8")];
    decode(SUBJECT, &ct, event.to_string().as_bytes())
}

fn envelope() -> Value {
    json!({"specversion":"1.0","id":"e-1","source":"https://ci.example.com/pipelines/42",
           "type":"sh.keptn.event.monitoring","time":"2026-02-20T17:01:00Z",
           "datacontenttype":"application/json","data":metric()})
}

fn crash_looping(inbound: &Inbound) -> bool {
    matches!(inbound, Inbound::Metric(m) if m.crash_looping == Some(true) && m.restarts == Some(4))
}

fn rejected_for(result: Result<Inbound, DecodeError>, reason: RejectReason, says: &str) {
    let e = result.expect_err("rejected");
    assert_eq!(e.reason(), reason, "{e}");
    assert!(e.to_string().contains(says), "{e:?} should say {says:?}");
}

#[test]
fn a_structured_mode_cloudevent_decodes_to_its_data() {
    assert!(crash_looping(&structured(&envelope()).unwrap()));
    // data_base64 in MessagePack, as the spec's JSON format carries binary data.
    let packed = rmp_serde::to_vec_named(&metric()).unwrap();
    let b64 = base64_encode(&packed);
    let mut e = envelope();
    e.as_object_mut().unwrap().remove("data");
    e["data_base64"] = json!(b64);
    e["datacontenttype"] = json!("application/msgpack");
    assert!(crash_looping(&structured(&e).unwrap()));
}

#[test]
fn a_binary_mode_cloudevent_decodes_its_body_and_checks_its_attributes() {
    let body = metric().to_string();
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "e-2"),
        ("ce-source", "/pipelines/42"),
        ("ce-type", "sh.keptn.event.monitoring"),
        ("ce-time", "2026-02-20T17:01:00Z"),
        ("ce-shkeptncontext", "abc123"),
        ("Content-Type", "application/json"),
    ];
    assert!(crash_looping(&decode(SUBJECT, &headers, body.as_bytes()).unwrap()));
    let without = |name: &str| -> Vec<(&str, &str)> {
        headers.iter().copied().filter(|(n, _)| *n != name).collect()
    };
    for attribute in ["ce-id", "ce-source", "ce-type", "ce-specversion"] {
        let missing = attribute.trim_start_matches("ce-");
        rejected_for(
            decode(SUBJECT, &without(attribute), body.as_bytes()),
            RejectReason::InvalidField,
            missing,
        );
    }
    let mut bad = headers.to_vec();
    bad[4] = ("ce-time", "yesterday");
    rejected_for(decode(SUBJECT, &bad, body.as_bytes()), RejectReason::InvalidField, "time");
    bad = headers.to_vec();
    bad[0] = ("ce-specversion", "0.3");
    rejected_for(decode(SUBJECT, &bad, body.as_bytes()), RejectReason::InvalidField, "0.3");
    bad = headers.to_vec();
    bad[5] = ("ce-Not_Valid", "x");
    rejected_for(decode(SUBJECT, &bad, body.as_bytes()), RejectReason::InvalidField, "extension");
}

#[test]
fn a_structured_cloudevent_that_breaks_the_spec_is_rejected_naming_what() {
    let without = |key: &str| {
        let mut e = envelope();
        e.as_object_mut().unwrap().remove(key);
        e
    };
    for key in ["id", "source", "type"] {
        rejected_for(structured(&without(key)), RejectReason::InvalidField, key);
    }
    rejected_for(structured(&without("specversion")), RejectReason::InvalidField, "specversion");
    rejected_for(structured(&without("data")), RejectReason::InvalidField, "no data");
    let mut e = envelope();
    e["time"] = json!("not a time");
    rejected_for(
        structured(&e),
        RejectReason::InvalidField,
        "time \"not a time\" is not an RFC 3339",
    );
    let ct = [("Content-Type", "application/cloudevents+json")];
    rejected_for(decode(SUBJECT, &ct, b"{\"specversion\":"), RejectReason::Malformed, "CloudEvent");
    rejected_for(decode(SUBJECT, &ct, b"[1,2]"), RejectReason::InvalidField, "JSON object");
    rejected_for(decode(SUBJECT, &ct, b""), RejectReason::Malformed, "empty");
}

#[test]
fn the_data_is_checked_like_any_event() {
    // The payload's own rules still hold inside the envelope: its scope, its fields.
    let mut e = envelope();
    e["data"]["service"] = json!("other");
    rejected_for(structured(&e), RejectReason::ScopeMismatch, "service");
    e = envelope();
    e["data"]["restarts"] = json!("four");
    rejected_for(structured(&e), RejectReason::InvalidField, "restarts");
    // Over the size limit before anything is parsed.
    let big = "x".repeat(Limits::DEFAULT.max_payload + 1);
    e = envelope();
    e["data"]["note"] = json!(big);
    rejected_for(structured(&e), RejectReason::TooLarge, "limit");
}

#[test]
fn cloudevents_are_read_on_event_subjects_only() {
    let ct = [("Content-Type", "application/cloudevents+json")];
    let request = "cn.requests.contract.prod.payments-api";
    rejected_for(
        decode(request, &ct, envelope().to_string().as_bytes()),
        RejectReason::UnsupportedContentType,
        "cloudevents",
    );
}

proptest! {
    /// Any envelope at all is an answer, never a panic.
    #[test]
    fn any_envelope_is_decoded_or_rejected(
        id in proptest::option::of(".{0,8}"),
        source in proptest::option::of(".{0,12}"),
        version in proptest::option::of(prop_oneof![Just("1.0".to_owned()), ".{0,4}"]),
        time in proptest::option::of(".{0,24}"),
        binary in any::<bool>(),
    ) {
        let body = metric().to_string();
        if binary {
            let mut headers = vec![("ce-type", "t")];
            if let Some(id) = &id { headers.push(("ce-id", id)); }
            if let Some(s) = &source { headers.push(("ce-source", s)); }
            if let Some(v) = &version { headers.push(("ce-specversion", v)); }
            if let Some(t) = &time { headers.push(("ce-time", t)); }
            let _ = decode(SUBJECT, &headers, body.as_bytes());
        } else {
            let mut e = json!({"type":"t","data":metric()});
            if let Some(id) = id { e["id"] = json!(id); }
            if let Some(s) = source { e["source"] = json!(s); }
            if let Some(v) = version { e["specversion"] = json!(v); }
            if let Some(t) = time { e["time"] = json!(t); }
            let _ = structured(&e);
        }
    }
}

/// Standard base64 (the spec's `data_base64`), for the test only.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A CloudEvent keeps when its event happened in `time`: data without a `timestamp` of its own
/// takes it (the pipeline need not say it twice); data with one keeps its own.
#[test]
fn an_event_without_a_timestamp_takes_the_cloudevents_time() {
    let at = |inbound: Inbound| match inbound {
        Inbound::Metric(m) => m.timestamp.to_string(),
        other => panic!("{other:?}"),
    };
    let mut e = envelope();
    e["data"].as_object_mut().unwrap().remove("timestamp");
    e["time"] = json!("2026-02-20T17:00:30Z");
    assert_eq!(at(structured(&e).unwrap()), "2026-02-20T17:00:30Z");
    e["data"]["timestamp"] = json!("2026-02-20T17:01:00Z");
    assert_eq!(at(structured(&e).unwrap()), "2026-02-20T17:01:00Z", "its own wins");
    e["data"].as_object_mut().unwrap().remove("timestamp");
    e.as_object_mut().unwrap().remove("time");
    rejected_for(structured(&e), RejectReason::InvalidField, "timestamp");

    let mut body = metric();
    body.as_object_mut().unwrap().remove("timestamp");
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "e-3"),
        ("ce-source", "/ci"),
        ("ce-type", "t"),
        ("ce-time", "2026-02-20T17:00:40Z"),
    ];
    assert_eq!(
        at(decode(SUBJECT, &headers, body.to_string().as_bytes()).unwrap()),
        "2026-02-20T17:00:40Z"
    );
    // Still under the input rules: a time far ahead of the clock is out of order.
    let ahead = [
        ("ce-time", "2026-02-20T18:00:00Z"),
        ("ce-specversion", "1.0"),
        ("ce-id", "e"),
        ("ce-source", "/ci"),
        ("ce-type", "t"),
    ];
    rejected_for(
        decode(SUBJECT, &ahead, body.to_string().as_bytes()),
        RejectReason::OutOfOrder,
        "ahead",
    );
}
