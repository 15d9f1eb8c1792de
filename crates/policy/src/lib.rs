//! The governance policy: which actions each environment approves automatically, which need a
//! human, the confidence each requires, cooldowns, repetition and per-incident limits, and the
//! actions an error-budget freeze stops. Built-in defaults are in deploy/policy.toml; a TOML file
//! (`--policy`, see `deploy/policy.toml`) changes them and is checked at start.
//!
//! In the file every key is optional. An `[env.X]` table changes only the keys it names of
//! that environment's defaults (a new environment starts with nothing allowed). Action lists
//! may say `"built-in"` for every built-in action. Names on the global block list may appear
//! (the check warns) but are refused in every environment all the same.
//!
//! Governance enforces it; the optimizer reads it to propose only what could be approved;
//! `cnctl policy check` shows it. So it lives in the shared tier, not in an agent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bus_schema::action::ActionNameError;
use bus_schema::{Action, DurationError, TokenError, parse_duration};
use serde::Deserialize;

/// Why a policy could not be loaded. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("policy {}: {source}", path.display())]
    InFile { path: PathBuf, source: Box<PolicyError> },
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    /// A duration that does not parse, e.g. `max_proposal_age` or `[cooldowns] restart`.
    #[error("{key}: {source}")]
    Duration { key: String, source: DurationError },
    /// A name in `proposers` or `explore_envs` that is not an agent or environment name.
    #[error("{key}: {name:?}: {source}")]
    Name { key: &'static str, name: String, source: TokenError },
    #[error("[env.{name}]: {source}")]
    EnvTable { name: String, source: TokenError },
    /// A name in an action list that is not an action name.
    #[error("{key}: {name:?}: {source}")]
    Action { key: String, name: String, source: ActionNameError },
    #[error("[cooldowns] {name}: {source}")]
    CooldownAction { name: String, source: ActionNameError },
    /// A name one slip away from a built-in action (`restrat`, `rollbak`): read as an
    /// operator-defined action it would silently take the built-in one's place.
    #[error(
        "{key}: {name:?} is not a built-in action; did you mean {built_in:?}? (an operator-defined action may not be one letter away from a built-in one)"
    )]
    LooksBuiltIn { key: String, name: String, built_in: String },
    #[error("{table}: custom_actions = {value:?}; use \"human\" or \"never\"")]
    CustomActions { table: String, value: String },
    #[error("explore_envs may not include prod: nothing is tried out on production")]
    ExploresProd,
    #[error("{table}: {action} is both automatic and human; list it once")]
    AutomaticAndHuman { table: String, action: Action },
    #[error("{table}: min_confidence = {value} must be in 0..=1")]
    MinConfidence { table: String, value: f64 },
    #[error("proposers is empty: nothing could ever be approved")]
    NoProposers,
    #[error("verification_timeout must be more than 0")]
    NoVerificationTimeout,
    #[error("repetition_limit and actions_per_incident must be at least 1")]
    NoRepetitions,
    #[error("cooldown_cap ({cap:?}) must be at least every cooldown")]
    CooldownAboveCap { cap: Duration },
}

/// One environment's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvPolicy {
    /// Approved without a human (subject to the other gates).
    pub automatic: Vec<Action>,
    /// Allowed only with a human's approval.
    pub human: Vec<Action>,
    /// Whether operator-defined actions are allowed (always with a human).
    pub custom_with_human: bool,
    /// Proposals below this confidence are refused; `None` means no threshold.
    pub min_confidence: Option<f64>,
}

/// How an environment treats an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    Automatic,
    NeedsHuman,
    NotEligible,
}

impl EnvPolicy {
    pub fn eligibility(&self, action: &Action) -> Eligibility {
        if self.automatic.contains(action) {
            Eligibility::Automatic
        } else if self.human.contains(action) || (!action.is_built_in() && self.custom_with_human) {
            Eligibility::NeedsHuman
        } else {
            Eligibility::NotEligible
        }
    }

    fn empty() -> Self {
        Self {
            automatic: Vec::new(),
            human: Vec::new(),
            custom_with_human: false,
            min_confidence: None,
        }
    }
}

/// The whole policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub envs: BTreeMap<String, EnvPolicy>,
    /// For environments the policy does not name.
    pub unknown_env: EnvPolicy,
    pub cooldowns: BTreeMap<Action, Duration>,
    /// Agents whose proposals are considered at all.
    pub proposers: Vec<String>,
    /// Proposals older than this are stale (a backlog replayed after an outage, a new
    /// consumer reading history) and refused, never approved late.
    pub max_proposal_age: Duration,
    /// At most this many approvals of one action for one env/service within the window.
    pub repetition_limit: u32,
    pub repetition_window: Duration,
    /// At most this many approved actions per incident.
    pub actions_per_incident: u32,
    /// A cooldown doubles after each "not recovered" outcome of its action, up to this.
    pub cooldown_cap: Duration,
    /// Actions refused while the service's error budget is spent (they push change forward).
    pub freeze_actions: Vec<Action>,
    /// Environments where a learner may propose an exploratory action; never prod. None by
    /// default: exploring is opt-in wherever actions touch real systems.
    pub explore_envs: Vec<String>,
    /// How long an approved remediation holds its service for its verdict (one action at a
    /// time per service) when no outcome arrives: the executor never ran it, say.
    pub verification_timeout: Duration,
}

impl Policy {
    pub fn for_env(&self, env: &str) -> &EnvPolicy {
        self.envs.get(env).unwrap_or(&self.unknown_env)
    }

    pub fn cooldown(&self, action: &Action) -> Duration {
        self.cooldowns.get(action).copied().unwrap_or(Duration::ZERO)
    }

    /// Reads and checks a policy file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|source| PolicyError::InFile {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Builds a policy from the defaults and a file's text.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let file: File = toml::from_str(text)?;
        Self::from_parsed(file)
    }

    fn from_parsed(file: File) -> Result<Self, PolicyError> {
        let mut p = Policy::default();
        let duration =
            |key: &str, v: &Option<String>, slot: &mut Duration| -> Result<(), PolicyError> {
                if let Some(text) = v {
                    *slot = parse_duration(text)
                        .map_err(|source| PolicyError::Duration { key: key.to_owned(), source })?;
                }
                Ok(())
            };
        duration("max_proposal_age", &file.max_proposal_age, &mut p.max_proposal_age)?;
        duration("repetition_window", &file.repetition_window, &mut p.repetition_window)?;
        duration("cooldown_cap", &file.cooldown_cap, &mut p.cooldown_cap)?;
        duration("verification_timeout", &file.verification_timeout, &mut p.verification_timeout)?;
        if let Some(v) = file.proposers {
            for name in &v {
                name.parse::<bus_schema::AgentName>().map_err(|source| PolicyError::Name {
                    key: "proposers",
                    name: name.clone(),
                    source,
                })?;
            }
            p.proposers = v;
        }
        if let Some(n) = file.repetition_limit {
            p.repetition_limit = n;
        }
        if let Some(n) = file.actions_per_incident {
            p.actions_per_incident = n;
        }
        if let Some(v) = file.error_budget_freeze {
            p.freeze_actions = actions("error_budget_freeze", &v)?;
        }
        if let Some(v) = file.explore_envs {
            if v.iter().any(|e| e == "prod") {
                return Err(PolicyError::ExploresProd);
            }
            for name in &v {
                name.parse::<bus_schema::Env>().map_err(|source| PolicyError::Name {
                    key: "explore_envs",
                    name: name.clone(),
                    source,
                })?;
            }
            p.explore_envs = v;
        }
        for (name, text) in &file.cooldowns {
            let action: Action = name
                .parse()
                .map_err(|source| PolicyError::CooldownAction { name: name.clone(), source })?;
            let action = not_misspelt("[cooldowns]", action)?;
            let d = parse_duration(text).map_err(|source| PolicyError::Duration {
                key: format!("[cooldowns] {name}"),
                source,
            })?;
            p.cooldowns.insert(action, d);
        }
        for (name, table) in &file.env {
            name.parse::<bus_schema::Env>()
                .map_err(|source| PolicyError::EnvTable { name: name.clone(), source })?;
            let base = p.envs.get(name).cloned().unwrap_or_else(EnvPolicy::empty);
            let env = table.apply(base, &format!("[env.{name}]"))?;
            p.envs.insert(name.clone(), env);
        }
        if let Some(table) = &file.unknown_env {
            p.unknown_env = table.apply(p.unknown_env.clone(), "[unknown_env]")?;
        }
        p.validate()?;
        Ok(p)
    }

    /// Checks the policy is coherent.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let envs = self
            .envs
            .iter()
            .map(|(n, e)| (format!("[env.{n}]"), e))
            .chain([("[unknown_env]".to_owned(), &self.unknown_env)]);
        for (name, env) in envs {
            if let Some(a) = env.automatic.iter().find(|a| env.human.contains(a)) {
                return Err(PolicyError::AutomaticAndHuman { table: name, action: a.clone() });
            }
            if let Some(c) = env.min_confidence.filter(|c| !(0.0..=1.0).contains(c)) {
                return Err(PolicyError::MinConfidence { table: name, value: c });
            }
        }
        if self.proposers.is_empty() {
            return Err(PolicyError::NoProposers);
        }
        if self.verification_timeout.is_zero() {
            return Err(PolicyError::NoVerificationTimeout);
        }
        if self.repetition_limit == 0 || self.actions_per_incident == 0 {
            return Err(PolicyError::NoRepetitions);
        }
        if self.cooldowns.values().any(|c| *c > self.cooldown_cap) {
            return Err(PolicyError::CooldownAboveCap { cap: self.cooldown_cap });
        }
        Ok(())
    }

    /// Things that are allowed but probably not meant: block-listed names in an action list.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, env) in self
            .envs
            .iter()
            .map(|(n, e)| (format!("env.{n}"), e))
            .chain([("unknown_env".to_owned(), &self.unknown_env)])
        {
            for a in env.automatic.iter().chain(&env.human).filter(|a| a.is_globally_blocked()) {
                out.push(format!("{name} lists {a}, which is on the global block list and is refused in every environment"));
            }
        }
        out
    }
}

fn actions(key: &str, names: &[String]) -> Result<Vec<Action>, PolicyError> {
    let mut out = Vec::new();
    for name in names {
        if name == "built-in" {
            out.extend(Action::BUILT_IN.iter().cloned());
        } else {
            let action = name.parse().map_err(|source| PolicyError::Action {
                key: key.to_owned(),
                name: name.clone(),
                source,
            })?;
            out.push(not_misspelt(key, action)?);
        }
    }
    out.dedup();
    Ok(out)
}

/// Refuses an operator-defined action name that is a built-in one with a slip in it: one letter
/// added, dropped, changed or swapped with its neighbour.
fn not_misspelt(key: &str, action: Action) -> Result<Action, PolicyError> {
    if action.is_built_in() {
        return Ok(action);
    }
    let name: Vec<char> = action.as_str().chars().collect();
    match Action::BUILT_IN
        .iter()
        .find(|b| edit_distance(&name, &b.as_str().chars().collect::<Vec<_>>()) <= 1)
    {
        Some(b) => Err(PolicyError::LooksBuiltIn {
            key: key.to_owned(),
            name: action.as_str().to_owned(),
            built_in: b.as_str().to_owned(),
        }),
        None => Ok(action),
    }
}

/// Edits between two names: insertions, deletions, substitutions and swaps of neighbours
/// (optimal string alignment distance).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    max_proposal_age: Option<String>,
    proposers: Option<Vec<String>>,
    repetition_limit: Option<u32>,
    repetition_window: Option<String>,
    actions_per_incident: Option<u32>,
    cooldown_cap: Option<String>,
    error_budget_freeze: Option<Vec<String>>,
    explore_envs: Option<Vec<String>>,
    verification_timeout: Option<String>,
    #[serde(default)]
    cooldowns: BTreeMap<String, String>,
    #[serde(default)]
    env: BTreeMap<String, EnvTable>,
    unknown_env: Option<EnvTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvTable {
    automatic: Option<Vec<String>>,
    human: Option<Vec<String>>,
    /// `"human"` (operator-defined actions need a human) or `"never"`.
    custom_actions: Option<String>,
    min_confidence: Option<f64>,
}

impl EnvTable {
    fn apply(&self, mut env: EnvPolicy, name: &str) -> Result<EnvPolicy, PolicyError> {
        if let Some(v) = &self.automatic {
            env.automatic = actions(&format!("{name} automatic"), v)?;
        }
        if let Some(v) = &self.human {
            env.human = actions(&format!("{name} human"), v)?;
        }
        match self.custom_actions.as_deref() {
            None => {}
            Some("human") => env.custom_with_human = true,
            Some("never") => env.custom_with_human = false,
            Some(other) => {
                return Err(PolicyError::CustomActions {
                    table: name.to_owned(),
                    value: other.to_owned(),
                });
            }
        }
        if self.min_confidence.is_some() {
            env.min_confidence = self.min_confidence;
        }
        Ok(env)
    }
}

impl Default for Policy {
    /// The built-in defaults, as deploy/policy.toml documents them.
    fn default() -> Self {
        use Action::*;
        let all = Action::BUILT_IN.to_vec();
        let envs = BTreeMap::from([
            (
                "dev".to_owned(),
                EnvPolicy {
                    automatic: all.clone(),
                    human: vec![],
                    custom_with_human: false,
                    min_confidence: Some(0.5),
                },
            ),
            (
                "stage".to_owned(),
                EnvPolicy {
                    automatic: all,
                    human: vec![],
                    custom_with_human: false,
                    min_confidence: Some(0.6),
                },
            ),
            (
                "prod".to_owned(),
                EnvPolicy {
                    automatic: vec![Noop, Observe, Restart, ScaleUp, SetCanaryWeight, AbortRollout],
                    human: vec![Rollback, ScaleDown, Promote],
                    custom_with_human: true,
                    min_confidence: Some(0.6),
                },
            ),
        ]);
        let secs = Duration::from_secs;
        Self {
            envs,
            unknown_env: EnvPolicy {
                automatic: vec![Noop, Observe],
                human: vec![],
                custom_with_human: false,
                min_confidence: None,
            },
            cooldowns: BTreeMap::from([
                (Restart, secs(60)),
                (ScaleUp, secs(120)),
                (ScaleDown, secs(120)),
                (Rollback, secs(300)),
            ]),
            proposers: vec![
                bus_schema::fleet::RL_OPTIMIZER.to_string(),
                bus_schema::fleet::DEPLOY_AGENT.to_string(),
            ],
            max_proposal_age: secs(300),
            repetition_limit: 3,
            repetition_window: secs(300),
            actions_per_incident: 3,
            cooldown_cap: secs(3600),
            freeze_actions: vec![Promote, SetCanaryWeight],
            explore_envs: Vec::new(),
            verification_timeout: secs(1200),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_error_names_the_file_and_keeps_its_source() {
        let missing =
            Policy::from_file(std::path::Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read policy /nonexistent/policy.toml"),
            "{missing}"
        );
        assert!(std::error::Error::source(&missing).is_some());
        let dir = std::env::temp_dir().join(format!("cn-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "repetition_limit = 0").unwrap();
        let bad = Policy::from_file(&path).unwrap_err();
        assert!(
            matches!(&bad, PolicyError::InFile { source, .. } if matches!(**source, PolicyError::NoRepetitions)),
            "{bad:?}"
        );
        assert!(
            bad.to_string().contains("bad.toml") && bad.to_string().contains("repetition_limit"),
            "{bad}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_shipped_policy_file_is_the_design_default() {
        let p = Policy::from_toml(include_str!("../../../deploy/policy.toml")).unwrap();
        assert_eq!(p, Policy::default());
    }

    #[test]
    fn an_env_table_changes_only_what_it_names() {
        let p = Policy::from_toml(
            "[env.prod]\nmin_confidence = 0.8\n[env.qa]\nautomatic = [\"noop\", \"restart\"]",
        )
        .unwrap();
        assert_eq!(p.for_env("prod").min_confidence, Some(0.8));
        assert_eq!(p.for_env("prod").human, Policy::default().for_env("prod").human);
        assert_eq!(p.for_env("qa").automatic, vec![Action::Noop, Action::Restart]);
        assert_eq!(p.for_env("qa").min_confidence, None);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("max_proposal_age = \"soon\"", "max_proposal_age"),
            ("[cooldowns]\nrestart = \"1x\"", "[cooldowns] restart"),
            ("[cooldowns]\nrestart = \"2h\"", "cooldown_cap"),
            ("[env.prod]\nautomatic = [\"rollback\"]", "rollback is both automatic and human"),
            ("[env.prod]\nmin_confidence = 1.5", "min_confidence = 1.5"),
            ("[env.Prod]\nautomatic = []", "[env.Prod]"),
            ("[env.dev]\nautomatic = [\"Restart Now\"]", "Restart Now"),
            ("[env.dev]\ncustom_actions = \"always\"", "custom_actions"),
            ("proposers = []", "proposers is empty"),
            ("repetition_limit = 0", "repetition_limit"),
            ("unknown = 1", "unknown field"),
            ("explore_envs = [\"stage\", \"prod\"]", "may not include prod"),
        ];
        for (text, wanted) in cases {
            let err = Policy::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text:?}: {err:?} should mention {wanted:?}");
        }
    }

    /// An operator-defined action may be any name, but not a built-in one with a slip in it:
    /// `restrat` in prod's automatic list would otherwise drop automatic restarts there.
    #[test]
    fn a_misspelt_built_in_action_is_refused_with_the_name_it_resembles() {
        for (text, wanted) in [
            (
                "[env.prod]\nautomatic = [\"restrat\"]",
                "[env.prod] automatic: \"restrat\" is not a built-in action; did you mean \"restart\"?",
            ),
            ("[env.prod]\nhuman = [\"rollbak\"]", "did you mean \"rollback\"?"),
            ("[env.dev]\nautomatic = [\"scale_ups\"]", "did you mean \"scale_up\"?"),
            ("error_budget_freeze = [\"promot\"]", "did you mean \"promote\"?"),
            ("[cooldowns]\nrestrat = \"60s\"", "[cooldowns]: \"restrat\""),
        ] {
            let err = Policy::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text:?}: {err:?} should contain {wanted:?}");
        }
        // Two letters away is another action, as is a longer name built on one.
        let p = Policy::from_toml(
            "[env.dev]\nautomatic = [\"scale_out\", \"restart_worker\", \"clear_cache\"]",
        )
        .unwrap();
        assert_eq!(p.for_env("dev").automatic.len(), 3);
    }

    #[test]
    fn edit_distance_counts_a_swap_as_one_edit() {
        let d = |a: &str, b: &str| {
            super::edit_distance(&a.chars().collect::<Vec<_>>(), &b.chars().collect::<Vec<_>>())
        };
        assert_eq!(d("restrat", "restart"), 1);
        assert_eq!(d("restart", "restart"), 0);
        assert_eq!(d("", "noop"), 4);
        assert_eq!(d("scale_out", "scale_up"), 2);
        assert_eq!(d("kitten", "sitting"), 3);
    }

    #[test]
    fn block_listed_names_are_accepted_with_a_warning() {
        let p =
            Policy::from_toml("[env.dev]\nautomatic = [\"built-in\", \"drop_database\"]").unwrap();
        assert!(p.warnings()[0].contains("drop_database"), "{:?}", p.warnings());
    }
}
