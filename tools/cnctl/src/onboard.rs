//! `cnctl onboard`: onboard an app and wait for the deploy agent's verdict.
//!
//! The request is published on `cn.requests.onboard.{env}` exactly as `cnctl publish onboard`
//! publishes it. The deploy agent judges it and answers on the proof log: `onboarding_accepted`,
//! `onboarding_refused` with a reason code, or `event_rejected` for a request it cannot read.
//! The answer is told from every other record by its correlation id: cnctl's message id (a
//! hash of subject and payload), which the agent's record echoes.
//!
//! The position in CN_PROOF is taken before publishing, so a verdict recorded at once cannot
//! slip past. A request published again within the duplicate window is dropped by JetStream
//! and judged nothing new; its earlier verdict is shown instead, read back over the window.

use std::process::ExitCode;
use std::time::Duration;

use agent_runtime::config::{EXIT_CONFIG, LogFormat, NatsArgs, parse_duration};
use agent_runtime::streams::DUPLICATE_WINDOW;
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use bus_schema::proof::{ProofKind, ProofRecord};
use bus_schema::subject::{ONBOARD_REQUESTS, PROOF, Stream};
use bus_schema::{Env, OnboardRequest, Timestamp, Validate};
use futures_util::StreamExt;

use crate::Failure;
use crate::publish::{self, Source};

/// Exit code when the deploy agent refused the request (or could not read it).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code when no verdict arrived within `--wait`.
pub const EXIT_NO_ANSWER: u8 = 2;

/// How long one JetStream call may take (a permission violation looks like no answer).
const JS_TIMEOUT: Duration = Duration::from_secs(5);
/// When to say that we are still waiting, and how often after that.
const FIRST_PROGRESS: Duration = Duration::from_secs(2);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub const ONBOARD_HELP: &str = "\
The request is published on cn.requests.onboard.{env} (CN_EVENTS); the deploy agent judges it \
and records onboarding_accepted or onboarding_refused, with a reason, on the proof log, which \
this command waits for. Reading the proof log needs the `ci` (pipelines) or `operator` NATS user; \
`cnctl publish onboard` only publishes.

Rules (the deploy agent's; a refusal names its reason code and what would pass):
  --app      3 to 50 of a-z, 0-9 and '-', starting with a letter or digit
             (^[a-z0-9][a-z0-9-]{2,49}$), unique in its env
             -> invalid_app_name, duplicate_app (the same name with other settings)
  --runtime  one of: backend, frontend, worker, job, static
             -> invalid_runtime
  --repo     https://HOST[:PORT]/PATH in ASCII, at most 500 characters; HOST a DNS name
             with a dot (no user@, no IPv6 literal); no whitespace, control characters,
             quotes or ; | & $ ` < > ( ) { } [ ] * ? ! # ^ \\ (so no query string); no . or
             .. segments, and no percent escape of those or of '.', '/', '%' (%2e, %2f, %00)
             -> invalid_repo_url
  --env      not prod (or production) unless the deploy agent runs with
             --allow-prod-onboarding (onboarding in dev or stage first does not lift it)
             -> env_not_allowed
--file takes the same request as JSON: {\"app_name\", \"repo_url\", \"runtime\", \"env\"}.

Exit codes:
  0   accepted
  1   refused (the reason and what would pass are printed), or not published
  2   no verdict within --wait: the deploy agent may not be running (check with `cnctl status`)
  64  bad usage: a missing flag, an unreadable --file

Examples:
  cnctl onboard --app demo-api --repo https://git.example.com:8443/org/demo-api.git --runtime backend --env dev
  cnctl onboard --file onboard.json --wait 30s --json";

#[derive(Debug, clap::Args)]
pub struct OnboardArgs {
    #[command(flatten)]
    pub source: Source,
    /// The app's name, e.g. demo-api: 3 to 50 of a-z, 0-9, '-'; unique in its env.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub app: Option<String>,
    /// The repository: https://HOST[:PORT]/PATH, e.g. https://git.example.com/org/demo-api.git.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub repo: Option<String>,
    /// backend, frontend, worker, job or static.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub runtime: Option<String>,
    /// Environment, e.g. dev.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub env: Option<Env>,
    /// How long to wait for the deploy agent's verdict.
    #[arg(long, env = "CN_ONBOARD_WAIT", default_value = "15s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Print the deploy agent's proof record (JSON, as stored) instead of a readable line.
    #[arg(long)]
    pub json: bool,
}

/// The deploy agent's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// `onboarding_refused`: a reason code and what would pass.
    Refused {
        reason: String,
        error: String,
    },
    /// `event_rejected`: the agent could not read the request.
    Rejected {
        reason: String,
        error: String,
    },
}

impl Verdict {
    /// The verdict `record` gives, if it is the deploy agent's answer to the request with this
    /// correlation id.
    pub fn of(record: &ProofRecord, correlation_id: &str) -> Option<Verdict> {
        if record.agent != bus_schema::fleet::DEPLOY_AGENT
            || record.correlation_id.as_deref() != Some(correlation_id)
        {
            return None;
        }
        let reason = || record.reason.clone().unwrap_or_default();
        let error = || record.detail["error"].as_str().unwrap_or_default().to_owned();
        match record.kind {
            ProofKind::OnboardingAccepted => Some(Verdict::Accepted),
            ProofKind::OnboardingRefused => {
                Some(Verdict::Refused { reason: reason(), error: error() })
            }
            ProofKind::EventRejected => {
                Some(Verdict::Rejected { reason: reason(), error: error() })
            }
            _ => None,
        }
    }

    /// One readable line, e.g. `accepted: demo-api (backend) in dev`.
    pub fn line(&self, request: &OnboardRequest) -> String {
        match self {
            Verdict::Accepted => {
                format!("accepted: {} ({}) in {}", request.app_name, request.runtime, request.env)
            }
            Verdict::Refused { reason, error } => format!("refused ({reason}): {error}"),
            Verdict::Rejected { reason, error } => {
                format!("rejected ({reason}): the deploy agent could not read the request: {error}")
            }
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Verdict::Accepted => ExitCode::SUCCESS,
            Verdict::Refused { .. } | Verdict::Rejected { .. } => ExitCode::from(EXIT_REFUSED),
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\nFor more information, try 'cnctl onboard --help'.");
    ExitCode::from(EXIT_CONFIG)
}

/// Publishes the request and prints the deploy agent's verdict.
pub async fn run(nats: &NatsArgs, args: OnboardArgs) -> Result<ExitCode, Failure> {
    let request =
        match publish::onboard_request(args.source, args.app, args.repo, args.runtime, args.env) {
            Ok(request) => request,
            Err(e) => return Ok(usage(&e.to_string())),
        };
    if let Err(e) = request.validate() {
        return Ok(usage(&format!("not published: {e}")));
    }
    // The connect helper logs permission violations (they arrive asynchronously); show them.
    agent_runtime::telemetry::init(LogFormat::Plain, "agent_runtime=error")?;
    let client = crate::connect(nats).await?;
    let user = nats.user.clone().unwrap_or_else(|| "(no user)".to_owned());
    let denied = format!(
        "; waiting for the verdict reads CN_PROOF, which needs the `ci` (for pipelines) or `operator` NATS user (connected as {user}); `cnctl publish onboard` only publishes"
    );
    let js = jetstream::context::ContextBuilder::new().timeout(JS_TIMEOUT).build(client.clone());
    let proof = match js.get_stream(Stream::Proof.name()).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(_)) => {
            return Err(format!("cannot open CN_PROOF: {e}; has the fleet run yet?").into());
        }
        Err(e) => return Err(format!("cannot open CN_PROOF: {e}{denied}").into()),
    };
    let after = proof.cached_info().state.last_sequence;

    let subject = ONBOARD_REQUESTS.subject(&request.env);
    let (published, correlation_id) = publish::publish_traced(&client, &subject, &request, None)
        .await
        .map_err(|e| format!("not published: {e}"))?;
    let from = if published.duplicate {
        eprintln!(
            "this request was already published on {subject} (stream seq {}); looking for its verdict",
            published.stream_seq
        );
        // Its verdict was recorded after that publication, which is within the window.
        DeliverPolicy::ByStartTime {
            start_time: Timestamp::now().minus(2 * DUPLICATE_WINDOW).to_offset_date_time(),
        }
    } else {
        DeliverPolicy::ByStartSequence { start_sequence: after + 1 }
    };

    let config = pull::Config {
        filter_subject: PROOF.agent(&bus_schema::fleet::DEPLOY_AGENT).pattern().to_owned(),
        deliver_policy: from,
        ack_policy: AckPolicy::None,
        inactive_threshold: Duration::from_secs(30),
        ..Default::default()
    };
    let fail = |e: &dyn std::fmt::Display| format!("cannot read CN_PROOF: {e}{denied}");
    let consumer = proof.create_consumer(config).await.map_err(|e| fail(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| fail(&e))?;
    let started = tokio::time::Instant::now();
    let deadline = started + args.wait;
    let mut progress = tokio::time::interval_at(started + FIRST_PROGRESS, PROGRESS_EVERY);
    let answer = loop {
        tokio::select! {
            next = messages.next() => match next {
                Some(Ok(msg)) => {
                    let verdict = serde_json::from_slice::<ProofRecord>(&msg.payload).ok().and_then(|r| Verdict::of(&r, &correlation_id));
                    if let Some(verdict) = verdict {
                        break Some((verdict, msg.payload.clone()));
                    }
                }
                Some(Err(e)) => return Err(fail(&e).into()),
                None => break None,
            },
            _ = progress.tick() => eprintln!(
                "waiting for the deploy agent's verdict on {} in {} ({}s of {:?})",
                request.app_name, request.env, started.elapsed().as_secs(), args.wait
            ),
            () = tokio::time::sleep_until(deadline) => break None,
        }
    };
    // Best effort: an idle consumer goes away by itself anyway.
    let _ = proof.delete_consumer(&consumer.cached_info().name).await;
    match answer {
        Some((verdict, record)) => {
            match args.json {
                true => outln!("{}", String::from_utf8_lossy(&record)),
                false => outln!("{}", bus_schema::display::escape(&verdict.line(&request))),
            }
            Ok(verdict.exit_code())
        }
        None => {
            eprintln!(
                "no verdict on onboarding {} in {} within {:?}; the deploy agent may not be running: check with `cnctl status` (and `cnctl tail --agent deploy-agent` for its records)",
                request.app_name, request.env, args.wait
            );
            Ok(ExitCode::from(EXIT_NO_ANSWER))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(
        agent: &str,
        kind: &str,
        correlation_id: &str,
        reason: Option<&str>,
        detail: serde_json::Value,
    ) -> ProofRecord {
        serde_json::from_value(json!({
            "v": 1, "agent": agent, "instance": "0", "seq": 3, "ts": "2026-11-22T10:00:00.123Z", "kind": kind,
            "correlation_id": correlation_id, "env": "dev", "reason": reason, "detail": detail, "prev_hash": "0".repeat(64)
        }))
        .unwrap()
    }

    fn request() -> OnboardRequest {
        OnboardRequest {
            app_name: "demo-api".into(),
            repo_url: "https://example.com/org/demo-api".into(),
            runtime: "backend".into(),
            env: "dev".parse().unwrap(),
        }
    }

    #[test]
    fn only_the_deploy_agents_answer_to_this_request_counts() {
        let accepted = record(
            "deploy-agent",
            "onboarding_accepted",
            "cnctl:abc",
            None,
            json!({"app_name": "demo-api"}),
        );
        assert_eq!(Verdict::of(&accepted, "cnctl:abc"), Some(Verdict::Accepted));
        assert_eq!(Verdict::of(&accepted, "cnctl:other"), None);
        let elsewhere = record(
            "governance-gate",
            "event_rejected",
            "cnctl:abc",
            Some("invalid_json"),
            json!({"error": "x"}),
        );
        assert_eq!(Verdict::of(&elsewhere, "cnctl:abc"), None);
        let started = record("deploy-agent", "agent_started", "cnctl:abc", None, json!(null));
        assert_eq!(Verdict::of(&started, "cnctl:abc"), None);
    }

    #[test]
    fn verdicts_read_as_one_line_with_their_exit_code() {
        let accepted = record("deploy-agent", "onboarding_accepted", "c", None, json!({}));
        let verdict = Verdict::of(&accepted, "c").unwrap();
        assert_eq!(verdict.line(&request()), "accepted: demo-api (backend) in dev");
        assert_eq!(verdict.exit_code(), ExitCode::SUCCESS);

        let error = "runtime \"cobol\" is not one of: backend, frontend, worker, job, static";
        let refused = record(
            "deploy-agent",
            "onboarding_refused",
            "c",
            Some("invalid_runtime"),
            json!({"error": error, "app_name": "demo-api"}),
        );
        let verdict = Verdict::of(&refused, "c").unwrap();
        assert_eq!(verdict.line(&request()), format!("refused (invalid_runtime): {error}"));
        assert_eq!(verdict.exit_code(), ExitCode::from(EXIT_REFUSED));

        let rejected = record(
            "deploy-agent",
            "event_rejected",
            "c",
            Some("invalid_json"),
            json!({"error": "expected value"}),
        );
        let verdict = Verdict::of(&rejected, "c").unwrap();
        assert!(
            verdict.line(&request()).starts_with("rejected (invalid_json): "),
            "{}",
            verdict.line(&request())
        );
        assert_eq!(verdict.exit_code(), ExitCode::from(EXIT_REFUSED));
    }
}
