//! `cnctl policy evaluate`: what a remediation policy would earn, estimated from the decisions
//! in the proof log before it ever acts (off-policy evaluation, `policy_eval`).
//!
//! Reads every record of CN_PROOF, joins the optimizer's proposals with their outcomes and
//! refusals, and estimates the candidate — a table of values per state and action, from a
//! file (`LearnedPolicy` JSON, as `cnctl policy show --json` prints it) or, without one, the
//! optimizer's own (its shadow candidate when it keeps one) — with IPS, self-normalised IPS
//! and a doubly robust estimator, each with a bootstrap interval, beside the mean reward of
//! what ran. Exit 0 when the logs support the estimate, 1 when they cannot (and why), 2 when
//! the log or the optimizer cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent_runtime::config::{NatsArgs, parse_duration};
use async_nats::client::Request;
use bus_schema::fleet::RL_OPTIMIZER;
use bus_schema::subject::POLICY;
use bus_schema::{InstanceId, LearnedPolicy, ProofRecord};
use policy_eval::estimate::{Interval, Options, Report, Table, evaluate};
use policy_eval::logged::{self, Logs};
use serde_json::json;

use crate::Failure;
use crate::request::Answered;

/// Arguments of `cnctl policy evaluate`.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The candidate: a LearnedPolicy JSON file (`cnctl policy show --json > table.json`, then
    /// edit the values). Without it, the optimizer is asked for its table.
    #[arg(long, value_name = "FILE")]
    pub table: Option<PathBuf>,
    /// The optimizer instance to ask for its table.
    #[arg(long, default_value = "0")]
    pub instance: InstanceId,
    /// The intervals' coverage.
    #[arg(long, default_value_t = 0.9, value_parser = parse_level)]
    pub level: f64,
    /// Bootstrap resamples per interval.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..=100_000))]
    pub resamples: u32,
    /// Print one JSON object: the decisions used and left out, and the report.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the optimizer's answer.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub wait: Duration,
}

fn parse_level(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v > 0.5 && v < 1.0 { Ok(v) } else { Err(format!("{v} is not in (0.5, 1)")) }
}

/// Where the candidate came from, and its table.
struct Candidate {
    source: String,
    table: Table,
}

async fn candidate(
    args: &EvaluateArgs,
    client: &async_nats::Client,
) -> Result<Option<Candidate>, Failure> {
    if let Some(path) = &args.table {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let policy: LearnedPolicy = serde_json::from_str(&text).map_err(|e| {
            format!("{} is not a LearnedPolicy (cnctl policy show --json): {e}", path.display())
        })?;
        return Ok(Some(Candidate {
            source: path.display().to_string(),
            table: Table::from_entries(&policy.entries),
        }));
    }
    let subject = POLICY.subject(&RL_OPTIMIZER, &args.instance).as_str().to_owned();
    let request = Request::new().payload("".into());
    match crate::request::request::<LearnedPolicy>(client, subject, request, args.wait).await? {
        Answered::Reply(policy) => {
            let (source, entries) = match policy.candidate {
                Some(shadow) => ("the optimizer's shadow candidate", shadow),
                None => ("the optimizer's table", policy.entries),
            };
            Ok(Some(Candidate { source: source.to_owned(), table: Table::from_entries(&entries) }))
        }
        Answered::Nobody(why) => {
            eprintln!(
                "cnctl: {why} (is rl-optimizer instance {} running? or give --table FILE)",
                args.instance
            );
            Ok(None)
        }
    }
}

/// Reads the proof log and estimates the candidate.
pub async fn run(args: &EvaluateArgs) -> Result<ExitCode, Failure> {
    let client = crate::connect(&args.nats).await?;
    let Some(candidate) = candidate(args, &client).await? else {
        return Ok(ExitCode::from(2));
    };
    let js = async_nats::jetstream::new(client);
    let stored = crate::verify::read_all(&js).await?;
    let records: Vec<ProofRecord> =
        stored.iter().filter_map(|m| serde_json::from_slice(&m.payload).ok()).collect();
    let logs = logged::from_records(&records, RL_OPTIMIZER.as_str());
    let options =
        Options { level: args.level, resamples: args.resamples as usize, ..Options::default() };
    let report = evaluate(&logs.decisions, |d| candidate.table.choose(d), &options);
    if args.json {
        outln!(
            "{}",
            json!({"candidate": candidate.source, "records": records.len(), "left_out": logs.left_out, "report": report})
        );
    } else {
        out!("{}", render(&candidate.source, &logs, &report));
    }
    Ok(if report.supported { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn interval(i: Option<Interval>) -> String {
    i.map_or("—".to_owned(), |i| format!("{:+.3}  [{:+.3}, {:+.3}]", i.value, i.low, i.high))
}

/// The report as text: what was read, what ran, the candidate's estimates, and the verdict.
pub fn render(source: &str, logs: &Logs, r: &Report) -> String {
    let mut o = format!("decisions with an outcome or refusal: {}", r.decisions);
    if !logs.left_out.is_empty() {
        let left: Vec<String> = logs.left_out.iter().map(|(why, n)| format!("{n} {why}")).collect();
        o.push_str(&format!(" (left out: {})", left.join(", ")));
    }
    let level = r.level * 100.0;
    o.push_str(&format!(
        "\nwhat ran, mean reward per decision: {}  ({level:.0} % interval)\n",
        interval(r.logged)
    ));
    o.push_str(&format!(
        "\ncandidate: {source}\n  agrees with {} decisions, chooses what the logs could not have chosen in {}, effective sample size {:.1}\n",
        r.agreed, r.unseen, r.ess
    ));
    for (name, i) in [("IPS", r.ips), ("SNIPS", r.snips), ("DR", r.dr)] {
        o.push_str(&format!("  {name:<6} {}\n", interval(i)));
    }
    if r.supported {
        o.push_str("the logs support this estimate\n");
    } else {
        o.push_str("the logs cannot support this estimate:\n");
        for why in &r.unsupported {
            o.push_str(&format!("  - {why}\n"));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use policy_eval::estimate::Decision;

    use super::*;

    #[test]
    fn a_report_reads_as_what_ran_the_estimates_and_the_verdict() {
        let decisions: Vec<Decision> = (0..40)
            .map(|i| Decision {
                state: "stage/api@crash_loop/stage/no-deploy".into(),
                candidates: vec![("restart".into(), 0.5), ("noop".into(), -0.4)],
                chosen: "restart".into(),
                propensity: 1.0,
                options: vec![("restart".into(), 1.0), ("noop".into(), 0.0)],
                reward: if i % 4 == 0 { -1.05 } else { 0.95 },
            })
            .collect();
        let mut logs = Logs { decisions, ..Logs::default() };
        logs.left_out.insert("no outcome yet".into(), 2);
        let same = evaluate(&logs.decisions, |_| "restart", &Options::default());
        let text = render("the optimizer's table", &logs, &same);
        assert!(
            text.contains("decisions with an outcome or refusal: 40 (left out: 2 no outcome yet)"),
            "{text}"
        );
        assert!(
            text.contains("what ran, mean reward per decision: +0.450")
                && text.contains("the logs support"),
            "{text}"
        );
        let noop = evaluate(&logs.decisions, |_| "noop", &Options::default());
        let text = render("table.json", &logs, &noop);
        assert!(text.contains("cannot support") && text.contains("never chose"), "{text}");
        assert!(text.contains("IPS    —"), "{text}");
    }
}
