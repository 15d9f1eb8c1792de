//! `learning-eval`: the optimizer against every simulated world of the evaluation, learner
//! against oracle, over many seeds; prints the table (see `cn_tests::learning`). Run it with
//! `scripts/learning-eval`.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use cn_tests::learning::{Plan, evaluate, table, worlds};
use policy::Policy;

/// Evaluates the optimizer's learning on simulated worlds it was not tuned on.
#[derive(Debug, Parser)]
#[command(name = "learning-eval", version, about)]
struct Cli {
    /// Seeds per world.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// Incidents (episodes) per seed.
    #[arg(long, default_value_t = 20)]
    episodes: u64,
    /// Simulated minutes per episode.
    #[arg(long, default_value_t = 60)]
    episode_min: u64,
    /// Only the worlds whose name contains this.
    #[arg(long)]
    world: Option<String>,
    /// Print each seed's first choices, rewards and unhealthy seconds per episode.
    #[arg(long)]
    verbose: bool,
    /// Print every incident, proposal, decision and outcome (use with one world, one seed).
    #[arg(long)]
    trace: bool,
    /// A governance policy file (the default policy otherwise).
    #[arg(long)]
    policy: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let policy = match &cli.policy {
        Some(path) => match Policy::from_file(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("learning-eval: {e}");
                return ExitCode::from(64);
            }
        },
        None => Policy::default(),
    };
    let plan = Plan {
        seeds: cli.seeds,
        episodes: cli.episodes,
        episode_s: cli.episode_min * 60,
        trace: cli.trace,
    };
    let specs: Vec<_> = worlds()
        .into_iter()
        .filter(|w| cli.world.as_ref().is_none_or(|f| w.name.contains(f.as_str())))
        .collect();
    let started = Instant::now();
    let evaluated = evaluate(&specs, &plan, &policy, |name, result| match result {
        None => eprintln!("[{:>5.1} s] {name}", started.elapsed().as_secs_f64()),
        Some(r) if cli.verbose => eprint!("{}", cn_tests::learning::trace(r)),
        Some(_) => {}
    });
    let summaries = match evaluated {
        Ok(s) => s,
        Err(e) => {
            eprintln!("learning-eval: {e}");
            return ExitCode::from(64);
        }
    };
    println!("{}", table(&summaries, &plan));
    let mut failed = Vec::new();
    for s in &summaries {
        if s.cure != "nothing" && s.worst_switch().is_none_or(|w| w > 10) {
            failed.push(format!("{}: the worst seed switched at {:?}", s.name, s.worst_switch()));
        }
        if s.right_prior && s.switches.iter().any(|x| *x != Some(1)) {
            failed.push(format!(
                "{}: the right prior was not kept in every seed: {:?}",
                s.name, s.switches
            ));
        }
        if s.exploratory_in_prod > 0 || s.without_propensity > 0 {
            failed.push(format!(
                "{}: {} exploratory proposals in prod, {} without a propensity",
                s.name, s.exploratory_in_prod, s.without_propensity
            ));
        }
        for reason in [
            bus_schema::ReasonCode::MissingPrerequisite,
            bus_schema::ReasonCode::NotEligibleInEnv,
            bus_schema::ReasonCode::GloballyBlocked,
        ] {
            if s.refused(reason) > 0 {
                failed.push(format!(
                    "{}: {} proposals refused as {reason}",
                    s.name,
                    s.refused(reason)
                ));
            }
        }
    }
    eprintln!("[{:>5.1} s] done", started.elapsed().as_secs_f64());
    if failed.is_empty() {
        println!(
            "every check holds: wherever a cure exists the worst seed switches within 10 incidents; right priors kept; 0 exploration in prod; 0 proposals refused as missing_prerequisite, not_eligible_in_env or globally_blocked"
        );
        ExitCode::SUCCESS
    } else {
        println!("FAILED:\n{}", failed.join("\n"));
        ExitCode::from(1)
    }
}
