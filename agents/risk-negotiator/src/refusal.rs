//! Why the negotiator says no: to a counter-proposal as a whole ([`CounterError`]) or to one of
//! its asks ([`AskRefusal`]). The message goes back to the developer as the reason.

use bus_schema::{ContractStatus, Env, RiskLevel, ServiceName, Uuid};
use risk_model::MIN_CONFIDENCE;

/// Why a counter-proposal cannot be negotiated at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CounterError {
    #[error(
        "the counter-proposal is for another contract; this is {contract_id} for {env}/{service}"
    )]
    OtherContract { contract_id: Uuid, env: Env, service: ServiceName },
    #[error("a justification is required: say why the contract should change")]
    NoJustification,
    #[error(
        "the contract was changed {changes} times, the most allowed: accept it or request a new one"
    )]
    TooManyRounds { changes: u32 },
    #[error("the contract is {status}: negotiation is closed")]
    Closed { status: ContractStatus },
}

/// Why one ask was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AskRefusal {
    #[error(
        "{level} risk with confidence {confidence:.2} (below {MIN_CONFIDENCE}): {what} needs more evidence; add targets and describe the changes"
    )]
    LowConfidence { level: RiskLevel, confidence: f64, what: &'static str },
    #[error("critical risk: the canary is non-negotiable")]
    CriticalCanary,
    #[error("high risk: the canary keeps all its stages")]
    HighRiskCanary,
    #[error("{level} risk: the canary needs at least {min} stages")]
    TooFewStages { level: RiskLevel, min: usize },
    #[error("{level} risk: only low-risk changes may skip the canary")]
    SkipNeedsLowRisk { level: RiskLevel },
    #[error("tests are never waived")]
    TestsNeverWaived,
    #[error("schema change: the rollback plan is non-negotiable")]
    SchemaRollbackPlan,
    #[error("the migration rollback script is non-negotiable: a schema change must be reversible")]
    MigrationRollbackScript,
    #[error("auth or permissions change: the security review is non-negotiable")]
    AuthSecurityReview,
    #[error("{level} risk: validators stay until the risk is lower")]
    ValidatorsStay { level: RiskLevel },
    #[error("this contract has no p99 guardrail to relax")]
    NoP99,
    #[error("the traffic step follows the canary plan: ask to shorten the canary instead")]
    TrafficStep,
    #[error(
        "unknown guardrail {0:?}; known: max_error_rate, max_p95_latency_ms, max_p99_latency_ms"
    )]
    UnknownGuardrail(String),
    #[error("{value} is not a usable limit for {guardrail}")]
    UnusableLimit { guardrail: String, value: f64 },
    #[error("{level} risk: guardrails are not relaxed")]
    NoRelaxing { level: RiskLevel },
    #[error(
        "{level} risk with confidence {confidence:.2}: {guardrail} may go up to {bound} (×{factor} of the drafted {base}, ceiling {ceiling}), not {value}"
    )]
    BeyondBound {
        level: RiskLevel,
        confidence: f64,
        guardrail: String,
        bound: f64,
        factor: f64,
        base: f64,
        ceiling: f64,
        value: f64,
    },
}
