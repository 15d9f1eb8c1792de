//! Drafting a contract from a request: a transparent additive risk model, and the guardrails,
//! validators, canary plan and rollback plan that follow from the risk.
//!
//! Every factor is listed with its contribution; the score is their sum capped to 0..=100.
//! Words in descriptions match on word boundaries ("rapid upload" is not "api"). A riskier
//! level never gets fewer or faster canary stages than a safer one.

use bus_schema::{
    CanaryStage, Change, Contract, ContractRequest, ContractStatus, DataLossRisk, Guardrails, RiskAssessment, RiskFactor, RiskLevel, RollbackPlan,
    Timestamp, Validator, ValidatorKind, derive_id,
};

/// Areas of change and what each adds to the risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Area {
    Schema,
    Auth,
    Api,
    Caching,
    Config,
    Dependencies,
}

impl Area {
    fn weight(self) -> f64 {
        match self {
            Area::Schema => 25.0,
            Area::Auth => 20.0,
            Area::Api => 10.0,
            Area::Caching => 10.0,
            Area::Config => 8.0,
            Area::Dependencies => 8.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Area::Schema => "schema_or_data_migration",
            Area::Auth => "auth_or_permissions",
            Area::Api => "api_contract",
            Area::Caching => "caching",
            Area::Config => "configuration",
            Area::Dependencies => "dependencies",
        }
    }

    fn from_word(word: &str) -> Option<Area> {
        Some(match word {
            "database" | "db" | "migration" | "migrations" | "schema" | "sql" => Area::Schema,
            "auth" | "authentication" | "authorization" | "permissions" | "security" | "rbac" | "oauth" => Area::Auth,
            "api" | "endpoint" | "grpc" | "graphql" | "openapi" => Area::Api,
            "cache" | "caching" => Area::Caching,
            "config" | "configuration" | "settings" | "feature-flag" => Area::Config,
            "dependency" | "dependencies" | "upgrade" => Area::Dependencies,
            _ => return None,
        })
    }

    fn from_path(path: &str) -> Option<Area> {
        let p = path.to_ascii_lowercase();
        let file = p.rsplit('/').next().unwrap_or_default();
        if p.contains("migration") || p.ends_with(".sql") || p.contains("schema") {
            Some(Area::Schema)
        } else if p.split(['/', '.', '_', '-']).any(|s| matches!(s, "auth" | "permissions" | "rbac" | "security")) {
            Some(Area::Auth)
        } else if matches!(file, "cargo.toml" | "cargo.lock" | "package.json" | "package-lock.json" | "requirements.txt" | "go.mod" | "go.sum" | "pom.xml")
        {
            Some(Area::Dependencies)
        } else if p.ends_with(".proto") || p.contains("openapi") || p.split('/').any(|s| s == "api") {
            Some(Area::Api)
        } else if p.contains("cache") {
            Some(Area::Caching)
        } else if p.ends_with(".yaml") || p.ends_with(".yml") || p.ends_with(".toml") || p.ends_with(".env") || p.split('/').any(|s| s == "config") {
            Some(Area::Config)
        } else {
            None
        }
    }
}

/// The areas a change touches: from its tags, its path and the words of its description.
fn areas(change: &Change) -> Vec<Area> {
    let words = change.description.to_ascii_lowercase();
    let mut out: Vec<Area> = change
        .risk_tags
        .iter()
        .map(|t| t.to_ascii_lowercase())
        .filter_map(|t| Area::from_word(&t))
        .chain(Area::from_path(&change.file_path))
        .chain(words.split(|c: char| !c.is_ascii_alphanumeric() && c != '-').filter_map(Area::from_word))
        .collect();
    out.sort();
    out.dedup();
    out
}

pub fn assess(req: &ContractRequest) -> RiskAssessment {
    let mut touched: Vec<Area> = req.changes.iter().flat_map(areas).collect();
    touched.sort();
    touched.dedup();
    let mut factors: Vec<RiskFactor> =
        touched.iter().map(|a| RiskFactor { name: a.name().to_owned(), contribution: a.weight(), detail: String::new() }).collect();
    let lines: u64 = req.changes.iter().map(|c| u64::from(c.lines_changed)).sum();
    let size = match lines {
        0..=49 => 0.0,
        50..=199 => 5.0,
        200..=499 => 10.0,
        _ => 15.0,
    } + if req.changes.len() > 10 { 5.0 } else { 0.0 };
    if size > 0.0 {
        factors.push(RiskFactor { name: "change_size".into(), contribution: size, detail: format!("{lines} lines in {} files", req.changes.len()) });
    }
    if !req.rollback_capability {
        factors.push(RiskFactor { name: "no_automated_rollback".into(), contribution: 15.0, detail: String::new() });
    }
    let blast = (2.0 * req.dependencies.len() as f64).min(10.0);
    if blast > 0.0 {
        factors.push(RiskFactor { name: "blast_radius".into(), contribution: blast, detail: req.dependencies.join(", ") });
    }
    let score = factors.iter().map(|f| f.contribution).sum::<f64>().clamp(0.0, 100.0);
    let level = match score {
        s if s < 25.0 => RiskLevel::Low,
        s if s < 50.0 => RiskLevel::Medium,
        s if s < 75.0 => RiskLevel::High,
        _ => RiskLevel::Critical,
    };
    // More evidence (changes described, targets given) → more confidence, never certainty.
    let evidence = req.changes.len() + usize::from(req.target_error_rate.is_some()) + usize::from(req.target_p95_latency_ms.is_some());
    let confidence = (0.5 + 0.05 * evidence as f64).min(0.9);
    RiskAssessment { score, level, confidence, factors }
}

/// Canary stages: (traffic percent, seconds) per level; riskier is never shorter or faster.
pub fn canary_plan(level: RiskLevel) -> Vec<CanaryStage> {
    let (weights, secs): (&[u8], u32) = match level {
        RiskLevel::Low => (&[25, 100], 60),
        RiskLevel::Medium => (&[10, 50, 100], 120),
        RiskLevel::High => (&[5, 25, 50, 100], 300),
        RiskLevel::Critical => (&[1, 5, 25, 50, 100], 600),
    };
    weights.iter().map(|&w| CanaryStage { weight_percent: w, min_duration_s: secs, min_samples: 30 }).collect()
}

pub fn draft(req: &ContractRequest, input_id: &str, now: Timestamp) -> Contract {
    let risk = assess(req);
    let touched: Vec<Area> = req.changes.iter().flat_map(areas).collect();
    let schema = touched.contains(&Area::Schema);
    let mut validators = vec![Validator { kind: ValidatorKind::Tests, reason: "always required".into() }];
    let mut add = |kind, reason: &str| validators.push(Validator { kind, reason: reason.into() });
    if matches!(risk.level, RiskLevel::High | RiskLevel::Critical) {
        add(ValidatorKind::Canary, "high risk: prove it on a slice of traffic first");
    }
    if req.rollback_capability {
        add(ValidatorKind::RollbackPlan, "rollback is possible: rehearse it");
    }
    if schema {
        add(ValidatorKind::FeatureFlag, "schema change: ship dark behind a flag");
        add(ValidatorKind::MigrationRollbackScript, "schema change: the down-migration must exist and be tested");
    }
    if touched.contains(&Area::Auth) {
        add(ValidatorKind::SecurityReview, "auth or permissions change");
    }
    let step = match risk.level {
        RiskLevel::Low => 50,
        RiskLevel::Medium => 25,
        RiskLevel::High => 10,
        RiskLevel::Critical => 5,
    };
    let guardrails = Guardrails {
        max_error_rate: req.target_error_rate.or(req.current_error_rate.map(|e| (e * 2.0).min(1.0))).unwrap_or(0.01),
        max_p95_latency_ms: req.target_p95_latency_ms.or(req.current_p95_latency_ms.map(|p| p * 1.2)).unwrap_or(500.0),
        max_p99_latency_ms: None,
        max_traffic_step_percent: step,
    };
    let data_loss_risk = match (schema, req.rollback_capability) {
        (false, _) => DataLossRisk::None,
        (true, true) => DataLossRisk::Medium,
        (true, false) => DataLossRisk::High,
    };
    let rollback = RollbackPlan {
        possible: req.rollback_capability,
        steps: if req.rollback_capability {
            vec!["set canary weight to 0".into(), format!("redeploy the previous version of {}", req.service), "verify error rate and p95 are back within guardrails".into()]
        } else {
            vec!["no automated rollback: fix forward or restore by hand".into()]
        },
        estimated_s: if req.rollback_capability { 300 } else { 3600 },
        data_loss_risk,
    };
    let mut suggestions = Vec::new();
    if !req.rollback_capability {
        suggestions.push("add automated rollback: it removes the largest single risk factor".to_owned());
    }
    Contract {
        contract_id: derive_id(&["contract", input_id]),
        deployment_id: req.deployment_id.clone(),
        env: req.env.clone(),
        service: req.service.clone(),
        version: req.version.clone(),
        status: ContractStatus::Draft,
        revision: 1,
        canary: canary_plan(risk.level),
        risk,
        guardrails,
        validators,
        rollback,
        suggestions,
        reason: None,
        updated_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(changes: serde_json::Value, rollback: bool) -> ContractRequest {
        serde_json::from_value(serde_json::json!({
            "deployment_id": "d-1", "service": "user-service", "env": "prod", "version": "v2",
            "changes": changes, "rollback_capability": rollback,
        }))
        .unwrap()
    }

    #[test]
    fn the_design_example_is_a_low_risk_caching_change() {
        let r = request(serde_json::json!([{"file_path":"src/cache/manager.py","change_type":"modify","lines_changed":45,"risk_tags":["caching"],"description":"Optimize cache TTL strategy"}]), true);
        let c = draft(&r, "CN_EVENTS:1", Timestamp::now());
        assert_eq!(c.risk.level, RiskLevel::Low);
        assert_eq!(c.risk.factors.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), vec!["caching"]);
        assert!(c.validators.iter().any(|v| v.kind == ValidatorKind::RollbackPlan));
    }

    #[test]
    fn a_migration_without_rollback_is_high_risk_with_a_suggestion() {
        let r = request(serde_json::json!([{"file_path":"db/migrations/0042_users.sql","change_type":"add","lines_changed":120}]), false);
        let c = draft(&r, "x", Timestamp::now());
        assert!(c.risk.level >= RiskLevel::Medium, "{:?}", c.risk);
        assert_eq!(c.rollback.data_loss_risk, DataLossRisk::High);
        assert!(c.validators.iter().any(|v| v.kind == ValidatorKind::MigrationRollbackScript));
        assert!(c.suggestions.iter().any(|s| s.contains("automated rollback")));
    }

    #[test]
    fn description_words_match_whole_words_only() {
        let r = request(serde_json::json!([{"file_path":"src/upload.rs","change_type":"modify","description":"rapid upload of payload"}]), true);
        assert!(assess(&r).factors.is_empty(), "{:?}", assess(&r).factors);
    }

    #[test]
    fn riskier_levels_never_get_fewer_or_faster_stages() {
        let levels = [RiskLevel::Low, RiskLevel::Medium, RiskLevel::High, RiskLevel::Critical];
        for pair in levels.windows(2) {
            let (safer, riskier) = (canary_plan(pair[0]), canary_plan(pair[1]));
            assert!(riskier.len() >= safer.len());
            assert!(riskier[0].weight_percent <= safer[0].weight_percent);
            assert!(riskier[0].min_duration_s >= safer[0].min_duration_s);
        }
    }

    #[test]
    fn the_score_stays_within_0_and_100() {
        let many: Vec<serde_json::Value> = (0..50)
            .map(|i| serde_json::json!({"file_path": format!("auth/migrations/{i}.sql"), "change_type":"modify","lines_changed":100000,"risk_tags":["database","auth","api","caching","config","dependency"]}))
            .collect();
        let mut r = request(serde_json::Value::Array(many), false);
        r.dependencies = (0..20).map(|i| format!("dep{i}")).collect();
        let a = assess(&r);
        assert_eq!(a.score, 100.0);
        assert_eq!(a.level, RiskLevel::Critical);
    }
}
