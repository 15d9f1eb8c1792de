//! Service partitions (docs/contract.md, Partitions).
//!
//! The NATS server appends a partition token to every stored `{env}.{service}` subject
//! (`cn.incidents.prod.checkout` is stored as `cn.incidents.prod.checkout.1`), by a subject
//! mapping with `partition(8, 2)`: FNV-1a (32 bits) of the service name, modulo
//! [`PARTITIONS`]. An agent that runs as several instances gives each instance a share of the
//! partitions: every input of one service, whatever its environment, reaches the one instance
//! that owns the service's partition, and the state that must have one writer (a detector's
//! windows, governance's cooldowns and budgets, the executor's claims) lives with it.
//!
//! This module computes what the server computes, so an agent can check the token it is given
//! and a tool can say which partition, and which instance, a service belongs to.

/// How many partitions the services are spread over. Changing it re-partitions every service:
/// the server's mapping (`deploy/partitions.conf`) and the agents must change together.
pub const PARTITIONS: u16 = 8;

/// The partition of a service: FNV-1a 32 of its name, modulo [`PARTITIONS`], as nats-server's
/// `partition()` mapping computes it.
pub fn of_service(service: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in service.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    u16::try_from(hash % u32::from(PARTITIONS)).unwrap_or(0)
}

/// A partition token (`0` … `PARTITIONS - 1`, decimal, no sign or leading zero).
pub fn parse_token(token: &str) -> Option<u16> {
    if token.is_empty() || token.len() > 5 || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    if !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok().filter(|p| *p < PARTITIONS)
}

/// A set of partitions, as an operator writes it: `0-3,6`.
pub fn format_set(partitions: &[u16]) -> String {
    let mut sorted = partitions.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    if out.is_empty() { "none".to_owned() } else { out.join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn services_land_where_nats_server_puts_them() {
        // Read back from nats-server 2.9.10 with `partition(8,2)` on cn.events.metric.*.*.
        assert_eq!(of_service("checkout"), 1);
        assert_eq!(of_service("payments"), 6);
        assert_eq!(of_service("cart"), 7);
    }

    #[test]
    fn tokens_are_plain_decimals_below_the_count() {
        assert_eq!(parse_token("0"), Some(0));
        assert_eq!(parse_token("7"), Some(7));
        for bad in ["", "8", "07", "-1", "+1", "1a", "99999999999"] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sets_read_as_ranges() {
        assert_eq!(format_set(&[3, 0, 1, 2, 6]), "0-3,6");
        assert_eq!(format_set(&[5]), "5");
        assert_eq!(format_set(&[]), "none");
    }

    proptest! {
        #[test]
        fn every_service_has_one_partition_in_range(service in "[a-z][a-z0-9-]{0,40}") {
            let p = of_service(&service);
            prop_assert!(p < PARTITIONS);
            prop_assert_eq!(parse_token(&p.to_string()), Some(p));
        }
    }
}
