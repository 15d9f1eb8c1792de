use super::*;
use bus_schema::{Action, ActionParams, ActionProposal, ApprovalClaims, Candidate};

const T0: &str = "2026-11-22T10:00:00Z";

fn at(offset_s: u64) -> Timestamp {
    T0.parse::<Timestamp>().unwrap().plus(Duration::from_secs(offset_s))
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// A pending rollback of prod/checkout, requested at T0 + `requested`, for 15 minutes.
fn pending(n: u128, service: &str, requested: u64) -> Approval {
    let proposal = ActionProposal {
        proposal_id: id(n),
        incident_id: Some(id(0xabc)),
        env: "prod".parse().unwrap(),
        service: service.parse().unwrap(),
        action: Action::Rollback,
        params: ActionParams { target_version: Some("1.14.2".into()), ..Default::default() },
        confidence: 0.8,
        proposer: "rl-optimizer".parse().unwrap(),
        explanation: "deploy 1.15.0 failed; 1.14.2 was healthy".into(),
        candidates: vec![
            Candidate { action: Action::Rollback, value: 0.81 },
            Candidate { action: Action::Restart, value: 0.4 },
        ],
        exploratory: false,
        require_human: false,
        proposed_at: at(requested),
        propensity: None,
    };
    let reason = "rollback in prod needs a human".to_owned();
    Approval::new(PendingApproval {
        proposal,
        reason,
        requested_at: at(requested),
        expires_at: at(requested + 900),
    })
}

fn approval_of(n: u128, by: &str) -> SignedApproval {
    let claims = ApprovalClaims {
        approval_id: id(n + 1000),
        proposal_id: id(n),
        proposal_hash: "00".repeat(32),
        incident_id: None,
        env: "prod".parse().unwrap(),
        service: "checkout".parse().unwrap(),
        action: Action::Rollback,
        params: ActionParams::default(),
        approved_by: by.into(),
        issued_at: at(60),
        expires_at: at(360),
    };
    SignedApproval { claims, key_id: "k".into(), signature: "s".into() }
}

fn refusal_of(n: u128, reason: ReasonCode) -> Refusal {
    Refusal {
        proposal_id: id(n),
        incident_id: None,
        env: "prod".parse().unwrap(),
        service: "checkout".parse().unwrap(),
        action: Action::Rollback,
        reason,
        detail: "{\"operator\":\"sam\"}".into(),
        refused_at: at(70),
    }
}

fn decision(n: u128, d: Decision) -> HumanDecision {
    HumanDecision {
        proposal_id: id(n),
        decision: d,
        operator: "oncall-sre".into(),
        reason: "checked dashboards".into(),
    }
}

#[test]
fn requests_are_matched_with_their_answers_by_proposal_id() {
    let mut l = Ledger::default();
    for n in 1..=4 {
        l.pending(pending(n, "checkout", 0));
    }
    l.approved(&approval_of(1, "oncall-sre"));
    l.approved(&approval_of(99, "policy")); // an automatic approval: no request, dropped
    l.refused(&refusal_of(2, ReasonCode::ApprovalRequired)); // "pending", not an answer
    l.refused(&refusal_of(3, ReasonCode::ApprovalDenied));
    l.approved(&approval_of(3, "late")); // the first answer wins
    l.sent(&decisions_on("checkout"), decision(4, Decision::Approve), Some(at(30)));
    assert!(l.get(&id(99)).is_none());
    let now = at(60);
    assert!(
        matches!(l.get(&id(1)).unwrap().state(now), State::Answered(Answer::Approved { approved_by, .. }) if approved_by == "oncall-sre")
    );
    assert_eq!(
        l.get(&id(2)).unwrap().state(now),
        State::Waiting { expires_in: Duration::from_secs(840) }
    );
    assert!(matches!(
        l.get(&id(3)).unwrap().state(now),
        State::Answered(Answer::Refused { reason: ReasonCode::ApprovalDenied, .. })
    ));
    assert!(
        matches!(l.get(&id(4)).unwrap().state(now), State::Sent(s) if s.decision.operator == "oncall-sre")
    );
}

#[test]
fn a_decision_on_another_services_subject_does_not_count() {
    let mut l = Ledger::default();
    l.pending(pending(1, "checkout", 0));
    l.sent(&decisions_on("payments"), decision(1, Decision::Approve), None);
    assert!(l.get(&id(1)).unwrap().sent.is_none());
    l.sent(&decisions_on("checkout"), decision(1, Decision::Deny), None);
    l.sent(&decisions_on("checkout"), decision(1, Decision::Approve), None);
    assert_eq!(
        l.get(&id(1)).unwrap().sent.as_ref().unwrap().decision.decision,
        Decision::Deny,
        "the first one counts"
    );
}

#[test]
fn the_list_shows_open_requests_soonest_expiry_first_and_decided_ones_only_with_all() {
    let mut l = Ledger::default();
    l.pending(pending(1, "checkout", 300));
    l.pending(pending(2, "payments", 0));
    l.pending(pending(3, "checkout", 100));
    l.refused(&refusal_of(3, ReasonCode::ApprovalDenied));
    l.pending(pending(4, "search", 50));
    l.approved(&approval_of(4, "sam"));
    let now = at(200);
    let ids =
        |scope: &Scope| l.listed(scope, now).iter().map(|a| a.id().as_u128()).collect::<Vec<_>>();
    assert_eq!(ids(&Scope::default()), vec![2, 1]);
    assert_eq!(
        ids(&Scope { all: true, ..Scope::default() }),
        vec![2, 1, 3, 4],
        "decided: newest request first"
    );
    assert_eq!(
        ids(&Scope { service: Some("checkout".parse().unwrap()), all: true, ..Scope::default() }),
        vec![1, 3]
    );
    assert!(
        ids(&Scope { env: Some("stage".parse().unwrap()), all: true, ..Scope::default() })
            .is_empty()
    );
}

#[test]
fn an_id_may_be_a_unique_prefix() {
    let mut l = Ledger::default();
    for u in [0x1234_5678_u128 << 96, 0x1234_9999_u128 << 96, 0xabcd_0000_u128 << 96] {
        l.pending(pending(u, "checkout", 0));
    }
    let full = "abcd0000-0000-0000-0000-000000000000";
    assert_eq!(l.find(full).unwrap().id().to_string(), full);
    assert_eq!(l.find("ABCD").unwrap().id().to_string(), full, "case-insensitive");
    assert_eq!(l.find("12345678-00").unwrap().id().as_u128() >> 96, 0x1234_5678);
    assert_eq!(l.find("1234567800").unwrap().id().as_u128() >> 96, 0x1234_5678, "without dashes");
    assert!(
        matches!(l.find("1234"), Err(LookupError::Ambiguous { matches, .. }) if matches.len() == 2)
    );
    assert!(matches!(l.find("ffff"), Err(LookupError::Unknown(_))));
    assert!(matches!(l.find("abc"), Err(LookupError::NotAnId(_))), "too short");
    assert!(matches!(l.find("rollback"), Err(LookupError::NotAnId(_))));
    assert!(l.find("1234").unwrap_err().to_string().contains("give more characters"));
}

#[test]
fn expiry_reads_as_time_left_or_what_governance_will_do() {
    assert_eq!(span(Duration::from_secs(45)), "45s");
    assert_eq!(span(Duration::from_secs(898)), "14m 58s");
    assert_eq!(span(Duration::from_secs(7500)), "2h 05m");
    assert_eq!(span(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 04h");
    let a = pending(1, "checkout", 0);
    assert_eq!(status_text(&a, at(2)), "expires in 14m 58s");
    assert_eq!(status_text(&a, at(900)), "expired — governance will refuse it as approval_expired");
    assert!(why_not(&a, at(2)).is_none());
    assert!(why_not(&a, at(960)).unwrap().contains("expired 1m 00s ago (at 2026-11-22T10:15:00Z); governance will refuse it as approval_expired"));
}

#[test]
fn a_decided_request_cannot_be_decided_again_and_says_how_it_was_decided() {
    let mut l = Ledger::default();
    for n in 1..=3 {
        l.pending(pending(n, "checkout", 0));
    }
    l.approved(&approval_of(1, "sam"));
    l.refused(&refusal_of(2, ReasonCode::ApprovalExpired));
    l.sent(&decisions_on("checkout"), decision(3, Decision::Deny), Some(at(5)));
    let now = at(10);
    assert!(why_not(l.get(&id(1)).unwrap(), now).unwrap().contains("already approved by sam"));
    assert!(
        why_not(l.get(&id(2)).unwrap(), now).unwrap().contains("refused it as approval_expired")
    );
    let sent = why_not(l.get(&id(3)).unwrap(), now).unwrap();
    assert!(
        sent.contains("oncall-sre already sent `deny`")
            && sent.contains("governance has not answered yet"),
        "{sent}"
    );
}

#[test]
fn the_table_has_one_row_per_request_and_says_why_it_waits() {
    let mut l = Ledger::default();
    l.pending(pending(1, "checkout", 0));
    l.pending(pending(2, "payments-api", 0));
    l.refused(&refusal_of(2, ReasonCode::ApprovalDenied));
    let table = render_table(&l.listed(&Scope { all: true, ..Scope::default() }, at(2)), at(2));
    let expected = "\
PROPOSAL                              ENV/SERVICE        ACTION    CONF  REQUESTED                 STATUS
00000000-0000-0000-0000-000000000001  prod/checkout      rollback  0.80  2026-11-22T10:00:00.000Z  expires in 14m 58s
    why: rollback in prod needs a human · incident 00000000-0000-0000-0000-000000000abc
00000000-0000-0000-0000-000000000002  prod/payments-api  rollback  0.80  2026-11-22T10:00:00.000Z  refused: approval_denied
    why: rollback in prod needs a human · incident 00000000-0000-0000-0000-000000000abc
";
    assert_eq!(table, expected);
}

#[test]
fn show_and_json_carry_the_proposal_and_the_answer() {
    let mut l = Ledger::default();
    l.pending(pending(1, "checkout", 0));
    l.approved(&approval_of(1, "sam"));
    let a = l.get(&id(1)).unwrap();
    let text = render_detail(a, at(2));
    for part in [
        "action       rollback {\"target_version\":\"1.14.2\"}",
        "explanation  deploy 1.15.0 failed; 1.14.2 was healthy",
        "candidates   rollback=0.81 restart=0.40",
        "waits for    a human: rollback in prod needs a human",
        "answer       approved by sam: approval 00000000-0000-0000-0000-0000000003e9",
    ] {
        assert!(text.contains(part), "{part:?} in\n{text}");
    }
    let j = to_json(a, at(2));
    assert_eq!(j["state"], "approved");
    assert_eq!(j["answer"]["approved_by"], "sam");
    assert_eq!(j["proposal"]["params"]["target_version"], "1.14.2");
    assert_eq!(to_json(&pending(2, "checkout", 0), at(2))["expires_in_s"], 898);
}

#[test]
fn the_operator_is_the_flag_or_the_login_and_never_empty() {
    assert_eq!(
        operator_name(Some("oncall-sre".into()), Some("root".into())).unwrap(),
        "oncall-sre"
    );
    assert_eq!(operator_name(None, Some("alice".into())).unwrap(), "alice");
    assert!(operator_name(Some("  ".into()), None).unwrap_err().to_string().contains("--operator"));
    assert!(operator_name(None, None).is_err());
}

#[test]
fn answers_read_as_one_line() {
    let approved = Answer::Approved {
        approval_id: id(7),
        approved_by: "sam".into(),
        issued_at: at(0),
        expires_at: at(300),
    };
    assert_eq!(
        answer_line(&approved),
        "approved: approval 00000000-0000-0000-0000-000000000007 signed, expires 2026-11-22T10:05:00.000Z (approved by sam)"
    );
    let refused = Answer::Refused {
        reason: ReasonCode::ApprovalDenied,
        detail: "{\"operator\":\"sam\"}".into(),
        refused_at: at(0),
    };
    assert_eq!(answer_line(&refused), "refused: approval_denied {\"operator\":\"sam\"}");
}

/// The subject operators publish decisions about prod/`service` on.
fn decisions_on(service: &str) -> String {
    bus_schema::subject::HUMAN_DECISIONS
        .subject(&"prod".parse().unwrap(), &service.parse().unwrap())
        .as_str()
        .to_owned()
}
