//! Log patterns: named phrases that mean trouble ("out of memory", "no space left on device").
//!
//! Matching is by whole words, case-insensitively: the phrase's words must appear next to each
//! other in the message. So "connection refused" matches "dial tcp: Connection refused" but
//! "oom" does not match "room" and "panic" does not match "panicky-config-loader". A pattern
//! fires when it matched at least `min_count` messages (of at least `min_level`) within its
//! window; messages are judged by their own timestamps.

use std::collections::{BTreeMap, VecDeque};

use bus_schema::{Evidence, LogEvent, LogLevel, Severity, Timestamp};
use serde::{Deserialize, Serialize};

/// How many match times are kept per pattern per service.
pub const MAX_MATCHES_KEPT: usize = 64;

/// A named set of phrases.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPattern {
    pub name: String,
    phrases: Vec<Vec<String>>,
    pub min_count: u32,
    pub window_s: u64,
    pub severity: Severity,
    pub min_level: LogLevel,
}

/// Why a log pattern cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("needs at least one phrase with a word in it")]
    NoPhrase,
    #[error("the name must be 1 to 64 characters")]
    Name,
}

impl LogPattern {
    pub fn new(
        name: &str,
        phrases: &[String],
        min_count: u32,
        window_s: u64,
        severity: Severity,
        min_level: LogLevel,
    ) -> Result<Self, PatternError> {
        let phrases: Vec<Vec<String>> =
            phrases.iter().map(|p| words(p)).filter(|w| !w.is_empty()).collect();
        if phrases.is_empty() {
            return Err(PatternError::NoPhrase);
        }
        if name.is_empty() || name.len() > 64 {
            return Err(PatternError::Name);
        }
        Ok(Self { name: name.to_owned(), phrases, min_count, window_s, severity, min_level })
    }

    /// Whether the message says what this pattern looks for.
    pub fn matches(&self, event: &LogEvent) -> bool {
        if event.level < self.min_level {
            return false;
        }
        let message = words(&event.message);
        self.phrases.iter().any(|p| message.windows(p.len()).any(|w| w == p.as_slice()))
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The built-in patterns; a config file may replace or disable them by name.
pub fn default_patterns() -> Vec<LogPattern> {
    let table: [(&str, &[&str], Severity); 6] = [
        (
            "out_of_memory",
            &[
                "out of memory",
                "oomkilled",
                "oom killed",
                "oom killer",
                "cannot allocate memory",
                "java.lang.OutOfMemoryError",
            ],
            Severity::High,
        ),
        (
            "disk_full",
            &["no space left on device", "disk full", "disk quota exceeded", "enospc"],
            Severity::High,
        ),
        (
            "panic",
            &["panic", "panicked", "segmentation fault", "sigsegv", "fatal error"],
            Severity::High,
        ),
        ("connection_refused", &["connection refused", "econnrefused"], Severity::Medium),
        ("timeout", &["deadline exceeded", "timed out", "etimedout"], Severity::Medium),
        (
            "tls_failure",
            &["certificate has expired", "certificate verify failed", "x509"],
            Severity::High,
        ),
    ];
    table
        .into_iter()
        .filter_map(|(name, phrases, severity)| {
            let phrases: Vec<String> = phrases.iter().map(|p| (*p).to_owned()).collect();
            LogPattern::new(name, &phrases, 1, 300, severity, LogLevel::Warn).ok()
        })
        .collect()
}

/// Recent matches of each pattern for one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogMatches {
    by_pattern: BTreeMap<String, VecDeque<Timestamp>>,
}

impl LogMatches {
    /// Records which patterns this event matches; returns their names.
    pub fn record(&mut self, patterns: &[LogPattern], event: &LogEvent) -> Vec<String> {
        let mut hit = Vec::new();
        for p in patterns.iter().filter(|p| p.matches(event)) {
            let times = self.by_pattern.entry(p.name.clone()).or_default();
            let at = times.partition_point(|t| *t <= event.timestamp);
            times.insert(at, event.timestamp);
            while times.len() > MAX_MATCHES_KEPT {
                times.pop_front();
            }
            hit.push(p.name.clone());
        }
        hit
    }

    /// The patterns firing at `now`, as evidence, with the highest severity among them.
    pub fn firing(
        &self,
        patterns: &[LogPattern],
        now: Timestamp,
    ) -> Option<(Vec<Evidence>, Severity)> {
        let mut evidence = Vec::new();
        let mut severity = Severity::Low;
        for p in patterns {
            let count = self.count(p, now);
            if count >= p.min_count as usize {
                severity = severity.max(p.severity);
                evidence.push(Evidence {
                    signal: format!("log:{}", p.name),
                    value: count as f64,
                    threshold: f64::from(p.min_count),
                    window_s: p.window_s,
                    detail: format!("{count} matching log lines in {} s", p.window_s),
                });
            }
        }
        (!evidence.is_empty()).then_some((evidence, severity))
    }

    fn count(&self, p: &LogPattern, now: Timestamp) -> usize {
        let from = now.minus(std::time::Duration::from_secs(p.window_s));
        self.by_pattern
            .get(&p.name)
            .map_or(0, |times| times.iter().filter(|t| **t > from && **t <= now).count())
    }

    /// Whether any pattern matched within its window before `now`.
    pub fn any_recent(&self, patterns: &[LogPattern], now: Timestamp) -> bool {
        patterns.iter().any(|p| self.count(p, now) > 0)
    }

    /// Forgets matches older than every pattern's window.
    pub fn prune(&mut self, now: Timestamp, longest_window_s: u64) {
        let from = now.minus(std::time::Duration::from_secs(longest_window_s));
        for times in self.by_pattern.values_mut() {
            times.retain(|t| *t > from);
        }
        self.by_pattern.retain(|_, t| !t.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(level: &str, message: &str, at: &str) -> LogEvent {
        serde_json::from_value(serde_json::json!({"service": "api", "env": "prod", "level": level, "message": message, "timestamp": at})).unwrap()
    }

    fn matching(message: &str) -> Vec<String> {
        let mut m = LogMatches::default();
        m.record(&default_patterns(), &log("error", message, "2026-11-22T10:00:00Z"))
    }

    #[test]
    fn phrases_match_whole_words_case_insensitively() {
        let table: [(&str, &[&str]); 9] = [
            ("Out of memory in module X", &["out_of_memory"]),
            ("container api OOMKilled (exit 137)", &["out_of_memory"]),
            ("write /var/lib/data: No space left on device", &["disk_full"]),
            ("thread 'main' panicked at src/lib.rs:10", &["panic"]),
            ("dial tcp 10.0.0.3:5432: connect: Connection refused", &["connection_refused"]),
            ("context deadline exceeded", &["timeout"]),
            ("room booking failed", &[]),
            ("panicky-config-loader started", &[]),
            ("memory usage is out of this world", &[]),
        ];
        for (message, wanted) in table {
            assert_eq!(
                matching(message),
                wanted.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{message:?}"
            );
        }
    }

    #[test]
    fn quiet_levels_do_not_match_and_counts_follow_the_window() {
        let patterns = vec![
            LogPattern::new(
                "conn",
                &["connection refused".into()],
                3,
                60,
                Severity::Medium,
                LogLevel::Warn,
            )
            .unwrap(),
        ];
        let mut m = LogMatches::default();
        m.record(&patterns, &log("info", "connection refused", "2026-11-22T10:00:00Z"));
        m.record(&patterns, &log("error", "connection refused", "2026-11-22T10:00:10Z"));
        m.record(&patterns, &log("error", "connection refused", "2026-11-22T10:00:20Z"));
        let now: Timestamp = "2026-11-22T10:00:30Z".parse().unwrap();
        assert_eq!(
            m.firing(&patterns, now),
            None,
            "two matches at warn or above; the info line does not count"
        );
        m.record(&patterns, &log("warn", "connection refused", "2026-11-22T10:00:30Z"));
        let (evidence, severity) = m.firing(&patterns, now).unwrap();
        assert_eq!((evidence[0].value, severity), (3.0, Severity::Medium));
        assert_eq!(
            m.firing(&patterns, "2026-11-22T10:01:15Z".parse().unwrap()),
            None,
            "the first two left the 60 s window"
        );
    }

    #[test]
    fn memory_per_pattern_is_bounded() {
        let patterns = default_patterns();
        let mut m = LogMatches::default();
        for i in 0..1000 {
            m.record(
                &patterns,
                &log(
                    "error",
                    "out of memory",
                    &format!("2026-11-22T10:{:02}:{:02}Z", i / 60 % 60, i % 60),
                ),
            );
        }
        assert_eq!(m.by_pattern["out_of_memory"].len(), MAX_MATCHES_KEPT);
    }
}
