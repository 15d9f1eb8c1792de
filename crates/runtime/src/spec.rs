//! What an agent is: its name, version, inputs and request subjects. The foundation the run
//! loop ([`crate::agent`]) and the status endpoint ([`crate::status`]) both read.

use bus_schema::fleet::{AgentDef, InputDef};
use bus_schema::{AgentName, Filter};

/// What an agent is and what it consumes.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: AgentName,
    /// Semver, e.g. `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    pub description: &'static str,
    pub inputs: Vec<InputDef>,
    /// Messages pulled ahead per input. 1 is always safe; more is faster for an agent whose
    /// handler is quick, but a prefetched message's ack wait runs while it waits its turn, so
    /// keep `prefetch × slowest handling time` well under the ack wait.
    pub prefetch: usize,
    /// Core NATS subjects the agent answers requests on, through [`crate::Handler::respond`].
    pub requests: Vec<Filter>,
}

impl AgentSpec {
    /// The spec of a fleet agent (bus_schema::fleet) at a version.
    pub fn new(def: AgentDef, version: &'static str) -> Self {
        Self {
            name: def.name,
            version,
            description: def.description,
            inputs: def.inputs,
            prefetch: 1,
            requests: def.requests,
        }
    }
}
