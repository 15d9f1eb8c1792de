//! The pure core: priors, the update, freeze mode, exploration limits, the shield, confidence.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;

use bus_schema::{Action, AgentName, IncidentKind, Timestamp};
use clap::Parser;
use common::{incident, outcome};
use governance_gate::policy::Policy;
use rl_optimizer::decide::{decide, learn};
use rl_optimizer::prior::prior;
use rl_optimizer::qlearn::{QTable, Valued, confidence, reward};
use rl_optimizer::settings::{Mode, Settings};
use rl_optimizer::shield::{Exploration, candidates};
use rl_optimizer::state::{SplitMix64, State};

const ME: AgentName = rl_optimizer::NAME;

fn settings(mode: Mode) -> Settings {
    Settings { mode, ..Settings::defaults() }
}

fn is_deploy_kind(kind: IncidentKind) -> bool {
    matches!(kind, IncidentKind::DeployFailed | IncidentKind::DeployRegression)
}

#[test]
fn day_one_choices_are_the_prior_with_at_least_its_confidence() {
    let s = settings(Mode::Frozen);
    for env in ["dev", "stage", "prod"] {
        let threshold = Policy::default().for_env(env).min_confidence.unwrap_or(0.0);
        for kind in IncidentKind::ALL {
            for deploy in [false, true] {
                let i = incident(1, env, *kind, deploy);
                let d = decide(&s, &QTable::default(), &i, &[], &ME, Timestamp::now()).unwrap();
                let (action, c) = prior(*kind);
                assert_eq!(d.proposal.action, action, "{env} {kind} deploy={deploy}: {}", d.proposal.explanation);
                // At least the prior's, so whatever governance passed before it passes now (the
                // prior's noop at 0.5 is below stage's and prod's 0.6 and stays so).
                assert!(d.proposal.confidence >= c, "{env} {kind}: {}", d.proposal.confidence);
                assert!(c < threshold || d.proposal.confidence >= threshold, "{env} {kind}: {}", d.proposal.confidence);
                assert!(!d.proposal.exploratory);
                assert!(d.proposal.explanation.contains(&d.state.key()) && d.proposal.explanation.contains("candidates"));
                assert_eq!(d.proposal.candidates.len(), d.candidates.len());
                bus_schema::Validate::validate(&d.proposal).unwrap();
            }
        }
    }
}

#[test]
fn the_q_update_on_known_numbers() {
    let s = settings(Mode::Learning);
    let mut table = QTable::default();
    let i = incident(1, "stage", IncidentKind::CrashLoop, false);
    let state = State::of(&i, &[]);
    let cands = candidates(&s.policy, &i);
    // restart, not recovered: r = -1 - 0.05; s' = tried {restart}, whose best is the prior 0.5.
    // target = -1.05 + 0.5 * 0.5 = -0.8; Q = 0.5 + 0.3 * (-0.8 - 0.5) = 0.11.
    let u = learn(&s, &mut table, &state, &cands, &outcome(&i, i.incident_id, &Action::Restart, false, None)).unwrap();
    assert!((u.reward + 1.05).abs() < 1e-12 && (u.target + 0.8).abs() < 1e-12, "{u:?}");
    assert!((u.new_value - 0.11).abs() < 1e-12, "{u:?}");
    assert_eq!(table.entry(&state, &Action::Restart).visits, 1);
    assert!(u.changed.is_none(), "restart (0.11) is still above everything else (0)");
    // scale_up recovered in 30 s: terminal, r = 1 - 0.05; Q = 0 + 0.3 * 0.95 = 0.285 > 0.11.
    let u = learn(&s, &mut table, &state, &cands, &outcome(&i, i.incident_id, &Action::ScaleUp, true, Some(30.0))).unwrap();
    assert!((u.new_value - 0.285).abs() < 1e-12, "{u:?}");
    let change = u.changed.expect("the preference changed");
    assert_eq!((change.old_best, change.new_best), (Action::Restart, Action::ScaleUp));
    assert_eq!(table.updates, 2);
    // The reward table.
    assert_eq!(reward(&Action::Rollback, true, Some(60.0)), 0.8);
    assert_eq!(reward(&Action::Rollback, true, Some(61.0)), 0.3);
    assert_eq!(reward(&Action::ScaleDown, true, None), 0.4);
    assert_eq!(reward(&Action::Noop, false, None), -1.0);
}

#[test]
fn frozen_decisions_repeat_and_leave_the_table_alone() {
    let learning = settings(Mode::Learning);
    let mut table = QTable::default();
    let i = incident(7, "dev", IncidentKind::CrashLoop, true);
    let state = State::of(&i, &[]);
    let cands = candidates(&learning.policy, &i);
    learn(&learning, &mut table, &state, &cands, &outcome(&i, i.incident_id, &Action::Restart, false, None)).unwrap();
    let frozen = settings(Mode::Frozen);
    let before = serde_json::to_string(&table).unwrap();
    let mut explored = 0;
    for n in 0..1_000 {
        let i = incident(n, "dev", IncidentKind::CrashLoop, true);
        let t = Timestamp::now();
        let a = decide(&frozen, &table, &i, &[], &ME, t).unwrap();
        let b = decide(&frozen, &table, &i, &[], &ME, t).unwrap();
        assert_eq!(a, b);
        explored += usize::from(a.proposal.exploratory);
        assert!(learn(&frozen, &mut table, &a.state, &a.candidates, &outcome(&i, a.proposal.proposal_id, &a.proposal.action, true, Some(5.0))).is_none());
    }
    assert_eq!(explored, 0, "frozen: ε = 0");
    assert_eq!(serde_json::to_string(&table).unwrap(), before);
}

#[test]
fn learning_decisions_are_deterministic_per_incident() {
    let s = settings(Mode::Learning);
    for n in 0..200 {
        let i = incident(n, "stage", IncidentKind::Overload, false);
        let t = Timestamp::now();
        assert_eq!(decide(&s, &QTable::default(), &i, &[], &ME, t), decide(&s, &QTable::default(), &i, &[], &ME, t));
    }
}

fn explored(s: &Settings, env: &str, n: u64) -> u64 {
    (0..n)
        .map(|k| {
            let i = incident(k, env, IncidentKind::CrashLoop, k % 2 == 0);
            u64::from(decide(s, &QTable::default(), &i, &[], &ME, Timestamp::now()).unwrap().proposal.exploratory)
        })
        .sum()
}

#[test]
fn prod_never_explores_even_when_listed_and_stage_explores_about_epsilon() {
    let reckless = Settings {
        exploration: Exploration { envs: vec!["dev".into(), "stage".into(), "prod".into()], epsilon: 1.0 },
        ..settings(Mode::Learning)
    };
    assert_eq!(explored(&reckless, "prod", 10_000), 0, "prod: no exploratory proposal in 10 000");
    let normal = settings(Mode::Learning);
    assert_eq!(explored(&normal, "prod", 10_000), 0);
    let stage = explored(&normal, "stage", 10_000);
    // ε = 0.1 of 10 000: 1 000 expected, standard deviation 30.
    assert!((880..=1_120).contains(&stage), "stage explored {stage} of 10 000");
    assert_eq!(explored(&Settings { exploration: Exploration { envs: vec!["dev".into()], epsilon: 0.1 }, ..normal }, "stage", 2_000), 0);
}

#[test]
fn the_shield_offers_only_what_governance_could_approve() {
    let custom = Policy::from_toml("[env.dev]\nautomatic = [\"built-in\", \"drop_database\", \"clear_cache\"]").unwrap();
    for policy in [Policy::default(), custom] {
        for env in ["dev", "stage", "prod", "qa"] {
            let allowed = policy.for_env(env);
            for kind in IncidentKind::ALL {
                for (deploy, conflict) in [(false, false), (true, false), (false, true), (true, true)] {
                    let mut i = incident(3, env, *kind, deploy);
                    i.signal_conflict = conflict;
                    let c = candidates(&policy, &i);
                    assert!(!c.is_empty());
                    for a in &c {
                        assert!(allowed.automatic.contains(a) || allowed.human.contains(a), "{env}: {a}");
                        assert!(!a.is_globally_blocked() && !a.is_canary(), "{env}: {a}");
                        assert!(*a != Action::Rollback || deploy || is_deploy_kind(*kind), "{env} {kind}: rollback without a deploy");
                        assert!(!conflict || matches!(a, Action::Noop | Action::Observe), "{env}: {a} despite a signal conflict");
                    }
                    let d = decide(&settings(Mode::Learning), &QTable::default(), &i, &[], &ME, Timestamp::now()).unwrap();
                    assert!(c.contains(&d.proposal.action));
                }
            }
        }
    }
}

#[test]
fn confidence_stays_in_0_1_for_any_values() {
    let mut rng = SplitMix64::new(42);
    let state = State::of(&incident(1, "stage", IncidentKind::CrashLoop, true), &[]);
    let actions = [Action::Noop, Action::Restart, Action::Rollback, Action::ScaleUp];
    for _ in 0..10_000 {
        let values: Vec<Valued> = actions
            .iter()
            .map(|a| Valued { action: a.clone(), entry: rl_optimizer::qlearn::Entry { value: rng.unit() * 4.0 - 2.0, visits: rng.next_u64() % 1_000 } })
            .collect();
        for chosen in 0..values.len() {
            let c = confidence(&state, &values, chosen);
            assert!((0.0..=1.0).contains(&c), "{c}");
        }
    }
}

#[test]
fn bad_settings_are_refused() {
    let parse = |args: &[&str]| rl_optimizer::Cli::try_parse_from([&["rl-optimizer"], args].concat()).unwrap().optimizer.settings();
    assert!(parse(&[]).is_ok());
    for (args, wanted) in [
        (&["--alpha", "0"][..], "--alpha"),
        (&["--gamma", "1"], "--gamma"),
        (&["--epsilon", "1.5"], "--epsilon"),
        (&["--explore-envs", "stage,prod"], "prod"),
        (&["--policy", "/nonexistent/policy.toml"], "cannot read policy"),
    ] {
        let err = parse(args).unwrap_err();
        assert!(err.contains(wanted), "{args:?}: {err}");
    }
    assert!(rl_optimizer::Cli::try_parse_from(["rl-optimizer", "--mode", "sometimes"]).is_err());
}
