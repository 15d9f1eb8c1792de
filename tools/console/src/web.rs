//! The page: `/` (one HTML file, no build step), `/events` (server-sent events: the
//! [`View`]'s snapshot whenever it changed, at most five a second), `/api/state` (the same
//! snapshot once) and `POST /api/decisions` (approve or deny, when the console may decide).
//!
//! A decision is a state-changing request on a page that may be open on an operator's laptop:
//! it must carry the `x-cn-console` header (a cross-site form cannot set it, and a cross-site
//! script would need a CORS preflight the console never answers), name the console by one of
//! its own host names in `Host` (a DNS-rebound name that resolves to the console is not one),
//! and, when the browser sends an `Origin`, come from that same origin.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::{Json, Router};
use bus_schema::proof::ProofRecord;
use bus_schema::{Decision, HumanDecision, SloStatus, Uuid, Validate};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::decide::Decider;
use crate::view::View;

/// The header a decision must carry.
pub const DECISION_HEADER: &str = "x-cn-console";
/// How long the page's stream waits for more changes before it sends a snapshot.
const COALESCE: Duration = Duration::from_millis(200);

const INDEX: &str = include_str!("../assets/index.html");

/// The page's state, shared by the proof-log follower and every open page.
#[derive(Debug)]
pub struct Page {
    view: Mutex<View>,
    changed: watch::Sender<u64>,
    decider: Option<Decider>,
    /// The `Host` values a decision may name (lower case).
    hosts: Vec<String>,
}

impl Page {
    /// `hosts`: the names people reach the console by, e.g. from [`own_hosts`].
    pub fn new(decider: Option<Decider>, hosts: Vec<String>) -> Self {
        Self { view: Mutex::default(), changed: watch::Sender::new(0), decider, hosts }
    }

    pub fn observe(&self, r: &ProofRecord) {
        self.update(|v| v.observe(r));
    }

    pub fn observe_slo(&self, s: &SloStatus) {
        self.update(|v| v.observe_slo(s));
    }

    fn update(&self, f: impl FnOnce(&mut View)) {
        if let Ok(mut v) = self.view.lock() {
            f(&mut v);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn snapshot(&self) -> String {
        let decide = self.decider.is_some();
        self.view.lock().map(|v| v.snapshot(decide).to_string()).unwrap_or_default()
    }
}

pub fn router(page: Arc<Page>) -> Router {
    Router::new()
        .route("/", axum::routing::get(|| async { Html(INDEX) }))
        .route("/events", axum::routing::get(events))
        .route("/api/state", axum::routing::get(state))
        .route("/api/decisions", axum::routing::post(decide))
        .with_state(page)
}

async fn state(State(page): State<Arc<Page>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], page.snapshot()).into_response()
}

async fn events(
    State(page): State<Arc<Page>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = page.changed.subscribe();
    let stream = futures_util::stream::unfold(
        (page, changes, true),
        |(page, mut changes, first)| async move {
            if !first {
                changes.changed().await.ok()?;
                tokio::time::sleep(COALESCE).await;
                changes.mark_unchanged();
            }
            let event = Event::default().event("state").data(page.snapshot());
            Some((Ok(event), (page, changes, false)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// What the page sends to approve or deny.
#[derive(Debug, Deserialize)]
struct DecisionForm {
    proposal_id: Uuid,
    decision: Decision,
    operator: String,
    reason: String,
}

fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({"error": message.into()}))).into_response()
}

async fn decide(
    State(page): State<Arc<Page>>,
    headers: HeaderMap,
    form: Result<Json<DecisionForm>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(decider) = &page.decider else {
        return refuse(
            StatusCode::FORBIDDEN,
            "this console is read-only: start it with --allow-decisions, connected as a NATS user that may publish decisions (operator)",
        );
    };
    if let Err(why) = same_origin(&headers, &page.hosts) {
        return refuse(StatusCode::FORBIDDEN, why);
    }
    let form = match form {
        Ok(Json(f)) => f,
        Err(e) => {
            return refuse(StatusCode::BAD_REQUEST, format!("not a decision: {}", e.body_text()));
        }
    };
    let decision = HumanDecision {
        proposal_id: form.proposal_id,
        decision: form.decision,
        operator: form.operator.trim().to_owned(),
        reason: form.reason.trim().to_owned(),
    };
    if decision.reason.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a reason is required: every decision records who and why",
        );
    }
    if let Err(e) = decision.validate() {
        return refuse(StatusCode::BAD_REQUEST, e.to_string());
    }
    let scope = page.view.lock().ok().and_then(|v| v.pending_scope(&decision.proposal_id));
    let Some(scope) = scope else {
        return refuse(
            StatusCode::CONFLICT,
            format!(
                "proposal {} is not waiting for a human (decided, expired or unknown)",
                decision.proposal_id
            ),
        );
    };
    match decider.send(&scope, &decision).await {
        Ok(seq) => {
            tracing::info!(proposal = %decision.proposal_id, decision = %decision.decision, operator = %decision.operator, "decision stored");
            (
                StatusCode::ACCEPTED,
                Json(json!({"stored": true, "stream_seq": seq, "proposal_id": decision.proposal_id, "decision": decision.decision})),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "a decision from the page was not stored");
            refuse(StatusCode::BAD_GATEWAY, e)
        }
    }
}

/// The host names a console listening on `listen` is reached by: its address, the loopback
/// names on its port, and the public URL's host (`--public-url`, e.g. behind a proxy).
pub fn own_hosts(listen: std::net::SocketAddr, public_url: Option<&str>) -> Vec<String> {
    let port = listen.port();
    let mut hosts =
        vec![format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")];
    if !listen.ip().is_unspecified() && !hosts.contains(&listen.to_string()) {
        hosts.push(listen.to_string());
    }
    if let Some(url) = public_url {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let host = rest.split('/').next().unwrap_or_default();
        if !host.is_empty() {
            hosts.push(host.to_owned());
        }
    }
    hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
}

/// The anti-forgery checks of a decision request.
fn same_origin(headers: &HeaderMap, hosts: &[String]) -> Result<(), String> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if text(DECISION_HEADER).is_none() {
        return Err(format!(
            "a decision must carry the {DECISION_HEADER} header (the page sends it)"
        ));
    }
    let host = text(header::HOST.as_str()).unwrap_or_default().to_ascii_lowercase();
    if !hosts.contains(&host) {
        return Err(format!(
            "a decision must be sent to one of the console's own names ({}), not {host:?}; behind a proxy, give the console --public-url",
            hosts.join(", ")
        ));
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let own = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        if own.map(str::to_ascii_lowercase).as_deref() != Some(host.as_str()) {
            return Err(format!("a decision from {origin} is not from this console ({host})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_decision_needs_the_header_one_of_the_consoles_names_and_its_own_origin() {
        let hosts = own_hosts("127.0.0.1:9464".parse().unwrap(), Some("https://cn.example.com/"));
        let check = |h: &[(&'static str, &'static str)]| same_origin(&headers(h), &hosts);
        let with = |more: &[(&'static str, &'static str)]| {
            let mut h = vec![(DECISION_HEADER, "1")];
            h.extend_from_slice(more);
            check(&h)
        };
        assert!(check(&[("host", "127.0.0.1:9464")]).unwrap_err().contains(DECISION_HEADER));
        assert!(with(&[("host", "127.0.0.1:9464")]).is_ok());
        assert!(with(&[("host", "LOCALHOST:9464")]).is_ok());
        assert!(with(&[("host", "cn.example.com"), ("origin", "https://cn.example.com")]).is_ok());
        assert!(with(&[("host", "127.0.0.1:9464"), ("origin", "http://127.0.0.1:9464")]).is_ok());
        // A cross-site page, and a rebound DNS name that resolves to the console.
        let forged = with(&[("host", "127.0.0.1:9464"), ("origin", "https://evil.example")]);
        assert!(forged.unwrap_err().contains("evil.example"));
        let rebound =
            with(&[("host", "evil.example:9464"), ("origin", "http://evil.example:9464")]);
        assert!(rebound.unwrap_err().contains("own names"));
        assert!(with(&[]).is_err(), "no Host");
    }

    #[test]
    fn a_console_on_every_interface_is_reached_by_its_loopback_names_only_unless_told() {
        let hosts = own_hosts("0.0.0.0:9464".parse().unwrap(), None);
        assert_eq!(hosts, ["localhost:9464", "127.0.0.1:9464", "[::1]:9464"]);
    }
}
