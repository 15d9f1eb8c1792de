//! How contracts, negotiation replies and model statistics read on a terminal.
//!
//! Everything the negotiator decided is shown with its reason: each risk factor with its
//! contribution, each validator with why it is required, each ask with why it was accepted or
//! refused. Nothing is hidden behind a flag; `--json` gives the same data for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use bus_schema::{Ask, Contract, ModelStats, NegotiationReply};

use crate::approvals::span;

/// One ask in words.
pub fn describe_ask(ask: &Ask) -> String {
    match ask {
        Ask::ShortenCanary { stages } => {
            format!("shorten the canary to {stages} stage{}", if *stages == 1 { "" } else { "s" })
        }
        Ask::SkipCanary => "skip the canary".to_owned(),
        Ask::RelaxGuardrail { guardrail, value } => format!("relax {guardrail} to {value}"),
        Ask::WaiveValidator { validator } => format!("waive the {validator} validator"),
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

/// The whole contract, section by section.
pub fn render_contract(c: &Contract) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "contract {}  revision {}  status {}", c.contract_id, c.revision, c.status);
    let _ = writeln!(
        o,
        "  deployment {} of {}/{} version {}, updated {}",
        c.deployment_id, c.env, c.service, c.version, c.updated_at
    );
    if let Some(reason) = &c.reason {
        let _ = writeln!(o, "  why {}: {reason}", c.status);
    }

    let r = &c.risk;
    let _ = writeln!(o, "\nrisk {:.1}/100 ({}), confidence {:.2}", r.score, r.level, r.confidence);
    if r.factors.is_empty() {
        let _ = writeln!(o, "  no risk factors found");
    }
    let width = r.factors.iter().map(|f| f.name.chars().count()).max().unwrap_or(0);
    for f in &r.factors {
        let detail = if f.detail.is_empty() { String::new() } else { format!("  {}", f.detail) };
        let _ = writeln!(o, "  {:<width$}  {:>+6.1}{detail}", f.name, f.contribution);
    }

    let g = &c.guardrails;
    let _ = writeln!(o, "\nguardrails");
    let _ = writeln!(o, "  max error rate      {}", percent(g.max_error_rate));
    let _ = writeln!(o, "  max p95 latency     {} ms", g.max_p95_latency_ms);
    if let Some(p99) = g.max_p99_latency_ms {
        let _ = writeln!(o, "  max p99 latency     {p99} ms");
    }
    let _ = writeln!(o, "  max traffic step    {}%", g.max_traffic_step_percent);

    let _ =
        writeln!(o, "\nvalidators{}", if c.validators.is_empty() { ": none required" } else { "" });
    let width = c.validators.iter().map(|v| v.kind.as_str().len()).max().unwrap_or(0);
    for v in &c.validators {
        let _ = writeln!(o, "  {:<width$}  {}", v.kind.as_str(), v.reason);
    }

    match c.canary.len() {
        0 => {
            let _ = writeln!(o, "\ncanary: none, all traffic at once");
        }
        n => {
            let _ = writeln!(o, "\ncanary in {n} stage{}", if n == 1 { "" } else { "s" });
            for (i, s) in c.canary.iter().enumerate() {
                let samples = if s.min_samples > 0 {
                    format!(", {} samples", s.min_samples)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    o,
                    "  {}. {:>3}% of traffic for at least {}{samples}",
                    i + 1,
                    s.weight_percent,
                    span(Duration::from_secs(u64::from(s.min_duration_s)))
                );
            }
        }
    }

    let rb = &c.rollback;
    let possible = if rb.possible { "possible" } else { "NOT automated" };
    let _ = writeln!(
        o,
        "\nrollback {possible}, about {}, data-loss risk {}",
        span(Duration::from_secs(u64::from(rb.estimated_s))),
        rb.data_loss_risk
    );
    for (i, step) in rb.steps.iter().enumerate() {
        let _ = writeln!(o, "  {}. {step}", i + 1);
    }

    if !c.suggestions.is_empty() {
        let _ = writeln!(o, "\nsuggestions");
        for s in &c.suggestions {
            let _ = writeln!(o, "  - {s}");
        }
    }
    o
}

/// The negotiator's answer: each ask, accepted or refused and why; then the contract as it
/// now stands, when it changed.
pub fn render_reply(r: &NegotiationReply) -> String {
    let mut o = String::new();
    let verdict = match (r.accepted, r.decisions.is_empty()) {
        (true, true) => "contract accepted",
        (true, false) if r.decisions.iter().all(|d| d.accepted) => "every ask accepted",
        (true, false) => "accepted in part",
        (false, _) => "refused",
    };
    let _ = writeln!(o, "negotiation round {} on contract {}: {verdict}", r.round, r.contract_id);
    if let Some(reason) = r.reason.as_deref().filter(|_| !r.accepted) {
        let _ = writeln!(o, "  why: {reason}");
    }
    for d in &r.decisions {
        let mark = if d.accepted { "accepted" } else { "REFUSED " };
        let _ = writeln!(o, "  {mark}  {}: {}", describe_ask(&d.ask), d.reason);
    }
    match &r.contract {
        Some(c) => {
            let _ = writeln!(
                o,
                "\nthe contract is now revision {}, status {}:\n",
                c.revision, c.status
            );
            o.push_str(&render_contract(c));
        }
        None => {
            let _ = writeln!(o, "the contract did not change");
        }
    }
    o
}

/// Calibration first (is the model any good?), then what it learned, largest weights first.
pub fn render_stats(s: &ModelStats) -> String {
    let mut o = String::new();
    let updated = s.updated_at.map(|t| format!(", updated {}", t.millis())).unwrap_or_default();
    let _ = writeln!(o, "risk model: {} deploy outcomes learned from{updated}", s.observations);
    match s.brier {
        Some(b) => {
            let _ = writeln!(
                o,
                "Brier score {b:.4} (mean squared error of the predicted failure probability; 0 is perfect, 0.25 is a coin toss)"
            );
        }
        None => {
            let _ = writeln!(o, "Brier score: none yet (no outcomes observed)");
        }
    }
    if let Some(e) = s.ece {
        let _ = writeln!(
            o,
            "expected calibration error {e:.4} (mean gap between predicted and observed failure rate, weighted by count; 0 is perfect)"
        );
    }
    if let Some(c) = s.calibration {
        let _ = writeln!(
            o,
            "calibration: P(fail) = sigmoid({:.3} × raw log-odds {:+.3}) (Platt, fitted on recent outcomes)",
            c.a, c.b
        );
    }
    if !s.reliability.is_empty() {
        let _ = writeln!(o, "\nreliability (does a predicted p fail p of the time?)");
        let _ = writeln!(
            o,
            "  {:<11}  {:>6}  {:>14}  {:>13}",
            "PREDICTED", "COUNT", "MEAN PREDICTED", "OBSERVED RATE"
        );
        for b in &s.reliability {
            let band = format!("{:.2}–{:.2}", b.from, b.to);
            let _ = writeln!(
                o,
                "  {band:<11}  {:>6}  {:>14.3}  {:>13.3}",
                b.count, b.mean_predicted, b.observed_rate
            );
        }
    }
    let _ = writeln!(
        o,
        "\nlearned weights of the standardised factors (largest effect first), bias {:+.3}",
        s.bias
    );
    let mut weights: Vec<_> = s.weights.iter().collect();
    weights.sort_by(|a, b| {
        b.weight.abs().total_cmp(&a.weight.abs()).then_with(|| a.name.cmp(&b.name))
    });
    if weights.is_empty() {
        let _ = writeln!(o, "  none yet");
    }
    let width = weights.iter().map(|w| w.name.chars().count()).max().unwrap_or(0);
    for w in weights {
        let _ = writeln!(o, "  {:<width$}  {:>+8.3}", w.name, w.weight);
    }
    o
}
