//! `cnctl rollout get`: a canary rollout as the deploy agent recorded it — its plan, each
//! stage's verdict with the samples behind it, and how it ended — optionally followed live
//! (`--watch`, like `kubectl argo rollouts get rollout --watch`).
//!
//! Everything comes from the deploy agent's chain on the proof log (`canary_stage`,
//! `canary_promoted`, `canary_aborted`, and the steps it proposed), so it needs no state of its
//! own and shows the same thing to an operator, an auditor or a CI job.

use std::io::IsTerminal;
use std::process::ExitCode;

use agent_runtime::config::NatsArgs;
use async_nats::jetstream;
use bus_schema::fleet::DEPLOY_AGENT;
use bus_schema::proof::{ProofKind, ProofRecord};
use bus_schema::subject::PROOF;
use bus_schema::{Env, RolloutVerb, ServiceName, Timestamp};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Failure;
use crate::style::{Tone, paint};
use crate::tail::{Since, coloured_line, proof_consumer};
use crate::verdict::{Answer, Listener};

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Show a service's latest canary rollout: plan, stage verdicts, how it ended.
    #[command(after_help = GET_HELP)]
    Get(GetArgs),
    /// Skip the stages left and propose the promotion (governance decides; in prod a human).
    #[command(after_help = COMMAND_HELP)]
    Promote(CommandArgs),
    /// Abort now: the deploy agent proposes abort_rollout, then the rollback.
    #[command(after_help = COMMAND_HELP)]
    Abort(CommandArgs),
}

const COMMAND_HELP: &str = "\
The command goes to the deploy agent on cn.actions.rollout.{env}.{service} (only the `operator` \
NATS user may publish there), naming the version in progress. The deploy agent turns it into a \
proposal that governance decides like any step: a promotion in prod waits for a human in \
`cnctl approvals`. While a step is in flight the command waits for it, so a step executed late \
cannot undo it. Every command is recorded with who and why.

Exit codes:
  0   the deploy agent took the command (the proposal is on its way to governance)
  1   no rollout in progress, or the deploy agent refused the command (why is printed)
  2   the deploy agent did not answer within --timeout
  64  bad usage (no --reason, no operator name)

Examples:
  cnctl rollout promote --env stage --service payments-api --reason \"canary clean for an hour\"
  cnctl rollout abort --env prod --service payments-api --reason \"p99 up on the dashboards\"";

#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    #[arg(long)]
    pub env: Env,
    #[arg(long)]
    pub service: ServiceName,
    /// Why: recorded with the command and in the proposal's explanation.
    #[arg(long)]
    pub reason: String,
    /// Who asks [default: $USER, else your login name].
    #[arg(long, env = "CN_OPERATOR")]
    pub operator: Option<String>,
    /// How long to wait for the deploy agent to take the command.
    #[arg(long, default_value = "10s", value_parser = agent_runtime::config::parse_duration)]
    pub timeout: std::time::Duration,
}

const GET_HELP: &str = "\
Exit codes:
  0   shown (with --watch: the rollout was promoted)
  1   no rollout of the service since --since; with --watch: the rollout was aborted
  64  bad usage

Examples:
  cnctl rollout get --env stage --service payments-api
  cnctl rollout get --env prod --service payments-api --watch     # until promoted or aborted
  cnctl rollout get --env prod --service payments-api --json";

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[arg(long)]
    pub env: Env,
    #[arg(long)]
    pub service: ServiceName,
    /// Keep following until the rollout ends: the view is redrawn on a terminal, and each new
    /// record appended as a line otherwise.
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Print the rollout as one JSON object (with --watch, one per change).
    #[arg(long)]
    pub json: bool,
    /// How far back to look for the rollout's start (10m, 2h, an RFC 3339 time, or all).
    #[arg(long, default_value = "24h", value_parser = crate::tail::parse_since)]
    pub since: Since,
}

/// One stage of the plan and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub weight_percent: u64,
    /// `pending`, `observing`, then the last verdict: `passed`, `failed`, `extended`,
    /// `inconclusive`, `silent`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_samples: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_samples: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// A rollout as its records tell it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollout {
    pub env: String,
    pub service: String,
    pub version: String,
    pub stable_version: Option<String>,
    pub rollout_id: Option<String>,
    pub contract_id: Option<String>,
    pub deployment_id: Option<String>,
    pub risk: Option<String>,
    pub started_at: Timestamp,
    /// `progressing`, `promoted`, `aborted`, `abort_failed`, `abort_refused`, `deploy_ended`.
    pub phase: String,
    /// Why it is where it is: the last abort's reason, a step held back, a human asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub stages: Vec<Stage>,
    pub updated_at: Timestamp,
}

impl Rollout {
    /// A rollout from its `rollout_started` record.
    fn start(r: &ProofRecord) -> Self {
        let d = &r.detail;
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let stages = d["weights"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(Value::as_u64)
                    .map(|weight_percent| Stage {
                        weight_percent,
                        status: "pending".to_owned(),
                        canary_samples: None,
                        stable_samples: None,
                        elapsed_s: None,
                        reasons: Vec::new(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut rollout = Rollout {
            env: r.env.as_ref().map(ToString::to_string).unwrap_or_default(),
            service: r.service.as_ref().map(ToString::to_string).unwrap_or_default(),
            version: text(&d["version"]).unwrap_or_default(),
            stable_version: text(&d["stable_version"]),
            rollout_id: text(&d["rollout_id"]),
            contract_id: text(&d["contract_id"]),
            deployment_id: text(&d["deployment_id"]),
            risk: text(&d["risk"]),
            started_at: r.ts,
            phase: "progressing".to_owned(),
            note: None,
            stages,
            updated_at: r.ts,
        };
        if let Some(first) = rollout.stages.first_mut() {
            first.status = "observing".to_owned();
        }
        rollout
    }

    /// Whether a record of the deploy agent belongs to this rollout.
    fn owns(&self, r: &ProofRecord) -> bool {
        match (&self.rollout_id, r.detail["rollout_id"].as_str()) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => r.detail["version"].as_str() == Some(&self.version),
        }
    }

    /// Applies a later record of the same rollout.
    fn apply(&mut self, r: &ProofRecord) {
        self.updated_at = r.ts;
        let reason = r.reason.as_deref().unwrap_or("");
        let d = &r.detail;
        match r.kind {
            ProofKind::CanaryStage => {
                const VERDICTS: [&str; 5] =
                    ["passed", "failed", "extended", "inconclusive", "silent"];
                let n = d["stage"].as_u64().and_then(|n| usize::try_from(n).ok());
                let Some(n) = n.filter(|_| VERDICTS.contains(&reason)) else {
                    // retry_later, an operator's command and the like: where it stands.
                    self.note = Some(format!("{reason}: {}", brief(d)));
                    return;
                };
                let reasons: Vec<String> = d["reasons"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                if let Some(stage) = self.stages.get_mut(n.saturating_sub(1)) {
                    stage.status = reason.to_owned();
                    stage.canary_samples = d["samples"]["canary"].as_u64();
                    stage.stable_samples = d["samples"]["stable"].as_u64();
                    stage.elapsed_s = d["elapsed_s"].as_f64();
                    stage.reasons = reasons;
                }
                // A verdict that moves on starts the next stage.
                if matches!(reason, "passed" | "inconclusive" | "silent") {
                    if let Some(next) = self.stages.get_mut(n) {
                        next.status = "observing".to_owned();
                    }
                }
                self.note = None;
            }
            ProofKind::CanaryPromoted => {
                self.phase = "promoted".to_owned();
                self.note = None;
            }
            ProofKind::CanaryAborted => {
                self.phase = reason.to_owned();
                self.note = d["why"].as_str().or(d["hint"].as_str()).map(str::to_owned);
            }
            _ => {}
        }
    }

    pub fn is_over(&self) -> bool {
        self.phase != "progressing"
    }

    /// The view: a header, then a line per stage.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let stable =
            self.stable_version.as_deref().map(|s| format!(" (stable {s})")).unwrap_or_default();
        let risk = self.risk.as_deref().map(|r| format!("  risk {r}")).unwrap_or_default();
        out.push_str(&format!(
            "Rollout   {}/{}  {}{stable}{risk}\n",
            self.env, self.service, self.version
        ));
        if let Some(c) = &self.contract_id {
            let deployment = self.deployment_id.as_deref().unwrap_or("-");
            out.push_str(&format!("Contract  {c}  deployment {deployment}\n"));
        }
        out.push_str(&format!(
            "Started   {}   updated {}\n",
            self.started_at.millis(),
            self.updated_at.millis()
        ));
        let phase = match self.phase.as_str() {
            "progressing" => {
                let at = self.stages.iter().position(|s| s.status == "observing");
                let what = match at {
                    Some(i) => format!(
                        "progressing: stage {} of {} at {} %",
                        i + 1,
                        self.stages.len(),
                        self.stages[i].weight_percent
                    ),
                    None if self.stages.iter().all(|s| s.status == "passed") => {
                        "progressing: every stage passed, promoting".to_owned()
                    }
                    None => "progressing".to_owned(),
                };
                paint(&what, Tone::Waiting)
            }
            "promoted" => paint("promoted", Tone::Good),
            other => paint(other, Tone::Bad),
        };
        out.push_str(&format!("Status    {phase}\n"));
        if let Some(note) = &self.note {
            out.push_str(&format!("          {}\n", bus_schema::display::escape(note)));
        }
        out.push_str("\nSTAGE  WEIGHT  STATUS        CANARY/STABLE SAMPLES  ELAPSED\n");
        for (i, s) in self.stages.iter().enumerate() {
            let tone = match s.status.as_str() {
                "passed" => Tone::Good,
                "failed" => Tone::Bad,
                "observing" | "extended" | "inconclusive" | "silent" => Tone::Waiting,
                _ => Tone::Plain,
            };
            let samples = match (s.canary_samples, s.stable_samples) {
                (Some(c), Some(st)) => format!("{c}/{st}"),
                _ => "-".to_owned(),
            };
            let elapsed =
                s.elapsed_s.map(|e| format!("{e:.0} s")).unwrap_or_else(|| "-".to_owned());
            let status = format!("{:<13}", s.status);
            out.push_str(&format!(
                "{:<6} {:>4} %  {} {samples:<22} {elapsed}\n",
                i + 1,
                s.weight_percent,
                paint(&status, tone)
            ));
            if s.status == "failed" || s.status == "inconclusive" {
                for r in &s.reasons {
                    out.push_str(&format!("       {}\n", bus_schema::display::escape(r)));
                }
            }
        }
        out
    }
}

/// The first words of a detail, for a note.
fn brief(d: &Value) -> String {
    if let (Some(who), Some(why)) = (d["operator"].as_str(), d["reason"].as_str()) {
        return format!("{who}: {why}");
    }
    d["why"]
        .as_str()
        .or(d["reason"].as_str())
        .or(d["refusal"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| d.to_string().chars().take(160).collect())
}

/// The service's latest rollout in `records` (oldest first), if any.
pub fn latest(records: &[ProofRecord], env: &Env, service: &ServiceName) -> Option<Rollout> {
    let ours: Vec<&ProofRecord> = records
        .iter()
        .filter(|r| r.env.as_ref() == Some(env) && r.service.as_ref() == Some(service))
        .collect();
    let start = ours.iter().rposition(|r| is_start_of_rollout(r))?;
    let mut rollout = Rollout::start(ours[start]);
    for r in &ours[start + 1..] {
        if rollout.owns(r) {
            rollout.apply(r);
        }
    }
    Some(rollout)
}

fn is_start_of_rollout(r: &ProofRecord) -> bool {
    r.kind == ProofKind::CanaryStage && r.reason.as_deref() == Some("rollout_started")
}

type Records = jetstream::consumer::pull::Stream;

/// The deploy agent's records stored since `since`, the service's latest rollout among them,
/// and the stream of records to come.
async fn load(
    client: &async_nats::Client,
    env: &Env,
    service: &ServiceName,
    since: Since,
) -> Result<(Option<Rollout>, Records), Failure> {
    let js = jetstream::new(client.clone());
    let consumer =
        proof_consumer(&js, PROOF.agent(&DEPLOY_AGENT).pattern().to_owned(), since).await?;
    let mut pending = consumer.cached_info().num_pending;
    let mut messages =
        consumer.messages().await.map_err(|e| format!("cannot read CN_PROOF: {e}"))?;
    let mut records = Vec::new();
    while pending > 0 {
        let Some(msg) = messages.next().await else { break };
        let msg = msg.map_err(|e| format!("reading CN_PROOF: {e}"))?;
        pending = msg.info().map(|i| i.pending).unwrap_or(0);
        if let Ok(r) = serde_json::from_slice::<ProofRecord>(&msg.payload) {
            records.push(r);
        }
    }
    Ok((latest(&records, env, service), messages))
}

fn no_rollout(env: &Env, service: &ServiceName, since: Since) -> String {
    format!(
        "no rollout of {env}/{service} since {}: a rollout starts when the deploy agent takes an accepted contract (see `cnctl contract --help`); --since all looks further back",
        match since {
            Since::All => "the proof log began".to_owned(),
            Since::At(t) => t.millis().to_string(),
        }
    )
}

pub async fn run(nats: &NatsArgs, command: RolloutCommand) -> Result<ExitCode, Failure> {
    let args = match command {
        RolloutCommand::Get(args) => args,
        RolloutCommand::Promote(args) => return send(nats, RolloutVerb::Promote, args).await,
        RolloutCommand::Abort(args) => return send(nats, RolloutVerb::Abort, args).await,
    };
    let client = crate::connect(nats).await?;
    let (rollout, mut messages) = load(&client, &args.env, &args.service, args.since).await?;
    let Some(mut rollout) = rollout else {
        eprintln!("{}", no_rollout(&args.env, &args.service, args.since));
        return Ok(ExitCode::FAILURE);
    };
    let redraw = args.watch && !args.json && std::io::stdout().is_terminal();
    show(&rollout, args.json, redraw);
    if !args.watch {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow: every new record of the service's deploy agent chain.
    while !rollout.is_over() {
        let Some(msg) = messages.next().await else { break };
        let msg = msg.map_err(|e| format!("reading CN_PROOF: {e}"))?;
        let Ok(r) = serde_json::from_slice::<ProofRecord>(&msg.payload) else { continue };
        if r.env.as_ref() != Some(&args.env) || r.service.as_ref() != Some(&args.service) {
            continue;
        }
        if is_start_of_rollout(&r) {
            rollout = Rollout::start(&r);
        } else if rollout.owns(&r) {
            rollout.apply(&r);
        } else {
            continue;
        }
        if args.json || redraw {
            show(&rollout, args.json, redraw);
        } else {
            outln!("{}", coloured_line(&r));
        }
    }
    Ok(if rollout.phase == "promoted" || !rollout.is_over() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `rollout promote|abort`: the command to the deploy agent, and its answer.
async fn send(nats: &NatsArgs, verb: RolloutVerb, args: CommandArgs) -> Result<ExitCode, Failure> {
    let operator = match crate::approvals::operator_name(args.operator, crate::login_name()) {
        Ok(o) => o,
        Err(e) => return Ok(agent_runtime::config::config_failure("cnctl rollout", &e)),
    };
    let reason = args.reason.trim().to_owned();
    if reason.is_empty() {
        let e = "--reason must say why: every command records who and why";
        return Ok(agent_runtime::config::config_failure("cnctl rollout", &e));
    }
    let client = crate::connect(nats).await?;
    let since = Since::At(Timestamp::now().minus(std::time::Duration::from_secs(7 * 24 * 3600)));
    let (rollout, _) = load(&client, &args.env, &args.service, since).await?;
    let rollout = match rollout {
        Some(r) if !r.is_over() => r,
        Some(r) => {
            return Err(format!(
                "the latest rollout of {}/{} ({}) has ended: {}",
                args.env, args.service, r.version, r.phase
            )
            .into());
        }
        None => return Err(no_rollout(&args.env, &args.service, since).into()),
    };
    let command = bus_schema::RolloutCommand {
        service: args.service.clone(),
        env: args.env.clone(),
        command: verb,
        version: Some(rollout.version.clone()),
        operator,
        reason,
    };
    bus_schema::Validate::validate(&command).map_err(|e| format!("not sent: {e}"))?;
    let subject = bus_schema::subject::ROLLOUT_COMMANDS.subject(&args.env, &args.service);
    let listener = Listener::start(&client).await?;
    let (published, id) = crate::publish::publish_traced(&client, &subject, &command, None).await?;
    outln!(
        "{verb} of {}/{} {} by {} stored on {subject} (stream seq {}); waiting up to {:?} for the deploy agent",
        args.env,
        args.service,
        rollout.version,
        command.operator,
        published.stream_seq,
        args.timeout
    );
    let verdict =
        listener.verdict(&client, subject.as_str(), published.stream_seq, &id, args.timeout).await;
    for r in &verdict.records {
        outln!("  {}", coloured_line(r));
    }
    Ok(match verdict.summary() {
        Answer::Rejected => {
            let why = verdict.readers.iter().find_map(|r| r.error.clone()).unwrap_or_default();
            eprintln!("{}: {why}", paint("refused", Tone::Bad));
            ExitCode::FAILURE
        }
        Answer::Accepted => {
            outln!(
                "{}: the proposal goes to governance; follow it with `cnctl rollout get --env {} --service {} --watch`{}",
                paint("taken", Tone::Good),
                args.env,
                args.service,
                if verb == RolloutVerb::Promote {
                    " (a promotion that needs a human waits in `cnctl approvals list`)"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Answer::NoAnswer | Answer::NoConsumer => {
            eprintln!(
                "the deploy agent did not answer within {:?}: is it running (cnctl status)? The command is stored and will be handled when it is",
                args.timeout
            );
            ExitCode::from(2)
        }
    })
}

fn show(rollout: &Rollout, json: bool, redraw: bool) {
    if json {
        outln!("{}", json!(rollout));
    } else if redraw {
        // Home and clear, then the view: a dashboard that stays in place.
        out!("\u{1b}[H\u{1b}[2J{}", rollout.render());
    } else {
        out!("{}", rollout.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, reason: &str, detail: Value) -> ProofRecord {
        serde_json::from_value(json!({
            "v": 1, "agent": "deploy-agent", "instance": "0", "seq": 1, "ts": "2026-11-22T10:00:00.123Z",
            "kind": kind, "env": "prod", "service": "api", "reason": reason, "detail": detail,
            "prev_hash": "0".repeat(64)
        }))
        .unwrap()
    }

    fn started(id: &str) -> ProofRecord {
        record(
            "canary_stage",
            "rollout_started",
            json!({"rollout_id": id, "version": "2.0.0", "stable_version": "1.9.0", "weights": [10, 50, 100], "risk": "medium", "contract_id": "c1"}),
        )
    }

    #[test]
    fn stages_take_their_verdicts_and_the_next_one_starts() {
        let records = vec![
            started("r1"),
            record(
                "canary_stage",
                "passed",
                json!({"rollout_id": "r1", "stage": 1, "of": 3, "samples": {"canary": 31, "stable": 30}, "elapsed_s": 360.0}),
            ),
        ];
        let (env, service) = ("prod".parse().unwrap(), "api".parse().unwrap());
        let r = latest(&records, &env, &service).unwrap();
        let statuses: Vec<&str> = r.stages.iter().map(|s| s.status.as_str()).collect();
        assert_eq!(statuses, ["passed", "observing", "pending"]);
        assert_eq!((r.stages[0].canary_samples, r.stages[0].stable_samples), (Some(31), Some(30)));
        let view = r.render();
        assert!(view.contains("progressing: stage 2 of 3 at 50 %"), "{view}");
        assert!(view.contains("31/30"), "{view}");
    }

    #[test]
    fn the_latest_rollout_wins_and_an_abort_says_why() {
        let records = vec![
            started("r1"),
            record("canary_promoted", "promoted", json!({"rollout_id": "r1", "version": "2.0.0"})),
            started("r2"),
            record(
                "canary_stage",
                "failed",
                json!({"rollout_id": "r2", "stage": 1, "reasons": ["errors 3x stable"]}),
            ),
            record(
                "canary_aborted",
                "aborted",
                json!({"rollout_id": "r2", "why": "stage 1 at 10 % failed"}),
            ),
        ];
        let (env, service) = ("prod".parse().unwrap(), "api".parse().unwrap());
        let r = latest(&records, &env, &service).unwrap();
        assert_eq!(r.rollout_id.as_deref(), Some("r2"));
        assert_eq!(
            (r.phase.as_str(), r.note.as_deref()),
            ("aborted", Some("stage 1 at 10 % failed"))
        );
        assert!(r.is_over());
        assert!(r.render().contains("errors 3x stable"));
        let other: ServiceName = "web".parse().unwrap();
        assert!(latest(&records, &env, &other).is_none());
    }
}
