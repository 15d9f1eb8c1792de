//! Drafting a contract from a request: a transparent additive risk model adjusted by what has
//! been learned, and the guardrails, validators, canary and rollback plans that follow.
//!
//! Score (always clamped to 0..=100; every factor is listed with its contribution):
//!
//! | factor | contribution |
//! |---|---|
//! | area touched (tags, path, description words) | schema 25, auth 20, api 10, caching 10, configuration 8, dependencies 8 |
//! | `irreversible_schema_change` (schema and no rollback) | 15 |
//! | `no_automated_rollback` | 15 |
//! | `change_size` | lines: ≥50 → 5, ≥200 → 10, ≥500 → 15; more than 10 files +5 |
//! | `blast_radius` | 2 per dependency (max 10), +5 in `prod`/`production` (full traffic) |
//! | `recent_failures` | 5 per failed, rolled-back or incident-causing deploy of the service in the last 30 days (max 20) |
//! | `error_budget_low` | 10 when less than 25% of the error budget is left |
//! | `learned_history` | the model's adjustment, -20..=30 (see [`crate::model`]) |
//!
//! Levels: <25 low, <50 medium, <75 high, else critical. Tags and descriptions match on whole
//! words, case-insensitively, so "DB-Migration" and "db migration" are schema changes and
//! "rapid upload" is not an API change; a path counts in every area it matches.
//!
//! Confidence grows with the request's evidence up to [`REQUEST_CONFIDENCE`] (0.55) and only
//! outcomes of similar changes take it past what negotiation needs (0.6), never past 0.95.
//!
//! Error-budget gate: when `budget_remaining <= 0` the contract is rejected with
//! `error_budget_freeze`, unless a change is tagged as urgent: a tag containing the word
//! `security`, `p0`, `hotfix` or `cve` (see [`ContractFacts::urgent`]).

use std::time::Duration;

use bus_schema::{
    CanaryStage, Change, Contract, ContractRequest, ContractStatus, DataLossRisk, Guardrails,
    ReasonCode, RiskAssessment, RiskFactor, RiskLevel, RollbackPlan, Timestamp, Validator,
    ValidatorKind, derive_id,
};
use serde::{Deserialize, Serialize};

use crate::learning::ServiceHistory;
use crate::model::{LEARNED_FACTOR, Model};

/// What a draft depends on besides the request.
#[derive(Debug, Clone, Copy)]
pub struct DraftInputs<'a> {
    pub history: &'a ServiceHistory,
    pub model: &'a Model,
    /// Fraction of the service's error budget left (negative when overspent); `None` if unknown.
    pub budget_remaining: Option<f64>,
}

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
            Area::Api | Area::Caching => 10.0,
            Area::Config | Area::Dependencies => 8.0,
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
            "database" | "databases" | "db" | "migration" | "migrations" | "migrate" | "schema"
            | "schemas" | "sql" | "ddl" => Area::Schema,
            "auth" | "authn" | "authz" | "authentication" | "authorization" | "permission"
            | "permissions" | "security" | "rbac" | "oauth" | "acl" | "sso" | "jwt" => Area::Auth,
            "api" | "apis" | "endpoint" | "endpoints" | "grpc" | "graphql" | "openapi"
            | "swagger" | "proto" => Area::Api,
            "cache" | "caches" | "caching" | "cached" | "ttl" => Area::Caching,
            "config" | "configuration" | "settings" | "flag" | "flags" | "toggle" => Area::Config,
            "dependency" | "dependencies" | "deps" | "upgrade" | "bump" => Area::Dependencies,
            _ => return None,
        })
    }

    /// Every area a path belongs to: `db/migrations/0042_grant_admin_permissions.sql` is a
    /// schema change and a permissions change.
    fn from_path(path: &str) -> Vec<Area> {
        let p = path.to_ascii_lowercase();
        let file = p.rsplit('/').next().unwrap_or_default();
        let ext = file.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
        let segments: Vec<&str> = p.split(['/', '.', '_', '-']).collect();
        let any = |words: &[&str]| segments.iter().any(|s| words.contains(s));
        // Data schemas by whole directory names or the file's own words: `db/schema.rb` and
        // `migrations/0042.sql` are, a crate called `bus-schema` is not.
        let dirs: Vec<&str> = p.split('/').collect();
        let dirs = &dirs[..dirs.len().saturating_sub(1)];
        let stem_words: Vec<&str> = file.split(['.', '_', '-']).collect();
        let schema_dir = dirs.iter().any(|d| {
            matches!(
                *d,
                "migration" | "migrations" | "migrate" | "schema" | "schemas" | "db" | "database"
            )
        });
        let schema_file = stem_words
            .iter()
            .any(|w| matches!(*w, "migration" | "migrations" | "migrate" | "schema"));
        let manifest = matches!(
            file,
            "cargo.toml"
                | "cargo.lock"
                | "package.json"
                | "package-lock.json"
                | "yarn.lock"
                | "requirements.txt"
                | "pyproject.toml"
                | "go.mod"
                | "go.sum"
                | "pom.xml"
                | "gemfile"
                | "build.gradle"
        );
        let config = !manifest
            && (matches!(ext, "yaml" | "yml" | "toml" | "ini" | "env" | "conf")
                || any(&["config", "configuration", "settings"]));
        [
            (Area::Schema, matches!(ext, "sql" | "ddl" | "prisma") || schema_dir || schema_file),
            (
                Area::Auth,
                any(&[
                    "auth",
                    "authn",
                    "authz",
                    "permission",
                    "permissions",
                    "rbac",
                    "security",
                    "acl",
                    "oauth",
                ]),
            ),
            (Area::Dependencies, manifest),
            (Area::Api, ext == "proto" || any(&["api", "openapi", "swagger", "graphql"])),
            (Area::Caching, any(&["cache", "caching"])),
            (Area::Config, config),
        ]
        .into_iter()
        .filter_map(|(area, hit)| hit.then_some(area))
        .collect()
    }
}

/// The lower-case alphanumeric words of a text: "DB-Migration" → ["db", "migration"].
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// The areas a change touches: from its tags, its path and the words of its description.
fn areas(change: &Change) -> Vec<Area> {
    let mut out: Vec<Area> = change
        .risk_tags
        .iter()
        .flat_map(|t| words(t))
        .chain(words(&change.description))
        .filter_map(|w| Area::from_word(&w))
        .chain(Area::from_path(&change.file_path))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn touched(req: &ContractRequest) -> Vec<Area> {
    let mut all: Vec<Area> = req.changes.iter().flat_map(areas).collect();
    all.sort();
    all.dedup();
    all
}

/// What negotiation and the gate need to know about a request; the shell keeps it with the
/// contract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractFacts {
    pub touches_schema: bool,
    pub touches_auth: bool,
    pub rollback_capability: bool,
    /// A change is tagged as a security or P0 fix: a tag with the word `security`, `p0`,
    /// `hotfix` or `cve`. Such contracts pass the error-budget freeze.
    pub urgent: bool,
}

pub fn facts(req: &ContractRequest) -> ContractFacts {
    let areas = touched(req);
    ContractFacts {
        touches_schema: areas.contains(&Area::Schema),
        touches_auth: areas.contains(&Area::Auth),
        rollback_capability: req.rollback_capability,
        urgent: req
            .changes
            .iter()
            .flat_map(|c| &c.risk_tags)
            .flat_map(|t| words(t))
            .any(|w| matches!(w.as_str(), "security" | "p0" | "hotfix" | "cve")),
    }
}

/// Whether the budget is spent (an unknown or non-finite budget is not).
pub fn budget_spent(budget_remaining: Option<f64>) -> bool {
    budget_remaining.is_some_and(|b| b <= 0.0)
}

fn factor(name: &str, contribution: f64, detail: String) -> RiskFactor {
    RiskFactor { name: name.to_owned(), contribution, detail }
}

pub fn level_of(score: f64) -> RiskLevel {
    match score {
        s if s < 25.0 => RiskLevel::Low,
        s if s < 50.0 => RiskLevel::Medium,
        s if s < 75.0 => RiskLevel::High,
        _ => RiskLevel::Critical,
    }
}

/// The rule factors of a request (everything but the learned adjustment).
fn rule_factors(
    req: &ContractRequest,
    inputs: &DraftInputs<'_>,
    now: Timestamp,
) -> Vec<RiskFactor> {
    let areas = touched(req);
    let mut out: Vec<RiskFactor> =
        areas.iter().map(|a| factor(a.name(), a.weight(), String::new())).collect();
    if areas.contains(&Area::Schema) && !req.rollback_capability {
        out.push(factor(
            "irreversible_schema_change",
            15.0,
            "schema change without automated rollback".into(),
        ));
    }
    if !req.rollback_capability {
        out.push(factor("no_automated_rollback", 15.0, String::new()));
    }
    let lines: u64 = req.changes.iter().map(|c| u64::from(c.lines_changed)).sum();
    let size = match lines {
        0..=49 => 0.0,
        50..=199 => 5.0,
        200..=499 => 10.0,
        _ => 15.0,
    } + if req.changes.len() > 10 { 5.0 } else { 0.0 };
    if size > 0.0 {
        out.push(factor(
            "change_size",
            size,
            format!("{lines} lines in {} files", req.changes.len()),
        ));
    }
    let prod = matches!(req.env.as_str(), "prod" | "production");
    let blast = (2.0 * req.dependencies.len() as f64).min(10.0) + if prod { 5.0 } else { 0.0 };
    if blast > 0.0 {
        let mut detail = req.dependencies.join(", ");
        if prod {
            detail = if detail.is_empty() {
                "production traffic".into()
            } else {
                format!("{detail}; production traffic")
            };
        }
        out.push(factor("blast_radius", blast, detail));
    }
    let failures = inputs.history.failures_since(now, Duration::from_secs(30 * 24 * 3600));
    if failures > 0 {
        let detail =
            format!("{failures} failed, rolled back or incident-causing deploys in 30 days");
        out.push(factor("recent_failures", (5.0 * failures as f64).min(20.0), detail));
    }
    if let Some(b) = inputs.budget_remaining.filter(|b| b.is_finite() && *b > 0.0 && *b < 0.25) {
        out.push(factor(
            "error_budget_low",
            10.0,
            format!("{:.0}% of the error budget left", b * 100.0),
        ));
    }
    out
}

/// The most confidence a request's own evidence gives, below [`crate::MIN_CONFIDENCE`].
pub const REQUEST_CONFIDENCE: f64 = 0.55;
/// The longest latency guardrail the schema accepts (a day, in milliseconds).
pub const MAX_GUARDRAIL_MS: f64 = 86_400_000.0;

/// The risk of a request: rule factors, the learned adjustment, score, level and confidence.
pub fn assess(req: &ContractRequest, inputs: &DraftInputs<'_>, now: Timestamp) -> RiskAssessment {
    let mut factors = rule_factors(req, inputs, now);
    let learned = inputs.model.adjustment(&factors);
    if learned.abs() >= 0.5 {
        let detail = format!(
            "P(fail) {:.2} vs base rate {:.2}",
            inputs.model.predict(&factors),
            inputs.model.base_rate()
        );
        factors.push(factor(LEARNED_FACTOR, (learned * 10.0).round() / 10.0, detail));
    }
    let sum: f64 = factors.iter().map(|f| f.contribution).sum();
    let score = if sum.is_finite() { sum.clamp(0.0, 100.0) } else { 100.0 };
    // Evidence from the request (changes described, targets given) and from outcomes of
    // similar changes raises confidence; never certainty. The request alone stops at
    // REQUEST_CONFIDENCE, short of what negotiation asks for: only outcomes cross it.
    let evidence = req.changes.len().min(4)
        + usize::from(req.target_error_rate.is_some())
        + usize::from(req.target_p95_latency_ms.is_some());
    let from_request = (REQUEST_CONFIDENCE - 0.5) * evidence as f64 / 6.0;
    let n = inputs.model.similar_observations(&factors) as f64;
    let confidence = (0.5 + from_request + 0.35 * n / (n + 10.0)).min(0.95);
    RiskAssessment { score, level: level_of(score), confidence, factors }
}

/// Canary stages per level: riskier is never fewer, faster, or bigger-stepped.
pub fn canary_plan(level: RiskLevel) -> Vec<CanaryStage> {
    let (weights, secs): (&[u8], u32) = match level {
        RiskLevel::Low => (&[25, 100], 60),
        RiskLevel::Medium => (&[10, 50, 100], 120),
        RiskLevel::High => (&[5, 25, 50, 75, 100], 300),
        RiskLevel::Critical => (&[1, 5, 10, 25, 50, 75, 100], 600),
    };
    weights
        .iter()
        .map(|&w| CanaryStage { weight_percent: w, min_duration_s: secs, min_samples: 30 })
        .collect()
}

/// The largest traffic increase between stages (from 0 to the first stage included); 100 with
/// no canary.
pub fn max_step(canary: &[CanaryStage]) -> u8 {
    let mut prev = 0u8;
    let mut step = 0u8;
    for s in canary {
        step = step.max(s.weight_percent.saturating_sub(prev));
        prev = s.weight_percent;
    }
    if canary.is_empty() { 100 } else { step }
}

/// Guardrails relative to the service's own targets, or to its current values when no target
/// is given (error rate ×2, p95 ×1.2), with defaults when nothing is known. The p99 guardrail is
/// 1.5 × the p95 guardrail when the p95 is known from the request. Latencies stop at
/// [`MAX_GUARDRAIL_MS`], so the contract always passes the schema's validation.
fn guardrails(req: &ContractRequest, canary: &[CanaryStage]) -> Guardrails {
    let finite = |v: Option<f64>| v.filter(|x| x.is_finite() && *x >= 0.0);
    let error = finite(req.target_error_rate)
        .or(finite(req.current_error_rate).map(|e| (e * 2.0).max(0.001)))
        .unwrap_or(0.01)
        .min(1.0);
    let known_p95 =
        finite(req.target_p95_latency_ms).or(finite(req.current_p95_latency_ms).map(|p| p * 1.2));
    Guardrails {
        max_error_rate: error,
        max_p95_latency_ms: known_p95.unwrap_or(500.0).min(MAX_GUARDRAIL_MS),
        max_p99_latency_ms: known_p95.map(|p| (p * 1.5).min(MAX_GUARDRAIL_MS)),
        max_traffic_step_percent: max_step(canary),
    }
}

pub fn draft(
    req: &ContractRequest,
    inputs: &DraftInputs<'_>,
    input_id: &str,
    now: Timestamp,
) -> Contract {
    let risk = assess(req, inputs, now);
    let facts = facts(req);
    let high = matches!(risk.level, RiskLevel::High | RiskLevel::Critical);
    let mut validators =
        vec![Validator { kind: ValidatorKind::Tests, reason: "always required".into() }];
    let mut add = |kind, reason: &str| validators.push(Validator { kind, reason: reason.into() });
    if high {
        add(ValidatorKind::Canary, "high risk: prove it on a slice of traffic first");
    }
    if req.rollback_capability {
        add(ValidatorKind::RollbackPlan, "rollback is possible: rehearse it");
    }
    if facts.touches_schema {
        add(ValidatorKind::FeatureFlag, "schema change: ship dark behind a flag");
        add(
            ValidatorKind::MigrationRollbackScript,
            "schema change: the down-migration must exist and be tested",
        );
    }
    if facts.touches_auth {
        add(ValidatorKind::SecurityReview, "auth or permissions change");
    }
    let canary = canary_plan(risk.level);
    let data_loss_risk = match (facts.touches_schema, req.rollback_capability) {
        (false, _) => DataLossRisk::None,
        (true, true) => DataLossRisk::Medium,
        (true, false) => DataLossRisk::High,
    };
    let mut steps = vec!["set canary weight to 0".to_owned()];
    if facts.touches_schema {
        steps.push("turn the feature flag off so no code reads the new schema".into());
    }
    steps.push(format!("redeploy the previous version of {}", req.service));
    if facts.touches_schema {
        steps.push("run the migration rollback script and check row counts".into());
    }
    steps.push("verify error rate and p95 are back within guardrails".into());
    let rollback = if req.rollback_capability {
        RollbackPlan {
            possible: true,
            estimated_s: if facts.touches_schema { 900 } else { 300 },
            steps,
            data_loss_risk,
        }
    } else {
        RollbackPlan {
            possible: false,
            steps: vec!["no automated rollback: fix forward or restore by hand".into()],
            estimated_s: 3600,
            data_loss_risk,
        }
    };
    let mut suggestions = suggestions(req, &risk, &facts);
    let mut status = ContractStatus::Draft;
    let mut reason = None;
    if budget_spent(inputs.budget_remaining) {
        if facts.urgent {
            suggestions.push("error budget spent: allowed through the freeze as a security or P0 fix; watch the canary closely".into());
        } else {
            status = ContractStatus::Rejected;
            reason = Some(ReasonCode::ErrorBudgetFreeze.as_str().to_owned());
            suggestions.push(
                "error budget spent: deploys are frozen until it recovers; if this is a security or P0 fix, tag a change `security`, `p0` or `hotfix` and request again".into(),
            );
        }
    }
    Contract {
        contract_id: derive_id(&["contract", input_id]),
        deployment_id: req.deployment_id.clone(),
        env: req.env.clone(),
        service: req.service.clone(),
        version: req.version.clone(),
        status,
        revision: 1,
        guardrails: guardrails(req, &canary),
        canary,
        risk,
        validators,
        rollback,
        suggestions,
        reason,
        updated_at: now,
    }
}

fn suggestions(req: &ContractRequest, risk: &RiskAssessment, facts: &ContractFacts) -> Vec<String> {
    let mut out = Vec::new();
    if !req.rollback_capability {
        out.push("add automated rollback: it removes the largest single risk factor".to_owned());
    }
    if facts.touches_schema {
        out.push(
            "add a feature flag and an expand/contract migration so the old version keeps working"
                .into(),
        );
    }
    let lines: u64 = req.changes.iter().map(|c| u64::from(c.lines_changed)).sum();
    if lines >= 500 || req.changes.len() > 10 {
        out.push("split the change: smaller deploys fail less and are easier to roll back".into());
    }
    if risk.factors.iter().any(|f| f.name == "recent_failures") {
        out.push(
            "recent deploys of this service failed: fix their cause before adding more change"
                .into(),
        );
    }
    if req.target_error_rate.is_none() && req.target_p95_latency_ms.is_none() {
        out.push(
            "give target_error_rate and target_p95_latency_ms so the guardrails follow your SLO"
                .into(),
        );
    }
    out
}

/// A draft without outcomes or budget: the default model and an empty history
/// (`cnctl contract from-git --offline`).
pub fn draft_offline(req: &ContractRequest, now: Timestamp) -> Contract {
    let (history, model) = (ServiceHistory::default(), Model::default());
    let inputs = DraftInputs { history: &history, model: &model, budget_remaining: None };
    draft(req, &inputs, &format!("offline:{}:{}:{}", req.env, req.service, req.deployment_id), now)
}

#[cfg(test)]
#[path = "draft_tests.rs"]
mod tests;
