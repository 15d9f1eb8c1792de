use super::*;

fn record(agent: &str, seq: u64, kind: &str, age_s: u64, detail: Value) -> ProofRecord {
    serde_json::from_value(json!({
        "v": 1, "agent": agent, "instance": "0", "seq": seq,
        "ts": Timestamp::now().minus(Duration::from_secs(age_s)), "kind": kind,
        "env": "prod", "service": "payments", "action": "rollback",
        "proposal_id": "2f05cba9-9710-8229-8e68-39100bf2ca92",
        "prev_hash": "0".repeat(64), "detail": detail,
    }))
    .unwrap()
}

fn pending(seq: u64, age_s: u64, escalation: bool) -> ProofRecord {
    record(
        "governance-gate",
        seq,
        "action_pending_approval",
        age_s,
        json!({"why": "rollback in prod needs a human's approval", "escalation": escalation}),
    )
}

fn pending_until(seq: u64, age_s: u64, expires_in_s: i64) -> ProofRecord {
    let now = Timestamp::now();
    let at = if expires_in_s >= 0 {
        now.plus(Duration::from_secs(expires_in_s.unsigned_abs()))
    } else {
        now.minus(Duration::from_secs(expires_in_s.unsigned_abs()))
    };
    record("governance-gate", seq, "action_pending_approval", age_s, json!({"expires_at": at}))
}

fn notifier() -> (Notifier, mpsc::Receiver<Notice>) {
    let (tx, rx) = mpsc::channel(10);
    (Notifier::with_targets(vec![("slack:hooks.example".into(), tx)], "0".into()), rx)
}

fn drained(rx: &mut mpsc::Receiver<Notice>) -> Vec<(u64, &'static str)> {
    let mut out = Vec::new();
    while let Ok(n) = rx.try_recv() {
        out.push((n.record.seq, n.what));
    }
    out
}

#[test]
fn history_waits_for_the_logs_end_and_what_the_console_recorded_is_not_sent_again() {
    let (mut n, mut rx) = notifier();
    n.observe(&pending(3, 60, false));
    n.observe(&pending(4, 30, true));
    n.observe(&pending(5, 16 * 60, false)); // older than FRESH: history, not news
    let done = Notice { what: "approval_pending", record: pending(3, 60, false) }
        .key("slack:hooks.example");
    n.observe(&record("console", 1, "notification_sent", 50, json!({"key": done})));
    assert!(drained(&mut rx).is_empty(), "nothing goes out while history is read");
    n.caught_up();
    assert_eq!(drained(&mut rx), [(4, "escalation")]);
    n.observe(&pending(9, 0, false));
    assert_eq!(drained(&mut rx), [(9, "approval_pending")], "live records go out at once");
}

#[test]
fn another_consoles_records_do_not_count_as_done() {
    let (mut n, mut rx) = notifier();
    n.observe(&pending(3, 60, false));
    let key = Notice { what: "approval_pending", record: pending(3, 60, false) }
        .key("slack:hooks.example");
    let mut other = record("console", 1, "notification_sent", 50, json!({"key": key}));
    other.instance = "1".parse().unwrap();
    n.observe(&other);
    n.caught_up();
    assert_eq!(drained(&mut rx), [(3, "approval_pending")]);
}

#[test]
fn a_target_is_named_by_format_and_host_never_by_its_secret_path() {
    let t =
        Target::new("https://hooks.slack.com/services/T000/B000/SECRET", Format::Slack).unwrap();
    assert_eq!((t.name.as_str(), t.format), ("slack:hooks.slack.com", Format::Slack));
    let t = Target::new("http://127.0.0.1:8080/hook?token=x", Format::CloudEvents).unwrap();
    assert_eq!((t.name.as_str(), t.format), ("cloudevents:127.0.0.1:8080", Format::CloudEvents));
    let e = Target::new("ftp://example.com/x", Format::CloudEvents).unwrap_err().to_string();
    assert!(e.contains("http or https"), "{e}");
    let e = Target::new("not a url", Format::Slack).unwrap_err().to_string();
    assert!(e.contains("not a URL"), "{e}");
}

#[test]
fn the_slack_text_says_what_waits_why_until_when_and_how_to_decide() {
    let r = pending(3, 0, false);
    let mut r2 = r.clone();
    r2.detail["expires_at"] = json!("2026-12-06T15:00:00Z");
    let n = Notice { what: "approval_pending", record: r2 };
    let data = json!({"why": "rollback in prod needs a human's approval", "expires_at": "2026-12-06T15:00:00Z", "decide": "cnctl approvals approve|deny 2f05 --reason '…'", "console": "http://127.0.0.1:9464"});
    let text = slack_text(&n, &data);
    assert!(text.contains("rollback on prod/payments waits for your approval"), "{text}");
    assert!(text.contains("> rollback in prod needs a human's approval"), "{text}");
    assert!(text.contains("Expires at 2026-12-06T15:00:00Z"), "{text}");
    assert!(text.contains("cnctl approvals approve|deny"), "{text}");
    let n = Notice { what: "escalation", record: r };
    assert!(slack_text(&n, &json!({})).contains("Escalation on prod/payments"));
}

#[tokio::test]
async fn the_bucket_lets_a_minutes_worth_through_then_paces() {
    let mut b = Bucket::new(600);
    let start = tokio::time::Instant::now();
    for _ in 0..600 {
        b.take().await;
    }
    assert!(start.elapsed() < Duration::from_millis(50), "{:?}", start.elapsed());
    b.take().await;
    b.take().await;
    assert!(start.elapsed() >= Duration::from_millis(150), "{:?}", start.elapsed());
}

#[test]
fn a_request_is_news_while_it_has_not_expired() {
    let (mut n, mut rx) = notifier();
    n.observe(&pending_until(1, 40 * 60, 20 * 60)); // an hour-long TTL, asked 40 min ago
    n.observe(&pending_until(2, 20 * 60, -5 * 60)); // expired
    n.observe(&pending_until(3, 60, 14 * 60));
    n.caught_up();
    assert_eq!(drained(&mut rx).iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [1, 3]);
}

#[test]
fn a_request_decided_while_the_console_was_away_is_not_news() {
    for kind in ["human_decision", "action_approved", "action_refused"] {
        let (mut n, mut rx) = notifier();
        n.observe(&pending_until(3, 60, 14 * 60));
        n.observe(&record("governance-gate", 4, kind, 30, json!({})));
        n.caught_up();
        assert!(drained(&mut rx).is_empty(), "{kind}");
    }
}

#[test]
fn slack_text_from_the_bus_cannot_mention_or_link() {
    let n = Notice { what: "approval_pending", record: pending(3, 0, false) };
    let text = slack_text(&n, &json!({"why": "<!channel> see <https://evil|here> & more"}));
    assert!(text.contains("> &lt;!channel&gt; see &lt;https://evil|here&gt; &amp; more"), "{text}");
}

#[test]
fn a_bad_webhook_url_is_named_without_its_secrets() {
    let e = Target::new("ftp://user:hunter2@example.com/path/SECRET", Format::CloudEvents)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ftp://example.com/…") && !e.contains("hunter2") && !e.contains("SECRET"),
        "{e}"
    );
}
