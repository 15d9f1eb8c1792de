//! A synthetic deploy history whose failure probabilities are known: the yardstick of the risk
//! model's calibration, shared by `tests/calibration.rs` and `examples/calibration.rs`.
//!
//! Each change is a request drawn at random (areas touched, size, rollback, dependencies,
//! env); the drafting rules list its factors, and its true failure probability comes from a
//! hidden logistic model that weighs the factors differently from the rules (caching riskier
//! than the rules say, configuration less).

use bus_schema::{ContractRequest, RiskFactor, Timestamp};
use risk_model::draft::{DraftInputs, assess};
use risk_model::learning::ServiceHistory;
use risk_model::model::{LEARNED_FACTOR, Model};

const BINS: usize = 10;

/// SplitMix64: small, seeded, good enough for drawing a world.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// One change: the request and the chance it really fails.
pub struct Change {
    pub factors: Vec<RiskFactor>,
    /// The fixed formula's probability: score / 100.
    pub formula: f64,
    pub truth: f64,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// What each factor really does to the odds of failure, per unit of its rule contribution /
/// 100 (the rules' own weights would be 4 × contribution here): a world the rules get partly
/// wrong.
fn true_effect(name: &str) -> f64 {
    match name {
        "schema_or_data_migration" => 6.0,
        "auth_or_permissions" => 5.0,
        "api_contract" => 3.0,
        "caching" => 14.0,
        "configuration" => 1.0,
        "dependencies" => 6.0,
        "irreversible_schema_change" => 8.0,
        "no_automated_rollback" => 5.0,
        "change_size" => 9.0,
        "blast_radius" => 3.0,
        _ => 4.0,
    }
}

/// One change, its factors drafted with a fresh model and no history.
pub fn draw(rng: &mut Rng) -> Change {
    let (model, history) = (Model::default(), ServiceHistory::default());
    let now: Timestamp = "2026-12-01T12:00:00Z".parse().expect("a timestamp");
    let areas = [
        ("db-migration", 0.12, "migrations/0042.sql"),
        ("auth", 0.12, "src/auth/session.rs"),
        ("api", 0.25, "src/api/handlers.rs"),
        ("caching", 0.2, "src/cache/manager.rs"),
        ("config", 0.3, "config/app.toml"),
        ("dependency-bump", 0.2, "Cargo.lock"),
    ];
    let mut changes = Vec::new();
    for (tag, p, path) in areas {
        if rng.chance(p) {
            let lines = (10.0 * (rng.unit() * 4.0).exp()) as u64;
            changes.push(serde_json::json!({"file_path": path, "change_type": "modify", "lines_changed": lines, "risk_tags": [tag]}));
        }
    }
    if changes.is_empty() {
        changes.push(serde_json::json!({"file_path": "src/lib.rs", "change_type": "modify", "lines_changed": 20}));
    }
    let deps: Vec<String> = (0..(rng.unit() * 7.0) as usize).map(|i| format!("dep-{i}")).collect();
    let env = if rng.chance(0.3) { "prod" } else { "stage" };
    let request: ContractRequest = serde_json::from_value(serde_json::json!({
        "deployment_id": format!("d-{}", rng.next()), "service": "api", "env": env, "version": "1.0.0",
        "rollback_capability": rng.chance(0.85), "dependencies": deps, "changes": changes,
    }))
    .expect("a valid request");
    let inputs = DraftInputs { history: &history, model: &model, budget_remaining: None };
    let risk = assess(&request, &inputs, now);
    let factors: Vec<RiskFactor> =
        risk.factors.into_iter().filter(|f| f.name != LEARNED_FACTOR).collect();
    let z =
        -3.0 + factors.iter().map(|f| true_effect(&f.name) * f.contribution / 100.0).sum::<f64>();
    let formula = (factors.iter().map(|f| f.contribution).sum::<f64>() / 100.0).clamp(0.0, 1.0);
    Change { factors, formula, truth: sigmoid(z) }
}

/// Expected calibration error of `(predicted, observed)` pairs over equal-width bins.
pub fn ece(pairs: &[(f64, f64)]) -> f64 {
    let mut bins = [(0usize, 0.0f64, 0.0f64); BINS];
    for &(p, y) in pairs {
        let b = ((p * BINS as f64) as usize).min(BINS - 1);
        bins[b].0 += 1;
        bins[b].1 += p;
        bins[b].2 += y;
    }
    let n = pairs.len() as f64;
    bins.iter()
        .filter(|b| b.0 > 0)
        .map(|&(c, p, y)| (c as f64 / n) * ((p - y) / c as f64).abs())
        .sum()
}

pub fn brier(pairs: &[(f64, f64)]) -> f64 {
    pairs.iter().map(|(p, y)| (p - y) * (p - y)).sum::<f64>() / pairs.len() as f64
}

/// What a model learned from `train` changes scores on `held_out` others.
pub struct Scores {
    pub brier_model: f64,
    pub brier_formula: f64,
    /// ECE against the held-out outcomes, and against the true probabilities.
    pub ece: f64,
    pub ece_truth: f64,
    pub failure_rate: f64,
}

/// Trains a fresh model on `train` changes of world `seed`, then scores `held_out` more. With
/// `bend` other than 1 the world is one the model cannot express: each change's true failure
/// probability is raised to that power (0.6 makes every change likelier to fail, the safest
/// the most, so the odds are no longer linear in the factors).
pub fn evaluate(seed: u64, train: usize, held_out: usize, bend: f64) -> (Model, Scores) {
    let mut rng = Rng(seed.wrapping_mul(0x5851_F42D_4C95_7F2D) ^ 0xC0FFEE);
    let draw_bent = |rng: &mut Rng| {
        let mut c = draw(rng);
        c.truth = c.truth.powf(bend);
        c
    };
    let start: Timestamp = "2026-12-01T12:00:00Z".parse().expect("a timestamp");
    let mut model = Model::default();
    for i in 0..train {
        let c = draw_bent(&mut rng);
        let failed = rng.chance(c.truth);
        model.learn(&c.factors, failed, start.plus(std::time::Duration::from_secs(i as u64)));
    }
    let (mut by_model, mut by_formula, mut vs_truth) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..held_out {
        let c = draw_bent(&mut rng);
        let y = if rng.chance(c.truth) { 1.0 } else { 0.0 };
        let p = model.predict(&c.factors);
        by_model.push((p, y));
        by_formula.push((c.formula, y));
        vs_truth.push((p, c.truth));
    }
    let failure_rate = by_model.iter().map(|(_, y)| y).sum::<f64>() / held_out as f64;
    let scores = Scores {
        brier_model: brier(&by_model),
        brier_formula: brier(&by_formula),
        ece: ece(&by_model),
        ece_truth: ece(&vs_truth),
        failure_rate,
    };
    (model, scores)
}
