//! Every gate and reason code, with its boundaries, as a sequence of decisions against one
//! service's ledger (approvals are recorded as the shell records them).

use super::*;
use bus_schema::{DeployEvent, Outcome, Uuid};

const T0: &str = "2026-11-22T10:00:00Z";

fn at(s: f64) -> Timestamp {
    let t0: Timestamp = T0.parse().unwrap();
    t0.plus(Duration::from_secs_f64(s))
}

fn proposal(env: &str, action: &str, confidence: f64, proposed_s: f64) -> ActionProposal {
    ActionProposal {
        proposal_id: Uuid::from_u128(7),
        incident_id: Some(Uuid::from_u128(1)),
        env: env.parse().unwrap(),
        service: "api".parse().unwrap(),
        action: action.parse().unwrap(),
        params: if action == "set_canary_weight" {
            bus_schema::ActionParams { canary_weight: Some(10), ..Default::default() }
        } else {
            Default::default()
        },
        confidence,
        proposer: "rl-optimizer".parse().unwrap(),
        explanation: String::new(),
        candidates: vec![],
        exploratory: false,
        require_human: false,
        proposed_at: at(proposed_s),
        propensity: None,
    }
}

/// One service, its deploys, one incident, and the policy.
struct World {
    policy: Policy,
    service: ServiceLedger,
    incident: IncidentLedger,
}

impl World {
    fn new(env: &str, versions: &[(&str, &str)]) -> Self {
        let mut service = ServiceLedger::default();
        for (v, status) in versions {
            let d: DeployEvent = serde_json::from_value(json!({"service": "api", "env": env, "version": v, "status": status, "timestamp": T0})).unwrap();
            service.on_deploy(&d);
        }
        Self { policy: Policy::default(), service, incident: IncidentLedger::default() }
    }

    /// Decides at `s` seconds; records the approval like the shell does.
    fn decide(&mut self, env: &str, action: &str, confidence: f64, s: f64) -> Verdict {
        self.decide_as(&proposal(env, action, confidence, s), s, Mode::Proposal)
    }

    fn decide_as(&mut self, p: &ActionProposal, s: f64, mode: Mode) -> Verdict {
        let verdict = decide(
            &self.policy,
            View { service: Some(&self.service), incident: Some(&self.incident) },
            p,
            at(s),
            mode,
        );
        if verdict == Verdict::Approve && !changes_nothing(&p.action) {
            self.service.on_approved(p, at(s), &self.policy);
            self.incident.approved_actions += 1;
        }
        verdict
    }

    /// The verdict on the last approved remediation arrives.
    fn judged(&mut self) {
        if let Some(v) = self.service.verifying.clone() {
            self.outcome_of(v.action.as_str(), false, v.proposal_id);
        }
    }

    fn outcome(&mut self, action: &str, recovered: bool) {
        self.outcome_of(action, recovered, Uuid::new_v4());
    }

    fn outcome_of(&mut self, action: &str, recovered: bool, proposal: Uuid) {
        let o: Outcome = serde_json::from_value(json!({"incident_id": Uuid::from_u128(1), "proposal_id": proposal, "env": "stage", "service": "api", "action": action, "recovered": recovered, "judged_at": T0})).unwrap();
        self.service.on_outcome(&o, &self.policy);
    }
}

fn code(v: &Verdict) -> &str {
    match v {
        Verdict::Approve => "approved",
        Verdict::NeedsHuman { .. } => "approval_required",
        Verdict::Refuse { reason, .. } => reason.as_str(),
    }
}

#[test]
fn every_gate_in_order_with_its_reason_code() {
    // (env, deploys, action, confidence, proposed at, decided at, expected)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, f64, f64, f64, &'a str);
    let one: &[(&str, &str)] = &[("1.0", "succeeded")];
    let two: &[(&str, &str)] = &[("1.0", "succeeded"), ("1.1", "succeeded")];
    let rolling: &[(&str, &str)] = &[("1.0", "succeeded"), ("1.1", "started")];
    let cases: &[Case<'_>] = &[
        ("stage", one, "restart", 0.8, 0.0, 0.0, "approved"),
        ("stage", one, "restart", 0.8, 0.0, 300.0, "approved"),
        ("stage", one, "restart", 0.8, 0.0, 300.001, "invalid_proposal"),
        ("stage", one, "restart", 0.8, 61.0, 0.0, "invalid_proposal"),
        ("stage", one, "drop_database", 1.0, 0.0, 0.0, "globally_blocked"),
        ("qa", one, "restart", 0.9, 0.0, 0.0, "not_eligible_in_env"),
        ("qa", &[], "observe", 0.1, 0.0, 0.0, "approved"),
        ("qa", &[], "noop", 0.0, 0.0, 0.0, "approved"),
        ("prod", one, "delete_backups", 1.0, 0.0, 0.0, "globally_blocked"),
        ("stage", &[], "restart", 0.9, 0.0, 0.0, "missing_prerequisite"),
        ("stage", one, "rollback", 0.9, 0.0, 0.0, "missing_prerequisite"),
        ("stage", two, "rollback", 0.9, 0.0, 0.0, "approved"),
        ("stage", one, "set_canary_weight", 0.9, 0.0, 0.0, "missing_prerequisite"),
        ("stage", rolling, "set_canary_weight", 0.9, 0.0, 0.0, "approved"),
        ("stage", one, "restart", 0.6, 0.0, 0.0, "approved"),
        ("stage", one, "restart", 0.5999, 0.0, 0.0, "low_confidence"),
        ("dev", one, "restart", 0.5, 0.0, 0.0, "approved"),
        ("prod", two, "rollback", 0.9, 0.0, 0.0, "approval_required"),
        ("prod", one, "clear_cache", 0.9, 0.0, 0.0, "approval_required"),
        ("stage", one, "clear_cache", 0.9, 0.0, 0.0, "not_eligible_in_env"),
    ];
    for (env, deploys, action, confidence, proposed, decided, expected) in cases {
        let mut w = World::new(env, deploys);
        let v =
            w.decide_as(&proposal(env, action, *confidence, *proposed), *decided, Mode::Proposal);
        assert_eq!(
            code(&v),
            *expected,
            "{env} {action} conf {confidence} proposed {proposed} decided {decided}: {v:?}"
        );
    }
}

#[test]
fn unknown_sources_are_refused() {
    let mut w = World::new("dev", &[("1", "succeeded")]);
    let mut p = proposal("dev", "restart", 0.9, 0.0);
    p.proposer = "someone".parse().unwrap();
    assert_eq!(code(&w.decide_as(&p, 0.0, Mode::Proposal)), "unknown_source");
}

#[test]
fn block_listed_names_are_refused_even_when_a_policy_file_allows_them() {
    let mut w = World::new("dev", &[("1", "succeeded")]);
    w.policy = Policy::from_toml(
        "[env.dev]\nautomatic = [\"built-in\", \"drop_database\", \"execute_shell_commands\"]",
    )
    .unwrap();
    for env in ["dev", "stage", "prod", "qa"] {
        assert_eq!(code(&w.decide(env, "drop_database", 1.0, 0.0)), "globally_blocked", "{env}");
        assert_eq!(
            code(&w.decide(env, "execute_shell_commands", 1.0, 0.0)),
            "globally_blocked",
            "{env}"
        );
    }
}

#[test]
fn the_cooldown_holds_until_exactly_its_length_and_refusals_do_not_extend_it() {
    let mut w = World::new("stage", &[("1", "succeeded")]);
    assert_eq!(code(&w.decide("stage", "restart", 0.8, 0.0)), "approved");
    assert_eq!(code(&w.decide("stage", "restart", 0.8, 30.0)), "cooldown_active");
    assert_eq!(code(&w.decide("stage", "restart", 0.8, 59.9)), "cooldown_active");
    assert_eq!(
        code(&w.decide("stage", "restart", 0.8, 60.0)),
        "approved",
        "the refusals at 30 s and 59.9 s did not extend it"
    );
    assert_eq!(
        code(&w.decide("stage", "scale_up", 0.8, 60.0)),
        "approved",
        "each action has its own cooldown"
    );
}

#[test]
fn the_fourth_identical_action_within_the_window_is_suppressed() {
    // Each decision for its own incident, so the per-incident budget does not interfere.
    let mut w = World::new("stage", &[("1", "succeeded")]);
    let mut out = Vec::new();
    for s in [0.0, 60.0, 120.0, 180.0, 299.9, 300.0] {
        w.incident = IncidentLedger::default();
        out.push(code(&w.decide("stage", "restart", 0.8, s)).to_owned());
    }
    assert_eq!(
        out,
        [
            "approved",
            "approved",
            "approved",
            "repetition_suppressed",
            "repetition_suppressed",
            "approved"
        ],
        "the first leaves the window at 300 s"
    );
}

#[test]
fn an_incident_gets_at_most_three_actions() {
    let mut w = World::new("stage", &[("1", "succeeded"), ("2", "succeeded")]);
    let out: Vec<String> = ["restart", "scale_up", "rollback", "scale_down"]
        .iter()
        .map(|a| code(&w.decide("stage", a, 0.9, 0.0)).to_owned())
        .collect();
    assert_eq!(out, ["approved", "approved", "approved", "action_budget_exhausted"]);
    assert_eq!(
        code(&w.decide("stage", "observe", 0.9, 0.0)),
        "approved",
        "observing is always allowed"
    );
}

#[test]
fn a_failed_outcome_doubles_the_cooldown_up_to_the_cap_and_a_success_resets_it() {
    let mut w = World::new("stage", &[("1", "succeeded")]);
    assert_eq!(code(&w.decide("stage", "restart", 0.8, 0.0)), "approved");
    w.outcome("restart", false);
    w.incident = IncidentLedger::default();
    assert_eq!(code(&w.decide("stage", "restart", 0.8, 60.0)), "cooldown_active", "120 s now");
    assert_eq!(code(&w.decide("stage", "restart", 0.8, 119.9)), "cooldown_active");
    assert_eq!(code(&w.decide("stage", "restart", 0.8, 120.0)), "approved");
    for _ in 0..10 {
        w.outcome("restart", false);
    }
    assert_eq!(
        w.service.cooldown(&Action::Restart, &w.policy),
        Duration::from_secs(3600),
        "capped at cooldown_cap"
    );
    w.outcome("restart", true);
    assert_eq!(w.service.cooldown(&Action::Restart, &w.policy), Duration::from_secs(60));
}

#[test]
fn a_spent_error_budget_freezes_rollouts_but_not_remedies() {
    let mut w = World::new("stage", &[("1.0", "succeeded"), ("1.1", "started")]);
    w.service.budget_remaining = Some(0.0);
    assert_eq!(code(&w.decide("stage", "promote", 0.9, 0.0)), "error_budget_freeze");
    assert_eq!(code(&w.decide("stage", "set_canary_weight", 0.9, 0.0)), "error_budget_freeze");
    assert_eq!(code(&w.decide("stage", "abort_rollout", 0.9, 0.0)), "approved");
    assert_eq!(code(&w.decide("stage", "restart", 0.9, 0.0)), "approved");
    w.service.budget_remaining = Some(0.01);
    w.incident = IncidentLedger::default();
    assert_eq!(code(&w.decide("stage", "promote", 0.9, 0.0)), "approved");
}

#[test]
fn conflicting_signals_allow_only_observing() {
    let mut w = World::new("stage", &[("1", "succeeded")]);
    w.incident.signal_conflict = true;
    assert_eq!(code(&w.decide("stage", "restart", 0.99, 0.0)), "signal_conflict");
    assert_eq!(code(&w.decide("stage", "observe", 0.99, 0.0)), "approved");
}

#[test]
fn a_human_approval_passes_the_human_gate_but_not_the_others() {
    let mut w = World::new("prod", &[("1.0", "succeeded"), ("1.1", "succeeded")]);
    let p = proposal("prod", "rollback", 0.9, 0.0);
    assert_eq!(code(&w.decide_as(&p, 0.0, Mode::Proposal)), "approval_required");
    assert_eq!(
        code(&w.decide_as(&p, 600.0, Mode::HumanApproved)),
        "approved",
        "the proposal's age does not matter to a human"
    );
    w.incident = IncidentLedger::default();
    assert_eq!(
        code(&w.decide_as(&p, 660.0, Mode::HumanApproved)),
        "cooldown_active",
        "rollback's 300 s cooldown still holds"
    );
}

#[test]
fn parameters_must_fit_the_action_and_remediations_name_their_incident() {
    let mut w = World::new("stage", &[("1.0", "succeeded"), ("1.1", "started")]);
    let mut full = proposal("stage", "set_canary_weight", 0.9, 0.0);
    full.params.canary_weight = Some(100);
    assert_eq!(
        code(&w.decide_as(&full, 0.0, Mode::Proposal)),
        "invalid_proposal",
        "100 % is a promotion"
    );
    let mut zero = proposal("stage", "scale_up", 0.9, 0.0);
    zero.params.replicas = Some(0);
    assert_eq!(code(&w.decide_as(&zero, 0.0, Mode::Proposal)), "invalid_proposal");
    let mut orphan = proposal("stage", "restart", 0.9, 0.0);
    orphan.incident_id = None;
    assert_eq!(code(&w.decide_as(&orphan, 0.0, Mode::Proposal)), "invalid_proposal");
    let unknown = decide(
        &w.policy,
        View { service: Some(&w.service), incident: None },
        &proposal("stage", "restart", 0.9, 0.0),
        at(0.0),
        Mode::Proposal,
    );
    assert_eq!(code(&unknown), "missing_prerequisite", "an incident governance never saw");
}

#[test]
fn the_deploy_agent_rolls_back_an_aborted_rollout_without_an_incident_but_only_during_one() {
    let deploy_agent_rollback = || {
        let mut p = proposal("stage", "rollback", 0.9, 0.0);
        p.incident_id = None;
        p.proposer = bus_schema::fleet::DEPLOY_AGENT;
        p
    };
    let mut w = World::new("stage", &[("1.0", "succeeded"), ("1.1", "started")]);
    let mut named = deploy_agent_rollback();
    named.params.target_version = Some("1.0".into());
    assert_eq!(
        code(&w.decide_as(&named, 0.0, Mode::Proposal)),
        "approved",
        "back to what runs, not to the canary's version"
    );
    let mut ended = World::new("stage", &[("1.0", "succeeded"), ("1.1", "succeeded")]);
    assert_eq!(
        code(&ended.decide_as(&deploy_agent_rollback(), 0.0, Mode::Proposal)),
        "missing_prerequisite",
        "no rollout to end"
    );
    let mut optimizer = deploy_agent_rollback();
    optimizer.proposer = bus_schema::fleet::RL_OPTIMIZER;
    assert_eq!(
        code(&w.decide_as(&optimizer, 0.0, Mode::Proposal)),
        "invalid_proposal",
        "a remediation still names its incident"
    );
}

#[test]
fn a_proposer_can_ask_for_a_human_but_not_past_the_gates() {
    let mut w = World::new("stage", &[("1.0", "succeeded"), ("1.1", "started")]);
    let mut ask = proposal("stage", "set_canary_weight", 0.9, 0.0);
    ask.require_human = true;
    assert_eq!(
        code(&w.decide_as(&ask, 0.0, Mode::Proposal)),
        "approval_required",
        "stage would approve on its own"
    );
    assert_eq!(code(&w.decide_as(&ask, 1.0, Mode::HumanApproved)), "approved");
    let mut frozen = World::new("stage", &[("1.0", "succeeded"), ("1.1", "started")]);
    frozen.service.budget_remaining = Some(0.0);
    assert_eq!(
        code(&frozen.decide_as(&ask, 0.0, Mode::Proposal)),
        "error_budget_freeze",
        "asking for a human skips no gate"
    );
}

#[test]
fn a_rollback_goes_only_to_the_known_previous_version() {
    let mut w = World::new("stage", &[("1.0", "succeeded"), ("1.1", "succeeded")]);
    let mut elsewhere = proposal("stage", "rollback", 0.9, 0.0);
    elsewhere.params.target_version = Some("0.3.0".into());
    assert_eq!(code(&w.decide_as(&elsewhere, 0.0, Mode::Proposal)), "missing_prerequisite");
    elsewhere.params.target_version = Some("1.0".into());
    assert_eq!(code(&w.decide_as(&elsewhere, 0.0, Mode::Proposal)), "approved");
}

#[test]
fn observing_uses_up_no_budget_and_the_first_failing_gate_decides() {
    let mut w = World::new("stage", &[("1", "succeeded")]);
    for s in [0.0, 1.0, 2.0, 3.0] {
        assert_eq!(code(&w.decide("stage", "observe", 0.9, s)), "approved");
    }
    assert_eq!(
        code(&w.decide("stage", "restart", 0.9, 4.0)),
        "approved",
        "four observations left the incident's budget alone"
    );
    // Failing several gates: the earliest in the order is the reason.
    assert_eq!(
        code(&w.decide("qa", "drop_database", 0.1, 5.0)),
        "globally_blocked",
        "block list before eligibility and confidence"
    );
    assert_eq!(
        code(&w.decide("stage", "restart", 0.1, 6.0)),
        "low_confidence",
        "confidence before the cooldown"
    );
}

#[test]
fn a_redelivered_outcome_doubles_the_cooldown_once() {
    let mut w = World::new("stage", &[("1", "succeeded")]);
    let proposal = Uuid::from_u128(77);
    w.outcome_of("restart", false, proposal);
    w.outcome_of("restart", false, proposal);
    assert_eq!(w.service.cooldown(&Action::Restart, &w.policy), Duration::from_secs(120));
}

#[test]
fn exploration_is_refused_outside_the_explore_envs_and_always_in_prod() {
    let mut w = World::new("prod", &[("1", "succeeded")]);
    let mut tryout = proposal("prod", "restart", 0.9, 0.0);
    tryout.exploratory = true;
    assert_eq!(code(&w.decide_as(&tryout, 0.0, Mode::Proposal)), "invalid_proposal");
    let mut w = World::new("stage", &[("1", "succeeded")]);
    w.policy.explore_envs = vec!["stage".into()];
    let mut tryout = proposal("stage", "restart", 0.3, 0.0);
    tryout.exploratory = true;
    assert_eq!(
        code(&w.decide_as(&tryout, 0.0, Mode::Proposal)),
        "low_confidence",
        "exploring passes the same gates as any proposal"
    );
    tryout.confidence = 0.7;
    assert_eq!(code(&w.decide_as(&tryout, 0.0, Mode::Proposal)), "approved");
    assert!(Policy::default().explore_envs.is_empty(), "exploring is opt-in");
    let mut w = World::new("stage", &[("1", "succeeded")]);
    assert_eq!(
        code(&w.decide_as(&tryout, 0.0, Mode::Proposal)),
        "invalid_proposal",
        "not in the default policy's explore_envs"
    );
}

#[test]
fn doing_nothing_and_asking_a_human_are_never_refused_for_low_confidence() {
    let mut w = World::new("stage", &[("1", "succeeded")]);
    assert_eq!(code(&w.decide("stage", "noop", 0.1, 0.0)), "approved");
    assert_eq!(code(&w.decide("stage", "observe", 0.0, 0.0)), "approved");
    let mut ask = proposal("stage", "restart", 0.2, 0.0);
    ask.require_human = true;
    assert_eq!(
        code(&w.decide_as(&ask, 0.0, Mode::Proposal)),
        "approval_required",
        "the human judges it"
    );
    assert_eq!(code(&w.decide("stage", "restart", 0.2, 0.0)), "low_confidence");
}

#[test]
fn one_remediation_at_a_time_per_service_until_its_outcome_arrives() {
    let mut w = World::new("stage", &[("1", "succeeded")]);
    assert_eq!(code(&w.decide("stage", "restart", 0.8, 0.0)), "approved");
    let mut sibling = proposal("stage", "scale_up", 0.8, 10.0);
    sibling.proposal_id = Uuid::from_u128(8);
    sibling.incident_id = Some(Uuid::from_u128(2));
    let v = w.decide_as(&sibling, 10.0, Mode::Proposal);
    assert_eq!(code(&v), "verification_pending");
    let Verdict::Refuse { detail, .. } = v else { unreachable!() };
    assert_eq!(detail["awaiting"], json!(Uuid::from_u128(7)));
    assert_eq!(
        code(&w.decide("stage", "observe", 0.8, 10.0)),
        "approved",
        "observing changes nothing"
    );
    assert_eq!(
        code(&w.decide_as(&sibling, 10.0, Mode::HumanApproved)),
        "approved",
        "a human may act meanwhile"
    );
    // The human's action is now the one awaited; its outcome frees the service.
    let mut third = proposal("stage", "scale_up", 0.8, 200.0);
    third.proposal_id = Uuid::from_u128(9);
    third.incident_id = Some(Uuid::from_u128(3));
    assert_eq!(code(&w.decide_as(&third, 200.0, Mode::Proposal)), "verification_pending");
    w.judged();
    assert_eq!(
        code(&w.decide_as(&third, 200.0, Mode::Proposal)),
        "cooldown_active",
        "next in line: scale_up's own cooldown"
    );
    assert_eq!(code(&w.decide_as(&third, 250.0, Mode::Proposal)), "approved");
    // Without an outcome the wait ends after verification_timeout.
    w.incident = IncidentLedger::default();
    let mut fourth = proposal("stage", "restart", 0.8, 250.0 + 1199.0);
    fourth.incident_id = Some(Uuid::from_u128(4));
    assert_eq!(code(&w.decide_as(&fourth, 250.0 + 1199.0, Mode::Proposal)), "verification_pending");
    let mut fifth = proposal("stage", "restart", 0.8, 250.0 + 1200.0);
    fifth.incident_id = Some(Uuid::from_u128(4));
    assert_eq!(code(&w.decide_as(&fifth, 250.0 + 1200.0, Mode::Proposal)), "approved");
}

#[test]
fn with_the_budget_spent_a_proposal_that_asks_a_human_goes_to_one_and_a_human_may_approve_it() {
    let mut w = World::new("stage", &[("1", "succeeded"), ("2", "succeeded")]);
    for (s, a) in [(0.0, "restart"), (400.0, "scale_up"), (800.0, "rollback")] {
        assert_eq!(code(&w.decide("stage", a, 0.9, s)), "approved", "{a}");
        w.judged();
    }
    assert_eq!(code(&w.decide("stage", "scale_down", 0.9, 1200.0)), "action_budget_exhausted");
    let mut escalation = proposal("stage", "scale_down", 0.3, 1200.0);
    escalation.require_human = true;
    let v = w.decide_as(&escalation, 1200.0, Mode::Proposal);
    let Verdict::NeedsHuman { why } = v else { panic!("{v:?}") };
    assert!(why.contains("budget of 3 actions is spent"), "{why}");
    assert_eq!(code(&w.decide_as(&escalation, 1260.0, Mode::HumanApproved)), "approved");
}

#[test]
fn a_revised_verdict_counts_as_a_failure_once_and_a_superseded_one_not_at_all() {
    let mut w = World::new("stage", &[("1", "succeeded")]);
    let id = Uuid::from_u128(70);
    w.outcome_of("restart", true, id);
    let revised: Outcome = serde_json::from_value(json!({"incident_id": Uuid::from_u128(1), "proposal_id": id, "env": "stage", "service": "api",
        "action": "restart", "recovered": false, "revised": true, "judged_at": T0})).unwrap();
    w.service.on_outcome(&revised, &w.policy);
    w.service.on_outcome(&revised, &w.policy);
    assert_eq!(
        w.service.cooldown(&Action::Restart, &w.policy),
        Duration::from_secs(120),
        "doubled once"
    );
    let superseded: Outcome = serde_json::from_value(json!({"incident_id": Uuid::from_u128(1), "proposal_id": Uuid::from_u128(71), "env": "stage", "service": "api",
        "action": "restart", "recovered": false, "superseded_by": Uuid::from_u128(72), "judged_at": T0})).unwrap();
    w.service.on_outcome(&superseded, &w.policy);
    assert_eq!(
        w.service.cooldown(&Action::Restart, &w.policy),
        Duration::from_secs(120),
        "not the restart's fault"
    );
}
