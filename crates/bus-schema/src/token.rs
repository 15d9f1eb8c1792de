//! Subject tokens: environments, services, agents and instances.
//!
//! A token becomes one segment of a NATS subject, so it must never contain `.` (which would
//! add segments), `*` or `>` (wildcards), whitespace, or anything a shell or a path could
//! misread. The contract fixes the rule: `^[a-z0-9][a-z0-9-]{0,62}$`. Each kind of token is its
//! own type so an environment cannot be passed where a service is expected, and a value of
//! any of these types is valid by construction, including when it is deserialized.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// The longest token the contract allows.
pub const TOKEN_MAX_LEN: usize = 63;

/// Why a string is not a valid subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} characters long; at most {TOKEN_MAX_LEN} are allowed")]
    TooLong { what: &'static str, len: usize },
    #[error(
        "{what} {value:?} has {ch:?} at position {pos}; only a-z, 0-9 and '-' are allowed, \
         and it must start with a letter or digit"
    )]
    InvalidChar { what: &'static str, value: String, ch: char, pos: usize },
}

/// Checks `value` against `^[a-z0-9][a-z0-9-]{0,62}$`.
pub fn validate_token(what: &'static str, value: &str) -> Result<(), TokenError> {
    if value.is_empty() {
        return Err(TokenError::Empty { what });
    }
    let len = value.chars().count();
    if len > TOKEN_MAX_LEN {
        return Err(TokenError::TooLong { what, len });
    }
    for (pos, ch) in value.chars().enumerate() {
        let ok = ch.is_ascii_lowercase() || ch.is_ascii_digit() || (ch == '-' && pos > 0);
        if !ok {
            return Err(TokenError::InvalidChar { what, value: value.to_owned(), ch, pos });
        }
    }
    Ok(())
}

/// The contract's token rule, usable in `const` contexts.
pub const fn is_valid_token(value: &str) -> bool {
    let b = value.as_bytes();
    if b.is_empty() || b.len() > TOKEN_MAX_LEN {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let ok = c.is_ascii_lowercase() || c.is_ascii_digit() || (c == b'-' && i > 0);
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

macro_rules! token_type {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Cow<'static, str>);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, TokenError> {
                let value = value.into();
                validate_token($what, &value)?;
                Ok(Self(Cow::Owned(value)))
            }

            /// A token from a literal, checked when the program is compiled if used in a
            /// `const` item: `const NAME: AgentName = AgentName::from_static("executor");`
            #[allow(clippy::panic)]
            pub const fn from_static(value: &'static str) -> Self {
                if !is_valid_token(value) {
                    panic!(concat!("invalid ", $what, " literal: use ^[a-z0-9][a-z0-9-]{{0,62}}$"));
                }
                Self(Cow::Borrowed(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = TokenError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = TokenError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

token_type!(
    /// An environment such as `dev`, `stage` or `prod`.
    Env,
    "environment"
);
token_type!(
    /// A service name such as `payments-api`.
    ServiceName,
    "service"
);
token_type!(
    /// An agent binary's name, such as `governance-gate`.
    AgentName,
    "agent"
);
token_type!(
    /// One running instance of an agent, such as `0`.
    InstanceId,
    "instance"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_design_examples() {
        for ok in ["prod", "dev", "payments-api", "a", "0", "user-service-2"] {
            assert!(ServiceName::new(ok).is_ok(), "{ok}");
        }
        assert!(Env::new("x".repeat(63)).is_ok());
    }

    #[test]
    fn rejects_each_kind_of_bad_token_with_a_specific_error() {
        assert_eq!(Env::new(""), Err(TokenError::Empty { what: "environment" }));
        assert_eq!(
            Env::new("x".repeat(64)),
            Err(TokenError::TooLong { what: "environment", len: 64 })
        );
        let err = ServiceName::new("pay.ments").unwrap_err();
        assert!(matches!(err, TokenError::InvalidChar { ch: '.', pos: 3, .. }), "{err}");
        let err = ServiceName::new("-lead").unwrap_err();
        assert!(matches!(err, TokenError::InvalidChar { ch: '-', pos: 0, .. }), "{err}");
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<ServiceName>("\"Payments\"").unwrap_err();
        assert!(err.to_string().contains("'P'"), "{err}");
        assert_eq!(serde_json::from_str::<Env>("\"prod\"").unwrap().as_str(), "prod");
    }

    #[test]
    fn const_literals_are_checked() {
        const EXECUTOR: AgentName = AgentName::from_static("executor");
        assert_eq!(EXECUTOR.as_str(), "executor");
        assert!(!is_valid_token("Executor") && !is_valid_token("") && !is_valid_token("-x"));
    }

    proptest! {
        #[test]
        fn the_const_rule_agrees_with_validation(s in "\\PC{0,70}") {
            prop_assert_eq!(is_valid_token(&s), validate_token("t", &s).is_ok());
        }

        #[test]
        fn valid_tokens_are_accepted(s in "[a-z0-9][a-z0-9-]{0,62}") {
            prop_assert!(Env::new(s).is_ok());
        }

        #[test]
        fn tokens_with_a_forbidden_character_are_rejected(
            prefix in "[a-z0-9]{1,20}",
            bad in prop::sample::select(vec!['.', '*', '>', ' ', '\t', '\n', 'A', 'Z', '_', '/', '$', 'é', '\0']),
            suffix in "[a-z0-9-]{0,20}",
        ) {
            let s = format!("{prefix}{bad}{suffix}");
            let rejected = matches!(ServiceName::new(s), Err(TokenError::InvalidChar { ch, .. }) if ch == bad);
            prop_assert!(rejected);
        }

        #[test]
        fn tokens_of_64_or_more_characters_are_rejected(s in "[a-z0-9]{64,200}") {
            let rejected = matches!(Env::new(s), Err(TokenError::TooLong { .. }));
            prop_assert!(rejected);
        }

        #[test]
        fn any_accepted_token_is_a_single_plain_subject_segment(s in "\\PC{0,80}") {
            if let Ok(t) = AgentName::new(s) {
                prop_assert!(!t.as_str().contains(['.', '*', '>', ' ']));
                prop_assert!(!t.as_str().is_empty() && t.as_str().len() <= TOKEN_MAX_LEN);
            }
        }
    }
}
