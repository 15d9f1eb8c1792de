//! Turning bus facts into labelled examples for the risk model, and each service's recent
//! deploy history.
//!
//! The [`Learner`] remembers the factors of every drafted contract by env/service and
//! deployment (id and version). Deploy events and incidents then label them:
//!
//! | fact | label |
//! |---|---|
//! | deploy `failed` or `rolled_back` | failure, at once |
//! | incident `deploy_regression` / `deploy_failed` whose `suspect_version` is the deployed version, opened within the quiet window after `succeeded` (or while deploying) | failure |
//! | deploy `succeeded`, then [`QUIET_WINDOW`] (30 min of event time) with no such incident | success, labelled when a later event for the same service arrives past the window or the next deploy of the service starts ([`Learner::settle`] does the same on demand) |
//!
//! Only event time is used (the events' own timestamps), never a clock: the shell caps an
//! event's time at its own clock, so a future-stamped event settles nothing early. One service's
//! events never settle another's deploys. Each deployment is labelled at most once, so
//! redelivered events teach nothing twice.
//!
//! [`ServiceHistory`] keeps the last [`HISTORY_LEN`] outcomes per service (deploys and blamed
//! incidents, labelled or not); the draft turns recent failures into a risk factor.

use std::collections::BTreeMap;
use std::time::Duration;

use bus_schema::{
    Contract, DeployEvent, DeployStatus, Incident, IncidentKind, RiskFactor, Timestamp,
};
use serde::{Deserialize, Serialize};

/// How long a succeeded deploy must stay free of blamed incidents to count as a success.
pub const QUIET_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Outcomes kept per service.
pub const HISTORY_LEN: usize = 20;
/// Drafted contracts remembered per service, oldest dropped first.
pub const TRACKED_PER_SERVICE: usize = 32;

/// What happened to one deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOutcome {
    Succeeded,
    Failed,
    RolledBack,
    /// An incident blamed the deployed version.
    CausedIncident,
}

impl DeployOutcome {
    pub fn is_failure(self) -> bool {
        !matches!(self, DeployOutcome::Succeeded)
    }
}

/// One remembered outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastDeploy {
    pub version: String,
    pub outcome: DeployOutcome,
    pub at: Timestamp,
}

/// The recent deploy outcomes of one env/service, oldest first, at most [`HISTORY_LEN`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHistory {
    pub recent: Vec<PastDeploy>,
}

static EMPTY_HISTORY: ServiceHistory = ServiceHistory { recent: Vec::new() };

impl ServiceHistory {
    /// Adds an outcome (an exact repeat, e.g. a redelivered event, is ignored).
    pub fn record(&mut self, version: &str, outcome: DeployOutcome, at: Timestamp) {
        let entry = PastDeploy { version: version.to_owned(), outcome, at };
        if self.recent.contains(&entry) {
            return;
        }
        self.recent.push(entry);
        self.recent.sort_by_key(|p| p.at);
        let excess = self.recent.len().saturating_sub(HISTORY_LEN);
        self.recent.drain(..excess);
    }

    /// Failures (failed, rolled back, caused an incident) within `window` before `now`.
    pub fn failures_since(&self, now: Timestamp, window: Duration) -> usize {
        let from = now.minus(window);
        self.recent.iter().filter(|p| p.outcome.is_failure() && p.at >= from && p.at <= now).count()
    }
}

/// A labelled example for the model: the contract's factors and whether the deploy failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub factors: Vec<RiskFactor>,
    pub failed: bool,
    /// Event time of the fact that decided the label.
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Stage {
    Drafted,
    Started,
    Succeeded { at: Timestamp },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tracked {
    deployment_id: String,
    version: String,
    factors: Vec<RiskFactor>,
    stage: Stage,
}

/// Labels deploy outcomes; serializable so the shell can keep it in redb.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Learner {
    /// Key: `env/service`.
    tracked: BTreeMap<String, Vec<Tracked>>,
    histories: BTreeMap<String, ServiceHistory>,
}

fn key(env: &str, service: &str) -> String {
    format!("{env}/{service}")
}

impl Learner {
    /// Remembers a drafted contract's factors until its deploy is labelled.
    pub fn remember(&mut self, contract: &Contract) {
        let list =
            self.tracked.entry(key(contract.env.as_str(), contract.service.as_str())).or_default();
        list.retain(|t| t.deployment_id != contract.deployment_id);
        list.push(Tracked {
            deployment_id: contract.deployment_id.clone(),
            version: contract.version.clone(),
            factors: contract.risk.factors.clone(),
            stage: Stage::Drafted,
        });
        let excess = list.len().saturating_sub(TRACKED_PER_SERVICE);
        list.drain(..excess);
    }

    /// The recent history of one service (empty if nothing is known).
    pub fn history(&self, env: &str, service: &str) -> &ServiceHistory {
        self.histories.get(&key(env, service)).unwrap_or(&EMPTY_HISTORY)
    }

    /// Labels every succeeded deploy of one service whose quiet window ended by `now` (event
    /// time).
    pub fn settle(&mut self, env: &str, service: &str, now: Timestamp) -> Vec<Label> {
        self.settle_key(&key(env, service), now)
    }

    fn settle_key(&mut self, k: &str, now: Timestamp) -> Vec<Label> {
        let mut out = Vec::new();
        if let Some(list) = self.tracked.get_mut(k) {
            list.retain(|t| match t.stage {
                Stage::Succeeded { at } if at.plus(QUIET_WINDOW) <= now => {
                    out.push(Label {
                        factors: t.factors.clone(),
                        failed: false,
                        at: at.plus(QUIET_WINDOW),
                    });
                    false
                }
                _ => true,
            });
        }
        out
    }

    /// Folds in a deploy event; returns the labels it decides.
    pub fn on_deploy(&mut self, event: &DeployEvent) -> Vec<Label> {
        let k = key(event.env.as_str(), event.service.as_str());
        let mut out = self.settle_key(&k, event.timestamp);
        let history = self.histories.entry(k.clone()).or_default();
        match event.status {
            DeployStatus::Succeeded => {
                history.record(&event.version, DeployOutcome::Succeeded, event.timestamp)
            }
            DeployStatus::Failed => {
                history.record(&event.version, DeployOutcome::Failed, event.timestamp)
            }
            DeployStatus::RolledBack => {
                history.record(event.deployed_version(), DeployOutcome::RolledBack, event.timestamp)
            }
            DeployStatus::Started => {}
        }
        let Some(list) = self.tracked.get_mut(&k) else { return out };
        let matches = |t: &Tracked| match &event.deployment_id {
            Some(id) => *id == t.deployment_id,
            None => t.version == event.deployed_version(),
        };
        if event.status == DeployStatus::Started {
            // The next deploy starting ends the quiet window of every earlier success.
            list.retain(|t| match t.stage {
                Stage::Succeeded { .. } if !matches(t) => {
                    out.push(Label {
                        factors: t.factors.clone(),
                        failed: false,
                        at: event.timestamp,
                    });
                    false
                }
                _ => true,
            });
        }
        let Some(pos) = list.iter().position(matches) else { return out };
        match event.status {
            DeployStatus::Started => list[pos].stage = Stage::Started,
            DeployStatus::Succeeded => list[pos].stage = Stage::Succeeded { at: event.timestamp },
            DeployStatus::Failed | DeployStatus::RolledBack => {
                let t = list.remove(pos);
                out.push(Label { factors: t.factors, failed: true, at: event.timestamp });
            }
        }
        out
    }

    /// Folds in an incident; a deploy regression or failure blaming a tracked version that is
    /// deploying or within its quiet window labels that deploy a failure.
    pub fn on_incident(&mut self, incident: &Incident) -> Vec<Label> {
        let k = key(incident.env.as_str(), incident.service.as_str());
        let mut out = self.settle_key(&k, incident.opened_at);
        if !matches!(incident.kind, IncidentKind::DeployRegression | IncidentKind::DeployFailed) {
            return out;
        }
        let Some(version) = incident.suspect_version.as_deref() else { return out };
        self.histories.entry(k.clone()).or_default().record(
            version,
            DeployOutcome::CausedIncident,
            incident.opened_at,
        );
        let Some(list) = self.tracked.get_mut(&k) else { return out };
        if let Some(pos) =
            list.iter().position(|t| t.version == version && t.stage != Stage::Drafted)
        {
            let t = list.remove(pos);
            out.push(Label { factors: t.factors, failed: true, at: incident.opened_at });
        }
        out
    }
}

#[cfg(test)]
#[path = "learning_tests.rs"]
mod tests;
