//! The rollout machine, step by step: what it proposes, records and publishes for each input.

use std::time::Duration;

use super::*;
use bus_schema::{Backend, DataLossRisk, RiskAssessment, RiskLevel, RollbackPlan, Variant};

const T0: &str = "2026-11-22T10:00:00Z";

fn at(s: u64) -> Timestamp {
    T0.parse::<Timestamp>().unwrap().plus(Duration::from_secs(s))
}

fn contract(weights: &[u8]) -> Contract {
    Contract {
        contract_id: Uuid::from_u128(42),
        deployment_id: "deploy-7".into(),
        env: "stage".parse().unwrap(),
        service: "api".parse().unwrap(),
        version: "2.0.0".into(),
        status: bus_schema::ContractStatus::Accepted,
        revision: 1,
        risk: RiskAssessment {
            score: 40.0,
            level: RiskLevel::Medium,
            confidence: 0.6,
            factors: vec![],
        },
        guardrails: Guardrails {
            max_error_rate: 0.02,
            max_p95_latency_ms: 500.0,
            max_p99_latency_ms: None,
            max_traffic_step_percent: 50,
        },
        validators: vec![],
        canary: weights
            .iter()
            .map(|&w| CanaryStage { weight_percent: w, min_duration_s: 120, min_samples: 12 })
            .collect(),
        rollback: RollbackPlan {
            possible: true,
            steps: vec![],
            estimated_s: 60,
            data_loss_risk: DataLossRisk::None,
        },
        suggestions: vec![],
        reason: None,
        updated_at: at(0),
    }
}

fn started() -> DeployEvent {
    serde_json::from_value(json!({"service": "api", "env": "stage", "version": "2.0.0", "previous_version": "1.9.0", "status": "started", "timestamp": T0, "deployment_id": "deploy-7"})).unwrap()
}

/// A rollout of 10 → 50 → 100 and what it did first.
fn rollout() -> (Rollout, Vec<Effect>) {
    Rollout::start(
        &contract(&[10, 50, 100]),
        &started(),
        Some("1.9.0".into()),
        "corr-1".into(),
        at(0),
    )
}

fn proposals(effects: &[Effect]) -> Vec<&ActionProposal> {
    effects.iter().filter_map(|e| if let Effect::Propose(p) = e { Some(p) } else { None }).collect()
}

fn proofs(effects: &[Effect]) -> Vec<(ProofKind, &str)> {
    effects
        .iter()
        .filter_map(
            |e| if let Effect::Prove(p) = e { Some((p.kind, p.reason.as_str())) } else { None },
        )
        .collect()
}

fn result(p: &ActionProposal, status: &str) -> ExecutionResult {
    serde_json::from_value(json!({
        "proposal_id": p.proposal_id, "env": "stage", "service": "api", "action": p.action, "backend": Backend::Sim,
        "status": status, "detail": "done", "started_at": T0, "finished_at": T0
    }))
    .unwrap()
}

fn refusal(p: &ActionProposal, reason: &str) -> Refusal {
    serde_json::from_value(json!({
        "proposal_id": p.proposal_id, "env": "stage", "service": "api", "action": p.action, "reason": reason, "detail": "no", "refused_at": T0
    }))
    .unwrap()
}

fn in_flight(r: &Rollout) -> ActionProposal {
    r.in_flight().cloned().expect("a proposal in flight")
}

/// One tick: a stable and a canary sample `s` seconds in; the canary's error rate × `factor`.
fn tick(r: &mut Rollout, s: u64, factor: f64) -> Vec<Effect> {
    let wobble = ((s * 7919) % 1000) as f64 / 1000.0;
    let sample = |variant: Variant, error: f64, qps: f64| -> MetricSample {
        serde_json::from_value(json!({
            "service": "api", "env": "stage", "timestamp": at(s).to_string(), "variant": variant,
            "error_rate": error, "p95_latency_ms": 150.0 + 40.0 * wobble, "qps": qps
        }))
        .unwrap()
    };
    let mut out = r.on_metric(&sample(Variant::Stable, 0.002 + 0.001 * wobble, 450.0), at(s));
    out.extend(r.on_metric(
        &sample(Variant::Canary, (0.002 + 0.001 * (1.0 - wobble)) * factor, 50.0),
        at(s),
    ));
    out
}

/// Ticks every 10 s from `from` until something is decided.
fn until_decided(r: &mut Rollout, from: u64, factor: f64) -> (u64, Vec<Effect>) {
    for i in 0..200 {
        let s = from + i * 10;
        let out = tick(r, s, factor);
        if !out.is_empty() {
            return (s, out);
        }
    }
    panic!("no decision in 200 ticks");
}

#[test]
fn a_healthy_canary_walks_its_plan_and_is_promoted() {
    let (mut r, first) = rollout();
    assert_eq!(proofs(&first), [(ProofKind::CanaryStage, "rollout_started")]);
    let shift = proposals(&first)[0].clone();
    assert_eq!(
        (shift.action.clone(), shift.params.canary_weight, shift.require_human),
        (Action::SetCanaryWeight, Some(10), false)
    );
    assert_eq!(
        (shift.proposer.as_str(), shift.incident_id, shift.confidence),
        ("deploy-agent", None, STEP_CONFIDENCE)
    );

    assert!(
        tick(&mut r, 0, 1.0).is_empty(),
        "samples before the traffic change are not the stage's"
    );
    assert!(r.on_executed(&result(&shift, "executed"), at(5)).is_empty());
    assert_eq!(r.phase, Phase::Observing);
    let (when, passed) = until_decided(&mut r, 10, 1.0);
    assert_eq!(proofs(&passed), [(ProofKind::CanaryStage, "passed")]);
    assert_eq!(when, 10 + 12 * 10, "12 samples a side over 120 s");
    let next = proposals(&passed)[0].clone();
    assert_eq!(next.params.canary_weight, Some(50));
    assert_ne!(next.proposal_id, shift.proposal_id);

    r.on_executed(&result(&next, "executed"), at(200));
    let (_, passed) = until_decided(&mut r, 300, 1.0);
    let promote = proposals(&passed)[0].clone();
    assert_eq!(promote.action, Action::Promote, "the 100 % stage is the promotion");
    let end = r.on_executed(&result(&promote, "executed"), at(600));
    assert_eq!(proofs(&end), [(ProofKind::CanaryPromoted, "promoted")]);
    let Some(Effect::Deploy(d)) = end.last() else { panic!("{end:?}") };
    assert_eq!(
        (d.status, d.version.as_str(), d.previous_version.as_deref(), d.deployment_id.as_deref()),
        (DeployStatus::Succeeded, "2.0.0", Some("1.9.0"), Some("deploy-7"))
    );
    assert_eq!(r.phase, Phase::Done { outcome: Outcome::Promoted });
}

#[test]
fn a_failing_canary_is_aborted_then_rolled_back_to_the_stable_version() {
    let (mut r, first) = rollout();
    r.on_executed(&result(proposals(&first)[0], "executed"), at(5));
    let (_, failed) = until_decided(&mut r, 10, 3.0);
    assert_eq!(proofs(&failed), [(ProofKind::CanaryStage, "failed")]);
    let Some(Effect::Prove(verdict)) = failed.first() else { panic!() };
    let detail: Value = serde_json::from_str(&verdict.detail).unwrap();
    assert_eq!(
        (detail["stage"].as_u64(), detail["samples"]["canary"].as_u64()),
        (Some(1), Some(12)),
        "{detail}"
    );
    assert!(detail["errors"]["comparison"]["p_value"].as_f64().unwrap() < judge::ALPHA, "{detail}");
    let abort = proposals(&failed)[0].clone();
    assert_eq!((abort.action.clone(), abort.confidence), (Action::AbortRollout, ABORT_CONFIDENCE));
    assert!(tick(&mut r, 2000, 3.0).is_empty(), "no more judging while aborting");

    let aborted = r.on_executed(&result(&abort, "executed"), at(300));
    assert_eq!(proofs(&aborted), [(ProofKind::CanaryAborted, "aborted")]);
    let rollback = proposals(&aborted)[0].clone();
    assert_eq!(
        (rollback.action.clone(), rollback.params.target_version.as_deref(), rollback.incident_id),
        (Action::Rollback, Some("1.9.0"), None)
    );
    let end = r.on_executed(&result(&rollback, "executed"), at(320));
    let Some(Effect::Deploy(d)) = end.last() else { panic!("{end:?}") };
    assert_eq!(
        (d.status, d.version.as_str(), d.previous_version.as_deref()),
        (DeployStatus::RolledBack, "1.9.0", Some("2.0.0"))
    );
    assert_eq!(r.phase, Phase::Done { outcome: Outcome::RolledBack });
}

#[test]
fn a_refused_or_failed_step_aborts_and_says_who_stopped_it() {
    let (mut r, first) = rollout();
    let out = r.on_refused(&refusal(proposals(&first)[0], "approval_denied"), at(1));
    assert!(
        proposals(&out)[0]
            .explanation
            .contains("a human denied set_canary_weight (approval_denied)"),
        "{out:?}"
    );
    let (mut r, first) = rollout();
    let out = r.on_executed(&result(proposals(&first)[0], "failed"), at(1));
    assert_eq!(proposals(&out)[0].action, Action::AbortRollout);
    // An abort governance will not approve leaves a loud record and a finished rollout.
    let abort = in_flight(&r);
    let out = r.on_refused(&refusal(&abort, "globally_blocked"), at(2));
    assert_eq!(proofs(&out), [(ProofKind::CanaryAborted, "abort_refused")]);
    assert_eq!(r.phase, Phase::Done { outcome: Outcome::AbortFailed });
}

#[test]
fn a_refused_rollback_still_ends_the_deploy_as_failed() {
    let (mut r, first) = rollout();
    r.on_executed(&result(proposals(&first)[0], "executed"), at(5));
    let (_, failed) = until_decided(&mut r, 10, 3.0);
    let aborted = r.on_executed(&result(proposals(&failed)[0], "executed"), at(300));
    let out = r.on_refused(&refusal(proposals(&aborted)[0], "approval_expired"), at(400));
    let Some(Effect::Deploy(d)) = out.last() else { panic!("{out:?}") };
    assert_eq!((d.status, d.version.as_str()), (DeployStatus::Failed, "2.0.0"));
    assert_eq!(r.phase, Phase::Done { outcome: Outcome::Aborted });
}

#[test]
fn an_inconclusive_stage_is_extended_once_then_a_human_decides() {
    let (mut r, first) = rollout();
    r.on_executed(&result(proposals(&first)[0], "executed"), at(5));
    // Only stable samples: the canary gets no traffic to speak of.
    let stable_only = |r: &mut Rollout, s: u64| {
        let m: MetricSample = serde_json::from_value(json!({"service": "api", "env": "stage", "timestamp": at(s).to_string(), "error_rate": 0.002, "p95_latency_ms": 150.0})).unwrap();
        r.on_metric(&m, at(s))
    };
    let decided: Vec<(u64, Vec<Effect>)> = (0..130)
        .map(|i| (i * 10, stable_only(&mut r, i * 10)))
        .filter(|(_, out)| !out.is_empty())
        .collect();
    assert_eq!(decided.len(), 2, "{decided:?}");
    assert_eq!(
        (decided[0].0, proofs(&decided[0].1)),
        (600, vec![(ProofKind::CanaryStage, "extended")]),
        "the deadline: 10 min"
    );
    assert_eq!(
        (decided[1].0, proofs(&decided[1].1)),
        (1200, vec![(ProofKind::CanaryStage, "inconclusive")]),
        "doubled once"
    );
    let ask = proposals(&decided[1].1)[0];
    assert_eq!((ask.params.canary_weight, ask.require_human), (Some(50), true));
    assert!(ask.explanation.contains("a human decides"), "{}", ask.explanation);
    assert_eq!(
        ask.proposal_id,
        derive_id(&["rollout", &r.rollout_id.to_string(), "stage-1-human"])
    );
}

#[test]
fn results_for_other_proposals_and_ended_deploys_are_handled_right() {
    let (mut r, first) = rollout();
    let mut other = proposals(&first)[0].clone();
    other.proposal_id = Uuid::from_u128(9);
    assert!(r.on_executed(&result(&other, "executed"), at(1)).is_empty());
    assert!(matches!(r.phase, Phase::Proposed { .. }));
    let mut ended = started();
    ended.status = DeployStatus::Succeeded;
    let mut another = ended.clone();
    another.deployment_id = Some("deploy-6".into());
    assert!(r.on_deploy_ended(&another).is_empty(), "the end of another deploy is not this one's");
    let mut unnamed = ended.clone();
    (unnamed.deployment_id, unnamed.version) = (None, "1.9.1".into());
    assert!(r.on_deploy_ended(&unnamed).is_empty(), "nor is another version's");
    assert_eq!(proofs(&r.on_deploy_ended(&ended)), [(ProofKind::CanaryAborted, "deploy_ended")]);
    assert!(r.on_deploy_ended(&ended).is_empty(), "once");
    let (mut r, _) = rollout();
    assert_eq!(proofs(&r.supersede("2.0.1")), [(ProofKind::CanaryAborted, "superseded")]);
}

#[test]
fn a_plan_without_stages_goes_straight_to_promotion_and_ids_are_stable() {
    let (r, first) = Rollout::start(&contract(&[]), &started(), None, "c".into(), at(0));
    assert_eq!(proposals(&first)[0].action, Action::Promote);
    let (again, _) = Rollout::start(&contract(&[]), &started(), None, "c".into(), at(0));
    assert_eq!(r.rollout_id, again.rollout_id);
    assert_eq!(in_flight(&r).proposal_id, in_flight(&again).proposal_id);
    let mut redeploy = started();
    redeploy.timestamp = at(3600);
    let (later, _) = Rollout::start(&contract(&[]), &redeploy, None, "c".into(), at(3600));
    assert_ne!(
        r.rollout_id, later.rollout_id,
        "the same version deployed again (after a rollback) is a new rollout"
    );
}

#[test]
fn a_plan_runs_rising_weights_below_100_within_bounds() {
    let mut c = contract(&[0, 10, 10, 50, 30, 100]);
    c.canary[1].min_duration_s = u32::MAX;
    c.canary[3].min_samples = 1_000_000;
    let (r, first) = Rollout::start(&c, &started(), None, "c".into(), at(0));
    let weights: Vec<(u8, u32, u32)> =
        r.stages.iter().map(|s| (s.weight_percent, s.min_duration_s, s.min_samples)).collect();
    assert_eq!(
        weights,
        [(10, MAX_STAGE_DURATION_S, 12), (50, 120, judge::MAX_STAGE_SAMPLES as u32)]
    );
    let Some(Effect::Prove(started)) = first.first() else { panic!("{first:?}") };
    let detail: Value = serde_json::from_str(&started.detail).unwrap();
    assert_eq!(
        detail["skipped_weights"],
        json!([0, 10, 30]),
        "what the rollout will not run is said: {detail}"
    );
}

#[test]
fn a_step_governance_holds_back_is_proposed_again_later() {
    let (mut r, first) = rollout();
    let step = proposals(&first)[0].clone();
    // A cooldown with 100 s left: wait for it (more than the 30 s backoff).
    let mut held = refusal(&step, "cooldown_active");
    held.detail = json!({"cooldown_s": 120, "remaining_s": 100}).to_string();
    let out = r.on_refused(&held, at(10));
    assert_eq!(proofs(&out), [(ProofKind::CanaryStage, "retry_later")]);
    assert!(proposals(&out).is_empty() && matches!(r.phase, Phase::Proposed { .. }));
    assert!(!r.retry_due(at(110)) && r.on_retry(at(110)).is_empty());
    assert!(r.retry_due(at(111)));
    let again = r.on_retry(at(111));
    let retried = proposals(&again)[0];
    assert_eq!(
        (&retried.action, retried.params.canary_weight),
        (&Action::SetCanaryWeight, Some(10))
    );
    assert_ne!(
        retried.proposal_id, step.proposal_id,
        "a new proposal: governance decided the old one"
    );
    assert!(r.on_retry(at(500)).is_empty(), "once");
    // The refusal of the old proposal is not this one's; the backoff doubles per attempt.
    assert!(r.on_refused(&held, at(112)).is_empty());
    let mut waits = Vec::new();
    let mut now = 200;
    for _ in 1..MAX_RETRIES {
        r.on_refused(&refusal(&in_flight(&r), "repetition_suppressed"), at(now));
        let retry_at = r.retry_at.expect("held back");
        waits.push(retry_at.since(at(now)).as_secs());
        now = retry_at.since(at(0)).as_secs();
        assert_eq!(proposals(&r.on_retry(at(now))).len(), 1);
    }
    assert_eq!(waits, [60, 120, 240, 300]);
    // After the last attempt, the rollout gives up: abort.
    let out = r.on_refused(&refusal(&in_flight(&r), "repetition_suppressed"), at(now + 1));
    assert_eq!(proposals(&out)[0].action, Action::AbortRollout);
    assert!(proposals(&out)[0].explanation.contains("repetition_suppressed"), "{out:?}");
    // An executed step starts counting afresh.
    let (mut r, first) = rollout();
    r.on_refused(&refusal(proposals(&first)[0], "cooldown_active"), at(1));
    r.on_retry(at(40));
    r.on_executed(&result(&in_flight(&r), "executed"), at(41));
    let (_, next) = until_decided(&mut r, 50, 1.0);
    assert_eq!((proposals(&next).len(), r.retries, r.retry_at), (1, 0, None));
}

#[test]
fn a_stage_that_hears_nothing_goes_to_a_human() {
    let (mut r, first) = rollout();
    let silence = Duration::from_secs(900);
    assert!(
        r.on_silence(at(10_000), silence).is_empty(),
        "waiting for the traffic change is not silence"
    );
    r.on_executed(&result(proposals(&first)[0], "executed"), at(5));
    tick(&mut r, 10, 1.0);
    assert!(r.on_silence(at(10 + 899), silence).is_empty());
    let out = r.on_silence(at(10 + 900), silence);
    assert_eq!(proofs(&out), [(ProofKind::CanaryStage, "silent")]);
    let ask = proposals(&out)[0];
    assert_eq!((ask.params.canary_weight, ask.require_human), (Some(50), true));
    assert!(ask.explanation.contains("heard no metric sample for 900 s"), "{}", ask.explanation);
    assert!(r.on_silence(at(20_000), silence).is_empty(), "once");
}

fn command(verb: RolloutVerb, version: Option<&str>) -> RolloutCommand {
    RolloutCommand {
        service: "api".parse().unwrap(),
        env: "stage".parse().unwrap(),
        command: verb,
        version: version.map(str::to_owned),
        operator: "oncall".into(),
        reason: "dashboards look fine".into(),
    }
}

#[test]
fn an_operator_promotes_mid_plan_through_a_promote_proposal() {
    let (mut r, first) = rollout();
    let step = proposals(&first)[0].clone();
    r.on_executed(&result(&step, "executed"), at(1));
    let c = command(RolloutVerb::Promote, Some("2.0.0"));
    assert_eq!(r.command_refusal(&c), None);
    let out = r.on_command(&c, at(30));
    assert_eq!(proofs(&out), [(ProofKind::CanaryStage, "promote_requested")]);
    let promote = proposals(&out)[0].clone();
    assert_eq!(promote.action, Action::Promote);
    assert!(promote.explanation.contains("oncall asked to promote: dashboards look fine"));
    assert!(!promote.require_human, "governance's policy decides who approves it");
    let done = r.on_executed(&result(&promote, "executed"), at(40));
    assert_eq!(proofs(&done), [(ProofKind::CanaryPromoted, "promoted")]);
    assert!(r.command_refusal(&c).unwrap().contains("has ended"));
}

#[test]
fn an_abort_waits_for_the_step_in_flight_and_then_aborts() {
    let (mut r, first) = rollout();
    let step = proposals(&first)[0].clone();
    // The 10 % step is still in flight: the abort is queued, not proposed beside it.
    let abort = command(RolloutVerb::Abort, None);
    let queued = r.on_command(&abort, at(1));
    assert_eq!(proofs(&queued), [(ProofKind::CanaryStage, "command_queued")]);
    assert!(proposals(&queued).is_empty());
    assert!(r.command_refusal(&abort).unwrap().contains("already has a command waiting"));
    let out = r.on_executed(&result(&step, "executed"), at(2));
    assert_eq!(proofs(&out), [(ProofKind::CanaryStage, "abort_requested")]);
    let proposed = proposals(&out)[0].clone();
    assert_eq!(proposed.action, Action::AbortRollout);
    assert!(proposed.explanation.contains("oncall asked to abort"));
    assert!(
        r.command_refusal(&command(RolloutVerb::Promote, None))
            .unwrap()
            .contains("already being aborted")
    );
}

#[test]
fn a_command_for_another_version_is_refused() {
    let (r, _) = rollout();
    let why = r.command_refusal(&command(RolloutVerb::Abort, Some("3.0.0"))).unwrap();
    assert!(why.contains("2.0.0") && why.contains("not of 3.0.0"), "{why}");
}
