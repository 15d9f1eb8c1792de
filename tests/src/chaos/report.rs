//! A chaos run's report: its figures, the checks that must hold, a table and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::faults::{Crash, Kill};
use super::hostile::{AskedAgain, Expect, HostileSent};
use super::judge::Outcome;
use super::observe::ConsumerState;

/// Events the load published, against what CN_EVENTS holds.
#[derive(Debug, Clone, Default)]
pub struct Events {
    pub published: u64,
    pub acked: u64,
    pub acked_after_retry: u64,
    pub acked_as_duplicate: u64,
    pub not_acked: Vec<String>,
    pub stream_messages: u64,
    /// Acked messages (load and hostile) found in CN_EVENTS by their `Nats-Msg-Id`.
    pub acked_stored: u64,
    /// Acked messages (load and hostile) CN_EVENTS does not hold.
    pub lost: Vec<String>,
    /// Durable consumers on CN_EVENTS, and those not caught up with it.
    pub consumers: usize,
    pub lagging: Vec<String>,
}

/// What the fleet decided, from the proof log.
#[derive(Debug, Clone, Default)]
pub struct Decisions {
    pub incidents_opened: usize,
    pub incidents_resolved: usize,
    pub proposals: usize,
    pub approvals: usize,
    pub refusals: BTreeMap<String, usize>,
    pub pending_human: usize,
    pub executions: usize,
    pub execution_failed: usize,
    pub execution_refused: usize,
    pub agent_starts: usize,
    pub executed_twice: Vec<String>,
    pub without_approval: Vec<String>,
    pub prod_rollbacks: Vec<String>,
    pub cooldown_violations: Vec<String>,
    /// An incident opened while one of the same kind for the same service was still open.
    pub incidents_doubled: Vec<String>,
    /// Every `event_rejected` record, by agent and reason (hostile ones included).
    pub rejections: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Default)]
pub struct ProofFigures {
    pub records: usize,
    pub chains: usize,
    pub intact: bool,
    pub breaks: Vec<String>,
}

/// One agent's verdict on one hostile message.
#[derive(Debug, Clone)]
pub struct HostileVerdict {
    pub id: String,
    pub name: &'static str,
    pub subject: String,
    pub agent: String,
    pub consumer: String,
    pub expect: Expect,
    pub outcome: Outcome,
    /// A request's answer: its `Cn-Error` header, if any.
    pub answered: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct HostileFigures {
    pub sent: usize,
    /// Stored by JetStream (or answered, for requests).
    pub delivered: usize,
    pub not_delivered: Vec<String>,
    /// Deliveries to consuming agents that the contract says must be rejected.
    pub must_reject: usize,
    pub rejected: usize,
    pub reasons: BTreeMap<String, usize>,
    pub silently_dropped: Vec<String>,
    /// Deliveries of valid-but-odd messages, and those an agent rejected anyway.
    pub valid: usize,
    pub valid_rejected: Vec<String>,
    /// Not consumed when the run ended: nothing can be said about them.
    pub unjudged: Vec<String>,
    /// Requests asked again, by why.
    pub asked_again: AskedAgain,
    pub verdicts: Vec<HostileVerdict>,
}

impl HostileFigures {
    pub fn from_verdicts(sent: &[HostileSent], verdicts: Vec<HostileVerdict>) -> Self {
        let line = |v: &HostileVerdict| {
            let answered =
                v.answered.as_ref().map(|e| format!(", answered {e}")).unwrap_or_default();
            format!("{} {} -> {} ({:?}{answered})", v.id, v.name, v.agent, v.outcome)
        };
        let mut f = Self {
            sent: sent.len(),
            delivered: sent.iter().filter(|h| h.seq.is_some() || h.reply.is_some()).count(),
            not_delivered: sent
                .iter()
                .filter(|h| h.seq.is_none() && h.reply.is_none())
                .map(|h| format!("{} {}: {}", h.id, h.name, h.error.as_deref().unwrap_or("?")))
                .collect(),
            asked_again: AskedAgain {
                unanswered: sent.iter().map(|h| h.asked_again.unanswered).sum(),
                retry: sent.iter().map(|h| h.asked_again.retry).sum(),
            },
            ..Self::default()
        };
        for v in &verdicts {
            match (v.expect, &v.outcome) {
                (_, Outcome::Pending) => f.unjudged.push(line(v)),
                (Expect::Reject, Outcome::Rejected(reason)) => {
                    f.rejected += 1;
                    *f.reasons.entry(reason.clone()).or_insert(0) += 1;
                }
                (Expect::Reject, Outcome::Consumed) => f.silently_dropped.push(line(v)),
                (Expect::Accept, Outcome::Rejected(_)) => f.valid_rejected.push(line(v)),
                (Expect::Accept, Outcome::Consumed) => {}
            }
            match v.expect {
                Expect::Reject => f.must_reject += 1,
                Expect::Accept => f.valid += 1,
            }
        }
        f.verdicts = verdicts;
        f
    }
}

/// Everything a chaos run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub services: usize,
    /// The load and fault phase as it ran, and the whole run (start and settling included).
    pub load_s: f64,
    pub total_s: f64,
    pub kills: Vec<Kill>,
    pub kills_by_agent: BTreeMap<String, usize>,
    /// Seconds into the run when nats-server was killed, and how long it stayed down.
    pub nats_restarts: Vec<(f64, f64)>,
    pub crashes: Vec<Crash>,
    /// nats-servers the fleet ran on (a cluster's nodes), and each stream's replicas at the end.
    pub nodes: usize,
    pub replicas: Vec<(String, usize)>,
    pub crash_loops: u64,
    pub failed_deploys: u64,
    /// How long the fleet took to settle after the load stopped; `None` if it did not.
    pub settled_s: Option<f64>,
    pub consumers: Vec<ConsumerState>,
    pub events: Events,
    pub decisions: Decisions,
    pub proof: ProofFigures,
    pub hostile: HostileFigures,
}

fn first(list: &[String], n: usize) -> String {
    let shown: Vec<&str> = list.iter().take(n).map(String::as_str).collect();
    let more =
        if list.len() > n { format!("; and {} more", list.len() - n) } else { String::new() };
    format!("{}{more}", shown.join("; "))
}

/// A figure that is a list of problems: its count and the first few.
fn listed(what: &str, list: &[String]) -> String {
    format!("{what} = {}: {}", list.len(), first(list, 5))
}

impl Report {
    /// The checks that failed, each naming its figure; empty when the run passed.
    pub fn failures(&self) -> Vec<String> {
        let mut failed = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                failed.push(what);
            }
        };
        let d = &self.decisions;
        check(self.events.lost.is_empty(), listed("acked events lost", &self.events.lost));
        check(d.executed_twice.is_empty(), listed("executions twice", &d.executed_twice));
        check(
            d.without_approval.is_empty(),
            listed("executions without approval", &d.without_approval),
        );
        check(d.prod_rollbacks.is_empty(), listed("prod rollbacks executed", &d.prod_rollbacks));
        check(
            d.cooldown_violations.is_empty(),
            listed("cooldown violations", &d.cooldown_violations),
        );
        check(
            d.incidents_doubled.is_empty(),
            listed("incidents opened twice", &d.incidents_doubled),
        );
        check(self.proof.intact, listed("proof chains broken", &self.proof.breaks));
        let thin: Vec<String> = self
            .replicas
            .iter()
            .filter(|(_, n)| *n < self.nodes)
            .map(|(s, n)| format!("{s} has {n} of {} replicas", self.nodes))
            .collect();
        check(thin.is_empty(), listed("streams not replicated on every node", &thin));
        let crashes: Vec<String> = self
            .crashes
            .iter()
            .map(|c| format!("{} exited with {} at {:.1} s", c.agent, c.code, c.at_s))
            .collect();
        check(crashes.is_empty(), listed("crashes", &crashes));
        let h = &self.hostile;
        check(
            h.silently_dropped.is_empty(),
            listed("hostile silently dropped", &h.silently_dropped),
        );
        // Without these, the figures above could not be complete.
        check(
            self.settled_s.is_some(),
            "the fleet did not settle (consumers still had pending or unacked messages)".to_owned(),
        );
        check(
            self.events.lagging.is_empty(),
            listed("consumers not caught up with CN_EVENTS", &self.events.lagging),
        );
        check(h.unjudged.is_empty(), listed("hostile deliveries never consumed", &h.unjudged));
        failed
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mark = |ok: bool| if ok { "ok" } else { "FAIL" };
        let (e, d, h, p) = (&self.events, &self.decisions, &self.hostile, &self.proof);
        let mut t = String::new();
        let mut row = |label: &str, value: String, status: Option<bool>| {
            let _ = writeln!(t, "  {label:<42} {value:<14}{}", status.map(mark).unwrap_or(""));
        };
        let mut out = format!(
            "chaos run: seed {}, {} services, load {:.0} s, {:.0} s in all, settled {}\n",
            self.seed,
            self.services,
            self.load_s,
            self.total_s,
            self.settled_s.map_or("NO".to_owned(), |s| format!("in {s:.1} s"))
        );
        row("agent kills (kill -9, then restart)", self.kills.len().to_string(), None);
        let down: Vec<String> = self.nats_restarts.iter().map(|(_, d)| format!("{d:.1}")).collect();
        let replicas: Vec<String> = self.replicas.iter().map(|(_, n)| n.to_string()).collect();
        let replicated = self.replicas.iter().all(|(_, n)| *n >= self.nodes);
        row(
            "nats-servers / replicas (events, work, proof)",
            format!("{} / {}", self.nodes, replicas.join(" ")),
            Some(replicated),
        );
        row("nats-server restarts (kill -9)", self.nats_restarts.len().to_string(), None);
        row("  down for (s)", down.join(", "), None);
        row(
            "crashes (exits nobody caused)",
            self.crashes.len().to_string(),
            Some(self.crashes.is_empty()),
        );
        row("events published (load)", e.published.to_string(), None);
        row("  acked by JetStream", e.acked.to_string(), None);
        row(
            "  acked after a retry / as duplicate",
            format!("{} / {}", e.acked_after_retry, e.acked_as_duplicate),
            None,
        );
        row("  never acked (counted, not lost)", e.not_acked.len().to_string(), None);
        row(
            "acked events stored in CN_EVENTS",
            format!("{} of {}", e.acked_stored, e.acked_stored as usize + e.lost.len()),
            None,
        );
        row("acked events lost", e.lost.len().to_string(), Some(e.lost.is_empty()));
        row(
            "CN_EVENTS consumers caught up",
            format!("{} of {}", e.consumers - e.lagging.len(), e.consumers),
            Some(e.lagging.is_empty()),
        );
        row(
            "crash loops / failed prod deploys sent",
            format!("{} / {}", self.crash_loops, self.failed_deploys),
            None,
        );
        row(
            "incidents opened / resolved",
            format!("{} / {}", d.incidents_opened, d.incidents_resolved),
            None,
        );
        row(
            "proposals / approvals / held for a human",
            format!("{} / {} / {}", d.proposals, d.approvals, d.pending_human),
            None,
        );
        row("refusals", d.refusals.values().sum::<usize>().to_string(), None);
        row("executions (action_executed)", d.executions.to_string(), None);
        row(
            "  failed / refused by the executor",
            format!("{} / {}", d.execution_failed, d.execution_refused),
            None,
        );
        row(
            "executions twice",
            d.executed_twice.len().to_string(),
            Some(d.executed_twice.is_empty()),
        );
        row(
            "executions without an earlier approval",
            d.without_approval.len().to_string(),
            Some(d.without_approval.is_empty()),
        );
        row(
            "prod rollbacks executed without a human",
            d.prod_rollbacks.len().to_string(),
            Some(d.prod_rollbacks.is_empty()),
        );
        row(
            "cooldown violations",
            d.cooldown_violations.len().to_string(),
            Some(d.cooldown_violations.is_empty()),
        );
        row(
            "incidents opened twice",
            d.incidents_doubled.len().to_string(),
            Some(d.incidents_doubled.is_empty()),
        );
        row(
            "proof chains verified",
            format!("{} of {}", p.chains - p.breaks.len(), p.chains),
            Some(p.intact),
        );
        row("  proof records", p.records.to_string(), None);
        row("hostile payloads sent / delivered", format!("{} / {}", h.sent, h.delivered), None);
        row("  deliveries that must be rejected", h.must_reject.to_string(), None);
        row(
            "  rejected with a reason",
            h.rejected.to_string(),
            Some(h.rejected + h.unjudged.len() == h.must_reject || h.must_reject == 0),
        );
        row(
            "  silently dropped",
            h.silently_dropped.len().to_string(),
            Some(h.silently_dropped.is_empty()),
        );
        row("  never consumed", h.unjudged.len().to_string(), Some(h.unjudged.is_empty()));
        row(
            "  requests asked again (no answer / retry)",
            format!("{} / {}", h.asked_again.unanswered, h.asked_again.retry),
            None,
        );
        row(
            "  valid-but-odd deliveries / rejected",
            format!("{} / {}", h.valid, h.valid_rejected.len()),
            None,
        );
        out.push_str(&t);
        let reasons: Vec<String> = h.reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(out, "  hostile rejection reasons: {}", reasons.join(", "));
        let kills: Vec<String> =
            self.kills_by_agent.iter().map(|(a, n)| format!("{a} {n}")).collect();
        let _ = writeln!(out, "  kills by agent: {}", kills.join(", "));
        let refusals: Vec<String> = d.refusals.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(
            out,
            "  refusals by reason: {}",
            if refusals.is_empty() { "none".to_owned() } else { refusals.join(", ") }
        );
        for v in &h.valid_rejected {
            let _ = writeln!(out, "  note: a valid message was rejected: {v}");
        }
        for c in &self.crashes {
            let _ = writeln!(
                out,
                "  crash: {} exited with {} at {:.1} s; its log ends:\n{}",
                c.agent, c.code, c.at_s, c.log_tail
            );
        }
        match self.failures().as_slice() {
            [] => out.push_str("PASS: 0 acked events lost, 0 executions twice or without approval, 0 prod rollbacks, 0 cooldown violations, every chain verified, 0 crashes, every hostile payload rejected with a reason\n"),
            failed => {
                let _ = writeln!(out, "FAIL:\n  {}", failed.join("\n  "));
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let (e, d, h, p) = (&self.events, &self.decisions, &self.hostile, &self.proof);
        json!({
            "pass": self.failures().is_empty(),
            "failures": self.failures(),
            "seed": self.seed,
            "services": self.services,
            "load_s": self.load_s,
            "total_s": self.total_s,
            "settled_s": self.settled_s,
            "faults": {
                "kills": self.kills.iter().map(|k| json!({"agent": k.agent, "at_s": k.at_s, "down_ms": k.down_ms})).collect::<Vec<_>>(),
                "nodes": self.nodes,
                "replicas": self.replicas.iter().map(|(s, n)| json!({"stream": s, "replicas": n})).collect::<Vec<_>>(),
                "nats_restarts": self.nats_restarts.iter().map(|(at, took)| json!({"at_s": at, "down_s": took})).collect::<Vec<_>>(),
                "crashes": self.crashes.iter().map(|c| json!({"agent": c.agent, "at_s": c.at_s, "code": c.code, "log_tail": c.log_tail})).collect::<Vec<_>>(),
            },
            "events": {
                "published": e.published, "acked": e.acked, "acked_after_retry": e.acked_after_retry, "acked_as_duplicate": e.acked_as_duplicate,
                "not_acked": e.not_acked, "stream_messages": e.stream_messages, "acked_stored": e.acked_stored, "lost": e.lost,
                "consumers": e.consumers, "lagging": e.lagging, "crash_loops": self.crash_loops, "failed_deploys": self.failed_deploys,
            },
            "consumers": self.consumers.iter().map(|c| json!({
                "durable": c.durable, "stream": c.stream, "num_pending": c.num_pending, "num_ack_pending": c.num_ack_pending,
                "ack_floor": c.ack_floor, "delivered": c.delivered, "error": c.error,
            })).collect::<Vec<_>>(),
            "decisions": {
                "incidents_opened": d.incidents_opened, "incidents_resolved": d.incidents_resolved, "proposals": d.proposals,
                "approvals": d.approvals, "refusals": d.refusals, "pending_human": d.pending_human, "executions": d.executions,
                "execution_failed": d.execution_failed, "execution_refused": d.execution_refused, "agent_starts": d.agent_starts,
                "executed_twice": d.executed_twice, "without_approval": d.without_approval, "prod_rollbacks": d.prod_rollbacks,
                "cooldown_violations": d.cooldown_violations, "incidents_doubled": d.incidents_doubled, "event_rejected": d.rejections,
            },
            "proof": {"records": p.records, "chains": p.chains, "intact": p.intact, "breaks": p.breaks},
            "hostile": {
                "sent": h.sent, "delivered": h.delivered, "not_delivered": h.not_delivered, "must_reject": h.must_reject,
                "rejected": h.rejected, "reasons": h.reasons, "silently_dropped": h.silently_dropped, "valid": h.valid,
                "valid_rejected": h.valid_rejected, "unjudged": h.unjudged, "asked_again": {"unanswered": h.asked_again.unanswered, "retry": h.asked_again.retry},
                "verdicts": h.verdicts.iter().map(|v| json!({
                    "id": v.id, "name": v.name, "subject": v.subject, "agent": v.agent, "consumer": v.consumer,
                    "expect": format!("{:?}", v.expect).to_lowercase(), "outcome": format!("{:?}", v.outcome),
                })).collect::<Vec<_>>(),
            },
        })
    }
}
