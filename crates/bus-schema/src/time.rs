//! RFC 3339 UTC timestamps, the only time format on the bus (docs/contract.md, Headers).
//!
//! Inputs may carry any offset; they are normalised to UTC on the way in so that two events
//! compare by the instant they describe, and everything we publish ends in `Z`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// An instant, kept in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time, truncated to milliseconds (what proof records show).
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        let millis = now.nanosecond() / 1_000_000 * 1_000_000;
        Self(now.replace_nanosecond(millis).unwrap_or(now))
    }

    /// The instant `nanos` nanoseconds after the Unix epoch, if representable.
    pub fn from_unix_nanos(nanos: i128) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(nanos).ok().map(Self)
    }

    pub fn unix_nanos(self) -> i128 {
        self.0.unix_timestamp_nanos()
    }

    pub fn unix_millis(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// This instant moved forward by `d`, saturating at the end of representable time.
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.checked_add(time_duration(d)).unwrap_or(self.0))
    }

    /// How long after `earlier` this instant is; zero if it is not after it.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let delta = self.0 - earlier.0;
        Duration::try_from(delta).unwrap_or(Duration::ZERO)
    }

    /// The underlying `time` value (for APIs that take one, such as JetStream start times).
    pub fn to_offset_date_time(self) -> OffsetDateTime {
        self.0
    }

    /// This instant moved back by `d`, saturating at the start of representable time.
    pub fn minus(self, d: Duration) -> Self {
        Self(self.0.checked_sub(time_duration(d)).unwrap_or(self.0))
    }

    /// The year, for range checks on inputs.
    pub fn year(self) -> i32 {
        self.0.year()
    }

    /// For people: always with milliseconds (truncated), `2026-02-20T17:00:00.000Z`, so
    /// columns line up and text sorts in time order. The bus keeps RFC 3339 as it was sent.
    pub fn millis(self) -> Millis {
        Millis(self)
    }
}

/// A [`Timestamp`] shown to people at a fixed width ([`Timestamp::millis`]).
#[derive(Debug, Clone, Copy)]
pub struct Millis(Timestamp);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

fn time_duration(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

/// A string that is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an RFC 3339 timestamp such as 2026-02-20T17:00:00Z ({problem})")]
pub struct TimestampError {
    input: String,
    problem: String,
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OffsetDateTime::parse(s, &Rfc3339).map(|t| Self(t.to_offset(UtcOffset::UTC))).map_err(|e| {
            TimestampError { input: s.chars().take(64).collect(), problem: e.to_string() }
        })
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::string_enum::parse_str(d)
    }
}

/// A string that is not a duration [`parse_duration`] accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{input:?} is not a duration such as 500ms, 10s, 5m or 2h")]
    NotANumber { input: String, source: std::num::ParseIntError },
    #[error("{input:?} has an unknown unit {unit:?}; use ms, s, m or h")]
    UnknownUnit { input: String, unit: String },
    #[error("{input:?} must be more than zero")]
    Zero { input: String },
}

/// Parses `250ms`, `10s`, `5m`, `2h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|source| DurationError::NotANumber { input: s.to_owned(), source })?;
    let d = match unit {
        "ms" => std::time::Duration::from_millis(n),
        "" | "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
        "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(DurationError::UnknownUnit { input: s.to_owned(), unit: unit.to_owned() });
        }
    };
    if d.is_zero() {
        return Err(DurationError::Zero { input: s.to_owned() });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_utc_with_z() {
        let t: Timestamp = "2026-02-20T17:00:00Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-02-20T17:00:00Z");
        let shifted: Timestamp = "2026-02-20T18:00:00+01:00".parse().unwrap();
        assert_eq!(shifted, t);
        assert_eq!(shifted.to_string(), "2026-02-20T17:00:00Z");
    }

    #[test]
    fn rejects_other_formats_with_an_example() {
        let err = "20/02/2026".parse::<Timestamp>().unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }

    /// What people read has one width: milliseconds always, never more.
    #[test]
    fn millis_is_fixed_width_and_sorts_in_time_order() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap().millis().to_string();
        assert_eq!(at("2026-02-20T17:00:00Z"), "2026-02-20T17:00:00.000Z");
        assert_eq!(at("2026-02-20T17:00:00.85Z"), "2026-02-20T17:00:00.850Z");
        assert_eq!(at("2026-02-20T18:00:00.123456789+01:00"), "2026-02-20T17:00:00.123Z");
        let mut texts = [at("2026-02-20T17:00:00.9Z"), at("2026-02-20T17:00:00.85Z")];
        texts.sort();
        assert_eq!(texts, ["2026-02-20T17:00:00.850Z", "2026-02-20T17:00:00.900Z"]);
    }

    #[test]
    fn now_has_millisecond_precision() {
        assert_eq!(Timestamp::now().unix_nanos() % 1_000_000, 0);
    }

    #[test]
    fn since_and_plus_agree() {
        let t: Timestamp = "2026-02-20T17:00:00Z".parse().unwrap();
        let later = t.plus(Duration::from_millis(1500));
        assert_eq!(later.since(t), Duration::from_millis(1500));
        assert_eq!(t.since(later), Duration::ZERO);
    }
}
