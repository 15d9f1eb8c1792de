//! The Chaos Negotiator bus contract, in one place.
//!
//! Every subject, payload, header, action, proof kind and reason code the fleet uses is named
//! here and nowhere else (docs/contract.md). Agents build subjects with the families in
//! [`subject`], so a payload can only be published on the subject that carries it:
//!
//! ```
//! use bus_schema::{subject, Env, ServiceName};
//! let env: Env = "prod".parse().unwrap();
//! let svc: ServiceName = "payments-api".parse().unwrap();
//! let s = subject::INCIDENTS.subject(&env, &svc);
//! assert_eq!(s.as_str(), "cn.incidents.prod.payments-api");
//! ```
//!
//! Inputs arrive from pipelines as JSON or MessagePack and are decoded, size-checked and
//! validated by [`codec::decode_inbound`]; everything the fleet publishes internally is
//! MessagePack, and proof records are JSON ([`proof`]), hash-chained per agent instance.

pub mod action;
pub mod approval;
pub mod cloudevent;
pub mod codec;
pub mod deploys;
pub mod display;
pub mod fleet;
pub mod headers;
pub mod hex;
pub mod inputs;
pub mod partition;
pub mod payload;
pub mod proof;
pub mod reason;
mod string_enum;
pub mod subject;
mod time;
mod token;
pub mod trace;
mod validate;

#[cfg(test)]
mod arb;
#[cfg(test)]
mod cloudevent_tests;
#[cfg(test)]
mod codec_tests;

pub use action::Action;
pub use codec::{DecodeError, Encoding, Inbound, Limits, Payload};
pub use deploys::DeployHistory;
pub use payload::*;
pub use proof::{ProofKind, ProofRecord};
pub use reason::{ReasonCode, RejectReason};
pub use subject::{Filter, Subject};
pub use time::{DurationError, Timestamp, parse_duration};
pub use token::{AgentName, Env, InstanceId, ServiceName, TokenError};
/// Ids in payloads are UUIDs; re-exported so every crate uses the same type.
pub use uuid::Uuid;
pub use validate::{Validate, ValidationError};
