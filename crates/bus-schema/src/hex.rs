//! Lower-case hex, the text form of hashes, keys and signatures on the bus.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Decodes exactly `N` bytes of lower-case hex.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| DIGITS.iter().position(|&d| d == c).and_then(|p| u8::try_from(p).ok());
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(bytes in any::<[u8; 32]>()) {
            prop_assert_eq!(super::decode_array::<32>(&super::encode(&bytes)), Some(bytes));
        }
    }

    #[test]
    fn rejects_upper_case_odd_lengths_and_non_hex() {
        assert_eq!(super::decode_array::<1>("AB"), None);
        assert_eq!(super::decode_array::<1>("a"), None);
        assert_eq!(super::decode_array::<1>("zz"), None);
        assert_eq!(super::decode_array::<1>("0f"), Some([15]));
    }
}
