//! What the page shows, derived from the proof log (and the detector's SLO statuses), in the
//! log's order: the fleet's agents, open incidents with their evidence and what was tried,
//! pending approvals, rollouts with their stages, SLO burn and budget per service, and the
//! latest records. [`View::snapshot`] is the JSON the page renders; the console sends a new
//! one whenever something changed.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bus_schema::proof::{ProofKind, ProofRecord};
use bus_schema::trace::TraceParent;
use bus_schema::{Env, ServiceName, SloStatus, Timestamp, Uuid};
use serde::Serialize;
use serde_json::{Value, json};

/// Records kept for the page's log.
const LOG_LINES: usize = 200;
/// Resolved incidents and finished rollouts kept for the page.
const KEPT_DONE: usize = 20;
/// Points of a service's burn-rate history.
const SLO_POINTS: usize = 240;
/// Steps kept per incident ("what was tried").
const STEPS: usize = 40;

#[derive(Debug, Clone, Serialize)]
struct AgentRow {
    agent: String,
    instance: String,
    version: Option<String>,
    seq: u64,
    last_ts: Timestamp,
    last_kind: String,
    stopped: bool,
    rejected: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Step {
    ts: Timestamp,
    agent: String,
    kind: String,
    action: Option<String>,
    reason: Option<String>,
    note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Incident {
    id: Uuid,
    env: String,
    service: String,
    kind: String,
    severity: Option<String>,
    opened_at: Timestamp,
    updated_at: Timestamp,
    resolved_at: Option<Timestamp>,
    evidence: Value,
    tried: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
struct Pending {
    proposal_id: Uuid,
    incident_id: Option<Uuid>,
    env: Env,
    service: ServiceName,
    action: String,
    confidence: Option<f64>,
    requested_at: Timestamp,
    expires_at: Option<String>,
    why: Option<String>,
    reason: Option<String>,
    correlation_id: Option<String>,
    traceparent: Option<TraceParent>,
}

#[derive(Debug, Clone, Serialize)]
struct Stage {
    ts: Timestamp,
    verdict: String,
    stage: Option<u64>,
    of: Option<u64>,
    weight_percent: Option<u64>,
    canary_error_rate: Option<f64>,
    stable_error_rate: Option<f64>,
    canary_p95_ms: Option<f64>,
    stable_p95_ms: Option<f64>,
    reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Rollout {
    id: String,
    env: String,
    service: String,
    version: Option<String>,
    stable_version: Option<String>,
    weights: Value,
    /// running, promoted or aborted (with the record's reason).
    state: String,
    started_at: Timestamp,
    updated_at: Timestamp,
    stages: Vec<Stage>,
}

#[derive(Debug, Clone, Serialize)]
struct Slo {
    env: String,
    service: String,
    objective: f64,
    window_days: u32,
    budget_remaining: f64,
    burn_rates: Vec<(u64, f64)>,
    ts: Timestamp,
    /// `(unix ms, shortest-window burn rate, budget remaining)`, oldest first.
    history: VecDeque<(i64, f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
struct LogLine {
    ts: Timestamp,
    agent: String,
    instance: String,
    seq: u64,
    kind: String,
    env: Option<String>,
    service: Option<String>,
    action: Option<String>,
    reason: Option<String>,
    incident_id: Option<Uuid>,
    proposal_id: Option<Uuid>,
    trace_id: Option<String>,
}

/// A pending approval's service, and the chain a decision about it continues.
#[derive(Debug, Clone)]
pub struct Scope {
    pub env: Env,
    pub service: ServiceName,
    pub correlation_id: Option<String>,
    pub traceparent: Option<TraceParent>,
}

/// The page's state.
#[derive(Debug, Default)]
pub struct View {
    agents: BTreeMap<(String, String), AgentRow>,
    open: HashMap<Uuid, Incident>,
    resolved: VecDeque<Incident>,
    pending: HashMap<Uuid, Pending>,
    rollouts: HashMap<String, Rollout>,
    slos: BTreeMap<(String, String), Slo>,
    log: VecDeque<LogLine>,
    records: u64,
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

impl View {
    /// Takes in one record of the proof log, in the log's order.
    pub fn observe(&mut self, r: &ProofRecord) {
        self.records += 1;
        let agent = r.agent.to_string();
        let env = r.env.as_ref().map(ToString::to_string).unwrap_or_default();
        let service = r.service.as_ref().map(ToString::to_string).unwrap_or_default();
        self.note_agent(r);
        self.log.push_back(LogLine {
            ts: r.ts,
            agent: agent.clone(),
            instance: r.instance.to_string(),
            seq: r.seq,
            kind: r.kind.to_string(),
            env: r.env.as_ref().map(ToString::to_string),
            service: r.service.as_ref().map(ToString::to_string),
            action: r.action.as_ref().map(ToString::to_string),
            reason: r.reason.clone(),
            incident_id: r.incident_id,
            proposal_id: r.proposal_id,
            trace_id: r.traceparent.as_ref().map(|t| t.trace_id()),
        });
        if self.log.len() > LOG_LINES {
            self.log.pop_front();
        }
        match r.kind {
            ProofKind::IncidentOpened | ProofKind::IncidentUpdated => {
                let Some(id) = r.incident_id else { return };
                let d = &r.detail;
                // A reopened incident keeps its id: it comes back with its history.
                if let Some(at) = self.resolved.iter().position(|i| i.id == id) {
                    if let Some(mut back) = self.resolved.remove(at) {
                        back.resolved_at = None;
                        self.open.entry(id).or_insert(back);
                    }
                }
                let incident = self.open.entry(id).or_insert_with(|| Incident {
                    id,
                    env,
                    service,
                    kind: String::new(),
                    severity: None,
                    opened_at: r.ts,
                    updated_at: r.ts,
                    resolved_at: None,
                    evidence: Value::Null,
                    tried: Vec::new(),
                });
                incident.kind = text(&d["kind"]).unwrap_or_else(|| incident.kind.clone());
                incident.severity = text(&d["severity"]).or(incident.severity.take());
                if !d["evidence"].is_null() {
                    incident.evidence = d["evidence"].clone();
                }
                incident.updated_at = r.ts;
            }
            ProofKind::IncidentResolved => {
                let Some(mut incident) = r.incident_id.and_then(|id| self.open.remove(&id)) else {
                    return;
                };
                incident.resolved_at = Some(r.ts);
                incident.updated_at = r.ts;
                self.resolved.retain(|i| i.id != incident.id);
                self.resolved.push_front(incident);
                self.resolved.truncate(KEPT_DONE);
            }
            ProofKind::ActionPendingApproval => {
                if let (Some(id), Some(env), Some(service)) =
                    (r.proposal_id, r.env.clone(), r.service.clone())
                {
                    let d = &r.detail;
                    self.pending.insert(
                        id,
                        Pending {
                            proposal_id: id,
                            incident_id: r.incident_id,
                            env,
                            service,
                            action: r.action.as_ref().map(ToString::to_string).unwrap_or_default(),
                            confidence: d["confidence"].as_f64(),
                            requested_at: r.ts,
                            expires_at: text(&d["expires_at"]),
                            why: text(&d["why"]),
                            reason: r.reason.clone(),
                            correlation_id: r.correlation_id.clone(),
                            traceparent: r.traceparent,
                        },
                    );
                }
                self.step(r);
            }
            ProofKind::ActionApproved | ProofKind::ActionRefused | ProofKind::HumanDecision => {
                if let Some(id) = r.proposal_id {
                    self.pending.remove(&id);
                }
                self.step(r);
            }
            ProofKind::CanaryStage | ProofKind::CanaryPromoted | ProofKind::CanaryAborted => {
                self.rollout(r, env, service);
            }
            _ => self.step(r),
        }
    }

    /// The detector's latest SLO status of a service.
    pub fn observe_slo(&mut self, s: &SloStatus) {
        let key = (s.env.to_string(), s.service.to_string());
        let slo = self.slos.entry(key).or_insert_with(|| Slo {
            env: s.env.to_string(),
            service: s.service.to_string(),
            objective: s.objective,
            window_days: s.window_days,
            budget_remaining: s.budget_remaining,
            burn_rates: Vec::new(),
            ts: s.ts,
            history: VecDeque::new(),
        });
        if s.ts < slo.ts {
            return;
        }
        slo.objective = s.objective;
        slo.window_days = s.window_days;
        slo.budget_remaining = s.budget_remaining;
        slo.burn_rates = s.burn_rates.iter().map(|b| (b.window_s, b.rate)).collect();
        slo.burn_rates.sort_by_key(|(w, _)| *w);
        slo.ts = s.ts;
        let shortest = slo.burn_rates.first().map_or(0.0, |(_, r)| *r);
        slo.history.push_back((s.ts.unix_millis(), shortest, s.budget_remaining));
        if slo.history.len() > SLO_POINTS {
            slo.history.pop_front();
        }
    }

    fn note_agent(&mut self, r: &ProofRecord) {
        let key = (r.agent.to_string(), r.instance.to_string());
        let row = self.agents.entry(key).or_insert_with(|| AgentRow {
            agent: r.agent.to_string(),
            instance: r.instance.to_string(),
            version: None,
            seq: 0,
            last_ts: r.ts,
            last_kind: String::new(),
            stopped: false,
            rejected: 0,
        });
        row.seq = row.seq.max(r.seq);
        row.last_ts = r.ts;
        row.last_kind = r.kind.to_string();
        match r.kind {
            ProofKind::AgentStarted => {
                row.stopped = false;
                row.version = text(&r.detail["version"]).or(row.version.take());
            }
            ProofKind::AgentStopped => row.stopped = true,
            ProofKind::EventRejected => row.rejected += 1,
            _ => {}
        }
    }

    /// A record about an incident's remediation: "what was tried" (an outcome is often judged
    /// after the incident resolved).
    fn step(&mut self, r: &ProofRecord) {
        let Some(id) = r.incident_id else { return };
        let incident = match self.open.get_mut(&id) {
            Some(i) => i,
            None => match self.resolved.iter_mut().find(|i| i.id == id) {
                Some(i) => i,
                None => return,
            },
        };
        let d = &r.detail;
        let note = text(&d["why"])
            .or_else(|| text(&d["detail"]))
            .or_else(|| text(&d["approved_by"]).map(|by| format!("approved by {by}")))
            .or_else(|| text(&d["operator"]).map(|by| format!("by {by}")));
        incident.tried.push(Step {
            ts: r.ts,
            agent: r.agent.to_string(),
            kind: r.kind.to_string(),
            action: r.action.as_ref().map(ToString::to_string),
            reason: r.reason.clone(),
            note,
        });
        if incident.tried.len() > STEPS {
            incident.tried.remove(0);
        }
        incident.updated_at = r.ts;
    }

    fn rollout(&mut self, r: &ProofRecord, env: String, service: String) {
        let d = &r.detail;
        let Some(id) = text(&d["rollout_id"]) else { return };
        let rollout = self.rollouts.entry(id.clone()).or_insert_with(|| Rollout {
            id,
            env,
            service,
            version: None,
            stable_version: None,
            weights: Value::Null,
            state: "running".into(),
            started_at: r.ts,
            updated_at: r.ts,
            stages: Vec::new(),
        });
        rollout.updated_at = r.ts;
        rollout.version = text(&d["version"]).or(rollout.version.take());
        if let Some(stable) = text(&d["stable_version"]) {
            rollout.stable_version = Some(stable);
        }
        if d["weights"].is_array() {
            rollout.weights = d["weights"].clone();
        }
        let reason = r.reason.clone().unwrap_or_default();
        match r.kind {
            ProofKind::CanaryPromoted => rollout.state = "promoted".into(),
            ProofKind::CanaryAborted => rollout.state = format!("aborted ({reason})"),
            _ if reason == "rollout_started" => {}
            _ => {
                let reasons = d["reasons"]
                    .as_array()
                    .map(|a| a.iter().filter_map(text).collect())
                    .unwrap_or_default();
                rollout.stages.push(Stage {
                    ts: r.ts,
                    verdict: reason,
                    stage: d["stage"].as_u64(),
                    of: d["of"].as_u64(),
                    weight_percent: d["weight_percent"].as_u64(),
                    canary_error_rate: d["errors"]["canary_mean_error_rate"].as_f64(),
                    stable_error_rate: d["errors"]["stable_mean_error_rate"].as_f64(),
                    canary_p95_ms: d["latency"]["canary_median_p95_ms"].as_f64(),
                    stable_p95_ms: d["latency"]["stable_median_p95_ms"].as_f64(),
                    reasons,
                });
                if rollout.stages.len() > STEPS {
                    rollout.stages.remove(0);
                }
            }
        }
        // Keep every running rollout and the latest finished ones.
        if self.rollouts.len() > KEPT_DONE * 2 {
            let mut done: Vec<_> = self
                .rollouts
                .values()
                .filter(|r| r.state != "running")
                .map(|r| (r.updated_at, r.id.clone()))
                .collect();
            done.sort();
            let excess = self.rollouts.len().saturating_sub(KEPT_DONE * 2);
            for (_, id) in done.into_iter().take(excess) {
                self.rollouts.remove(&id);
            }
        }
    }

    /// The page's JSON: newest first where it is a list of events.
    pub fn snapshot(&self, decide: bool) -> Value {
        let mut open: Vec<_> = self.open.values().collect();
        open.sort_by_key(|i| std::cmp::Reverse(i.opened_at));
        let mut pending: Vec<_> = self.pending.values().collect();
        pending.sort_by_key(|p| p.requested_at);
        let mut rollouts: Vec<_> = self.rollouts.values().collect();
        rollouts.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
        json!({
            "now": Timestamp::now(),
            "decide": decide,
            "records": self.records,
            "agents": self.agents.values().collect::<Vec<_>>(),
            "incidents": open,
            "resolved": self.resolved,
            "approvals": pending,
            "rollouts": rollouts,
            "slos": self.slos.values().collect::<Vec<_>>(),
            "log": self.log.iter().rev().collect::<Vec<_>>(),
        })
    }

    /// Where a decision about a pending approval goes, and the chain it continues.
    pub fn pending_scope(&self, id: &Uuid) -> Option<Scope> {
        self.pending.get(id).map(|p| Scope {
            env: p.env.clone(),
            service: p.service.clone(),
            correlation_id: p.correlation_id.clone(),
            traceparent: p.traceparent,
        })
    }
}

#[cfg(test)]
mod tests;
