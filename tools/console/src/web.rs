//! The page: `/` (one HTML file, no build step), `/events` (server-sent events: the
//! [`View`]'s snapshot whenever it changed, at most five a second), `/api/state` (the same
//! snapshot once) and `POST /api/decisions` (approve or deny, when the console may decide).
//!
//! Every page route must name the console by one of its own host names in `Host` (a
//! DNS-rebound name that resolves to the console is not one), and the page may not be framed
//! (clickjacking). A decision must also carry the console's decision token (`Authorization:
//! Bearer …`: a person proves the right to decide, not just to reach the port), the
//! `x-cn-console` header (a cross-site form cannot set it, and a cross-site script would need
//! a CORS preflight the console never answers), and, when the browser sends an `Origin`, come
//! from the console's own origin.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
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
    /// Deciding: how, and the token a person must give.
    decider: Option<(Decider, Token)>,
    /// The `Host` values the page may be asked by (lower case).
    hosts: Vec<String>,
}

/// The secret that lets a person decide on the page.
#[derive(Debug, Clone)]
pub struct Token(String);

impl Token {
    /// A token of at least 16 characters (`cnctl creds init` makes one of 66).
    pub fn new(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.len() < 16 || t.chars().any(char::is_whitespace) {
            return Err("the decision token must be one word of at least 16 characters".into());
        }
        Ok(Self(t.to_owned()))
    }

    /// Whether `given` is the token, in time that does not depend on where they differ.
    fn admits(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Page {
    /// `hosts`: the names people reach the console by, e.g. from [`own_hosts`].
    pub fn new(decider: Option<(Decider, Token)>, hosts: Vec<String>) -> Self {
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
        .route("/", axum::routing::get(index))
        .route("/events", axum::routing::get(events))
        .route("/api/state", axum::routing::get(state))
        .route("/api/decisions", axum::routing::post(decide))
        .layer(axum::middleware::from_fn_with_state(page.clone(), guard))
        .with_state(page)
}

/// Every page route: asked by one of the console's own names, never framed, never cached.
async fn guard(
    State(page): State<Arc<Page>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    if let Err(why) = own_host(host, &page.hosts) {
        return refuse(StatusCode::MISDIRECTED_REQUEST, why);
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The page, with a policy that runs only its own script (by hash) and talks only to the
/// console.
async fn index() -> Response {
    static POLICY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let policy = POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src '{}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            script_hash(INDEX)
        )
    });
    let mut response = Html(INDEX).into_response();
    if let Ok(v) = HeaderValue::from_str(policy) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    response
}

/// `sha256-…` of the page's one inline script, for its content security policy.
fn script_hash(page: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let script = page
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or("", |(script, _)| script);
    let digest = sha2::Sha256::digest(script.as_bytes());
    format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(digest))
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
    let Some((decider, token)) = &page.decider else {
        return refuse(
            StatusCode::FORBIDDEN,
            "this console is read-only: start it with --allow-decisions and --decision-token-file, connected as a NATS user that may publish decisions (console or operator)",
        );
    };
    if let Err(why) = same_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, why);
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| token.admits(g)) {
        tracing::warn!(
            given = given.is_some(),
            "a decision with a missing or wrong token was refused"
        );
        return refuse(
            StatusCode::UNAUTHORIZED,
            "a decision needs the console's decision token (scripts/up: data/creds/console.token)",
        );
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

/// Whether `host` (the `Host` header) is one of the console's own names.
fn own_host(host: Option<&str>, hosts: &[String]) -> Result<(), String> {
    let host = host.unwrap_or_default().to_ascii_lowercase();
    if hosts.contains(&host) {
        return Ok(());
    }
    Err(format!(
        "this console answers to its own names ({}), not {host:?}; behind a proxy, give it --public-url",
        hosts.join(", ")
    ))
}

/// The anti-forgery checks of a decision request (its `Host` was checked by [`guard`]).
fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if text(DECISION_HEADER).is_none() {
        return Err(format!(
            "a decision must carry the {DECISION_HEADER} header (the page sends it)"
        ));
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let host = text(header::HOST.as_str()).unwrap_or_default().to_ascii_lowercase();
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
    fn the_page_answers_to_the_consoles_own_names_only() {
        let hosts = own_hosts("127.0.0.1:9464".parse().unwrap(), Some("https://cn.example.com/"));
        for ok in ["127.0.0.1:9464", "LOCALHOST:9464", "[::1]:9464", "cn.example.com"] {
            assert!(own_host(Some(ok), &hosts).is_ok(), "{ok}");
        }
        // A rebound DNS name that resolves to the console, another port, no Host at all.
        for bad in [Some("evil.example:9464"), Some("127.0.0.1:9465"), None] {
            assert!(own_host(bad, &hosts).unwrap_err().contains("own names"), "{bad:?}");
        }
    }

    #[test]
    fn a_decision_needs_the_header_and_its_own_origin() {
        let check = |h: &[(&'static str, &'static str)]| same_origin(&headers(h));
        assert!(check(&[("host", "127.0.0.1:9464")]).unwrap_err().contains(DECISION_HEADER));
        assert!(check(&[(DECISION_HEADER, "1"), ("host", "127.0.0.1:9464")]).is_ok());
        let own = [
            (DECISION_HEADER, "1"),
            ("host", "127.0.0.1:9464"),
            ("origin", "http://127.0.0.1:9464"),
        ];
        assert!(check(&own).is_ok());
        let forged = [
            (DECISION_HEADER, "1"),
            ("host", "127.0.0.1:9464"),
            ("origin", "https://evil.example"),
        ];
        assert!(check(&forged).unwrap_err().contains("evil.example"));
    }

    #[test]
    fn the_token_admits_itself_only_and_is_long_enough() {
        let t = Token::new(" cn0123456789abcdef\n").unwrap();
        assert!(t.admits("cn0123456789abcdef"));
        assert!(!t.admits("cn0123456789abcdeF"));
        assert!(!t.admits("cn0123456789abcde"));
        assert!(!t.admits(""));
        assert!(Token::new("short").is_err());
        assert!(Token::new("two words of sixteen").is_err());
    }

    #[test]
    fn the_pages_policy_allows_exactly_its_script() {
        let page = "<html><script>alert(1)</script></html>";
        // echo -n 'alert(1)' | openssl dgst -sha256 -binary | base64
        assert_eq!(script_hash(page), "sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI=");
        assert!(INDEX.matches("<script>").count() == 1, "the page has one inline script");
    }

    #[test]
    fn a_console_on_every_interface_is_reached_by_its_loopback_names_only_unless_told() {
        let hosts = own_hosts("0.0.0.0:9464".parse().unwrap(), None);
        assert_eq!(hosts, ["localhost:9464", "127.0.0.1:9464", "[::1]:9464"]);
    }
}
