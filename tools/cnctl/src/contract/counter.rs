//! Negotiation and model statistics: core NATS request/reply with the risk negotiator.
//!
//! Asks are checked here (known guardrail, sensible value, known validator) so that a typo is
//! a usage error, not a refusal. The counter-proposal travels like every message we publish:
//! MessagePack with `Content-Type`, `Cn-Type` and the trace headers.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::client::Request;
use bus_schema::codec::Outgoing;
use bus_schema::fleet::RISK_NEGOTIATOR;
use bus_schema::proof::ProofHash;
use bus_schema::subject::{MODEL, NEGOTIATE};
use bus_schema::{
    Ask, CounterProposal, InstanceId, ModelStats, NegotiationReply, ValidatorKind, headers,
};

use crate::Failure;
pub use crate::request::Answered;

/// The guardrails a developer may ask to relax, with the values each accepts. The traffic
/// step is not one of them: it follows the canary plan (`--shorten-canary`).
pub const GUARDRAILS: &[(&str, &str)] = &[
    ("max_error_rate", "a fraction 0..1"),
    ("max_p95_latency_ms", "milliseconds, more than 0"),
    ("max_p99_latency_ms", "milliseconds, more than 0"),
];

/// One `--relax GUARDRAIL=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Relax {
    pub guardrail: String,
    pub value: f64,
}

/// Why a `--relax` is not a usable ask.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelaxError {
    #[error("{input:?} is not GUARDRAIL=VALUE (guardrails: {})", guardrail_names())]
    NotAnAssignment { input: String },
    #[error(
        "the traffic step follows the canary plan: ask for fewer, bigger stages with --shorten-canary N (or --skip-canary)"
    )]
    TrafficStep,
    #[error("unknown guardrail {name:?}; expected one of: {}", guardrail_names())]
    UnknownGuardrail { name: String },
    #[error("{name}={value:?}: the value is not a number ({accepts})")]
    NotANumber {
        name: String,
        value: String,
        accepts: &'static str,
        source: std::num::ParseFloatError,
    },
    #[error("{name}={value}: out of range ({accepts})")]
    OutOfRange { name: String, value: String, accepts: &'static str },
}

/// The guardrails that may be relaxed, comma-separated, for messages.
fn guardrail_names() -> String {
    GUARDRAILS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// Parses and checks `--relax GUARDRAIL=VALUE`.
pub fn parse_relax(s: &str) -> Result<Relax, RelaxError> {
    let (name, value) =
        s.split_once('=').ok_or_else(|| RelaxError::NotAnAssignment { input: s.to_owned() })?;
    let (name, value) = (name.trim(), value.trim());
    if name == "max_traffic_step_percent" {
        return Err(RelaxError::TrafficStep);
    }
    let Some((_, accepts)) = GUARDRAILS.iter().find(|(n, _)| *n == name) else {
        return Err(RelaxError::UnknownGuardrail { name: name.to_owned() });
    };
    let v: f64 = value.parse().map_err(|source| RelaxError::NotANumber {
        name: name.to_owned(),
        value: value.to_owned(),
        accepts,
        source,
    })?;
    let ok = v.is_finite()
        && match name {
            "max_error_rate" => (0.0..=1.0).contains(&v),
            _ => v > 0.0,
        };
    if !ok {
        return Err(RelaxError::OutOfRange {
            name: name.to_owned(),
            value: value.to_owned(),
            accepts,
        });
    }
    Ok(Relax { guardrail: name.to_owned(), value: v })
}

/// The asks, in a fixed order: canary, guardrails, validators.
pub fn asks_from_flags(
    shorten_canary: Option<u8>,
    skip_canary: bool,
    relax: &[Relax],
    waive: &[ValidatorKind],
) -> Vec<Ask> {
    let mut asks = Vec::new();
    if skip_canary {
        asks.push(Ask::SkipCanary);
    } else if let Some(stages) = shorten_canary {
        asks.push(Ask::ShortenCanary { stages });
    }
    asks.extend(
        relax
            .iter()
            .map(|r| Ask::RelaxGuardrail { guardrail: r.guardrail.clone(), value: r.value }),
    );
    for &validator in waive {
        let ask = Ask::WaiveValidator { validator };
        if !asks.contains(&ask) {
            asks.push(ask);
        }
    }
    asks
}

/// True when the negotiator took the proposal as a whole and every ask in it.
pub fn all_accepted(reply: &NegotiationReply) -> bool {
    reply.accepted && reply.decisions.iter().all(|d| d.accepted)
}

/// Sends a counter-proposal on `cn.negotiate.{env}.{service}` with the usual headers. The
/// message id is a hash of the proposal: the same proposal sent twice is recognisably a repeat.
pub async fn send_counter(
    client: &async_nats::Client,
    proposal: &CounterProposal,
    timeout: Duration,
) -> Result<Answered<NegotiationReply>, Failure> {
    let out = Outgoing::new(&NEGOTIATE.subject(&proposal.env, &proposal.service), proposal)?;
    let id = format!(
        "cnctl:counter:{}",
        &ProofHash::of(&[out.subject.as_bytes(), b"\0", &out.payload].concat()).to_hex()[..32]
    );
    let mut h = HeaderMap::new();
    h.insert(headers::MSG_ID, id.as_str());
    h.insert(headers::CONTENT_TYPE, out.encoding.content_type());
    h.insert(headers::CN_TYPE, out.cn_type);
    h.insert(headers::CORRELATION_ID, id.as_str());
    h.insert(headers::CAUSATION_ID, id.as_str());
    crate::request::request(
        client,
        out.subject,
        Request::new().payload(out.payload.into()).headers(h),
        timeout,
    )
    .await
}

/// Asks one risk negotiator instance for its model on `cn.model.risk-negotiator.{instance}`
/// (an empty request, like the status endpoint).
pub async fn model_stats(
    client: &async_nats::Client,
    instance: &InstanceId,
    timeout: Duration,
) -> Result<Answered<ModelStats>, Failure> {
    let subject = MODEL.subject(&RISK_NEGOTIATOR, instance);
    crate::request::request(
        client,
        subject.as_str().to_owned(),
        Request::new().payload("".into()),
        timeout,
    )
    .await
}
