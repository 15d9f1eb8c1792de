//! Actions the fleet can propose, approve and execute (docs/contract.md, Actions).
//!
//! The built-in actions are a closed set; operators may name more for the command backend
//! (`clear_cache`), as long as the name is a plain identifier. Names on the global block list
//! are never approved, whatever a policy file says — governance checks
//! [`Action::is_globally_blocked`] before anything else.

use std::fmt;
use std::str::FromStr;

/// Actions refused in every environment, whatever the policy says (docs/contract.md, Actions).
pub const GLOBAL_BLOCK_LIST: &[&str] = &[
    "delete_production_data",
    "drop_database",
    "delete_backups",
    "format_drives",
    "execute_shell_commands",
    "modify_permissions",
    "disable_authentication",
    "disable_audit_log",
    "delete_stream",
    "purge_proof_log",
];

/// Longest action name.
pub const ACTION_MAX_LEN: usize = 63;

/// A remediation or rollout step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Noop,
    Observe,
    Restart,
    ScaleUp,
    ScaleDown,
    Rollback,
    SetCanaryWeight,
    Promote,
    AbortRollout,
    /// An operator-defined action: `^[a-z][a-z0-9_]{0,62}$`.
    Custom(String),
}

impl Action {
    /// The built-in actions, in the contract's order.
    pub const BUILT_IN: &'static [Action] = &[
        Action::Noop,
        Action::Observe,
        Action::Restart,
        Action::ScaleUp,
        Action::ScaleDown,
        Action::Rollback,
        Action::SetCanaryWeight,
        Action::Promote,
        Action::AbortRollout,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Action::Noop => "noop",
            Action::Observe => "observe",
            Action::Restart => "restart",
            Action::ScaleUp => "scale_up",
            Action::ScaleDown => "scale_down",
            Action::Rollback => "rollback",
            Action::SetCanaryWeight => "set_canary_weight",
            Action::Promote => "promote",
            Action::AbortRollout => "abort_rollout",
            Action::Custom(name) => name,
        }
    }

    pub fn is_built_in(&self) -> bool {
        !matches!(self, Action::Custom(_))
    }

    /// True for names on [`GLOBAL_BLOCK_LIST`].
    pub fn is_globally_blocked(&self) -> bool {
        GLOBAL_BLOCK_LIST.contains(&self.as_str())
    }

    /// Canary actions act on a rollout in progress.
    pub fn is_canary(&self) -> bool {
        matches!(self, Action::SetCanaryWeight | Action::Promote | Action::AbortRollout)
    }
}

/// A name that is not a valid action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name:?} is not a valid action name: use a built-in action or a custom name of \
     1-{ACTION_MAX_LEN} characters from a-z, 0-9 and '_', starting with a letter"
)]
pub struct ActionNameError {
    pub name: String,
}

impl FromStr for Action {
    type Err = ActionNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(built_in) = Action::BUILT_IN.iter().find(|a| a.as_str() == s) {
            return Ok(built_in.clone());
        }
        let mut chars = s.chars();
        let starts_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if starts_ok && rest_ok && s.len() <= ACTION_MAX_LEN {
            Ok(Action::Custom(s.to_owned()))
        } else {
            Err(ActionNameError { name: s.chars().take(80).collect() })
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::string_enum::parse_str(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_round_trip_through_their_names() {
        for a in Action::BUILT_IN {
            assert_eq!(a.as_str().parse::<Action>().unwrap(), *a);
            assert!(a.is_built_in());
        }
    }

    #[test]
    fn custom_names_are_plain_identifiers() {
        assert_eq!("clear_cache".parse::<Action>().unwrap(), Action::Custom("clear_cache".into()));
        for bad in ["", "Clear", "clear-cache", "rm -rf", "a;b", "1abc", "x.y", &"a".repeat(64)] {
            assert!(bad.parse::<Action>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn canary_actions_are_the_rollout_ones() {
        let canary: Vec<&str> =
            Action::BUILT_IN.iter().filter(|a| a.is_canary()).map(Action::as_str).collect();
        assert_eq!(canary, ["set_canary_weight", "promote", "abort_rollout"]);
    }

    #[test]
    fn block_listed_names_parse_but_are_flagged() {
        let a: Action = "drop_database".parse().unwrap();
        assert!(a.is_globally_blocked());
        assert!(!Action::Restart.is_globally_blocked());
    }
}
