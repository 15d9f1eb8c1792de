//! Notifications: when governance asks a human (`action_pending_approval`, an escalation when
//! the proposer itself asked for one), the console posts it to each configured webhook — as a
//! CloudEvent (JSON, structured mode) or as Slack-compatible text — and writes a proof record of
//! each delivery (`notification_sent`) or of giving up (`notification_failed`) on its own chain,
//! `cn.proof.console.{instance}`.
//!
//! - **Once per record and target**: the console reads the proof log from its start; its own
//!   `notification_*` records say what was already done, so a restart does not notify again.
//!   What history holds back goes out once the log's end is reached, unless the log says the
//!   request was decided, refused or expired meanwhile: a request is news while its
//!   `expires_at` is ahead (without one, for [`FRESH`] after it was made). A crash between a
//!   delivery and its record may deliver it twice; the CloudEvent `id` is the same both times,
//!   so receivers can drop the repeat.
//! - **Retries**: connection errors, timeouts, 429 and 5xx are tried again after 1 s, 2 s, 4 s …
//!   (at most [`MAX_BACKOFF`]; a `Retry-After` in seconds is honoured up to it) up to `attempts`
//!   in all; other answers, and redirects, are final. A request that expires meanwhile is not
//!   sent late: it is recorded as failed.
//! - **Rate limit per target**: at most `per_minute` posts a minute (a token bucket); a target
//!   has a queue of [`QUEUE`]: a notice that finds it full is dropped, with an error in the log.
//! - Webhook URLs are secrets (Slack's carry a token): records and logs name a target by its
//!   format and host only.
//! - One console per instance id: two with the same id would share one chain (the second's
//!   appends fail) and both post.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use agent_runtime::{ProofDraft, ProofWriter};
use bus_schema::Timestamp;
use bus_schema::fleet::CONSOLE;
use bus_schema::proof::{ProofKind, ProofRecord};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

/// A request without an expiry older than this when the console reads it is not notified.
pub const FRESH: Duration = Duration::from_secs(15 * 60);
/// How long one post may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Notices a target may have waiting; more are dropped (and logged).
pub const QUEUE: usize = 1_000;

/// How a target wants its notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A CloudEvent, JSON structured mode (`application/cloudevents+json`).
    CloudEvents,
    /// `{"text": "…"}`: Slack incoming webhooks, Mattermost, Google Chat, Teams workflows.
    Slack,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::CloudEvents => "cloudevents",
            Format::Slack => "slack",
        }
    }
}

/// A webhook: where, in which format, and the name records use for it.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub url: reqwest::Url,
    pub format: Format,
}

/// A webhook URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("webhook {shown}: {problem}")]
pub struct TargetError {
    shown: String,
    problem: String,
}

impl Target {
    pub fn new(url: &str, format: Format) -> Result<Self, TargetError> {
        // Never the user, password, path or query: they may carry a token.
        let parsed = reqwest::Url::parse(url);
        let shown = match &parsed {
            Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
            Err(_) => "(not shown)".to_owned(),
        };
        let err = |problem: String| TargetError { shown: shown.clone(), problem };
        let url = parsed.map_err(|e| err(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(format!("scheme {} (http or https only)", url.scheme())));
        }
        let host = url.host_str().ok_or_else(|| err("no host".into()))?;
        let name = match url.port() {
            Some(port) => format!("{}:{host}:{port}", format.as_str()),
            None => format!("{}:{host}", format.as_str()),
        };
        Ok(Self { name, url, format })
    }
}

/// What the notifier does.
#[derive(Debug, Clone)]
pub struct Settings {
    pub targets: Vec<Target>,
    /// Posts per minute and target.
    pub per_minute: u32,
    /// Tries per notification (1 = no retry).
    pub attempts: u32,
    /// The first retry's wait; each next one doubles it.
    pub backoff: Duration,
    /// The console's address as people reach it, for a link in the message.
    pub page_url: Option<String>,
    /// This console's instance id (its proof chain).
    pub instance: String,
}

/// What a notification is about.
#[derive(Debug, Clone)]
struct Notice {
    what: &'static str,
    record: ProofRecord,
}

impl Notice {
    fn key(&self, target: &str) -> String {
        format!(
            "notify:{}:{}:{}:{target}",
            self.record.agent, self.record.instance, self.record.seq
        )
    }

    fn expires_at(&self) -> Option<Timestamp> {
        self.record.detail["expires_at"].as_str().and_then(|t| t.parse().ok())
    }
}

/// Decides what to notify, from the proof log in its order; the posting happens in one task
/// per target.
#[derive(Debug)]
pub struct Notifier {
    targets: Vec<(String, mpsc::Sender<Notice>)>,
    /// Keys of notifications already recorded (sent or given up) on the console's chain.
    done: HashSet<String>,
    /// Notices found while reading history, sent once the log's end is reached.
    held: Vec<Notice>,
    live: bool,
    chain: String,
}

impl Notifier {
    /// Starts one posting task per target; records go through `writer`.
    pub fn start(settings: Settings, writer: ProofWriter) -> Self {
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            // A redirect is an answer: the target's URL is the one configured, no other.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("chaos-negotiator-console/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let writer = Arc::new(Mutex::new(writer));
        let settings = Arc::new(settings);
        let targets = settings
            .targets
            .iter()
            .map(|t| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let poster = Poster {
                    target: t.clone(),
                    client: client.clone(),
                    writer: writer.clone(),
                    settings: settings.clone(),
                };
                tokio::spawn(poster.run(rx));
                (t.name.clone(), tx)
            })
            .collect();
        Self::with_targets(targets, settings.instance.clone())
    }

    fn with_targets(targets: Vec<(String, mpsc::Sender<Notice>)>, chain: String) -> Self {
        Self { targets, done: HashSet::new(), held: Vec::new(), live: false, chain }
    }

    /// Takes in one record of the proof log, in the log's order.
    pub fn observe(&mut self, r: &ProofRecord) {
        match r.kind {
            ProofKind::NotificationSent | ProofKind::NotificationFailed
                if r.agent == CONSOLE && r.instance.as_str() == self.chain =>
            {
                if let Some(key) = r.detail["key"].as_str() {
                    self.done.insert(key.to_owned());
                }
            }
            // Decided, refused or expired: no longer news for a notice history holds back.
            ProofKind::HumanDecision | ProofKind::ActionApproved | ProofKind::ActionRefused => {
                if let Some(id) = r.proposal_id {
                    self.held.retain(|n| n.record.proposal_id != Some(id));
                }
            }
            ProofKind::ActionPendingApproval => {
                let notice = Notice { what: "approval_pending", record: r.clone() };
                let now = Timestamp::now();
                let news = match notice.expires_at() {
                    Some(at) => at > now,
                    None => now.since(r.ts) <= FRESH,
                };
                if !news {
                    return;
                }
                let what = if r.detail["escalation"] == json!(true) {
                    "escalation"
                } else {
                    "approval_pending"
                };
                let notice = Notice { what, ..notice };
                if self.live {
                    self.send(notice);
                } else {
                    self.held.push(notice);
                }
            }
            _ => {}
        }
    }

    /// The log's end is reached: what history held back goes out now, unless already done.
    pub fn caught_up(&mut self) {
        if self.live {
            return;
        }
        self.live = true;
        for notice in std::mem::take(&mut self.held) {
            self.send(notice);
        }
    }

    fn send(&self, notice: Notice) {
        for (name, tx) in &self.targets {
            if self.done.contains(&notice.key(name)) {
                continue;
            }
            if let Err(e) = tx.try_send(notice.clone()) {
                tracing::error!(target = %name, error = %e, record = notice.record.seq, "a notification was dropped: the target's queue is full or closed");
            }
        }
    }
}

/// Posts one target's notifications, in order, within its rate limit.
#[derive(Debug)]
struct Poster {
    target: Target,
    client: reqwest::Client,
    writer: Arc<Mutex<ProofWriter>>,
    settings: Arc<Settings>,
}

/// What came of one notification.
enum Outcome {
    Sent { attempts: u32, status: u16 },
    Failed { attempts: u32, error: String },
}

impl Poster {
    async fn run(self, mut notices: mpsc::Receiver<Notice>) {
        let mut bucket = Bucket::new(self.settings.per_minute);
        while let Some(notice) = notices.recv().await {
            bucket.take().await;
            let outcome = match notice.expires_at() {
                Some(at) if at <= Timestamp::now() => Outcome::Failed {
                    attempts: 0,
                    error: "the request expired before its turn (rate limit)".into(),
                },
                _ => self.post(&notice).await,
            };
            self.record(&notice, outcome).await;
        }
    }

    async fn post(&self, notice: &Notice) -> Outcome {
        let (content_type, body) = match self.body(notice) {
            Ok(b) => b,
            Err(e) => return Outcome::Failed { attempts: 0, error: e },
        };
        let mut wait = self.settings.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .client
                .post(self.target.url.clone())
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.clone())
                .send()
                .await;
            let (error, retry, retry_after) = match sent {
                Ok(r) if r.status().is_success() => {
                    return Outcome::Sent { attempts: attempt, status: r.status().as_u16() };
                }
                Ok(r) => {
                    let s = r.status();
                    let after = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok())
                        .map(Duration::from_secs);
                    (format!("HTTP {s}"), s.is_server_error() || s.as_u16() == 429, after)
                }
                // Without the URL: it may carry a token.
                Err(e) => (e.without_url().to_string(), true, None),
            };
            if !retry || attempt >= self.settings.attempts.max(1) {
                return Outcome::Failed { attempts: attempt, error };
            }
            let pause = retry_after.unwrap_or(wait).min(MAX_BACKOFF);
            if notice.expires_at().is_some_and(|at| at <= Timestamp::now().plus(pause)) {
                let error = format!("{error}; the request expires before the next try");
                return Outcome::Failed { attempts: attempt, error };
            }
            tracing::warn!(target = %self.target.name, attempt, %error, "notification not delivered; trying again in {pause:?}");
            tokio::time::sleep(pause).await;
            wait = wait.saturating_mul(2).min(MAX_BACKOFF);
        }
    }

    fn body(&self, n: &Notice) -> Result<(&'static str, String), String> {
        let r = &n.record;
        let d = &r.detail;
        let data = json!({
            "what": n.what,
            "env": r.env, "service": r.service, "action": r.action,
            "proposal_id": r.proposal_id, "incident_id": r.incident_id,
            "why": d["why"], "confidence": d["confidence"], "expires_at": d["expires_at"],
            "console": self.settings.page_url,
            "decide": r.proposal_id.map(|id| format!("cnctl approvals approve|deny {id} --reason '…'")),
            "record": r,
        });
        match self.target.format {
            Format::CloudEvents => {
                let event =
                    bus_schema::cloudevent::notification(n.what, &self.settings.instance, r, data)
                        .map_err(|e| format!("cannot build the CloudEvent: {e}"))?;
                let body = serde_json::to_string(&event).map_err(|e| e.to_string())?;
                Ok((bus_schema::cloudevent::STRUCTURED, body))
            }
            Format::Slack => {
                Ok(("application/json", json!({"text": slack_text(n, &data)}).to_string()))
            }
        }
    }

    async fn record(&self, n: &Notice, outcome: Outcome) {
        let r = &n.record;
        let key = n.key(&self.target.name);
        let about = json!({"key": key, "target": self.target.name, "format": self.target.format.as_str(), "what": n.what, "record": {"agent": r.agent, "instance": r.instance, "seq": r.seq}});
        let (kind, detail) = match &outcome {
            Outcome::Sent { attempts, status } => {
                tracing::info!(target = %self.target.name, attempts, what = n.what, "notification delivered");
                (
                    ProofKind::NotificationSent,
                    merge(about, json!({"attempts": attempts, "status": status})),
                )
            }
            Outcome::Failed { attempts, error } => {
                tracing::error!(target = %self.target.name, attempts, %error, what = n.what, "notification NOT delivered; giving up");
                (
                    ProofKind::NotificationFailed,
                    merge(about, json!({"attempts": attempts, "error": error})),
                )
            }
        };
        let mut draft = ProofDraft::new(kind).detail(detail);
        draft.env = r.env.clone();
        draft.service = r.service.clone();
        draft.action = r.action.clone();
        draft.proposal_id = r.proposal_id;
        draft.incident_id = r.incident_id;
        draft.correlation_id = r.correlation_id.clone();
        draft.traceparent = r.traceparent.as_ref().map(|t| t.child(&key));
        if let Err(e) = self.writer.lock().await.append(draft, Some(&key)).await {
            tracing::error!(error = %e, "cannot write the notification's proof record");
        }
    }
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Slack's three control characters, escaped: text from the bus cannot make a link or a
/// mention (`<!channel>`).
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One message a person reads in a chat.
fn slack_text(n: &Notice, data: &Value) -> String {
    let r = &n.record;
    let scope = match (&r.env, &r.service) {
        (Some(e), Some(s)) => format!("{e}/{s}"),
        _ => "the fleet".into(),
    };
    let action = r.action.as_ref().map(ToString::to_string).unwrap_or_else(|| "an action".into());
    let headline = match n.what {
        "escalation" => format!(":rotating_light: *Escalation on {scope}*: {action} needs a human"),
        _ => format!(":hourglass: *{action} on {scope} waits for your approval*"),
    };
    let mut lines = vec![headline];
    if let Some(why) = data["why"].as_str() {
        lines.push(format!("> {}", slack_escape(why)));
    }
    if let Some(at) = data["expires_at"].as_str() {
        lines.push(format!("Expires at {at}; governance refuses it then."));
    }
    if let Some(decide) = data["decide"].as_str() {
        lines.push(format!("Decide: `{decide}`"));
    }
    if let Some(url) = data["console"].as_str() {
        lines.push(format!("Console: {url}"));
    }
    lines.join("\n")
}

/// A token bucket: `per_minute` tokens a minute, as many at once.
#[derive(Debug)]
struct Bucket {
    per_minute: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Self { per_minute, tokens: per_minute, at: tokio::time::Instant::now() }
    }

    async fn take(&mut self) {
        loop {
            let now = tokio::time::Instant::now();
            let refill = now.duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
            self.tokens = (self.tokens + refill).min(self.per_minute);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let short = (1.0 - self.tokens) * 60.0 / self.per_minute;
            tokio::time::sleep(Duration::from_secs_f64(short)).await;
        }
    }
}

#[cfg(test)]
mod tests;
