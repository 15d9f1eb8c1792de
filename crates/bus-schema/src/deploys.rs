//! What a sequence of deploy events says about one service's versions.
//!
//! Governance needs it to know a service exists and what a rollback would restore; the deploy
//! agent needs it to track current and previous versions. Both fold events the same way.

use serde::{Deserialize, Serialize};

use crate::{DeployEvent, DeployStatus};

/// Versions seen for one env/service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployHistory {
    /// The last version that deployed successfully.
    pub current_version: Option<String>,
    /// The version before it: what a rollback goes back to.
    pub previous_version: Option<String>,
    pub last_status: Option<String>,
}

impl DeployHistory {
    /// Folds in one deploy event.
    pub fn apply(&mut self, event: &DeployEvent) {
        if event.status == DeployStatus::RolledBack {
            // The version given up must not become what the next rollback restores; the one
            // restored runs again.
            let given_up = event.deployed_version();
            let restored = if event.previous_version.is_some() {
                Some(event.version.clone())
            } else {
                self.current_version
                    .clone()
                    .filter(|c| c != given_up)
                    .or_else(|| self.previous_version.clone())
            };
            if self
                .previous_version
                .as_deref()
                .is_some_and(|p| p == given_up || Some(p) == restored.as_deref())
            {
                self.previous_version = None;
            }
            if restored.is_some() {
                self.current_version = restored;
            }
            self.last_status = Some(event.status.to_string());
            return;
        }
        if let Some(prev) = &event.previous_version {
            if self.current_version.as_deref() != Some(prev.as_str())
                || event.status == DeployStatus::Succeeded
            {
                self.previous_version = Some(prev.clone());
            }
        }
        if event.status == DeployStatus::Succeeded {
            if let Some(current) = self.current_version.take().filter(|c| *c != event.version) {
                self.previous_version = Some(current);
            }
            self.current_version = Some(event.version.clone());
        }
        self.last_status = Some(event.status.to_string());
    }

    /// Whether a deploy has started and not yet ended: canary actions act on it.
    pub fn rollout_in_progress(&self) -> bool {
        self.last_status.as_deref() == Some("started")
    }

    /// The version a rollback would restore: during a rollout or after a failed deploy, the last
    /// good version; otherwise the one before the current.
    pub fn rollback_target(&self) -> Option<&str> {
        if matches!(self.last_status.as_deref(), Some("failed" | "started")) {
            self.current_version.as_deref().or(self.previous_version.as_deref())
        } else {
            self.previous_version.as_deref()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(version: &str, previous: Option<&str>, status: &str) -> DeployEvent {
        serde_json::from_value(serde_json::json!({
            "service": "api", "env": "prod", "version": version, "previous_version": previous,
            "status": status, "timestamp": "2026-11-22T10:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn successive_successes_give_a_rollback_target() {
        let mut f = DeployHistory::default();
        f.apply(&deploy("1.0", None, "succeeded"));
        assert_eq!(f.rollback_target(), None, "nothing to roll back to yet");
        f.apply(&deploy("1.1", None, "succeeded"));
        assert_eq!(f.rollback_target(), Some("1.0"));
    }

    #[test]
    fn the_event_can_name_the_previous_version() {
        let mut f = DeployHistory::default();
        f.apply(&deploy("1.15.0", Some("1.14.2"), "succeeded"));
        assert_eq!(f.rollback_target(), Some("1.14.2"));
    }

    #[test]
    fn after_a_failed_deploy_the_target_is_the_last_good_version() {
        let mut f = DeployHistory::default();
        f.apply(&deploy("1.14.2", None, "succeeded"));
        f.apply(&deploy("1.15.0", Some("1.14.2"), "failed"));
        assert_eq!(f.current_version.as_deref(), Some("1.14.2"));
        assert_eq!(f.rollback_target(), Some("1.14.2"));
        let mut rolling = DeployHistory::default();
        rolling.apply(&deploy("1.14.2", None, "succeeded"));
        rolling.apply(&deploy("1.15.0", Some("1.14.2"), "started"));
        assert_eq!(
            rolling.rollback_target(),
            Some("1.14.2"),
            "a rollout in progress rolls back to what runs"
        );
        let mut fresh = DeployHistory::default();
        fresh.apply(&deploy("1.15.0", Some("1.14.2"), "failed"));
        assert_eq!(fresh.rollback_target(), Some("1.14.2"));
    }

    #[test]
    fn a_rolled_back_version_is_never_the_next_rollback_target() {
        // A canary rolled back before it succeeded.
        let mut canary = DeployHistory::default();
        canary.apply(&deploy("1.14.2", Some("1.14.1"), "succeeded"));
        canary.apply(&deploy("1.15.0", Some("1.14.2"), "started"));
        canary.apply(&deploy("1.14.2", Some("1.15.0"), "rolled_back"));
        assert_eq!(
            (canary.current_version.as_deref(), canary.rollback_target()),
            (Some("1.14.2"), Some("1.14.1"))
        );
        // A release rolled back after it succeeded.
        let mut release = DeployHistory::default();
        release.apply(&deploy("1.14.2", None, "succeeded"));
        release.apply(&deploy("1.15.0", None, "succeeded"));
        release.apply(&deploy("1.14.2", Some("1.15.0"), "rolled_back"));
        assert_eq!(
            (release.current_version.as_deref(), release.rollback_target()),
            (Some("1.14.2"), None),
            "nothing older is known"
        );
        // A pipeline that names only the version it gave up.
        let mut terse = DeployHistory::default();
        terse.apply(&deploy("1.14.2", None, "succeeded"));
        terse.apply(&deploy("1.15.0", None, "succeeded"));
        terse.apply(&deploy("1.15.0", None, "rolled_back"));
        assert_eq!(
            (terse.current_version.as_deref(), terse.rollback_target()),
            (Some("1.14.2"), None)
        );
        let mut terse_canary = DeployHistory::default();
        terse_canary.apply(&deploy("1.14.2", Some("1.14.1"), "succeeded"));
        terse_canary.apply(&deploy("1.15.0", None, "started"));
        terse_canary.apply(&deploy("1.15.0", None, "rolled_back"));
        assert_eq!(
            (terse_canary.current_version.as_deref(), terse_canary.rollback_target()),
            (Some("1.14.2"), Some("1.14.1"))
        );
    }
}
