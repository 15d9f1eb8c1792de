//! The executor binary against a real nats-server: the `command` backend runs the operator's
//! command exactly as templated, once, and nothing else whatever the approval carries; the `sim`
//! backend hands the action to the simulator over the bus.
//!
//! The commands are shell scripts in a temp dir that record their arguments, one per line; the
//! executor itself never uses a shell.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use bus_schema::approval::ApprovalSigner;
use bus_schema::codec::{Outgoing, Payload, decode};
use bus_schema::proof::ProofKind;
use bus_schema::{
    Action, ActionParams, ApprovalClaims, ExecutionResult, ExecutionStatus, Limits, ReasonCode,
    SignedApproval, SimAction, Timestamp, Uuid, headers, subject,
};
use cn_tests::{NatsServer, eventually, proof_log};
use tempfile::TempDir;

/// The executor binary, killed on drop.
struct ExecutorProcess {
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

impl ExecutorProcess {
    fn start(args: Vec<String>, log: PathBuf) -> Self {
        let mut p = Self { child: None, args, log };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(cn_tests::fleet::binary("executor").unwrap())
            .args(&self.args)
            .env_remove("NATS_URL")
            .env_remove("CN_EXECUTOR_BACKEND")
            .env_remove("CN_EXECUTOR_COMMANDS")
            // Must not reach the commands it runs.
            .env("CN_TEST_SECRET", "leaked")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: a crash.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ExecutorProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A nats-server, a governance key pair and an executor with the given backend flags.
struct Bench {
    dir: TempDir,
    js: jetstream::Context,
    signer: ApprovalSigner,
    executor: ExecutorProcess,
    _server: NatsServer,
}

impl Bench {
    async fn start(dir: TempDir, backend: &[&str]) -> Self {
        let server = NatsServer::start().unwrap();
        let signer = ApprovalSigner::generate().unwrap();
        let public = dir.path().join("governance.pub");
        std::fs::write(&public, signer.public_key().to_hex()).unwrap();
        let mut args: Vec<String> = vec![
            "--nats-url".into(),
            server.url(),
            "--data-dir".into(),
            dir.path().join("data").to_string_lossy().into(),
            "--verify-key".into(),
            public.to_string_lossy().into(),
            "--heartbeat-interval".into(),
            "250ms".into(),
            "--shutdown-grace".into(),
            "2s".into(),
            "--ack-wait".into(),
            "2s".into(),
        ];
        args.extend(backend.iter().map(|a| (*a).to_owned()));
        let executor = ExecutorProcess::start(args, dir.path().join("executor.log"));
        let js = jetstream::new(server.client().await.unwrap());
        let bench = Self { dir, js, signer, executor, _server: server };
        bench.wait_started(1).await;
        bench
    }

    async fn wait_started(&self, times: usize) {
        let found = eventually(Duration::from_secs(15), "the executor to start", || async {
            let records = proof_log::read_all(&self.js).await?;
            Ok((proof_log::of_kind(&records, ProofKind::AgentStarted).len() >= times).then_some(()))
        })
        .await;
        if let Err(e) = found {
            panic!("{e}\n{}", self.executor.log());
        }
    }

    fn approval(&self, n: u128, action: Action, params: ActionParams) -> SignedApproval {
        let now = Timestamp::now();
        self.signer.sign(ApprovalClaims {
            approval_id: Uuid::from_u128(n),
            proposal_id: Uuid::from_u128(1000 + n),
            proposal_hash: "00".repeat(32),
            incident_id: None,
            env: "stage".parse().unwrap(),
            service: "payments-api".parse().unwrap(),
            action,
            params,
            approved_by: "policy".into(),
            issued_at: now,
            expires_at: now.plus(Duration::from_secs(300)),
        })
    }

    /// Publishes as governance does: MessagePack on cn.actions.approved.{env}.{service}.
    async fn publish(&self, a: &SignedApproval) {
        let out =
            Outgoing::new(&subject::APPROVED.subject(&a.claims.env, &a.claims.service), a).unwrap();
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::CONTENT_TYPE, out.encoding.content_type());
        self.js
            .publish_with_headers(out.subject, h, out.payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Every execution result for an approval, once there are `count` of them.
    async fn results(&self, a: &SignedApproval, count: usize) -> Vec<ExecutionResult> {
        let id = a.claims.approval_id;
        let found = eventually(Duration::from_secs(10), "the execution result", || async {
            let mut work = self.js.get_stream("CN_WORK").await?;
            let last = work.info().await?.state.last_sequence;
            let mut results = Vec::new();
            for seq in 1..=last {
                let Ok(m) = work.get_raw_message(seq).await else { continue };
                if m.subject.starts_with("cn.actions.executed.") {
                    let r: ExecutionResult =
                        decode(ExecutionResult::ENCODING, &m.payload, &Limits::default())?;
                    results.extend((r.approval_id == Some(id)).then_some(r));
                }
            }
            Ok((results.len() >= count).then_some(results))
        })
        .await;
        found.unwrap_or_else(|e| panic!("{e}\n{}", self.executor.log()))
    }

    async fn result(&self, a: &SignedApproval) -> ExecutionResult {
        self.publish(a).await;
        self.results(a, 1).await.remove(0)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Recording scripts and a commands file that uses them, in a fresh temp dir.
fn command_setup() -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("cn-executor-").tempdir().unwrap();
    let d = dir.path().display();
    script(
        &dir.path().join("record.sh"),
        &format!(
            "printf '%s\\n' \"== run secret=${{CN_TEST_SECRET:-unset}} service=$CN_SERVICE\" >> {d}/argv.log\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> {d}/argv.log; done"
        ),
    );
    script(
        &dir.path().join("fail.sh"),
        "echo \"cannot reach the cluster (replicas $1)\"\necho 'error: deployment not found' >&2\nexit 3",
    );
    script(
        &dir.path().join("slow.sh"),
        &format!("printf '== slow %s\\n' \"$1\" >> {d}/slow.log\nexec sleep \"$1\""),
    );
    let commands = dir.path().join("commands.toml");
    std::fs::write(&commands, format!(r#"
        [action.restart]
        argv = ["{d}/record.sh", "rollout", "restart", "deployment/{{service}}", "-n", "{{env}}", "--proposal={{proposal_id}}"]
        [action.rollback]
        argv = ["{d}/record.sh", "rollout", "undo", "{{service}}", "--to-revision={{target_version}}"]
        [action.scale_up]
        argv = ["{d}/fail.sh", "{{replicas}}"]
        [action.scale_down]
        argv = ["{d}/slow.sh", "30"]
        timeout = "1s"
        [action.abort_rollout]
        argv = ["{d}/slow.sh", "5"]
        timeout = "30s"
        [action.clear_cache]
        argv = ["{d}/record.sh", "clear-cache", "{{service}}"]
    "#)).unwrap();
    (dir, commands)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_backend_runs_exactly_the_templated_argv_once_and_nothing_else() {
    let (dir, commands) = command_setup();
    let commands = commands.to_string_lossy().into_owned();
    let mut bench = Bench::start(dir, &["--backend", "command", "--commands", &commands]).await;

    // (a) A restart runs the script once, with exactly the templated arguments and a clean environment.
    let restart = bench.approval(1, Action::Restart, ActionParams::default());
    let r = bench.result(&restart).await;
    assert_eq!(
        (r.status, r.backend, r.exit_code),
        (ExecutionStatus::Executed, bus_schema::Backend::Command, Some(0)),
        "{r:?}"
    );
    let expected = "== run secret=unset service=payments-api\nrollout\nrestart\ndeployment/payments-api\n-n\nstage\n--proposal=00000000-0000-0000-0000-0000000003e9\n";
    assert_eq!(bench.read("argv.log"), expected);
    // The same approval again is a replay: refused, not run.
    bench.publish(&restart).await;
    let again = bench.results(&restart, 2).await.remove(1);
    assert_eq!(
        (again.status, again.refusal),
        (ExecutionStatus::Refused, Some(ReasonCode::Replayed)),
        "{again:?}"
    );
    assert_eq!(bench.read("argv.log"), expected, "not run again");

    // (b) A crafted target version runs nothing: even signed, it fails the input rules (an
    // identifier is printable ASCII without spaces) and is rejected on the record.
    let pwned = bench.path("pwned");
    let params = ActionParams {
        target_version: Some(format!("1.0; touch {}", pwned.display())),
        ..ActionParams::default()
    };
    bench.publish(&bench.approval(2, Action::Rollback, params)).await;
    let rejected =
        eventually(Duration::from_secs(10), "the crafted approval's rejection", || async {
            let records = proof_log::read_all(&bench.js).await?;
            Ok(proof_log::of_kind(&records, ProofKind::EventRejected)
                .into_iter()
                .find(|r| r.reason.as_deref() == Some("invalid_field")))
        })
        .await
        .unwrap();
    assert!(
        rejected.detail["error"].as_str().unwrap().contains("params.target_version"),
        "{rejected:?}"
    );
    assert_eq!(bench.read("argv.log"), expected, "not run");
    assert!(!pwned.exists());

    // (c) A failing command: its exit code and the tail of its output are in the result.
    let r = bench
        .result(&bench.approval(
            3,
            Action::ScaleUp,
            ActionParams { replicas: Some(4), ..ActionParams::default() },
        ))
        .await;
    assert_eq!((r.status, r.exit_code), (ExecutionStatus::Failed, Some(3)), "{r:?}");
    assert_eq!(
        r.output_tail.as_deref(),
        Some("cannot reach the cluster (replicas 4)\nerror: deployment not found\n")
    );

    // (d) A command that outlives its timeout is killed and reported.
    let r = bench.result(&bench.approval(4, Action::ScaleDown, ActionParams::default())).await;
    assert_eq!((r.status, r.exit_code), (ExecutionStatus::Failed, None), "{r:?}");
    assert!(r.detail.starts_with("timed out after 1s"), "{}", r.detail);

    // (e) An approved action without a template is refused before anything happens.
    for (n, action) in [(5, Action::Promote), (6, Action::Custom("flush_dns".into()))] {
        let r = bench.result(&bench.approval(n, action, ActionParams::default())).await;
        assert_eq!(
            (r.status, r.refusal),
            (ExecutionStatus::Refused, Some(ReasonCode::UnknownAction)),
            "{r:?}"
        );
        assert!(
            r.detail.contains(
                "configured: restart, scale_up, scale_down, rollback, abort_rollout, clear_cache"
            ),
            "{}",
            r.detail
        );
    }
    // A configured custom action runs.
    let r = bench
        .result(&bench.approval(7, Action::Custom("clear_cache".into()), ActionParams::default()))
        .await;
    assert_eq!(r.status, ExecutionStatus::Executed, "{r:?}");
    assert_eq!(
        bench.read("argv.log"),
        format!("{expected}== run secret=unset service=payments-api\nclear-cache\npayments-api\n")
    );

    // A crash mid-command: on redelivery it is reported as interrupted, never run twice.
    let abort = bench.approval(8, Action::AbortRollout, ActionParams::default());
    bench.publish(&abort).await;
    eventually(Duration::from_secs(10), "the slow command to start", || async {
        Ok(bench.read("slow.log").contains("== slow 5").then_some(()))
    })
    .await
    .unwrap();
    bench.executor.kill9();
    bench.executor.spawn();
    bench.wait_started(2).await;
    let r = bench.results(&abort, 1).await.remove(0);
    assert_eq!(r.status, ExecutionStatus::Failed, "{r:?}");
    assert!(r.detail.starts_with("interrupted"), "{}", r.detail);
    assert_eq!(bench.read("slow.log").matches("== slow 5").count(), 1, "run once");

    // The proof log says the same.
    let records = proof_log::read_all(&bench.js).await.unwrap();
    let executed = proof_log::of_kind(&records, ProofKind::ActionExecuted);
    assert_eq!(executed[0].detail["backend"], "command");
    assert_eq!(executed[0].detail["exit_code"], 0);
    let failed = proof_log::of_kind(&records, ProofKind::ActionFailed);
    assert!(failed.iter().any(|f| f.detail["exit_code"] == 3), "{failed:#?}");
    assert_eq!(proof_log::of_kind(&records, ProofKind::ExecutionRefused).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_backend_hands_the_action_to_the_simulator() {
    let dir = tempfile::Builder::new().prefix("cn-executor-").tempdir().unwrap();
    let bench = Bench::start(dir, &["--backend", "sim"]).await;
    let params = ActionParams { replicas: Some(6), ..ActionParams::default() };
    let approval = bench.approval(1, Action::ScaleUp, params.clone());
    let r = bench.result(&approval).await;
    assert_eq!(
        (r.status, r.backend, r.detail.as_str()),
        (ExecutionStatus::Executed, bus_schema::Backend::Sim, "sent to the simulator")
    );

    let work = bench.js.get_stream("CN_WORK").await.unwrap();
    let stored =
        work.get_last_raw_message_by_subject("cn.sim.actions.stage.payments-api").await.unwrap();
    let order: SimAction =
        decode(SimAction::ENCODING, &stored.payload, &Limits::default()).unwrap();
    assert_eq!(
        (order.proposal_id, order.action, order.params),
        (approval.claims.proposal_id, Action::ScaleUp, params)
    );
}

#[test]
fn a_missing_or_bad_commands_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("governance.pub");
    std::fs::write(&public, ApprovalSigner::generate().unwrap().public_key().to_hex()).unwrap();
    let bad = dir.path().join("commands.toml");
    std::fs::write(&bad, "[action.restart]\nargv = [\"{service}\", \"restart\"]\n").unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(cn_tests::fleet::binary("executor").unwrap())
            .args(["--nats-url", "nats://127.0.0.1:1", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--verify-key")
            .arg(&public)
            .args(extra)
            .env_remove("CN_EXECUTOR_BACKEND")
            .env_remove("CN_EXECUTOR_COMMANDS")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = run(&["--backend", "command"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--backend command needs --commands FILE"), "{stderr}");
    let (code, stderr) = run(&["--backend", "command", "--commands", bad.to_str().unwrap()]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("action \"restart\": argv[0] \"{service}\" contains a placeholder; the program must be fixed text"), "{stderr}");
}
