//! Range and size checks that serde's type checks cannot express.
//!
//! Decoding proves a payload has the right shape; [`Validate`] proves its values make sense
//! (docs/contract.md; units: `error_rate` is a fraction, percentages are 0..100, latencies are
//! non-negative milliseconds) and that no text field is large enough to hurt a consumer.

use crate::time::Timestamp;

/// Longest free-text field (log messages, descriptions, reasons, details), in bytes.
pub const MAX_TEXT: usize = 4096;
/// Longest short identifier-like field (versions, ids, names), in bytes.
pub const MAX_SHORT: usize = 256;
/// Most items in any list in a payload.
pub const MAX_ITEMS: usize = 1000;

/// A value that decoded but is not acceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field} = {value} is out of range (allowed: {allowed})")]
    OutOfRange { field: &'static str, value: String, allowed: &'static str },
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("{field} has {len} items; at most {max} are allowed")]
    TooMany { field: &'static str, len: usize, max: usize },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    /// An item of a list failed its own checks (e.g. `samples[3].error_rate = 2 is out of
    /// range`); its reason code is the item's.
    #[error("{list}[{index}].{error}")]
    Item { list: &'static str, index: usize, error: Box<ValidationError> },
}

impl ValidationError {
    /// The error an item's check gives, inside its list.
    pub fn item(self, list: &'static str, index: usize) -> Self {
        Self::Item { list, index, error: Box::new(self) }
    }
}

/// Semantic checks on a decoded payload.
pub trait Validate {
    fn validate(&self) -> Result<(), ValidationError>;
}

pub(crate) fn range(
    field: &'static str,
    v: f64,
    lo: f64,
    hi: f64,
    allowed: &'static str,
) -> Result<(), ValidationError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(ValidationError::OutOfRange { field, value: v.to_string(), allowed })
    }
}

pub(crate) fn opt_range(
    field: &'static str,
    v: Option<f64>,
    lo: f64,
    hi: f64,
    allowed: &'static str,
) -> Result<(), ValidationError> {
    v.map_or(Ok(()), |v| range(field, v, lo, hi, allowed))
}

/// Any finite number (MessagePack, unlike JSON, can carry NaN and infinities).
pub(crate) fn finite(field: &'static str, v: f64) -> Result<(), ValidationError> {
    range(field, v, f64::MIN, f64::MAX, "a finite number")
}

/// A fraction in 0..=1 (error rates, confidences, budgets).
pub(crate) fn fraction(field: &'static str, v: f64) -> Result<(), ValidationError> {
    range(field, v, 0.0, 1.0, "0..=1")
}

pub(crate) fn opt_fraction(field: &'static str, v: Option<f64>) -> Result<(), ValidationError> {
    opt_range(field, v, 0.0, 1.0, "0..=1")
}

/// A percentage in 0..=100.
pub(crate) fn opt_percent(field: &'static str, v: Option<f64>) -> Result<(), ValidationError> {
    opt_range(field, v, 0.0, 100.0, "0..=100")
}

/// A latency in milliseconds: non-negative and at most one day.
pub(crate) fn opt_millis(field: &'static str, v: Option<f64>) -> Result<(), ValidationError> {
    opt_range(field, v, 0.0, 86_400_000.0, "0..=86400000 ms")
}

pub(crate) fn text(field: &'static str, s: &str, max: usize) -> Result<(), ValidationError> {
    if s.len() > max {
        return Err(ValidationError::TooLong { field, len: s.len(), max });
    }
    Ok(())
}

/// An identifier: a version, a commit SHA, a deployment id. Printable ASCII without spaces
/// (letters, digits and punctuation such as `. - _ + : / @`), so no control character, no
/// line break and no bidirectional override can reach a terminal or an approver's screen.
pub(crate) fn ident(field: &'static str, s: &str) -> Result<(), ValidationError> {
    non_empty(field, s, MAX_SHORT)?;
    match s.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        None => Ok(()),
        Some((at, c)) => Err(ValidationError::Invalid {
            field,
            problem: format!(
                "{} at byte {at} is not allowed: identifiers are printable ASCII without spaces",
                crate::display::describe(c)
            ),
        }),
    }
}

pub(crate) fn opt_ident(field: &'static str, s: Option<&str>) -> Result<(), ValidationError> {
    s.map_or(Ok(()), |s| ident(field, s))
}

pub(crate) fn opt_text(
    field: &'static str,
    s: Option<&str>,
    max: usize,
) -> Result<(), ValidationError> {
    s.map_or(Ok(()), |s| text(field, s, max))
}

pub(crate) fn non_empty(field: &'static str, s: &str, max: usize) -> Result<(), ValidationError> {
    if s.trim().is_empty() {
        return Err(ValidationError::Empty { field });
    }
    text(field, s, max)
}

pub(crate) fn items<T>(field: &'static str, list: &[T], max: usize) -> Result<(), ValidationError> {
    if list.len() > max {
        return Err(ValidationError::TooMany { field, len: list.len(), max });
    }
    Ok(())
}

pub(crate) fn texts(
    field: &'static str,
    list: &[String],
    max_each: usize,
) -> Result<(), ValidationError> {
    items(field, list, MAX_ITEMS)?;
    list.iter().try_for_each(|s| text(field, s, max_each))
}

/// Event timestamps must be plausible: between the years 2000 and 2200.
pub(crate) fn plausible_time(field: &'static str, t: Timestamp) -> Result<(), ValidationError> {
    if (2000..2200).contains(&t.year()) {
        Ok(())
    } else {
        Err(ValidationError::OutOfRange {
            field,
            value: t.to_string(),
            allowed: "years 2000..2200",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_rejects_nan_and_infinities() {
        assert!(fraction("x", f64::NAN).is_err());
        assert!(fraction("x", f64::INFINITY).is_err());
        assert!(fraction("x", 1.0).is_ok());
        assert!(fraction("x", -0.0001).is_err());
    }

    #[test]
    fn identifiers_are_printable_ascii_without_bidi_or_control_characters() {
        for good in [
            "1.2.3",
            "v2.0.0-rc.1+build.5",
            "9fceb02d0ae598e95dc970b74767f19372d61af8",
            "registry/app:1.4@sha256:ab",
        ] {
            assert!(ident("version", good).is_ok(), "{good}");
        }
        for bad in ["1.2.3\u{202e}", "1.2\0", "1.2\x1b[31m", "1.2\r\n3", "1 2", "", "versión"] {
            assert!(ident("version", bad).is_err(), "{bad:?}");
        }
        let err = ident("previous_version", "1.14.2\u{202e}").unwrap_err().to_string();
        assert!(err.contains("previous_version") && err.contains("U+202E"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let err = opt_percent("cpu_percent", Some(140.0)).unwrap_err();
        assert_eq!(err.to_string(), "cpu_percent = 140 is out of range (allowed: 0..=100)");
    }
}
