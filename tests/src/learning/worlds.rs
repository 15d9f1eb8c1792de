//! The simulated worlds of the evaluation and the cure of each.

use bus_schema::Action;

/// What cures a world's failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Cure {
    Action(Action),
    /// Nothing does: doing nothing (and telling a human) is best.
    Nothing,
}

impl Cure {
    pub fn is(&self, action: &Action) -> bool {
        match self {
            Cure::Action(a) => a == action,
            Cure::Nothing => matches!(action, Action::Noop | Action::Observe),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Cure::Action(a) => a.to_string(),
            Cure::Nothing => "nothing".to_owned(),
        }
    }
}

/// A simulated world and the cure of each failing service in it.
#[derive(Debug, Clone)]
pub struct WorldSpec {
    pub name: &'static str,
    pub scenario: String,
    /// `env/service` → its cure; services not listed are healthy.
    pub cures: Vec<(String, Cure)>,
    /// The prior's first choice is already the cure: it must be kept.
    pub right_prior: bool,
}

fn service(env: &str, name: &str, failure: &str, extra: &str) -> String {
    format!(
        "[[service]]\nenv = \"{env}\"\nname = \"{name}\"\nfailure = \"{failure}\"\nstart_after_s = 900\n{extra}\n"
    )
}

fn world(
    name: &'static str,
    env: &str,
    failure: &str,
    extra: &str,
    cure: Cure,
    right_prior: bool,
) -> WorldSpec {
    WorldSpec {
        name,
        scenario: format!("tick_s = 10\n{}", service(env, "api", failure, extra)),
        cures: vec![(format!("{env}/api"), cure)],
        right_prior,
    }
}

/// The worlds of the evaluation. Failures start 15 min in, so that a deploy that brings one
/// comes after a healthy stretch to compare with.
pub fn worlds() -> Vec<WorldSpec> {
    let rollback = || Cure::Action(Action::Rollback);
    let mut mixed = String::from("tick_s = 10\n");
    let mixed_services = [
        ("stage", "checkout", "memory_leak", "", rollback()),
        ("stage", "search", "cpu_overload", "", Cure::Action(Action::ScaleUp)),
        ("stage", "orders", "crash_loop", "restart_success = 0.7", Cure::Action(Action::Restart)),
        ("stage", "catalog", "bad_config", "", rollback()),
        ("stage", "payments", "crash_loop", "", Cure::Action(Action::Restart)),
        ("stage", "users", "healthy", "", Cure::Nothing),
        // A prod rollback waits for a human, who never comes here.
        ("prod", "frontend", "bad_deploy", "", rollback()),
    ];
    let mut cures = Vec::new();
    for (env, name, failure, extra, cure) in mixed_services {
        mixed.push_str(&service(env, name, failure, extra));
        if failure != "healthy" {
            cures.push((format!("{env}/{name}"), cure));
        }
    }
    vec![
        world("memory leak, fast (20 %/min)", "stage", "memory_leak", "", rollback(), false),
        world(
            "memory leak, slow (4 %/min)",
            "stage",
            "memory_leak",
            "leak_percent_per_min = 4",
            rollback(),
            false,
        ),
        world("latency regression", "stage", "latency_regression", "", rollback(), true),
        world("bad-config crash loop", "stage", "bad_config", "", rollback(), false),
        // The regression detector sees the overload a deploy causes as a post-deploy regression.
        world("deploy-caused overload", "stage", "deploy_overload", "", rollback(), true),
        world("flapping", "stage", "flapping", "", Cure::Nothing, false),
        world("slowdown (10x)", "stage", "slowdown", "slowdown_factor = 10", Cure::Nothing, false),
        world(
            "crash loop, restart 70 %",
            "stage",
            "crash_loop",
            "restart_success = 0.7",
            Cure::Action(Action::Restart),
            true,
        ),
        world("overload", "stage", "cpu_overload", "", Cure::Action(Action::ScaleUp), true),
        WorldSpec { name: "mixed services at once", scenario: mixed, cures, right_prior: false },
    ]
}
