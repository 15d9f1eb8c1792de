//! Every payload of docs/contract.md, as serde types.
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

/// A deterministic id (a version 8 UUID) from the things that identify it.
///
/// Agents mint ids from their input (`derive_id(&["proposal", input_id])`), so handling a
/// redelivered input re-creates the same incident, proposal or approval instead of a new one.
pub fn derive_id(parts: &[&str]) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8: custom
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    uuid::Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = super::derive_id(&["proposal", "CN_WORK:7"]);
        assert_eq!(a, super::derive_id(&["proposal", "CN_WORK:7"]));
        assert_ne!(a, super::derive_id(&["proposal", "CN_WORK:8"]));
        // Length-prefixed parts: ["ab", "c"] and ["a", "bc"] differ.
        assert_ne!(super::derive_id(&["ab", "c"]), super::derive_id(&["a", "bc"]));
        assert_eq!(a.get_version_num(), 8);
    }
}
