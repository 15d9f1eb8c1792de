//! Canary rollouts through the real fleet and the simulator: a contract is drafted and accepted,
//! the pipeline starts the deploy, and the deploy agent walks the contract's canary plan
//! through governance and the executor's `sim` backend while the simulator serves the stable
//! and the canary version. Simulated time runs 60× faster than the wall clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::time::Duration;

use bus_schema::proof::{ProofKind, ProofRecord};
use bus_schema::{Action, ContractRequest, RiskLevel};
use cn_tests::fleet::Fleet;
use cn_tests::proof_log::StoredRecord;
use cn_tests::scenario::{cnctl, cnctl_spawn, for_service, pipeline_pub};
use serde_json::{Value, json};

/// A change the negotiator drafts as medium risk: 10 → 50 → 100 %, 2 min and 30 samples a
/// stage (the high-risk plan's four traffic steps would meet governance's repetition limit of
/// 3 in 5 min of wall-clock time at this speed, and wait for it).
fn request(service: &str) -> Value {
    json!({"deployment_id": format!("deploy-{service}"), "service": service, "env": "stage", "version": "2.0.0",
        "changes": [
            {"file_path": "src/handlers/search.rs", "change_type": "modify", "lines_changed": 120, "description": "New ranking behind the search API endpoint"},
            {"file_path": "src/handlers/ranking.rs", "change_type": "add", "lines_changed": 90, "description": "Cache the ranking weights"},
            {"file_path": "tests/ranking.rs", "change_type": "add", "lines_changed": 60, "description": "Ranking tests"}],
        "rollback_capability": true})
}

#[test]
fn the_request_drafts_a_medium_risk_contract_with_a_two_stage_canary() {
    let req: ContractRequest = serde_json::from_value(request("api")).unwrap();
    let c = risk_model::draft::draft_offline(&req, bus_schema::Timestamp::now());
    assert_eq!(c.risk.level, RiskLevel::Medium, "{:?}", c.risk);
    assert_eq!(c.canary.iter().map(|s| s.weight_percent).collect::<Vec<_>>(), [10, 50, 100]);
}

/// A fleet whose simulator runs `services` (TOML `[[service]]` tables) on stage, 5 s ticks.
async fn fleet_with(services: &str) -> Fleet {
    fleet_with_policy(services, None).await
}

/// Like [`fleet_with`], with governance reading `policy` (TOML) when given.
async fn fleet_with_policy(services: &str, policy: Option<&str>) -> Fleet {
    let scenario =
        std::env::temp_dir().join(format!("cn-canary-{}.toml", bus_schema::Uuid::new_v4()));
    std::fs::write(&scenario, format!("seed = 5\ntick_s = 5\nspeed = 60\n{services}")).unwrap();
    let scenario = scenario.to_string_lossy().into_owned();
    let policy_file = policy.map(|text| {
        let path = std::env::temp_dir()
            .join(format!("cn-canary-policy-{}.toml", bus_schema::Uuid::new_v4()));
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    });
    let sim: &[&str] = &["--scenario", &scenario, "--lead", "2h"];
    let governance: Vec<&str> =
        policy_file.iter().flat_map(|path| ["--policy", path.as_str()]).collect();
    let mut agents: Vec<(&str, &[&str])> =
        vec![("simulator", sim), ("executor", &["--backend", "sim"])];
    if !governance.is_empty() {
        agents.push(("governance-gate", &governance));
    }
    let fleet = Fleet::start_with(&agents).await.unwrap();
    std::fs::remove_file(&scenario).unwrap(); // read at start
    if let Some(path) = &policy_file {
        std::fs::remove_file(path).unwrap();
    }
    fleet
}

/// Drafts and accepts the contract for `service`, then starts its deploy as a pipeline would.
async fn start_rollout(fleet: &Fleet, service: &str) {
    let file = fleet.dir.path().join(format!("{service}-request.json"));
    std::fs::write(&file, request(service).to_string()).unwrap();
    // The ci user, as a pipeline job: `contract request` waits for the contract by reading
    // CN_WORK with a consumer of its own, without the operator's right to approve.
    let out = cnctl(fleet, "ci", &["contract", "request", file.to_str().unwrap(), "--json"], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let contract: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(contract["risk"]["level"], "medium", "{contract}");
    let id = contract["contract_id"].as_str().unwrap();
    let out = cnctl(
        fleet,
        "pipeline",
        &[
            "contract",
            "accept",
            id,
            "--env",
            "stage",
            "--service",
            service,
            "--requested-by",
            "dev-ana",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Stamped at the simulation's start, 2 h back, so the detector's event time for the
    // service is not pushed past the simulated samples.
    let at = bus_schema::Timestamp::now().minus(Duration::from_secs(7200));
    let deploy = json!({"service": service, "env": "stage", "version": "2.0.0", "previous_version": "1.1.0", "status": "started",
        "timestamp": at.to_string(), "deployment_id": format!("deploy-{service}")});
    pipeline_pub(fleet, &format!("cn.events.deploy.stage.{service}"), deploy).await;
}

/// The deploy agent's stage verdicts for a service: (stage, reason), in order.
fn verdicts(records: &[StoredRecord], service: &str) -> Vec<(u64, String)> {
    for_service(records, ProofKind::CanaryStage, service)
        .into_iter()
        .filter(|r| r.reason.as_deref() != Some("rollout_started"))
        .map(|r| (r.detail["stage"].as_u64().unwrap_or(0), r.reason.clone().unwrap_or_default()))
        .collect()
}

/// What the executor carried out for a service: (action, the canary weight the deploy agent
/// proposed), in order.
fn executed(records: &[StoredRecord], service: &str) -> Vec<(Action, Option<u64>)> {
    let proposed = for_service(records, ProofKind::ActionProposed, service);
    let weight = |r: &ProofRecord| {
        proposed
            .iter()
            .find(|p| p.proposal_id == r.proposal_id)
            .and_then(|p| p.detail["params"]["canary_weight"].as_u64())
    };
    for_service(records, ProofKind::ActionExecuted, service)
        .iter()
        .map(|r| (r.action.clone().unwrap(), weight(r)))
        .collect()
}

fn ended(records: &[StoredRecord], service: &str) -> bool {
    !for_service(records, ProofKind::CanaryPromoted, service).is_empty()
        || !for_service(records, ProofKind::CanaryAborted, service).is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_agent_killed_mid_rollout_resumes_at_its_stage_and_promotes() {
    let mut fleet = fleet_with("[[service]]\nenv = \"stage\"\nname = \"api\"\n").await;
    start_rollout(&fleet, "api").await;
    // Kill it as soon as the first stage passed: the 50 % step is proposed or under way.
    fleet
        .records_until("stage 1 to pass", |r| verdicts(r, "api").contains(&(1, "passed".into())))
        .await
        .unwrap();
    // An operator follows it live from here.
    let watch = ["rollout", "get", "--env", "stage", "--service", "api", "--watch"];
    let watcher = cnctl_spawn(&fleet, "operator", &watch);
    fleet.agent("deploy-agent").unwrap().kill9();
    tokio::time::sleep(Duration::from_secs(2)).await; // 2 simulated minutes go by
    fleet.agent("deploy-agent").unwrap().restart().unwrap();
    let records = fleet.records_until("the rollout to end", |r| ended(r, "api")).await.unwrap();

    // The watch ended with the rollout, promoted: the view as it stood, then each record.
    let watched = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&watched.stdout);
    assert!(watched.status.success(), "{text}{}", String::from_utf8_lossy(&watched.stderr));
    assert!(text.contains("Rollout   stage/api  2.0.0"), "{text}");
    assert!(text.lines().any(|l| l.contains(" canary_promoted stage/api")), "{text}");
    let shown = cnctl(
        &fleet,
        "auditor",
        &["rollout", "get", "--env", "stage", "--service", "api", "--json"],
        None,
    );
    let view: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(view["phase"], "promoted", "{view:#}");
    let statuses: Vec<&str> =
        view["stages"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["passed", "passed"], "{view:#}");

    assert_eq!(
        verdicts(&records, "api"),
        [(1, "passed".into()), (2, "passed".into())],
        "no stage repeated or skipped"
    );
    assert_eq!(
        for_service(&records, ProofKind::CanaryPromoted, "api").len(),
        1,
        "{}",
        fleet.logs()
    );
    assert_eq!(
        executed(&records, "api"),
        [
            (Action::SetCanaryWeight, Some(10)),
            (Action::SetCanaryWeight, Some(50)),
            (Action::Promote, None)
        ]
    );
    let starts = for_service(&records, ProofKind::CanaryStage, "api")
        .into_iter()
        .filter(|r| r.reason.as_deref() == Some("rollout_started"))
        .count();
    assert_eq!(starts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_with_three_times_the_errors_is_aborted_and_rolled_back_through_the_fleet() {
    let fleet =
        fleet_with("[[service]]\nenv = \"stage\"\nname = \"shop\"\ncanary_error_factor = 3.0\n")
            .await;
    start_rollout(&fleet, "shop").await;
    let records = fleet.records_until("the rollout to end", |r| ended(r, "shop")).await.unwrap();
    assert_eq!(verdicts(&records, "shop"), [(1, "failed".into())], "{}", fleet.logs());
    let failed = for_service(&records, ProofKind::CanaryStage, "shop")
        .into_iter()
        .find(|r| r.reason.as_deref() == Some("failed"))
        .unwrap();
    assert!(
        failed.detail["errors"]["comparison"]["p_value"].as_f64().unwrap() < 0.001,
        "{}",
        failed.detail
    );
    let records =
        fleet.records_until("the rollback", |r| executed(r, "shop").len() >= 3).await.unwrap();
    assert_eq!(
        executed(&records, "shop"),
        [
            (Action::SetCanaryWeight, Some(10)),
            (Action::AbortRollout, None),
            (Action::Rollback, None)
        ]
    );
    assert_eq!(
        for_service(&records, ProofKind::CanaryAborted, "shop")[0].reason.as_deref(),
        Some("aborted")
    );
    // The operator's view says so and why; a watch of an aborted rollout exits 1 at once.
    let get = ["rollout", "get", "--env", "stage", "--service", "shop", "--watch"];
    let shown = cnctl(&fleet, "operator", &get, None);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert_eq!(shown.status.code(), Some(1), "{text}{}", String::from_utf8_lossy(&shown.stderr));
    assert!(
        text.contains("Status    aborted") && text.contains("stage 1 at 10 % failed"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("1") && l.contains("failed")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_the_repetition_limit_holds_back_is_proposed_again_and_the_rollout_goes_on() {
    // One set_canary_weight per 20 s of wall-clock time: at 60× speed stage 1 passes within
    // seconds, so governance holds the 50 % step back; the deploy agent asks again after 30 s.
    let policy = "repetition_limit = 1\nrepetition_window = \"20s\"\n";
    let fleet =
        fleet_with_policy("[[service]]\nenv = \"stage\"\nname = \"pace\"\n", Some(policy)).await;
    start_rollout(&fleet, "pace").await;
    fleet
        .records_until("the 50 % step to be held back", |r| {
            verdicts(r, "pace").iter().any(|(_, v)| v == "retry_later")
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(25)).await; // most of the 30 s backoff
    let records = fleet.records_until("the rollout to end", |r| ended(r, "pace")).await.unwrap();
    assert_eq!(
        verdicts(&records, "pace"),
        [(1, "passed".into()), (2, "retry_later".into()), (2, "passed".into())],
        "{}",
        fleet.logs()
    );
    let refused = for_service(&records, ProofKind::ActionRefused, "pace");
    assert_eq!(
        refused.iter().map(|r| r.reason.as_deref()).collect::<Vec<_>>(),
        [Some("repetition_suppressed")]
    );
    let retry = for_service(&records, ProofKind::CanaryStage, "pace")
        .into_iter()
        .find(|r| r.reason.as_deref() == Some("retry_later"))
        .unwrap();
    assert_eq!(
        (retry.detail["attempt"].as_u64(), retry.detail["refusal"].as_str()),
        (Some(1), Some("repetition_suppressed")),
        "{}",
        retry.detail
    );
    assert_eq!(
        executed(&records, "pace"),
        [
            (Action::SetCanaryWeight, Some(10)),
            (Action::SetCanaryWeight, Some(50)),
            (Action::Promote, None)
        ]
    );
    assert_eq!(for_service(&records, ProofKind::CanaryPromoted, "pace").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_hears_nothing_is_put_to_a_human_whose_no_aborts_the_rollout() {
    // No simulator scenario: nothing reports the service's metrics. The executor runs dry.
    let fleet = Fleet::start_with(&[("deploy-agent", &["--canary-silence", "2s"])]).await.unwrap();
    let at = bus_schema::Timestamp::now().minus(Duration::from_secs(600)).to_string();
    for (version, previous) in [("1.0.0", None), ("1.1.0", Some("1.0.0"))] {
        let deploy = json!({"service": "quiet", "env": "stage", "version": version, "previous_version": previous, "status": "succeeded", "timestamp": at});
        pipeline_pub(&fleet, "cn.events.deploy.stage.quiet", deploy).await;
    }
    start_rollout(&fleet, "quiet").await;
    let records = fleet
        .records_until("the silent stage to reach a human", |r| {
            !for_service(r, ProofKind::ActionPendingApproval, "quiet").is_empty()
        })
        .await
        .unwrap();
    assert_eq!(verdicts(&records, "quiet"), [(1, "silent".into())]);
    let pending = for_service(&records, ProofKind::ActionPendingApproval, "quiet").remove(0);
    assert_eq!(
        pending.action,
        Some(Action::SetCanaryWeight),
        "the next step, put to a human although stage approves it alone"
    );

    let id = pending.proposal_id.unwrap().to_string();
    let deny = cnctl(
        &fleet,
        "operator",
        &[
            "approvals",
            "deny",
            &id,
            "--reason",
            "no metrics, no canary",
            "--operator",
            "oncall-sre",
        ],
        None,
    );
    assert!(matches!(deny.status.code(), Some(0 | 2)), "{}", String::from_utf8_lossy(&deny.stderr));
    let records = fleet
        .records_until("the abort", |r| {
            !for_service(r, ProofKind::CanaryAborted, "quiet").is_empty()
        })
        .await
        .unwrap();
    let proposed = for_service(&records, ProofKind::ActionProposed, "quiet");
    let abort = proposed.iter().find(|p| p.action == Some(Action::AbortRollout)).expect("an abort");
    assert!(
        abort.detail["explanation"]
            .as_str()
            .unwrap()
            .contains("a human denied set_canary_weight (approval_denied)"),
        "{}",
        abort.detail
    );
}

/// An operator cuts one rollout short with `cnctl rollout promote` and stops another with
/// `cnctl rollout abort`; each goes through governance and the executor like any step, and a
/// command about a service with no rollout is refused on the proof log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_promotes_one_rollout_early_and_aborts_another_through_governance() {
    let fleet = fleet_with(
        "[[service]]\nenv = \"stage\"\nname = \"early\"\n[[service]]\nenv = \"stage\"\nname = \"halt\"\n",
    )
    .await;
    start_rollout(&fleet, "early").await;
    start_rollout(&fleet, "halt").await;
    fleet
        .records_until("both canaries at 10 %", |r| {
            !executed(r, "early").is_empty() && !executed(r, "halt").is_empty()
        })
        .await
        .unwrap();
    let ask = |verb: &str, service: &str| {
        let args = ["rollout", verb, "--env", "stage", "--service", service];
        let out = cnctl(
            &fleet,
            "operator",
            &[&args[..], &["--reason", "seen enough", "--operator", "oncall"]].concat(),
            None,
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = ask("promote", "early");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("taken") && text.contains("rollout get --env stage --service early"),
        "{text}"
    );
    let (code, text) = ask("abort", "halt");
    assert_eq!(code, Some(0), "{text}");

    let records = fleet
        .records_until("both rollouts to end", |r| {
            ended(r, "early") && executed(r, "halt").len() >= 3
        })
        .await
        .unwrap();
    let early = executed(&records, "early");
    assert_eq!(early.last(), Some(&(Action::Promote, None)), "{early:?}");
    assert_eq!(for_service(&records, ProofKind::CanaryPromoted, "early").len(), 1);
    let promote = for_service(&records, ProofKind::ActionProposed, "early")
        .into_iter()
        .find(|p| p.action == Some(Action::Promote))
        .unwrap();
    assert!(
        promote.detail["explanation"]
            .as_str()
            .unwrap()
            .contains("oncall asked to promote: seen enough"),
        "{}",
        promote.detail
    );
    let halt = executed(&records, "halt");
    assert_eq!(
        &halt[halt.len() - 2..],
        [(Action::AbortRollout, None), (Action::Rollback, None)],
        "{halt:?}"
    );
    let aborted = for_service(&records, ProofKind::CanaryAborted, "halt");
    assert!(
        aborted[0].detail["why"].as_str().unwrap().contains("oncall asked to abort"),
        "{}",
        aborted[0].detail
    );

    // Once it ended there is nothing to command: cnctl says so before sending anything.
    let (code, text) = ask("abort", "early");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("has ended: promoted"), "{text}");
    // A command sent straight to the bus about a service without a rollout is refused and
    // recorded, not lost.
    let operator = fleet.client_as("operator").await.unwrap();
    let raw = json!({"service": "ghost", "env": "stage", "command": "abort", "operator": "oncall", "reason": "x"});
    operator.publish("cn.actions.rollout.stage.ghost", raw.to_string().into()).await.unwrap();
    operator.flush().await.unwrap();
    let records = fleet
        .records_until("the refusal", |r| {
            for_service(r, ProofKind::EventRejected, "ghost")
                .iter()
                .any(|x| x.agent.as_str() == "deploy-agent")
        })
        .await
        .unwrap();
    let refusal = &for_service(&records, ProofKind::EventRejected, "ghost")[0];
    assert_eq!(refusal.reason.as_deref(), Some("refused"));
    assert!(
        refusal.detail["error"].as_str().unwrap().contains("no rollout of stage/ghost"),
        "{}",
        refusal.detail
    );
}
