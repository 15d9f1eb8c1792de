//! Off-policy evaluation: how much reward a remediation policy would earn, estimated from the
//! decisions another policy made and logged with their propensities — before the policy acts.
//!
//! - [`reward`]: the reward of an outcome, the same for the optimizer that learns from it and
//!   for every tool that evaluates it.
//! - [`logged`]: the decisions of the proof log — `action_proposed` records joined with their
//!   `outcome_recorded` or `action_refused` — as [`estimate::Decision`]s.
//! - [`estimate`]: inverse propensity scoring, self-normalised IPS and a doubly robust
//!   estimator, each with a bootstrap interval, the effective sample size, and when the logs
//!   cannot support an estimate, why.

pub mod estimate;
pub mod logged;
pub mod reward;
