//! The optimizer's pure core: incidents, outcomes, refusals and deploy events in; proposals
//! and what was learned out. The bus shell in `lib.rs` stores what changed ([`Core::take_dirty`])
//! before it publishes the [`Effect`]s, so a redelivered input republishes the same thing.
//!
//! An incident is an episode ([`crate::episode`]):
//! - **opened** (or reopened): the best allowed candidate is proposed ([`crate::decide`]);
//! - **judged not recovered**, or **came back** after a recovery: the next candidate, never
//!   one that already failed in this incident;
//! - **refused**: the action is masked for the rest of the incident and the next candidate is
//!   proposed at once — except `verification_pending` (another action's verdict on the
//!   service comes first: the incident waits for it, or for the refusal's `until`),
//!   `action_budget_exhausted` (escalated), `approval_denied` (a human said no: the incident
//!   is theirs), a first `missing_prerequisite` (governance has not read the deploy event
//!   the optimizer read: the same is proposed again after [`RECHECK`]), and a first
//!   `cooldown_active` that ends within [`COOLDOWN_WAIT`] (the same is proposed again when
//!   it ends: the best action a little later beats a worse one now);
//! - **budget spent** (the policy's `actions_per_incident` actions ran), or **nothing left**:
//!   escalated — a proposal that asks a human (`require_human`), saying what was tried and
//!   suggesting the best action left that the optimizer would choose itself, or `observe`
//!   when none is; governance holds it as a pending approval (`cnctl approvals list`). Nothing
//!   more is proposed automatically for it;
//! - **resolved**: the episode ends.
//!
//! Each outcome is learned from once, for the action it judges, in the context it was chosen
//! in; a revised outcome (the recovery did not hold) corrects what was learned; a superseded
//! one teaches nothing.

use std::collections::{BTreeMap, BTreeSet};

use bus_schema::{
    Action, ActionProposal, AgentName, Candidate, DeployEvent, Incident, IncidentStatus, Outcome,
    ReasonCode, Refusal, Timestamp, Uuid, derive_id,
};
use serde_json::json;

use crate::context::{Context, SplitMix64, seed_for};
use crate::decide::{self, Scored};
use crate::episode::{IncidentMemory, MAX_INCIDENTS, Proposed, Status, Waiting, to_forget};
pub use crate::episode::{Learned, PreferenceChange};
use crate::promotion::{self, EVALUATE_EVERY, Log, Logged, Promotion};
use crate::settings::{Mode, Settings};
use crate::shield::{self, ServiceFacts};
use crate::values::{Update, Values, does_nothing, reward};

/// How long after a first `missing_prerequisite` the same action is proposed again.
pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest cooldown the optimizer waits out for an action governance held back
/// (`cooldown_active`) rather than going on to the next candidate: the longest default one
/// (rollback's), so that a bad deploy back within minutes of its rollback is not given a
/// noop and a human with nothing to suggest. A longer one masks the action for the incident,
/// and so does a refusal after [`MAX_HOLDS`] waits.
pub const COOLDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// How often one action is held back and waited for in an incident: a cooldown can grow
/// while it is waited out (an outcome that doubles it arrives meanwhile), never without end.
pub const MAX_HOLDS: usize = 3;

/// The contract's limit on a proposal's explanation, in bytes.
const MAX_EXPLANATION: usize = 4096;

/// What the shell publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A proposal (in shadow mode: only its record).
    Propose(Box<Proposed>),
    /// An outcome was learned from and changed what this service would try first.
    Learned(Box<Learned>),
    /// The candidate learned in shadow replaced the running values (`--mode gated`).
    Promoted(Box<Promotion>),
}

impl Effect {
    /// The proposal, if this is one.
    pub fn into_proposal(self) -> Option<ActionProposal> {
        match self {
            Effect::Propose(p) => Some(p.proposal),
            Effect::Learned(_) | Effect::Promoted(_) => None,
        }
    }
}

/// What changed since the shell last stored.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Dirty {
    pub incidents: BTreeSet<Uuid>,
    pub forgotten: BTreeSet<Uuid>,
    pub rows: BTreeSet<String>,
    pub facts: BTreeSet<String>,
    /// Rows of the candidate (`--mode gated`).
    pub shadow_rows: BTreeSet<String>,
    /// The decision log changed.
    pub log: bool,
}

/// The optimizer without a bus.
#[derive(Debug, Clone)]
pub struct Core {
    pub settings: Settings,
    pub values: Values,
    pub memory: BTreeMap<Uuid, IncidentMemory>,
    pub facts: BTreeMap<String, ServiceFacts>,
    pub proposer: AgentName,
    /// `--mode gated`: the candidate outcomes teach, and the decisions it is judged on.
    pub shadow: Option<Values>,
    pub log: Log,
    dirty: Dirty,
}

/// `env/service`.
pub fn service_key(env: &str, service: &str) -> String {
    format!("{env}/{service}")
}

/// When the cooldown a `cooldown_active` refusal names ends, if within [`COOLDOWN_WAIT`]
/// (a second later, so that the proposal is not early on a clock a little behind).
fn cooldown_end(r: &Refusal, now: Timestamp) -> Option<Timestamp> {
    if r.reason != ReasonCode::CooldownActive {
        return None;
    }
    let detail: serde_json::Value = serde_json::from_str(&r.detail).ok()?;
    let remaining = detail["remaining_s"].as_f64().filter(|s| s.is_finite() && *s >= 0.0)?;
    let wait = std::time::Duration::from_secs_f64(remaining + 1.0);
    (wait <= COOLDOWN_WAIT).then(|| now.plus(wait))
}

fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_EXPLANATION);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl Core {
    pub fn new(settings: Settings, values: Values, proposer: AgentName) -> Self {
        Self {
            settings,
            values,
            memory: BTreeMap::new(),
            facts: BTreeMap::new(),
            proposer,
            shadow: None,
            log: Log::default(),
            dirty: Dirty::default(),
        }
    }

    /// What changed since the last call.
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    fn save(&mut self, mem: IncidentMemory) {
        let id = mem.incident.incident_id;
        self.memory.insert(id, mem);
        self.dirty.incidents.insert(id);
        for gone in to_forget(&self.memory, MAX_INCIDENTS) {
            self.memory.remove(&gone);
            self.dirty.incidents.remove(&gone);
            self.dirty.forgotten.insert(gone);
        }
    }

    /// A deploy event: what governance's prerequisites will be checked against.
    pub fn on_deploy(&mut self, d: &DeployEvent) {
        let key = service_key(d.env.as_str(), d.service.as_str());
        self.facts.entry(key.clone()).or_default().on_deploy(d);
        self.dirty.facts.insert(key);
    }

    /// Whether a deploy of the service has been read.
    pub fn knows_service(&self, env: &bus_schema::Env, service: &bus_schema::ServiceName) -> bool {
        self.facts.contains_key(&service_key(env.as_str(), service.as_str()))
    }

    /// An incident as the detector published it; `correlation_id` is its chain.
    pub fn on_incident(
        &mut self,
        incident: &Incident,
        correlation_id: &str,
        now: Timestamp,
    ) -> Vec<Effect> {
        let known = self.memory.get(&incident.incident_id).cloned();
        let first = known.is_none();
        let mut mem = known.unwrap_or_else(|| IncidentMemory::new(incident, correlation_id, now));
        mem.see(incident, now);
        match incident.status {
            IncidentStatus::Resolved => {
                mem.open = false;
                mem.waiting = None;
                self.save(mem);
                Vec::new()
            }
            // An update says nothing new to act on, unless this is the first we hear of it.
            IncidentStatus::Updated if !first => {
                self.save(mem);
                Vec::new()
            }
            IncidentStatus::Opened | IncidentStatus::Updated => {
                mem.open = true;
                self.next(mem, &format!("open:{}", incident.reopen_count), now)
            }
        }
    }

    /// An outcome: learned from once; if the incident is still open, the next candidate.
    pub fn on_outcome(&mut self, o: &Outcome, now: Timestamp) -> Vec<Effect> {
        let Some(proposal_id) = o.proposal_id else { return Vec::new() };
        let mut effects = Vec::new();
        if let Some(mut mem) = self.memory.get(&o.incident_id).cloned() {
            effects.extend(self.judge(&mut mem, proposal_id, o));
            let trigger = if o.revised {
                format!("revised:{proposal_id}")
            } else {
                format!("outcome:{proposal_id}")
            };
            let ours = mem.proposals.iter().any(|p| p.proposal.proposal_id == proposal_id);
            if !ours {
                // Another proposer's action: nothing of this episode changed.
            } else if o.recovered && !o.revised {
                self.save(mem);
            } else if !o.attributable() {
                // Another action ran meanwhile: its verdict comes first.
                let until = now.plus(self.settings.policy.verification_timeout);
                mem.waiting = Some(Waiting { held: proposal_id, until, until_only: false });
                self.save(mem);
            } else {
                effects.extend(self.next(mem, &trigger, now));
            }
        }
        // The service's verdict is in: incidents that waited for it go on.
        let (env, service) = (o.env.as_str(), o.service.as_str());
        let waiting: Vec<Uuid> = self
            .memory
            .values()
            .filter(|m| {
                m.waiting.as_ref().is_some_and(|w| !w.until_only)
                    && m.incident.incident_id != o.incident_id
                    && m.incident.env.as_str() == env
                    && m.incident.service.as_str() == service
            })
            .map(|m| m.incident.incident_id)
            .collect();
        for id in waiting {
            effects.extend(self.wake(id, &format!("wake:{proposal_id}"), now));
        }
        effects.extend(self.consider_promotion());
        effects
    }

    /// Notes what an outcome taught the candidate (`--mode gated`) and logs the decision.
    fn learned_in_shadow(&mut self, p: &mut Proposed, service: &str, u: Update, reward: f64) {
        self.dirty.shadow_rows.insert(u.key.clone());
        p.learned = Some(u);
        self.log_decision(p, service, reward);
    }

    /// Keeps a judged or refused proposal as a decision the candidate is evaluated on.
    fn log_decision(&mut self, p: &Proposed, service: &str, reward: f64) {
        if self.settings.mode != Mode::Gated || p.escalation {
            return;
        }
        if let Some(logged) = Logged::of(p, service, reward) {
            self.log.record(logged);
            self.dirty.log = true;
        }
    }

    /// Every [`EVALUATE_EVERY`] logged decisions: promotes the candidate if the logs show it
    /// is better (see [`crate::promotion`]).
    fn consider_promotion(&mut self) -> Option<Effect> {
        if self.settings.mode != Mode::Gated || self.log.since_evaluated < EVALUATE_EVERY {
            return None;
        }
        self.log.since_evaluated = 0;
        self.dirty.log = true;
        let shadow = self.shadow.as_ref()?;
        match promotion::consider(&self.log, &self.values, shadow, &self.settings.policy) {
            Ok(p) => {
                self.values = shadow.clone();
                self.dirty.rows.extend(self.values.rows().keys().cloned());
                self.log.promotions += 1;
                self.log.last = Some(serde_json::json!({
                    "promoted": true, "evidence": p.evidence, "changes": p.changes.len(),
                }));
                Some(Effect::Promoted(Box::new(p)))
            }
            Err(why) => {
                self.log.last = Some(serde_json::json!({
                    "promoted": false, "why": why, "decisions": self.log.decisions.len(),
                }));
                None
            }
        }
    }

    /// Records the verdict on one of our proposals and learns from it.
    fn judge(
        &mut self,
        mem: &mut IncidentMemory,
        proposal_id: Uuid,
        o: &Outcome,
    ) -> Option<Effect> {
        let service = service_key(mem.incident.env.as_str(), mem.incident.service.as_str());
        let incident = mem.incident.clone();
        let p = mem.find_mut(proposal_id)?;
        // The same verdict again (a redelivery after its record failed to be stored): the
        // record it owes, under the same key, rather than nothing.
        if let Some(owed) = p.unrecorded.as_ref().filter(|l| l.outcome.revised == o.revised) {
            return Some(Effect::Learned(owed.clone()));
        }
        if o.action != p.proposal.action {
            tracing::warn!(%proposal_id, outcome = %o.action, proposed = %p.proposal.action, "an outcome for another action than proposed; not learned from");
            return None;
        }
        let learns = self.settings.mode.learns();
        let ctx = p.context;
        let r = reward(&o.action, o.recovered, o.time_to_recover_s);
        let update = if !o.attributable() {
            p.status = Status::Superseded;
            None
        } else if o.revised {
            if p.status != (Status::Judged { recovered: true, revised: false }) {
                return None;
            }
            p.status = Status::Judged { recovered: false, revised: true };
            let earlier = p.learned.clone().filter(|_| learns)?;
            if self.settings.mode == Mode::Gated {
                let shadow = self.shadow.get_or_insert_with(|| self.values.clone());
                let u = shadow.correct(&service, &ctx, &earlier, r);
                self.learned_in_shadow(p, &service, u, r);
                return None;
            }
            let before = self.first_choice(&service, &ctx, &incident);
            let u = self.values.correct(&service, &ctx, &earlier, r);
            Some((before, u))
        } else {
            if p.status != Status::Awaiting && !matches!(p.status, Status::Refused(_)) {
                return None;
            }
            p.status = Status::Judged { recovered: o.recovered, revised: false };
            if !learns {
                return None;
            }
            if self.settings.mode == Mode::Gated {
                let shadow = self.shadow.get_or_insert_with(|| self.values.clone());
                let u = shadow.update(&service, &ctx, &o.action, r, o.recovered);
                self.learned_in_shadow(p, &service, u, r);
                return None;
            }
            let before = self.first_choice(&service, &ctx, &incident);
            let u = self.values.update(&service, &ctx, &o.action, r, o.recovered);
            Some((before, u))
        };
        let (before, u) = update?;
        p.learned = Some(u.clone());
        self.dirty.rows.insert(u.key.clone());
        let after = self.first_choice(&service, &ctx, &incident);
        let (Some(old), Some((new, values))) = (before.map(|(a, _)| a), after) else { return None };
        (old != new).then(|| {
            let change =
                PreferenceChange { state: u.key.clone(), old_best: old, new_best: new, values };
            let learned = Box::new(Learned { outcome: o.clone(), update: u, change });
            p.unrecorded = Some(learned.clone());
            Effect::Learned(learned)
        })
    }

    /// What the service of `incident` would be proposed first for a fresh incident like it.
    pub fn first_choice_for(&self, incident: &Incident) -> Option<Action> {
        let service = service_key(incident.env.as_str(), incident.service.as_str());
        self.first_choice(&service, &Context::of(incident), incident).map(|(a, _)| a)
    }

    /// What this service would try first for a fresh incident like `incident`, with every
    /// candidate's value.
    fn first_choice(
        &self,
        service: &str,
        ctx: &Context,
        incident: &Incident,
    ) -> Option<(Action, Vec<(Action, f64)>)> {
        let facts = self.facts.get(service);
        let candidates = shield::candidates(&self.settings.policy, incident, facts);
        let scored = decide::score(&self.values, service, ctx, &candidates);
        let values = scored.iter().map(|s| (s.action.clone(), s.estimate.value)).collect();
        let min = self.settings.policy.for_env(incident.env.as_str()).min_confidence;
        let choice = decide::greedy(ctx, scored, min)?;
        Some((choice.action, values))
    }

    /// A refusal of one of our proposals steers the next choice at once.
    pub fn on_refusal(&mut self, r: &Refusal, now: Timestamp) -> Vec<Effect> {
        let Some(incident_id) = r.incident_id else { return Vec::new() };
        let Some(mut mem) = self.memory.get(&incident_id).cloned() else { return Vec::new() };
        let service = service_key(mem.incident.env.as_str(), mem.incident.service.as_str());
        let trigger = format!("refused:{}", r.proposal_id);
        let cooldown_ends = cooldown_end(r, now).filter(|_| {
            let action = mem.proposals.iter().find(|p| p.proposal.proposal_id == r.proposal_id);
            action.is_some_and(|p| !p.escalation && mem.held_back(&p.proposal.action) < MAX_HOLDS)
        });
        let Some(p) = mem.find_mut(r.proposal_id) else { return Vec::new() };
        if p.status != Status::Awaiting {
            // A redelivery: what it made again, if anything.
            return mem
                .made_by(&trigger)
                .map(|p| vec![Effect::Propose(Box::new(p.clone()))])
                .unwrap_or_default();
        }
        p.status = Status::Refused(r.reason.as_str().to_owned());
        let escalation = p.escalation;
        let action = p.proposal.action.clone();
        if let Some(until) = cooldown_ends {
            p.status = Status::HeldBack(r.reason.as_str().to_owned());
            mem.waiting = Some(Waiting { held: r.proposal_id, until, until_only: true });
            self.save(mem);
            return Vec::new();
        }
        // A refusal is the decision's end (nothing done, nothing earned), unless it only
        // waits for another action's verdict.
        if r.reason != ReasonCode::VerificationPending {
            self.log_decision(p, &service, policy_eval::reward::REFUSED);
        }
        let promoted = self.consider_promotion();
        let mut effects = match r.reason {
            ReasonCode::VerificationPending => {
                let until = serde_json::from_str::<serde_json::Value>(&r.detail)
                    .ok()
                    .and_then(|d| d["until"].as_str().and_then(|t| t.parse::<Timestamp>().ok()))
                    .unwrap_or_else(|| now.plus(self.settings.policy.verification_timeout));
                mem.waiting = Some(Waiting { held: r.proposal_id, until, until_only: false });
                self.save(mem);
                Vec::new()
            }
            // A human said no: the incident is theirs now. Nobody said yes to an escalation:
            // it stays with the humans it was put to.
            ReasonCode::ApprovalDenied => {
                mem.human = true;
                self.save(mem);
                Vec::new()
            }
            ReasonCode::ApprovalExpired if escalation => {
                self.save(mem);
                Vec::new()
            }
            // A suggestion governance would not even put to a human: ask with observe instead.
            _ if escalation && action != Action::Observe => self.escalate(
                mem,
                &trigger,
                "the suggested action was refused".to_owned(),
                true,
                now,
            ),
            _ if escalation => {
                tracing::warn!(%incident_id, reason = %r.reason, "governance refused to put the incident to a human");
                self.save(mem);
                Vec::new()
            }
            // The shield offered it, so governance has not read what the optimizer read (a
            // deploy event): once, the same is proposed again a little later.
            ReasonCode::MissingPrerequisite if mem.missing_prerequisites(&action) == 1 => {
                let until = now.plus(RECHECK);
                mem.waiting = Some(Waiting { held: r.proposal_id, until, until_only: true });
                self.save(mem);
                Vec::new()
            }
            ReasonCode::ActionBudgetExhausted => {
                let why = format!(
                    "governance's budget of {} actions for the incident is spent",
                    self.settings.policy.actions_per_incident
                );
                self.escalate(mem, &trigger, why, false, now)
            }
            _ => self.next(mem, &trigger, now),
        };
        effects.extend(promoted);
        effects
    }

    /// Incidents whose wait for another verdict ran out by `now`, with the trigger to go on.
    pub fn due(&self, now: Timestamp) -> Vec<(Uuid, String)> {
        self.memory
            .values()
            .filter_map(|m| {
                m.waiting
                    .as_ref()
                    .filter(|w| w.until <= now && m.open)
                    .map(|w| (m.incident.incident_id, format!("due:{}", w.held)))
            })
            .collect()
    }

    /// Proposals made and not known to be stored (their publish failed, or its ack was not
    /// seen), still waiting for an answer on an open incident: `(incident, proposal)`, to send
    /// again with [`Core::resend`].
    pub fn unpublished(&self) -> Vec<(Uuid, Uuid)> {
        self.memory
            .values()
            .filter(|m| m.open)
            .flat_map(|m| {
                m.proposals
                    .iter()
                    .filter(|p| {
                        !p.published && matches!(p.status, Status::Awaiting | Status::Shadow)
                    })
                    .map(|p| (m.incident.incident_id, p.proposal.proposal_id))
            })
            .collect()
    }

    /// The same proposal again, if it is still not known to be stored.
    pub fn resend(&self, incident: Uuid, proposal_id: Uuid) -> Vec<Effect> {
        let proposal = self.memory.get(&incident).and_then(|m| {
            m.proposals.iter().find(|p| p.proposal.proposal_id == proposal_id && !p.published)
        });
        proposal.map(|p| vec![Effect::Propose(Box::new(p.clone()))]).unwrap_or_default()
    }

    /// Notes that the `policy_learned` record a proposal's verdict owed is stored.
    pub fn recorded(&mut self, incident: Uuid, proposal_id: Uuid) {
        self.change_proposal(incident, proposal_id, |p| p.unrecorded.take().is_some());
    }

    /// Notes that a proposal of `incident` (and its record) is stored.
    pub fn published(&mut self, incident: Uuid, proposal_id: Uuid) {
        self.change_proposal(incident, proposal_id, |p| !std::mem::replace(&mut p.published, true));
    }

    /// Applies `change` to one proposal and saves its incident when `change` says it changed
    /// something.
    fn change_proposal(
        &mut self,
        incident: Uuid,
        proposal_id: Uuid,
        change: impl FnOnce(&mut Proposed) -> bool,
    ) {
        let Some(mut mem) = self.memory.get(&incident).cloned() else { return };
        if mem.find_mut(proposal_id).is_some_and(change) {
            self.save(mem);
        }
    }

    /// Goes on with an incident that waited.
    pub fn wake(&mut self, incident_id: Uuid, trigger: &str, now: Timestamp) -> Vec<Effect> {
        let Some(mut mem) = self.memory.get(&incident_id).cloned() else { return Vec::new() };
        if let Some(p) = mem.made_by(trigger) {
            let again = vec![Effect::Propose(Box::new(p.clone()))];
            // A wait set again for a verdict this proposal already followed (a redelivered
            // outcome) is over too, or it would fall due on every tick.
            if mem.waiting.as_ref().is_some_and(|w| format!("due:{}", w.held) == trigger) {
                mem.waiting = None;
                self.save(mem);
            }
            return again;
        }
        if mem.waiting.take().is_none() {
            return Vec::new();
        }
        self.next(mem, trigger, now)
    }

    /// The next proposal of an episode, if it is this one's turn.
    fn next(&mut self, mut mem: IncidentMemory, trigger: &str, now: Timestamp) -> Vec<Effect> {
        if let Some(p) = mem.made_by(trigger) {
            return vec![Effect::Propose(Box::new(p.clone()))];
        }
        let shadow_follow_up = self.settings.mode == Mode::Shadow && !trigger.starts_with("open:");
        if !mem.open || mem.human || mem.awaiting().is_some() || shadow_follow_up {
            self.save(mem);
            return Vec::new();
        }
        mem.waiting = None;
        let budget = self.settings.policy.actions_per_incident;
        if mem.ran() >= budget {
            return self.escalate(
                mem,
                trigger,
                format!("the budget of {budget} actions for the incident is spent"),
                false,
                now,
            );
        }
        let incident = mem.incident.clone();
        let ctx = Context::of(&incident);
        let service = service_key(incident.env.as_str(), incident.service.as_str());
        let scored = self.scored(&mem, &service, &ctx);
        let n = mem.made + 1;
        let env = incident.env.as_str();
        let epsilon = if self.settings.mode.learns() {
            shield::epsilon_for(&self.settings.policy, self.settings.epsilon, env)
        } else {
            0.0
        };
        let min = self.settings.policy.for_env(env).min_confidence;
        let mut rng = SplitMix64::new(seed_for(incident.incident_id, n));
        match decide::choose(&ctx, scored, min, epsilon, &mut rng) {
            Some(choice) => {
                let options: Vec<_> = choice
                    .options
                    .iter()
                    .map(|(a, p)| json!({"action": a, "propensity": p}))
                    .collect();
                let detail = json!({"exploratory": choice.exploratory, "propensity": choice.propensity, "options": options});
                let p = self.proposal(
                    &mem,
                    &choice.action,
                    choice.confidence,
                    &choice.scored,
                    choice.explanation,
                    false,
                    now,
                );
                let p = ActionProposal {
                    exploratory: choice.exploratory,
                    propensity: Some(choice.propensity),
                    ..p
                };
                self.record(mem, p, ctx, trigger, &choice.scored, detail, None)
            }
            None => self.escalate(
                mem,
                trigger,
                "nothing the policy allows is left to try".to_owned(),
                false,
                now,
            ),
        }
    }

    /// The candidates not yet failed in this incident, scored.
    fn scored(&self, mem: &IncidentMemory, service: &str, ctx: &Context) -> Vec<Scored> {
        let failed = mem.failed();
        let candidates: Vec<Action> =
            shield::candidates(&self.settings.policy, &mem.incident, self.facts.get(service))
                .into_iter()
                .filter(|a| !failed.contains(a))
                .collect();
        decide::score(&self.values, service, ctx, &candidates)
    }

    /// Hands the incident to a human: what was tried, and the best action left (or observe).
    fn escalate(
        &mut self,
        mut mem: IncidentMemory,
        trigger: &str,
        why: String,
        observe_only: bool,
        now: Timestamp,
    ) -> Vec<Effect> {
        let incident = mem.incident.clone();
        let ctx = Context::of(&incident);
        let service = service_key(incident.env.as_str(), incident.service.as_str());
        let scored = self.scored(&mem, &service, &ctx);
        let env = self.settings.policy.for_env(incident.env.as_str());
        // Only what the optimizer itself would stand behind is suggested.
        let suggestion = scored
            .iter()
            .find(|s| {
                !does_nothing(&s.action) && !observe_only && decide::eligible(s, env.min_confidence)
            })
            .map(|s| (s.action.clone(), s.confidence));
        let (action, confidence) = match suggestion {
            Some(s) => s,
            None if env.automatic.contains(&Action::Observe)
                || env.human.contains(&Action::Observe) =>
            {
                (Action::Observe, 0.5)
            }
            None => {
                tracing::warn!(incident = %incident.incident_id, "nothing to put to a human: the policy allows not even observe here");
                mem.human = true;
                self.save(mem);
                return Vec::new();
            }
        };
        let tried = mem.tried();
        let next = if does_nothing(&action) {
            "nothing left to suggest; approving records that a human has taken over".to_owned()
        } else {
            format!("suggested next: {action}")
        };
        let explanation = format!(
            "escalating {} on {}/{} to a human: {why}; tried: {}; {next}",
            incident.kind,
            incident.env,
            incident.service,
            if tried.is_empty() { "nothing".to_owned() } else { tried.join(", ") },
        );
        let p = self.proposal(&mem, &action, confidence, &scored, explanation, true, now);
        let detail = json!({"exploratory": false, "propensity": 1.0, "escalation": {"why": why, "tried": tried}});
        mem.human = true;
        self.record(
            mem,
            ActionProposal { propensity: Some(1.0), ..p },
            ctx,
            trigger,
            &scored,
            detail,
            Some(()),
        )
    }

    #[allow(clippy::too_many_arguments)] // one place builds every proposal
    fn proposal(
        &self,
        mem: &IncidentMemory,
        action: &Action,
        confidence: f64,
        scored: &[Scored],
        explanation: String,
        require_human: bool,
        now: Timestamp,
    ) -> ActionProposal {
        let incident = &mem.incident;
        ActionProposal {
            proposal_id: derive_id(&[
                "proposal",
                &incident.incident_id.to_string(),
                &(mem.made + 1).to_string(),
            ]),
            incident_id: Some(incident.incident_id),
            env: incident.env.clone(),
            service: incident.service.clone(),
            action: action.clone(),
            params: Default::default(),
            confidence: confidence.clamp(0.0, 1.0),
            proposer: self.proposer.clone(),
            explanation: bounded(&explanation),
            candidates: scored
                .iter()
                .map(|s| Candidate { action: s.action.clone(), value: s.estimate.value })
                .collect(),
            exploratory: false,
            require_human,
            proposed_at: now,
            propensity: None,
        }
    }

    #[allow(clippy::too_many_arguments)] // one place records every proposal
    fn record(
        &mut self,
        mut mem: IncidentMemory,
        proposal: ActionProposal,
        ctx: Context,
        trigger: &str,
        scored: &[Scored],
        extra: serde_json::Value,
        escalation: Option<()>,
    ) -> Vec<Effect> {
        let shadow = self.settings.mode == Mode::Shadow;
        let candidates: Vec<_> = scored
            .iter()
            .map(|s| json!({"action": s.action, "value": s.estimate.value, "cure": s.estimate.cure, "confidence": s.confidence, "visits": s.estimate.visits}))
            .collect();
        let mut detail = json!({
            "confidence": proposal.confidence, "explanation": proposal.explanation, "incident_kind": mem.incident.kind,
            "state": ctx.key(), "candidates": candidates, "mode": self.settings.mode.as_str(), "shadow": shadow,
            "trigger": trigger, "require_human": proposal.require_human,
        });
        if let (Some(d), Some(e)) = (detail.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        let p = Proposed {
            proposal,
            trigger: trigger.to_owned(),
            context: ctx,
            status: if shadow { Status::Shadow } else { Status::Awaiting },
            escalation: escalation.is_some(),
            learned: None,
            detail: detail.to_string(),
            published: false,
            unrecorded: None,
        };
        mem.push(p.clone());
        self.save(mem);
        vec![Effect::Propose(Box::new(p))]
    }
}
