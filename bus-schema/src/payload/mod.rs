//! Every payload of DESIGN §4–§7, as serde types.
//!
//! Field names are the wire names. Optional fields are omitted when empty, unknown fields are
//! ignored (so a newer publisher does not break an older consumer), and every payload
//! implements [`Validate`](crate::Validate) for the checks serde cannot make.

mod actions;
mod contract;
mod events;
mod fleet;
mod incident;

pub use actions::*;
pub use contract::*;
pub use events::*;
pub use fleet::*;
pub use incident::*;

/// Generates the ids the fleet mints (proposals, incidents, approvals, contracts).
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}
