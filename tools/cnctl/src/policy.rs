//! `cnctl policy check FILE`: load a governance policy exactly as the governance gate will,
//! and print what it means per environment — or the first mistake, naming the key.

use std::path::PathBuf;
use std::process::ExitCode;

use policy::{EnvPolicy, Policy};

use crate::Failure;

/// Arguments of `cnctl policy check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The policy file (TOML), e.g. deploy/policy.toml.
    pub file: PathBuf,
}

/// Checks the file; exit 0 when governance would accept it, 1 when not.
pub fn check(args: &CheckArgs) -> Result<ExitCode, Failure> {
    match Policy::from_file(&args.file) {
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
}
