//! Negotiation: a developer asks to shorten or skip the canary, relax a guardrail or waive a
//! validator, with a justification; the negotiator decides each ask within bounds set by the
//! contract's risk level and confidence, and always says why.
//!
//! | ask | low | medium | high | critical |
//! |---|---|---|---|---|
//! | shorten canary | to ≥ 1 stage, confidence ≥ 0.6 | to ≥ 2 stages, confidence ≥ 0.6 | refused | refused (non-negotiable) |
//! | skip canary | confidence ≥ 0.6 | refused | refused | refused (non-negotiable) |
//! | relax error rate / p95 / p99 | up to ×1.5 | up to ×1.5 (×1.25 below confidence 0.6) | refused | refused |
//! | waive a negotiable validator | yes | confidence ≥ 0.6 | refused | refused |
//!
//! A confidence of 0.6 takes outcomes of similar deploys: the request alone gives at most 0.55
//! (see [`crate::draft`]).
//!
//! Every relax is bounded against the guardrail as drafted, not as last negotiated, so asks and
//! rounds do not compound (0.01 drafted may become at most 0.015, however it is asked for).
//! Absolute ceilings whatever the level: error rate 0.05, p95 5 000 ms, p99 10 000 ms.
//! Tightening a guardrail is always accepted. The traffic step follows the canary plan: ask to
//! shorten the canary instead.
//!
//! Never negotiable: tests; the canary of a critical contract; the rollback plan of a schema
//! change; the migration rollback script; the security review of an auth change; and the
//! error-budget freeze — while the budget is spent every ask (and acceptance) is refused and
//! the contract is rejected with `error_budget_freeze`, unless it is an urgent (security/P0)
//! fix.
//!
//! Accepted asks change the contract (revision + 1, status negotiated); refused ones change
//! nothing. The reply is `accepted` only if every ask was, and says why when it is not. A
//! counter with no asks accepts the contract (status accepted, see [`crate::lifecycle`]).
//! At most [`MAX_ROUNDS`] rounds may change a contract; refused and no-op rounds do not count,
//! and accepting is always possible.

use bus_schema::{
    Ask, AskDecision, Contract, ContractStatus, CounterProposal, Guardrails, NegotiationReply,
    ReasonCode, RiskLevel, Timestamp, ValidatorKind,
};
use serde::{Deserialize, Serialize};

use crate::draft::{ContractFacts, budget_spent, max_step};
use crate::lifecycle::{self, LifecycleEvent};
use crate::refusal::{AskRefusal, CounterError};

pub use risk_model::MIN_CONFIDENCE;
pub const RELAX_FACTOR: f64 = 1.5;
pub const RELAX_FACTOR_LOW_CONFIDENCE: f64 = 1.25;
pub const MAX_ERROR_RATE: f64 = 0.05;
pub const MAX_P95_MS: f64 = 5_000.0;
pub const MAX_P99_MS: f64 = 10_000.0;
/// Most rounds that change a contract (revisions after the draft).
pub const MAX_ROUNDS: u32 = 20;

/// What negotiation must know beyond the contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NegotiationFacts {
    pub touches_schema: bool,
    pub touches_auth: bool,
    /// The service's error budget is spent now.
    pub budget_frozen: bool,
    /// Tagged as a security or P0 fix: passes the freeze.
    pub urgent: bool,
    /// The guardrails as drafted: every relax is bounded against these.
    pub drafted: Guardrails,
}

impl NegotiationFacts {
    /// The stored facts of a contract, its drafted guardrails and the budget as known now.
    pub fn new(facts: &ContractFacts, drafted: &Guardrails, budget_remaining: Option<f64>) -> Self {
        NegotiationFacts {
            touches_schema: facts.touches_schema,
            touches_auth: facts.touches_auth,
            budget_frozen: budget_spent(budget_remaining),
            urgent: facts.urgent,
            drafted: drafted.clone(),
        }
    }
}

/// Checks that a counter-proposal can be negotiated at all; the error says why not.
pub fn check_counter(contract: &Contract, counter: &CounterProposal) -> Result<(), CounterError> {
    if counter.contract_id != contract.contract_id
        || counter.env != contract.env
        || counter.service != contract.service
    {
        return Err(CounterError::OtherContract {
            contract_id: contract.contract_id,
            env: contract.env.clone(),
            service: contract.service.clone(),
        });
    }
    if !counter.asks.is_empty() && counter.justification.trim().is_empty() {
        return Err(CounterError::NoJustification);
    }
    let changes = contract.revision.saturating_sub(1);
    if !counter.asks.is_empty() && changes >= MAX_ROUNDS {
        return Err(CounterError::TooManyRounds { changes });
    }
    if !matches!(contract.status, ContractStatus::Draft | ContractStatus::Negotiated) {
        return Err(CounterError::Closed { status: contract.status });
    }
    Ok(())
}

pub fn negotiate(
    contract: &Contract,
    counter: &CounterProposal,
    facts: &NegotiationFacts,
    round: u32,
    now: Timestamp,
) -> (NegotiationReply, Contract) {
    let reply =
        |accepted: bool, decisions, changed: Option<&Contract>, reason: &str| NegotiationReply {
            contract_id: contract.contract_id,
            round,
            accepted,
            decisions,
            contract: changed.cloned(),
            reason: (!accepted).then(|| reason.chars().take(1000).collect()),
        };
    let refuse_all = |reason: &str| -> Vec<AskDecision> {
        counter
            .asks
            .iter()
            .map(|ask| AskDecision { ask: ask.clone(), accepted: false, reason: reason.to_owned() })
            .collect()
    };
    if let Err(why) = check_counter(contract, counter) {
        let why = why.to_string();
        return (reply(false, refuse_all(&why), None, &why), contract.clone());
    }
    if facts.budget_frozen && !facts.urgent {
        let why = &format!(
            "{}: the service's error budget is spent, so nothing is negotiable until it recovers (security and P0 fixes are exempt)",
            ReasonCode::ErrorBudgetFreeze
        );
        return match lifecycle::apply(contract, LifecycleEvent::Freeze, now)
            .ok()
            .and_then(|mut v| v.pop())
        {
            Some(rejected) => (reply(false, refuse_all(why), Some(&rejected), why), rejected),
            None => (reply(false, refuse_all(why), None, why), contract.clone()),
        };
    }
    if counter.asks.is_empty() {
        return match lifecycle::apply(contract, LifecycleEvent::Accepted, now).map(|mut v| v.pop())
        {
            Ok(Some(accepted)) => (reply(true, Vec::new(), Some(&accepted), ""), accepted),
            Ok(None) => (
                reply(false, Vec::new(), None, "the contract cannot be accepted"),
                contract.clone(),
            ),
            Err(refused) => (
                reply(false, Vec::new(), None, &format!("cannot accept: {refused}")),
                contract.clone(),
            ),
        };
    }
    let mut working = contract.clone();
    let mut changed = false;
    let mut decisions = Vec::new();
    for ask in &counter.asks {
        let (accepted, reason) = match decide(&mut working, ask, facts) {
            Ok(Change::Applied(why)) => {
                changed = true;
                (true, why)
            }
            Ok(Change::Nothing(why)) => (true, why),
            Err(why) => (false, why.to_string()),
        };
        decisions.push(AskDecision { ask: ask.clone(), accepted, reason });
    }
    let all = decisions.iter().all(|d| d.accepted);
    let refused: Vec<&str> =
        decisions.iter().filter(|d| !d.accepted).map(|d| d.reason.as_str()).collect();
    let partly =
        format!("{} of {} asks refused: {}", refused.len(), decisions.len(), refused.join("; "));
    if !changed {
        return (reply(all, decisions, None, &partly), contract.clone());
    }
    let why: String =
        format!("negotiated with {}: {}", counter.requested_by, counter.justification.trim())
            .chars()
            .take(500)
            .collect();
    match lifecycle::revise(contract, working, &why, now) {
        Ok(revised) => (reply(all, decisions, Some(&revised), &partly), revised),
        Err(refused) => {
            (reply(false, refuse_all(&refused.reason), None, &refused.reason), contract.clone())
        }
    }
}

enum Change {
    Applied(String),
    Nothing(String),
}

/// The confidence rule shared by canary and validator asks.
fn confident(c: &Contract, what: &'static str) -> Result<(), AskRefusal> {
    if c.risk.confidence >= MIN_CONFIDENCE {
        Ok(())
    } else {
        Err(AskRefusal::LowConfidence { level: c.risk.level, confidence: c.risk.confidence, what })
    }
}

fn decide(c: &mut Contract, ask: &Ask, facts: &NegotiationFacts) -> Result<Change, AskRefusal> {
    let level = c.risk.level;
    match ask {
        Ask::ShortenCanary { stages } => {
            let (stages, current) = (usize::from(*stages), c.canary.len());
            if stages >= current {
                return Ok(Change::Nothing(format!("the canary already has {current} stages")));
            }
            let min = match level {
                RiskLevel::Critical => return Err(AskRefusal::CriticalCanary),
                RiskLevel::High => return Err(AskRefusal::HighRiskCanary),
                RiskLevel::Medium => 2,
                RiskLevel::Low => 1,
            };
            if stages < min {
                return Err(AskRefusal::TooFewStages { level, min });
            }
            confident(c, "a shorter canary")?;
            c.canary = (0..stages)
                .map(|i| if stages == 1 { current - 1 } else { i * (current - 1) / (stages - 1) })
                .filter_map(|i| c.canary.get(i).cloned())
                .collect();
            c.guardrails.max_traffic_step_percent = max_step(&c.canary);
            Ok(Change::Applied(format!(
                "{level} risk with confidence {:.2}: canary shortened to {stages} stages",
                c.risk.confidence
            )))
        }
        Ask::SkipCanary => {
            match level {
                RiskLevel::Critical => return Err(AskRefusal::CriticalCanary),
                RiskLevel::High | RiskLevel::Medium => {
                    return Err(AskRefusal::SkipNeedsLowRisk { level });
                }
                RiskLevel::Low => confident(c, "skipping the canary")?,
            }
            c.canary.clear();
            c.guardrails.max_traffic_step_percent = max_step(&c.canary);
            Ok(Change::Applied(format!(
                "low risk with confidence {:.2}: the canary is skipped; guardrails still apply",
                c.risk.confidence
            )))
        }
        Ask::RelaxGuardrail { guardrail, value } => relax(c, &facts.drafted, guardrail, *value),
        Ask::WaiveValidator { validator } => {
            let non_negotiable = match validator {
                ValidatorKind::Tests => Some(AskRefusal::TestsNeverWaived),
                ValidatorKind::Canary if level == RiskLevel::Critical => {
                    Some(AskRefusal::CriticalCanary)
                }
                ValidatorKind::RollbackPlan if facts.touches_schema => {
                    Some(AskRefusal::SchemaRollbackPlan)
                }
                ValidatorKind::MigrationRollbackScript => Some(AskRefusal::MigrationRollbackScript),
                ValidatorKind::SecurityReview if facts.touches_auth => {
                    Some(AskRefusal::AuthSecurityReview)
                }
                _ => None,
            };
            if let Some(why) = non_negotiable {
                return Err(why);
            }
            if !c.validators.iter().any(|v| v.kind == *validator) {
                return Ok(Change::Nothing(format!(
                    "{validator} is not required by this contract: nothing to waive"
                )));
            }
            match level {
                RiskLevel::High | RiskLevel::Critical => {
                    return Err(AskRefusal::ValidatorsStay { level });
                }
                RiskLevel::Medium => confident(c, "waiving a validator")?,
                RiskLevel::Low => {}
            }
            c.validators.retain(|v| v.kind != *validator);
            Ok(Change::Applied(format!(
                "{level} risk with confidence {:.2}: {validator} waived",
                c.risk.confidence
            )))
        }
    }
}

/// Relaxes or tightens one guardrail; a relax is bounded against the `drafted` value.
fn relax(
    c: &mut Contract,
    drafted: &Guardrails,
    guardrail: &str,
    value: f64,
) -> Result<Change, AskRefusal> {
    let g = &mut c.guardrails;
    let (slot, ceiling, base): (&mut f64, f64, f64) = match guardrail {
        "max_error_rate" => (&mut g.max_error_rate, MAX_ERROR_RATE, drafted.max_error_rate),
        "max_p95_latency_ms" => (&mut g.max_p95_latency_ms, MAX_P95_MS, drafted.max_p95_latency_ms),
        "max_p99_latency_ms" => match g.max_p99_latency_ms.as_mut() {
            Some(p99) => {
                let base = drafted.max_p99_latency_ms.unwrap_or(*p99);
                (p99, MAX_P99_MS, base)
            }
            None => return Err(AskRefusal::NoP99),
        },
        "max_traffic_step_percent" => return Err(AskRefusal::TrafficStep),
        other => return Err(AskRefusal::UnknownGuardrail(other.to_owned())),
    };
    if !value.is_finite() || value <= 0.0 {
        return Err(AskRefusal::UnusableLimit { guardrail: guardrail.to_owned(), value });
    }
    let current = *slot;
    if value <= current {
        *slot = value;
        return Ok(Change::Applied(format!("{guardrail} tightened to {value}: always welcome")));
    }
    let factor = match c.risk.level {
        RiskLevel::High | RiskLevel::Critical => {
            return Err(AskRefusal::NoRelaxing { level: c.risk.level });
        }
        RiskLevel::Medium if c.risk.confidence < MIN_CONFIDENCE => RELAX_FACTOR_LOW_CONFIDENCE,
        _ => RELAX_FACTOR,
    };
    let bound = (base * factor).min(ceiling);
    if value > bound {
        return Err(AskRefusal::BeyondBound {
            level: c.risk.level,
            confidence: c.risk.confidence,
            guardrail: guardrail.to_owned(),
            bound,
            factor,
            base,
            ceiling,
            value,
        });
    }
    *slot = value;
    Ok(Change::Applied(format!(
        "{} risk: {guardrail} relaxed from {current} to {value}, within ×{factor} of the drafted {base}",
        c.risk.level
    )))
}

#[cfg(test)]
#[path = "negotiate_tests.rs"]
mod tests;
