//! What one metric sample costs the deploy agent during a rollout, by how many samples the
//! stage holds: judging the stage (both tests, every guardrail) and storing the rollout in
//! redb, as the agent does for every sample.
//!
//! `cargo run --release -p deploy-agent --example stage_cost`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::time::Instant;

use agent_runtime::store::{Store, Table};
use bus_schema::{CanaryStage, Contract, DeployEvent, MetricSample};
use deploy_agent::judge::MAX_STAGE_SAMPLES;
use deploy_agent::rollout::Rollout;
use serde_json::json;

const ROLLOUTS: Table<Rollout> = Table::new("rollouts");
const ROUNDS: usize = 200;

fn main() {
    let dir = std::env::temp_dir().join(format!("cn-stage-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir.join("state.redb")).unwrap();
    println!("{{\"rounds\": {ROUNDS}, \"per_sample\": [");
    for (i, per_side) in [30, 100, MAX_STAGE_SAMPLES].into_iter().enumerate() {
        let mut rollout = observing(per_side);
        let bytes = rmp_size(&rollout);
        let (mut judge_us, mut store_us) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let at = per_side as u64 + round as u64;
            let canary = round % 2 == 0;
            let t = Instant::now();
            let effects = rollout.on_metric(&metric(at, canary), bus_schema::Timestamp::now());
            judge_us.push(t.elapsed().as_secs_f64() * 1e6);
            assert!(effects.is_empty(), "the stage must keep observing: {effects:?}");
            // Keep the stage at its size (at the cap, adding a sample drops the oldest).
            if per_side < MAX_STAGE_SAMPLES {
                let side = if canary { &mut rollout.data.canary } else { &mut rollout.data.stable };
                side.pop();
            }
            let t = Instant::now();
            store.put(&ROLLOUTS, "stage/api", &rollout).unwrap();
            store_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let comma = if i < 2 { "," } else { "" };
        println!(
            "  {{\"samples_per_side\": {per_side}, \"rollout_bytes\": {bytes}, \"judge_us\": {{\"p50\": {:.0}, \"p99\": {:.0}}}, \"store_us\": {{\"p50\": {:.0}, \"p99\": {:.0}}}}}{comma}",
            pct(&mut judge_us, 0.5),
            pct(&mut judge_us, 0.99),
            pct(&mut store_us, 0.5),
            pct(&mut store_us, 0.99)
        );
    }
    println!("]}}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A rollout observing its first stage, which holds `per_side` samples a side and lasts a day.
fn observing(per_side: usize) -> Rollout {
    let mut contract: Contract = serde_json::from_value(json!({
        "contract_id": "00000000-0000-0000-0000-000000000001", "deployment_id": "d-1", "env": "stage", "service": "api", "version": "2.0.0",
        "status": "accepted", "revision": 1, "risk": {"score": 40.0, "level": "medium", "confidence": 0.6, "factors": []},
        "guardrails": {"max_error_rate": 0.02, "max_p95_latency_ms": 500.0, "max_traffic_step_percent": 50},
        "validators": [], "canary": [], "rollback": {"possible": true, "steps": [], "estimated_s": 60, "data_loss_risk": "none"},
        "suggestions": [], "updated_at": "2026-12-04T10:00:00Z"
    }))
    .unwrap();
    contract.canary =
        vec![CanaryStage { weight_percent: 10, min_duration_s: 86_400, min_samples: 30 }];
    let deploy: DeployEvent =
        serde_json::from_value(json!({"service": "api", "env": "stage", "version": "2.0.0", "status": "started", "timestamp": "2026-12-04T10:00:00Z", "deployment_id": "d-1"})).unwrap();
    let (mut rollout, _) = Rollout::start(
        &contract,
        &deploy,
        Some("1.0.0".into()),
        "c".into(),
        bus_schema::Timestamp::now(),
    );
    rollout.phase = deploy_agent::rollout::Phase::Observing;
    for at in 0..per_side as u64 {
        rollout.data.add(&metric(at, true));
        rollout.data.add(&metric(at, false));
    }
    rollout
}

/// A healthy sample `at` ticks of 15 s in.
fn metric(at: u64, canary: bool) -> MetricSample {
    let wobble = ((at * 7919 + u64::from(canary) * 104_729) % 1000) as f64 / 1000.0;
    let ts = "2026-12-04T10:00:00Z"
        .parse::<bus_schema::Timestamp>()
        .unwrap()
        .plus(std::time::Duration::from_secs(at * 15));
    serde_json::from_value(json!({
        "service": "api", "env": "stage", "timestamp": ts.to_string(), "variant": if canary { "canary" } else { "stable" },
        "error_rate": 0.002 + 0.002 * wobble, "p95_latency_ms": 150.0 + 50.0 * wobble, "qps": if canary { 40.0 } else { 360.0 }
    }))
    .unwrap()
}

/// The rollout's size as the store keeps it (MessagePack).
fn rmp_size(r: &Rollout) -> usize {
    rmp_serde::to_vec_named(r).unwrap().len()
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}
