//! Each failure mode's signature over simulated time, and what actions do to it.

use bus_schema::{Action, ActionParams, DeployStatus, LogLevel, MetricSample, SimAction, Timestamp, Uuid};

use crate::scenario::Scenario;
use crate::world::{Event, Tick, World};

const TICK_S: u64 = 10;

fn world_with(failure: &str, start_after_s: u64, seed: u64) -> World {
    let text = format!("[[service]]\nenv = \"stage\"\nname = \"api\"\nfailure = \"{failure}\"\nstart_after_s = {start_after_s}\n");
    World::new(&Scenario::parse(&text, "test").unwrap(), seed, "2026-02-20T06:00:00Z".parse().unwrap())
}

fn metric(tick: &Tick) -> MetricSample {
    tick.events.iter().find_map(|e| if let Event::Metric(m) = e { Some(m.clone()) } else { None }).unwrap()
}

/// The next `minutes` of samples.
fn run(world: &mut World, minutes: u64) -> Vec<MetricSample> {
    (0..minutes * 60 / TICK_S).map(|_| metric(&world.step().unwrap())).collect()
}

fn act(world: &mut World, action: Action) -> Vec<Event> {
    let a = SimAction {
        proposal_id: Uuid::nil(),
        env: "stage".parse().unwrap(),
        service: "api".parse().unwrap(),
        action,
        params: ActionParams::default(),
        issued_at: Timestamp::now(),
    };
    world.act(&a).unwrap().events
}

fn deploys(events: &[Event]) -> Vec<(String, Option<String>, DeployStatus)> {
    events.iter().filter_map(|e| if let Event::Deploy(d) = e { Some((d.version.clone(), d.previous_version.clone(), d.status)) } else { None }).collect()
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
    let expected = vec![("1.0.0".to_owned(), None, DeployStatus::Succeeded), ("1.1.0".to_owned(), Some("1.0.0".to_owned()), DeployStatus::Succeeded)];
    assert_eq!(deploys(&first.events), expected);
    let samples = run(&mut w, 600);
    assert!(samples.iter().all(healthy));
    assert!(samples.windows(2).all(|p| p[1].timestamp.since(p[0].timestamp).as_secs() == TICK_S), "one sample per tick, stamped with simulated time");
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
    assert!(run(&mut w, 5).iter().all(|m| m.cpu_percent.unwrap() > 90.0 && m.error_rate.unwrap() < 0.08), "back to plain overload");
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
        let bad: Vec<usize> = samples.iter().enumerate().filter(|(_, m)| !healthy(m)).map(|(i, _)| i).collect();
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
    assert_eq!(deploys(&deploy.events), vec![("1.2.0".to_owned(), Some("1.1.0".to_owned()), DeployStatus::Succeeded)]);
    let leaking = run(&mut w, 4);
    let memory: Vec<f64> = leaking.iter().map(|m| m.memory_percent.unwrap()).collect();
    assert!(memory.windows(2).all(|p| p[1] >= p[0] - 3.0), "memory rises: {memory:?}");
    assert!(leaking.last().unwrap().crash_looping == Some(true), "OOM-killed once memory is high: {memory:?}");
    let mut w2 = w.clone();
    let oom_logs = (0..3).flat_map(|_| w2.step().unwrap().events).filter(|e| matches!(e, Event::Log(l) if l.level == LogLevel::Error && l.message.contains("Out of memory"))).count();
    assert!(oom_logs > 0);

    act(&mut w, Action::Restart);
    let after = run(&mut w, 4);
    assert!(after[0].memory_percent.unwrap() < 60.0 && after[0].crash_looping == Some(false), "a restart resets memory");
    assert!(after.iter().any(|m| m.crash_looping == Some(true)), "the leak comes back within 4 minutes");

    let events = act(&mut w, Action::Rollback);
    assert_eq!(deploys(&events), vec![("1.1.0".to_owned(), Some("1.2.0".to_owned()), DeployStatus::RolledBack)]);
    assert!(run(&mut w, 60).iter().all(healthy), "rollback cures the leak");
}

#[test]
fn a_bad_deploy_raises_errors_until_rolled_back() {
    let mut w = world_with("bad_deploy", 600, 6);
    assert!(run(&mut w, 10).iter().all(healthy));
    let tick = w.step().unwrap();
    assert_eq!(deploys(&tick.events), vec![("1.2.0".to_owned(), Some("1.1.0".to_owned()), DeployStatus::Succeeded)]);
    let bad = run(&mut w, 5);
    assert!(bad.iter().all(|m| (0.08..=0.12).contains(&m.error_rate.unwrap())));
    act(&mut w, Action::Restart);
    act(&mut w, Action::ScaleUp);
    assert!(run(&mut w, 3).iter().all(|m| m.error_rate.unwrap() >= 0.08), "the wrong actions do not cure it");
    let events = act(&mut w, Action::Rollback);
    assert_eq!(deploys(&events), vec![("1.1.0".to_owned(), Some("1.2.0".to_owned()), DeployStatus::RolledBack)]);
    assert!(run(&mut w, 30).iter().all(healthy));
    assert!(deploys(&act(&mut w, Action::Rollback)).iter().all(|d| d.0 != "1.1.0"), "a second rollback goes back to 1.2.0");
    assert!(run(&mut w, 2).iter().all(|m| m.error_rate.unwrap() >= 0.08), "…and brings the bad version back: harm");
}

#[test]
fn a_latency_regression_follows_a_deploy_and_rollback_cures_it() {
    let mut w = world_with("latency_regression", 0, 7);
    let first = w.step().unwrap();
    assert_eq!(deploys(&first.events).len(), 3);
    assert!(run(&mut w, 5).iter().all(|m| m.p95_latency_ms.unwrap() > 1000.0 && m.error_rate.unwrap() < 0.005));
    act(&mut w, Action::Restart);
    assert!(run(&mut w, 2).iter().all(|m| m.p95_latency_ms.unwrap() > 1000.0));
    act(&mut w, Action::Rollback);
    assert!(run(&mut w, 10).iter().all(healthy));
}

#[test]
fn actions_for_unknown_services_are_refused_and_the_scenario_ends_after_its_duration() {
    let s = Scenario::parse("duration_s = 60\n[[service]]\nenv = \"dev\"\nname = \"a\"\n", "t").unwrap();
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
