//! Stable reason codes (docs/contract.md, Governance gates) and the reasons an input is rejected.
//!
//! Reason codes are matched by auditors and dashboards, so their strings never change.

use crate::string_enum::string_enum;

string_enum! {
    /// Why governance refused (or paused) an action, or why the executor refused an approval.
    pub enum ReasonCode {
        InvalidProposal = "invalid_proposal",
        UnknownSource = "unknown_source",
        GloballyBlocked = "globally_blocked",
        NotEligibleInEnv = "not_eligible_in_env",
        MissingPrerequisite = "missing_prerequisite",
        CooldownActive = "cooldown_active",
        RepetitionSuppressed = "repetition_suppressed",
        ActionBudgetExhausted = "action_budget_exhausted",
        LowConfidence = "low_confidence",
        SignalConflict = "signal_conflict",
        ErrorBudgetFreeze = "error_budget_freeze",
        /// Another action's verification is still pending on the service (extension): wait
        /// for its outcome, so that each outcome is credited to one action.
        VerificationPending = "verification_pending",
        /// Pending a human, not a final refusal.
        ApprovalRequired = "approval_required",
        ApprovalDenied = "approval_denied",
        ApprovalExpired = "approval_expired",
        // Executor refusals.
        BadSignature = "bad_signature",
        Expired = "expired",
        Replayed = "replayed",
        UnknownAction = "unknown_action",
    }
}

string_enum! {
    /// Why an input message was rejected (the `reason` of an `event_rejected` proof record).
    pub enum RejectReason {
        /// The payload is over the size limit.
        TooLarge = "too_large",
        /// A `Content-Type` other than JSON or MessagePack.
        UnsupportedContentType = "unsupported_content_type",
        /// Not parseable as JSON or MessagePack at all.
        Malformed = "malformed",
        /// Parseable, but a field has the wrong type, is missing, or is not a valid value.
        InvalidField = "invalid_field",
        /// A number outside its documented range.
        OutOfRange = "out_of_range",
        /// A text or list field over its size limit.
        FieldTooLarge = "field_too_large",
        /// The subject is not one of ours, or has an invalid token.
        InvalidSubject = "invalid_subject",
        /// The payload's env/service disagree with the subject's tokens.
        ScopeMismatch = "scope_mismatch",
        /// Stamped too far behind the newest event of its service to be judged in its window,
        /// or more than 120 s ahead of the clock when it arrived (every agent's input rule).
        OutOfOrder = "out_of_order",
        /// The agent could not process it after its bounded redeliveries.
        MaxDeliveriesExceeded = "max_deliveries_exceeded",
        /// The agent understood it and refuses to act on it.
        Refused = "refused",
    }
}
