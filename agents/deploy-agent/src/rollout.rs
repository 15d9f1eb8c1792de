//! One contract-driven canary rollout as a state machine (pure).
//!
//! ```text
//!  start ─► shift(stage 1) ─executed─► observe ─pass─► shift(stage 2) … ─► promote ─executed─► promoted
//!                │                        │ fail                              │
//!                │ refused / failed       ▼                                   │ refused / failed
//!                └──────────────────► abort_rollout ─executed─► rollback ─executed─► rolled back
//! ```
//!
//! - Every traffic change is an `set_canary_weight` proposal to governance; the stage starts
//!   when the executor reports it executed, and its samples are those that arrive after.
//! - Each stage is judged by [`crate::judge`] at every sample. Pass goes on; fail proposes
//!   `abort_rollout`, then a rollback to the stable version. A stage waits for its minimum
//!   duration and samples; it is inconclusive when its deadline (twice its minimum duration,
//!   at least [`MIN_STAGE_DEADLINE_S`]) passes without the samples, or when the stable version
//!   breaches the guardrails too. Inconclusive extends the stage once (minimum duration and
//!   deadline doubled), then asks a human (the next step is proposed with `require_human`:
//!   approving it goes on, denying it aborts). A stage that hears no sample at all for a
//!   while of wall-clock time ([`Rollout::on_silence`]) goes to a human the same way.
//! - Promotion is a `promote` proposal: in prod the policy sends it to a human.
//! - Every verdict is a `canary_stage` record with the numbers behind it; the end is a
//!   `canary_promoted` or `canary_aborted` record and a deploy event (`succeeded`, or
//!   `rolled_back`/`failed`) carrying the contract's deployment id, so governance, the detector
//!   and the negotiator see the rollout end.
//!
//! - A step governance holds back for now (`cooldown_active`, `repetition_suppressed`: a
//!   plan with short stages can outpace the repetition limit) is proposed again after a
//!   backoff, up to [`MAX_RETRIES`] times; any other refusal of a step aborts.
//!
//! Proposal ids derive from the rollout and the step, so a replayed input proposes the same
//! thing under the same id.

use std::time::Duration;

use agent_runtime::Outbox;
use bus_schema::proof::ProofKind;
use bus_schema::{
    Action, ActionParams, ActionProposal, CanaryStage, Contract, DeployEvent, DeployStatus, Env,
    ExecutionResult, ExecutionStatus, Guardrails, MetricSample, ReasonCode, Refusal,
    RolloutCommand, RolloutVerb, ServiceName, Timestamp, Uuid, derive_id,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::judge::{self, Criteria, DEFAULT_MIN_SAMPLES, StageData, Verdict};

/// Confidence of a step the plan calls for: the contract was accepted and the last stage
/// passed (governance's floor is 0.6 in stage and prod).
pub const STEP_CONFIDENCE: f64 = 0.9;
/// Confidence of ending a rollout that failed its judgement.
pub const ABORT_CONFIDENCE: f64 = 0.99;
/// A stage still short of samples is inconclusive after twice its minimum duration, but
/// never before this much event time (30 samples take 7.5 min at a 15 s scrape interval).
pub const MIN_STAGE_DEADLINE_S: f64 = 600.0;
/// A step governance holds back for now (`cooldown_active`, `repetition_suppressed`) is
/// proposed again this many times before the rollout gives up on it ...
pub const MAX_RETRIES: u32 = 5;
/// ... after 30 s, then twice as long each time, at most 5 min (or the cooldown's remainder
/// when governance says how long it is).
pub const RETRY_BASE: Duration = Duration::from_secs(30);
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// The longest minimum duration a stage is held to (a day).
pub const MAX_STAGE_DURATION_S: u32 = 86_400;

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// A traffic change or the promotion is proposed; waiting for it to be executed.
    Proposed {
        proposal: ActionProposal,
    },
    /// Traffic is at the stage's weight; samples are being judged.
    Observing,
    /// The canary failed (or could not go on): traffic back to 0.
    Aborting {
        proposal: ActionProposal,
        why: String,
    },
    /// Traffic is at 0; the stable version replaces the canary.
    RollingBack {
        proposal: ActionProposal,
    },
    Done {
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Promoted,
    RolledBack,
    /// Aborted with no rollback (none possible, or refused): traffic is at 0.
    Aborted,
    /// Governance or the executor would not take traffic back to 0: a human must look.
    AbortFailed,
    /// A deploy event ended the deploy while the canary ran.
    Ended,
    /// A newer deploy of the service replaced it.
    Superseded,
}

/// What a step of the machine asks the shell to do, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    Propose(ActionProposal),
    Prove(Proof),
    Deploy(DeployEvent),
}

/// A proof record to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proof {
    pub kind: ProofKind,
    pub reason: String,
    /// JSON text (the store is MessagePack, which does not round-trip arbitrary JSON values).
    pub detail: String,
}

/// A rollout and what it still has to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub rollout_id: Uuid,
    pub contract_id: Uuid,
    pub deployment_id: String,
    pub env: Env,
    pub service: ServiceName,
    /// The canary's version.
    pub version: String,
    /// The version the canary runs beside, and what a rollback restores.
    pub stable_version: Option<String>,
    /// The chain every output continues: the deploy event that started the rollout.
    pub correlation_id: String,
    /// The traffic stages (weights below 100), in order; promotion follows the last.
    pub stages: Vec<CanaryStage>,
    pub guardrails: Guardrails,
    /// The current stage; `stages.len()` once promoting.
    pub stage: usize,
    pub phase: Phase,
    pub data: StageData,
    /// The current stage was extended once already.
    pub extended: bool,
    pub started_at: Timestamp,
    /// Wall-clock time of the last sample (or of the stage's start): a stage that hears
    /// nothing for long goes to a human ([`Rollout::on_silence`]).
    pub last_heard: Timestamp,
    /// The inputs applied (a redelivery is not applied twice) and the effects decided but not
    /// yet published. An effect's message id derives from its number, so one published again
    /// after a crash is dropped as a duplicate.
    #[serde(flatten)]
    pub delivery: Outbox<Effect>,
    /// Times the proposal in flight was held back by governance and proposed again.
    #[serde(default)]
    pub retries: u32,
    /// When a held-back proposal is to be proposed again.
    #[serde(default)]
    pub retry_at: Option<Timestamp>,
    /// An operator's command that arrived while a step was in flight: applied once that step
    /// is executed (a refused step aborts the rollout anyway).
    #[serde(default)]
    pub queued: Option<RolloutCommand>,
}

impl Rollout {
    /// A rollout of `deploy` (status started) under `contract`, and its first effects.
    pub fn start(
        contract: &Contract,
        deploy: &DeployEvent,
        stable_version: Option<String>,
        correlation_id: String,
        now: Timestamp,
    ) -> (Self, Vec<Effect>) {
        let (stages, skipped) = plan(&contract.canary);
        let mut r = Self {
            rollout_id: rollout_id(contract, deploy),
            contract_id: contract.contract_id,
            deployment_id: contract.deployment_id.clone(),
            env: deploy.env.clone(),
            service: deploy.service.clone(),
            version: deploy.version.clone(),
            stable_version,
            correlation_id,
            stages,
            guardrails: contract.guardrails.clone(),
            stage: 0,
            phase: Phase::Observing,
            data: StageData::default(),
            extended: false,
            started_at: now,
            last_heard: now,
            delivery: Outbox::default(),
            retries: 0,
            retry_at: None,
            queued: None,
        };
        let weights: Vec<u8> = r.stages.iter().map(|s| s.weight_percent).collect();
        let mut out = vec![r.proof(
            ProofKind::CanaryStage,
            "rollout_started",
            json!({
                "contract_id": contract.contract_id, "contract_revision": contract.revision, "deployment_id": r.deployment_id,
                "version": r.version, "stable_version": r.stable_version, "weights": weights, "guardrails": r.guardrails,
                "risk": contract.risk.level, "stages": r.stages, "skipped_weights": skipped,
            }),
        )];
        out.extend(r.next_step(now, None));
        (r, out)
    }

    pub fn key(&self) -> String {
        key(&self.env, &self.service)
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }

    /// A metric sample of the service.
    pub fn on_metric(&mut self, m: &MetricSample, now: Timestamp) -> Vec<Effect> {
        if self.phase != Phase::Observing {
            return Vec::new();
        }
        self.data.add(m);
        self.last_heard = now;
        let Some(stage) = self.stages.get(self.stage) else { return Vec::new() };
        // An extension gives the stage its time once more.
        let times = if self.extended { 2.0 } else { 1.0 };
        let min_duration_s = f64::from(stage.min_duration_s);
        let criteria = Criteria {
            min_duration_s: min_duration_s * times,
            deadline_s: (2.0 * min_duration_s).max(MIN_STAGE_DEADLINE_S) * times,
            min_samples: if stage.min_samples == 0 {
                DEFAULT_MIN_SAMPLES
            } else {
                stage.min_samples as usize
            },
            guardrails: self.guardrails.clone(),
        };
        let j = judge::judge(&self.data, &criteria);
        let mut detail = json!({"stage": self.stage + 1, "of": self.stages.len(), "weight_percent": stage.weight_percent, "verdict": j.verdict, "reasons": j.reasons});
        merge(&mut detail, j.evidence);
        match j.verdict {
            Verdict::Wait => Vec::new(),
            Verdict::Pass => {
                let mut out = vec![self.proof(ProofKind::CanaryStage, "passed", detail)];
                self.stage += 1;
                out.extend(self.next_step(now, None));
                out
            }
            Verdict::Fail => {
                let mut out = vec![self.proof(ProofKind::CanaryStage, "failed", detail)];
                out.extend(self.abort(
                    format!(
                        "stage {} at {} % failed: {}",
                        self.stage + 1,
                        stage.weight_percent,
                        j.reasons.join("; ")
                    ),
                    now,
                ));
                out
            }
            Verdict::Inconclusive if !self.extended => {
                self.extended = true;
                detail["extended"] = json!({"min_duration_s": criteria.min_duration_s * 2.0, "deadline_s": criteria.deadline_s * 2.0});
                vec![self.proof(ProofKind::CanaryStage, "extended", detail)]
            }
            Verdict::Inconclusive => {
                let why = format!(
                    "stage {} at {} % stayed inconclusive after an extension: {}",
                    self.stage + 1,
                    stage.weight_percent,
                    j.reasons.join("; ")
                );
                let mut out = vec![self.proof(ProofKind::CanaryStage, "inconclusive", detail)];
                self.stage += 1;
                out.extend(self.next_step(now, Some(why)));
                out
            }
        }
    }

    /// Whether the stage under observation has heard no sample for `silence` of wall-clock time.
    pub fn is_silent(&self, now: Timestamp, silence: Duration) -> bool {
        self.phase == Phase::Observing && now.since(self.last_heard) >= silence
    }

    /// A stage that heard no sample for `silence` (the canary may be down, or the pipeline does
    /// not report this service) cannot be judged: a human decides whether to go on.
    pub fn on_silence(&mut self, now: Timestamp, silence: Duration) -> Vec<Effect> {
        if !self.is_silent(now, silence) {
            return Vec::new();
        }
        let Some(stage) = self.stages.get(self.stage) else { return Vec::new() };
        let why = format!(
            "stage {} at {} % heard no metric sample for {} s of wall-clock time",
            self.stage + 1,
            stage.weight_percent,
            now.since(self.last_heard).as_secs()
        );
        let detail = json!({
            "stage": self.stage + 1, "of": self.stages.len(), "weight_percent": stage.weight_percent, "verdict": Verdict::Inconclusive,
            "reasons": [why], "samples": {"canary": self.data.canary.len(), "stable": self.data.stable.len()}, "last_heard": self.last_heard,
        });
        let mut out = vec![self.proof(ProofKind::CanaryStage, "silent", detail)];
        self.stage += 1;
        out.extend(self.next_step(now, Some(why)));
        out
    }

    /// An execution result; only the one for the proposal in flight matters.
    pub fn on_executed(&mut self, r: &ExecutionResult, now: Timestamp) -> Vec<Effect> {
        let Some(proposal) = self.in_flight().filter(|p| p.proposal_id == r.proposal_id).cloned()
        else {
            return Vec::new();
        };
        let executed = r.status == ExecutionStatus::Executed;
        match (&self.phase, executed) {
            (Phase::Proposed { .. }, true) if proposal.action == Action::Promote => {
                self.phase = Phase::Done { outcome: Outcome::Promoted };
                let stable = self.stable_version.clone();
                let dropped = self.queued.take().map(|c| {
                    self.proof(ProofKind::CanaryStage, "command_dropped", json!({"command": c.command, "operator": c.operator, "reason": c.reason, "why": "the promotion in flight was executed first"}))
                });
                dropped.into_iter().chain([
                    self.proof(ProofKind::CanaryPromoted, "promoted", json!({"version": self.version, "replaces": stable, "stages_passed": self.stages.len(), "backend": r.backend})),
                    Effect::Deploy(self.deploy_event(&self.version, stable.as_deref(), DeployStatus::Succeeded, now)),
                ]).collect()
            }
            (Phase::Proposed { .. }, true) => {
                self.phase = Phase::Observing;
                self.data = StageData::default();
                self.extended = false;
                self.last_heard = now;
                match self.queued.take() {
                    Some(c) => self.on_command(&c, now),
                    None => Vec::new(),
                }
            }
            (Phase::Proposed { .. }, false) => self.abort(
                format!("{} was not carried out: {} ({})", proposal.action, r.status, r.detail),
                now,
            ),
            (Phase::Aborting { why, .. }, true) => {
                let why = why.clone();
                let mut out = vec![self.proof(ProofKind::CanaryAborted, "aborted", json!({"why": why, "version": self.version, "stable_version": self.stable_version}))];
                out.extend(self.roll_back(now));
                out
            }
            (Phase::Aborting { why, .. }, false) => {
                let detail = json!({"why": why, "abort_status": r.status, "abort_detail": r.detail, "hint": "traffic may still reach the canary: set it to 0 by hand"});
                self.phase = Phase::Done { outcome: Outcome::AbortFailed };
                vec![self.proof(ProofKind::CanaryAborted, "abort_failed", detail)]
            }
            (Phase::RollingBack { .. }, true) => {
                self.phase = Phase::Done { outcome: Outcome::RolledBack };
                let stable = self.stable_version.clone().unwrap_or_default();
                vec![Effect::Deploy(self.deploy_event(
                    &stable,
                    Some(&self.version),
                    DeployStatus::RolledBack,
                    now,
                ))]
            }
            (Phase::RollingBack { .. }, false) => self.end_without_rollback(now),
            _ => Vec::new(),
        }
    }

    /// Why the rollout cannot take an operator's command, if it cannot: it ended, it is being
    /// aborted, or it is a rollout of another version than the operator meant.
    pub fn command_refusal(&self, c: &RolloutCommand) -> Option<String> {
        let what = format!("rollout of {}/{} {}", self.env, self.service, self.version);
        if let Some(v) = c.version.as_deref().filter(|v| *v != self.version) {
            return Some(format!("the {what} is in progress, not of {v}"));
        }
        match &self.phase {
            Phase::Done { .. } => Some(format!("the {what} has ended")),
            Phase::Aborting { .. } | Phase::RollingBack { .. } => {
                Some(format!("the {what} is already being aborted"))
            }
            Phase::Proposed { .. } if self.queued.is_some() => {
                Some(format!("the {what} already has a command waiting for the step in flight"))
            }
            Phase::Proposed { proposal } if proposal.action == Action::Promote => (c.command
                == RolloutVerb::Promote)
                .then(|| format!("the {what} is already being promoted")),
            Phase::Proposed { .. } | Phase::Observing => None,
        }
    }

    /// An operator's command (checked with [`Rollout::command_refusal`] first). Promote skips
    /// the stages left and proposes the promotion; abort proposes `abort_rollout` as a failed
    /// stage does. Either goes through governance like any step. While a step is in flight the
    /// command waits for it, so that a step executed late cannot undo it.
    pub fn on_command(&mut self, c: &RolloutCommand, now: Timestamp) -> Vec<Effect> {
        let asked = format!("{} asked to {}: {}", c.operator, c.command, c.reason);
        let detail = |extra: Value| {
            let mut d = json!({"command": c.command, "operator": c.operator, "reason": c.reason, "stage": self.stage + 1, "of": self.stages.len()});
            merge(&mut d, extra);
            d
        };
        match &self.phase {
            Phase::Proposed { proposal } => {
                let waits_for = json!({"waits_for": proposal.proposal_id, "step": proposal.action});
                let record =
                    self.proof(ProofKind::CanaryStage, "command_queued", detail(waits_for));
                self.queued = Some(c.clone());
                vec![record]
            }
            Phase::Observing => match c.command {
                RolloutVerb::Abort => {
                    let mut out = vec![self.proof(
                        ProofKind::CanaryStage,
                        "abort_requested",
                        detail(json!({})),
                    )];
                    out.extend(self.abort(asked, now));
                    out
                }
                RolloutVerb::Promote => {
                    let skipped: Vec<u8> =
                        self.stages.iter().skip(self.stage).map(|s| s.weight_percent).collect();
                    let mut out = vec![self.proof(
                        ProofKind::CanaryStage,
                        "promote_requested",
                        detail(json!({"skipped_weights": skipped})),
                    )];
                    let explanation = format!(
                        "promote canary {} after {} of {} stages: {asked}",
                        self.version,
                        self.stage,
                        self.stages.len()
                    );
                    self.stage = self.stages.len();
                    let proposal = self.proposal(
                        Action::Promote,
                        ActionParams::default(),
                        "promote-requested",
                        explanation,
                        STEP_CONFIDENCE,
                        false,
                        now,
                    );
                    self.set_in_flight(Phase::Proposed { proposal: proposal.clone() });
                    out.push(Effect::Propose(proposal));
                    out
                }
            },
            // command_refusal said no; nothing to do.
            Phase::Aborting { .. } | Phase::RollingBack { .. } | Phase::Done { .. } => Vec::new(),
        }
    }

    /// A refusal; only the one for the proposal in flight matters.
    pub fn on_refused(&mut self, r: &Refusal, now: Timestamp) -> Vec<Effect> {
        let Some(proposal) = self.in_flight().filter(|p| p.proposal_id == r.proposal_id).cloned()
        else {
            return Vec::new();
        };
        if matches!(r.reason, ReasonCode::CooldownActive | ReasonCode::RepetitionSuppressed)
            && self.retries < MAX_RETRIES
        {
            return self.retry_later(&proposal, r, now);
        }
        self.queued = None;
        match &self.phase {
            Phase::Proposed { .. } => {
                let who = if r.reason == ReasonCode::ApprovalDenied {
                    "a human denied"
                } else {
                    "governance refused"
                };
                self.abort(format!("{who} {} ({}): {}", proposal.action, r.reason, r.detail), now)
            }
            Phase::Aborting { why, .. } => {
                let detail = json!({"why": why, "refusal": r.reason, "refusal_detail": r.detail, "hint": "traffic may still reach the canary: set it to 0 by hand"});
                self.phase = Phase::Done { outcome: Outcome::AbortFailed };
                vec![self.proof(ProofKind::CanaryAborted, "abort_refused", detail)]
            }
            Phase::RollingBack { .. } => self.end_without_rollback(now),
            _ => Vec::new(),
        }
    }

    /// Governance holds the step back for now: propose it again later.
    fn retry_later(
        &mut self,
        proposal: &ActionProposal,
        r: &Refusal,
        now: Timestamp,
    ) -> Vec<Effect> {
        self.retries += 1;
        let backoff = RETRY_BASE.saturating_mul(1 << (self.retries - 1).min(16)).min(RETRY_MAX);
        // Governance says how long a cooldown has left.
        let remaining = serde_json::from_str::<Value>(&r.detail)
            .ok()
            .and_then(|d| d["remaining_s"].as_f64())
            .filter(|s| s.is_finite() && *s > 0.0);
        let wait = remaining
            .map_or(backoff, |s| backoff.max(Duration::from_secs_f64(s.min(86_400.0) + 1.0)));
        let retry_at = now.plus(wait);
        self.retry_at = Some(retry_at);
        let detail = json!({
            "action": proposal.action, "refusal": r.reason, "refusal_detail": r.detail, "attempt": self.retries, "max_attempts": MAX_RETRIES,
            "retry_at": retry_at, "stage": self.stage + 1,
        });
        vec![self.proof(ProofKind::CanaryStage, "retry_later", detail)]
    }

    /// Whether a held-back proposal is due again.
    pub fn retry_due(&self, now: Timestamp) -> bool {
        !self.is_done() && self.retry_at.is_some_and(|at| now >= at)
    }

    /// Proposes the held-back step again, under a new id (governance decided the old one).
    pub fn on_retry(&mut self, now: Timestamp) -> Vec<Effect> {
        if !self.retry_due(now) {
            return Vec::new();
        }
        self.retry_at = None;
        let attempt = self.retries.to_string();
        let Some(p) = self.in_flight_mut() else { return Vec::new() };
        p.proposal_id = derive_id(&[&p.proposal_id.to_string(), "retry", &attempt]);
        p.proposed_at = now;
        vec![Effect::Propose(p.clone())]
    }

    /// A deploy event of the service that ends this rollout's deploy (not `started`) while the
    /// rollout runs: someone else finished it. An event about another deploy changes nothing.
    pub fn on_deploy_ended(&mut self, d: &DeployEvent) -> Vec<Effect> {
        let ours = d
            .deployment_id
            .as_deref()
            .map_or(d.deployed_version() == self.version, |id| id == self.deployment_id);
        if self.is_done() || d.status == DeployStatus::Started || !ours {
            return Vec::new();
        }
        self.phase = Phase::Done { outcome: Outcome::Ended };
        vec![self.proof(ProofKind::CanaryAborted, "deploy_ended", json!({"status": d.status, "version": d.version, "hint": "a deploy event ended the deploy while its canary ran"}))]
    }

    /// A newer rollout of the service replaces this one.
    pub fn supersede(&mut self, by: &str) -> Vec<Effect> {
        if self.is_done() {
            return Vec::new();
        }
        self.phase = Phase::Done { outcome: Outcome::Superseded };
        vec![self.proof(
            ProofKind::CanaryAborted,
            "superseded",
            json!({"version": self.version, "superseded_by": by}),
        )]
    }

    fn in_flight(&self) -> Option<&ActionProposal> {
        match &self.phase {
            Phase::Proposed { proposal }
            | Phase::Aborting { proposal, .. }
            | Phase::RollingBack { proposal } => Some(proposal),
            Phase::Observing | Phase::Done { .. } => None,
        }
    }

    fn in_flight_mut(&mut self) -> Option<&mut ActionProposal> {
        match &mut self.phase {
            Phase::Proposed { proposal }
            | Phase::Aborting { proposal, .. }
            | Phase::RollingBack { proposal } => Some(proposal),
            Phase::Observing | Phase::Done { .. } => None,
        }
    }

    /// Proposes the current stage's traffic, or the promotion after the last; `human` asks a
    /// human to decide, saying why.
    fn next_step(&mut self, now: Timestamp, human: Option<String>) -> Vec<Effect> {
        let total = self.stages.len();
        let (action, params, tag, mut explanation) = match self.stages.get(self.stage) {
            Some(s) => (
                Action::SetCanaryWeight,
                ActionParams { canary_weight: Some(s.weight_percent), ..Default::default() },
                format!("stage-{}", self.stage),
                format!(
                    "canary {} stage {} of {total}: {} % of traffic",
                    self.version,
                    self.stage + 1,
                    s.weight_percent
                ),
            ),
            None => (
                Action::Promote,
                ActionParams::default(),
                "promote".to_owned(),
                format!("canary {} passed {total} stages: promote it", self.version),
            ),
        };
        let tag = if human.is_some() { format!("{tag}-human") } else { tag };
        if let Some(why) = &human {
            explanation = format!("{explanation}; {why}; a human decides whether to go on");
        }
        let proposal =
            self.proposal(action, params, &tag, explanation, STEP_CONFIDENCE, human.is_some(), now);
        self.set_in_flight(Phase::Proposed { proposal: proposal.clone() });
        vec![Effect::Propose(proposal)]
    }

    fn abort(&mut self, why: String, now: Timestamp) -> Vec<Effect> {
        let explanation = format!("abort canary {}: {why}", self.version);
        let proposal = self.proposal(
            Action::AbortRollout,
            ActionParams::default(),
            "abort",
            explanation,
            ABORT_CONFIDENCE,
            false,
            now,
        );
        self.set_in_flight(Phase::Aborting { proposal: proposal.clone(), why });
        vec![Effect::Propose(proposal)]
    }

    fn roll_back(&mut self, now: Timestamp) -> Vec<Effect> {
        let Some(stable) = self.stable_version.clone() else {
            return self.end_without_rollback(now);
        };
        let explanation = format!("roll back the aborted canary {} to {stable}", self.version);
        let params = ActionParams { target_version: Some(stable), ..Default::default() };
        let proposal = self.proposal(
            Action::Rollback,
            params,
            "rollback",
            explanation,
            ABORT_CONFIDENCE,
            false,
            now,
        );
        self.set_in_flight(Phase::RollingBack { proposal: proposal.clone() });
        vec![Effect::Propose(proposal)]
    }

    /// A new step in flight: it has not been held back yet.
    fn set_in_flight(&mut self, phase: Phase) {
        self.phase = phase;
        self.retries = 0;
        self.retry_at = None;
    }

    /// Traffic is at 0 but the canary stays deployed: the deploy failed.
    fn end_without_rollback(&mut self, now: Timestamp) -> Vec<Effect> {
        self.phase = Phase::Done { outcome: Outcome::Aborted };
        vec![Effect::Deploy(self.deploy_event(
            &self.version,
            self.stable_version.as_deref(),
            DeployStatus::Failed,
            now,
        ))]
    }

    #[allow(clippy::too_many_arguments)] // one place builds every proposal
    fn proposal(
        &self,
        action: Action,
        params: ActionParams,
        tag: &str,
        explanation: String,
        confidence: f64,
        require_human: bool,
        now: Timestamp,
    ) -> ActionProposal {
        ActionProposal {
            proposal_id: derive_id(&["rollout", &self.rollout_id.to_string(), tag]),
            incident_id: None,
            env: self.env.clone(),
            service: self.service.clone(),
            action,
            params,
            confidence,
            proposer: crate::NAME,
            explanation,
            candidates: Vec::new(),
            exploratory: false,
            require_human,
            proposed_at: now,
            // A rollout's next step is decided, not drawn.
            propensity: Some(1.0),
        }
    }

    fn proof(&self, kind: ProofKind, reason: &str, mut detail: Value) -> Effect {
        merge(&mut detail, json!({"rollout_id": self.rollout_id, "version": self.version}));
        Effect::Prove(Proof { kind, reason: reason.to_owned(), detail: detail.to_string() })
    }

    fn deploy_event(
        &self,
        version: &str,
        previous: Option<&str>,
        status: DeployStatus,
        now: Timestamp,
    ) -> DeployEvent {
        DeployEvent {
            service: self.service.clone(),
            env: self.env.clone(),
            version: version.to_owned(),
            previous_version: previous.map(str::to_owned),
            commit_sha: None,
            status,
            timestamp: now,
            deployment_id: Some(self.deployment_id.clone()),
        }
    }
}

/// The traffic stages a contract's canary plan asks for, as the rollout runs them: weights of
/// 1..=99 % that rise (100 % is the promotion; a weight of 0 or one that does not rise is
/// skipped, and said so), minimum durations of at most [`MAX_STAGE_DURATION_S`], and minimum
/// samples no more than a stage keeps ([`judge::MAX_STAGE_SAMPLES`]).
fn plan(canary: &[CanaryStage]) -> (Vec<CanaryStage>, Vec<u8>) {
    let (mut stages, mut skipped) = (Vec::<CanaryStage>::new(), Vec::new());
    for s in canary {
        let rises = stages.last().is_none_or(|last| s.weight_percent > last.weight_percent);
        if (1..=99).contains(&s.weight_percent) && rises {
            let min_samples = s.min_samples.min(judge::MAX_STAGE_SAMPLES as u32);
            stages.push(CanaryStage {
                weight_percent: s.weight_percent,
                min_duration_s: s.min_duration_s.min(MAX_STAGE_DURATION_S),
                min_samples,
            });
        } else if s.weight_percent != 100 {
            skipped.push(s.weight_percent);
        }
    }
    (stages, skipped)
}

/// The key of a service's rollout.
pub fn key(env: &Env, service: &ServiceName) -> String {
    format!("{env}/{service}")
}

/// One rollout per contract and started deploy (the same version deployed again after a
/// rollback is a new rollout; a redelivered deploy event is not).
pub fn rollout_id(contract: &Contract, deploy: &DeployEvent) -> Uuid {
    derive_id(&[
        "rollout",
        &contract.contract_id.to_string(),
        &deploy.version,
        &deploy.timestamp.to_string(),
    ])
}

/// Adds `extra`'s keys to `detail` (both objects).
fn merge(detail: &mut Value, extra: Value) {
    if let (Some(d), Value::Object(e)) = (detail.as_object_mut(), extra) {
        d.extend(e);
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
