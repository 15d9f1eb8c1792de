//! Each failure mode's signature over simulated time, and what actions do to it.

use bus_schema::{
    Action, ActionParams, DeployStatus, LogLevel, MetricSample, SimAction, Timestamp, Uuid, Variant,
};

use crate::scenario::Scenario;
use crate::service::Effect;
use crate::world::{Event, Tick, World};

const TICK_S: u64 = 10;

fn world_with(failure: &str, start_after_s: u64, seed: u64) -> World {
    world_of(&format!("failure = \"{failure}\"\nstart_after_s = {start_after_s}"), seed)
}

/// A world of one service, stage/api, whose spec has the keys `keys` besides its name.
fn world_of(keys: &str, seed: u64) -> World {
    let text = format!("[[service]]\nenv = \"stage\"\nname = \"api\"\n{keys}\n");
    World::new(
        &Scenario::parse(&text, "test").unwrap(),
        seed,
        "2026-02-20T06:00:00Z".parse().unwrap(),
    )
}

fn metric(tick: &Tick) -> MetricSample {
    tick.events
        .iter()
        .find_map(|e| if let Event::Metric(m) = e { Some(m.clone()) } else { None })
        .unwrap()
}

/// The next `minutes` of samples.
fn run(world: &mut World, minutes: u64) -> Vec<MetricSample> {
    (0..minutes * 60 / TICK_S).map(|_| metric(&world.step().unwrap())).collect()
}

fn act(world: &mut World, action: Action) -> Vec<Event> {
    act_with(world, action, ActionParams::default()).events
}

fn act_with(world: &mut World, action: Action, params: ActionParams) -> Effect {
    let a = SimAction {
        proposal_id: Uuid::nil(),
        env: "stage".parse().unwrap(),
        service: "api".parse().unwrap(),
        action,
        params,
        issued_at: Timestamp::now(),
    };
    world.act(&a).unwrap()
}

fn deploys(events: &[Event]) -> Vec<(String, Option<String>, DeployStatus)> {
    events
        .iter()
        .filter_map(|e| {
            if let Event::Deploy(d) = e {
                Some((d.version.clone(), d.previous_version.clone(), d.status))
            } else {
                None
            }
        })
        .collect()
}

fn healthy(m: &MetricSample) -> bool {
    m.error_rate.unwrap() < 0.005
        && m.p95_latency_ms.unwrap() < 210.0
        && m.cpu_percent.unwrap() < 51.0
        && m.memory_percent.unwrap() < 61.0
        && m.crash_looping == Some(false)
}

#[test]
fn the_same_seed_and_actions_give_the_same_events() {
    let trace = |seed| {
        let mut w = world_with("memory_leak", 60, seed);
        let mut out: Vec<Tick> = (0..30).map(|_| w.step().unwrap()).collect();
        act(&mut w, Action::Restart);
        out.extend((0..30).map(|_| w.step().unwrap()));
        out
    };
    assert_eq!(trace(5), trace(5));
    assert_ne!(trace(5), trace(6));
}

#[test]
fn a_healthy_service_announces_two_versions_then_reports_noise_in_normal_ranges() {
    let mut w = world_with("healthy", 0, 1);
    let first = w.step().unwrap();
    let expected = vec![
        ("1.0.0".to_owned(), None, DeployStatus::Succeeded),
        ("1.1.0".to_owned(), Some("1.0.0".to_owned()), DeployStatus::Succeeded),
    ];
    assert_eq!(deploys(&first.events), expected);
    let samples = run(&mut w, 600);
    assert!(samples.iter().all(healthy));
    assert!(
        samples.windows(2).all(|p| p[1].timestamp.since(p[0].timestamp).as_secs() == TICK_S),
        "one sample per tick, stamped with simulated time"
    );
}

#[test]
fn a_resumed_world_plays_the_scenario_again_without_announcing_versions() {
    let text = "[[service]]\nenv = \"stage\"\nname = \"api\"\nfailure = \"bad_deploy\"\nstart_after_s = 60\n";
    let scenario = Scenario::parse(text, "test").unwrap();
    let start: Timestamp = "2026-02-20T06:00:00Z".parse().unwrap();
    let mut w = World::resumed(&scenario, 2, start);
    let ticks: Vec<Tick> = (0..8).map(|_| w.step().unwrap()).collect();
    assert_eq!(metric(&ticks[0]).timestamp, start);
    let deployed: Vec<_> = ticks.iter().flat_map(|t| deploys(&t.events)).collect();
    assert_eq!(deployed, faulty_deploy(), "only the scenario's own deploy, on time");
    assert!(deploys(&ticks[6].events).len() == 1, "at 60 s");
}

#[test]
fn a_crash_loop_starts_on_time_and_only_a_restart_clears_it() {
    let mut w = world_with("crash_loop", 120, 2);
    assert!(run(&mut w, 2).iter().all(healthy));
    let looping = run(&mut w, 5);
    assert!(looping.iter().all(|m| m.crash_looping == Some(true) && m.error_rate.unwrap() > 0.2));
    assert!(looping.last().unwrap().restarts > looping.first().unwrap().restarts);
    for wrong in [Action::ScaleUp, Action::Rollback, Action::Observe] {
        act(&mut w, wrong);
        assert!(run(&mut w, 2).iter().all(|m| m.crash_looping == Some(true)));
    }
    act(&mut w, Action::Restart);
    assert!(run(&mut w, 60).iter().all(healthy));
}

#[test]
fn an_overload_is_sustained_worse_after_a_restart_and_cured_by_scale_up() {
    let mut w = world_with("cpu_overload", 0, 3);
    let hot = run(&mut w, 10);
    assert!(hot.iter().all(|m| m.cpu_percent.unwrap() > 90.0));
    act(&mut w, Action::Restart);
    let worse = run(&mut w, 1);
    assert!(worse.iter().all(|m| m.error_rate.unwrap() >= 0.08 && m.cpu_percent.unwrap() >= 99.0));
    assert!(
        run(&mut w, 5)
            .iter()
            .all(|m| m.cpu_percent.unwrap() > 90.0 && m.error_rate.unwrap() < 0.08),
        "back to plain overload"
    );
    act(&mut w, Action::ScaleDown);
    assert!(run(&mut w, 2).iter().all(|m| m.error_rate.unwrap() >= 0.08), "less capacity hurts");
    act(&mut w, Action::ScaleUp);
    assert!(run(&mut w, 30).iter().all(healthy));
}

#[test]
fn a_false_alarm_is_at_most_two_bad_samples() {
    for seed in 0..20 {
        let mut w = world_with("false_alarm", 60, seed);
        let samples = run(&mut w, 120);
        let bad: Vec<usize> =
            samples.iter().enumerate().filter(|(_, m)| !healthy(m)).map(|(i, _)| i).collect();
        assert!((1..=2).contains(&bad.len()), "seed {seed}: {bad:?}");
        assert_eq!(bad[0], 6, "the spike comes at start_after_s");
        assert!(bad.windows(2).all(|p| p[1] == p[0] + 1), "one spike, not two");
    }
}

#[test]
fn flapping_is_bad_for_a_minute_then_healthy_for_a_minute() {
    let mut w = world_with("flapping", 0, 4);
    let samples = run(&mut w, 6);
    for (i, m) in samples.iter().enumerate() {
        let bad_phase = (i as u64 * TICK_S / 60) % 2 == 0;
        assert_eq!(m.crash_looping == Some(true), bad_phase, "sample {i}");
        assert_eq!(healthy(m), !bad_phase, "sample {i}");
    }
}

#[test]
fn a_memory_leak_comes_with_a_deploy_restart_helps_briefly_and_rollback_cures() {
    let mut w = world_with("memory_leak", 60, 5);
    assert!(run(&mut w, 1).iter().all(healthy));
    let deploy = w.step().unwrap();
    assert_eq!(
        deploys(&deploy.events),
        vec![("1.2.0".to_owned(), Some("1.1.0".to_owned()), DeployStatus::Succeeded)]
    );
    let leaking = run(&mut w, 4);
    let memory: Vec<f64> = leaking.iter().map(|m| m.memory_percent.unwrap()).collect();
    assert!(memory.windows(2).all(|p| p[1] >= p[0] - 3.0), "memory rises: {memory:?}");
    assert!(
        leaking.last().unwrap().crash_looping == Some(true),
        "OOM-killed once memory is high: {memory:?}"
    );
    let mut w2 = w.clone();
    let oom_logs = (0..3).flat_map(|_| w2.step().unwrap().events).filter(|e| matches!(e, Event::Log(l) if l.level == LogLevel::Error && l.message.contains("Out of memory"))).count();
    assert!(oom_logs > 0);

    act(&mut w, Action::Restart);
    let after = run(&mut w, 4);
    assert!(
        after[0].memory_percent.unwrap() < 60.0 && after[0].crash_looping == Some(false),
        "a restart resets memory"
    );
    assert!(
        after.iter().any(|m| m.crash_looping == Some(true)),
        "the leak comes back within 4 minutes"
    );

    let events = act(&mut w, Action::Rollback);
    assert_eq!(
        deploys(&events),
        vec![("1.1.0".to_owned(), Some("1.2.0".to_owned()), DeployStatus::RolledBack)]
    );
    assert!(run(&mut w, 60).iter().all(healthy), "rollback cures the leak");
}

#[test]
fn a_bad_deploy_raises_errors_until_rolled_back() {
    let mut w = world_with("bad_deploy", 600, 6);
    assert!(run(&mut w, 10).iter().all(healthy));
    let tick = w.step().unwrap();
    assert_eq!(
        deploys(&tick.events),
        vec![("1.2.0".to_owned(), Some("1.1.0".to_owned()), DeployStatus::Succeeded)]
    );
    let bad = run(&mut w, 5);
    assert!(bad.iter().all(|m| (0.08..=0.12).contains(&m.error_rate.unwrap())));
    act(&mut w, Action::Restart);
    act(&mut w, Action::ScaleUp);
    assert!(
        run(&mut w, 3).iter().all(|m| m.error_rate.unwrap() >= 0.08),
        "the wrong actions do not cure it"
    );
    let events = act(&mut w, Action::Rollback);
    assert_eq!(
        deploys(&events),
        vec![("1.1.0".to_owned(), Some("1.2.0".to_owned()), DeployStatus::RolledBack)]
    );
    assert!(run(&mut w, 30).iter().all(healthy));
    assert!(
        deploys(&act(&mut w, Action::Rollback)).iter().all(|d| d.0 != "1.1.0"),
        "a second rollback goes back to 1.2.0"
    );
    assert!(
        run(&mut w, 2).iter().all(|m| m.error_rate.unwrap() >= 0.08),
        "…and brings the bad version back: harm"
    );
}

#[test]
fn a_latency_regression_follows_a_deploy_and_rollback_cures_it() {
    let mut w = world_with("latency_regression", 0, 7);
    let first = w.step().unwrap();
    assert_eq!(deploys(&first.events).len(), 3);
    assert!(
        run(&mut w, 5)
            .iter()
            .all(|m| m.p95_latency_ms.unwrap() > 1000.0 && m.error_rate.unwrap() < 0.005)
    );
    act(&mut w, Action::Restart);
    assert!(run(&mut w, 2).iter().all(|m| m.p95_latency_ms.unwrap() > 1000.0));
    act(&mut w, Action::Rollback);
    assert!(run(&mut w, 10).iter().all(healthy));
}

/// The deploy of 1.2.0 over 1.1.0 that brings a version-borne failure.
fn faulty_deploy() -> Vec<(String, Option<String>, DeployStatus)> {
    vec![("1.2.0".to_owned(), Some("1.1.0".to_owned()), DeployStatus::Succeeded)]
}

#[test]
fn a_bad_config_comes_with_a_deploy_crash_loops_and_only_a_rollback_cures_it() {
    let mut w = world_with("bad_config", 120, 14);
    assert!(run(&mut w, 2).iter().all(healthy));
    let tick = w.step().unwrap();
    assert_eq!((tick.at.since(w.start()).as_secs(), deploys(&tick.events)), (120, faulty_deploy()));
    let looping = run(&mut w, 5);
    assert!(looping.iter().all(|m| m.crash_looping == Some(true) && (0.25..=0.4).contains(&m.error_rate.unwrap())));
    assert!(
        looping.windows(2).all(|p| p[1].restarts.unwrap() == p[0].restarts.unwrap() + 1),
        "one more restart every tick"
    );
    let mut w2 = w.clone();
    let config_errors = (0..30)
        .flat_map(|_| w2.step().unwrap().events)
        .filter(|e| matches!(e, Event::Log(l) if l.level == LogLevel::Error && l.message.starts_with("config error: missing key")))
        .filter(|e| matches!(e, Event::Log(l) if l.message.ends_with("in 1.2.0; exiting")))
        .count();
    assert!(config_errors > 0, "the crash says why");

    let restart = act_with(&mut w, Action::Restart, ActionParams::default());
    assert_eq!(restart.summary, "restarted; the bad config in 1.2.0 crashes it again");
    assert!(run(&mut w, 2).iter().all(|m| m.crash_looping == Some(true)));
    for wrong in [Action::ScaleDown, Action::ScaleUp, Action::Observe] {
        let summary = act_with(&mut w, wrong, ActionParams::default()).summary;
        assert!(
            run(&mut w, 2).iter().all(|m| m.crash_looping == Some(true)),
            "{summary}: not cured"
        );
    }
    let events = act(&mut w, Action::Rollback);
    assert_eq!(
        deploys(&events),
        vec![("1.1.0".to_owned(), Some("1.2.0".to_owned()), DeployStatus::RolledBack)]
    );
    assert!(run(&mut w, 60).iter().all(healthy), "rollback cures the bad config");
}

#[test]
fn a_deploy_overload_looks_like_a_cpu_overload_but_only_a_rollback_cures_it() {
    let mut w = world_with("deploy_overload", 300, 15);
    let mut load = world_with("cpu_overload", 300, 15);
    assert!(run(&mut w, 5).iter().all(healthy));
    run(&mut load, 5);
    let tick = w.step().unwrap();
    assert_eq!((tick.at.since(w.start()).as_secs(), deploys(&tick.events)), (300, faulty_deploy()));
    assert_eq!(metric(&tick), metric(&load.step().unwrap()));
    let hot = run(&mut w, 10);
    assert_eq!(hot, run(&mut load, 10), "the same samples as a cpu_overload");
    assert!(hot.iter().all(|m| (92.0..=99.0).contains(&m.cpu_percent.unwrap())
        && (600.0..=900.0).contains(&m.p95_latency_ms.unwrap())));
    assert!(
        hot.iter()
            .all(|m| (0.01..=0.03).contains(&m.error_rate.unwrap())
                && m.crash_looping == Some(false))
    );

    let scaled = act_with(&mut w, Action::ScaleUp, ActionParams::default());
    assert_eq!(scaled.summary, "more replicas; 1.2.0's hot loop saturates them too");
    assert_eq!(
        act_with(&mut load, Action::ScaleUp, ActionParams::default()).summary,
        "overload cured"
    );
    assert!(run(&mut load, 5).iter().all(healthy), "scale_up still cures a cpu_overload");
    assert!(
        run(&mut w, 5).iter().all(|m| m.cpu_percent.unwrap() > 90.0),
        "…but not an overload from the version"
    );

    assert_eq!(
        act_with(&mut w, Action::Restart, ActionParams::default()).summary,
        "cold start under overload: worse for a minute"
    );
    assert!(
        run(&mut w, 1)
            .iter()
            .all(|m| m.error_rate.unwrap() >= 0.08 && m.cpu_percent.unwrap() >= 99.0)
    );
    assert!(
        run(&mut w, 5)
            .iter()
            .all(|m| m.cpu_percent.unwrap() > 90.0 && m.error_rate.unwrap() < 0.08),
        "back to plain overload"
    );
    act(&mut w, Action::ScaleDown);
    assert!(run(&mut w, 2).iter().all(|m| m.error_rate.unwrap() >= 0.08), "less capacity hurts");
    assert_eq!(
        act_with(&mut w, Action::ScaleUp, ActionParams::default()).summary,
        "capacity restored; 1.2.0's hot loop still saturates it"
    );
    assert!(
        run(&mut w, 2)
            .iter()
            .all(|m| m.cpu_percent.unwrap() > 90.0 && m.error_rate.unwrap() < 0.08)
    );

    let events = act(&mut w, Action::Rollback);
    assert_eq!(
        deploys(&events),
        vec![("1.1.0".to_owned(), Some("1.2.0".to_owned()), DeployStatus::RolledBack)]
    );
    assert!(run(&mut w, 30).iter().all(healthy), "rollback cures the overload");
}

/// Whether one restart, a minute into a crash loop, clears it.
fn a_restart_clears_the_crash_loop(keys: &str, seed: u64) -> bool {
    let mut w = world_of(&format!("failure = \"crash_loop\"\n{keys}"), seed);
    run(&mut w, 1);
    let summary = act_with(&mut w, Action::Restart, ActionParams::default()).summary;
    let after = run(&mut w, 2);
    let cleared = after.iter().all(healthy);
    assert!(
        cleared || after.iter().all(|m| m.crash_looping == Some(true)),
        "seed {seed}: cleared for good or not at all"
    );
    assert_eq!(
        summary,
        if cleared { "crash loop cleared" } else { "restarted; it crashed again" },
        "seed {seed}"
    );
    cleared
}

#[test]
fn a_restart_clears_a_crash_loop_with_the_chance_the_scenario_gives() {
    let cleared = (0..200)
        .filter(|&seed| a_restart_clears_the_crash_loop("restart_success = 0.7", seed))
        .count();
    assert!((110..=170).contains(&cleared), "{cleared} of 200 restarts cleared the crash loop");
    assert!((0..200).all(|seed| a_restart_clears_the_crash_loop("restart_success = 1.0", seed)));
    let trace = |keys: &str| {
        let mut w = world_of(&format!("failure = \"crash_loop\"\nstart_after_s = 60\n{keys}"), 16);
        let mut out: Vec<Tick> = (0..20).map(|_| w.step().unwrap()).collect();
        act(&mut w, Action::Restart);
        out.extend((0..20).map(|_| w.step().unwrap()));
        out
    };
    assert_eq!(
        trace("restart_success = 1.0"),
        trace(""),
        "a certain restart draws nothing from the seed"
    );
}

#[test]
fn a_slow_leak_gives_a_restart_more_than_five_minutes_of_relief() {
    // Simulated seconds from a restart, once OOM-killed, to the next OOM crash loop.
    let relief = |keys: &str| {
        let mut w = world_of(&format!("failure = \"memory_leak\"\n{keys}"), 17);
        assert_eq!(
            run(&mut w, 30).last().unwrap().crash_looping,
            Some(true),
            "{keys:?}: OOM-killed within 30 minutes"
        );
        act(&mut w, Action::Restart);
        let after = run(&mut w, 60);
        after.iter().position(|m| m.crash_looping == Some(true)).unwrap() as u64 * TICK_S
    };
    let fast = relief("");
    let slow = relief("leak_percent_per_min = 4");
    assert!(fast <= 300, "the default 20 %/min is back within 5 minutes: {fast} s");
    assert!(slow > 300, "4 %/min lasts longer: {slow} s");
}

#[test]
fn actions_for_unknown_services_are_refused_and_the_scenario_ends_after_its_duration() {
    let s = Scenario::parse("duration_s = 60\n[[service]]\nenv = \"dev\"\nname = \"a\"\n", "t")
        .unwrap();
    let mut w = World::new(&s, 1, "2026-02-20T06:00:00Z".parse().unwrap());
    let mut a = SimAction {
        proposal_id: Uuid::nil(),
        env: "dev".parse().unwrap(),
        service: "nope".parse().unwrap(),
        action: Action::Restart,
        params: ActionParams::default(),
        issued_at: Timestamp::now(),
    };
    assert!(w.act(&a).is_err());
    a.service = "a".parse().unwrap();
    assert!(w.act(&a).is_ok());
    assert_eq!(std::iter::from_fn(|| w.step()).count(), 7, "ticks at 0, 10, …, 60 s");
    assert!(World::empty(Timestamp::now()).step().is_none());
}

fn set_canary(world: &mut World, weight: u8) -> Effect {
    act_with(
        world,
        Action::SetCanaryWeight,
        ActionParams { canary_weight: Some(weight), ..ActionParams::default() },
    )
}

/// The next `ticks` ticks of a service running a canary: its stable and its canary samples.
fn run_canary(world: &mut World, ticks: usize) -> (Vec<MetricSample>, Vec<MetricSample>) {
    (0..ticks)
        .map(|_| {
            let tick = world.step().unwrap();
            let metrics: Vec<MetricSample> = tick
                .events
                .into_iter()
                .filter_map(|e| if let Event::Metric(m) = e { Some(m) } else { None })
                .collect();
            let [stable, canary] = <[MetricSample; 2]>::try_from(metrics).unwrap();
            assert_eq!(
                (stable.variant, canary.variant),
                (Some(Variant::Stable), Some(Variant::Canary))
            );
            (stable, canary)
        })
        .unzip()
}

fn mean(samples: &[MetricSample], value: fn(&MetricSample) -> Option<f64>) -> f64 {
    samples.iter().map(|m| value(m).unwrap()).sum::<f64>() / samples.len() as f64
}

fn error_rate(m: &MetricSample) -> Option<f64> {
    m.error_rate
}

fn p95(m: &MetricSample) -> Option<f64> {
    m.p95_latency_ms
}

#[test]
fn a_healthy_canary_at_ten_percent_reports_beside_the_stable_and_looks_like_it() {
    for seed in 0..5 {
        let mut w = world_with("healthy", 0, seed);
        w.step().unwrap();
        let effect = set_canary(&mut w, 10);
        assert_eq!((effect.summary.as_str(), effect.events.len()), ("canary at 10 %", 0));
        let (stable, canary) = run_canary(&mut w, 200);
        for (s, c) in stable.iter().zip(&canary) {
            assert_eq!(
                (c.timestamp, c.source.as_deref(), c.crash_looping, c.restarts),
                (s.timestamp, Some("simulator"), s.crash_looping, s.restarts)
            );
            assert_eq!(
                (c.cpu_percent, c.memory_percent),
                (s.cpu_percent, s.memory_percent),
                "the service's host numbers are shared"
            );
            let share = c.qps.unwrap() / (c.qps.unwrap() + s.qps.unwrap());
            assert!((share - 0.10).abs() < 1e-9, "canary share {share}");
            assert!(healthy(s) && healthy(c));
        }
        assert_ne!(
            stable.iter().map(error_rate).collect::<Vec<_>>(),
            canary.iter().map(error_rate).collect::<Vec<_>>(),
            "the canary has its own noise"
        );
        for value in [error_rate, p95] {
            let ratio = mean(&canary, value) / mean(&stable, value);
            assert!((0.8..=1.2).contains(&ratio), "seed {seed}: canary/stable {ratio}");
        }
    }
}

#[test]
fn a_worse_canary_shows_its_factors_and_leaves_the_stable_as_it_was() {
    let mut plain = world_with("healthy", 0, 8);
    let mut worse = world_of("canary_error_factor = 3.0\ncanary_latency_factor = 2.0", 8);
    for w in [&mut plain, &mut worse] {
        w.step().unwrap();
        set_canary(w, 25);
    }
    let (plain_stable, _) = run_canary(&mut plain, 200);
    let (stable, canary) = run_canary(&mut worse, 200);
    assert_eq!(stable, plain_stable, "the factors are the new version's alone");
    let errors = mean(&canary, error_rate) / mean(&stable, error_rate);
    let latency = mean(&canary, p95) / mean(&stable, p95);
    assert!((2.5..=3.5).contains(&errors), "canary errors ×{errors}");
    assert!((1.8..=2.2).contains(&latency), "canary p95 ×{latency}");
    assert!(canary.iter().all(|m| m.p99_latency_ms.unwrap() > m.p95_latency_ms.unwrap()
        && m.p95_latency_ms.unwrap() >= 240.0));
}

#[test]
fn a_slowdown_slows_every_variant_alike_and_no_action_cures_it() {
    let mut w = world_of("failure = \"slowdown\"\nstart_after_s = 600\nslowdown_factor = 3.0", 9);
    w.step().unwrap();
    set_canary(&mut w, 20);
    let (stable_before, canary_before) = run_canary(&mut w, 59);
    let (stable_after, canary_after) = run_canary(&mut w, 200);
    for (before, after) in [(&stable_before, &stable_after), (&canary_before, &canary_after)] {
        let p95_ratio = mean(after, p95) / mean(before, p95);
        let p99_ratio = mean(after, |m| m.p99_latency_ms) / mean(before, |m| m.p99_latency_ms);
        assert!(
            (2.6..=3.4).contains(&p95_ratio) && (2.6..=3.4).contains(&p99_ratio),
            "p95 ×{p95_ratio}, p99 ×{p99_ratio}"
        );
        assert!(after.iter().all(|m| m.error_rate.unwrap() < 0.005), "slower, not failing");
    }
    for action in [Action::AbortRollout, Action::Restart, Action::Rollback, Action::ScaleUp] {
        act(&mut w, action);
    }
    assert!(
        run(&mut w, 10).iter().all(|m| m.variant.is_none() && m.p95_latency_ms.unwrap() >= 360.0),
        "a slow dependency stays slow"
    );
}

#[test]
fn a_crash_loop_shows_in_both_variants() {
    let mut w = world_of("failure = \"crash_loop\"\ncanary_error_factor = 0.5", 10);
    w.step().unwrap();
    set_canary(&mut w, 50);
    let (stable, canary) = run_canary(&mut w, 30);
    for (s, c) in stable.iter().zip(&canary) {
        assert!(
            s.crash_looping == Some(true)
                && c.crash_looping == Some(true)
                && s.restarts == c.restarts
        );
        assert!(
            s.error_rate.unwrap() > 0.2 && c.error_rate.unwrap() > 0.1,
            "even a better version fails while the service crashes"
        );
        assert_eq!(s.qps, c.qps, "half the traffic each");
    }
}

#[test]
fn abort_ends_the_canary_and_promote_makes_the_new_version_stable() {
    let mut w = world_of("canary_error_factor = 3.0", 11);
    assert_eq!(
        act_with(&mut w, Action::AbortRollout, ActionParams::default()).summary,
        "no canary running: nothing to abort"
    );
    assert_eq!(
        act_with(&mut w, Action::Promote, ActionParams::default()).summary,
        "no canary running: nothing to promote"
    );
    let baseline = run(&mut w, 40);
    set_canary(&mut w, 10);
    run_canary(&mut w, 10);
    let aborted = act_with(&mut w, Action::AbortRollout, ActionParams::default());
    assert_eq!(
        (aborted.summary.as_str(), aborted.events.len()),
        ("canary traffic to 0 % (was 10 %)", 0)
    );
    let after_abort = run(&mut w, 40);
    assert!(after_abort.iter().all(|m| m.variant.is_none()), "one sample per tick again");
    assert!(
        (0.8..=1.2).contains(&(mean(&after_abort, error_rate) / mean(&baseline, error_rate))),
        "the stable kept its errors"
    );

    set_canary(&mut w, 50);
    run_canary(&mut w, 10);
    let promoted = act_with(&mut w, Action::Promote, ActionParams::default());
    assert_eq!(
        (promoted.summary.as_str(), promoted.events.len()),
        ("canary promoted: the new version takes all traffic (was at 50 %)", 0)
    );
    let after_promote = run(&mut w, 200);
    assert!(after_promote.iter().all(|m| m.variant.is_none()));
    let errors = mean(&after_promote, error_rate) / mean(&baseline, error_rate);
    assert!((2.5..=3.5).contains(&errors), "the promoted version has its errors: ×{errors}");
    let qps = mean(&after_promote, |m| m.qps) / mean(&baseline, |m| m.qps);
    assert!((0.95..=1.05).contains(&qps), "all the traffic on one sample: ×{qps}");
}

#[test]
fn a_canary_weight_outside_one_to_ninety_nine_changes_nothing() {
    let mut w = world_with("healthy", 0, 12);
    w.step().unwrap();
    let missing = act_with(&mut w, Action::SetCanaryWeight, ActionParams::default());
    assert_eq!(missing.summary, "no params.canary_weight given; nothing changes");
    for weight in [0, 100, 200] {
        let effect = set_canary(&mut w, weight);
        assert!(
            effect.summary.contains(&format!("{weight} % is not in 1..=99"))
                && effect.summary.ends_with("nothing changes"),
            "{}",
            effect.summary
        );
        assert!(effect.events.is_empty());
    }
    assert!(run(&mut w, 2).iter().all(|m| m.variant.is_none()));
    set_canary(&mut w, 30);
    set_canary(&mut w, 100);
    let (stable, canary) = run_canary(&mut w, 1);
    let share = canary[0].qps.unwrap() / (canary[0].qps.unwrap() + stable[0].qps.unwrap());
    assert!(
        (share - 0.30).abs() < 1e-9,
        "a refused weight leaves a running canary where it was: {share}"
    );
}

#[test]
fn without_a_canary_the_world_is_what_it_was() {
    for failure in ["healthy", "bad_deploy", "memory_leak"] {
        let trace = |keys: &str, canary_actions: bool| {
            let mut w =
                world_of(&format!("failure = \"{failure}\"\nstart_after_s = 60\n{keys}"), 13);
            let mut out: Vec<Tick> = (0..20).map(|_| w.step().unwrap()).collect();
            if canary_actions {
                for action in [Action::AbortRollout, Action::Promote, Action::SetCanaryWeight] {
                    assert!(act_with(&mut w, action, ActionParams::default()).events.is_empty());
                }
                set_canary(&mut w, 0);
            }
            act(&mut w, Action::Rollback);
            out.extend((0..20).map(|_| w.step().unwrap()));
            out
        };
        let plain = trace("", false);
        assert_eq!(
            trace("canary_error_factor = 5.0\ncanary_latency_factor = 0.5", true),
            plain,
            "{failure}"
        );
        assert!(
            plain
                .iter()
                .flat_map(|t| &t.events)
                .all(|e| !matches!(e, Event::Metric(m) if m.variant.is_some()))
        );
    }
}
