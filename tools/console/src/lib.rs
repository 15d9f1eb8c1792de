//! `cn-console`: the operator's console. A live page of the fleet ([`web`], rendered from
//! [`view`]), where people with the right may approve and deny ([`decide`]), and the fleet's
//! Prometheus metrics (`/metrics`, [`metrics`]), all derived from the proof log it follows from
//! the start, and the detector's SLO statuses (`cn.slo.>`).
//!
//! It reads as the `auditor` user at least (the proof log, read-only); the SLO panel needs a
//! user that may read CN_WORK, deciding one that may publish decisions, and notifications one
//! that may append to `cn.proof.console.*`: the `console` user of `scripts/up` may all three.

pub mod decide;
pub mod fleet_stats;
pub mod handling;
pub mod metrics;
pub mod notify;
pub mod otlp;
pub mod view;
pub mod web;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::config::NatsArgs;
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bus_schema::codec::{Limits, decode_by_content_type};
use bus_schema::proof::ProofRecord;
use bus_schema::subject::{PROOF, SLO, Stream};
use bus_schema::{SloStatus, headers};
use futures_util::StreamExt;

use crate::decide::Decider;
use crate::fleet_stats::FleetStats;
use crate::metrics::Metrics;
use crate::web::Page;

/// What the console failed at.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Connect(#[from] agent_runtime::RuntimeError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Otlp(#[from] otlp::OtlpError),
    #[error("cannot start the notifications: {0}")]
    Notify(String),
}

type Shared = Arc<Mutex<Metrics>>;

/// How the console runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Approve and deny from the page (the NATS user must be allowed to publish decisions).
    pub allow_decisions: bool,
    /// The page's address as people reach it (a proxy's), if not the listening address.
    pub public_url: Option<String>,
    /// The secret a person gives to decide on the page (required to decide).
    pub decision_token: Option<web::Token>,
    /// Webhooks for pending approvals and escalations, if any.
    pub notify: Option<notify::Settings>,
    /// Where the console keeps its proof chain's state (with notifications); a temporary
    /// directory if none (the chain's head is read back from CN_PROOF either way).
    pub state_dir: Option<std::path::PathBuf>,
}

/// Where each proof record goes.
#[derive(Debug, Clone)]
struct Sinks {
    metrics: Shared,
    page: Arc<Page>,
    /// Spans of the traced records, when an OTLP endpoint is configured.
    spans: Option<otlp::Exporter>,
    /// Webhooks, when configured.
    notifier: Option<Arc<Mutex<notify::Notifier>>>,
}

impl Sinks {
    fn observe(&self, record: &ProofRecord) {
        if let Ok(mut m) = self.metrics.lock() {
            m.observe(record);
        }
        self.page.observe(record);
        if let Some(spans) = &self.spans {
            spans.offer(record);
        }
        if let Some(n) = &self.notifier {
            if let Ok(mut n) = n.lock() {
                n.observe(record);
            }
        }
    }

    /// The proof log's end is reached (for now).
    fn caught_up(&self) {
        if let Some(n) = &self.notifier {
            if let Ok(mut n) = n.lock() {
                n.caught_up();
            }
        }
    }
}

/// Connects, follows the proof log and serves HTTP on `listen` until the process ends. Prints
/// `console: http://ADDR` once it listens (the port may have been chosen by the system).
pub async fn run(
    nats: &NatsArgs,
    listen: SocketAddr,
    options: Options,
) -> Result<(), ConsoleError> {
    // reqwest (webhooks, OTLP) is built without a TLS provider of its own: rustls's ring, as
    // async-nats uses. Building a client without one panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let spans = otlp::Exporter::from_env()?;
    let client =
        nats.connect("cn-console", None, agent_runtime::connect::FirstConnect::FailFast).await?;
    let user = nats.user.clone().unwrap_or_else(|| "(none)".into());
    let decider = match (options.allow_decisions, options.decision_token) {
        (true, Some(token)) => Some((Decider::new(client.clone(), user.clone()), token)),
        _ => None,
    };
    // What the log does not say, asked in the background and read at each scrape.
    let fleet = Arc::new(FleetStats::default());
    let mut metrics = Metrics::new();
    metrics.collect(fleet.clone());
    let metrics = Arc::new(Mutex::new(metrics));
    let notifier = match options.notify.filter(|n| !n.targets.is_empty()) {
        Some(settings) => Some(Arc::new(Mutex::new(
            start_notifier(&client, settings, options.state_dir.as_deref()).await?,
        ))),
        None => None,
    };
    // Bound before the page is made: a decision must name the console by its own address.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ConsoleError::Listen { addr: listen, source })?;
    let addr = listener.local_addr().map_err(ConsoleError::Serve)?;
    let hosts = web::own_hosts(addr, options.public_url.as_deref());
    let sinks = Sinks { metrics, page: Arc::new(Page::new(decider, hosts)), spans, notifier };
    tokio::spawn(fleet_stats::follow_agents(client.clone(), user.clone(), fleet.clone()));
    let js = jetstream::new(client);
    tokio::spawn(fleet_stats::follow_consumers(js.clone(), user, fleet));
    tokio::spawn(follow(js.clone(), sinks.clone()));
    tokio::spawn(follow_slo(js, sinks.page.clone()));
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(serve_metrics))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .with_state(sinks.metrics.clone())
        .merge(web::router(sinks.page.clone()));
    println!("console: http://{addr}");
    tracing::info!(%addr, decisions = options.allow_decisions, "serving the page, /events and /metrics");
    axum::serve(listener, app).await.map_err(ConsoleError::Serve)
}

async fn serve_metrics(State(metrics): State<Shared>) -> impl IntoResponse {
    let text = metrics
        .lock()
        .map_err(|_| "poisoned".to_owned())
        .and_then(|m| m.render().map_err(|e| e.to_string()));
    match text {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot render the metrics: {e}\n"))
            .into_response(),
    }
}

/// Follows CN_PROOF from its first record, for ever: after an error (the server restarted, the
/// consumer went away) it starts again after the last record it read.
async fn follow(js: jetstream::Context, sinks: Sinks) {
    let mut next: u64 = 1;
    loop {
        match read_from(&js, next, &sinks).await {
            Ok(after) => next = after,
            Err((after, e)) => {
                next = after;
                tracing::warn!(error = %e, from = next, "reading the proof log failed; trying again in a second");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reads CN_PROOF from `from` on; returns the stream sequence to go on from.
async fn read_from(
    js: &jetstream::Context,
    from: u64,
    sinks: &Sinks,
) -> Result<u64, (u64, String)> {
    let stream = js
        .get_stream(Stream::Proof.name())
        .await
        .map_err(|e| (from, format!("cannot open CN_PROOF: {e}")))?;
    let config = pull::Config {
        filter_subject: PROOF.all().pattern().to_owned(),
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
        ack_policy: AckPolicy::None,
        inactive_threshold: Duration::from_secs(30),
        ..Default::default()
    };
    let consumer = stream
        .create_consumer(config)
        .await
        .map_err(|e| (from, format!("cannot read CN_PROOF: {e}")))?;
    let mut messages =
        consumer.messages().await.map_err(|e| (from, format!("cannot read CN_PROOF: {e}")))?;
    let mut next = from;
    if stream.cached_info().state.last_sequence < from {
        sinks.caught_up();
    }
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| (next, format!("reading CN_PROOF: {e}")))?;
        let mut last = false;
        if let Ok(info) = msg.info() {
            next = info.stream_sequence + 1;
            last = info.pending == 0;
        }
        match serde_json::from_slice::<ProofRecord>(&msg.payload) {
            Ok(record) => sinks.observe(&record),
            Err(e) => tracing::warn!(subject = %msg.subject, error = %e, "unreadable proof record"),
        }
        if last {
            sinks.caught_up();
        }
    }
    Ok(next)
}

/// How far back the SLO statuses are read when the console starts.
const SLO_HISTORY: Duration = Duration::from_secs(3600);

/// Follows the detector's SLO statuses (`cn.slo.>` on CN_WORK): the last hour's, then every
/// new one. Without the right to read CN_WORK it says so once and the page's SLO
/// panel stays empty.
async fn follow_slo(js: jetstream::Context, page: Arc<Page>) {
    let mut warned = false;
    loop {
        if let Err(e) = read_slo(&js, &page).await {
            if !warned {
                tracing::warn!(error = %e, "cannot read the SLO statuses (cn.slo.> on CN_WORK; the operator user may); the page shows no SLO burn until it can, trying every 10 s");
                warned = true;
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

async fn read_slo(js: &jetstream::Context, page: &Page) -> Result<(), String> {
    let stream = js
        .get_stream(Stream::Work.name())
        .await
        .map_err(|e| format!("cannot open CN_WORK: {e}"))?;
    // Named: the create request then names the filter, which is all the console user may
    // read of CN_WORK.
    let config = pull::Config {
        name: Some(format!("cn-console-slo-{}", bus_schema::Uuid::new_v4().simple())),
        filter_subject: SLO.all().pattern().to_owned(),
        // The last hour, for the page's burn charts.
        deliver_policy: DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::now_utc() - SLO_HISTORY,
        },
        ack_policy: AckPolicy::None,
        inactive_threshold: Duration::from_secs(30),
        ..Default::default()
    };
    let consumer =
        stream.create_consumer(config).await.map_err(|e| format!("cannot read CN_WORK: {e}"))?;
    let mut messages =
        consumer.messages().await.map_err(|e| format!("cannot read CN_WORK: {e}"))?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| format!("reading CN_WORK: {e}"))?;
        let content_type = msg.headers.as_ref().and_then(|h| h.get(headers::CONTENT_TYPE));
        let content_type = content_type.map(|v| v.as_str());
        match decode_by_content_type::<SloStatus>(content_type, &msg.payload, &Limits::DEFAULT) {
            Ok(status) => page.observe_slo(&status),
            Err(e) => tracing::warn!(subject = %msg.subject, error = %e, "unreadable SLO status"),
        }
    }
    Ok(())
}

/// Opens the console's proof chain (`cn.proof.console.{instance}`) and starts the webhooks.
async fn start_notifier(
    client: &async_nats::Client,
    settings: notify::Settings,
    state_dir: Option<&std::path::Path>,
) -> Result<notify::Notifier, ConsoleError> {
    let fail = |e: &dyn std::fmt::Display| ConsoleError::Notify(e.to_string());
    let instance = bus_schema::InstanceId::new(settings.instance.clone()).map_err(|e| fail(&e))?;
    let dir = match state_dir {
        Some(d) => d.to_owned(),
        None => std::env::temp_dir().join(format!("cn-console-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| fail(&format!("{}: {e}", dir.display())))?;
    let store = agent_runtime::store::Store::open(&dir.join(format!("console-{instance}.redb")))
        .map_err(|e| fail(&e))?;
    let publisher = agent_runtime::Publisher::new(client.clone(), jetstream::new(client.clone()));
    let writer = agent_runtime::ProofWriter::open(
        publisher,
        store,
        bus_schema::fleet::CONSOLE,
        instance,
    )
    .await
    .map_err(|e| {
        fail(&format!(
            "{e} (the console's NATS user must be allowed to publish cn.proof.console.>: the `console` user of scripts/up is)"
        ))
    })?;
    let targets: Vec<_> = settings.targets.iter().map(|t| t.name.clone()).collect();
    tracing::info!(
        ?targets,
        per_minute = settings.per_minute,
        attempts = settings.attempts,
        "notifying pending approvals and escalations"
    );
    Ok(notify::Notifier::start(settings, writer))
}
