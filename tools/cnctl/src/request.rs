//! Core NATS request/reply with an agent (the negotiator, the optimizer): one helper that
//! tells "nobody answers" from a refusal from a reply.

use std::time::Duration;

use async_nats::{Request, RequestErrorKind};
use bus_schema::codec::{Limits, Payload, decode_by_content_type};
use bus_schema::headers;

use crate::Failure;

/// A reply, or why there was none (no responders, a timeout).
#[derive(Debug)]
pub enum Answered<T> {
    Reply(T),
    Nobody(String),
}

/// Sends a core request and decodes the reply as `R` (by its `Content-Type`).
pub(crate) async fn request<R: Payload>(
    client: &async_nats::Client,
    subject: String,
    request: Request,
    timeout: Duration,
) -> Result<Answered<R>, Failure> {
    let reply = match client.send_request(subject.clone(), request.timeout(Some(timeout))).await {
        Ok(reply) => reply,
        Err(e) if e.kind() == RequestErrorKind::NoResponders => {
            return Ok(Answered::Nobody(format!("nobody answers on {subject}")));
        }
        Err(e) if e.kind() == RequestErrorKind::TimedOut => {
            return Ok(Answered::Nobody(format!("no answer on {subject} within {timeout:?}")));
        }
        Err(e) => return Err(format!("request on {subject} failed: {e}").into()),
    };
    let header = |name: &str| {
        reply.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned())
    };
    if let Some(reason) = header(bus_schema::headers::ERROR) {
        let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
        let message = body["message"].as_str().map(|m| format!(": {m}")).unwrap_or_default();
        return Err(format!("the request on {subject} was refused: {reason}{message}").into());
    }
    let content_type = header(headers::CONTENT_TYPE);
    let answer =
        decode_by_content_type::<R>(content_type.as_deref(), &reply.payload, &Limits::DEFAULT)
            .map_err(|e| format!("unreadable reply on {subject}: {e}"))?;
    Ok(Answered::Reply(answer))
}
