//! Event-time windows for one service.
//!
//! Samples land in buckets by their own timestamp, not by when they arrived, so replayed,
//! simulated and late data are judged by when it happened. Memory per service is fixed:
//!
//! | tier | bucket | kept | used for |
//! |---|---|---|---|
//! | fine | 10 s | 1 h | sustained signals, regressions, burn rates over 5 m, 30 m, 1 h |
//! | 6 h | 5 m | 6 h | burn rate over 6 h |
//! | 3 d | 1 h | 3 d | burn rate over 3 d |
//! | period | 1 d | 90 d | error budget consumed over the SLO period |
//!
//! Fine buckets count, per signal, the samples that carried it, how many were bad and their
//! sum. Every tier also accumulates error *time*: `error_rate × dt` and `dt`, where `dt` is the
//! time the sample stands for (see [`crate::service`]), so burn rates are time-weighted means.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub const FINE_WIDTH_S: i64 = 10;
const FINE_LEN: i64 = 360;

/// A metric signal kept in the fine tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    ErrorRate = 0,
    P95 = 1,
    P99 = 2,
    Cpu = 3,
    Memory = 4,
}

pub const SIGNALS: usize = 5;

impl Signal {
    pub const ALL: [Signal; SIGNALS] =
        [Signal::ErrorRate, Signal::P95, Signal::P99, Signal::Cpu, Signal::Memory];

    pub fn name(self) -> &'static str {
        match self {
            Signal::ErrorRate => "error_rate",
            Signal::P95 => "p95_latency_ms",
            Signal::P99 => "p99_latency_ms",
            Signal::Cpu => "cpu_percent",
            Signal::Memory => "memory_percent",
        }
    }
}

/// One signal's samples in a bucket or window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Agg {
    pub n: u32,
    pub bad: u32,
    pub sum: f64,
}

impl Agg {
    fn merge(&mut self, o: &Agg) {
        self.n += o.n;
        self.bad += o.bad;
        self.sum += o.sum;
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / f64::from(self.n))
    }
}

/// Error time: `Σ error_rate·dt` and `Σ dt`, in seconds, and how many samples on their own
/// burned at least as fast as each paging rule's factor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorTime {
    pub bad_s: f64,
    pub seen_s: f64,
    #[serde(default)]
    pub burning: [u32; 2],
}

impl ErrorTime {
    fn merge(&mut self, o: &ErrorTime) {
        self.bad_s += o.bad_s;
        self.seen_s += o.seen_s;
        self.burning[0] += o.burning[0];
        self.burning[1] += o.burning[1];
    }

    /// The time-weighted mean error rate.
    pub fn error_rate(&self) -> Option<f64> {
        (self.seen_s > 0.0).then(|| self.bad_s / self.seen_s)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FineBucket {
    start: i64,
    signals: [Agg; SIGNALS],
    errors: ErrorTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Coarse {
    width: i64,
    len: i64,
    buckets: VecDeque<(i64, ErrorTime)>,
}

impl Coarse {
    fn new(width: i64, len: i64) -> Self {
        Self { width, len, buckets: VecDeque::new() }
    }

    fn add(&mut self, at: i64, errors: ErrorTime, newest: i64) {
        let start = at.div_euclid(self.width) * self.width;
        let i = self.buckets.partition_point(|(s, _)| *s < start);
        match self.buckets.get_mut(i) {
            Some((s, e)) if *s == start => e.merge(&errors),
            _ => self.buckets.insert(i, (start, errors)),
        }
        let oldest = newest.div_euclid(self.width) * self.width - (self.len - 1) * self.width;
        while self.buckets.front().is_some_and(|(s, _)| *s < oldest) {
            self.buckets.pop_front();
        }
    }

    fn sum(&self, from: i64, to: i64) -> ErrorTime {
        sum_errors(self.buckets.iter().map(|(s, e)| (*s, e)), self.width, from, to)
    }
}

/// Error time in `(from, to]`; the bucket straddling `from` counts for the part of it inside
/// the window, so a 30-day budget is 30 days, not 31.
fn sum_errors<'a>(
    buckets: impl Iterator<Item = (i64, &'a ErrorTime)>,
    width: i64,
    from: i64,
    to: i64,
) -> ErrorTime {
    let mut total = ErrorTime::default();
    for (start, e) in buckets.filter(|(s, _)| *s > from - width && *s <= to) {
        if start >= from {
            total.merge(e);
        } else {
            let inside = (start + width - from) as f64 / width as f64;
            total.bad_s += e.bad_s * inside;
            total.seen_s += e.seen_s * inside;
        }
    }
    // Burning samples are counted by whole fine buckets (see `errors`).
    total.burning = [0; 2];
    total
}

/// What one signal looked like over a window of fine buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowStats {
    pub agg: Agg,
    /// Seconds from the first to the end of the last bucket with samples.
    pub span_s: i64,
}

/// All windows of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    fine: VecDeque<FineBucket>,
    six_hours: Coarse,
    three_days: Coarse,
    period: Coarse,
}

impl Default for Windows {
    fn default() -> Self {
        Self {
            fine: VecDeque::new(),
            six_hours: Coarse::new(300, 74),
            three_days: Coarse::new(3600, 74),
            period: Coarse::new(86_400, 91),
        }
    }
}

/// How long each tier reaches back; queries longer than the longest are clamped to it.
pub const LONGEST_S: u64 = 91 * 86_400;

impl Windows {
    /// Adds one sample at `at` (unix seconds). `signals[i]` is the value of `Signal::ALL[i]`
    /// and whether it was bad; `newest` is the service's newest sample time, for pruning.
    pub fn add(
        &mut self,
        at: i64,
        signals: [Option<(f64, bool)>; SIGNALS],
        errors: Option<ErrorTime>,
        newest: i64,
    ) {
        let start = at.div_euclid(FINE_WIDTH_S) * FINE_WIDTH_S;
        let i = self.fine.partition_point(|b| b.start < start);
        if self.fine.get(i).is_none_or(|b| b.start != start) {
            self.fine.insert(i, FineBucket { start, ..FineBucket::default() });
        }
        if let Some(bucket) = self.fine.get_mut(i) {
            for (agg, reading) in bucket.signals.iter_mut().zip(signals) {
                if let Some((value, bad)) = reading {
                    agg.merge(&Agg { n: 1, bad: u32::from(bad), sum: value });
                }
            }
            if let Some(e) = errors {
                bucket.errors.merge(&e);
            }
        }
        let oldest = newest.div_euclid(FINE_WIDTH_S) * FINE_WIDTH_S - (FINE_LEN - 1) * FINE_WIDTH_S;
        while self.fine.front().is_some_and(|b| b.start < oldest) {
            self.fine.pop_front();
        }
        if let Some(e) = errors {
            for tier in [&mut self.six_hours, &mut self.three_days, &mut self.period] {
                tier.add(at, e, newest);
            }
        }
    }

    /// The fine buckets overlapping `(from, to]`, found by binary search: a 5 min window
    /// looks at 30 buckets, not 360.
    fn fine_between(&self, from: i64, to: i64) -> impl Iterator<Item = &FineBucket> {
        let first = self.fine.partition_point(|b| b.start <= from - FINE_WIDTH_S);
        self.fine.range(first..).take_while(move |b| b.start <= to)
    }

    /// One signal over the fine buckets overlapping `(to - window_s, to]` (whole buckets).
    pub fn last(&self, signal: Signal, to: i64, window_s: u64) -> WindowStats {
        self.range(signal, to - window_s as i64, to)
    }

    /// One signal over the fine buckets overlapping `(from, to]` (whole buckets).
    pub fn range(&self, signal: Signal, from: i64, to: i64) -> WindowStats {
        let mut agg = Agg::default();
        let (mut first, mut last) = (None, None);
        for b in self.fine_between(from, to) {
            let a = &b.signals[signal as usize];
            if a.n > 0 {
                agg.merge(a);
                first = first.or(Some(b.start));
                last = Some(b.start);
            }
        }
        let span_s = match (first, last) {
            (Some(f), Some(l)) => l - f + FINE_WIDTH_S,
            _ => 0,
        };
        WindowStats { agg, span_s }
    }

    /// Error time over `(to - window_s, to]`, from the finest tier that reaches back that far.
    pub fn errors(&self, to: i64, window_s: u64) -> ErrorTime {
        let from = to - window_s as i64;
        if window_s <= (FINE_LEN * FINE_WIDTH_S) as u64 {
            // Paging rules count whole 10 s buckets of samples burning on their own.
            let mut total = sum_errors(
                self.fine_between(from, to).map(|b| (b.start, &b.errors)),
                FINE_WIDTH_S,
                from,
                to,
            );
            for b in self.fine_between(from, to) {
                total.burning[0] += b.errors.burning[0];
                total.burning[1] += b.errors.burning[1];
            }
            return total;
        }
        let tier = [&self.six_hours, &self.three_days, &self.period]
            .into_iter()
            .find(|t| window_s <= (t.width * (t.len - 1)) as u64)
            .unwrap_or(&self.period);
        tier.sum(from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;

    fn err(rate: f64, dt: f64) -> Option<ErrorTime> {
        Some(ErrorTime { bad_s: rate * dt, seen_s: dt, burning: [0; 2] })
    }

    fn only_error(rate: f64, bad: bool) -> [Option<(f64, bool)>; SIGNALS] {
        [Some((rate, bad)), None, None, None, None]
    }

    #[test]
    fn out_of_order_samples_land_in_their_own_buckets() {
        let mut w = Windows::default();
        w.add(T0 + 30, only_error(0.5, true), err(0.5, 10.0), T0 + 30);
        w.add(T0, only_error(0.1, true), err(0.1, 10.0), T0 + 30);
        w.add(T0 + 10, only_error(0.0, false), err(0.0, 10.0), T0 + 30);
        let s = w.last(Signal::ErrorRate, T0 + 30, 60);
        assert_eq!((s.agg.n, s.agg.bad, s.span_s), (3, 2, 40));
        assert!((s.agg.mean().unwrap() - 0.2).abs() < 1e-9);
        assert_eq!(
            w.last(Signal::ErrorRate, T0 + 30, 20).agg.n,
            2,
            "the buckets at T0+10 and T0+30 overlap (T0+10, T0+30]"
        );
    }

    #[test]
    fn memory_is_bounded_by_the_tiers_not_by_the_sample_count() {
        let mut w = Windows::default();
        for i in 0..(4 * 86_400 / 5) {
            let at = T0 + i * 5;
            w.add(at, only_error(0.001, false), err(0.001, 5.0), at);
        }
        assert_eq!(w.fine.len() as i64, FINE_LEN);
        assert_eq!(w.six_hours.buckets.len(), 74);
        assert_eq!(w.three_days.buckets.len(), 74);
        assert_eq!(w.period.buckets.len(), 5);
    }

    #[test]
    fn error_time_is_answered_by_the_tier_that_reaches_back_far_enough() {
        let mut w = Windows::default();
        // Two hours at 1 % errors, then ten minutes at 10 %.
        let end = T0 + 7200 + 600;
        for i in 0..(7800 / 10) {
            let at = T0 + i * 10;
            let rate = if at >= T0 + 7200 { 0.10 } else { 0.01 };
            w.add(at, only_error(rate, rate > 0.05), err(rate, 10.0), at);
        }
        let five_min = w.errors(end, 300).error_rate().unwrap();
        let hour = w.errors(end, 3600).error_rate().unwrap();
        let six_h = w.errors(end, 6 * 3600);
        assert!((five_min - 0.10).abs() < 0.005, "{five_min}");
        assert!((hour - (0.10 * 600.0 + 0.01 * 3000.0) / 3600.0).abs() < 0.005, "{hour}");
        assert!((six_h.seen_s - 7800.0).abs() < 1.0, "six hours sees everything: {six_h:?}");
        assert!((w.errors(end, 30 * 86_400).bad_s - (0.10 * 600.0 + 0.01 * 7200.0)).abs() < 1e-6);
    }

    #[test]
    fn a_window_straddling_a_bucket_counts_only_its_share_of_it() {
        let mut w = Windows::default();
        // Five days of 1 % errors every five minutes; beyond 3 days the tier's buckets are days.
        let start = 1_800_000_000 / 86_400 * 86_400;
        for i in 0..(5 * 288) {
            let at = start + i * 300;
            w.add(at, only_error(0.01, false), err(0.01, 300.0), at);
        }
        let end = start + 5 * 86_400 - 300;
        // Four and a half days back: the oldest day's bucket counts for half of it.
        let e = w.errors(end, 108 * 3600);
        assert!((e.seen_s - 108.0 * 3600.0).abs() <= 600.0, "{} h", e.seen_s / 3600.0);
    }
}
