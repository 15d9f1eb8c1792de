//! How approvals read: tables, details, JSON lines and one-line answers.
//!
//! Text from the bus is shown with control and bidi characters escaped
//! (`bus_schema::display::escape`): what an approver reads is what the payload says.

use bus_schema::display::escape;

use super::*;

/// `45s`, `14m 58s`, `2h 05m`, `3d 04h`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The STATUS column.
pub fn status_text(a: &Approval, now: Timestamp) -> String {
    match a.state(now) {
        State::Waiting { expires_in } => format!("expires in {}", span(expires_in)),
        State::Expired { .. } => {
            "expired — governance will refuse it as approval_expired".to_owned()
        }
        State::Sent(s) => format!(
            "{} sent `{}`; governance has not answered yet",
            s.decision.operator, s.decision.decision
        ),
        State::Answered(Answer::Approved { approved_by, .. }) => {
            format!("approved by {approved_by}")
        }
        State::Answered(Answer::Refused { reason, .. }) => format!("refused: {reason}"),
    }
}

/// Governance's answer as one line.
pub fn answer_line(answer: &Answer) -> String {
    match answer {
        Answer::Approved { approval_id, approved_by, expires_at, .. } => {
            format!(
                "approved: approval {approval_id} signed, expires {} (approved by {approved_by})",
                expires_at.millis()
            )
        }
        Answer::Refused { reason, detail, .. } => format!("refused: {reason} {}", escape(detail)),
    }
}

/// The list as a table, each row followed by why it waits.
pub fn render_table(list: &[&Approval], now: Timestamp) -> String {
    let header = ["PROPOSAL", "ENV/SERVICE", "ACTION", "CONF", "REQUESTED"].map(str::to_owned);
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|a| {
            let p = &a.pending.proposal;
            [
                p.proposal_id.to_string(),
                format!("{}/{}", p.env, p.service),
                p.action.to_string(),
                format!("{:.2}", p.confidence),
                a.pending.requested_at.millis().to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String; 5], last: &str| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{:<w$}", escape(c))).collect();
        format!("{}  {}\n", padded.join("  "), escape(last))
    };
    let mut out = line(&header, "STATUS");
    for (a, row) in list.iter().zip(&rows) {
        out.push_str(&line(row, &status_text(a, now)));
        let incident =
            a.pending.proposal.incident_id.map(|i| format!(" · incident {i}")).unwrap_or_default();
        out.push_str(&format!("    why: {}{incident}\n", escape(&a.pending.reason)));
    }
    out
}

/// Everything about one approval, for `show`.
pub fn render_detail(a: &Approval, now: Timestamp) -> String {
    let p = &a.pending.proposal;
    let params = serde_json::to_string(&p.params).unwrap_or_default();
    let candidates: Vec<String> =
        p.candidates.iter().map(|c| format!("{}={:.2}", c.action, c.value)).collect();
    let expires = match a.state(now) {
        State::Waiting { expires_in } => {
            format!("{} (in {})", a.pending.expires_at.millis(), span(expires_in))
        }
        State::Expired { ago } => format!(
            "{} (expired {} ago — governance will refuse it as approval_expired)",
            a.pending.expires_at,
            span(ago)
        ),
        _ => a.pending.expires_at.millis().to_string(),
    };
    let decision = match &a.sent {
        Some(s) => format!(
            "{} sent `{}`{}: {:?}",
            s.decision.operator,
            s.decision.decision,
            s.at.map(|t| format!(" at {t}")).unwrap_or_default(),
            s.decision.reason
        ),
        None if a.answer.is_none() => {
            format!("none yet — cnctl approvals approve|deny {} --reason \"…\"", p.proposal_id)
        }
        None => "none from an operator".to_owned(),
    };
    let answer = match &a.answer {
        Some(Answer::Approved { approval_id, approved_by, issued_at, expires_at }) => {
            format!(
                "approved by {approved_by}: approval {approval_id} signed at {}, valid until {}",
                issued_at.millis(),
                expires_at.millis()
            )
        }
        Some(Answer::Refused { reason, detail, refused_at }) => {
            format!("refused at {}: {reason} {detail}", refused_at.millis())
        }
        None => "governance has not answered yet".to_owned(),
    };
    let rows = [
        ("proposal", p.proposal_id.to_string()),
        ("service", format!("{}/{}", p.env, p.service)),
        (
            "action",
            if params == "{}" { p.action.to_string() } else { format!("{} {params}", p.action) },
        ),
        (
            "confidence",
            format!("{:.2}{}", p.confidence, if p.exploratory { " (exploratory)" } else { "" }),
        ),
        ("proposer", format!("{} at {}", p.proposer, p.proposed_at.millis())),
        ("incident", p.incident_id.map_or_else(|| "none".to_owned(), |i| i.to_string())),
        ("explanation", p.explanation.clone()),
        (
            "candidates",
            if candidates.is_empty() { "none".to_owned() } else { candidates.join(" ") },
        ),
        ("waits for", format!("a human: {}", a.pending.reason)),
        ("requested", a.pending.requested_at.millis().to_string()),
        ("expires", expires),
        ("decision", decision),
        ("answer", answer),
    ];
    rows.iter().map(|(k, v)| format!("{k:<12} {}\n", escape(v))).collect()
}

/// One approval as JSON (a line of `list --json`, or `show --json`).
pub fn to_json(a: &Approval, now: Timestamp) -> Value {
    let p = &a.pending.proposal;
    let (state, expires_in_s) = match a.state(now) {
        State::Waiting { expires_in } => ("waiting", Some(expires_in.as_secs())),
        State::Expired { .. } => ("expired", None),
        State::Sent(_) => ("sent", None),
        State::Answered(Answer::Approved { .. }) => ("approved", None),
        State::Answered(Answer::Refused { .. }) => ("refused", None),
    };
    let decision = a.sent.as_ref().map(|s| json!({"decision": s.decision.decision, "operator": s.decision.operator, "reason": s.decision.reason, "sent_at": s.at}));
    let answer = a.answer.as_ref().map(|ans| match ans {
        Answer::Approved { approval_id, approved_by, issued_at, expires_at } => {
            json!({"outcome": "approved", "approval_id": approval_id, "approved_by": approved_by, "issued_at": issued_at, "expires_at": expires_at})
        }
        Answer::Refused { reason, detail, refused_at } => json!({"outcome": "refused", "reason": reason, "detail": detail, "refused_at": refused_at}),
    });
    json!({
        "proposal_id": p.proposal_id, "env": p.env, "service": p.service, "action": p.action, "state": state,
        "why": a.pending.reason, "requested_at": a.pending.requested_at, "expires_at": a.pending.expires_at,
        "expires_in_s": expires_in_s, "incident_id": p.incident_id, "decision": decision, "answer": answer, "proposal": p,
    })
}
