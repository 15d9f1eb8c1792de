//! The load a chaos run puts on the fleet, published as the `pipeline` user through JetStream.
//!
//! Every service sends a healthy metric sample every few seconds; now and then a stage service
//! crash-loops for a while (`crash_looping: true`, restarts rising) and then is healthy again;
//! now and then a prod deploy fails (`status: failed`, with the version it replaced) and a later
//! one succeeds. Each message carries its own `Nats-Msg-Id` and is published again, unchanged,
//! until JetStream acks it — through agent kills and nats-server restarts — so a retry of a
//! message that was stored after all is dropped as a duplicate. A message counts as published
//! only once JetStream acked it; one still unacked when the run gives up is counted as such.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_runtime::rng::Rng;
use async_nats::HeaderMap;
use async_nats::jetstream;
use bus_schema::{Timestamp, headers};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Plan;

/// How long to wait for JetStream's ack before publishing the same message again.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its `Nats-Msg-Id`.
    pub id: String,
    pub subject: String,
    pub headers: Vec<(&'static str, String)>,
    pub payload: Bytes,
}

/// What became of a published message.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    pub subject: String,
    /// CN_EVENTS' sequence, from the ack; `None` if no ack came before the run gave up.
    pub seq: Option<u64>,
    pub attempts: u32,
    /// The ack said an earlier attempt had already been stored.
    pub duplicate: bool,
    /// The last error, when it was never acked.
    pub error: Option<String>,
}

/// Publishes `m` until JetStream acks it, or until `give_up` fires.
pub async fn publish(js: &jetstream::Context, m: &Message, give_up: &CancellationToken) -> Sent {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut h = HeaderMap::new();
        h.insert(headers::MSG_ID, m.id.as_str());
        for (name, value) in &m.headers {
            h.insert(*name, value.as_str());
        }
        let attempt = async {
            let ack = js
                .publish_with_headers(m.subject.clone(), h, m.payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        let error = match tokio::time::timeout(ACK_TIMEOUT, attempt).await {
            Ok(Ok(ack)) => {
                return Sent {
                    id: m.id.clone(),
                    subject: m.subject.clone(),
                    seq: Some(ack.sequence),
                    attempts,
                    duplicate: ack.duplicate,
                    error: None,
                };
            }
            Ok(Err(e)) => e,
            Err(_) => format!("no ack within {ACK_TIMEOUT:?}"),
        };
        let backoff = Duration::from_millis(250 * u64::from(attempts.min(8)));
        tokio::select! {
            () = give_up.cancelled() => {
                return Sent { id: m.id.clone(), subject: m.subject.clone(), seq: None, attempts, duplicate: false, error: Some(error) };
            }
            () = tokio::time::sleep(backoff) => {}
        }
    }
}

/// Every message the load published, and counters for progress lines.
#[derive(Debug, Default)]
pub struct Ledger {
    sent: Mutex<Vec<Sent>>,
    acked: AtomicU64,
    pub crash_loops: AtomicU64,
    pub failed_deploys: AtomicU64,
}

impl Ledger {
    fn push(&self, sent: Sent) {
        if sent.seq.is_some() {
            self.acked.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut all) = self.sent.lock() {
            all.push(sent);
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A service of the run: two in three in stage (where crash loops are restarted), the rest in
/// prod (where deploys fail).
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub env: &'static str,
}

pub fn services(n: usize) -> Vec<Service> {
    (0..n)
        .map(|i| Service {
            name: format!("svc-{i:02}"),
            env: if i % 3 == 2 { "prod" } else { "stage" },
        })
        .collect()
}

/// Which services are crash-looping, and until when.
#[derive(Debug, Default)]
struct CrashBoard(Mutex<HashMap<String, Instant>>);

impl CrashBoard {
    fn crashing(&self, service: &str) -> bool {
        self.0.lock().is_ok_and(|b| b.get(service).is_some_and(|until| Instant::now() < *until))
    }

    fn start(&self, service: &str, lasting: Duration) {
        if let Ok(mut b) = self.0.lock() {
            b.insert(service.to_owned(), Instant::now() + lasting);
        }
    }
}

/// The load's tasks: `stop` ends new messages, `give_up` ends retries of unacked ones.
#[derive(Debug)]
pub struct Load {
    pub ledger: Arc<Ledger>,
    pub tasks: Vec<JoinHandle<()>>,
}

pub fn start(
    js: jetstream::Context,
    plan: &Plan,
    stop: CancellationToken,
    give_up: CancellationToken,
) -> Load {
    let ledger = Arc::new(Ledger::default());
    let board = Arc::new(CrashBoard::default());
    let all = services(plan.services);
    let mut tasks = Vec::new();
    for s in all.clone() {
        let (js, ledger, board, stop, give_up, plan) = (
            js.clone(),
            ledger.clone(),
            board.clone(),
            stop.clone(),
            give_up.clone(),
            plan.clone(),
        );
        tasks.push(tokio::spawn(async move {
            samples(&js, &s, &plan, &ledger, &board, &stop, &give_up).await
        }));
    }
    let stage: Vec<Service> = all.iter().filter(|s| s.env == "stage").cloned().collect();
    let prod: Vec<Service> = all.iter().filter(|s| s.env == "prod").cloned().collect();
    if !stage.is_empty() {
        let (ledger, stop, plan) = (ledger.clone(), stop.clone(), plan.clone());
        tasks.push(tokio::spawn(async move {
            crash_loops(&stage, &plan, &ledger, &board, &stop).await
        }));
    }
    if !prod.is_empty() {
        let (js, ledger, plan) = (js.clone(), ledger.clone(), plan.clone());
        tasks.push(tokio::spawn(async move {
            failed_deploys(&js, &prod, &plan, &ledger, &stop, &give_up).await
        }));
    }
    Load { ledger, tasks }
}

fn json_message(id: String, subject: String, body: &Value) -> Message {
    Message { id, subject, headers: Vec::new(), payload: Bytes::from(body.to_string()) }
}

fn deploy(s: &Service, version: &str, previous: Option<&str>, status: &str) -> Value {
    json!({"service": s.name, "env": s.env, "version": version, "previous_version": previous, "status": status, "timestamp": Timestamp::now().to_string()})
}

/// Sleeps `every` ± 20 %; false once `stop` fired.
async fn pause(rng: &mut Rng, every: Duration, stop: &CancellationToken) -> bool {
    let d = every.mul_f64(rng.range(0.8, 1.2));
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// One service: its first deploy, then a sample every `sample_every` until `stop`.
async fn samples(
    js: &jetstream::Context,
    s: &Service,
    plan: &Plan,
    ledger: &Ledger,
    board: &CrashBoard,
    stop: &CancellationToken,
    give_up: &CancellationToken,
) {
    let mut rng = Rng::derive(plan.seed, &s.name);
    let first = json_message(
        format!("chaos-{}-deploy-0", s.name),
        format!("cn.events.deploy.{}.{}", s.env, s.name),
        &deploy(s, "1.0.0", None, "succeeded"),
    );
    ledger.push(publish(js, &first, give_up).await);
    let subject = format!("cn.events.metric.{}.{}", s.env, s.name);
    let mut restarts = 0_u32;
    let mut n = 0_u64;
    while pause(&mut rng, plan.sample_every, stop).await {
        n += 1;
        let now = Timestamp::now().to_string();
        let body = if board.crashing(&s.name) {
            restarts += 1;
            json!({"service": s.name, "env": s.env, "crash_looping": true, "restarts": restarts, "timestamp": now})
        } else {
            json!({"service": s.name, "env": s.env, "crash_looping": false, "restarts": restarts, "error_rate": rng.range(0.0005, 0.005),
                   "p95_latency_ms": rng.range(80.0, 160.0), "cpu_percent": rng.range(20.0, 50.0), "memory_percent": rng.range(30.0, 60.0), "timestamp": now})
        };
        ledger.push(
            publish(
                js,
                &json_message(format!("chaos-{}-{n}", s.name), subject.clone(), &body),
                give_up,
            )
            .await,
        );
    }
}

/// Every `crash_every`, one stage service that is well starts crash-looping for 8–16 s.
async fn crash_loops(
    stage: &[Service],
    plan: &Plan,
    ledger: &Ledger,
    board: &CrashBoard,
    stop: &CancellationToken,
) {
    let mut rng = Rng::derive(plan.seed, "crash-loops");
    while pause(&mut rng, plan.crash_every, stop).await {
        let well: Vec<&Service> = stage.iter().filter(|s| !board.crashing(&s.name)).collect();
        if well.is_empty() {
            continue;
        }
        let s = well[rng.below(well.len())];
        board.start(&s.name, Duration::from_secs_f64(rng.range(8.0, 16.0)));
        ledger.crash_loops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every `failed_deploy_every`, a prod service's deploy fails; 10–20 s later the next one
/// succeeds.
async fn failed_deploys(
    js: &jetstream::Context,
    prod: &[Service],
    plan: &Plan,
    ledger: &Ledger,
    stop: &CancellationToken,
    give_up: &CancellationToken,
) {
    let mut rng = Rng::derive(plan.seed, "failed-deploys");
    let mut versions: HashMap<String, u32> = HashMap::new();
    let mut n = 0;
    while pause(&mut rng, plan.failed_deploy_every, stop).await {
        n += 1;
        let s = &prod[rng.below(prod.len())];
        let minor = versions.entry(s.name.clone()).or_insert(0);
        let (good, bad, next) =
            (format!("1.{minor}.0"), format!("1.{}.0", *minor + 1), format!("1.{}.0", *minor + 2));
        *minor += 2;
        let subject = format!("cn.events.deploy.{}.{}", s.env, s.name);
        let failed = json_message(
            format!("chaos-failed-deploy-{n}"),
            subject.clone(),
            &deploy(s, &bad, Some(&good), "failed"),
        );
        ledger.push(publish(js, &failed, give_up).await);
        ledger.failed_deploys.fetch_add(1, Ordering::Relaxed);
        if !pause(&mut rng, Duration::from_secs(15), stop).await {
            break;
        }
        let fixed = json_message(
            format!("chaos-fixed-deploy-{n}"),
            subject,
            &deploy(s, &next, Some(&good), "succeeded"),
        );
        ledger.push(publish(js, &fixed, give_up).await);
    }
}
