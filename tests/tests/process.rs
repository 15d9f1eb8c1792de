//! The runtime as a real process: exit codes for bad configuration, `--help`, signals, and
//! waiting for a NATS server that is not up yet.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use bus_schema::proof::ProofKind;
use cn_tests::{NatsServer, eventually, proof_log};

const PROBE: &str = env!("CARGO_BIN_EXE_probe-agent");

fn run(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(PROBE).args(args).env_remove("NATS_URL").env_remove("CN_DATA_DIR").output()?)
}

fn spawn(server_url: &str, data_dir: &std::path::Path) -> anyhow::Result<Child> {
    Ok(Command::new(PROBE)
        .args(["--nats-url", server_url, "--data-dir"])
        .arg(data_dir)
        .args(["--heartbeat-interval", "200ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}

fn signal(child: &Child, sig: &str) -> anyhow::Result<()> {
    let status =
        Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status()?;
    anyhow::ensure!(status.success(), "kill -{sig} failed");
    Ok(())
}

fn wait_exit(mut child: Child, timeout: Duration) -> anyhow::Result<(i32, String)> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut stderr)?;
            }
            return Ok((status.code().unwrap_or(-1), stderr));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("the agent did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn invalid_configuration_exits_64_with_a_clear_message() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "")?;
    let bad_data_dir = file.join("sub");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--instance", "Node.1"], "has 'N' at position 0"),
        (vec!["--log-format", "xml"], "possible values: json, plain"),
        (vec!["--shutdown-grace", "soon"], "not a duration"),
        (vec!["--nats-url", "nats://exa mple:4222"], "not a NATS URL"),
        (vec!["--no-such-flag"], "unexpected argument"),
        (
            vec!["--nats-user", "x", "--nats-password-file", "/nonexistent/pw"],
            "cannot read --nats-password-file",
        ),
        (vec!["--data-dir", bad_data_dir.to_str().unwrap_or_default()], "cannot use --data-dir"),
        (vec!["--log", "info,=="], "invalid --log"),
    ];
    for (args, expected) in cases {
        let out = run(&args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: expected {expected:?} in {stderr}");
    }
    Ok(())
}

#[test]
fn the_detector_refuses_a_bad_config_file_naming_the_key() -> anyhow::Result<()> {
    let detector = cn_tests::fleet::binary("issue-detector")?;
    let dir = tempfile::tempdir()?;
    let write = |name: &str, text: &str| -> anyhow::Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.to_string_lossy().into_owned())
    };
    let typo = write("typo.toml", "[defaults]\nsustain = 120\n")?;
    let range = write("range.toml", "[env.prod]\nslo_objective = 99.9\n")?;
    let token = write("token.toml", "[service.\"prod/Payments\"]\np95_ms = 300\n")?;
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--config", &typo], "unknown field `sustain`"),
        (
            vec!["--config", &range],
            "[env.prod]: slo_objective = 99.9 must be strictly between 0 and 1",
        ),
        (vec!["--config", &token], "prod/Payments"),
        (vec!["--config", "/nonexistent/detector.toml"], "cannot read /nonexistent/detector.toml"),
        (vec!["--error-rate-threshold", "5"], "flags: error_rate = 5 must be a fraction"),
    ];
    for (args, expected) in cases {
        let out = Command::new(&detector).args(&args).env_remove("CN_DETECTOR_CONFIG").output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: expected {expected:?} in {stderr}");
    }
    Ok(())
}

#[test]
fn cnctl_policy_check_accepts_the_shipped_policy_and_names_a_mistake() -> anyhow::Result<()> {
    let cnctl = cn_tests::fleet::binary("cnctl")?;
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/policy.toml");
    let ok = Command::new(&cnctl).args(["policy", "check", shipped]).output()?;
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("human:     rollback, scale_down, promote")
    );
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("policy.toml");
    std::fs::write(&bad, "[cooldowns]\nrestart = \"a while\"\n")?;
    let out = Command::new(&cnctl).args(["policy", "check"]).arg(&bad).output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[cooldowns] restart"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn help_names_every_flag_with_its_environment_variable() -> anyhow::Result<()> {
    let out = run(&["--help"])?;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for env in [
        "NATS_URL",
        "NATS_USER",
        "NATS_PASSWORD_FILE",
        "CN_DATA_DIR",
        "CN_INSTANCE",
        "CN_LOG_FORMAT",
        "CN_SHUTDOWN_GRACE",
        "CN_MAX_ATTEMPTS",
    ] {
        assert!(help.contains(&format!("env: {env}")), "{env} missing from --help:\n{help}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_stop_the_agent_cleanly_with_a_record() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let js = jetstream::new(server.client().await?);
    for (n, sig) in ["TERM", "INT"].iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let child = spawn(&server.url(), dir.path())?;
        eventually(Duration::from_secs(15), "agent_started", || async {
            let records = proof_log::read_all(&js).await.unwrap_or_default();
            Ok((proof_log::of_kind(&records, ProofKind::AgentStarted).len() > n).then_some(()))
        })
        .await?;
        signal(&child, sig)?;
        let (code, stderr) = wait_exit(child, Duration::from_secs(10))?;
        assert_eq!(code, 0, "SIG{sig}: {stderr}");
        assert!(stderr.contains(&format!("received SIG{sig}")), "{stderr}");
        let records = proof_log::read_all(&js).await?;
        assert_eq!(proof_log::of_kind(&records, ProofKind::AgentStopped).len(), n + 1);
    }
    let records = proof_log::read_all(&js).await?;
    assert!(proof_log::audit(&records).is_intact());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_before_nats_waits_for_it() -> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    server.kill();
    let dir = tempfile::tempdir()?;
    let child = spawn(&server.url(), dir.path())?;
    // Long enough for a failed first attempt (and its log line) even on a loaded machine.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    server.restart()?;
    let js = jetstream::new(server.client().await?);
    eventually(Duration::from_secs(20), "agent_started once NATS is up", || async {
        let records = proof_log::read_all(&js).await.unwrap_or_default();
        Ok((!proof_log::of_kind(&records, ProofKind::AgentStarted).is_empty()).then_some(()))
    })
    .await?;
    signal(&child, "TERM")?;
    let (code, stderr) = wait_exit(child, Duration::from_secs(10))?;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("waiting for NATS"), "it said what it was waiting for: {stderr}");
    assert!(stderr.contains("cannot reach NATS"), "{stderr}");
    assert!(!stderr.contains("\u{1b}["), "no colour codes when stderr is not a terminal");
    Ok(())
}
