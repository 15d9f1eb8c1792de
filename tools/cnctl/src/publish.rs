//! `cnctl publish`: put an event or request on the bus the way a pipeline would.
//!
//! From flags (`cnctl publish metric --env prod --service api --crash-looping`), or from a JSON
//! file or stdin (`--file event.json`, `--file -`). The payload is validated with the same rules
//! the agents apply before it is sent, so a mistake is reported here, not as `event_rejected`.
//! The `Nats-Msg-Id` is a hash of subject and payload: publishing the same event twice within
//! the duplicate window stores it once.
//!
//! `--wait` waits for the fleet's verdict (see [`crate::verdict`]): accepted, or rejected with
//! the reason, exiting 1 on a rejection and 2 when an agent that reads it did not get to it in
//! time. `--json` prints what happened as one JSON object.

use bus_schema::trace::TraceParent;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent_runtime::config::{NatsArgs, parse_duration};
use agent_runtime::{Published, Publisher, Trace};
use bus_schema::codec::{Encoding, Limits, Payload, decode};
use bus_schema::proof::ProofHash;
use bus_schema::{
    ContractRequest, DeployEvent, DeployStatus, Env, LogEvent, LogLevel, MetricSample,
    OnboardRequest, ServiceName, Subject, Timestamp, Variant, subject,
};

use crate::Failure;
use crate::style::{Tone, paint};
use crate::verdict::{Answer, Listener, Verdict};

/// How to publish: wait for the verdict or not, and how to report.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// Wait for the fleet's verdict: exit 0 when every agent that reads it accepted it, 1 when
    /// one rejected it (with the reason), 2 when one did not get to it within --timeout.
    #[arg(long, global = true)]
    pub wait: bool,
    /// How long --wait waits (500ms, 10s, 1m).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print what happened as one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
    /// Continue this W3C trace (00-{trace id}-{span id}-{flags}): the fleet's outputs and proof
    /// records for the event carry its trace id. $TRACEPARENT, as CI tracing tools set it.
    #[arg(long, global = true, env = "TRACEPARENT", value_parser = parse_traceparent)]
    pub traceparent: Option<TraceParent>,
}

fn parse_traceparent(s: &str) -> Result<TraceParent, String> {
    s.parse().map_err(|e: bus_schema::trace::TraceParentError| e.to_string())
}

#[derive(Debug, clap::Args)]
pub struct Source {
    /// Read the JSON payload from this file (`-` for stdin) instead of flags.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct Target {
    /// Environment, e.g. prod.
    #[arg(long, required_unless_present = "file")]
    pub env: Option<Env>,
    /// Service, e.g. payments-api.
    #[arg(long, required_unless_present = "file")]
    pub service: Option<ServiceName>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Event {
    /// A deploy event (cn.events.deploy.{env}.{service}).
    Deploy {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        target: Target,
        #[arg(long, required_unless_present = "file")]
        version: Option<String>,
        #[arg(long)]
        previous_version: Option<String>,
        /// started, succeeded, failed or rolled_back.
        #[arg(long, default_value = "succeeded")]
        status: DeployStatus,
        #[arg(long)]
        commit_sha: Option<String>,
        #[arg(long)]
        deployment_id: Option<String>,
    },
    /// A metric sample (cn.events.metric.{env}.{service}); every measurement is optional.
    Metric {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        target: Target,
        /// Fraction of failed requests, 0..1.
        #[arg(long)]
        error_rate: Option<f64>,
        #[arg(long)]
        p95_ms: Option<f64>,
        #[arg(long)]
        p99_ms: Option<f64>,
        #[arg(long)]
        cpu: Option<f64>,
        #[arg(long)]
        memory: Option<f64>,
        /// The service is crash looping (`--crash-looping false` for a recovered one).
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        crash_looping: Option<bool>,
        #[arg(long)]
        restarts: Option<u32>,
        #[arg(long)]
        qps: Option<f64>,
        /// stable or canary.
        #[arg(long)]
        variant: Option<Variant>,
    },
    /// A log event (cn.events.log.{env}.{service}).
    Log {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        target: Target,
        /// trace, debug, info, warn, error or fatal.
        #[arg(long, default_value = "error")]
        level: LogLevel,
        #[arg(long, required_unless_present = "file")]
        message: Option<String>,
    },
    /// A contract request from a JSON file or stdin (cn.requests.contract.{env}.{service}).
    Contract {
        /// The request as JSON (`-` for stdin).
        #[arg(required_unless_present = "file_flag", conflicts_with = "file_flag")]
        file: Option<PathBuf>,
        /// The same, as a flag like the other publish commands take it (`--file -` for stdin).
        #[arg(long = "file", short = 'f', id = "file_flag", value_name = "FILE")]
        file_flag: Option<PathBuf>,
    },
    /// An onboarding request (cn.requests.onboard.{env}).
    Onboard {
        #[command(flatten)]
        source: Source,
        #[arg(long, required_unless_present = "file")]
        app: Option<String>,
        #[arg(long, required_unless_present = "file")]
        repo: Option<String>,
        /// backend, frontend, worker, job or static.
        #[arg(long, required_unless_present = "file")]
        runtime: Option<String>,
        #[arg(long, required_unless_present = "file")]
        env: Option<Env>,
    },
}

/// A payload from a JSON file, or stdin for `-`, checked as its consumer will check it.
pub(crate) fn read_json<P: Payload>(path: &PathBuf) -> Result<P, Failure> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map_err(|e| format!("cannot read stdin: {e}"))?;
    } else {
        bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    }
    Ok(decode(Encoding::Json, &bytes, &Limits::DEFAULT)
        .map_err(|e| format!("{}: {e}", path.display()))?)
}

fn need<T>(value: Option<T>, flag: &str) -> Result<T, Failure> {
    value.ok_or_else(|| format!("{flag} is required without --file").into())
}

pub async fn run(nats: &NatsArgs, how: &PublishArgs, event: Event) -> Result<ExitCode, Failure> {
    let now = Timestamp::now();
    match event {
        Event::Deploy {
            source,
            target,
            version,
            previous_version,
            status,
            commit_sha,
            deployment_id,
        } => {
            let e = match source.file {
                Some(f) => read_json::<DeployEvent>(&f)?,
                None => DeployEvent {
                    service: need(target.service, "--service")?,
                    env: need(target.env, "--env")?,
                    version: need(version, "--version")?,
                    previous_version,
                    commit_sha,
                    status,
                    timestamp: now,
                    deployment_id,
                },
            };
            send(nats, how, &subject::DEPLOY_EVENTS.subject(&e.env, &e.service), &e, "deploy event")
                .await
        }
        Event::Metric {
            source,
            target,
            error_rate,
            p95_ms,
            p99_ms,
            cpu,
            memory,
            crash_looping,
            restarts,
            qps,
            variant,
        } => {
            let m = match source.file {
                Some(f) => read_json::<MetricSample>(&f)?,
                None => MetricSample {
                    service: need(target.service, "--service")?,
                    env: need(target.env, "--env")?,
                    error_rate,
                    p95_latency_ms: p95_ms,
                    p99_latency_ms: p99_ms,
                    cpu_percent: cpu,
                    memory_percent: memory,
                    crash_looping,
                    restarts,
                    qps,
                    variant,
                    timestamp: now,
                    source: Some("cnctl".to_owned()),
                },
            };
            send(
                nats,
                how,
                &subject::METRIC_EVENTS.subject(&m.env, &m.service),
                &m,
                "metric sample",
            )
            .await
        }
        Event::Log { source, target, level, message } => {
            let l = match source.file {
                Some(f) => read_json::<LogEvent>(&f)?,
                None => LogEvent {
                    service: need(target.service, "--service")?,
                    env: need(target.env, "--env")?,
                    level,
                    message: need(message, "--message")?,
                    timestamp: now,
                    source: Some("cnctl".to_owned()),
                },
            };
            send(nats, how, &subject::LOG_EVENTS.subject(&l.env, &l.service), &l, "log event").await
        }
        Event::Contract { file, file_flag } => {
            let file =
                file.or(file_flag).ok_or("a contract request needs a FILE (`-` for stdin)")?;
            let r = read_json::<ContractRequest>(&file)?;
            send(
                nats,
                how,
                &subject::CONTRACT_REQUESTS.subject(&r.env, &r.service),
                &r,
                "contract request",
            )
            .await
        }
        Event::Onboard { source, app, repo, runtime, env } => {
            let r = onboard_request(source, app, repo, runtime, env)?;
            send(nats, how, &subject::ONBOARD_REQUESTS.subject(&r.env), &r, "onboarding request")
                .await
        }
    }
}

/// An onboarding request from `--file`, or else from the flags (each then required).
pub(crate) fn onboard_request(
    source: Source,
    app: Option<String>,
    repo: Option<String>,
    runtime: Option<String>,
    env: Option<Env>,
) -> Result<OnboardRequest, Failure> {
    Ok(match source.file {
        Some(f) => read_json::<OnboardRequest>(&f)?,
        None => OnboardRequest {
            app_name: need(app, "--app")?,
            repo_url: need(repo, "--repo")?,
            runtime: need(runtime, "--runtime")?,
            env: need(env, "--env")?,
        },
    })
}

async fn send<P: Payload>(
    nats: &NatsArgs,
    how: &PublishArgs,
    subject: &Subject<P>,
    payload: &P,
    what: &str,
) -> Result<ExitCode, Failure> {
    payload.validate().map_err(|e| format!("not published: {e}"))?;
    let client = crate::connect(nats).await?;
    let listener = match how.wait {
        true => Some(Listener::start(&client).await?),
        false => None,
    };
    let (published, id) = publish_traced(&client, subject, payload, how.traceparent).await?;
    // A duplicate was judged when it was first published; its records are already on the log.
    let verdict = match listener {
        Some(l) if !published.duplicate => {
            Some(l.verdict(&client, subject.as_str(), published.stream_seq, &id, how.timeout).await)
        }
        _ => None,
    };
    let code = match &verdict {
        None => ExitCode::SUCCESS,
        Some(v) => match v.summary() {
            Answer::Accepted | Answer::NoConsumer => ExitCode::SUCCESS,
            Answer::Rejected => ExitCode::FAILURE,
            Answer::NoAnswer => ExitCode::from(2),
        },
    };
    if how.json {
        let mut report = serde_json::json!({
            "subject": subject.as_str(),
            "stream_seq": published.stream_seq,
            "duplicate": published.duplicate,
            "msg_id": id,
        });
        if let Some(v) = &verdict {
            report["verdict"] = serde_json::to_value(v.summary())?;
            report["readers"] = serde_json::to_value(&v.readers)?;
            report["records"] = serde_json::to_value(&v.records)?;
        }
        outln!("{report}");
        return Ok(code);
    }
    if published.duplicate {
        outln!(
            "{what} on {subject} was already published (stream seq {}); not stored again{}",
            published.stream_seq,
            if how.wait {
                ", so there is no new verdict: `cnctl tail` shows the first one"
            } else {
                ""
            }
        );
    } else {
        outln!("published {what} on {subject} (stream seq {})", published.stream_seq);
    }
    if let Some(v) = &verdict {
        report_verdict(v, how.timeout);
    }
    Ok(code)
}

/// The verdict as lines: who rejected it and why, who did not answer, who accepted it; then
/// the records about it.
fn report_verdict(v: &Verdict, timeout: Duration) {
    for r in v.readers.iter().filter(|r| r.verdict == Answer::Rejected) {
        outln!(
            "{} by {}: {}: {}",
            paint("rejected", Tone::Bad),
            r.reader.agent,
            r.reason.as_deref().unwrap_or("no reason given"),
            r.error.as_deref().unwrap_or("")
        );
    }
    let silent = v.agents(Answer::NoAnswer);
    if !silent.is_empty() {
        let cause = v
            .readers
            .iter()
            .find_map(|r| r.error.as_deref().filter(|_| r.verdict == Answer::NoAnswer));
        outln!(
            "{} from {silent} within {timeout:?}: is it running (cnctl status)?{}",
            paint("no verdict", Tone::Waiting),
            cause.map(|c| format!(" ({c})")).unwrap_or_default()
        );
    }
    let accepted = v.agents(Answer::Accepted);
    if !accepted.is_empty() {
        outln!("{} by {accepted}", paint("accepted", Tone::Good));
    }
    if v.readers.iter().all(|r| r.verdict == Answer::NoConsumer) {
        outln!(
            "no agent has read this subject yet on this server: is the fleet up (cnctl status)?"
        );
    }
    for r in v.records.iter().filter(|r| r.kind != bus_schema::proof::ProofKind::EventRejected) {
        outln!("  {}", crate::tail::coloured_line(r));
    }
}

/// Publishes a payload with cnctl's `Nats-Msg-Id` (a hash of subject and payload), which is
/// also its `Cn-Correlation-Id`: the agents' proof records about it carry that id. Returns
/// what JetStream said and the id.
pub(crate) async fn publish_traced<P: Payload>(
    client: &async_nats::Client,
    subject: &Subject<P>,
    payload: &P,
    traceparent: Option<TraceParent>,
) -> Result<(Published, String), Failure> {
    let bytes = bus_schema::codec::encode(payload)?;
    let id = format!(
        "cnctl:{}",
        &ProofHash::of(&[subject.as_str().as_bytes(), b"\0", &bytes].concat()).to_hex()[..32]
    );
    let publisher = Publisher::new(client.clone(), async_nats::jetstream::new(client.clone()));
    let trace = Trace { traceparent, ..Trace::new(id.clone()) };
    Ok((publisher.publish(subject, payload, &trace).await?, id))
}
