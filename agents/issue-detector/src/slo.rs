//! Multi-window, multi-burn-rate SLO alerts (Google SRE workbook, chapter 5).
//!
//! The burn rate over a window is the time-weighted mean error rate divided by the error rate
//! the objective allows (`1 - objective`): at 1× the budget lasts exactly the SLO period. An
//! alert fires only when *both* its long and its short window burn faster than its factor: the
//! long window proves the burn is significant, the short one that it is still happening, so an
//! alert clears within minutes of the burn stopping.
//!
//! Windows hold what was observed: a burn rate is the mean over the time samples covered, as
//! Prometheus' ratio of rates is. So that a lone bad sample or a brand-new service's first
//! minutes are not a burn, a rule fires only once samples cover half its short window and its
//! long window at least the short window's length, and (for the pages) once at least
//! `min_samples` samples in the short window burn that fast on their own: a lone spike averaged
//! over a quiet window is not a burn.
//!
//! The budget consumed is the error time over the SLO period divided by the error time the
//! objective allows for the whole period.

use bus_schema::{BurnRate, Evidence, Severity};

use crate::config::Tunables;
use crate::window::{ErrorTime, Windows};

/// One alert of the workbook's table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnRule {
    pub name: &'static str,
    pub factor: f64,
    pub long_s: u64,
    pub short_s: u64,
    pub severity: Severity,
}

/// Page at 14.4× over 1 h and 5 m, page at 6× over 6 h and 30 m, ticket at 1× over 3 d and 6 h.
pub const RULES: [BurnRule; 3] = [
    BurnRule {
        name: "page",
        factor: 14.4,
        long_s: 3600,
        short_s: 300,
        severity: Severity::Critical,
    },
    BurnRule {
        name: "page",
        factor: 6.0,
        long_s: 6 * 3600,
        short_s: 1800,
        severity: Severity::High,
    },
    BurnRule {
        name: "ticket",
        factor: 1.0,
        long_s: 3 * 86_400,
        short_s: 6 * 3600,
        severity: Severity::Low,
    },
];

/// The windows reported in `SloStatus.burn_rates`.
pub const REPORTED_WINDOWS_S: [u64; 5] = [300, 1800, 3600, 6 * 3600, 3 * 86_400];

/// An SLO at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct SloView {
    pub objective: f64,
    pub period_days: u32,
    pub burn_rates: Vec<BurnRate>,
    /// Fraction of the period's budget spent (1.0 = all of it).
    pub consumed: f64,
    /// The most severe rule firing, with its evidence.
    pub alert: Option<(usize, Vec<Evidence>)>,
}

impl SloView {
    pub fn remaining(&self) -> f64 {
        1.0 - self.consumed
    }

    pub fn alert_severity(&self) -> Option<Severity> {
        self.alert.as_ref().map(|(i, _)| RULES[*i].severity)
    }
}

/// Burn rate over the window ending at `now`, if any sample fell in it.
fn burn(w: &Windows, now: i64, window_s: u64, allowed: f64) -> Option<(f64, ErrorTime)> {
    let e = w.errors(now, window_s);
    e.error_rate().map(|rate| (rate / allowed, e))
}

/// Which paging rules one sample's error rate burns at (or above) on its own.
pub fn burning(error_rate: f64, t: &Tunables) -> [u32; 2] {
    let allowed = 1.0 - t.slo_objective;
    [
        u32::from(error_rate >= RULES[0].factor * allowed),
        u32::from(error_rate >= RULES[1].factor * allowed),
    ]
}

/// Evaluates the SLO of one service at `now` (unix seconds).
pub fn evaluate(w: &Windows, now: i64, t: &Tunables) -> SloView {
    let allowed = 1.0 - t.slo_objective;
    let period_s = u64::from(t.slo_period_days) * 86_400;
    let consumed = w.errors(now, period_s).bad_s / (allowed * period_s as f64);
    let burn_rates = REPORTED_WINDOWS_S
        .iter()
        .filter_map(|&window_s| {
            burn(w, now, window_s, allowed).map(|(rate, _)| BurnRate { window_s, rate })
        })
        .collect();
    let alert = RULES.iter().enumerate().find_map(|(i, rule)| {
        let (long, long_errors) = burn(w, now, rule.long_s, allowed)?;
        let (short, short_errors) = burn(w, now, rule.short_s, allowed)?;
        let covered = short_errors.seen_s >= rule.short_s as f64 / 2.0
            && long_errors.seen_s >= rule.short_s as f64;
        let not_a_spike = short_errors.burning.get(i).is_none_or(|n| *n >= t.min_samples);
        let firing = covered && not_a_spike && long >= rule.factor && short >= rule.factor;
        firing.then(|| {
            let at = |window_s: u64, rate: f64| Evidence {
                signal: format!("burn_rate_{}", human(window_s)),
                value: rate,
                threshold: rule.factor,
                window_s,
                detail: format!(
                    "{}: error budget burning {rate:.1}× over {}",
                    rule.name,
                    human(window_s)
                ),
            };
            let budget = Evidence {
                signal: "error_budget_consumed".into(),
                value: consumed,
                threshold: 1.0,
                window_s: period_s,
                detail: format!(
                    "{:.1} % of the {}-day budget for {} spent",
                    consumed * 100.0,
                    t.slo_period_days,
                    objective_text(t.slo_objective)
                ),
            };
            (i, vec![at(rule.long_s, long), at(rule.short_s, short), budget])
        })
    });
    SloView {
        objective: t.slo_objective,
        period_days: t.slo_period_days,
        burn_rates,
        consumed,
        alert,
    }
}

/// `300` → `5m`, `3600` → `1h`, `259200` → `3d`.
pub fn human(s: u64) -> String {
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn objective_text(objective: f64) -> String {
    format!("{} %", (objective * 100_000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::SIGNALS;

    const T0: i64 = 1_800_000_000;

    /// Feeds `minutes` of samples every `step_s` at `burn`× the allowed error rate.
    fn feed(w: &mut Windows, from: i64, minutes: i64, step_s: i64, burn: f64) -> i64 {
        let rate = burn * 0.001;
        let mut at = from;
        while at < from + minutes * 60 {
            let readings: [Option<(f64, bool)>; SIGNALS] =
                [Some((rate, false)), None, None, None, None];
            let burning =
                [rate >= RULES[0].factor * 0.001, rate >= RULES[1].factor * 0.001].map(u32::from);
            w.add(
                at,
                readings,
                Some(ErrorTime { bad_s: rate * step_s as f64, seen_s: step_s as f64, burning }),
                at,
            );
            at += step_s;
        }
        at - step_s
    }

    /// When the first alert fires while feeding `burn`, in minutes from `from`, and which.
    fn first_alert(
        w: &mut Windows,
        from: i64,
        minutes: i64,
        burn_rate: f64,
    ) -> Option<(i64, &'static str, Severity)> {
        let t = Tunables::default();
        (0..minutes).find_map(|m| {
            let now = feed(w, from + m * 60, 1, 10, burn_rate);
            evaluate(w, now, &t).alert.map(|(i, _)| (m + 1, RULES[i].name, RULES[i].severity))
        })
    }

    #[test]
    fn a_fast_burn_pages_within_the_short_window() {
        let mut w = Windows::default();
        let (minute, name, severity) = first_alert(&mut w, T0, 60, 15.0).unwrap();
        assert_eq!((name, severity), ("page", Severity::Critical));
        assert!(minute <= 5, "paged after {minute} min");
    }

    #[test]
    fn after_an_hour_of_health_the_long_windows_decide_when_a_fast_burn_pages() {
        let mut w = Windows::default();
        feed(&mut w, T0, 60, 10, 0.0);
        // 6× over 6 h needs 15·m/(60+m) ≥ 6: about 40 minutes of the burn; 14.4× over the hour
        // needs 14.4/15 of the hour burning: about 58 minutes.
        let t = Tunables::default();
        let mut first = std::collections::BTreeMap::new();
        for m in 0..90 {
            let now = feed(&mut w, T0 + 3600 + m * 60, 1, 10, 15.0);
            if let Some(s) = evaluate(&w, now, &t).alert_severity() {
                first.entry(s).or_insert(m + 1);
            }
        }
        assert!((38..=42).contains(&first[&Severity::High]), "{first:?}");
        assert!((55..=60).contains(&first[&Severity::Critical]), "{first:?}");
        // A total outage (1000×) pages within the short window.
        let mut w = Windows::default();
        feed(&mut w, T0, 60, 10, 0.0);
        assert!(first_alert(&mut w, T0 + 3600, 10, 1000.0).unwrap().0 <= 5);
    }

    #[test]
    fn a_slow_burn_raises_a_ticket_and_never_pages() {
        let mut w = Windows::default();
        let t = Tunables::default();
        let mut severities = Vec::new();
        for hour in 0..12 {
            let now = feed(&mut w, T0 + hour * 3600, 60, 60, 1.2);
            severities.push(evaluate(&w, now, &t).alert_severity());
        }
        assert!(
            severities.iter().all(|s| *s != Some(Severity::Critical) && *s != Some(Severity::High)),
            "{severities:?}"
        );
        assert_eq!(severities.last(), Some(&Some(Severity::Low)), "{severities:?}");
        assert_eq!(
            severities[0], None,
            "an hour of 1.2× covers too little of the 6 h short window"
        );
    }

    #[test]
    fn a_burn_that_stops_clears_once_the_short_window_clears_and_nothing_fires_after() {
        let mut w = Windows::default();
        let t = Tunables::default();
        // Three healthy days, ten minutes of a 100× burn, then health again.
        let start = T0 - 3 * 86_400;
        feed(&mut w, start, 3 * 1440, 60, 0.0);
        let now = feed(&mut w, T0, 10, 10, 100.0);
        assert_eq!(evaluate(&w, now, &t).alert_severity(), Some(Severity::Critical));
        let mut after = Vec::new();
        for m in 0..240 {
            let now = feed(&mut w, T0 + 600 + m * 60, 1, 10, 0.0);
            after.push(evaluate(&w, now, &t).alert.is_some());
        }
        let cleared_at = after.iter().position(|firing| !firing).unwrap();
        assert!(cleared_at < 5, "cleared after {cleared_at} min");
        assert!(after[cleared_at..].iter().all(|f| !f), "nothing fires again: {after:?}");
    }

    #[test]
    fn evidence_names_windows_rates_and_budget() {
        let mut w = Windows::default();
        let now = feed(&mut w, T0, 10, 10, 30.0);
        let view = evaluate(&w, now, &Tunables::default());
        let (_, evidence) = view.alert.unwrap();
        let signals: Vec<&str> = evidence.iter().map(|e| e.signal.as_str()).collect();
        assert_eq!(signals, ["burn_rate_1h", "burn_rate_5m", "error_budget_consumed"]);
        assert!((evidence[0].value - 30.0).abs() < 0.5);
        // Ten minutes at 30× spends 10·30 / (30 days in minutes) of the budget.
        let expected = 10.0 * 30.0 / (30.0 * 1440.0);
        assert!((view.consumed - expected).abs() < 1e-3, "{} vs {expected}", view.consumed);
        assert!(evidence[2].detail.contains("99.9 %"), "{}", evidence[2].detail);
    }

    #[test]
    fn a_single_bad_sample_is_not_a_burn() {
        let mut w = Windows::default();
        // Windows well covered, so only the spike guard stands between this sample and a page.
        feed(&mut w, T0, 60, 10, 0.0);
        let now = feed(&mut w, T0 + 3600, 1, 60, 5000.0);
        let e = w.errors(now, 300);
        assert!(
            e.error_rate().unwrap() / 0.001 > 14.4
                && w.errors(now, 3600).error_rate().unwrap() / 0.001 > 14.4,
            "both windows do burn: {e:?}"
        );
        assert_eq!(evaluate(&w, now, &Tunables::default()).alert, None);
    }
}
