//! A contract's status lifecycle as pure transitions:
//!
//! ```text
//! draft ──negotiated change──▶ negotiated (revision + 1; again from negotiated)
//! draft | negotiated ──developer accepts (counter with no asks)──▶ accepted
//! draft | negotiated | accepted ──error-budget freeze──▶ rejected (error_budget_freeze)
//! draft | negotiated | accepted ──newer draft of the same deployment──▶ rejected (superseded by <id>)
//! draft | negotiated | accepted ──deploy started──▶ deploying
//! deploying ──succeeded──▶ completed
//! deploying ──failed | rolled_back──▶ rolled_back
//! ```
//!
//! A deploy that starts on a contract never accepted is published as two changes: `accepted`
//! (reason "accepted implicitly: the deploy started") and then `deploying`. A finish whose start
//! was missed walks the same chain to `completed`/`rolled_back`. A freeze does not touch a
//! contract already `deploying`: its canary guardrails govern it. Completed, rolled back and
//! rejected contracts are terminal; every transition from them is refused with a reason.
//!
//! Each transition returns the contracts to publish, in order, one per status change.

use bus_schema::{
    Contract, ContractStatus, DeployEvent, DeployStatus, ReasonCode, Timestamp, Uuid,
};

/// What happened to a contract.
#[derive(Debug, Clone, Copy)]
pub enum LifecycleEvent<'a> {
    /// The developer accepted the contract (a counter-proposal with no asks).
    Accepted,
    /// The service's error budget is spent and the contract is not an urgent fix.
    Freeze,
    /// A newer draft (this id) of the same env, service and deployment replaces it.
    Superseded(Uuid),
    /// A deploy event that [`matches`] the contract.
    Deploy(&'a DeployEvent),
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub from: ContractStatus,
    pub reason: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "contract is {}: {}", self.from, self.reason)
    }
}

impl std::error::Error for Refused {}

pub fn is_terminal(status: ContractStatus) -> bool {
    matches!(
        status,
        ContractStatus::Completed | ContractStatus::RolledBack | ContractStatus::Rejected
    )
}

/// Whether a deploy event is about this contract ([`Contract::covers`]).
pub fn matches(contract: &Contract, event: &DeployEvent) -> bool {
    contract.covers(event)
}

fn refuse(contract: &Contract, reason: impl Into<String>) -> Refused {
    Refused { from: contract.status, reason: reason.into() }
}

fn step(contract: &Contract, status: ContractStatus, reason: &str, now: Timestamp) -> Contract {
    Contract { status, reason: Some(reason.to_owned()), updated_at: now, ..contract.clone() }
}

/// The negotiated revision of `contract`: status negotiated, revision + 1.
pub fn revise(
    contract: &Contract,
    revised: Contract,
    reason: &str,
    now: Timestamp,
) -> Result<Contract, Refused> {
    match contract.status {
        ContractStatus::Draft | ContractStatus::Negotiated => Ok(Contract {
            status: ContractStatus::Negotiated,
            revision: contract.revision.saturating_add(1),
            reason: Some(reason.to_owned()),
            updated_at: now,
            ..revised
        }),
        other => Err(refuse(
            contract,
            format!("only draft or negotiated contracts can be negotiated, not {other}"),
        )),
    }
}

/// Applies one event; returns the status changes to publish, in order.
pub fn apply(
    contract: &Contract,
    event: LifecycleEvent<'_>,
    now: Timestamp,
) -> Result<Vec<Contract>, Refused> {
    use ContractStatus as S;
    if is_terminal(contract.status) {
        return Err(refuse(contract, "the contract is closed; draft a new one"));
    }
    match event {
        LifecycleEvent::Accepted => match contract.status {
            S::Draft | S::Negotiated => {
                Ok(vec![step(contract, S::Accepted, "accepted by the developer", now)])
            }
            S::Accepted => Err(refuse(contract, "already accepted")),
            _ => Err(refuse(contract, "the deploy is under way")),
        },
        LifecycleEvent::Freeze => match contract.status {
            S::Deploying => {
                Err(refuse(contract, "a deploy in progress is governed by its canary guardrails"))
            }
            _ => Ok(vec![step(contract, S::Rejected, ReasonCode::ErrorBudgetFreeze.as_str(), now)]),
        },
        LifecycleEvent::Superseded(newer) => match contract.status {
            S::Deploying => Err(refuse(contract, "a deploy in progress keeps its contract")),
            _ => Ok(vec![step(contract, S::Rejected, &format!("superseded by {newer}"), now)]),
        },
        LifecycleEvent::Deploy(ev) => {
            if !matches(contract, ev) {
                return Err(refuse(contract, "the deploy event is for another deployment"));
            }
            let mut out = Vec::new();
            let mut current = contract.clone();
            if matches!(current.status, S::Draft | S::Negotiated) {
                current =
                    step(&current, S::Accepted, "accepted implicitly: the deploy started", now);
                out.push(current.clone());
            }
            if current.status == S::Accepted {
                current = step(&current, S::Deploying, "the deploy started", now);
                out.push(current.clone());
            }
            let end = match ev.status {
                DeployStatus::Started if contract.status == S::Deploying => {
                    return Err(refuse(contract, "already deploying"));
                }
                DeployStatus::Started => None,
                DeployStatus::Succeeded => Some((S::Completed, "the deploy succeeded")),
                DeployStatus::Failed => Some((S::RolledBack, "the deploy failed")),
                DeployStatus::RolledBack => Some((S::RolledBack, "the deploy was rolled back")),
            };
            if let Some((status, reason)) = end {
                out.push(step(&current, status, reason, now));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use bus_schema::{ContractStatus as S, RiskLevel};

    use super::*;
    use crate::draft::draft_offline;

    fn now() -> Timestamp {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }

    fn contract(status: S) -> Contract {
        let req = serde_json::from_value(serde_json::json!({
            "deployment_id": "d-1", "service": "api", "env": "prod", "version": "v2", "rollback_capability": true,
        }))
        .unwrap();
        let c = draft_offline(&req, now());
        assert_eq!(c.risk.level, RiskLevel::Low);
        Contract { status, ..c }
    }

    fn deploy(status: &str, deployment_id: Option<&str>, version: &str) -> DeployEvent {
        serde_json::from_value(serde_json::json!({
            "service": "api", "env": "prod", "version": version, "status": status,
            "timestamp": "2026-11-22T10:05:00Z", "deployment_id": deployment_id,
        }))
        .unwrap()
    }

    fn statuses(r: Result<Vec<Contract>, Refused>) -> Vec<S> {
        r.unwrap().iter().map(|c| c.status).collect()
    }

    #[test]
    fn transitions() {
        let started = deploy("started", Some("d-1"), "v2");
        let succeeded = deploy("succeeded", None, "v2");
        let failed = deploy("failed", Some("d-1"), "v9");
        let rolled_back = deploy("rolled_back", None, "v2");
        let table: Vec<(S, LifecycleEvent<'_>, Vec<S>)> = vec![
            (S::Draft, LifecycleEvent::Accepted, vec![S::Accepted]),
            (S::Negotiated, LifecycleEvent::Accepted, vec![S::Accepted]),
            (S::Draft, LifecycleEvent::Freeze, vec![S::Rejected]),
            (S::Accepted, LifecycleEvent::Freeze, vec![S::Rejected]),
            (S::Negotiated, LifecycleEvent::Superseded(Uuid::nil()), vec![S::Rejected]),
            (S::Accepted, LifecycleEvent::Deploy(&started), vec![S::Deploying]),
            (S::Draft, LifecycleEvent::Deploy(&started), vec![S::Accepted, S::Deploying]),
            (S::Deploying, LifecycleEvent::Deploy(&succeeded), vec![S::Completed]),
            (S::Deploying, LifecycleEvent::Deploy(&failed), vec![S::RolledBack]),
            (S::Deploying, LifecycleEvent::Deploy(&rolled_back), vec![S::RolledBack]),
            (
                S::Negotiated,
                LifecycleEvent::Deploy(&succeeded),
                vec![S::Accepted, S::Deploying, S::Completed],
            ),
        ];
        for (from, event, want) in table {
            assert_eq!(statuses(apply(&contract(from), event, now())), want, "{from} on {event:?}");
        }
        let frozen = apply(&contract(S::Draft), LifecycleEvent::Freeze, now()).unwrap();
        assert_eq!(frozen[0].reason.as_deref(), Some("error_budget_freeze"));
        let superseded =
            apply(&contract(S::Draft), LifecycleEvent::Superseded(Uuid::nil()), now()).unwrap();
        assert_eq!(
            superseded[0].reason.as_deref(),
            Some("superseded by 00000000-0000-0000-0000-000000000000")
        );
    }

    #[test]
    fn refused_transitions_say_why() {
        let started = deploy("started", Some("d-1"), "v2");
        let other = deploy("succeeded", Some("d-2"), "v2");
        let table: Vec<(S, LifecycleEvent<'_>, &str)> = vec![
            (S::Completed, LifecycleEvent::Accepted, "closed"),
            (S::RolledBack, LifecycleEvent::Deploy(&started), "closed"),
            (S::Rejected, LifecycleEvent::Freeze, "closed"),
            (S::Accepted, LifecycleEvent::Accepted, "already accepted"),
            (S::Deploying, LifecycleEvent::Freeze, "canary guardrails"),
            (S::Deploying, LifecycleEvent::Superseded(Uuid::nil()), "deploy in progress"),
            (S::Deploying, LifecycleEvent::Deploy(&started), "already deploying"),
            (S::Accepted, LifecycleEvent::Deploy(&other), "another deployment"),
        ];
        for (from, event, why) in table {
            let refused = apply(&contract(from), event, now()).unwrap_err();
            assert_eq!(refused.from, from);
            assert!(refused.reason.contains(why), "{from} on {event:?}: {refused}");
        }
    }

    #[test]
    fn revisions_increment_on_negotiated_changes_only_before_acceptance() {
        let c = contract(S::Draft);
        let r1 = revise(&c, c.clone(), "shortened canary", now()).unwrap();
        let r2 = revise(&r1, r1.clone(), "relaxed p95", now()).unwrap();
        assert_eq!((r1.status, r1.revision, r2.revision), (S::Negotiated, 2, 3));
        assert!(revise(&contract(S::Accepted), c.clone(), "x", now()).is_err());
    }
}
