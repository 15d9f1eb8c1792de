//! The risk model behind deployment contracts, shared by the risk negotiator (which drafts,
//! negotiates and learns on the bus) and `cnctl contract from-git --offline` (which drafts a
//! contract on the spot, with no history).
//!
//! - [`draft`]: a contract from a request — the transparent additive score, guardrails,
//!   validators, canary and rollback plans;
//! - [`model`]: the online logistic regression that adjusts the score from deploy outcomes;
//! - [`learning`]: each service's deploy history and the labels the model learns from.

pub mod draft;
pub mod learning;
pub mod model;

/// The confidence a contract needs before negotiation may relax it.
pub const MIN_CONFIDENCE: f64 = 0.6;
