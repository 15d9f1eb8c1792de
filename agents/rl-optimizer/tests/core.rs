//! The optimizer's core, without a bus: each incident worked as an episode, day-one choices,
//! the shield, exploration, and learning that credits each action with its own outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;

use std::time::Duration;

use bus_schema::{
    Action, ActionProposal, Incident, IncidentKind, IncidentStatus, ReasonCode, Timestamp,
};
use common::{deploys, incident, incident_of, outcome, refusal};
use policy::Policy;
use rl_optimizer::core::{Core, Effect};
use rl_optimizer::prior::prior;
use rl_optimizer::settings::{Mode, Settings};
use rl_optimizer::values::Values;

fn core_with(settings: Settings) -> Core {
    let values = Values::new(settings.alpha);
    Core::new(settings, values, rl_optimizer::NAME)
}

fn core(mode: Mode) -> Core {
    core_with(Settings { mode, ..Settings::defaults() })
}

/// A core that knows the service from two deploys.
fn known(mode: Mode, env: &str, service: &str) -> Core {
    let mut c = core(mode);
    for d in deploys(env, service) {
        c.on_deploy(&d);
    }
    c
}

fn proposals(effects: Vec<Effect>) -> Vec<ActionProposal> {
    effects.into_iter().filter_map(Effect::into_proposal).collect()
}

fn one(effects: Vec<Effect>) -> ActionProposal {
    let mut p = proposals(effects);
    assert_eq!(p.len(), 1, "{p:#?}");
    p.remove(0)
}

fn now() -> Timestamp {
    Timestamp::now()
}

#[test]
fn day_one_choices_are_the_prior_with_enough_confidence_and_without_exploring() {
    for env in ["dev", "stage", "prod"] {
        let threshold = Policy::default().for_env(env).min_confidence.unwrap_or(0.0);
        for kind in IncidentKind::ALL {
            for deploy in [false, true] {
                let mut c = known(Mode::Learning, env, "payments-api");
                let i = incident(1, env, *kind, deploy);
                let p = one(c.on_incident(&i, "corr", now()));
                let (first, _) = prior(*kind);
                // A symptom whose first choice is to do nothing gets a rollback where a deploy
                // is implicated and the environment's threshold lets it through (dev).
                let expected = if first == Action::Noop && deploy && env == "dev" {
                    Action::Rollback
                } else {
                    first
                };
                assert_eq!(p.action, expected, "{env} {kind} deploy={deploy}: {}", p.explanation);
                assert!(
                    p.action == Action::Noop || p.confidence >= threshold,
                    "{env} {kind}: {}",
                    p.confidence
                );
                assert!(!p.exploratory && p.propensity == Some(1.0) && !p.require_human);
                assert!(
                    p.explanation.contains("candidates")
                        && p.explanation.contains(&format!("{kind}/{env}/")),
                    "{}",
                    p.explanation
                );
                bus_schema::Validate::validate(&p).unwrap();
            }
        }
    }
}

#[test]
fn nothing_the_shield_offers_lacks_a_prerequisite() {
    // A service no deploy was seen for: governance would refuse every action that changes something.
    let mut c = core(Mode::Learning);
    let p = one(c.on_incident(&incident(1, "stage", IncidentKind::CrashLoop, true), "corr", now()));
    assert_eq!(p.action, Action::Noop, "{}", p.explanation);
    assert!(p.candidates.iter().all(|c| matches!(c.action, Action::Noop)), "{:?}", p.candidates);
    // One deploy and no version before it: no rollback, even with a deploy implicated.
    let mut c = core(Mode::Learning);
    c.on_deploy(&deploys("stage", "payments-api")[0]);
    let p =
        one(c.on_incident(&incident(2, "stage", IncidentKind::DeployFailed, true), "corr", now()));
    assert!(p.candidates.iter().all(|c| c.action != Action::Rollback), "{:?}", p.candidates);
    // A rollback target, but no evidence against a deploy: no rollback either.
    let mut c = known(Mode::Learning, "stage", "payments-api");
    let p =
        one(c.on_incident(&incident(3, "stage", IncidentKind::CrashLoop, false), "corr", now()));
    assert!(p.candidates.iter().all(|c| c.action != Action::Rollback), "{:?}", p.candidates);
    // Conflicting sources: only doing nothing.
    let mut conflicted = incident(4, "stage", IncidentKind::CrashLoop, true);
    conflicted.signal_conflict = true;
    let p = one(c.on_incident(&conflicted, "corr", now()));
    assert_eq!((p.action, p.candidates.len()), (Action::Noop, 1));
}

#[test]
fn an_action_that_does_not_cure_is_followed_by_the_next_and_a_spent_budget_goes_to_a_human() {
    let mut c = known(Mode::Frozen, "stage", "payments-api");
    let i = incident(1, "stage", IncidentKind::CrashLoop, true);
    let mut p = one(c.on_incident(&i, "corr", now()));
    let mut tried = vec![p.action.clone()];
    while !p.require_human {
        p = one(c.on_outcome(&outcome(&i, p.proposal_id, &p.action, false, None), now()));
        assert!(
            !tried.contains(&p.action) || p.require_human,
            "{} failed already: {tried:?}",
            p.action
        );
        tried.push(p.action.clone());
        assert!(tried.len() <= 6, "{tried:?}");
    }
    // restart, rollback, scale_up: the budget of 3 is spent.
    assert_eq!(tried[..3], [Action::Restart, Action::Rollback, Action::ScaleUp], "{tried:?}");
    assert!(p.require_human, "{p:#?}");
    assert!(
        p.explanation.contains("budget of 3 actions")
            && p.explanation.contains("restart (not recovered)"),
        "{}",
        p.explanation
    );
    // The human has it now: a later outcome proposes nothing more.
    assert!(
        proposals(c.on_outcome(&outcome(&i, p.proposal_id, &p.action, false, None), now()))
            .is_empty()
    );
}

#[test]
fn when_nothing_is_left_a_human_is_asked_with_observe() {
    let mut c = known(Mode::Frozen, "stage", "payments-api");
    let i = incident(1, "stage", IncidentKind::HighErrorRate, false);
    let p = one(c.on_incident(&i, "corr", now()));
    assert_eq!(
        p.action,
        Action::Noop,
        "nothing is likely enough to help a bare error rate: {}",
        p.explanation
    );
    let e = one(c.on_outcome(&outcome(&i, p.proposal_id, &p.action, false, None), now()));
    assert_eq!((e.action, e.require_human), (Action::Observe, true), "{}", e.explanation);
    assert!(
        e.explanation.contains("nothing the policy allows is left")
            && e.explanation.contains("noop (not recovered)"),
        "{}",
        e.explanation
    );
}

#[test]
fn a_refusal_masks_the_action_and_the_next_is_proposed_at_once() {
    let mut c = known(Mode::Frozen, "stage", "payments-api");
    let i = incident(1, "stage", IncidentKind::CrashLoop, false);
    let p = one(c.on_incident(&i, "corr", now()));
    assert_eq!(p.action, Action::Restart);
    let next = one(c.on_refusal(
        &refusal(&i, p.proposal_id, &p.action, ReasonCode::CooldownActive, serde_json::json!({})),
        now(),
    ));
    assert_eq!(next.action, Action::ScaleUp, "{}", next.explanation);
    assert_ne!(next.proposal_id, p.proposal_id);
    // A redelivered refusal republishes the same follow-up, and decides nothing new.
    let again = one(c.on_refusal(
        &refusal(&i, p.proposal_id, &p.action, ReasonCode::CooldownActive, serde_json::json!({})),
        now(),
    ));
    assert_eq!(again, next);
    // Governance's budget refusal hands it to a human.
    let e = one(c.on_refusal(
        &refusal(
            &i,
            next.proposal_id,
            &next.action,
            ReasonCode::ActionBudgetExhausted,
            serde_json::json!({}),
        ),
        now(),
    ));
    assert!(e.require_human && e.explanation.contains("governance's budget"), "{}", e.explanation);
}

/// A crash loop restarted, and an overload on the same service whose scale-up governance holds
/// back until the restart's verdict (`verification_pending`, for ten minutes).
struct Held {
    crash: Incident,
    restart: ActionProposal,
    overload: Incident,
    scale: ActionProposal,
    until: Timestamp,
}

fn overload_held_behind_a_restart(c: &mut Core) -> Held {
    let crash = incident(1, "stage", IncidentKind::CrashLoop, false);
    let overload = incident(2, "stage", IncidentKind::Overload, false);
    let restart = one(c.on_incident(&crash, "corr", now()));
    let scale = one(c.on_incident(&overload, "corr", now()));
    let until = now().plus(Duration::from_secs(600));
    let held = refusal(
        &overload,
        scale.proposal_id,
        &scale.action,
        ReasonCode::VerificationPending,
        serde_json::json!({"until": until}),
    );
    assert!(proposals(c.on_refusal(&held, now())).is_empty(), "it waits");
    Held { crash, restart, overload, scale, until }
}

#[test]
fn an_incident_held_back_for_another_verdict_goes_on_when_that_verdict_arrives_or_the_wait_runs_out()
 {
    let mut c = known(Mode::Frozen, "stage", "payments-api");
    let Held { crash, restart, overload, until, .. } = overload_held_behind_a_restart(&mut c);
    assert!(c.due(now()).is_empty(), "not before the wait runs out");
    assert_eq!(c.due(until).len(), 1);
    // The restart's verdict arrives: the overload goes on at once, with the same action (not masked).
    let effects = c.on_outcome(
        &outcome(&crash, restart.proposal_id, &restart.action, true, Some(30.0)),
        now(),
    );
    let woken = one(effects);
    assert_eq!(
        (woken.incident_id, woken.action.clone()),
        (Some(overload.incident_id), Action::ScaleUp)
    );
    assert!(c.due(until).is_empty(), "no longer waiting");
}

#[test]
fn a_redelivered_incident_or_outcome_republishes_the_same_proposal() {
    let mut c = known(Mode::Learning, "stage", "payments-api");
    let i = incident(1, "stage", IncidentKind::CrashLoop, false);
    let p = one(c.on_incident(&i, "corr", now()));
    assert_eq!(one(c.on_incident(&i, "corr", now())), p);
    let o = outcome(&i, p.proposal_id, &p.action, false, None);
    let next = one(c.on_outcome(&o, now()));
    let updates = c.values.updates;
    assert_eq!(one(c.on_outcome(&o, now())), next);
    assert_eq!(c.values.updates, updates, "learned from once");
}

#[test]
fn a_resolved_incident_gets_no_follow_up_and_a_reopened_one_never_the_action_that_did_not_hold() {
    let mut c = known(Mode::Frozen, "stage", "payments-api");
    let mut i = incident(1, "stage", IncidentKind::CrashLoop, false);
    let p = one(c.on_incident(&i, "corr", now()));
    i.status = IncidentStatus::Resolved;
    c.on_incident(&i, "corr", now());
    assert!(
        proposals(c.on_outcome(&outcome(&i, p.proposal_id, &p.action, true, Some(20.0)), now()))
            .is_empty()
    );
    i.status = IncidentStatus::Opened;
    i.reopen_count = 1;
    let again = one(c.on_incident(&i, "corr", now()));
    assert_ne!(
        again.action,
        Action::Restart,
        "the restart's recovery did not hold: {}",
        again.explanation
    );
}

#[test]
fn exploring_only_where_the_policy_says_never_in_prod_and_every_choice_has_its_propensity() {
    let policy = Policy { explore_envs: vec!["dev".into(), "prod".into()], ..Policy::default() }; // prod is ignored all the same
    let mut c = core_with(Settings { epsilon: 0.5, policy, ..Settings::defaults() });
    for env in ["dev", "stage", "prod"] {
        for d in deploys(env, "payments-api") {
            c.on_deploy(&d);
        }
    }
    let mut seen = std::collections::BTreeMap::new();
    for n in 0..300 {
        let env = ["dev", "stage", "prod"][n % 3];
        let p = one(c.on_incident(
            &incident(n as u64, env, IncidentKind::CrashLoop, false),
            "corr",
            now(),
        ));
        let propensity = p.propensity.unwrap();
        assert!(propensity > 0.0 && propensity <= 1.0);
        if p.exploratory {
            assert!(propensity <= 0.5, "{propensity}");
        }
        *seen.entry((env, p.exploratory)).or_insert(0) += 1;
    }
    assert!(seen.get(&("dev", true)).copied().unwrap_or(0) > 10, "{seen:?}");
    assert_eq!(seen.get(&("stage", true)), None, "stage is not in explore_envs: {seen:?}");
    assert_eq!(seen.get(&("prod", true)), None, "never in prod: {seen:?}");
    // Off by default.
    let mut c = known(Mode::Learning, "dev", "payments-api");
    for n in 0..100 {
        let p =
            one(c.on_incident(&incident(n, "dev", IncidentKind::CrashLoop, false), "corr", now()));
        assert!(!p.exploratory && p.propensity == Some(1.0));
    }
}

fn fail_restarts(c: &mut Core, i: &Incident) {
    let p = one(c.on_incident(i, "corr", now()));
    assert_eq!(p.action, Action::Restart);
    c.on_outcome(&outcome(i, p.proposal_id, &p.action, false, None), now());
}

#[test]
fn one_services_failures_do_not_flip_what_other_services_try_first() {
    let mut c = known(Mode::Learning, "stage", "leaky");
    for d in deploys("stage", "fresh") {
        c.on_deploy(&d);
    }
    for n in 0..3 {
        fail_restarts(&mut c, &incident_of(n, "stage", "leaky", IncidentKind::CrashLoop, false));
    }
    let leaky =
        c.first_choice_for(&incident_of(99, "stage", "leaky", IncidentKind::CrashLoop, false));
    let fresh =
        c.first_choice_for(&incident_of(99, "stage", "fresh", IncidentKind::CrashLoop, false));
    assert_ne!(
        leaky,
        Some(Action::Restart),
        "the leaky service learned that restarting does not help it"
    );
    assert_eq!(fresh, Some(Action::Restart), "another service still starts from the prior");
}

#[test]
fn a_revised_outcome_corrects_what_was_learned_and_a_superseded_one_teaches_nothing() {
    let mut c = known(Mode::Learning, "stage", "payments-api");
    let i = incident(1, "stage", IncidentKind::CrashLoop, false);
    let p = one(c.on_incident(&i, "corr", now()));
    let before = c
        .values
        .estimate("stage/payments-api", &rl_optimizer::context::Context::of(&i), &Action::Restart)
        .value;
    c.on_outcome(&outcome(&i, p.proposal_id, &p.action, true, Some(20.0)), now());
    let mut revised = outcome(&i, p.proposal_id, &p.action, false, None);
    revised.revised = true;
    c.on_outcome(&revised, now());
    let mut failed = known(Mode::Learning, "stage", "payments-api");
    fail_restarts(&mut failed, &i);
    let ctx = rl_optimizer::context::Context::of(&i);
    let (a, b) = (
        c.values.estimate("stage/payments-api", &ctx, &Action::Restart),
        failed.values.estimate("stage/payments-api", &ctx, &Action::Restart),
    );
    assert!((a.value - b.value).abs() < 1e-9 && a.value < before, "{a:?} vs {b:?}");

    let mut c = known(Mode::Learning, "stage", "payments-api");
    let p = one(c.on_incident(&i, "corr", now()));
    let mut superseded = outcome(&i, p.proposal_id, &p.action, false, None);
    superseded.superseded_by = Some(bus_schema::Uuid::from_u128(9));
    assert!(
        proposals(c.on_outcome(&superseded, now())).is_empty(),
        "the superseding action's verdict comes first"
    );
    assert_eq!(c.values.updates, 0);
}

#[test]
fn shadow_mode_recommends_once_per_opening_and_frozen_mode_learns_nothing() {
    let mut c = known(Mode::Shadow, "stage", "payments-api");
    let i = incident(1, "stage", IncidentKind::CrashLoop, false);
    let effects = c.on_incident(&i, "corr", now());
    assert!(
        matches!(&effects[0], Effect::Propose(p) if p.status == rl_optimizer::episode::Status::Shadow)
    );
    let p = one(effects);
    assert!(
        proposals(c.on_outcome(&outcome(&i, p.proposal_id, &p.action, false, None), now()))
            .is_empty()
    );
    let mut c = known(Mode::Frozen, "stage", "payments-api");
    fail_restarts(&mut c, &i);
    assert_eq!(c.values.updates, 0);
}

#[test]
fn a_first_missing_prerequisite_is_governance_lagging_the_same_is_proposed_again_later() {
    let mut c = known(Mode::Frozen, "stage", "payments-api");
    let i = incident(1, "stage", IncidentKind::CrashLoop, false);
    let p = one(c.on_incident(&i, "corr", now()));
    let missing = |p: &ActionProposal| {
        refusal(
            &i,
            p.proposal_id,
            &p.action,
            ReasonCode::MissingPrerequisite,
            serde_json::json!({"missing": "service_known"}),
        )
    };
    assert!(proposals(c.on_refusal(&missing(&p), now())).is_empty(), "it waits");
    let due = c.due(now().plus(rl_optimizer::core::RECHECK));
    assert_eq!(due.len(), 1);
    let again = one(c.wake(due[0].0, &due[0].1, now()));
    assert_eq!((again.action.clone(), again.proposal_id != p.proposal_id), (Action::Restart, true));
    // Twice is not a lag: the next candidate.
    let next = one(c.on_refusal(&missing(&again), now()));
    assert_eq!(next.action, Action::ScaleUp);
}

/// A cooldown that ends in a moment is waited out for the best action rather than spending
/// the incident on a worse one (a crash loop that came back 54 s after the last restart was
/// given a scale_up, a noop, then a human); a long one, or a second hold-back, goes on.
#[test]
fn a_cooldown_ending_soon_is_waited_out_for_the_best_action_and_a_long_one_is_not() {
    let mut c = known(Mode::Frozen, "stage", "payments-api");
    let i = incident(1, "stage", IncidentKind::CrashLoop, false);
    let p = one(c.on_incident(&i, "corr", now()));
    assert_eq!(p.action, Action::Restart);
    let cooldown = |i: &bus_schema::Incident, p: &ActionProposal, remaining_s: f64| {
        refusal(
            i,
            p.proposal_id,
            &p.action,
            ReasonCode::CooldownActive,
            serde_json::json!({"cooldown_s": 60.0, "remaining_s": remaining_s, "backoff": 1}),
        )
    };
    assert!(proposals(c.on_refusal(&cooldown(&i, &p, 6.0), now())).is_empty(), "it waits");
    assert!(proposals(c.on_refusal(&cooldown(&i, &p, 6.0), now())).is_empty(), "redelivered");
    // Another incident's verdict on the service does not cut the wait short (the action would
    // be refused again, and masked): only the cooldown's end does.
    let overload = incident(2, "stage", IncidentKind::Overload, false);
    let scale = one(c.on_incident(&overload, "corr", now()));
    let judged =
        c.on_outcome(&outcome(&overload, scale.proposal_id, &scale.action, false, None), now());
    assert!(proposals(judged).iter().all(|p| p.incident_id == Some(overload.incident_id)));
    assert!(c.due(now().plus(Duration::from_secs(6))).is_empty(), "until the cooldown ends");
    let at = now().plus(Duration::from_secs(7));
    let due = c.due(at);
    assert_eq!(due.len(), 1);
    let mut again = one(c.wake(due[0].0, &due[0].1, at));
    assert_eq!((again.action.clone(), again.proposal_id != p.proposal_id), (Action::Restart, true));
    // The cooldown doubled meanwhile (a failed outcome): waited out again, up to MAX_HOLDS
    // times; then it is not a moment any more, and the next candidate comes at once.
    let mut at = at;
    for _ in 1..rl_optimizer::core::MAX_HOLDS {
        assert!(proposals(c.on_refusal(&cooldown(&i, &again, 20.0), at)).is_empty());
        at = at.plus(Duration::from_secs(21));
        let (id, trigger) = c.due(at).remove(0);
        again = one(c.wake(id, &trigger, at));
        assert_eq!(again.action, Action::Restart);
    }
    assert_eq!(one(c.on_refusal(&cooldown(&i, &again, 6.0), at)).action, Action::ScaleUp);
    let tried = c.memory[&i.incident_id].tried();
    assert_eq!(tried[0], "restart (held back: cooldown_active)");
    assert_eq!(tried[rl_optimizer::core::MAX_HOLDS], "restart (refused: cooldown_active)");

    let long = rl_optimizer::core::COOLDOWN_WAIT.as_secs_f64();
    for (remaining_s, why) in [(long, "longer than the wait"), (f64::NAN, "unreadable")] {
        let mut c = known(Mode::Frozen, "stage", "payments-api");
        let p = one(c.on_incident(&i, "corr", now()));
        let next = one(c.on_refusal(&cooldown(&i, &p, remaining_s), now()));
        assert_eq!(next.action, Action::ScaleUp, "{why}");
    }
}

/// A proposal whose publish failed, or whose ack the agent never saw before it stopped, is
/// listed until it is known to be stored, and waking it sends the same proposal again (the same
/// ids, which JetStream drops if the first attempt was stored after all) rather than a new one.
#[test]
fn a_proposal_not_known_to_be_stored_is_sent_again_until_it_is() {
    let mut c = known(Mode::Learning, "stage", "payments-api");
    let i = incident(1, "stage", IncidentKind::CrashLoop, false);
    let p = one(c.on_incident(&i, "corr", now()));
    assert_eq!(c.unpublished(), vec![(i.incident_id, p.proposal_id)]);
    assert_eq!(one(c.resend(i.incident_id, p.proposal_id)), p);
    assert_eq!(c.unpublished().len(), 1, "still not known to be stored");

    c.published(i.incident_id, p.proposal_id);
    assert!(c.unpublished().is_empty());
    assert!(
        proposals(c.resend(i.incident_id, p.proposal_id)).is_empty(),
        "stored: nothing to resend"
    );
    assert!(c.due(now().plus(Duration::from_secs(3600))).is_empty(), "nothing else to do");

    // A state file written before the flag existed: its proposals went out.
    let stored = &c.memory[&i.incident_id].proposals[0];
    let mut old = serde_json::to_value(stored).unwrap();
    old.as_object_mut().unwrap().remove("published").unwrap();
    let read: rl_optimizer::episode::Proposed = serde_json::from_value(old).unwrap();
    assert!(read.published);
}

/// A wait set again for a verdict the incident already went on from (a redelivered outcome)
/// is answered with the proposal it made then, and is over: it does not fall due on every tick.
#[test]
fn a_wait_that_comes_back_after_it_was_served_is_answered_once_and_ends() {
    let mut c = known(Mode::Frozen, "stage", "payments-api");
    let Held { scale, until, .. } = overload_held_behind_a_restart(&mut c);
    let (id, trigger) = c.due(until).remove(0);
    let woken = one(c.wake(id, &trigger, until));
    assert!(c.due(until).is_empty());

    let wait = rl_optimizer::episode::Waiting { held: scale.proposal_id, until, until_only: false };
    c.memory.get_mut(&id).unwrap().waiting = Some(wait);
    assert_eq!(c.due(until), vec![(id, trigger.clone())]);
    assert_eq!(one(c.wake(id, &trigger, until)), woken, "the same proposal, not a new one");
    assert!(c.due(until.plus(Duration::from_secs(3600))).is_empty(), "and the wait is over");
}

/// A verdict that changes what the service would try first owes a `policy_learned` record: if
/// that record was not stored (its write failed, so the outcome is redelivered), the
/// redelivery records it again, the same, instead of nothing; once stored, nothing more.
#[test]
fn a_redelivered_verdict_records_the_change_it_taught_until_the_record_is_stored() {
    let mut c = known(Mode::Learning, "stage", "payments-api");
    let learned_of = |effects: &[Effect]| {
        effects.iter().find_map(|e| match e {
            Effect::Learned(l) => Some(l.clone()),
            _ => None,
        })
    };
    // Restarts that never cure, until the service's first choice moves away from restarting.
    let (o, first) = (1..=20)
        .find_map(|n| {
            let i = incident(n, "stage", IncidentKind::CrashLoop, false);
            let p = one(c.on_incident(&i, "corr", now()));
            let o = outcome(&i, p.proposal_id, &p.action, false, None);
            learned_of(&c.on_outcome(&o, now())).map(|l| (o, l))
        })
        .expect("failing restarts change the first choice");
    let updates = c.values.updates;
    let again = learned_of(&c.on_outcome(&o, now())).expect("the record is owed again");
    assert_eq!(again, first);
    assert_eq!(c.values.updates, updates, "learned from once");

    c.recorded(o.incident_id, o.proposal_id.unwrap());
    assert!(learned_of(&c.on_outcome(&o, now())).is_none(), "stored: nothing owed");
}
