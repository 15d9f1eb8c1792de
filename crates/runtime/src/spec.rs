//! What an agent is: its name, version and description. The foundation the run loop
//! ([`crate::agent`]) and the status endpoint ([`crate::status`]) both read. What it consumes
//! and answers is its handler's types ([`crate::Handler::Input`], [`crate::Handler::Request`]).

use bus_schema::AgentName;
use bus_schema::fleet::AgentDef;

/// What an agent is.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: AgentName,
    /// Semver, e.g. `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    pub description: &'static str,
    /// Messages pulled ahead per input. 1 is always safe; more is faster for an agent whose
    /// handler is quick, but a prefetched message's ack wait runs while it waits its turn, so
    /// keep `prefetch × slowest handling time` well under the ack wait.
    pub prefetch: usize,
    /// Whether it may run as several instances, each owning a share of the service partitions
    /// (`--partitioned`; see [`crate::partitioned`]).
    pub partitioned: bool,
}

impl AgentSpec {
    /// The spec of a fleet agent (bus_schema::fleet) at a version.
    pub fn new(def: AgentDef, version: &'static str) -> Self {
        Self {
            name: def.name,
            version,
            description: def.description,
            prefetch: 1,
            partitioned: def.partitioned,
        }
    }
}
