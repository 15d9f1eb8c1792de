//! `cn-console`: the operator's console. For now it serves the fleet's Prometheus metrics
//! (`/metrics`), derived from the proof log it follows from the start ([`metrics`]).
//!
//! It reads as the `auditor` user by default (the proof log, read-only).

pub mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::config::NatsArgs;
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bus_schema::proof::ProofRecord;
use bus_schema::subject::{PROOF, Stream};
use futures_util::StreamExt;

use crate::metrics::Metrics;

/// What the console failed at.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Connect(#[from] agent_runtime::RuntimeError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

type Shared = Arc<Mutex<Metrics>>;

/// Connects, follows the proof log and serves HTTP on `listen` until the process ends. Prints
/// `console: http://ADDR` once it listens (the port may have been chosen by the system).
pub async fn run(nats: &NatsArgs, listen: SocketAddr) -> Result<(), ConsoleError> {
    let client =
        nats.connect("cn-console", None, agent_runtime::connect::FirstConnect::FailFast).await?;
    let metrics: Shared = Arc::default();
    tokio::spawn(follow(jetstream::new(client), metrics.clone()));
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(serve_metrics))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ConsoleError::Listen { addr: listen, source })?;
    let addr = listener.local_addr().map_err(ConsoleError::Serve)?;
    println!("console: http://{addr}");
    tracing::info!(%addr, "serving /metrics");
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
async fn follow(js: jetstream::Context, metrics: Shared) {
    let mut next: u64 = 1;
    loop {
        match read_from(&js, next, &metrics).await {
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
    metrics: &Shared,
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
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| (next, format!("reading CN_PROOF: {e}")))?;
        if let Ok(info) = msg.info() {
            next = info.stream_sequence + 1;
        }
        match serde_json::from_slice::<ProofRecord>(&msg.payload) {
            Ok(record) => {
                if let Ok(mut m) = metrics.lock() {
                    m.observe(&record);
                }
            }
            Err(e) => tracing::warn!(subject = %msg.subject, error = %e, "unreadable proof record"),
        }
    }
    Ok(next)
}
