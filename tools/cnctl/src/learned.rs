//! `cnctl policy show`: what the optimizer has learned.
//!
//! Asks one rl-optimizer instance on `cn.policy.rl-optimizer.{instance}` (a core request with
//! an empty body, like the status endpoint) and prints its mode, α, ε, the number of updates
//! and, per service and context (`stage/checkout@crash_loop/stage/deploy`), the mean reward
//! each action earned there and from how many outcomes, best first. What it never learned
//! about is not listed: it uses the prior and what other services taught. Exit 2 when no
//! optimizer answers.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use agent_runtime::config::{NatsArgs, parse_duration};
use async_nats::client::Request;
use bus_schema::fleet::RL_OPTIMIZER;
use bus_schema::subject::POLICY;
use bus_schema::{InstanceId, LearnedPolicy, PolicyEntry};

use crate::Failure;
use crate::request::Answered;

/// Arguments of `cnctl policy show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The optimizer instance to ask.
    #[arg(long, default_value = "0")]
    pub instance: InstanceId,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only entries whose key contains this, e.g. `crash_loop`, `prod/checkout@` or `/deploy`.
    #[arg(long, value_name = "FILTER")]
    pub state: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub wait: Duration,
}

/// Asks the optimizer and prints what it learned.
pub async fn show(args: &ShowArgs) -> Result<ExitCode, Failure> {
    let client = crate::connect(&args.nats).await?;
    let subject = POLICY.subject(&RL_OPTIMIZER, &args.instance).as_str().to_owned();
    let mut policy: LearnedPolicy = match crate::request::request(
        &client,
        subject.clone(),
        Request::new().payload("".into()),
        args.wait,
    )
    .await?
    {
        Answered::Reply(policy) => policy,
        Answered::Nobody(why) => {
            eprintln!("cnctl: {why} (is rl-optimizer instance {} running?)", args.instance);
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(filter) = &args.state {
        policy.entries.retain(|e| e.state.contains(filter.as_str()));
    }
    if args.json {
        outln!("{}", serde_json::to_string(&policy)?);
    } else {
        out!("{}", render(&policy));
    }
    Ok(ExitCode::SUCCESS)
}

/// The policy as readable text: a header line, then one table per state, best action first.
pub fn render(policy: &LearnedPolicy) -> String {
    let mut out = format!(
        "mode {}  α {}  ε {}  updates {}  states {}\n",
        policy.mode,
        policy.alpha,
        policy.epsilon,
        policy.updates,
        policy
            .entries
            .iter()
            .map(|e| e.state.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    let mut states: BTreeMap<&str, Vec<&PolicyEntry>> = BTreeMap::new();
    for e in &policy.entries {
        states.entry(e.state.as_str()).or_default().push(e);
    }
    if states.is_empty() {
        out.push_str("nothing learned yet: every choice uses the prior\n");
    }
    if let Some(candidate) = &policy.candidate {
        let states: std::collections::BTreeSet<&str> =
            candidate.iter().map(|e| e.state.as_str()).collect();
        out.push_str(&format!(
            "candidate learned in shadow: {} estimates over {} logged states (acts only once promoted; cnctl policy evaluate estimates it)\n",
            candidate.len(),
            states.len()
        ));
    }
    if let Some(p) = &policy.promotion {
        if p["promoted"].as_bool() == Some(true) {
            let e = &p["evidence"];
            out.push_str(&format!(
                "last evaluation: promoted — candidate's lower bound {:+.3} beat the running policy's {:+.3} by at least {} over {} decisions\n",
                e["candidate_low"].as_f64().unwrap_or(f64::NAN),
                e["running"].as_f64().unwrap_or(f64::NAN),
                e["margin"],
                e["decisions"]
            ));
        } else {
            out.push_str(&format!(
                "last evaluation: not promoted — {}\n",
                p["why"].as_str().unwrap_or("no reason given")
            ));
        }
    }
    for (state, mut entries) in states {
        entries.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.action.cmp(&b.action)));
        out.push_str(&format!("\n{state}\n  {:<20} {:>8} {:>8}\n", "ACTION", "REWARD", "OUTCOMES"));
        for e in entries {
            out.push_str(&format!(
                "  {:<20} {:>8.3} {:>8}\n",
                e.action.as_str(),
                e.value,
                e.visits
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_schema::Action;

    #[test]
    fn states_are_listed_best_action_first() {
        let entry = |action, value, visits| PolicyEntry {
            state: "stage/checkout@crash_loop/stage/deploy".into(),
            action,
            value,
            visits,
        };
        let policy = LearnedPolicy {
            mode: "learning".into(),
            alpha: 0.3,
            gamma: 0.0,
            epsilon: 0.1,
            updates: 3,
            entries: vec![
                entry(Action::Restart, -0.163, 2),
                entry(Action::Rollback, 0.415, 1),
                entry(Action::Noop, 0.0, 0),
            ],
            candidate: None,
            promotion: None,
        };
        let text = render(&policy);
        assert!(text.starts_with("mode learning  α 0.3  ε 0.1  updates 3  states 1"), "{text}");
        assert!(
            text.contains("stage/checkout@crash_loop/stage/deploy\n  ACTION")
                && text.contains("OUTCOMES"),
            "{text}"
        );
        let rollback = text.find("rollback").unwrap();
        assert!(
            rollback < text.find("noop").unwrap()
                && text.find("noop").unwrap() < text.find("restart").unwrap(),
            "{text}"
        );
        assert!(
            render(&LearnedPolicy { entries: vec![], ..policy }).contains("nothing learned yet")
        );
    }

    #[test]
    fn a_gated_optimizer_shows_its_candidate_and_why_it_was_or_was_not_promoted() {
        let entry = PolicyEntry {
            state: "stage/api@high_latency/stage/no-deploy".into(),
            action: Action::ScaleUp,
            value: 0.4,
            visits: 12,
        };
        let policy = LearnedPolicy {
            mode: "gated".into(),
            alpha: 0.05,
            gamma: 0.0,
            epsilon: 0.3,
            updates: 40,
            entries: vec![],
            candidate: Some(vec![entry]),
            promotion: Some(
                serde_json::json!({"promoted": false, "why": "effective sample size 3.0 is below 10"}),
            ),
        };
        let text = render(&policy);
        assert!(
            text.contains("candidate learned in shadow: 1 estimates over 1 logged states"),
            "{text}"
        );
        assert!(text.contains("not promoted — effective sample size 3.0"), "{text}");
        let promoted = LearnedPolicy {
            promotion: Some(
                serde_json::json!({"promoted": true, "evidence": {"candidate_low": 0.21, "running": 0.05, "margin": 0.05, "decisions": 300}}),
            ),
            ..policy
        };
        assert!(
            render(&promoted).contains(
                "promoted — candidate's lower bound +0.210 beat the running policy's +0.050"
            ),
            "{}",
            render(&promoted)
        );
    }
}
