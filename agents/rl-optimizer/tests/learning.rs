//! Learning in a world where the prior is wrong for one failure mode.
//!
//! A tiny stochastic model of our own (not the simulator), in stage. Incidents are crash loops
//! on one service, half of them "memory leaks" that came with a deploy:
//!
//! | incident | restart | rollback | scale_up | anything else |
//! |---|---|---|---|---|
//! | leak (crash_loop, deploy) | helps briefly: not recovered | recovered: 80 % within 60 s, else slowly | not recovered | not recovered |
//! | plain crash (no deploy) | recovered: 85 % fast, else slowly | not offered | 30 % recovered slowly | not recovered |
//!
//! Governance is modelled by its confidence gate (stage: 0.6): a proposal below it is refused,
//! nothing is done (reward −1 for regret purposes), and nothing is learned. The oracle proposes
//! rollback for a leak and restart for a plain crash. Regret is the pseudo-regret: the oracle's
//! expected reward minus the chosen action's, summed over incidents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;

use bus_schema::{Action, IncidentKind, Timestamp};
use common::{incident, outcome};
use rl_optimizer::decide::{decide, learn};
use rl_optimizer::qlearn::{QTable, reward};
use rl_optimizer::settings::{Mode, Settings};
use rl_optimizer::state::SplitMix64;

const INCIDENTS: u64 = 400;
const STAGE_MIN_CONFIDENCE: f64 = 0.6;

/// The chance of recovery and of a fast one, given recovery.
fn dynamics(leak: bool, action: &Action) -> (f64, f64) {
    match (leak, action) {
        (true, Action::Rollback) => (1.0, 0.8),
        (false, Action::Restart) => (1.0, 0.85),
        (false, Action::ScaleUp) => (0.3, 0.0),
        _ => (0.0, 0.0),
    }
}

fn expected_reward(leak: bool, action: &Action) -> f64 {
    let (p, fast) = dynamics(leak, action);
    p * (fast * reward(action, true, Some(30.0)) + (1.0 - fast) * reward(action, true, Some(300.0))) + (1.0 - p) * reward(action, false, None)
}

fn oracle(leak: bool) -> Action {
    if leak { Action::Rollback } else { Action::Restart }
}

#[test]
fn a_wrong_prior_for_memory_leaks_is_unlearned_with_bounded_regret() {
    let settings = Settings { mode: Mode::Learning, ..Settings::defaults() };
    let mut table = QTable::default();
    let mut world = SplitMix64::new(2026);
    let (mut regret, mut greedy_regret, mut explored, mut refused, mut leaks) = (0.0, 0.0, 0u64, 0u64, 0u64);
    let mut switch_at = None;
    for n in 0..INCIDENTS {
        let leak = world.unit() < 0.5;
        let i = incident(n, "stage", IncidentKind::CrashLoop, leak);
        let d = decide(&settings, &table, &i, &[], &rl_optimizer::NAME, Timestamp::now()).unwrap();
        let action = d.proposal.action.clone();
        explored += u64::from(d.proposal.exploratory);
        let best = expected_reward(leak, &oracle(leak));
        let gap = if d.proposal.confidence < STAGE_MIN_CONFIDENCE {
            refused += 1;
            best - reward(&Action::Noop, false, None)
        } else {
            let (p, fast) = dynamics(leak, &action);
            let recovered = world.unit() < p;
            let ttr = recovered.then(|| if world.unit() < fast { 30.0 } else { 300.0 });
            learn(&settings, &mut table, &d.state, &d.candidates, &outcome(&i, d.proposal.proposal_id, &action, recovered, ttr));
            best - expected_reward(leak, &action)
        };
        regret += gap;
        if !d.proposal.exploratory {
            greedy_regret += gap;
        }
        if leak {
            leaks += 1;
            // The greedy choice for a leak now, with ε = 0.
            let frozen = Settings { mode: Mode::Frozen, ..settings.clone() };
            let greedy = decide(&frozen, &table, &incident(n, "stage", IncidentKind::CrashLoop, true), &[], &rl_optimizer::NAME, Timestamp::now()).unwrap();
            match (greedy.proposal.action == Action::Rollback, switch_at) {
                (true, None) => switch_at = Some(leaks),
                (false, Some(_)) => switch_at = None,
                _ => {}
            }
        }
    }
    let switch_at = switch_at.expect("the greedy choice for a leak ends on rollback");
    let plain = decide(&Settings { mode: Mode::Frozen, ..settings.clone() }, &table, &incident(0, "stage", IncidentKind::CrashLoop, false), &[], &rl_optimizer::NAME, Timestamp::now()).unwrap();
    println!("switch after {switch_at} leak incidents; regret {regret:.2} (greedy {greedy_regret:.2}); explored {explored}, refused {refused}, of {INCIDENTS}; updates {}", table.updates);
    assert_eq!(plain.proposal.action, Action::Restart, "the right prior for a plain crash is kept");

    // Switch: the prior's restart starts at 0.5 and rollback (a deploy is implicated) at 0.25.
    // A failed restart moves Q toward r + γ·max Q(s') = −1.05 + 0.5·0.5 = −0.8 by α = 0.3:
    // 0.5 → 0.11, below rollback's 0.25 after the 1st leak, and rollback's confidence
    // (prior 0.65 blended with the margin) clears stage's 0.6. Exploratory picks of a leak
    // are refused (confidence < 0.6) and teach nothing, so each can delay it by one: allow 2.
    const SWITCH_BOUND: u64 = 3;
    assert!(switch_at <= SWITCH_BOUND, "switched after {switch_at} leaks");
    // Regret: every suboptimal decision costs at most Δ = 0.875 − (−1.2) = 2.075 (the best
    // expected reward against a failed rollback). Greedy decisions are suboptimal only before
    // the switch, so greedy regret ≤ Δ·SWITCH_BOUND. Exploratory decisions (ε = 0.1 of 400:
    // 40 expected, σ ≈ 6; deterministic here) are all refused or wrong, so the total is
    // ≤ Δ·(SWITCH_BOUND + 2·ε·N) = 2.075·83 ≈ 172 — against ≈ 1.9·N = 760 for never learning.
    let delta = 0.875 + 1.2;
    assert!(greedy_regret <= delta * SWITCH_BOUND as f64, "greedy regret {greedy_regret}");
    assert!(regret <= delta * (SWITCH_BOUND as f64 + 2.0 * 0.1 * INCIDENTS as f64), "regret {regret}");
    assert!(explored <= 80, "explored {explored}");
}
