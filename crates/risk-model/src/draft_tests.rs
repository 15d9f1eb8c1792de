use bus_schema::Validate;
use proptest::prelude::*;

use super::*;
use crate::learning::DeployOutcome;

pub(crate) fn now() -> Timestamp {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

pub(crate) fn request(changes: serde_json::Value, rollback: bool) -> ContractRequest {
    serde_json::from_value(serde_json::json!({
        "deployment_id": "d-1", "service": "user-service", "env": "stage", "version": "v2",
        "changes": changes, "rollback_capability": rollback,
    }))
    .unwrap()
}

fn one(path: &str, tags: &[&str], description: &str, lines: u32) -> serde_json::Value {
    serde_json::json!([{"file_path": path, "change_type": "modify", "lines_changed": lines, "risk_tags": tags, "description": description}])
}

fn names(c: &Contract) -> Vec<&str> {
    c.risk.factors.iter().map(|f| f.name.as_str()).collect()
}

fn has(c: &Contract, kind: ValidatorKind) -> bool {
    c.validators.iter().any(|v| v.kind == kind)
}

#[test]
fn the_design_example_is_a_low_risk_caching_change() {
    let mut r =
        request(one("src/cache/manager.py", &["caching"], "Optimize cache TTL strategy", 45), true);
    r.env = "prod".parse().unwrap();
    r.dependencies = vec!["postgres".into(), "redis".into()];
    r.target_error_rate = Some(0.001);
    r.target_p95_latency_ms = Some(250.0);
    let c = draft_offline(&r, now());
    assert_eq!(c.risk.level, RiskLevel::Low);
    assert_eq!(names(&c), vec!["caching", "blast_radius"]);
    assert_eq!(c.risk.factors[1].contribution, 9.0);
    assert!(has(&c, ValidatorKind::RollbackPlan));
    assert_eq!(
        (
            c.guardrails.max_error_rate,
            c.guardrails.max_p95_latency_ms,
            c.guardrails.max_p99_latency_ms
        ),
        (0.001, 250.0, Some(375.0))
    );
    assert_eq!(c.guardrails.max_traffic_step_percent, 75);
    assert_eq!(c.status, ContractStatus::Draft);
}

#[test]
fn a_schema_migration_with_rollback_gets_a_plan_a_flag_and_some_data_loss_risk() {
    let c = draft_offline(
        &request(one("db/migrations/0042_users.sql", &[], "add column", 120), true),
        now(),
    );
    assert!(c.rollback.possible && !c.rollback.steps.is_empty());
    assert!(
        has(&c, ValidatorKind::RollbackPlan)
            && has(&c, ValidatorKind::FeatureFlag)
            && has(&c, ValidatorKind::MigrationRollbackScript)
    );
    assert_ne!(c.rollback.data_loss_risk, DataLossRisk::None);
}

#[test]
fn a_schema_migration_without_rollback_is_at_least_high_with_a_suggestion() {
    let c =
        draft_offline(&request(one("db/migrations/0042_users.sql", &[], "", 120), false), now());
    assert!(c.risk.level >= RiskLevel::High, "{:?}", c.risk);
    assert_eq!(c.rollback.data_loss_risk, DataLossRisk::High);
    assert!(has(&c, ValidatorKind::Canary));
    assert!(c.suggestions.iter().any(|s| s.contains("automated rollback")));
}

#[test]
fn tags_alone_raise_risk_and_match_as_words() {
    let plain = draft_offline(&request(one("src/main.rs", &[], "", 10), true), now());
    for tag in ["database", "db migration", "DB-Migration", "db_migration", "Schema"] {
        let tagged = draft_offline(&request(one("src/main.rs", &[tag], "", 10), true), now());
        assert!(tagged.risk.score > plain.risk.score, "{tag}");
        assert_eq!(names(&tagged), vec!["schema_or_data_migration"], "{tag}");
        assert!(has(&tagged, ValidatorKind::FeatureFlag), "{tag}");
    }
}

#[test]
fn words_match_on_boundaries_not_substrings() {
    let table = [
        ("src/upload.rs", "rapid upload of payload", vec![]),
        ("src/capital.rs", "update the dbase of authors", vec![]),
        ("src/lib.rs", "new API endpoint for login", vec!["api_contract"]),
        ("src/lib.rs", "tighten oauth scopes", vec!["auth_or_permissions"]),
        ("deploy/values.yaml", "", vec!["configuration"]),
        ("Cargo.lock", "", vec!["dependencies"]),
        ("proto/user.proto", "", vec!["api_contract"]),
    ];
    for (path, description, want) in table {
        let c = draft_offline(&request(one(path, &[], description, 1), true), now());
        assert_eq!(names(&c), want, "{path} / {description}");
    }
}

#[test]
fn a_path_counts_in_every_area_it_matches() {
    let c = draft_offline(
        &request(one("db/migrations/0042_grant_admin_permissions.sql", &[], "", 10), true),
        now(),
    );
    assert_eq!(
        names(&c)[..2],
        ["schema_or_data_migration", "auth_or_permissions"],
        "{:?}",
        c.risk.factors
    );
    assert!(
        has(&c, ValidatorKind::SecurityReview) && has(&c, ValidatorKind::MigrationRollbackScript)
    );
    let f =
        facts(&request(one("db/migrations/0042_grant_admin_permissions.sql", &[], "", 10), true));
    assert!(f.touches_schema && f.touches_auth);
}

#[test]
fn only_outcomes_make_a_draft_confident_enough_to_negotiate() {
    let changes: Vec<serde_json::Value> =
        (0..6).map(|i| serde_json::json!({"file_path": format!("src/cache/x{i}.rs"), "change_type": "modify", "lines_changed": 5})).collect();
    let mut r = request(serde_json::Value::Array(changes), true);
    (r.target_error_rate, r.target_p95_latency_ms) = (Some(0.01), Some(300.0));
    let c = draft_offline(&r, now());
    assert!((c.risk.confidence - REQUEST_CONFIDENCE).abs() < 1e-9, "{}", c.risk.confidence);
    assert!(c.risk.confidence < crate::MIN_CONFIDENCE);
    let mut model = Model::default();
    for _ in 0..2 {
        model.learn(&c.risk.factors, false, now());
    }
    let h = ServiceHistory::default();
    let learned =
        draft(&r, &DraftInputs { history: &h, model: &model, budget_remaining: None }, "i", now());
    assert!(learned.risk.confidence >= crate::MIN_CONFIDENCE, "{}", learned.risk.confidence);
}

#[test]
fn latency_guardrails_stay_within_the_schema() {
    let mut r = request(one("src/main.rs", &[], "", 10), true);
    r.target_p95_latency_ms = Some(6e7);
    let c = draft_offline(&r, now());
    assert_eq!(
        (c.guardrails.max_p95_latency_ms, c.guardrails.max_p99_latency_ms),
        (6e7, Some(MAX_GUARDRAIL_MS))
    );
    assert_eq!(c.validate(), Ok(()));
    r.target_p95_latency_ms = Some(1e300);
    assert_eq!(draft_offline(&r, now()).guardrails.max_p95_latency_ms, MAX_GUARDRAIL_MS);
}

#[test]
fn auth_changes_need_a_security_review_and_huge_ones_a_split() {
    let c = draft_offline(&request(one("src/auth/permissions.rs", &[], "", 900), true), now());
    assert!(has(&c, ValidatorKind::SecurityReview));
    assert!(c.suggestions.iter().any(|s| s.contains("split the change")));
}

fn history(failures: usize) -> ServiceHistory {
    let mut h = ServiceHistory::default();
    for i in 0..failures {
        h.record(
            &format!("v{i}"),
            DeployOutcome::RolledBack,
            now().minus(Duration::from_secs(3600 * (i as u64 + 1))),
        );
    }
    h.record("v0", DeployOutcome::Failed, now().minus(Duration::from_secs(90 * 24 * 3600)));
    h
}

#[test]
fn recent_failures_of_the_service_raise_the_score() {
    let r = request(one("src/main.rs", &[], "", 10), true);
    let model = Model::default();
    let quiet = draft(
        &r,
        &DraftInputs { history: &history(0), model: &model, budget_remaining: None },
        "i",
        now(),
    );
    let bad = draft(
        &r,
        &DraftInputs { history: &history(2), model: &model, budget_remaining: None },
        "i",
        now(),
    );
    assert_eq!(bad.risk.score - quiet.risk.score, 10.0, "{:?}", bad.risk.factors);
    assert!(names(&bad).contains(&"recent_failures"));
}

#[test]
fn a_spent_budget_freezes_unless_the_change_is_an_urgent_fix() {
    let model = Model::default();
    let h = ServiceHistory::default();
    let frozen = DraftInputs { history: &h, model: &model, budget_remaining: Some(-0.1) };
    let c = draft(&request(one("src/main.rs", &[], "", 10), true), &frozen, "i", now());
    assert_eq!(
        (c.status, c.reason.as_deref()),
        (ContractStatus::Rejected, Some("error_budget_freeze"))
    );
    assert!(c.suggestions.iter().any(|s| s.contains("security")));
    for tag in ["security", "P0", "hotfix", "security-fix"] {
        let c = draft(&request(one("src/main.rs", &[tag], "", 10), true), &frozen, "i", now());
        assert_eq!(c.status, ContractStatus::Draft, "{tag}");
    }
    let healthy = DraftInputs { budget_remaining: Some(0.5), ..frozen };
    assert_eq!(
        draft(&request(one("src/main.rs", &[], "", 10), true), &healthy, "i", now()).status,
        ContractStatus::Draft
    );
}

#[test]
fn contract_ids_are_deterministic_per_input() {
    let r = request(one("src/main.rs", &[], "", 10), true);
    assert_eq!(draft_offline(&r, now()).contract_id, draft_offline(&r, now()).contract_id);
    let (h, m) = (ServiceHistory::default(), Model::default());
    let inputs = DraftInputs { history: &h, model: &m, budget_remaining: None };
    assert_eq!(
        draft(&r, &inputs, "CN_EVENTS:7", now()).contract_id,
        derive_id(&["contract", "CN_EVENTS:7"])
    );
}

#[test]
fn the_score_saturates_at_100() {
    let many: Vec<serde_json::Value> = (0..50)
        .map(|i| serde_json::json!({"file_path": format!("auth/migrations/{i}.sql"), "change_type":"modify","lines_changed":100000,"risk_tags":["database","auth","api","caching","config","dependency"]}))
        .collect();
    let mut r = request(serde_json::Value::Array(many), false);
    r.dependencies = (0..20).map(|i| format!("dep{i}")).collect();
    let c = draft_offline(&r, now());
    assert_eq!((c.risk.score, c.risk.level), (100.0, RiskLevel::Critical));
}

const LEVELS: [RiskLevel; 4] =
    [RiskLevel::Low, RiskLevel::Medium, RiskLevel::High, RiskLevel::Critical];

fn total_s(plan: &[CanaryStage]) -> u64 {
    plan.iter().map(|s| u64::from(s.min_duration_s)).sum()
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "db",
            "migration",
            "auth",
            "API",
            "cache",
            "config",
            "security",
            "p0",
            "rapid",
            "Dependency"
        ])
        .prop_map(String::from),
        "\\PC{0,12}",
    ]
}

fn change() -> impl Strategy<Value = Change> {
    let path = prop_oneof![
        prop::sample::select(vec![
            "db/migrations/1.sql",
            "src/auth/x.rs",
            "Cargo.toml",
            "api/v1.proto",
            "src/cache.rs",
            "a.yaml",
            "src/x.rs"
        ])
        .prop_map(String::from),
        "\\PC{1,30}",
    ];
    let change_type = prop::sample::select(bus_schema::ChangeType::ALL.to_vec());
    (
        path,
        change_type,
        any::<u32>(),
        prop::collection::vec(word(), 0..4),
        prop::collection::vec(word(), 0..6),
    )
        .prop_map(|(file_path, change_type, lines_changed, risk_tags, words)| Change {
            file_path,
            change_type,
            lines_changed,
            risk_tags,
            description: words.join(" "),
        })
}

fn num() -> impl Strategy<Value = Option<f64>> {
    proptest::option::of(prop_oneof![any::<f64>(), 0.0..1.0f64, 0.0..5000.0f64])
}

pub(crate) fn contract_request() -> impl Strategy<Value = ContractRequest> {
    let token = "[a-z0-9][a-z0-9-]{0,10}";
    (
        (token, token, prop::collection::vec(change(), 0..15), any::<bool>()),
        (num(), num(), num(), num(), prop::collection::vec("[a-z]{1,8}", 0..12)),
    )
        .prop_map(
            |(
                (env, service, changes, rollback_capability),
                (cur_e, cur_p, tgt_p, tgt_e, dependencies),
            )| ContractRequest {
                deployment_id: "d".into(),
                service: ServiceName::new(service).unwrap(),
                env: Env::new(env).unwrap(),
                version: "v1".into(),
                changes,
                current_error_rate: cur_e,
                current_p95_latency_ms: cur_p,
                target_p95_latency_ms: tgt_p,
                target_error_rate: tgt_e,
                rollback_capability,
                dependencies,
            },
        )
}

use bus_schema::{Env, ServiceName};

proptest! {
    #[test]
    fn the_score_is_always_within_0_and_100(req in contract_request(), failures in 0usize..30, budget in num()) {
        let model = Model::default();
        let h = history(failures);
        let c = draft(&req, &DraftInputs { history: &h, model: &model, budget_remaining: budget }, "i", now());
        prop_assert!((0.0..=100.0).contains(&c.risk.score), "{}", c.risk.score);
        prop_assert!((0.0..=1.0).contains(&c.risk.confidence));
        prop_assert_eq!(c.risk.level, level_of(c.risk.score));
        prop_assert!(c.guardrails.max_error_rate.is_finite() && c.guardrails.max_p95_latency_ms.is_finite());
        prop_assert!(c.validate().is_ok(), "{:?}: {:?}", c.validate(), c.guardrails);
    }

    #[test]
    fn a_lower_level_never_gets_a_slower_canary(a in 0usize..4, b in 0usize..4) {
        let (safer, riskier) = (LEVELS[a.min(b)], LEVELS[a.max(b)]);
        let (s, r) = (canary_plan(safer), canary_plan(riskier));
        prop_assert!(r.len() >= s.len());
        prop_assert!(r[0].weight_percent <= s[0].weight_percent);
        prop_assert!(r.iter().map(|x| x.min_duration_s).min() >= s.iter().map(|x| x.min_duration_s).max() || safer == riskier);
        prop_assert!(total_s(&r) >= total_s(&s));
        prop_assert!(max_step(&r) <= max_step(&s));
    }
}

proptest! {
    #[test]
    fn a_lower_risk_request_never_gets_a_slower_canary(a in contract_request(), b in contract_request()) {
        let (ca, cb) = (draft_offline(&a, now()), draft_offline(&b, now()));
        let (safer, riskier) = if ca.risk.score <= cb.risk.score { (ca, cb) } else { (cb, ca) };
        prop_assert!(safer.risk.level <= riskier.risk.level);
        prop_assert!(riskier.canary.len() >= safer.canary.len());
        prop_assert!(total_s(&riskier.canary) >= total_s(&safer.canary));
        prop_assert!(riskier.guardrails.max_traffic_step_percent <= safer.guardrails.max_traffic_step_percent);
    }
}
