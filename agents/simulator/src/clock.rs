//! The simulated clock: accelerated, but never ahead of the real one.
//!
//! Simulated time starts at `start` (by default the wall clock minus `--lead`) and advances
//! `speed` simulated seconds per real second. It never passes the wall clock minus
//! [`BEHIND_WALL_CLOCK`]: the rest of the fleet runs on real clocks and the detector rejects
//! samples stamped in its future. Once the simulation catches up it runs in real time, 5 s
//! behind. It never goes backwards, even if the wall clock does.

use std::time::Duration;

use bus_schema::Timestamp;

/// How far behind the wall clock simulated time always stays.
pub const BEHIND_WALL_CLOCK: Duration = Duration::from_secs(5);

/// Maps wall-clock instants to simulated ones.
#[derive(Debug, Clone, PartialEq)]
pub struct SimClock {
    start: Timestamp,
    started_at: Timestamp,
    speed: f64,
    last: Timestamp,
}

impl SimClock {
    /// A clock at `start` when the wall clock reads `wall_now`, running `speed` times real time.
    pub fn new(start: Timestamp, wall_now: Timestamp, speed: f64) -> Self {
        let start = start.min(wall_now.minus(BEHIND_WALL_CLOCK));
        Self { start, started_at: wall_now, speed, last: start }
    }

    /// Where the simulation began.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// Simulated time when the wall clock reads `wall_now`.
    pub fn now(&mut self, wall_now: Timestamp) -> Timestamp {
        let real = wall_now.since(self.started_at).as_secs_f64();
        let accelerated = self.start.plus(Duration::from_secs_f64((real * self.speed).min(1e12)));
        let t = accelerated.min(wall_now.minus(BEHIND_WALL_CLOCK)).max(self.last);
        self.last = t;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn runs_fast_until_it_catches_up_then_in_real_time_behind_the_wall_clock() {
        let wall = t("2026-02-20T12:00:00Z");
        let mut clock = SimClock::new(wall.minus(Duration::from_secs(3600)), wall, 30.0);
        assert_eq!(clock.now(wall.plus(Duration::from_secs(10))), t("2026-02-20T11:05:00Z"));
        // 3600 s behind closes at 29 s per second: after 2 minutes it has caught up.
        for s in (0..600).step_by(7) {
            let w = wall.plus(Duration::from_secs(s));
            let sim = clock.now(w);
            assert!(sim <= w.minus(BEHIND_WALL_CLOCK), "{sim} passed {w} - 5 s");
        }
        let w = wall.plus(Duration::from_secs(600));
        assert_eq!(clock.now(w), w.minus(BEHIND_WALL_CLOCK));
    }

    #[test]
    fn a_start_in_the_future_is_pulled_back_and_time_never_goes_backwards() {
        let wall = t("2026-02-20T12:00:00Z");
        let mut clock = SimClock::new(wall.plus(Duration::from_secs(3600)), wall, 1.0);
        assert_eq!(clock.start(), wall.minus(BEHIND_WALL_CLOCK));
        let later = clock.now(wall.plus(Duration::from_secs(20)));
        assert_eq!(
            clock.now(wall),
            later,
            "a wall clock stepping back does not move simulated time back"
        );
    }
}
