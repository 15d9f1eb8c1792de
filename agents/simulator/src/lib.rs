//! The simulator: a seeded world of services that publishes the metric, deploy and log events
//! a pipeline would, and reacts to the executor's `sim` actions.
//!
//! - [`rng`]: the seeded PRNG; [`clock`]: accelerated simulated time that never runs ahead of
//!   the wall clock; [`scenario`]: the scenario file and the built-in `demo`.
//! - [`world`] and [`service`]: the pure model — failure modes and what actions do to them.
//! - [`Simulator`]: the bus shell. The runtime asks it about once a second for due work; each
//!   simulated tick that fell due is one item, keyed `tick:{start}:{tick}` (unix seconds), so
//!   a tick whose publishing failed is published again with the same message ids and
//!   JetStream drops the copies that were stored. A tick's events are computed once and kept
//!   until all are stored. Actions arrive on `cn.sim.actions.>` and change the world from its
//!   next tick; a redelivered action is not applied twice.
//!
//! Without a scenario the world is empty: the simulator publishes nothing and only warns about
//! actions for services it does not know.

pub mod clock;
pub mod rng;
pub mod scenario;
pub mod service;
pub mod shell;
pub mod world;

#[cfg(test)]
mod world_tests;

pub use shell::{Cli, Flags, Simulator, spec};
