//! The console's page in a real browser (headless Chromium over WebDriver) against the real
//! fleet: a crash loop a pipeline reports shows up as an open incident within 2 s; a failed
//! prod deploy shows up as a rollback waiting for a human; the operator types their name and a
//! reason and clicks Approve; governance approves it, the executor carries it out, and both the
//! page and the proof log show it. Screenshots go to `target/test-output/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::time::{Duration, Instant};

use bus_schema::proof::ProofKind;
use cn_tests::browser::{Browser, output_dir};
use cn_tests::console::Console;
use cn_tests::fleet::Fleet;
use cn_tests::scenario::{
    crash, deploy, failed_prod_deploy, for_service, http_request, pipeline_pub,
};
use serde_json::{Value, json};

/// Saves a screenshot and says where.
fn screenshot(browser: &Browser, name: &str) {
    let path = output_dir().unwrap().join(name);
    std::fs::write(&path, browser.screenshot().unwrap()).unwrap();
    println!("screenshot: {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_shows_within_2_s_and_a_prod_rollback_approved_on_the_page_is_executed() {
    let fleet = Fleet::start().await.unwrap();
    let token_file = fleet.console_token_file();
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    let args = ["--allow-decisions", "--decision-token-file", token_file.to_str().unwrap()];
    let console = Console::start(&fleet, "console", &args, &[]).unwrap();
    let browser = Browser::start(1400, 1600).unwrap();
    browser.goto(&console.url()).unwrap();
    browser
        .wait_for(
            "the live connection",
            Duration::from_secs(10),
            "return document.getElementById('conn').textContent.includes('live')",
        )
        .unwrap();
    assert_eq!(
        browser.eval("return document.getElementById('mode').textContent", json!([])).unwrap(),
        "decisions enabled"
    );

    // A crash loop: the page shows the incident within 2 s of the pipeline's event.
    let subject = "cn.events.deploy.stage.checkout";
    pipeline_pub(&fleet, subject, deploy("stage", "checkout", "2.0.0", Some("1.9.0"), "succeeded"))
        .await;
    let sent = Instant::now();
    pipeline_pub(&fleet, "cn.events.metric.stage.checkout", crash("stage", "checkout", true)).await;
    let shown = browser
        .wait_for(
            "the checkout incident",
            Duration::from_secs(10),
            "const c = document.querySelector('#incidents [data-service=\"checkout\"], #resolved [data-service=\"checkout\"]'); return c && c.textContent",
        )
        .unwrap();
    let took = sent.elapsed();
    println!("the page showed the incident {took:?} after the pipeline's event");
    assert!(took <= Duration::from_secs(2), "the incident showed after {took:?}");
    assert!(shown.as_str().unwrap().contains("crash_loop"), "{shown}");

    // Errors burn checkout's budget: its SLO card shows the burn (from cn.slo.> on CN_WORK,
    // which is all the console's user may read of it).
    let mut burning = crash("stage", "checkout", false);
    burning["error_rate"] = json!(0.3);
    burning["restarts"] = json!(0);
    pipeline_pub(&fleet, "cn.events.metric.stage.checkout", burning).await;
    let slo = browser
        .wait_for(
            "checkout's SLO card",
            Duration::from_secs(10),
            "const c = document.querySelector('[data-slo=\"stage/checkout\"]'); return c && c.textContent",
        )
        .unwrap();
    assert!(slo.as_str().unwrap().contains("budget left"), "{slo}");

    // A failed prod deploy: governance asks a human about the rollback; the page shows it.
    failed_prod_deploy(&fleet, "payments").await;
    let card = "#approvals [data-env=\"prod\"][data-service=\"payments\"]";
    let id = browser
        .wait_for(
            "the pending prod rollback",
            Duration::from_secs(30),
            &format!("const c = document.querySelector('{card}'); return c && c.textContent.includes('rollback') && c.dataset.proposalId"),
        )
        .unwrap();
    let id = id.as_str().unwrap().to_owned();

    // Reaching the port is not enough to decide: without the page's header (a cross-site
    // form cannot send it) or without the token, a decision is refused.
    let forged =
        json!({"proposal_id": id, "decision": "approve", "operator": "mallory", "reason": "x"});
    let bearer = format!("Bearer {token}");
    for (headers, status) in [
        (vec![("authorization", bearer.as_str())], "403"),
        (vec![("x-cn-console", "1")], "401"),
        (vec![("x-cn-console", "1"), ("authorization", "Bearer cn-not-the-token-0000")], "401"),
    ] {
        let answer =
            http_request(&console.addr, "POST", "/api/decisions", &headers, Some(&forged)).unwrap();
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{headers:?}: {answer}");
    }

    // The operator approves from the page, with their name and a reason.
    browser.type_into(&format!("{card} input.operator"), "ana (on call)").unwrap();
    browser.type_into(&format!("{card} input.token"), &token).unwrap();
    browser
        .type_into(&format!("{card} input.reason"), "1.15.0 failed in prod; back to 1.14.2")
        .unwrap();
    screenshot(&browser, "console-pending-rollback.png");
    browser.click(&format!("{card} button.approve")).unwrap();

    // Governance approves it, the executor carries it out: the page's proof log shows it …
    browser
        .wait_for(
            "the executed rollback on the page's proof log",
            Duration::from_secs(30),
            &format!("return !!document.querySelector('#log tr[data-kind=\"action_executed\"][data-proposal-id=\"{id}\"]')"),
        )
        .unwrap();
    let waiting: Value =
        browser.eval(&format!("return !!document.querySelector('{card}')"), json!([])).unwrap();
    assert_eq!(waiting, json!(false), "the approval is no longer waiting");
    screenshot(&browser, "console-rollback-executed.png");

    // … and so does the proof log itself: the human's decision, governance's signed approval
    // and the execution, all about this proposal.
    let records = fleet
        .records_until("the rollback to be executed", |r| {
            for_service(r, ProofKind::ActionExecuted, "payments")
                .iter()
                .any(|e| e.proposal_id.map(|p| p.to_string()).as_deref() == Some(id.as_str()))
        })
        .await
        .unwrap();
    let decision = for_service(&records, ProofKind::HumanDecision, "payments");
    let decision =
        decision.iter().find(|d| d.proposal_id.map(|p| p.to_string()) == Some(id.clone())).unwrap();
    assert_eq!(decision.detail["operator"], "ana (on call)", "{:?}", decision.detail);
    assert_eq!(decision.detail["decision"], "approve", "{:?}", decision.detail);
    let approved = for_service(&records, ProofKind::ActionApproved, "payments");
    assert!(
        approved.iter().any(|a| a.proposal_id.map(|p| p.to_string()) == Some(id.clone())),
        "governance approved it"
    );
}
