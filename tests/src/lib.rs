//! The fleet-level test support and the integration tests: the fleet of real binaries
//! ([`fleet`]), reading the proof log ([`proof_log`]), pipeline scenarios ([`scenario`]), the
//! learning evaluation ([`learning`]) and the chaos run ([`chaos`]). The only crate that may
//! link agents. A real `nats-server` per test, an agent in-process and the probe agent come from
//! `test-support` (re-exported here).

pub mod browser;
pub mod chaos;
pub mod console;
pub mod fleet;
pub mod http_sink;
pub mod learning;
pub mod proof_log;
pub mod scenario;

pub use test_support::{
    NatsCluster, NatsServer, RunningAgent, Setup, eventually, probe, runtime_args,
};
