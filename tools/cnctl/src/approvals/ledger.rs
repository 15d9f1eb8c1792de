//! The pure core: matching pending requests with governance's answers by proposal id.

use super::*;

/// What governance answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Approved { approval_id: Uuid, approved_by: String, issued_at: Timestamp, expires_at: Timestamp },
    Refused { reason: ReasonCode, detail: String, refused_at: Timestamp },
}

/// A decision an operator sent, as stored on `cn.approvals.{env}.{service}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub decision: HumanDecision,
    /// When JetStream stored it.
    pub at: Option<Timestamp>,
}

/// One request for a human and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub pending: PendingApproval,
    /// The pending message's `Cn-Correlation-Id` and `Nats-Msg-Id`: a decision continues its chain.
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    /// The first decision sent (the one governance acts on).
    pub sent: Option<Sent>,
    /// Governance's final answer.
    pub answer: Option<Answer>,
}

/// Where an approval stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State<'a> {
    Waiting { expires_in: Duration },
    Expired { ago: Duration },
    Sent(&'a Sent),
    Answered(&'a Answer),
}

impl Approval {
    pub fn new(pending: PendingApproval) -> Self {
        Self { pending, correlation_id: None, causation_id: None, sent: None, answer: None }
    }

    pub fn id(&self) -> Uuid {
        self.pending.proposal.proposal_id
    }

    pub fn state(&self, now: Timestamp) -> State<'_> {
        match (&self.answer, &self.sent) {
            (Some(a), _) => State::Answered(a),
            (None, Some(s)) => State::Sent(s),
            (None, None) if now >= self.pending.expires_at => {
                State::Expired { ago: now.since(self.pending.expires_at) }
            }
            (None, None) => State::Waiting { expires_in: self.pending.expires_at.since(now) },
        }
    }

    /// The subject a decision about it goes to.
    pub fn decision_subject(&self) -> bus_schema::Subject<HumanDecision> {
        HUMAN_DECISIONS.subject(&self.pending.proposal.env, &self.pending.proposal.service)
    }
}

/// Which approvals to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    pub env: Option<Env>,
    pub service: Option<ServiceName>,
    pub all: bool,
}

/// Why an id does not name exactly one approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    NotAnId(String),
    Unknown(String),
    Ambiguous { id: String, matches: Vec<Uuid> },
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::NotAnId(id) => write!(
                f,
                "{id:?} is not a proposal id (a UUID, or at least {MIN_PREFIX} of its first characters)"
            ),
            LookupError::Unknown(id) => {
                write!(
                    f,
                    "no approval was requested for a proposal matching {id:?} (`cnctl approvals list --all` lists every one)"
                )
            }
            LookupError::Ambiguous { id, matches } => {
                let ids: Vec<String> = matches.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "{id:?} matches {} approvals ({}); give more characters",
                    ids.len(),
                    ids.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for LookupError {}

/// Every request for a human, matched with decisions and answers by proposal id.
///
/// Feed it the pending approvals first: decisions and answers about proposals it has not seen
/// are dropped, which keeps memory proportional to the requests, not to everything governance
/// ever approved.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    approvals: BTreeMap<Uuid, Approval>,
    /// Stored messages that could not be decoded.
    pub unreadable: u64,
}

impl Ledger {
    /// A request; a republished one (same proposal id) keeps the first.
    pub fn pending(&mut self, approval: Approval) {
        self.approvals.entry(approval.id()).or_insert(approval);
    }

    pub fn approved(&mut self, a: &SignedApproval) {
        let c = &a.claims;
        self.answer(
            c.proposal_id,
            Answer::Approved {
                approval_id: c.approval_id,
                approved_by: c.approved_by.clone(),
                issued_at: c.issued_at,
                expires_at: c.expires_at,
            },
        );
    }

    pub fn refused(&mut self, r: &Refusal) {
        // `approval_required` means "pending", never a final answer.
        if r.reason != ReasonCode::ApprovalRequired {
            self.answer(
                r.proposal_id,
                Answer::Refused {
                    reason: r.reason,
                    detail: r.detail.clone(),
                    refused_at: r.refused_at,
                },
            );
        }
    }

    fn answer(&mut self, id: Uuid, answer: Answer) {
        if let Some(a) = self.approvals.get_mut(&id) {
            a.answer.get_or_insert(answer);
        }
    }

    /// A decision stored on `subject`; governance ignores one sent to another service's subject.
    pub fn sent(&mut self, subject: &str, decision: HumanDecision, at: Option<Timestamp>) {
        let subject = bus_schema::subject::without_partition(subject).unwrap_or(subject);
        if let Some(a) = self.approvals.get_mut(&decision.proposal_id) {
            if a.decision_subject().as_str() == subject && a.sent.is_none() {
                a.sent = Some(Sent { decision, at });
            }
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<&Approval> {
        self.approvals.get(id)
    }

    /// The approval a full id or a unique prefix names (case-insensitive, with or without dashes).
    pub fn find(&self, id: &str) -> Result<&Approval, LookupError> {
        let wanted = id.trim().to_ascii_lowercase();
        let hex = wanted.chars().filter(|c| *c != '-').count();
        if hex < MIN_PREFIX || !wanted.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(LookupError::NotAnId(id.to_owned()));
        }
        let matches: Vec<&Approval> = self
            .approvals
            .values()
            .filter(|a| {
                let (dashed, plain) =
                    (a.id().hyphenated().to_string(), a.id().simple().to_string());
                dashed.starts_with(&wanted) || plain.starts_with(&wanted)
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(LookupError::Unknown(id.to_owned())),
            many => Err(LookupError::Ambiguous {
                id: id.to_owned(),
                matches: many.iter().map(|a| a.id()).collect(),
            }),
        }
    }

    /// What `list` shows: undecided ones soonest expiry first, then (with `all`) decided ones,
    /// newest request first.
    pub fn listed(&self, scope: &Scope, now: Timestamp) -> Vec<&Approval> {
        let in_scope = |a: &&Approval| {
            let p = &a.pending.proposal;
            scope.env.as_ref().is_none_or(|e| *e == p.env)
                && scope.service.as_ref().is_none_or(|s| *s == p.service)
        };
        let (mut open, mut decided): (Vec<&Approval>, Vec<&Approval>) = self
            .approvals
            .values()
            .filter(in_scope)
            .partition(|a| !matches!(a.state(now), State::Answered(_)));
        open.sort_by_key(|a| (a.pending.expires_at, a.id()));
        decided.sort_by_key(|a| (std::cmp::Reverse(a.pending.requested_at), a.id()));
        if scope.all {
            open.extend(decided);
        }
        open
    }
}

/// Why a decision about this approval must not be sent, if it must not.
pub fn why_not(a: &Approval, now: Timestamp) -> Option<String> {
    let id = a.id();
    match a.state(now) {
        State::Waiting { .. } => None,
        State::Answered(Answer::Approved { approved_by, approval_id, .. }) => Some(format!(
            "proposal {id} was already approved by {approved_by} (approval {approval_id}); nothing to decide"
        )),
        State::Answered(Answer::Refused { reason: ReasonCode::ApprovalExpired, .. }) => {
            Some(format!(
                "the request for proposal {id} expired and governance refused it as approval_expired; nothing to decide"
            ))
        }
        State::Answered(Answer::Refused { reason, detail, .. }) => {
            Some(format!("proposal {id} was already refused: {reason} {detail}"))
        }
        State::Sent(s) => Some(format!(
            "{} already sent `{}` for proposal {id}{} ({:?}); governance has not answered yet — check `cnctl approvals show {id}`",
            s.decision.operator,
            s.decision.decision,
            s.at.map(|t| format!(" at {t}")).unwrap_or_default(),
            s.decision.reason
        )),
        State::Expired { ago } => Some(format!(
            "the request for proposal {id} expired {} ago (at {}); governance will refuse it as approval_expired",
            span(ago),
            a.pending.expires_at
        )),
    }
}
