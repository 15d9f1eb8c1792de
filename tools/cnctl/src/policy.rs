//! `cnctl policy check FILE`: load a governance policy exactly as the governance gate will,
//! and print what it means per environment — or the first mistake, naming the key.

use std::path::PathBuf;
use std::process::ExitCode;

use policy::{EnvPolicy, Policy};
use serde_json::{Value, json};

use crate::Failure;

/// Arguments of `cnctl policy check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The policy file (TOML), e.g. deploy/policy.toml.
    pub file: PathBuf,
    /// Print one JSON object: `{"file", "ok", "error"}`, and when ok the policy as governance
    /// reads it and its warnings (the exit code is the same).
    #[arg(long)]
    pub json: bool,
}

/// Checks the file; exit 0 when governance would accept it, 1 when not.
pub fn check(args: &CheckArgs) -> Result<ExitCode, Failure> {
    let loaded = Policy::from_file(&args.file);
    if args.json {
        let file = args.file.display().to_string();
        let report = match &loaded {
            Ok(policy) => {
                let mut report = to_json(policy);
                report["file"] = json!(file);
                report["ok"] = json!(true);
                report["warnings"] = json!(policy.warnings());
                report
            }
            Err(e) => json!({"file": file, "ok": false, "error": e.to_string()}),
        };
        outln!("{report}");
        return Ok(if loaded.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    match loaded {
        Ok(policy) => {
            out!("{}", describe(&policy));
            for warning in policy.warnings() {
                outln!("warning: {warning}");
            }
            outln!("{}: ok", args.file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("cnctl: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn names(actions: &[bus_schema::Action]) -> String {
    if actions.is_empty() {
        "—".to_owned()
    } else {
        actions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

fn env_line(name: &str, env: &EnvPolicy) -> String {
    let confidence = env.min_confidence.map_or("none".to_owned(), |c| c.to_string());
    let custom =
        if env.custom_with_human { "custom actions with a human" } else { "no custom actions" };
    format!(
        "{name:<12} automatic: {}\n{:<12} human:     {}\n{:<12} min confidence {confidence}; {custom}\n",
        names(&env.automatic),
        "",
        names(&env.human),
        ""
    )
}

fn env_json(env: &EnvPolicy) -> Value {
    json!({
        "automatic": env.automatic,
        "human": env.human,
        "custom_with_human": env.custom_with_human,
        "min_confidence": env.min_confidence,
    })
}

/// The policy as governance reads it, durations in seconds.
pub fn to_json(p: &Policy) -> Value {
    let envs: serde_json::Map<String, Value> =
        p.envs.iter().map(|(name, env)| (name.clone(), env_json(env))).collect();
    let cooldowns: serde_json::Map<String, Value> =
        p.cooldowns.iter().map(|(a, d)| (a.to_string(), json!(d.as_secs()))).collect();
    json!({
        "envs": envs,
        "other_envs": env_json(&p.unknown_env),
        "cooldowns_s": cooldowns,
        "cooldown_cap_s": p.cooldown_cap.as_secs(),
        "repetition_limit": p.repetition_limit,
        "repetition_window_s": p.repetition_window.as_secs(),
        "actions_per_incident": p.actions_per_incident,
        "max_proposal_age_s": p.max_proposal_age.as_secs(),
        "proposers": p.proposers,
        "freeze_actions": p.freeze_actions,
        "explore_envs": p.explore_envs,
        "verification_timeout_s": p.verification_timeout.as_secs(),
    })
}

/// The policy in a few readable lines.
pub fn describe(p: &Policy) -> String {
    let mut out = String::new();
    for (name, env) in &p.envs {
        out.push_str(&env_line(name, env));
    }
    out.push_str(&env_line("(other envs)", &p.unknown_env));
    let cooldowns: Vec<String> =
        p.cooldowns.iter().map(|(a, d)| format!("{a} {}s", d.as_secs())).collect();
    out.push_str(&format!(
        "cooldowns: {} (doubling after failed outcomes, up to {}s)\nat most {} of one action per service in {}s; {} actions per incident; proposals older than {}s are stale\nproposers: {}; frozen while the error budget is spent: {}\n",
        cooldowns.join(", "),
        p.cooldown_cap.as_secs(),
        p.repetition_limit,
        p.repetition_window.as_secs(),
        p.actions_per_incident,
        p.max_proposal_age.as_secs(),
        p.proposers.join(", "),
        names(&p.freeze_actions),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_reads_like_design_section_6() {
        let text = describe(&Policy::default());
        assert!(text.contains("prod         automatic: noop, observe, restart, scale_up, set_canary_weight, abort_rollout"), "{text}");
        assert!(text.contains("human:     rollback, scale_down, promote"), "{text}");
        assert!(text.contains("(other envs) automatic: noop, observe"), "{text}");
        assert!(text.contains("restart 60s"), "{text}");
    }

    #[test]
    fn the_default_policy_as_json_names_what_prod_allows() {
        let v = to_json(&Policy::default());
        assert_eq!(v["envs"]["prod"]["human"], json!(["rollback", "scale_down", "promote"]));
        assert_eq!(v["cooldowns_s"]["restart"], 60);
        assert_eq!(v["other_envs"]["automatic"], json!(["noop", "observe"]));
    }
}
