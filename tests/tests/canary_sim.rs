//! Canary rollouts against the simulator, in process and on simulated time: the simulator's
//! world serves a stable and a canary version, the deploy agent's rollout machine judges them,
//! governance's own gates decide every step, and approved steps act on the world as the
//! executor's `sim` backend would. Each test is one user story with the negotiator's high-risk
//! plan (5 → 25 → 50 → 75 % → promote, 5 min and 30 samples a stage).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use bus_schema::proof::ProofKind;
use bus_schema::{
    Action, Contract, ContractStatus, DataLossRisk, DeployEvent, DeployStatus, Guardrails, Refusal,
    RiskAssessment, RiskLevel, RollbackPlan, Uuid,
};
use deploy_agent::rollout::{Effect, Outcome, Phase, Rollout};
use governance_gate::gates::{self, Mode, Verdict, View};
use governance_gate::ledger::ServiceLedger;
use policy::Policy;
use serde_json::Value;
use simulator::scenario::Scenario;
use simulator::world::{Event, World};

const START: &str = "2026-11-22T08:00:00Z";

/// What happened in one rollout.
#[derive(Debug, Default)]
struct Story {
    /// (proof reason, detail) of every record, in order.
    records: Vec<(ProofKind, String, Value)>,
    /// Actions the world carried out, with their canary weight.
    executed: Vec<(Action, Option<u8>)>,
    /// Deploy events the deploy agent published.
    deploys: Vec<DeployEvent>,
    outcome: Option<Outcome>,
}

impl Story {
    fn verdicts(&self) -> Vec<(u64, String)> {
        self.records
            .iter()
            .filter(|(k, r, _)| *k == ProofKind::CanaryStage && r != "rollout_started")
            .map(|(_, r, d)| (d["stage"].as_u64().unwrap(), r.clone()))
            .collect()
    }

    fn first_failure(&self) -> &Value {
        &self.records.iter().find(|(_, r, _)| r == "failed").expect("a failed stage").2
    }
}

fn contract() -> Contract {
    Contract {
        contract_id: Uuid::from_u128(8),
        deployment_id: "deploy-canary".into(),
        env: "stage".parse().unwrap(),
        service: "api".parse().unwrap(),
        version: "2.0.0".into(),
        status: ContractStatus::Accepted,
        revision: 1,
        risk: RiskAssessment {
            score: 60.0,
            level: RiskLevel::High,
            confidence: 0.7,
            factors: vec![],
        },
        guardrails: Guardrails {
            max_error_rate: 0.01,
            max_p95_latency_ms: 500.0,
            max_p99_latency_ms: None,
            max_traffic_step_percent: 25,
        },
        validators: vec![],
        canary: risk_model::draft::canary_plan(RiskLevel::High),
        rollback: RollbackPlan {
            possible: true,
            steps: vec![],
            estimated_s: 60,
            data_loss_risk: DataLossRisk::None,
        },
        suggestions: vec![],
        reason: None,
        updated_at: START.parse().unwrap(),
    }
}

/// Runs a rollout of 2.0.0 on stage/api, whose behaviour `service_toml` sets, to its end.
fn run(service_toml: &str) -> Story {
    run_seeded(11, service_toml)
}

/// [`run`] in the world the seed makes.
fn run_seeded(seed: u64, service_toml: &str) -> Story {
    let scenario = Scenario::parse(&format!("seed = {seed}\ntick_s = 10\n[[service]]\nenv = \"stage\"\nname = \"api\"\n{service_toml}\n"), "canary test").unwrap();
    let mut world = World::new(&scenario, scenario.seed, START.parse().unwrap());
    let policy = Policy::default();
    let mut ledger = ServiceLedger::default();
    let mut story = Story::default();

    // The world announces 1.0.0 and 1.1.0; then the pipeline starts 2.0.0 under the contract.
    let first = world.step().unwrap();
    for e in &first.events {
        if let Event::Deploy(d) = e {
            ledger.on_deploy(d);
        }
    }
    let started: DeployEvent = serde_json::from_value(serde_json::json!({
        "service": "api", "env": "stage", "version": "2.0.0", "previous_version": "1.1.0", "status": "started",
        "timestamp": first.at.to_string(), "deployment_id": "deploy-canary"
    }))
    .unwrap();
    ledger.on_deploy(&started);
    let (mut rollout, effects) =
        Rollout::start(&contract(), &started, Some("1.1.0".into()), "corr".into(), first.at);
    let mut pending = effects;
    for _ in 0..2000 {
        while !pending.is_empty() {
            let effects = std::mem::take(&mut pending);
            for effect in effects {
                pending.extend(apply(
                    effect,
                    &mut rollout,
                    &mut world,
                    &mut ledger,
                    &policy,
                    &mut story,
                ));
            }
        }
        if let Phase::Done { outcome } = rollout.phase {
            story.outcome = Some(outcome);
            return story;
        }
        let tick = world.step().unwrap();
        for e in &tick.events {
            if let Event::Metric(m) = e {
                pending.extend(rollout.on_metric(m, tick.at));
            }
        }
    }
    panic!("the rollout did not end in 2000 ticks: {story:?}");
}

/// One effect of the rollout, as the fleet would carry it out.
fn apply(
    effect: Effect,
    rollout: &mut Rollout,
    world: &mut World,
    ledger: &mut ServiceLedger,
    policy: &Policy,
    story: &mut Story,
) -> Vec<Effect> {
    match effect {
        Effect::Prove(p) => {
            story.records.push((p.kind, p.reason, serde_json::from_str(&p.detail).unwrap()));
            Vec::new()
        }
        Effect::Deploy(d) => {
            ledger.on_deploy(&d);
            story.deploys.push(d);
            Vec::new()
        }
        Effect::Propose(p) => {
            let now = world.now();
            match gates::decide(
                policy,
                View { service: Some(ledger), incident: None },
                &p,
                now,
                Mode::Proposal,
            ) {
                Verdict::Approve => {
                    ledger.record_approval(&p.action, now, policy);
                    let (result, _) = cn_tests::learning::execute(world, &p);
                    story.executed.push((p.action.clone(), p.params.canary_weight));
                    rollout.on_executed(&result, now)
                }
                Verdict::Refuse { reason, detail } => {
                    let refusal = Refusal {
                        proposal_id: p.proposal_id,
                        incident_id: None,
                        env: p.env,
                        service: p.service,
                        action: p.action,
                        reason,
                        detail: detail.to_string(),
                        refused_at: now,
                    };
                    rollout.on_refused(&refusal, now)
                }
                Verdict::NeedsHuman { why } => panic!("stage needs no human here: {why}"),
            }
        }
    }
}

fn weights(story: &Story) -> Vec<(Action, Option<u8>)> {
    story.executed.clone()
}

#[test]
fn a_healthy_canary_is_promoted_through_every_stage() {
    let story = run("");
    assert_eq!(story.outcome, Some(Outcome::Promoted), "{story:?}");
    assert_eq!(
        story.verdicts(),
        [(1, "passed".into()), (2, "passed".into()), (3, "passed".into()), (4, "passed".into())]
    );
    let expected: Vec<(Action, Option<u8>)> = [5, 25, 50, 75]
        .iter()
        .map(|w| (Action::SetCanaryWeight, Some(*w)))
        .chain([(Action::Promote, None)])
        .collect();
    assert_eq!(weights(&story), expected);
    assert!(story.records.iter().any(|(k, _, _)| *k == ProofKind::CanaryPromoted));
    assert_eq!(
        story.deploys.iter().map(|d| (d.status, d.version.as_str())).collect::<Vec<_>>(),
        [(DeployStatus::Succeeded, "2.0.0")]
    );
    for (_, reason, detail) in story.records.iter().filter(|(_, r, _)| r == "passed") {
        assert!(
            detail["elapsed_s"].as_f64().unwrap() >= 300.0,
            "{reason}: every stage runs its 5 minutes: {detail}"
        );
        assert!(detail["samples"]["canary"].as_u64().unwrap() >= 30, "{detail}");
    }
}

#[test]
fn a_canary_with_three_times_the_errors_aborts_at_the_first_stage_with_enough_samples_and_is_rolled_back()
 {
    let story = run("canary_error_factor = 3.0");
    assert_eq!(story.outcome, Some(Outcome::RolledBack), "{story:?}");
    assert_eq!(story.verdicts(), [(1, "failed".into())]);
    let failed = story.first_failure();
    assert_eq!(
        failed["samples"]["canary"].as_u64(),
        Some(30),
        "judged as soon as the stage had its 30 samples: {failed}"
    );
    assert_eq!(failed["errors"]["comparison"]["test"], "two_proportions", "{failed}");
    let (canary, stable) = (
        failed["errors"]["canary_mean_error_rate"].as_f64().unwrap(),
        failed["errors"]["stable_mean_error_rate"].as_f64().unwrap(),
    );
    assert!(
        canary > 2.0 * stable && canary < 0.01,
        "caught by comparison, under the 1 % guardrail: {canary} vs {stable}"
    );
    assert_eq!(
        weights(&story),
        [
            (Action::SetCanaryWeight, Some(5)),
            (Action::AbortRollout, None),
            (Action::Rollback, None)
        ]
    );
    assert!(story.records.iter().any(|(k, r, _)| *k == ProofKind::CanaryAborted && r == "aborted"));
    assert_eq!(
        story.deploys.iter().map(|d| (d.status, d.version.as_str())).collect::<Vec<_>>(),
        [(DeployStatus::RolledBack, "1.1.0")]
    );
}

#[test]
fn over_fifty_worlds_no_healthy_canary_is_aborted_and_every_erring_one_is() {
    let mut failed_at = std::collections::BTreeMap::new();
    for seed in 1..=50 {
        let healthy = run_seeded(seed, "");
        assert_eq!(
            healthy.outcome,
            Some(Outcome::Promoted),
            "seed {seed}, a false abort: {:?}",
            healthy.records
        );
        let erring = run_seeded(seed, "canary_error_factor = 3.0");
        assert_eq!(
            erring.outcome,
            Some(Outcome::RolledBack),
            "seed {seed}: {:?}",
            erring.verdicts()
        );
        let verdicts = erring.verdicts();
        let (stage, last) = verdicts.last().unwrap().clone();
        assert_eq!(last, "failed", "seed {seed}: {verdicts:?}");
        *failed_at.entry(stage).or_insert(0) += 1;
    }
    // 3x the errors at 5 % of the traffic is usually caught in stage 1; at 25 % always by stage 2.
    assert!(
        failed_at.keys().all(|stage| *stage <= 2) && failed_at.get(&1).copied().unwrap_or(0) >= 40,
        "{failed_at:?}"
    );
    eprintln!("3x errors failed at stage (stage: worlds): {failed_at:?}");
}

#[test]
fn a_latency_regression_only_in_the_canary_is_caught_below_the_guardrail() {
    let story = run("canary_latency_factor = 2.0");
    assert_eq!(story.outcome, Some(Outcome::RolledBack), "{story:?}");
    assert_eq!(story.verdicts(), [(1, "failed".into())]);
    let failed = story.first_failure();
    assert!(failed["reasons"][0].as_str().unwrap().contains("slower"), "{failed}");
    assert!(
        failed["latency"]["canary_median_p95_ms"].as_f64().unwrap() < 500.0,
        "below the 500 ms guardrail: {failed}"
    );
    assert_eq!(failed["latency"]["comparison"]["test"], "mann_whitney_u");
}

#[test]
fn a_slowdown_shared_by_stable_and_canary_does_not_abort() {
    // The dependency slows down in the middle of stage 2 and stays slow.
    let story = run("failure = \"slowdown\"\nstart_after_s = 450\nslowdown_factor = 2.0");
    assert_eq!(story.outcome, Some(Outcome::Promoted), "{story:?}");
    assert!(story.verdicts().iter().all(|(_, v)| v == "passed"), "{:?}", story.verdicts());
    let stage3 =
        &story.records.iter().find(|(_, r, d)| r == "passed" && d["stage"] == 3).unwrap().2;
    let stable_p95 = stage3["latency"]["stable_median_p95_ms"].as_f64().unwrap();
    assert!(stable_p95 > 240.0, "the slowdown shows in both versions: {stage3}");
}
