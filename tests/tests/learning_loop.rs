//! Learning against the simulator, in process (`cn_tests::learning`): the real pure cores of
//! the simulator's world, the issue detector's engine, the optimizer's core and governance's
//! gates and ledgers, wired as the fleet wires them, on simulated time — the short version of
//! `scripts/learning-eval` (3 seeds of 12 incidents per world instead of 10 of 20).
//!
//! Every world must be learned as the evaluation demands: where the prior is wrong the worst
//! seed's greedy first choice is the cure within 10 incidents, a right prior is kept in every
//! seed, nothing is explored in prod, every proposal records its propensity, and nothing the
//! optimizer proposes is refused for a missing prerequisite, an environment that does not
//! allow it, or the block list.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use bus_schema::ReasonCode;
use cn_tests::learning::{Plan, Summary, evaluate, worlds};
use policy::Policy;

const PLAN: Plan = Plan { seeds: 3, episodes: 12, episode_s: 3600, trace: false };

fn check(names: &[&str], policy: &Policy) -> Vec<Summary> {
    let specs: Vec<_> =
        worlds().into_iter().filter(|w| names.iter().any(|n| w.name.starts_with(n))).collect();
    assert_eq!(specs.len(), names.len(), "every world named exists");
    let summaries = evaluate(&specs, &PLAN, policy, |_, _| {}).unwrap();
    println!("{}", cn_tests::learning::table(&summaries, &PLAN));
    for s in &summaries {
        let worst = s.worst_switch();
        assert!(
            worst.is_some_and(|w| w <= 10),
            "{}: the worst seed's greedy choice became the cure at {worst:?}: {:?}",
            s.name,
            s.switches
        );
        if s.right_prior {
            assert!(
                s.switches.iter().all(|x| *x == Some(1)),
                "{}: the right prior was not kept: {:?}",
                s.name,
                s.switches
            );
        }
        assert_eq!((s.exploratory_in_prod, s.without_propensity), (0, 0), "{}", s.name);
        for reason in [
            ReasonCode::MissingPrerequisite,
            ReasonCode::NotEligibleInEnv,
            ReasonCode::GloballyBlocked,
            ReasonCode::LowConfidence,
        ] {
            assert_eq!(s.refused(reason), 0, "{}: refused as {reason}: {:?}", s.name, s.refusals);
        }
        assert!(s.proposals > 0, "{}", s.name);
    }
    summaries
}

#[test]
fn a_wrong_prior_for_a_deploy_borne_failure_is_unlearned_within_ten_incidents() {
    let s = check(&["memory leak, fast", "memory leak, slow", "bad-config"], &Policy::default());
    // After the switch an episode costs what the oracle's does: one rollback.
    for w in &s {
        assert!(w.regret.iter().all(|r| *r < 8.0), "{}: regret {:?}", w.name, w.regret);
    }
}

#[test]
fn a_right_prior_is_kept_even_when_it_fails_three_times_in_ten() {
    check(
        &["crash loop, restart 70 %", "overload", "latency regression", "deploy-caused overload"],
        &Policy::default(),
    );
}

#[test]
fn where_nothing_cures_the_optimizer_learns_to_leave_it_to_a_human() {
    let s = check(&["flapping", "slowdown"], &Policy::default());
    for w in &s {
        assert!(
            w.escalations >= PLAN.seeds * PLAN.episodes,
            "{}: every incident ends with a human: {}",
            w.name,
            w.escalations
        );
    }
}

/// Several services failing at once, one of them in prod, with exploring turned on in dev and
/// stage: each learns its own cure, and prod is never explored.
#[test]
fn many_services_at_once_each_learn_their_own_cure_and_prod_is_never_explored() {
    let policy = Policy { explore_envs: vec!["dev".into(), "stage".into()], ..Policy::default() };
    check(&["mixed"], &policy);
}
