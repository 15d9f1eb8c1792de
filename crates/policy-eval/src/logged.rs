//! The decisions of the proof log: each `action_proposed` record of a proposer, joined by
//! proposal id with what became of it.
//!
//! | what became of it | reward |
//! |---|---|
//! | `outcome_recorded` (the last one: a revised outcome replaces the first) | [`crate::reward::reward`] of its action, recovery and time |
//! | `action_refused` | [`crate::reward::REFUSED`]: nothing was done |
//! | an outcome superseded by another action | left out: not attributable |
//! | nothing yet | left out: still waiting |
//!
//! Left out as well, and counted: shadow recommendations (nothing ran), escalations to a
//! human (`require_human`: not the policy's own choice) and proposals without a propensity
//! (logged before proposers recorded it) or without the state and candidates the decision was
//! made among.

use std::collections::BTreeMap;

use bus_schema::{Action, ProofKind, ProofRecord, Uuid};
use serde::{Deserialize, Serialize};

use crate::estimate::Decision;
use crate::reward::{REFUSED, reward};

/// The decisions found, and how many proposals were left out and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Logs {
    pub decisions: Vec<Decision>,
    /// Reason → proposals left out.
    pub left_out: BTreeMap<String, usize>,
}

struct Proposed {
    decision: Decision,
    action: Action,
}

enum Fate {
    Outcome { recovered: bool, time_to_recover_s: Option<f64>, superseded: bool },
    Refused,
}

/// The decisions `proposer` made in `records` (any order), oldest proposal first.
pub fn from_records<'a>(
    records: impl IntoIterator<Item = &'a ProofRecord>,
    proposer: &str,
) -> Logs {
    let mut proposed: Vec<(bus_schema::Timestamp, Uuid, Result<Proposed, &'static str>)> =
        Vec::new();
    let mut fates: BTreeMap<Uuid, Fate> = BTreeMap::new();
    for r in records {
        let Some(id) = r.proposal_id else { continue };
        match r.kind {
            ProofKind::ActionProposed if r.agent.as_str() == proposer => {
                proposed.push((r.ts, id, proposal(r)));
            }
            ProofKind::OutcomeRecorded => {
                let d = &r.detail;
                let revised = d["revised"].as_bool().unwrap_or(false);
                // The first verdict stands unless a revision replaces it.
                if revised || !fates.contains_key(&id) {
                    fates.insert(
                        id,
                        Fate::Outcome {
                            recovered: d["recovered"].as_bool().unwrap_or(false) && !revised,
                            time_to_recover_s: d["time_to_recover_s"].as_f64(),
                            superseded: !d["superseded_by"].is_null(),
                        },
                    );
                }
            }
            ProofKind::ActionRefused => {
                fates.entry(id).or_insert(Fate::Refused);
            }
            _ => {}
        }
    }
    proposed.sort_by_key(|(ts, id, _)| (*ts, *id));
    proposed.dedup_by_key(|(_, id, _)| *id);
    let mut logs = Logs::default();
    let mut leave_out = |why: &str| *logs.left_out.entry(why.to_owned()).or_insert(0) += 1;
    let mut decisions = Vec::new();
    for (_, id, p) in proposed {
        let mut p = match p {
            Ok(p) => p,
            Err(why) => {
                leave_out(why);
                continue;
            }
        };
        match fates.get(&id) {
            None => leave_out("no outcome yet"),
            Some(Fate::Outcome { superseded: true, .. }) => {
                leave_out("superseded by another action")
            }
            Some(Fate::Outcome { recovered, time_to_recover_s, .. }) => {
                p.decision.reward = reward(&p.action, *recovered, *time_to_recover_s);
                decisions.push(p.decision);
            }
            Some(Fate::Refused) => {
                p.decision.reward = REFUSED;
                decisions.push(p.decision);
            }
        }
    }
    logs.decisions = decisions;
    logs
}

/// The `options` of a proposal's detail: every action chosen among and its probability
/// (entries that are not an action with a probability in 0..=1 are skipped; none when absent).
pub fn options(detail: &serde_json::Value) -> Vec<(String, f64)> {
    detail["options"]
        .as_array()
        .map(|os| {
            os.iter()
                .filter_map(|o| {
                    let p = o["propensity"].as_f64().filter(|p| (0.0..=1.0).contains(p))?;
                    Some((o["action"].as_str()?.to_owned(), p))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The decision an `action_proposed` record logged, or why it is not one.
fn proposal(r: &ProofRecord) -> Result<Proposed, &'static str> {
    let d = &r.detail;
    if d["shadow"].as_bool().unwrap_or(false) {
        return Err("shadow recommendation");
    }
    if d["require_human"].as_bool().unwrap_or(false) {
        return Err("escalation to a human");
    }
    let propensity = d["propensity"]
        .as_f64()
        .filter(|p| p.is_finite() && *p > 0.0 && *p <= 1.0)
        .ok_or("no propensity")?;
    let (Some(env), Some(service), Some(action), Some(state)) =
        (&r.env, &r.service, &r.action, d["state"].as_str())
    else {
        return Err("no state or action");
    };
    let candidates: Vec<(String, f64)> = d["candidates"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| Some((c["action"].as_str()?.to_owned(), c["value"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    if !candidates.iter().any(|(a, _)| a == action.as_str()) {
        return Err("no candidates");
    }
    let options = options(d);
    Ok(Proposed {
        decision: Decision {
            state: format!("{env}/{service}@{state}"),
            candidates,
            chosen: action.to_string(),
            propensity,
            options,
            reward: 0.0,
        },
        action: action.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(
        agent: &str,
        kind: ProofKind,
        proposal: u128,
        action: &str,
        detail: serde_json::Value,
    ) -> ProofRecord {
        serde_json::from_value(json!({
            "v": 1, "agent": agent, "instance": "0", "seq": 1, "ts": "2026-12-06T10:00:00Z", "kind": kind,
            "env": "stage", "service": "api", "action": action, "proposal_id": Uuid::from_u128(proposal),
            "detail": detail, "prev_hash": "0".repeat(64),
        }))
        .unwrap()
    }

    fn proposed(n: u128, action: &str, propensity: serde_json::Value) -> ProofRecord {
        record(
            "rl-optimizer",
            ProofKind::ActionProposed,
            n,
            action,
            json!({
                "state": "crash_loop/stage/no-deploy", "propensity": propensity, "shadow": false, "require_human": false,
                "candidates": [{"action": "restart", "value": 0.55}, {"action": "noop", "value": -0.4}],
            }),
        )
    }

    fn outcome(n: u128, action: &str, recovered: bool, extra: serde_json::Value) -> ProofRecord {
        let mut detail = json!({"recovered": recovered, "time_to_recover_s": 30.0, "revised": false, "superseded_by": null});
        detail.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        record("issue-detector", ProofKind::OutcomeRecorded, n, action, detail)
    }

    #[test]
    fn proposals_are_joined_with_their_fate_and_the_rest_counted() {
        let refused = record("governance-gate", ProofKind::ActionRefused, 3, "noop", json!({}));
        let records = [
            outcome(1, "restart", true, json!({})),
            proposed(1, "restart", json!(0.9)),
            proposed(2, "noop", json!(0.05)),
            outcome(2, "noop", false, json!({})),
            proposed(3, "noop", json!(0.05)),
            refused,
            proposed(4, "restart", json!(null)),
            proposed(5, "restart", json!(1.0)),
            proposed(6, "restart", json!(0.9)),
            outcome(6, "restart", true, json!({"superseded_by": Uuid::from_u128(9)})),
            proposed(7, "restart", json!(0.9)),
            outcome(7, "restart", true, json!({})),
            outcome(7, "restart", true, json!({"revised": true})),
            record(
                "deploy-agent",
                ProofKind::ActionProposed,
                8,
                "restart",
                json!({"propensity": 1.0}),
            ),
        ];
        let logs = from_records(&records, "rl-optimizer");
        let got: Vec<(&str, f64, f64)> =
            logs.decisions.iter().map(|d| (d.chosen.as_str(), d.propensity, d.reward)).collect();
        assert_eq!(
            got,
            [
                ("restart", 0.9, 0.95),
                ("noop", 0.05, -1.0),
                ("noop", 0.05, 0.0),
                ("restart", 0.9, -1.05)
            ]
        );
        assert_eq!(logs.decisions[0].state, "stage/api@crash_loop/stage/no-deploy");
        assert_eq!(logs.left_out["no propensity"], 1);
        assert_eq!(logs.left_out["no outcome yet"], 1);
        assert_eq!(logs.left_out["superseded by another action"], 1);
    }

    #[test]
    fn hostile_details_are_left_out_not_trusted() {
        let records = [
            record(
                "rl-optimizer",
                ProofKind::ActionProposed,
                1,
                "restart",
                json!({"state": "s", "propensity": 7.0, "candidates": [{"action": "restart", "value": 1.0}]}),
            ),
            record(
                "rl-optimizer",
                ProofKind::ActionProposed,
                2,
                "restart",
                json!({"state": "s", "propensity": 0.5, "candidates": "x"}),
            ),
            record("rl-optimizer", ProofKind::ActionProposed, 3, "restart", json!("not an object")),
            record(
                "rl-optimizer",
                ProofKind::ActionProposed,
                4,
                "restart",
                json!({"state": "s", "propensity": 0.5, "shadow": true, "candidates": []}),
            ),
        ];
        let logs = from_records(&records, "rl-optimizer");
        assert!(logs.decisions.is_empty());
        assert_eq!(logs.left_out.values().sum::<usize>(), 4, "{:?}", logs.left_out);
    }
}
