//! Human approvals through `cnctl approvals`, against the real fleet and the project's NATS
//! permissions: a failed prod deploy makes governance ask a human about a rollback; the operator
//! lists it, shows it, and approves it; the decision is stored with who and why; the pipeline
//! user cannot decide, and unknown ids are errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::process::Output;
use std::time::Duration;

use async_nats::jetstream;
use bus_schema::codec::{Encoding, Limits, decode};
use bus_schema::proof::ProofKind;
use bus_schema::{Decision, Env, HumanDecision, PendingApproval, ServiceName, subject};
use cn_tests::fleet::Fleet;
use cn_tests::proof_log::of_kind;
use cn_tests::scenario::{cnctl, failed_prod_deploy};
use serde_json::{Value, json};

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_shows_and_approves_a_prod_rollback_and_only_the_operator_may_decide() {
    let fleet = Fleet::start().await.unwrap();
    for service in ["checkout", "cart"] {
        failed_prod_deploy(&fleet, service).await;
    }
    let records = fleet
        .records_until("both rollbacks to be held for a human", |r| {
            of_kind(r, ProofKind::ActionPendingApproval).len() >= 2
        })
        .await
        .unwrap();
    let pending_for = |service: &str| {
        of_kind(&records, ProofKind::ActionPendingApproval)
            .iter()
            .find(|r| r.service.as_ref().map(|s| s.as_str()) == Some(service))
            .unwrap()
            .proposal_id
            .unwrap()
            .to_string()
    };
    let (id, cart) = (pending_for("checkout"), pending_for("cart"));

    // The pending approval as governance stored it (the proof record is written just before).
    let (env, service): (Env, ServiceName) = ("prod".parse().unwrap(), "checkout".parse().unwrap());
    let work = jetstream::new(fleet.client_as("operator").await.unwrap())
        .get_stream("CN_WORK")
        .await
        .unwrap();
    let pending_subject = subject::PENDING.subject(&env, &service);
    let stored = cn_tests::eventually(Duration::from_secs(5), "the pending approval", || async {
        Ok(work.get_last_raw_message_by_subject(pending_subject.as_str()).await.ok())
    })
    .await
    .unwrap();
    let pending: PendingApproval =
        decode(Encoding::MsgPack, &stored.payload, &Limits::DEFAULT).unwrap();
    assert_eq!(pending.proposal.proposal_id.to_string(), id);

    let list = cnctl(&fleet, "operator", &["approvals", "list"], None);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{}", text(&list));
    assert!(
        listed.contains(&id) && listed.contains("prod/checkout") && listed.contains("rollback"),
        "{listed}"
    );
    assert!(
        listed.contains("expires in 1") && listed.contains(&format!("why: {}", pending.reason)),
        "{listed}"
    );

    let show = cnctl(&fleet, "operator", &["approvals", "show", &id[..8]], None);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{}", text(&show));
    assert!(shown.contains(&format!("proposal     {id}")), "{shown}");
    assert!(shown.contains(&format!("explanation  {}", pending.proposal.explanation)), "{shown}");
    assert!(
        shown.contains(&format!("expires      {} (in 1", pending.expires_at.millis())),
        "{shown}"
    );

    // Every decision records why: no --reason is bad usage, and nothing is sent.
    let no_reason = cnctl(&fleet, "operator", &["approvals", "deny", &id], None);
    assert_eq!(no_reason.status.code(), Some(64), "{}", text(&no_reason));
    assert!(
        String::from_utf8_lossy(&no_reason.stderr).contains("--reason"),
        "{}",
        text(&no_reason)
    );

    let approve = [
        "approvals",
        "approve",
        &id,
        "--reason",
        "checked dashboards",
        "--operator",
        "oncall-sre",
        "--wait",
        "1s",
    ];
    let approved = cnctl(&fleet, "operator", &approve, None);
    // Governance may or may not answer within the second (0: answered, 2: not yet).
    assert!(matches!(approved.status.code(), Some(0 | 2)), "{}", text(&approved));
    assert!(
        String::from_utf8_lossy(&approved.stdout).contains("stored on cn.approvals.prod.checkout"),
        "{}",
        text(&approved)
    );

    // The decision is stored in CN_WORK with who and why.
    let decision_subject = subject::HUMAN_DECISIONS.subject(&env, &service);
    let stored = work.get_last_raw_message_by_subject(decision_subject.as_str()).await.unwrap();
    let decision: HumanDecision =
        decode(Encoding::Json, &stored.payload, &Limits::DEFAULT).unwrap();
    assert_eq!(decision.proposal_id.to_string(), id);
    assert_eq!(decision.decision, Decision::Approve);
    assert_eq!(decision.operator, "oncall-sre");
    assert_eq!(decision.reason, "checked dashboards");
    assert_eq!(stored.headers.get("Cn-Type").map(|v| v.as_str()), Some("cn.v1.human_decision"));

    let answered = String::from_utf8_lossy(&approved.stdout).contains("\napproved: approval ");
    if approved.status.code() == Some(0) {
        // Governance answered: the request no longer waits, and `--all` tells how it ended.
        let open = cnctl(&fleet, "operator", &["approvals", "list"], None);
        assert!(!String::from_utf8_lossy(&open.stdout).contains(&id), "{}", text(&open));
        let all = cnctl(&fleet, "operator", &["approvals", "list", "--all", "--json"], None);
        let lines = String::from_utf8_lossy(&all.stdout).into_owned();
        let line: Value =
            serde_json::from_str(lines.lines().find(|l| l.contains(&id)).unwrap()).unwrap();
        assert_eq!(line["decision"]["operator"], "oncall-sre");
        assert_eq!(line["decision"]["reason"], "checked dashboards");
        if answered {
            assert_eq!(
                (&line["state"], &line["answer"]["approved_by"]),
                (&json!("approved"), &json!("oncall-sre")),
                "{line}"
            );
        }
    }

    // The pipeline user may not decide: a clear error, not a hang, and nothing stored.
    let intruder = cnctl(&fleet, "pipeline", &approve, None);
    assert_eq!(intruder.status.code(), Some(1), "{}", text(&intruder));
    let complaint = String::from_utf8_lossy(&intruder.stderr).to_lowercase();
    assert!(
        complaint.contains("permission") && complaint.contains("operator"),
        "{}",
        text(&intruder)
    );
    let last = work.get_last_raw_message_by_subject(decision_subject.as_str()).await.unwrap();
    assert_eq!(last.sequence, stored.sequence, "nothing new on {decision_subject}");

    // A second decision about the same proposal is refused before anything is sent.
    let again = cnctl(
        &fleet,
        "operator",
        &["approvals", "deny", &id, "--reason", "changed my mind", "--operator", "oncall-sre"],
        None,
    );
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(
        why.contains("already approved by oncall-sre")
            || why.contains("oncall-sre already sent `approve`"),
        "{}",
        text(&again)
    );

    // Unknown ids are errors.
    let unknown = cnctl(
        &fleet,
        "operator",
        &[
            "approvals",
            "approve",
            "00000000-0000-0000-0000-000000000000",
            "--reason",
            "x",
            "--operator",
            "o",
        ],
        None,
    );
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no approval was requested"),
        "{}",
        text(&unknown)
    );
    let unknown = cnctl(&fleet, "operator", &["approvals", "show", "ffffffff"], None);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));

    // A script denies with --json and reads governance's answer from one object. Without
    // --operator, $USER or $LOGNAME (a container's shell), the decision is the account's.
    let deny = ["approvals", "deny", &cart, "--reason", "fix forward", "--json"];
    let denied = cnctl(&fleet, "operator", &deny, None);
    assert!(denied.status.success(), "{}", text(&denied));
    let report: Value = serde_json::from_slice(&denied.stdout).unwrap();
    assert_eq!(report["proposal_id"], cart.as_str(), "{report:#}");
    assert_eq!(report["state"], "refused", "{report:#}");
    assert_eq!(report["answer"]["reason"], "approval_denied", "{report:#}");
    assert_eq!(report["decision"]["reason"], "fix forward", "{report:#}");
    let account = std::process::Command::new("id").arg("-un").output().unwrap();
    let account = String::from_utf8_lossy(&account.stdout).trim().to_owned();
    assert_eq!(report["decision"]["operator"], account.as_str(), "{report:#}");
    assert!(report["decision_stream_seq"].as_u64().unwrap() > 0, "{report:#}");
}
