//! What a newcomer types in the first hour, run as they would run it: the real cnctl binary
//! against a real fleet. Each test is a defect found by trying the README as a new user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::process::{Command, Stdio};

use bus_schema::proof::ProofKind;
use cn_tests::fleet::{Fleet, binary};
use cn_tests::proof_log::of_kind;

/// cnctl as a user runs it: the connection only from the flags given, none from the caller's
/// environment.
fn cnctl(args: &[&str]) -> Command {
    let mut c = Command::new(binary("cnctl").unwrap());
    c.args(args)
        .env_remove("NATS_URL")
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD")
        .env_remove("NATS_PASSWORD_FILE");
    c
}

/// `scripts/up` prints a publish command with the connection flags after the subcommand, and
/// the README shows `cnctl approvals list` the same way; both used to fail with "unexpected
/// argument '--nats-url'" (exit 64), since `publish`, `approvals` and `contract` took them only
/// before it. Now they go on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flags_go_before_or_after_the_subcommand() {
    let fleet = Fleet::start().await.unwrap();
    let url = fleet.server.url();
    let pipeline = fleet.password_file("pipeline").to_string_lossy().into_owned();
    let operator = fleet.password_file("operator").to_string_lossy().into_owned();
    let conn = ["--nats-url", &url, "--nats-user", "pipeline", "--nats-password-file", &pipeline];
    let crash = |service| ["--env", "stage", "--service", service, "--crash-looping"];
    let after = [&["publish", "metric"][..], &conn, &crash("payments-api")].concat();
    let before = [&["publish"][..], &conn, &["metric"], &crash("checkout")].concat();
    for args in [after, before] {
        let out = cnctl(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    for args in [
        ["approvals", "list", "--nats-url", &url, "--nats-user", "operator"],
        ["approvals", "--nats-url", &url, "--nats-user", "operator", "list"],
    ] {
        let out = cnctl(&args).args(["--nats-password-file", &operator]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Both crashes reached the fleet.
    let records = fleet
        .records_until("both crashes opened as incidents", |r| {
            of_kind(r, ProofKind::IncidentOpened).len() >= 2
        })
        .await
        .unwrap();
    let mut services: Vec<_> = of_kind(&records, ProofKind::IncidentOpened)
        .iter()
        .filter_map(|r| r.service.clone())
        .map(|s| s.to_string())
        .collect();
    services.sort();
    assert_eq!(services, ["checkout", "payments-api"]);
}

/// `cnctl tail | head -1` used to panic ("failed printing to stdout: Broken pipe", exit 101)
/// once head had gone. A reader that goes away now ends cnctl quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_into_a_pipe_whose_reader_is_gone_ends_quietly() {
    let fleet = Fleet::start().await.unwrap();
    let operator = fleet.password_file("operator").to_string_lossy().into_owned();
    let mut child = cnctl(&["tail", "--no-follow", "--since", "all"])
        .args(["--nats-url", &fleet.server.url(), "--nats-user", "operator"])
        .args(["--nats-password-file", &operator])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the first record is written (every agent has recorded its
    // start by now).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Read to the end, each line starts with the record's time at one width, milliseconds
    // always (`15:55:49.85Z` beside `15:55:49.856Z` misaligned columns and misordered sorts).
    let out = cnctl(&["tail", "--no-follow", "--since", "all"])
        .args(["--nats-url", &fleet.server.url(), "--nats-user", "operator"])
        .args(["--nats-password-file", &operator])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().count() >= 6, "every agent's start: {text}");
    for line in text.lines() {
        let ts = line.split(' ').next().unwrap();
        assert_eq!(ts.len(), "2026-02-20T17:00:00.000Z".len(), "{line}");
        assert!(ts.parse::<bus_schema::Timestamp>().is_ok() && ts.as_bytes()[19] == b'.', "{line}");
    }
    assert!(!text.contains('\u{1b}'), "no colour into a pipe: {text}");

    // Colour where it helps, when asked for, and never under NO_COLOR.
    let tail = |color: &str, env: &[(&str, &str)]| {
        let out = cnctl(&["tail", "--no-follow", "--since", "all", "--color", color])
            .args(["--nats-url", &fleet.server.url(), "--nats-user", "operator"])
            .args(["--nats-password-file", &operator])
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let green_start = "\u{1b}[32magent_started\u{1b}[0m";
    assert!(tail("always", &[]).contains(green_start), "{}", tail("always", &[]));
    assert!(tail("auto", &[("CLICOLOR_FORCE", "1")]).contains(green_start));
    for (color, env) in [
        ("auto", &[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")][..]),
        ("never", &[("CLICOLOR_FORCE", "1")][..]),
    ] {
        let text = tail(color, env);
        assert!(
            !text.contains('\u{1b}') && text.contains(" agent_started "),
            "{color} {env:?}: {text}"
        );
    }
}

/// Shell completions: the script each shell loads, generated from the CLI itself.
#[test]
fn completions_cover_every_command_for_each_shell() {
    for (shell, sign) in
        [("bash", "complete -F _cnctl"), ("zsh", "#compdef cnctl"), ("fish", "complete -c cnctl")]
    {
        let out = cnctl(&["completions", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && script.contains(sign), "{shell}: {script}");
        for word in ["publish", "approvals", "tail", "nats-url", "wait"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    let out = cnctl(&["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "bad usage");
}

/// `cnctl policy check` accepted `"restrat"` in prod's automatic list as an operator-defined
/// action, which silently took automatic restarts out of prod. It now names the slip.
#[test]
fn policy_check_names_a_misspelt_action() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, "[env.prod]\nautomatic = [\"noop\", \"observe\", \"restrat\"]\n")
        .unwrap();
    let out = cnctl(&["policy", "check", &file.to_string_lossy()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "[env.prod] automatic: \"restrat\" is not a built-in action; did you mean \"restart\"?"
        ),
        "{stderr}"
    );
    // A CI job reads the same verdict as JSON, with the same exit code.
    let out = cnctl(&["policy", "check", "--json", &file.to_string_lossy()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert!(report["error"].as_str().unwrap().contains("did you mean \"restart\"?"), "{report}");
    std::fs::write(&file, "[env.prod]\nautomatic = [\"noop\", \"observe\", \"restart\"]\n")
        .unwrap();
    let out = cnctl(&["policy", "check", "--json", &file.to_string_lossy()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["envs"]["prod"]["automatic"],
        serde_json::json!(["noop", "observe", "restart"])
    );
}

/// A wrong password, nothing listening and another NATS server on the port all ended in "is
/// the fleet up?"; the real cause was only in a log file. Each now names its cause and what to
/// do about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_name_their_cause() {
    let fleet = Fleet::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let run = |url: &str, user: Option<&str>, args: &[&str]| {
        let mut c = cnctl(args);
        c.args(["--nats-url", url]);
        if let Some(user) = user {
            c.args(["--nats-user", user, "--nats-password-file", &wrong.to_string_lossy()]);
        }
        let out = c.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    let (code, stderr) = run(&fleet.server.url(), Some("operator"), &["status"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the server refused user \"operator\" with this password"), "{stderr}");
    assert!(!stderr.contains("is the fleet up"), "{stderr}");

    let (_, stderr) = run(&fleet.server.url(), None, &["status"]);
    assert!(stderr.contains("the server wants a user and password"), "{stderr}");

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, stderr) = run(&format!("nats://127.0.0.1:{free}"), None, &["status"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("nothing answers there: is the fleet up"), "{stderr}");

    // Another NATS server, open to anyone but without the fleet's streams.
    let other = test_support::NatsServer::bare().unwrap();
    for args in [
        &["tail", "--no-follow"][..],
        &["publish", "metric", "--env", "dev", "--service", "web", "--crash-looping"][..],
    ] {
        let (code, stderr) = run(&other.url(), None, args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(
                "this NATS server has no Chaos Negotiator streams: is it the fleet's server"
            ),
            "{args:?}: {stderr}"
        );
    }
}

/// A pipeline could not find its own rejected events: rejection records carried no env or
/// service, so `cnctl tail --service X` hid them. They now carry what the subject names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_finds_its_rejected_events_by_service() {
    let fleet = Fleet::start().await.unwrap();
    let client = fleet.client_as("pipeline").await.unwrap();
    let now = bus_schema::Timestamp::now().to_string();
    let bad =
        serde_json::json!({"service": "web", "env": "dev", "error_rate": 2.5, "timestamp": now});
    client.publish("cn.events.metric.dev.web", bad.to_string().into()).await.unwrap();
    client.publish("cn.events.deploy.dev.web", "{not json".into()).await.unwrap();
    client.flush().await.unwrap();
    let records = fleet
        .records_until("both rejections", |r| {
            of_kind(r, ProofKind::EventRejected)
                .iter()
                .filter(|x| x.agent.as_str() == "issue-detector")
                .count()
                >= 2
        })
        .await
        .unwrap();
    for r in of_kind(&records, ProofKind::EventRejected) {
        assert_eq!(
            (r.env.as_ref().map(|e| e.as_str()), r.service.as_ref().map(|s| s.as_str())),
            (Some("dev"), Some("web")),
            "{r:#?}"
        );
    }
    let operator = fleet.password_file("operator").to_string_lossy().into_owned();
    let out = cnctl(&["tail", "--no-follow", "--since", "all", "--service", "web"])
        .args(["--nats-url", &fleet.server.url(), "--nats-user", "operator"])
        .args(["--nats-password-file", &operator])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.lines()
            .filter(|l| l.contains("issue-detector.0") && l.contains("event_rejected"))
            .count()
            == 2,
        "{text}"
    );
    assert!(text.contains("reason=out_of_range") && text.contains("reason=malformed"), "{text}");
}

/// The README said `cnctl publish contract --file -`, which did not exist (only `-` did). Both
/// work now, like the other publish commands' `--file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_contract_reads_the_request_from_file_or_stdin_either_way() {
    use std::io::Write as _;
    let fleet = Fleet::start().await.unwrap();
    let pipeline = fleet.password_file("pipeline").to_string_lossy().into_owned();
    let ways: [&[&str]; 2] =
        [&["publish", "contract", "--file", "-"], &["publish", "contract", "-"]];
    for (n, args) in ways.into_iter().enumerate() {
        let request = serde_json::json!({"deployment_id": format!("deploy-00{n}"), "service":"user-service","env":"stage","version":"v2.1.0",
            "changes":[{"file_path":"src/api.rs","change_type":"modify","lines_changed":12,"risk_tags":[]}],
            "rollback_capability":true,"dependencies":[]});
        let mut child = cnctl(args)
            .args(["--nats-url", &fleet.server.url(), "--nats-user", "pipeline"])
            .args(["--nats-password-file", &pipeline])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains("published contract request on cn.requests.contract.stage.user-service"),
            "{args:?}"
        );
    }
}

/// `cnctl publish` said "published" for an event the fleet then threw away, and a pipeline had
/// to search the proof log to find out. `--wait` reports the fleet's verdict and fails the
/// pipeline step on a rejection (exit 1) or when an agent that reads it is down (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_wait_reports_the_fleets_verdict() {
    let mut fleet = Fleet::start().await.unwrap();
    let url = fleet.server.url();
    let pipeline = fleet.password_file("pipeline").to_string_lossy().into_owned();
    let conn = ["--nats-url", &url, "--nats-user", "pipeline", "--nats-password-file", &pipeline];
    let metric = ["publish", "metric", "--env", "dev", "--service", "web", "--wait"];

    let out = cnctl(&metric).args(["--error-rate", "0.01"]).args(conn).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("accepted by deploy-agent, issue-detector"), "{text}");

    // A sample stamped an hour ahead of the detector's clock, as a skewed pipeline sends it.
    let dir = tempfile::tempdir().unwrap();
    let ahead = bus_schema::Timestamp::now().plus(std::time::Duration::from_secs(3600));
    let sample = serde_json::json!({"service": "web", "env": "dev", "error_rate": 0.01, "timestamp": ahead.to_string()});
    let file = dir.path().join("sample.json");
    std::fs::write(&file, sample.to_string()).unwrap();
    let file = file.to_string_lossy().into_owned();
    let out = cnctl(&["publish", "metric", "--file", &file, "--wait", "--json"])
        .args(conn)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "rejected", "{report:#}");
    let detector = report["readers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reader"] == "issue-detector/issue-detector-events")
        .unwrap();
    assert_eq!(detector["verdict"], "rejected", "{report:#}");
    assert_eq!(detector["reason"], "out_of_order", "{report:#}");
    assert!(detector["error"].as_str().unwrap().contains("ahead"), "{report:#}");

    // The same sample again: stored once, judged once; said so.
    let out = cnctl(&["publish", "metric", "-f", &file, "--wait"]).args(conn).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("no new verdict"), "{text}");

    // With the deploy agent down, its verdict does not come.
    fleet.agent("deploy-agent").unwrap().stop().unwrap();
    let out = cnctl(&metric)
        .args(["--error-rate", "0.02", "--timeout", "1s"])
        .args(conn)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("no verdict from deploy-agent within 1s"), "{text}");
    assert!(text.contains("accepted by issue-detector"), "{text}");
}
