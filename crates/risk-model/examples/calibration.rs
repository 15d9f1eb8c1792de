//! How well the learned risk model is calibrated, on a synthetic deploy history whose failure
//! probabilities are known (issue 21's yardstick).
//!
//! ```text
//! cargo run -p risk-model --example calibration --release [-- SEEDS [TRAIN]]
//! ```
//!
//! Each seed draws requests at random (areas touched, size, rollback, dependencies, env), lets
//! the drafting rules list their factors, and gives each change a true failure probability
//! from a hidden logistic model that weighs the factors differently from the rules (caching
//! riskier than the rules say, configuration less). The model learns from `TRAIN` outcomes
//! (1 600 by default) drawn from those probabilities, then predicts 20 000 held-out changes.
//! Printed per seed and as the worst over seeds: the Brier score of the model and of the fixed
//! formula (score / 100), and the expected calibration error (10 equal-width bins, weighted by
//! count) against the held-out outcomes and against the true probabilities.

#![allow(clippy::expect_used, clippy::print_stdout)] // a benchmark

use bus_schema::{ContractRequest, RiskFactor, Timestamp};
use risk_model::draft::{DraftInputs, assess};
use risk_model::learning::ServiceHistory;
use risk_model::model::{LEARNED_FACTOR, Model};

const HELD_OUT: usize = 20_000;
const BINS: usize = 10;

/// SplitMix64: small, seeded, good enough for drawing a world.
struct Rng(u64);

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

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// One change: the request and the chance it really fails.
struct Change {
    factors: Vec<RiskFactor>,
    formula: f64,
    truth: f64,
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

fn draw(rng: &mut Rng, model: &Model, history: &ServiceHistory, now: Timestamp) -> Change {
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
    let inputs = DraftInputs { history, model, budget_remaining: None };
    let risk = assess(&request, &inputs, now);
    let factors: Vec<RiskFactor> =
        risk.factors.into_iter().filter(|f| f.name != LEARNED_FACTOR).collect();
    let z =
        -3.0 + factors.iter().map(|f| true_effect(&f.name) * f.contribution / 100.0).sum::<f64>();
    let formula = (factors.iter().map(|f| f.contribution).sum::<f64>() / 100.0).clamp(0.0, 1.0);
    Change { factors, formula, truth: sigmoid(z) }
}

/// Expected calibration error of `(predicted, observed)` pairs over equal-width bins.
fn ece(pairs: &[(f64, f64)]) -> f64 {
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

fn brier(pairs: &[(f64, f64)]) -> f64 {
    pairs.iter().map(|(p, y)| (p - y) * (p - y)).sum::<f64>() / pairs.len() as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    let train: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1600);
    let now: Timestamp = "2026-12-01T12:00:00Z".parse().expect("a timestamp");
    let history = ServiceHistory::default();
    let fresh = Model::default();
    println!("seed  brier(model)  brier(formula)  ECE vs outcomes  ECE vs truth  base rate");
    let (mut worst_ece, mut worst_truth, mut model_wins) = (0.0f64, 0.0f64, 0);
    for seed in 0..seeds {
        let mut rng = Rng(seed.wrapping_mul(0x5851_F42D_4C95_7F2D) ^ 0xC0FFEE);
        let mut model = Model::default();
        for i in 0..train {
            let c = draw(&mut rng, &fresh, &history, now);
            let failed = rng.chance(c.truth);
            model.learn(&c.factors, failed, now.plus(std::time::Duration::from_secs(i as u64)));
        }
        let (mut by_model, mut by_formula, mut vs_truth) = (Vec::new(), Vec::new(), Vec::new());
        let mut failures = 0usize;
        for _ in 0..HELD_OUT {
            let c = draw(&mut rng, &fresh, &history, now);
            let y = if rng.chance(c.truth) { 1.0 } else { 0.0 };
            failures += y as usize;
            let p = model.predict(&c.factors);
            by_model.push((p, y));
            by_formula.push((c.formula, y));
            vs_truth.push((p, c.truth));
        }
        let (bm, bf) = (brier(&by_model), brier(&by_formula));
        let (e, et) = (ece(&by_model), ece(&vs_truth));
        worst_ece = worst_ece.max(e);
        worst_truth = worst_truth.max(et);
        model_wins += usize::from(bm < bf);
        println!(
            "{seed:>4}  {bm:>12.4}  {bf:>14.4}  {e:>15.4}  {et:>12.4}  {:>9.3}",
            failures as f64 / HELD_OUT as f64
        );
    }
    println!(
        "after {train} deploys, {seeds} seeds: the model's Brier beats the formula's in {model_wins}; worst ECE {worst_ece:.4} vs outcomes, {worst_truth:.4} vs truth"
    );
}
