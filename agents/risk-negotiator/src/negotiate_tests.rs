use bus_schema::{ContractRequest, DataLossRisk, RiskFactor};

use super::*;
use crate::draft::{DraftInputs, draft, draft_offline, facts};
use crate::learning::ServiceHistory;
use crate::model::Model;

fn now() -> Timestamp {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

/// A request with all the evidence a request can give (four described changes, both targets).
fn request(path: &str, tags: &[&str], rollback: bool) -> ContractRequest {
    let change = |i: usize| serde_json::json!({"file_path": if i == 0 { path.to_owned() } else { format!("src/x{i}.rs") }, "change_type": "modify", "lines_changed": 10, "risk_tags": tags});
    serde_json::from_value(serde_json::json!({
        "deployment_id": "d-1", "service": "api", "env": "stage", "version": "v2", "rollback_capability": rollback,
        "target_error_rate": 0.01, "target_p95_latency_ms": 300.0,
        "changes": (0..4).map(change).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// The draft once five outcomes of similar changes are known (confidence about 0.67). The
/// outcomes carry the factors' names with no weight, so they raise confidence without moving
/// the score.
fn setup(req: &ContractRequest, budget: Option<f64>) -> (Contract, NegotiationFacts) {
    let mut model = Model::default();
    let seen: Vec<RiskFactor> = draft_offline(req, now())
        .risk
        .factors
        .into_iter()
        .map(|f| RiskFactor { contribution: 0.0, ..f })
        .collect();
    for i in 0..5 {
        model.learn(&seen, i % 2 == 0, now());
    }
    let history = ServiceHistory::default();
    let c = draft(
        req,
        &DraftInputs { history: &history, model: &model, budget_remaining: None },
        "i",
        now(),
    );
    let f = NegotiationFacts::new(&facts(req), &c.guardrails, budget);
    (c, f)
}

fn counter(c: &Contract, asks: Vec<Ask>) -> CounterProposal {
    CounterProposal {
        contract_id: c.contract_id,
        env: c.env.clone(),
        service: c.service.clone(),
        requested_by: "dev".into(),
        asks,
        justification: "hot path, tested in stage".into(),
    }
}

fn relax(guardrail: &str, value: f64) -> Ask {
    Ask::RelaxGuardrail { guardrail: guardrail.into(), value }
}

fn waive(validator: ValidatorKind) -> Ask {
    Ask::WaiveValidator { validator }
}

#[test]
fn an_acceptable_counter_is_accepted_and_changes_the_contract() {
    let (c, f) = setup(&request("src/cache/lru.rs", &[], true), None);
    assert_eq!(c.risk.level, RiskLevel::Low);
    assert!(c.risk.confidence >= MIN_CONFIDENCE);
    let (reply, after) = negotiate(
        &c,
        &counter(&c, vec![Ask::ShortenCanary { stages: 1 }, relax("max_p95_latency_ms", 400.0)]),
        &f,
        1,
        now(),
    );
    assert!(reply.accepted, "{:?}", reply.decisions);
    assert_eq!(reply.reason, None);
    assert_eq!((after.status, after.revision), (ContractStatus::Negotiated, 2));
    assert_eq!(after.canary.len(), 1);
    assert_eq!(after.canary[0].weight_percent, 100);
    assert_eq!(after.guardrails.max_p95_latency_ms, 400.0);
    assert_eq!(reply.contract.as_ref(), Some(&after));

    // An empty counter then accepts the negotiated contract.
    let (reply, accepted) = negotiate(&after, &counter(&after, vec![]), &f, 2, now());
    assert!(reply.accepted);
    assert_eq!((accepted.status, accepted.revision), (ContractStatus::Accepted, 2));
}

#[test]
fn non_negotiables_are_refused_with_the_reason_and_change_nothing() {
    let schema = request("db/migrations/1.sql", &[], true);
    let auth = request("src/auth/login.rs", &[], true);
    let critical = request("db/migrations/1.sql", &["auth", "api", "caching"], false);
    let table: Vec<(&ContractRequest, Ask, &str)> = vec![
        (&schema, waive(ValidatorKind::Tests), "tests are never waived"),
        (&schema, waive(ValidatorKind::RollbackPlan), "rollback plan is non-negotiable"),
        (&schema, waive(ValidatorKind::MigrationRollbackScript), "non-negotiable"),
        (&auth, waive(ValidatorKind::SecurityReview), "security review is non-negotiable"),
        (&critical, waive(ValidatorKind::Canary), "critical risk: the canary is non-negotiable"),
        (&critical, Ask::SkipCanary, "critical risk: the canary is non-negotiable"),
        (&critical, relax("max_error_rate", 0.011), "guardrails are not relaxed"),
    ];
    for (req, ask, why) in table {
        let (c, f) = setup(req, None);
        let (reply, after) = negotiate(&c, &counter(&c, vec![ask.clone()]), &f, 1, now());
        assert!(!reply.accepted, "{ask:?}");
        assert!(reply.decisions[0].reason.contains(why), "{ask:?}: {}", reply.decisions[0].reason);
        assert_eq!(after, c, "{ask:?}");
        assert_eq!(reply.contract, None);
    }
    let (c, _) = setup(&critical, None);
    assert_eq!(
        (c.risk.level, c.rollback.data_loss_risk),
        (RiskLevel::Critical, DataLossRisk::High)
    );
}

#[test]
fn bounds_follow_risk_and_confidence() {
    let low = request("src/cache/lru.rs", &[], true);
    let medium = request("db/migrations/1.sql", &[], true);
    let table: Vec<(&ContractRequest, Ask, bool)> = vec![
        (&low, relax("max_error_rate", 0.0149), true),
        (&low, relax("max_error_rate", 0.016), false),
        (&low, relax("max_error_rate", 0.001), true),
        (&low, relax("max_traffic_step_percent", 100.0), false),
        (&low, relax("max_cpu", 1.0), false),
        (&low, relax("max_p95_latency_ms", f64::NAN), false),
        (&low, Ask::SkipCanary, true),
        (&medium, Ask::SkipCanary, false),
        (&medium, Ask::ShortenCanary { stages: 2 }, true),
        (&medium, Ask::ShortenCanary { stages: 1 }, false),
        (&medium, waive(ValidatorKind::FeatureFlag), true),
        (&medium, waive(ValidatorKind::LoadTest), true),
    ];
    for (req, ask, want) in table {
        let (c, f) = setup(req, None);
        let (reply, after) = negotiate(&c, &counter(&c, vec![ask.clone()]), &f, 1, now());
        assert_eq!(reply.accepted, want, "{ask:?} on {}: {:?}", c.risk.level, reply.decisions);
        assert!(!reply.decisions[0].reason.is_empty());
        assert_eq!(
            after == c,
            !want || matches!(ask, Ask::WaiveValidator { validator: ValidatorKind::LoadTest }),
            "{ask:?}"
        );
    }
    let (c, f) = setup(&medium, None);
    let (_, after) =
        negotiate(&c, &counter(&c, vec![Ask::ShortenCanary { stages: 2 }]), &f, 1, now());
    assert_eq!(after.canary.iter().map(|s| s.weight_percent).collect::<Vec<_>>(), vec![10, 100]);
    assert_eq!(after.guardrails.max_traffic_step_percent, 90);
}

#[test]
fn without_outcomes_the_canary_stays_whatever_the_request_says() {
    let req = request("src/cache/lru.rs", &[], true);
    let c = draft_offline(&req, now());
    let f = NegotiationFacts::new(&facts(&req), &c.guardrails, None);
    assert!(c.risk.confidence < MIN_CONFIDENCE);
    for ask in [Ask::SkipCanary, Ask::ShortenCanary { stages: 1 }] {
        let (reply, after) = negotiate(&c, &counter(&c, vec![ask]), &f, 1, now());
        assert!(
            !reply.accepted && reply.decisions[0].reason.contains("needs more evidence"),
            "{:?}",
            reply.decisions
        );
        assert!(
            reply.reason.as_deref().is_some_and(|r| r.contains("needs more evidence")),
            "{:?}",
            reply.reason
        );
        assert_eq!(after, c);
    }
    // Tightening needs no evidence.
    let (reply, after) =
        negotiate(&c, &counter(&c, vec![relax("max_p95_latency_ms", 250.0)]), &f, 1, now());
    assert!(
        reply.accepted && after.guardrails.max_p95_latency_ms == 250.0,
        "{:?}",
        reply.decisions
    );
}

#[test]
fn relaxing_is_bounded_against_the_draft_across_asks_and_rounds() {
    let (c, f) = setup(&request("src/cache/lru.rs", &[], true), None);
    assert_eq!(c.guardrails.max_error_rate, 0.01);
    let steps = vec![
        relax("max_error_rate", 0.015),
        relax("max_error_rate", 0.0225),
        relax("max_error_rate", 0.03375),
        relax("max_error_rate", 0.05),
    ];
    let (reply, after) = negotiate(&c, &counter(&c, steps), &f, 1, now());
    assert_eq!(
        reply.decisions.iter().map(|d| d.accepted).collect::<Vec<_>>(),
        vec![true, false, false, false]
    );
    assert_eq!(after.guardrails.max_error_rate, 0.015);
    assert!(reply.decisions[1].reason.contains("drafted 0.01"), "{}", reply.decisions[1].reason);

    // Round by round, the same bound holds.
    let (_, round1) =
        negotiate(&c, &counter(&c, vec![relax("max_p95_latency_ms", 450.0)]), &f, 1, now());
    let (reply, round2) = negotiate(
        &round1,
        &counter(&round1, vec![relax("max_p95_latency_ms", 675.0)]),
        &f,
        2,
        now(),
    );
    assert!(!reply.accepted && reply.contract.is_none());
    assert_eq!((round2.guardrails.max_p95_latency_ms, round2.revision), (450.0, 2));

    // Tightened first, a guardrail may come back up to the same bound and no further.
    let (_, tight) =
        negotiate(&c, &counter(&c, vec![relax("max_p99_latency_ms", 300.0)]), &f, 1, now());
    let (reply, back) =
        negotiate(&tight, &counter(&tight, vec![relax("max_p99_latency_ms", 675.0)]), &f, 2, now());
    assert!(
        reply.accepted && back.guardrails.max_p99_latency_ms == Some(675.0),
        "{:?}",
        reply.decisions
    );
    let (reply, _) =
        negotiate(&back, &counter(&back, vec![relax("max_p99_latency_ms", 676.0)]), &f, 3, now());
    assert!(!reply.accepted);
}

#[test]
fn only_rounds_that_change_the_contract_count_and_accepting_is_always_possible() {
    let (c, f) = setup(&request("src/cache/lru.rs", &[], true), None);
    let mut current = c.clone();
    for round in 1..=30 {
        let (reply, after) = negotiate(
            &current,
            &counter(&current, vec![waive(ValidatorKind::Tests)]),
            &f,
            round,
            now(),
        );
        assert!(!reply.accepted && reply.reason.is_some());
        current = after;
    }
    assert_eq!(current, c, "refused rounds change nothing");
    let (reply, after) = negotiate(
        &current,
        &counter(&current, vec![relax("max_p95_latency_ms", 310.0)]),
        &f,
        31,
        now(),
    );
    assert!(reply.accepted && after.revision == 2, "{:?}", reply);

    let worn =
        Contract { revision: MAX_ROUNDS + 1, status: ContractStatus::Negotiated, ..c.clone() };
    let (reply, after) =
        negotiate(&worn, &counter(&worn, vec![relax("max_p95_latency_ms", 310.0)]), &f, 99, now());
    assert!(
        !reply.accepted && reply.reason.as_deref().is_some_and(|r| r.contains("changed 20 times")),
        "{:?}",
        reply.reason
    );
    assert_eq!(after, worn);
    let (reply, accepted) = negotiate(&worn, &counter(&worn, vec![]), &f, 100, now());
    assert!(reply.accepted && accepted.status == ContractStatus::Accepted);

    // Accepting twice is refused, and says why.
    let (reply, _) = negotiate(&accepted, &counter(&accepted, vec![]), &f, 101, now());
    assert!(
        !reply.accepted
            && reply.reason.as_deref().is_some_and(|r| r.contains("negotiation is closed")),
        "{:?}",
        reply.reason
    );
}

#[test]
fn partly_accepted_counters_apply_only_the_accepted_asks() {
    let (c, f) = setup(&request("src/cache/lru.rs", &[], true), None);
    let (reply, after) = negotiate(
        &c,
        &counter(&c, vec![relax("max_p95_latency_ms", 350.0), waive(ValidatorKind::Tests)]),
        &f,
        1,
        now(),
    );
    assert!(!reply.accepted);
    assert!(
        reply
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("1 of 2 asks refused") && r.contains("tests")),
        "{:?}",
        reply.reason
    );
    assert_eq!(reply.decisions.iter().map(|d| d.accepted).collect::<Vec<_>>(), vec![true, false]);
    assert_eq!((after.guardrails.max_p95_latency_ms, after.revision), (350.0, 2));
    assert!(after.validators.iter().any(|v| v.kind == ValidatorKind::Tests));
}

#[test]
fn the_freeze_holds_even_for_reasonable_asks() {
    let (c, _) = setup(&request("src/cache/lru.rs", &[], true), None);
    let frozen = NegotiationFacts::new(
        &facts(&request("src/cache/lru.rs", &[], true)),
        &c.guardrails,
        Some(0.0),
    );
    for asks in [vec![relax("max_p95_latency_ms", 310.0)], vec![]] {
        let (reply, after) = negotiate(&c, &counter(&c, asks), &frozen, 1, now());
        assert!(!reply.accepted);
        assert!(
            reply
                .decisions
                .iter()
                .all(|d| !d.accepted && d.reason.starts_with("error_budget_freeze"))
        );
        assert_eq!(
            (after.status, after.reason.as_deref()),
            (ContractStatus::Rejected, Some("error_budget_freeze"))
        );
    }
}

#[test]
fn a_security_fix_passes_the_freeze() {
    let req = request("src/cache/lru.rs", &["security-fix"], true);
    let (c, f) = setup(&req, Some(-0.2));
    assert!(f.budget_frozen && f.urgent);
    let (reply, after) = negotiate(&c, &counter(&c, vec![]), &f, 1, now());
    assert!(reply.accepted);
    assert_eq!(after.status, ContractStatus::Accepted);
}

#[test]
fn counters_for_another_contract_or_without_justification_are_refused() {
    let (c, f) = setup(&request("src/cache/lru.rs", &[], true), None);
    let ask = vec![Ask::SkipCanary];
    let mut other = counter(&c, ask.clone());
    other.service = "billing".parse().unwrap();
    let mut silent = counter(&c, ask.clone());
    silent.justification = "  ".into();
    let closed = Contract { status: ContractStatus::Accepted, ..c.clone() };
    for (contract, cp, why) in [
        (&c, other, "another contract"),
        (&c, silent, "justification is required"),
        (&closed, counter(&closed, ask), "negotiation is closed"),
    ] {
        let (reply, after) = negotiate(contract, &cp, &f, 1, now());
        assert!(
            !reply.accepted && reply.decisions[0].reason.contains(why),
            "{why}: {:?}",
            reply.decisions
        );
        assert_eq!(&after, contract);
    }
}
