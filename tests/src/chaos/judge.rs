//! The figures of a chaos run, computed from what it saw: the acks it got, the messages CN_EVENTS
//! holds, the consumers' positions and the proof log. Nothing here is inferred from what the
//! run meant to do; a figure counts only what was observed.

use std::collections::{BTreeMap, HashSet};

use bus_schema::fleet::fleet;
use bus_schema::proof::{ProofKind, ProofRecord};
use policy::Policy;

use super::hostile::{Expect, HostileSent, Transport, matches};
use super::load::Sent;
use super::observe::{ConsumerState, StoredEvent};
use super::report::{Decisions, Events, HostileFigures, HostileVerdict, ProofFigures};
use crate::proof_log::{StoredRecord, audit};

/// Acked messages against CN_EVENTS, and whether every consumer on it has caught up.
pub fn events(
    load: &[Sent],
    hostile: &[HostileSent],
    stored: &[StoredEvent],
    consumers: &[ConsumerState],
) -> Events {
    let in_stream: HashSet<&str> = stored.iter().filter_map(|e| e.msg_id.as_deref()).collect();
    let acked: Vec<(&str, u64)> = load
        .iter()
        .filter_map(|s| Some((s.id.as_str(), s.seq?)))
        .chain(hostile.iter().filter_map(|h| Some((h.id.as_str(), h.seq?))))
        .collect();
    let lost: Vec<String> = acked
        .iter()
        .filter(|(id, _)| !in_stream.contains(id))
        .map(|(id, seq)| format!("{id} (acked as seq {seq})"))
        .collect();
    let mut lagging = Vec::new();
    let on_events: Vec<&ConsumerState> =
        consumers.iter().filter(|c| c.stream == "CN_EVENTS").collect();
    for c in &on_events {
        let last = stored
            .iter()
            .filter(|e| matches(&c.filter, &e.subject))
            .map(|e| e.seq)
            .max()
            .unwrap_or(0);
        if !c.idle() || c.ack_floor < last {
            lagging.push(format!(
                "{}: ack floor {} of {last}, {} pending, {} unacked{}",
                c.durable,
                c.ack_floor,
                c.num_pending,
                c.num_ack_pending,
                c.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
            ));
        }
    }
    Events {
        published: load.len() as u64,
        acked: load.iter().filter(|s| s.seq.is_some()).count() as u64,
        acked_after_retry: load.iter().filter(|s| s.seq.is_some() && s.attempts > 1).count() as u64,
        acked_as_duplicate: load.iter().filter(|s| s.duplicate).count() as u64,
        not_acked: load
            .iter()
            .filter(|s| s.seq.is_none())
            .map(|s| format!("{} ({})", s.id, s.error.as_deref().unwrap_or("?")))
            .collect(),
        stream_messages: stored.len() as u64,
        acked_stored: (acked.len() - lost.len()) as u64,
        lost,
        consumers: on_events.len(),
        lagging,
    }
}

/// Incidents, executions, and the rules executions must keep.
pub fn decisions(records: &[StoredRecord], policy: &Policy) -> Decisions {
    let all: Vec<(u64, &ProofRecord)> =
        records.iter().filter_map(|r| Some((r.stored.stream_seq, r.record.as_ref()?))).collect();
    let of = |kind: ProofKind| all.iter().filter(move |(_, r)| r.kind == kind);
    let count = |kind: ProofKind| of(kind).count();
    let mut refusals = BTreeMap::new();
    for (_, r) in of(ProofKind::ActionRefused) {
        *refusals.entry(r.reason.clone().unwrap_or_default()).or_insert(0) += 1;
    }
    let approvals: Vec<(u64, &ProofRecord)> = of(ProofKind::ActionApproved).copied().collect();
    let humans_approved: HashSet<_> = of(ProofKind::HumanDecision)
        .filter(|(_, r)| r.detail["decision"] == "approve")
        .filter_map(|(_, r)| r.proposal_id)
        .collect();
    let executions: Vec<(u64, &ProofRecord)> = of(ProofKind::ActionExecuted).copied().collect();
    let what = |r: &ProofRecord| {
        let (env, service, action) = (
            r.env.as_ref().map(|e| e.to_string()),
            r.service.as_ref().map(|s| s.to_string()),
            r.action.as_ref().map(|a| a.to_string()),
        );
        format!(
            "{}/{} {}",
            env.unwrap_or_default(),
            service.unwrap_or_default(),
            action.unwrap_or_default()
        )
    };

    // An execution repeats an earlier one when it carries out the same proposal or approval.
    let mut seen: HashSet<String> = HashSet::new();
    let mut executed_twice = Vec::new();
    let mut first_executions = Vec::new();
    for (seq, e) in &executions {
        let keys: Vec<String> = e
            .proposal_id
            .map(|p| format!("proposal {p}"))
            .into_iter()
            .chain(e.detail["approval_id"].as_str().map(|a| format!("approval {a}")))
            .collect();
        match keys.iter().find(|k| seen.contains(*k)) {
            Some(k) => executed_twice.push(format!(
                "{} again: {k} (proof seq {} of {})",
                what(e),
                e.seq,
                e.agent
            )),
            None => first_executions.push((*seq, *e)),
        }
        seen.extend(keys);
    }

    // The approval an execution carried out: the same proposal (and approval id), recorded earlier.
    let approval_of = |seq: u64, e: &ProofRecord| {
        approvals.iter().find(|(s, a)| {
            *s < seq
                && a.proposal_id.is_some()
                && a.proposal_id == e.proposal_id
                && (e.detail["approval_id"].is_null()
                    || a.detail["approval_id"] == e.detail["approval_id"])
        })
    };
    let mut without_approval = Vec::new();
    let mut prod_rollbacks = Vec::new();
    let mut timeline: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for (seq, e) in &executions {
        let approval = approval_of(*seq, e);
        if !first_executions.iter().any(|(s, _)| s == seq) {
            continue; // counted as executed twice
        }
        if approval.is_none() {
            without_approval.push(format!(
                "{} (proposal {:?}, proof seq {} of {})",
                what(e),
                e.proposal_id,
                e.seq,
                e.agent
            ));
        }
        let is_prod_rollback = e.env.as_ref().is_some_and(|v| v.as_str() == "prod")
            && e.action.as_ref().is_some_and(|a| a.to_string() == "rollback");
        if is_prod_rollback && !e.proposal_id.is_some_and(|p| humans_approved.contains(&p)) {
            prod_rollbacks.push(format!("{} (proposal {:?})", what(e), e.proposal_id));
        }
        // Cooldowns run from the approval (docs/contract.md, Governance gates); an execution without one counts from itself.
        let at = approval.map_or(e.ts, |(_, a)| a.ts).unix_millis();
        timeline
            .entry(what(e))
            .or_default()
            .push((at, e.proposal_id.map(|p| p.to_string()).unwrap_or_default()));
    }
    let mut cooldown_violations = Vec::new();
    for (key, mut times) in timeline {
        let cooldown = key
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .map(|a| policy.cooldown(&a))
            .unwrap_or_default();
        times.sort();
        for w in times.windows(2) {
            let gap_ms = w[1].0 - w[0].0;
            if (gap_ms as u128) < cooldown.as_millis() {
                cooldown_violations.push(format!("{key}: approved {:.1} s after the previous one (cooldown {} s; proposals {} and {})", gap_ms as f64 / 1000.0, cooldown.as_secs(), w[0].1, w[1].1));
            }
        }
    }
    // An incident is open from its incident_opened to its incident_resolved; another of the
    // same kind for the same service opened meanwhile is a double.
    let mut open: BTreeMap<String, String> = BTreeMap::new();
    let mut key_of: BTreeMap<String, String> = BTreeMap::new();
    let mut incidents_doubled = Vec::new();
    for (_, r) in &all {
        let Some(id) = r.incident_id.map(|i| i.to_string()) else { continue };
        match r.kind {
            ProofKind::IncidentOpened => {
                let key =
                    format!("{} {}", what(r).trim_end(), r.detail["kind"].as_str().unwrap_or("?"));
                if key_of.contains_key(&id) {
                    continue; // the same incident recorded again (a replay): not a second one
                }
                if let Some(first) = open.get(&key) {
                    incidents_doubled.push(format!(
                        "{key}: {id} opened while {first} was open (proof seq {} of {})",
                        r.seq, r.agent
                    ));
                }
                open.insert(key.clone(), id.clone());
                key_of.insert(id, key);
            }
            ProofKind::IncidentResolved => {
                if let Some(key) = key_of.get(&id) {
                    if open.get(key) == Some(&id) {
                        open.remove(key);
                    }
                }
            }
            _ => {}
        }
    }
    let mut rejections = BTreeMap::new();
    for (_, r) in of(ProofKind::EventRejected) {
        *rejections
            .entry(format!("{} {}", r.agent, r.reason.as_deref().unwrap_or("?")))
            .or_insert(0) += 1;
    }
    Decisions {
        incidents_opened: count(ProofKind::IncidentOpened),
        incidents_resolved: count(ProofKind::IncidentResolved),
        proposals: count(ProofKind::ActionProposed),
        approvals: approvals.len(),
        refusals,
        pending_human: count(ProofKind::ActionPendingApproval),
        executions: executions.len(),
        execution_failed: count(ProofKind::ActionFailed),
        execution_refused: count(ProofKind::ExecutionRefused),
        agent_starts: count(ProofKind::AgentStarted),
        executed_twice,
        without_approval,
        prod_rollbacks,
        cooldown_violations,
        incidents_doubled,
        rejections,
    }
}

/// Every hash chain verified from the first record to the last.
pub fn proof(records: &[StoredRecord]) -> ProofFigures {
    let audit = audit(records);
    let reports = audit.reports();
    ProofFigures {
        records: records.len(),
        chains: reports.len(),
        intact: audit.is_intact(),
        breaks: reports
            .iter()
            .filter_map(|r| r.first_break.as_ref().map(|b| format!("{}: {b}", r.subject)))
            .collect(),
    }
}

/// What each agent that consumes a hostile message's subject did with it.
pub fn hostile(
    sent: &[HostileSent],
    records: &[StoredRecord],
    consumers: &[ConsumerState],
) -> HostileFigures {
    let rejected: Vec<&ProofRecord> = records
        .iter()
        .filter_map(|r| r.record.as_ref())
        .filter(|r| r.kind == ProofKind::EventRejected)
        .collect();
    let answerers: Vec<(String, String)> = fleet()
        .into_iter()
        .flat_map(|a| {
            a.requests
                .iter()
                .map(|f| (a.name.to_string(), f.pattern().to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut verdicts = Vec::new();
    for h in sent {
        let verdict = |agent: &str, durable: &str, outcome: Outcome| HostileVerdict {
            id: h.id.clone(),
            name: h.name,
            subject: h.subject.chars().take(80).collect(),
            agent: agent.to_owned(),
            consumer: durable.to_owned(),
            expect: h.expect,
            outcome,
            answered: h.reply.clone().flatten(),
        };
        match h.transport {
            Transport::Stored => {
                let Some(seq) = h.seq else { continue };
                for c in consumers
                    .iter()
                    .filter(|c| c.stream == "CN_EVENTS" && matches(&c.filter, &h.subject))
                {
                    let record =
                        rejected.iter().filter(|r| r.agent.as_str() == c.agent).find(|r| {
                            r.correlation_id.as_deref() == Some(h.id.as_str())
                                || (r.detail["stream"] == "CN_EVENTS"
                                    && r.detail["stream_seq"].as_u64() == Some(seq))
                        });
                    let outcome = match record {
                        Some(r) => Outcome::Rejected(r.reason.clone().unwrap_or_default()),
                        None if c.ack_floor >= seq => Outcome::Consumed,
                        None => Outcome::Pending,
                    };
                    verdicts.push(verdict(&c.agent, &c.durable, outcome));
                }
            }
            Transport::Request => {
                for (agent, _) in answerers.iter().filter(|(_, f)| matches(f, &h.subject)) {
                    let record = rejected
                        .iter()
                        .filter(|r| r.agent.as_str() == agent)
                        .find(|r| r.detail["subject"].as_str() == Some(h.subject.as_str()));
                    let outcome = match (&h.reply, record) {
                        (_, Some(r)) => Outcome::Rejected(r.reason.clone().unwrap_or_default()),
                        (Some(_), None) => Outcome::Consumed,
                        (None, None) => Outcome::Pending,
                    };
                    verdicts.push(verdict(agent, "(request)", outcome));
                }
            }
        }
    }
    HostileFigures::from_verdicts(sent, verdicts)
}

/// What one agent did with one hostile message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An `event_rejected` record with this reason.
    Rejected(String),
    /// Acked (or answered) without any record.
    Consumed,
    /// Not consumed yet when the run ended.
    Pending,
}

impl HostileVerdict {
    /// Consumed without the rejection the contract asks for.
    pub fn silently_dropped(&self) -> bool {
        self.expect == Expect::Reject && self.outcome == Outcome::Consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_schema::Timestamp;
    use cnctl::verify::StoredMessage;
    use serde_json::{Value, json};

    struct Log(Vec<StoredRecord>);

    impl Log {
        /// Appends a record `at_s` seconds into the run, with `fields` over the defaults.
        fn push(&mut self, agent: &str, kind: &str, at_s: u64, fields: Value) {
            let seq = self.0.len() as u64 + 1;
            let ts = Timestamp::from_unix_nanos(
                1_790_000_000_000_000_000 + i128::from(at_s) * 1_000_000_000,
            )
            .unwrap();
            let mut r = json!({"v": 1, "agent": agent, "instance": "0", "seq": seq, "ts": ts, "kind": kind, "detail": {}, "prev_hash": "0".repeat(64)});
            r.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
            let stored = StoredMessage {
                stream_seq: seq,
                subject: format!("cn.proof.{agent}.0"),
                payload: Vec::new(),
                header_hash: None,
            };
            self.0.push(StoredRecord { stored, record: Some(serde_json::from_value(r).unwrap()) });
        }

        fn approve(&mut self, at_s: u64, scope: (&str, &str, &str), proposal: u128) {
            let (env, service, action) = scope;
            let id = bus_schema::Uuid::from_u128(proposal);
            self.push("governance-gate", "action_approved", at_s, json!({"env": env, "service": service, "action": action, "proposal_id": id, "detail": {"approval_id": format!("a{proposal}")}}));
        }

        fn execute(&mut self, at_s: u64, scope: (&str, &str, &str), proposal: u128) {
            let (env, service, action) = scope;
            let id = bus_schema::Uuid::from_u128(proposal);
            self.push("executor", "action_executed", at_s, json!({"env": env, "service": service, "action": action, "proposal_id": id, "detail": {"approval_id": format!("a{proposal}")}}));
        }
    }

    #[test]
    fn every_broken_rule_is_counted_once() {
        let mut log = Log(Vec::new());
        let restart_a = ("stage", "a", "restart");
        log.approve(0, restart_a, 1);
        log.execute(1, restart_a, 1);
        log.approve(30, restart_a, 2); // within restart's 60 s cooldown
        log.execute(31, restart_a, 2);
        log.execute(32, restart_a, 2); // the same approval again
        log.execute(40, ("stage", "b", "scale_up"), 3); // never approved
        log.approve(50, ("prod", "c", "rollback"), 4); // by policy, not by a human
        log.execute(51, ("prod", "c", "rollback"), 4);
        log.execute(60, ("stage", "d", "restart"), 5);
        log.approve(61, ("stage", "d", "restart"), 5); // approved after it ran
        log.approve(200, restart_a, 6);
        log.execute(201, restart_a, 6); // 170 s after the last approval: fine
        let d = decisions(&log.0, &Policy::default());
        assert_eq!(d.executions, 7);
        assert_eq!(d.executed_twice.len(), 1, "{:?}", d.executed_twice);
        assert_eq!(d.without_approval.len(), 2, "{:?}", d.without_approval);
        assert_eq!(d.prod_rollbacks.len(), 1, "{:?}", d.prod_rollbacks);
        assert_eq!(d.cooldown_violations.len(), 1, "{:?}", d.cooldown_violations);
        assert!(
            d.cooldown_violations[0].starts_with("stage/a restart: approved 30.0 s after"),
            "{:?}",
            d.cooldown_violations
        );
    }

    #[test]
    fn an_incident_opened_while_its_like_is_open_is_a_double() {
        let mut log = Log(Vec::new());
        let open = |log: &mut Log, at: u64, id: u128, service: &str, kind: &str| {
            let id = bus_schema::Uuid::from_u128(id);
            log.push("issue-detector", "incident_opened", at, json!({"env": "stage", "service": service, "incident_id": id, "detail": {"kind": kind}}));
        };
        open(&mut log, 0, 1, "a", "crash_loop");
        open(&mut log, 1, 1, "a", "crash_loop"); // the same incident again: not a double
        open(&mut log, 2, 2, "a", "high_latency"); // another kind: not a double
        open(&mut log, 3, 3, "b", "crash_loop");
        open(&mut log, 4, 4, "a", "crash_loop"); // a double
        let resolved = bus_schema::Uuid::from_u128(1);
        log.push(
            "issue-detector",
            "incident_resolved",
            5,
            json!({"env": "stage", "service": "a", "incident_id": resolved}),
        );
        open(&mut log, 6, 5, "a", "crash_loop"); // 4 is still open: a double
        let d = decisions(&log.0, &Policy::default());
        assert_eq!(d.incidents_doubled.len(), 2, "{:?}", d.incidents_doubled);
        assert!(
            d.incidents_doubled[0].starts_with("stage/a crash_loop: "),
            "{:?}",
            d.incidents_doubled
        );
    }

    #[test]
    fn a_hostile_message_acked_without_a_record_is_silently_dropped() {
        let sent = |id: &str, seq: u64| HostileSent {
            id: id.to_owned(),
            name: "truncated-json",
            subject: "cn.events.log.stage.x".to_owned(),
            size: 10,
            expect: Expect::Reject,
            transport: Transport::Stored,
            seq: Some(seq),
            reply: None,
            asked_again: Default::default(),
            error: None,
        };
        let consumer = ConsumerState {
            agent: "issue-detector".to_owned(),
            durable: "issue-detector-events".to_owned(),
            stream: "CN_EVENTS".to_owned(),
            filter: "cn.events.>".to_owned(),
            num_pending: 1,
            num_ack_pending: 0,
            ack_floor: 11,
            delivered: 11,
            error: None,
        };
        let mut log = Log(Vec::new());
        log.push(
            "issue-detector",
            "event_rejected",
            1,
            json!({"reason": "malformed", "correlation_id": "hostile-0"}),
        );
        log.push(
            "issue-detector",
            "event_rejected",
            2,
            json!({"reason": "malformed", "detail": {"stream": "CN_EVENTS", "stream_seq": 11}}),
        );
        let f = hostile(
            &[
                sent("hostile-0", 10),
                sent("hostile-1", 11),
                sent("hostile-2", 9),
                sent("hostile-3", 12),
            ],
            &log.0,
            &[consumer],
        );
        assert_eq!((f.must_reject, f.rejected), (4, 2), "by correlation id and by stream position");
        assert_eq!(f.silently_dropped.len(), 1, "{:?}", f.silently_dropped);
        assert!(f.silently_dropped[0].starts_with("hostile-2 "));
        assert_eq!(f.unjudged.len(), 1, "not consumed yet: {:?}", f.unjudged);
    }
}
