//! The prior: which action to try first for each kind of incident, and how sure we are.
//!
//! This is the optimizer's day-one knowledge (crash → restart, overload → scale up, failed
//! deploy → roll back, latency → restart, otherwise observe-only `noop`). The Q-table starts
//! from it ([`crate::qlearn::prior_value`]) and the confidence of a choice starts at it
//! ([`crate::qlearn::confidence`]), so day-one choices are these.

use bus_schema::{Action, IncidentKind};

/// The prior choice for a kind of incident and its confidence (0..=1).
pub fn prior(kind: IncidentKind) -> (Action, f64) {
    match kind {
        IncidentKind::CrashLoop => (Action::Restart, 0.8),
        IncidentKind::Overload => (Action::ScaleUp, 0.75),
        IncidentKind::DeployFailed | IncidentKind::DeployRegression => (Action::Rollback, 0.7),
        IncidentKind::HighLatency => (Action::Restart, 0.6),
        IncidentKind::HighErrorRate | IncidentKind::LogPattern | IncidentKind::SloBurn => (Action::Noop, 0.5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prior_table_matches_the_design() {
        assert_eq!(prior(IncidentKind::CrashLoop).0, Action::Restart);
        assert_eq!(prior(IncidentKind::Overload).0, Action::ScaleUp);
        assert_eq!(prior(IncidentKind::DeployFailed).0, Action::Rollback);
        assert_eq!(prior(IncidentKind::HighLatency).0, Action::Restart);
        assert_eq!(prior(IncidentKind::HighErrorRate).0, Action::Noop);
        for kind in IncidentKind::ALL {
            let (_, c) = prior(*kind);
            assert!((0.0..=1.0).contains(&c));
        }
    }
}
