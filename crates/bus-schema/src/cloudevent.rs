//! CloudEvents on `cn.events.*` (docs/contract.md, CloudEvents).
//!
//! A pipeline that speaks CloudEvents (Keptn does, on NATS) may send its events either way the
//! spec allows, and the fleet reads the event's data as the subject's payload:
//!
//! - **structured mode**: `Content-Type: application/cloudevents+json`, the body a CloudEvent
//!   in the JSON format, its `data` the payload (or `data_base64` with a `datacontenttype` of
//!   JSON or MessagePack);
//! - **binary mode**: the attributes in `ce-*` headers (`ce-specversion`, `ce-id`, `ce-source`,
//!   `ce-type`, …), the body the payload with its own `Content-Type`.
//!
//! The attributes are checked against the spec (version 1.0, the required `id`, `source` and
//! `type`, an RFC 3339 `time`, a URI `dataschema`) with the CNCF SDK; a message that breaks
//! them is rejected as `invalid_field` naming the attribute, and a structured body that is not
//! JSON as `malformed`. Nothing else about the payload changes: its own fields, ranges and
//! scope are checked as for any event — except that a JSON event without a `timestamp` takes
//! the CloudEvent's `time`, where the spec keeps when an event happened.

use cloudevents::event::{Data, SpecVersion, TryIntoUrl};
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};

/// Why a message is not a valid CloudEvent; the codec turns it into the input's reject reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudEventError {
    /// The body is empty.
    #[error("payload is empty")]
    Empty,
    /// A structured body that is not JSON (`malformed`).
    #[error("malformed CloudEvent (JSON): {0}")]
    Malformed(String),
    /// An attribute breaks the spec (`invalid_field`).
    #[error("cloudevent: {0}")]
    Invalid(String),
}

/// The `Content-Type` of a structured-mode CloudEvent in JSON.
pub const STRUCTURED: &str = "application/cloudevents+json";

/// The header prefix of a binary-mode CloudEvent's attributes.
const BINARY_PREFIX: &str = "ce-";

/// A CloudEvent's data: the payload to decode, and the content type it is in.
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrapped {
    pub content_type: Option<String>,
    pub data: Vec<u8>,
    /// The event's `time` attribute (RFC 3339), if it has one.
    pub time: Option<String>,
}

/// Whether a `Content-Type` names a structured-mode CloudEvent.
pub fn is_structured(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(STRUCTURED))
}

/// Whether any header is a binary-mode CloudEvent attribute.
pub fn is_binary(headers: &[(&str, &str)]) -> bool {
    headers.iter().any(|(name, _)| is_attribute(name))
}

fn is_attribute(name: &str) -> bool {
    name.len() > BINARY_PREFIX.len()
        && name.get(..BINARY_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(BINARY_PREFIX))
}

fn invalid(message: impl std::fmt::Display) -> CloudEventError {
    CloudEventError::Invalid(message.to_string())
}

/// A structured-mode CloudEvent's data.
pub fn structured(body: &[u8]) -> Result<Unwrapped, CloudEventError> {
    if body.is_empty() {
        return Err(CloudEventError::Empty);
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| CloudEventError::Malformed(e.to_string()))?;
    if !value.is_object() {
        return Err(invalid("a structured CloudEvent is a JSON object"));
    }
    if value.get("specversion").and_then(|v| v.as_str()) != Some("1.0") {
        return Err(invalid(format!(
            "specversion is {}, expected \"1.0\"",
            value.get("specversion").map_or_else(|| "missing".to_owned(), |v| v.to_string())
        )));
    }
    // The SDK's own message for a bad time is only the parser's ("premature end of input").
    if let Some(time) = value.get("time") {
        if time.as_str().and_then(|t| t.parse::<crate::Timestamp>().ok()).is_none() {
            return Err(invalid(format!("time {time} is not an RFC 3339 time")));
        }
    }
    let event: cloudevents::Event = serde_json::from_value(value).map_err(invalid)?;
    debug_assert_eq!(event.specversion(), SpecVersion::V10);
    let content_type = event.datacontenttype().map(str::to_owned);
    let data = match event.data() {
        None => return Err(invalid("the CloudEvent carries no data (the event's payload)")),
        Some(Data::Json(v)) => serde_json::to_vec(v).map_err(invalid)?,
        Some(Data::Binary(bytes)) => bytes.clone(),
        Some(Data::String(text)) => text.as_bytes().to_vec(),
    };
    // JSON data is JSON whatever the attribute says; base64 or text data is in its
    // `datacontenttype` (JSON when it has none, as the spec's JSON format says).
    let content_type = match event.data() {
        Some(Data::Json(_)) => None,
        _ => content_type,
    };
    let time = event.time().map(|t| t.to_rfc3339());
    Ok(Unwrapped { content_type, data, time })
}

/// Checks a binary-mode CloudEvent's `ce-*` attributes (its body is the payload as sent), and
/// returns its `ce-time`.
pub fn check_binary<'a>(headers: &[(&str, &'a str)]) -> Result<Option<&'a str>, CloudEventError> {
    let mut builder = EventBuilderV10::new();
    let mut version = None;
    for (name, value) in headers.iter().filter(|(name, _)| is_attribute(name)) {
        let attribute = name[BINARY_PREFIX.len()..].to_ascii_lowercase();
        builder = match attribute.as_str() {
            "specversion" => {
                version = Some(*value);
                builder
            }
            "id" => builder.id(*value),
            "source" => builder.source(*value),
            "type" => builder.ty(*value),
            "subject" => builder.subject(*value),
            "time" => builder.time(*value),
            "dataschema" => {
                value
                    .into_url()
                    .map_err(|e| invalid(format!("ce-dataschema {value:?} is not a URI: {e}")))?;
                builder
            }
            "datacontenttype" => builder,
            extension => {
                // The spec's extension names: lower-case letters and digits, at most 20.
                let ok = extension.len() <= 20
                    && extension.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
                if !ok {
                    return Err(invalid(format!(
                        "{name}: an extension attribute's name is lower-case letters and digits, at most 20"
                    )));
                }
                builder.extension(extension, *value)
            }
        };
    }
    match version {
        Some("1.0") => {}
        Some(other) => {
            return Err(invalid(format!("ce-specversion is {other:?}, expected \"1.0\"")));
        }
        None => return Err(invalid("ce-specversion is missing (binary mode, ce-* headers)")),
    }
    builder.build().map_err(|e| invalid(format!("{e} (binary mode, ce-* headers)")))?;
    Ok(headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("ce-time")).map(|(_, v)| *v))
}

/// A JSON event's data with the CloudEvent's `time` as its `timestamp` when it has none (a
/// metric batch, whose samples carry their own, is left as it is); anything else unchanged.
pub fn stamped(data: &[u8], content_type: Option<&str>, time: Option<&str>) -> Option<Vec<u8>> {
    let json = content_type
        .and_then(|v| v.split(';').next())
        .is_none_or(|media| media.trim().eq_ignore_ascii_case(crate::headers::JSON));
    let time = time.filter(|_| json)?;
    let mut value: serde_json::Value = serde_json::from_slice(data).ok()?;
    let object = value.as_object_mut()?;
    if object.contains_key("timestamp") || object.contains_key("samples") {
        return None;
    }
    object.insert("timestamp".to_owned(), serde_json::Value::String(time.to_owned()));
    serde_json::to_vec(&value).ok()
}

/// A proof record as a CloudEvent (`cnctl tail --cloudevents`): `source`
/// `/cn/proof/{agent}/{instance}`, `id` the record's chain sequence (unique per source),
/// `type` `cn.v1.proof.{kind}`, `time` the record's, `subject` `{env}/{service}` when it is
/// about one, the extension `cncorrelation` its chain's correlation id, and `data` the record
/// exactly as stored (`stored`, its JSON).
pub fn of_proof_record(
    record: &crate::proof::ProofRecord,
    stored: serde_json::Value,
) -> Result<cloudevents::Event, cloudevents::event::EventBuilderError> {
    let mut builder = EventBuilderV10::new()
        .id(record.seq.to_string())
        .source(format!("/cn/proof/{}/{}", record.agent, record.instance))
        .ty(format!("cn.v1.proof.{}", record.kind))
        .time(record.ts.to_string())
        .data(crate::headers::JSON, stored);
    if let Some(env) = &record.env {
        let subject = match &record.service {
            Some(service) => format!("{env}/{service}"),
            None => env.to_string(),
        };
        builder = builder.subject(subject);
    }
    if let Some(correlation) = &record.correlation_id {
        builder = builder.extension("cncorrelation", correlation.as_str());
    }
    builder.build()
}

/// A notification about a proof record as a CloudEvent (the console's webhooks): `type`
/// `cn.v1.notification.{what}`, `source` `/cn/console/{instance}`, `id` the same for the same
/// record and notification whichever target gets it (receivers can drop repeats), `subject`
/// `{env}/{service}`, `time` the record's, and `data` what to tell people with the record.
pub fn notification(
    what: &str,
    instance: &str,
    record: &crate::proof::ProofRecord,
    data: serde_json::Value,
) -> Result<cloudevents::Event, cloudevents::event::EventBuilderError> {
    let mut builder = EventBuilderV10::new()
        .id(format!("{}.{}.{}.{what}", record.agent, record.instance, record.seq))
        .source(format!("/cn/console/{instance}"))
        .ty(format!("cn.v1.notification.{what}"))
        .time(record.ts.to_string())
        .data(crate::headers::JSON, data);
    if let (Some(env), Some(service)) = (&record.env, &record.service) {
        builder = builder.subject(format!("{env}/{service}"));
    }
    if let Some(correlation) = &record.correlation_id {
        builder = builder.extension("cncorrelation", correlation.as_str());
    }
    builder.build()
}
