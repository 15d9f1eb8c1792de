//! `cnctl bench`: measure a running fleet and print JSON.
//!
//! - **baseline**: in the same run, against the same server: a JetStream publish waiting for its
//!   ack, and a core request the server answers; the report divides the latency by them.
//! - **latency**: for each of `--services` services in `dev`, a deploy then a crash-looping
//!   metric; the time from publishing the metric to the executor's result on
//!   `cn.actions.executed.dev.{service}` (detector → optimizer → governance → executor, each hop
//!   a JetStream publish and an ack). Metrics are sent one at a time, so this is the latency of
//!   an idle fleet, not under load. A proposal governance refuses is counted apart, not as a
//!   timeout.
//! - **ingest**: `--samples` healthy metric samples published as fast as JetStream acks them;
//!   the rate is samples divided by the time from the first publish until the detector's
//!   instances report (on their status endpoints) that they finished that many more inputs.
//!   A second run sends the same samples `--batch` to a message (`cn.events.metric-batch`);
//!   with `--pids`, each run reports the detector's CPU per sample.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agent_runtime::config::NatsArgs;
use async_nats::jetstream;
use bus_schema::codec::{Limits, Outgoing, Payload, decode};
use bus_schema::{
    DeployEvent, DeployStatus, Env, ExecutionResult, MetricSample, Refusal, ServiceName, Timestamp,
    subject,
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
    /// Services the ingest runs spread their samples over (each its own state in the
    /// detector, its own subject on the bus).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub ingest_services: u16,
    /// Samples per message in a second ingest run (`metric_ingest_batched`, as
    /// `cn.events.metric-batch`); 0 skips it.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub batch: u16,
    /// The latency run sends each crash as soon as the previous result arrives
    /// (`incident_to_execution`); a second run (`incident_to_execution_after_idle`) pauses
    /// this long before each, so every chain starts on a fleet gone idle and pays the cost of
    /// waking its processes up.
    #[arg(long, default_value_t = 20)]
    pub pause_ms: u64,
    /// Prefix of the benchmark's service names, so runs do not collide.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// A directory of `{agent}.pid` files (scripts/up's `run/`): adds each process's CPU time per
    /// input handled during the run and its resident memory (Linux, from /proc).
    #[arg(long)]
    pub pids: Option<std::path::PathBuf>,
}

/// CPU seconds of a process: the nanoseconds its threads ran (`schedstat`), else the 10 ms
/// ticks of `stat` (too coarse for an agent that handled a hundred inputs).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let from_schedstat = || -> Option<f64> {
        let mut ns = 0_u64;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(ns as f64 / 1e9)
    };
    from_schedstat().or_else(|| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces): utime and stime are 14th and
        // 15th, in USER_HZ (100 per second on Linux).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    })
}

/// CPU seconds and resident memory (MiB) of a process, from /proc; `None` where there is none.
fn usage(pid: &str) -> Option<(f64, f64)> {
    let cpu = cpu_seconds(pid)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((cpu, rss_kb / 1024.0))
}

/// Per agent process: CPU seconds, resident MiB and inputs finished (status), keyed by agent.
async fn processes(
    client: &async_nats::Client,
    dir: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, (f64, f64, u64)>, Failure> {
    let seen = crate::status::discover(client, Duration::from_millis(500)).await?;
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(agent) = name.strip_suffix(".pid") else { continue };
        let pid = std::fs::read_to_string(entry.path())?.trim().to_owned();
        let Some((cpu, rss)) = usage(&pid) else { continue };
        let inputs = seen
            .iter()
            .filter(|s| s.agent == agent)
            .filter_map(|s| s.status.as_ref())
            .map(finished)
            .sum();
        out.insert(agent.to_owned(), (cpu, rss, inputs));
    }
    Ok(out)
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

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
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

/// The floor under every figure, measured in the same run against the same server: a
/// JetStream publish waiting for its ack, and a core request answered by the server.
///
/// The publish repeats one message id, so after the first the server acknowledges without
/// storing (and the detector sees one sample): the round trip and the server's work on a
/// publish, without the store's append.
async fn baseline(
    client: &async_nats::Client,
    js: &jetstream::Context,
    args: &BenchArgs,
) -> Result<serde_json::Value, Failure> {
    const ROUNDS: usize = 500;
    let env = Env::from_static("dev");
    let service = service(&format!("{}-baseline", args.prefix), 0)?;
    let out = Outgoing::new(
        &subject::METRIC_EVENTS.subject(&env, &service),
        &sample(&env, &service, None),
    )?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(bus_schema::headers::MSG_ID, format!("{}-baseline", args.prefix).as_str());
    let mut publish_ack = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        js.publish_with_headers(out.subject.clone(), headers.clone(), out.payload.clone().into())
            .await?
            .await?;
        publish_ack.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let mut request_reply = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        client.request("$JS.API.INFO", "".into()).await?;
        request_reply.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(json!({
        "jetstream_publish_ack": summary("publish with an ack (de-duplicated: not stored)", publish_ack),
        "request_reply": summary("core request answered by the server ($JS.API.INFO)", request_reply),
    }))
}

/// p50, p99 and max of latencies in milliseconds, with their count.
fn summary(what: &str, mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "what": what,
        "samples": ms.len(),
        "p50_ms": round3(percentile(&ms, 50.0)),
        "p99_ms": round3(percentile(&ms, 99.0)),
        "max_ms": round3(ms.last().copied().unwrap_or(f64::NAN)),
    })
}

/// Waits until the fleet has read the setup (the deploys): every agent's count of finished
/// inputs unchanged over two polls, at most 30 s. Otherwise the first crashes wait for agents
/// still reading deploys (the optimizer retries an incident after a second until it has).
async fn settle(client: &async_nats::Client) -> Result<(), Failure> {
    let fleet_finished = || async {
        let seen = crate::status::discover(client, Duration::from_millis(300)).await?;
        Ok::<u64, Failure>(seen.iter().filter_map(|s| s.status.as_ref()).map(finished).sum())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut still) = (fleet_finished().await?, 0);
    while still < 2 && Instant::now() < deadline {
        let now = fleet_finished().await?;
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    Ok(())
}

/// The latency services: `{prefix}-{i}` back to back, `{prefix}-idle-{i}` after a pause.
fn latency_services(args: &BenchArgs) -> Result<(Vec<ServiceName>, Vec<ServiceName>), Failure> {
    let busy = (0..args.services).map(|i| service(&args.prefix, i)).collect::<Result<_, _>>()?;
    let idle = format!("{}-idle", args.prefix);
    let idle = (0..args.services).map(|i| service(&idle, i)).collect::<Result<_, _>>()?;
    Ok((busy, idle))
}

/// Deploys every latency service (so each is known, with a version), then waits until the
/// fleet has read the deploys.
async fn deploy(
    client: &async_nats::Client,
    js: &jetstream::Context,
    services: &[ServiceName],
) -> Result<(), Failure> {
    let env = Env::from_static("dev");
    for service in services {
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
        let out = Outgoing::new(&subject::DEPLOY_EVENTS.subject(&env, service), &deploy)?;
        js.publish(out.subject, out.payload.into()).await?.await?;
    }
    settle(client).await
}

/// One crash per service, one chain at a time; the next starts `pause` after the previous
/// result arrived. With no pause the fleet is still handling the previous chain's tail (the
/// outcome, the learning update, the recovery check) and its processes are awake; after a
/// pause they sleep, and each hop pays for waking one up.
async fn latency(
    client: &async_nats::Client,
    services: &[ServiceName],
    pause: Duration,
) -> Result<serde_json::Value, Failure> {
    let env = Env::from_static("dev");
    let mut results = client.subscribe(subject::EXECUTED.env(&env).pattern().to_owned()).await?;
    let mut refusals = client.subscribe(subject::REFUSED.env(&env).pattern().to_owned()).await?;
    let mut latencies = Vec::with_capacity(services.len());
    let (mut timeouts, mut refused) = (0, 0);
    for service in services {
        tokio::time::sleep(pause).await;
        let out = Outgoing::new(
            &subject::METRIC_EVENTS.subject(&env, service),
            &sample(&env, service, Some(true)),
        )?;
        let start = Instant::now();
        client.publish(out.subject, out.payload.into()).await?;
        client.flush().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let next = tokio::select! {
                r = results.next() => r.map(|m| (true, m)),
                r = refusals.next() => r.map(|m| (false, m)),
                () = tokio::time::sleep_until(deadline) => None,
            };
            let Some((executed, msg)) = next else {
                timeouts += 1;
                break;
            };
            let about = if executed {
                decode::<ExecutionResult>(ExecutionResult::ENCODING, &msg.payload, &Limits::DEFAULT)
                    .map(|r| r.service)
            } else {
                decode::<Refusal>(Refusal::ENCODING, &msg.payload, &Limits::DEFAULT)
                    .map(|r| r.service)
            };
            if about.is_ok_and(|s| &s == service) {
                if executed {
                    latencies.push(start.elapsed().as_secs_f64() * 1000.0);
                } else {
                    refused += 1;
                }
                break;
            }
        }
    }
    let mut report = summary("crash metric published -> execution result received", latencies);
    report["pause_ms"] = json!(pause.as_millis());
    report["timeouts"] = json!(timeouts);
    report["refused"] = json!(refused);
    Ok(report)
}

/// Inputs an agent instance has finished: handled or rejected.
fn finished(status: &bus_schema::AgentStatus) -> u64 {
    status.heartbeat.processed + status.heartbeat.rejected
}

/// Inputs the issue detector's instances have finished, from their status endpoints: asking
/// the server for the consumer's info instead would make nats-server before 2.9.15 recount the
/// filtered consumer's pending messages on every delivery.
async fn detector_finished(
    client: &async_nats::Client,
    subjects: &[String],
) -> Result<u64, Failure> {
    let mut done = 0;
    for subject in subjects {
        let reply = client.request(subject.clone(), "".into()).await?;
        done += finished(&serde_json::from_slice(&reply.payload)?);
    }
    Ok(done)
}

/// The detector's CPU seconds, when `--pids` names its process.
fn detector_cpu(args: &BenchArgs) -> Option<f64> {
    let dir = args.pids.as_ref()?;
    let pid = std::fs::read_to_string(dir.join("issue-detector.pid")).ok()?;
    cpu_seconds(pid.trim())
}

/// The GOMAXPROCS nats-server runs with (scripts/up sets it on small machines), read from its
/// environment: part of what the figures were measured with. None: Go's default, all CPUs.
fn nats_gomaxprocs(args: &BenchArgs) -> Option<String> {
    let pid = std::fs::read_to_string(args.pids.as_ref()?.join("nats-server.pid")).ok()?;
    let environ = std::fs::read(format!("/proc/{}/environ", pid.trim())).ok()?;
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"GOMAXPROCS="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Publishes `--samples` healthy samples over `--ingest-services` services, one per message (`batch` 1) or
/// `batch` per `cn.events.metric-batch` message, and waits until the detector has finished
/// them all.
async fn ingest(
    client: &async_nats::Client,
    js: &jetstream::Context,
    args: &BenchArgs,
    batch: usize,
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
    let services = (0..usize::from(args.ingest_services))
        .map(|i| service(&format!("{}-ingest", args.prefix), i))
        .collect::<Result<Vec<_>, _>>()?;
    let cpu_before = detector_cpu(args);
    let start = Instant::now();
    let mut acks = Vec::with_capacity(256);
    let messages = args.samples.div_ceil(batch);
    for n in 0..messages {
        let service = &services[n % services.len()];
        let size = batch.min(args.samples - n * batch);
        let out = if batch == 1 {
            Outgoing::new(
                &subject::METRIC_EVENTS.subject(&env, service),
                &sample(&env, service, None),
            )?
        } else {
            let samples = (0..size).map(|_| sample(&env, service, None)).collect();
            Outgoing::new(
                &subject::METRIC_BATCHES.subject(&env, service),
                &bus_schema::MetricBatch { samples },
            )?
        };
        // The agents would reject it (`too_large`) and the run would count it as done.
        if out.payload.len() > Limits::DEFAULT.max_payload {
            return Err(format!(
                "--batch {batch}: a batch message is {} bytes, over the agents' {}-byte input limit; use a smaller --batch",
                out.payload.len(),
                Limits::DEFAULT.max_payload
            )
            .into());
        }
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
    let target = before + messages as u64;
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
    let cpu =
        cpu_before.zip(detector_cpu(args)).map(|(a, b)| round((b - a) / args.samples as f64 * 1e6));
    Ok(json!({
        "what": "healthy metric samples published and fully processed (acked) by the issue detector",
        "samples": args.samples,
        "samples_per_message": batch,
        "services": args.ingest_services,
        "messages": messages,
        "publish_seconds": round(published),
        "seconds": round(total),
        "rate_per_s": round(args.samples as f64 / total),
        "detector_cpu_us_per_sample": cpu,
    }))
}

pub async fn run(nats: &NatsArgs, args: BenchArgs) -> Result<ExitCode, Failure> {
    let client = crate::connect(nats).await?;
    let js = jetstream::new(client.clone());
    let before = match &args.pids {
        Some(dir) => Some(processes(&client, dir).await?),
        None => None,
    };
    let baseline = baseline(&client, &js, &args).await?;
    let (busy, idle) = latency_services(&args)?;
    deploy(&client, &js, &[busy.clone(), idle.clone()].concat()).await?;
    let back_to_back = latency(&client, &busy, Duration::ZERO).await?;
    let after_idle = latency(&client, &idle, Duration::from_millis(args.pause_ms)).await?;
    let ingest_single = ingest(&client, &js, &args, 1).await?;
    let ingest_batched = match args.batch {
        0 => serde_json::Value::Null,
        n => ingest(&client, &js, &args, usize::from(n)).await?,
    };
    let mut agents = serde_json::Map::new();
    if let (Some(dir), Some(before)) = (&args.pids, before) {
        for (agent, (cpu, rss, inputs)) in processes(&client, dir).await? {
            let (cpu0, _, inputs0) = before.get(&agent).copied().unwrap_or((0.0, 0.0, 0));
            let handled = inputs.saturating_sub(inputs0);
            let per_input =
                if handled > 0 { (cpu - cpu0) / handled as f64 * 1e6 } else { f64::NAN };
            agents.insert(
                agent,
                json!({
                    "cpu_seconds": round3(cpu - cpu0),
                    "inputs": handled,
                    "cpu_us_per_input": round(per_input),
                    "rss_mib": round(rss),
                }),
            );
        }
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let floor = |key: &str| baseline[key]["p50_ms"].as_f64().unwrap_or(f64::NAN);
    let p50 = back_to_back["p50_ms"].as_f64().unwrap_or(f64::NAN);
    let ratios = json!({
        "incident_to_execution_p50_over_publish_ack_p50": round(p50 / floor("jetstream_publish_ack")),
        "incident_to_execution_p50_over_request_reply_p50": round(p50 / floor("request_reply")),
    });
    let report = json!({
        "machine": {"cpus": cpus, "os": std::env::consts::OS, "nats_server_gomaxprocs": nats_gomaxprocs(&args)},
        "nats_baseline": baseline,
        "incident_to_execution": back_to_back,
        "incident_to_execution_after_idle": after_idle,
        "metric_ingest": ingest_single,
        "metric_ingest_batched": ingest_batched,
        "ratios": ratios,
        "agents": agents,
    });
    outln!("{}", serde_json::to_string_pretty(&report)?);
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
