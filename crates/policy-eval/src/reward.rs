//! The reward of an outcome: cured within [`FAST_RECOVERY_S`] → +1, cured more slowly (or with
//! no time given) → +0.5, not cured → −1; minus the action's [`cost`] (rollback 0.2,
//! scale_down 0.1, restart and scale_up 0.05, doing nothing 0, any other 0.1). A refused
//! proposal did nothing: it earns [`REFUSED`].

use bus_schema::Action;

/// A cure within this many seconds earns the full reward.
pub const FAST_RECOVERY_S: f64 = 60.0;

/// What a refused proposal earns: nothing was done, nothing cured, nothing cost.
pub const REFUSED: f64 = 0.0;

/// How disruptive an action is, subtracted from its reward.
pub fn cost(action: &Action) -> f64 {
    match action {
        Action::Noop | Action::Observe => 0.0,
        Action::Restart | Action::ScaleUp => 0.05,
        Action::ScaleDown => 0.1,
        Action::Rollback => 0.2,
        _ => 0.1,
    }
}

/// The reward of an outcome.
pub fn reward(action: &Action, recovered: bool, time_to_recover_s: Option<f64>) -> f64 {
    let base = match (recovered, time_to_recover_s) {
        (false, _) => -1.0,
        (true, Some(t)) if t <= FAST_RECOVERY_S => 1.0,
        (true, _) => 0.5,
    };
    base - cost(action)
}
