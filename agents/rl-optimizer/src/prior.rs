//! The prior: what the optimizer believes before it has seen any outcome.
//!
//! Each kind of incident has a first choice with a chance that it cures (crash → restart 0.8,
//! overload → scale up 0.75, failed deploy or regression → roll back 0.7, latency → restart
//! 0.6, otherwise do nothing 0.5). Other actions start with their own chance ([`cure_chance`]):
//! a rollback 0.65 when a deploy is implicated (the obvious second guess), doing nothing 0.3
//! (a problem seldom goes away on its own), scaling down 0.2 (less capacity rarely cures
//! anything), anything else 0.5 — but 0.3 for a failed or regressed deploy, which is rolled
//! back or fixed forward rather than restarted. An action's prior *value* is the reward that chance
//! promises: `2·chance − 1 − cost` ([`crate::values::reward`]: +1 for a cure, −1 for none).

use bus_schema::{Action, IncidentKind};

use crate::context::Context;

/// How disruptive an action is, subtracted from its reward (shared with the tools that
/// evaluate policies: `policy_eval::reward`).
pub use policy_eval::reward::cost;

/// The prior choice for a kind of incident and its chance of curing it (0..=1).
pub fn prior(kind: IncidentKind) -> (Action, f64) {
    match kind {
        IncidentKind::CrashLoop => (Action::Restart, 0.8),
        IncidentKind::Overload => (Action::ScaleUp, 0.75),
        IncidentKind::DeployFailed | IncidentKind::DeployRegression => (Action::Rollback, 0.7),
        IncidentKind::HighLatency => (Action::Restart, 0.6),
        IncidentKind::HighErrorRate | IncidentKind::LogPattern | IncidentKind::SloBurn => {
            (Action::Noop, 0.5)
        }
    }
}

/// The prior chance that `action` cures an incident of this context.
pub fn cure_chance(ctx: &Context, action: &Action) -> f64 {
    let (first, chance) = prior(ctx.kind);
    let deploy_kind =
        matches!(ctx.kind, IncidentKind::DeployFailed | IncidentKind::DeployRegression);
    match action {
        a if *a == first => chance,
        Action::Rollback if ctx.deploy => 0.65,
        Action::Noop | Action::Observe => 0.3,
        Action::ScaleDown => 0.2,
        // A deploy that failed or regressed is rolled back or fixed forward, seldom cured by
        // restarting or scaling.
        _ if deploy_kind => 0.3,
        _ => 0.5,
    }
}

/// The prior value of `action` in this context: the reward its chance of curing promises.
pub fn prior_value(ctx: &Context, action: &Action) -> f64 {
    2.0 * cure_chance(ctx, action) - 1.0 - cost(action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::EnvClass;

    #[test]
    fn the_prior_table_matches_the_design() {
        assert_eq!(prior(IncidentKind::CrashLoop).0, Action::Restart);
        assert_eq!(prior(IncidentKind::Overload).0, Action::ScaleUp);
        assert_eq!(prior(IncidentKind::DeployFailed).0, Action::Rollback);
        assert_eq!(prior(IncidentKind::HighLatency).0, Action::Restart);
        assert_eq!(prior(IncidentKind::HighErrorRate).0, Action::Noop);
    }

    #[test]
    fn the_first_choice_has_the_highest_prior_value_of_its_kind() {
        let actions = [
            Action::Noop,
            Action::Observe,
            Action::Restart,
            Action::ScaleUp,
            Action::ScaleDown,
            Action::Rollback,
        ];
        for kind in IncidentKind::ALL {
            for deploy in [false, true] {
                let ctx = Context { kind: *kind, env: EnvClass::Stage, deploy };
                let first = prior(*kind).0;
                let others =
                    actions.iter().filter(|a| **a != first && (**a != Action::Rollback || deploy));
                for a in others {
                    // A symptom's first choice (noop) is beaten only by a rollback of an
                    // implicated deploy.
                    let beaten = matches!(first, Action::Noop) && *a == Action::Rollback;
                    assert_eq!(
                        prior_value(&ctx, &first) > prior_value(&ctx, a),
                        !beaten,
                        "{kind} deploy={deploy}: {first} vs {a}"
                    );
                }
            }
        }
    }
}
