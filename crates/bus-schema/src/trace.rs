//! W3C Trace Context: the `traceparent` header (docs/contract.md, Headers).
//!
//! A pipeline that traces its deploys sends `traceparent` with its events; the fleet carries
//! the trace on: every output and proof record in the chain the event started is stamped with
//! the same trace id and a span id of its own, derived from the output's id (so a redelivered
//! input stamps the same one). Only the version `00` format is read; anything else is ignored,
//! as the spec asks of a header that cannot be parsed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A parsed `traceparent`: `00-{trace id, 32 hex}-{parent id, 16 hex}-{flags, 2 hex}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// Why a `traceparent` value was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("traceparent {value:?}: {problem}")]
pub struct TraceParentError {
    value: String,
    problem: &'static str,
}

impl TraceParent {
    /// The trace's id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        crate::hex::encode(&self.trace_id)
    }

    /// The parent (span) id, 16 lower-case hex digits.
    pub fn parent_id(&self) -> String {
        crate::hex::encode(&self.parent_id)
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The same trace continued by a span whose id derives from `seed` (an output's id): the
    /// same seed always gives the same span.
    pub fn child(&self, seed: &str) -> TraceParent {
        let digest = Sha256::digest(seed.as_bytes());
        let mut parent_id = [0u8; 8];
        parent_id.copy_from_slice(&digest[..8]);
        if parent_id == [0; 8] {
            parent_id[7] = 1; // all zeros is invalid
        }
        TraceParent { parent_id, ..*self }
    }
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let fail = |problem| TraceParentError { value: value.chars().take(80).collect(), problem };
        let parts: Vec<&str> = value.trim().split('-').collect();
        let [version, trace, parent, flags] = parts.as_slice() else {
            return Err(fail("expected 00-{32 hex}-{16 hex}-{2 hex}"));
        };
        if *version != "00" {
            return Err(fail("only version 00 is read"));
        }
        use crate::hex::decode_array;
        let trace_id = decode_array::<16>(trace)
            .ok_or_else(|| fail("the trace id is 32 lower-case hex digits"))?;
        let parent_id = decode_array::<8>(parent)
            .ok_or_else(|| fail("the parent id is 16 lower-case hex digits"))?;
        let [flags] = decode_array::<1>(flags)
            .ok_or_else(|| fail("the flags are 2 lower-case hex digits"))?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return Err(fail("an all-zero id is invalid"));
        }
        Ok(TraceParent { trace_id, parent_id, flags })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace_id(), self.parent_id(), self.flags)
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specs_example_round_trips_and_a_child_keeps_the_trace() {
        let tp: TraceParent = EXAMPLE.parse().unwrap();
        assert_eq!(tp.to_string(), EXAMPLE);
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(tp.sampled());
        let child = tp.child("governance-gate:CN_WORK:x:7:cn.v1.approval:1");
        assert_eq!(child.trace_id(), tp.trace_id());
        assert_ne!(child.parent_id(), tp.parent_id());
        assert_eq!(child, tp.child("governance-gate:CN_WORK:x:7:cn.v1.approval:1"), "stable");
        assert_eq!(serde_json::to_string(&tp).unwrap(), format!("\"{EXAMPLE}\""));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad:?}");
        }
    }
}
