//! Header names carried by every message the fleet publishes (docs/contract.md, Headers).
//!
//! Inputs without headers are fine: the runtime derives ids from the stream position.

/// JetStream's de-duplication id; chosen deterministically from the input that caused the message.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// `application/json` or `application/msgpack`.
pub const CONTENT_TYPE: &str = "Content-Type";
/// The payload's type and version, e.g. `cn.v1.incident`.
pub const CN_TYPE: &str = "Cn-Type";
/// The id of the event that started the chain of messages.
pub const CORRELATION_ID: &str = "Cn-Correlation-Id";
/// The id of the message that caused this one.
pub const CAUSATION_ID: &str = "Cn-Causation-Id";
/// Hex SHA-256 of a proof record's exact payload bytes.
pub const PROOF_HASH: &str = "Cn-Proof-Hash";
/// On a proof record written once per idempotency key: the key, so an agent that lost its state
/// file since the record was stored learns from the chain that the decision is recorded.
pub const PROOF_KEY: &str = "Cn-Proof-Key";
/// W3C Trace Context: the trace an input belongs to, carried on to every output and proof
/// record of its chain ([`crate::trace::TraceParent`]).
pub const TRACEPARENT: &str = "traceparent";
/// On a reply to a core request that was refused: the reason code (the body says why).
pub const ERROR: &str = "Cn-Error";

/// Content type of JSON payloads.
pub const JSON: &str = "application/json";
/// Content type of MessagePack payloads.
pub const MSGPACK: &str = "application/msgpack";
