//! How well the learned risk model is calibrated, on a synthetic deploy history whose failure
//! probabilities are known (`tests/support/deploy_world.rs`; issue 21's yardstick).
//!
//! ```text
//! cargo run -p risk-model --example calibration --release [-- SEEDS [TRAIN [BEND]]]
//! ```
//!
//! The model learns from `TRAIN` outcomes (1 600 by default) drawn from the true
//! probabilities, then predicts 20 000 held-out changes. Printed per seed and as the worst
//! over seeds: the Brier score of the model and of the fixed formula (score / 100), and the
//! expected calibration error (10 equal-width bins, weighted by count) against the held-out
//! outcomes and against the true probabilities. With `BEND` (say 0.6) each true probability
//! is raised to that power: a world whose odds are not linear in the factors.

#![allow(clippy::expect_used, clippy::print_stdout)] // a benchmark

#[path = "../tests/support/deploy_world.rs"]
mod deploy_world;

const HELD_OUT: usize = 20_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    let train: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1600);
    let bend: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    println!("seed  brier(model)  brier(formula)  ECE vs outcomes  ECE vs truth  base rate");
    let (mut worst_ece, mut worst_truth, mut model_wins, mut over) = (0.0f64, 0.0f64, 0, 0);
    for seed in 0..seeds {
        let (_, s) = deploy_world::evaluate(seed, train, HELD_OUT, bend);
        worst_ece = worst_ece.max(s.ece);
        worst_truth = worst_truth.max(s.ece_truth);
        model_wins += usize::from(s.brier_model < s.brier_formula);
        over += usize::from(s.ece > 0.03);
        println!(
            "{seed:>4}  {:>12.4}  {:>14.4}  {:>15.4}  {:>12.4}  {:>9.3}",
            s.brier_model, s.brier_formula, s.ece, s.ece_truth, s.failure_rate
        );
    }
    println!(
        "after {train} deploys, {seeds} seeds: the model's Brier beats the formula's in {model_wins}; worst ECE {worst_ece:.4} vs outcomes ({over} above 0.03), {worst_truth:.4} vs truth"
    );
}
