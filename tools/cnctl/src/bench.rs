//! `cnctl bench`: measure a running fleet and print JSON.
//!
//! - **latency**: for each of `--services` services in `dev`, a deploy then a crash-looping
//!   metric; the time from publishing the metric to the executor's result on
//!   `cn.actions.executed.dev.{service}` (detector → optimizer → governance → executor, each hop
//!   a JetStream publish and an ack). Metrics are sent one at a time, so this is the latency of
//!   an idle fleet, not under load.
//! - **ingest**: `--samples` healthy metric samples published as fast as JetStream acks them;
//!   the rate is samples divided by the time from the first publish until the detector's
//!   instances report (on their status endpoints) that they finished that many more inputs.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agent_runtime::config::NatsArgs;
use async_nats::jetstream;
use bus_schema::codec::{Encoding, Limits, Outgoing, decode};
use bus_schema::{
    DeployEvent, DeployStatus, Env, ExecutionResult, MetricSample, ServiceName, Timestamp, subject,
};
use futures_util::StreamExt;
use serde_json::json;

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Services for the latency run (one crash each).
    #[arg(long, default_value_t = 100)]
    pub services: usize,
    /// Metric samples for the ingest run.
    #[arg(long, default_value_t = 20_000)]
    pub samples: usize,
    /// Prefix of the benchmark's service names, so runs do not collide.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A benchmark service's name.
fn service(prefix: &str, i: usize) -> Result<ServiceName, Failure> {
    Ok(format!("{prefix}-{i}").parse().map_err(|e| format!("--prefix {prefix:?}: {e}"))?)
}

/// A metric sample as a pipeline would publish it.
fn sample(env: &Env, service: &ServiceName, crash_looping: Option<bool>) -> MetricSample {
    MetricSample {
        service: service.clone(),
        env: env.clone(),
        error_rate: crash_looping.is_none().then_some(0.001),
        p95_latency_ms: crash_looping.is_none().then_some(120.0),
        p99_latency_ms: None,
        cpu_percent: crash_looping.is_none().then_some(35.0),
        memory_percent: None,
        crash_looping,
        restarts: None,
        qps: None,
        variant: None,
        timestamp: Timestamp::now(),
        source: Some("cnctl-bench".to_owned()),
    }
}

async fn latency(
    client: &async_nats::Client,
    js: &jetstream::Context,
    args: &BenchArgs,
) -> Result<serde_json::Value, Failure> {
    let env = Env::from_static("dev");
    let mut results = client.subscribe(subject::EXECUTED.env(&env).pattern().to_owned()).await?;
    for i in 0..args.services {
        let service = service(&args.prefix, i)?;
        let deploy = DeployEvent {
            service: service.clone(),
            env: env.clone(),
            version: "1.0.0".to_owned(),
            previous_version: None,
            commit_sha: None,
            status: DeployStatus::Succeeded,
            timestamp: Timestamp::now(),
            deployment_id: None,
        };
        let out = Outgoing::new(&subject::DEPLOY_EVENTS.subject(&env, &service), &deploy)?;
        js.publish(out.subject, out.payload.into()).await?.await?;
    }
    let mut latencies = Vec::with_capacity(args.services);
    let mut timeouts = 0;
    for i in 0..args.services {
        let service = service(&args.prefix, i)?;
        let out = Outgoing::new(
            &subject::METRIC_EVENTS.subject(&env, &service),
            &sample(&env, &service, Some(true)),
        )?;
        let start = Instant::now();
        client.publish(out.subject, out.payload.into()).await?;
        client.flush().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, results.next()).await {
                Ok(Some(msg)) => {
                    let Ok(r) = decode::<ExecutionResult>(
                        Encoding::MsgPack,
                        &msg.payload,
                        &Limits::DEFAULT,
                    ) else {
                        continue;
                    };
                    if r.service == service {
                        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
                        break;
                    }
                }
                _ => {
                    timeouts += 1;
                    break;
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(json!({
        "what": "crash metric published -> execution result received",
        "samples": latencies.len(),
        "timeouts": timeouts,
        "p50_ms": round(percentile(&latencies, 50.0)),
        "p99_ms": round(percentile(&latencies, 99.0)),
        "max_ms": round(latencies.last().copied().unwrap_or(f64::NAN)),
    }))
}

/// Inputs the issue detector's instances have finished (handled or rejected), from their
/// status endpoints: asking the server for the consumer's info instead would make nats-server
/// before 2.9.15 recount the filtered consumer's pending messages on every delivery.
async fn detector_finished(
    client: &async_nats::Client,
    subjects: &[String],
) -> Result<u64, Failure> {
    let mut finished = 0;
    for subject in subjects {
        let reply = client.request(subject.clone(), "".into()).await?;
        let status: bus_schema::AgentStatus = serde_json::from_slice(&reply.payload)?;
        finished += status.heartbeat.processed + status.heartbeat.rejected;
    }
    Ok(finished)
}

async fn ingest(
    client: &async_nats::Client,
    js: &jetstream::Context,
    args: &BenchArgs,
) -> Result<serde_json::Value, Failure> {
    let detectors: Vec<String> = crate::status::discover(client, Duration::from_millis(500))
        .await?
        .into_iter()
        .filter(|s| s.agent == bus_schema::fleet::ISSUE_DETECTOR.as_str())
        .map(|s| format!("{}.{}.{}", subject::STATUS.info().prefix, s.agent, s.instance))
        .collect();
    if detectors.is_empty() {
        return Err("no issue detector answers on $SRV.PING: is the fleet up?".into());
    }
    let before = detector_finished(client, &detectors).await?;
    let env = Env::from_static("dev");
    let services = (0..10)
        .map(|i| service(&format!("{}-ingest", args.prefix), i))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let mut acks = Vec::with_capacity(256);
    for n in 0..args.samples {
        let service = &services[n % services.len()];
        let out = Outgoing::new(
            &subject::METRIC_EVENTS.subject(&env, service),
            &sample(&env, service, None),
        )?;
        acks.push(js.publish(out.subject, out.payload.into()).await?);
        if acks.len() == 256 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks.drain(..) {
        a.await?;
    }
    let published = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    let target = before + args.samples as u64;
    loop {
        let finished = detector_finished(client, &detectors).await?;
        if finished >= target {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the detector did not drain within 10 minutes ({} samples left)",
                target - finished
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = start.elapsed().as_secs_f64();
    Ok(json!({
        "what": "healthy metric samples published and fully processed (acked) by the issue detector",
        "samples": args.samples,
        "publish_seconds": round(published),
        "seconds": round(total),
        "rate_per_s": round(args.samples as f64 / total),
    }))
}

pub async fn run(nats: &NatsArgs, args: BenchArgs) -> Result<ExitCode, Failure> {
    let client = crate::connect(nats).await?;
    let js = jetstream::new(client.clone());
    let latency = latency(&client, &js, &args).await?;
    let ingest = ingest(&client, &js, &args).await?;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let report = json!({"machine": {"cpus": cpus, "os": std::env::consts::OS}, "incident_to_execution": latency, "metric_ingest": ingest});
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&v, 50.0), 50.0);
        assert_eq!(super::percentile(&v, 99.0), 99.0);
        assert_eq!(super::percentile(&[7.0], 99.0), 7.0);
    }
}
