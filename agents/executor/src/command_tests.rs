//! The command backend's rules: what a commands file may say, how a template is filled, and
//! that nothing runs when a value is not what it must be.

use std::time::{Duration, Instant};

use bus_schema::{Action, ActionParams, ApprovalClaims, Timestamp, Uuid};

use super::*;

fn claims(action: Action, params: ActionParams) -> ApprovalClaims {
    let now = Timestamp::now();
    ApprovalClaims {
        approval_id: Uuid::from_u128(1),
        proposal_id: Uuid::from_u128(0xabc),
        proposal_hash: "00".repeat(32),
        incident_id: None,
        env: "stage".parse().unwrap(),
        service: "payments-api".parse().unwrap(),
        action,
        params,
        approved_by: "policy".into(),
        issued_at: now,
        expires_at: now.plus(Duration::from_secs(300)),
    }
}

fn template(argv: &[&str]) -> Template {
    let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
    Template::parse(&argv, None).unwrap()
}

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

#[test]
fn a_good_file_parses_with_default_timeouts_and_custom_actions() {
    let text = r#"
        [action.restart]
        argv = ["kubectl", "rollout", "restart", "deployment/{service}", "-n", "{env}"]
        timeout = "90s"
        [action.clear_cache]
        argv = ["/usr/local/bin/clear-cache", "--service", "{service}"]
    "#;
    let commands = Commands::from_toml(text).unwrap();
    assert_eq!(commands.get(&Action::Restart).unwrap().timeout(), Duration::from_secs(90));
    let custom = commands.get(&Action::Custom("clear_cache".into())).unwrap();
    assert_eq!(custom.timeout(), DEFAULT_TIMEOUT);
    assert!(commands.get(&Action::Rollback).is_none());
    assert_eq!(commands.names(), "restart, clear_cache");
}

#[test]
fn a_bad_commands_file_is_refused_with_a_message_that_names_the_problem() {
    let one = |argv: &str| format!("[action.restart]\nargv = {argv}\n");
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "defines no actions"),
        ("[actions.restart]\nargv = [\"x\"]".into(), "unknown field `actions`"),
        ("[action.restart]\nargv = [\"x\"]\ntimout = \"1s\"".into(), "unknown field `timout`"),
        ("[action.restart]\ntimeout = \"1s\"".into(), "missing field `argv`"),
        (one("[]"), "action \"restart\": argv is empty"),
        (one("[\"\"]"), "action \"restart\": argv[0] is empty"),
        (
            one("[\"{service}\"]"),
            "action \"restart\": argv[0] \"{service}\" contains a placeholder",
        ),
        (
            one("[\"/opt/{env}/bin/restart\"]"),
            "argv[0] \"/opt/{env}/bin/restart\" contains a placeholder",
        ),
        (
            one("[\"kubectl\", \"deployment/{svc}\"]"),
            "argv[1] \"deployment/{svc}\" has the unknown placeholder {svc}; known placeholders: {env}, {service}",
        ),
        (one("[\"kubectl\", \"{}\"]"), "argv[1] \"{}\" has the unknown placeholder {}"),
        (
            one("[\"kubectl\", \"deployment/{service\"]"),
            "argv[1] \"deployment/{service\" has an unbalanced brace",
        ),
        (one("[\"kubectl\", \"-n\", \"env}\"]"), "argv[2] \"env}\" has an unbalanced brace"),
        (one("[\"kubectl\", \"{{service}}\"]"), "argv[1] \"{{service}}\" has an unbalanced brace"),
        (one("[\"kubectl\", \"{service}}\"]"), "has an unbalanced brace"),
        (one("[\"kubectl\", \"a\\u0000b\"]"), "action \"restart\": argv[1] contains a NUL byte"),
        (one("[\"/bin/\\u0000sh\"]"), "argv[0] contains a NUL byte"),
        (
            "[action.drop_database]\nargv = [\"psql\"]".into(),
            "action \"drop_database\": is on the global block list",
        ),
        ("[action.execute_shell_commands]\nargv = [\"sh\"]".into(), "global block list"),
        (
            "[action.\"rm -rf\"]\nargv = [\"rm\"]".into(),
            "action \"rm -rf\": \"rm -rf\" is not a valid action name",
        ),
        ("[action.Restart]\nargv = [\"x\"]".into(), "is not a valid action name"),
        (
            "[action.restart]\nargv = [\"x\"]\ntimeout = \"2h\"".into(),
            "action \"restart\": timeout \"2h\": more than the maximum of 1h",
        ),
        (
            "[action.restart]\nargv = [\"x\"]\ntimeout = \"soon\"".into(),
            "timeout \"soon\": \"soon\" is not a duration",
        ),
        ("[action.restart]\nargv = [\"x\"]\ntimeout = \"0s\"".into(), "must be more than zero"),
    ];
    for (text, expected) in cases {
        let err = Commands::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains(expected), "for {text:?}\n  got: {err}\n want: {expected}");
    }
}

#[test]
fn placeholders_fill_parts_of_single_arguments_and_never_split_them() {
    let t = template(&[
        "kubectl",
        "rollout",
        "restart",
        "deployment/{service}",
        "-n",
        "{env}",
        "--id={proposal_id}",
        "{action}:{replicas}/{canary_weight}",
        "v{target_version}",
        "two words {service}",
    ]);
    let params = ActionParams {
        canary_weight: Some(25),
        replicas: Some(7),
        target_version: Some("1.14.2".into()),
    };
    let argv = t.render(&claims(Action::ScaleUp, params)).unwrap();
    assert_eq!(
        argv,
        [
            "kubectl",
            "rollout",
            "restart",
            "deployment/payments-api",
            "-n",
            "stage",
            "--id=00000000-0000-0000-0000-000000000abc",
            "scale_up:7/25",
            "v1.14.2",
            "two words payments-api",
        ]
    );
    let custom = template(&["/usr/local/bin/clear-cache", "{action}"])
        .render(&claims(Action::Custom("clear_cache".into()), ActionParams::default()));
    assert_eq!(custom.unwrap(), ["/usr/local/bin/clear-cache", "clear_cache"]);
}

#[test]
fn a_template_needing_a_param_the_approval_lacks_is_not_rendered() {
    for (arg, field) in [
        ("{replicas}", "params.replicas"),
        ("{canary_weight}", "params.canary_weight"),
        ("--to={target_version}", "params.target_version"),
    ] {
        let err = template(&["kubectl", arg])
            .render(&claims(Action::Restart, ActionParams::default()))
            .unwrap_err();
        assert!(matches!(err, RenderError::Missing { .. }), "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[tokio::test]
async fn hostile_target_versions_are_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let ran_arg = ran.to_str().unwrap();
    // The recorder would append its argument to `ran` if it ever ran.
    let t = template(&["/bin/sh", "-c", "echo \"$1\" >> \"$0\"", ran_arg, "--to={target_version}"]);
    let hostile = [
        "1.0;rm -rf /",
        "$(id)",
        "`id`",
        "../../x",
        "a b",
        "",
        "-rf",
        ".hidden",
        "1.0\n2.0",
        "1.0|sh",
        "v1.0'",
        &"1".repeat(65),
    ];
    for value in hostile {
        let params =
            ActionParams { target_version: Some(value.to_owned()), ..ActionParams::default() };
        let out = execute(&t, &claims(Action::Rollback, params)).await;
        assert_eq!(out.status, ExecutionStatus::Failed, "{value:?}");
        assert_eq!(out.exit_code, None);
        assert!(
            out.detail.contains("is not a plain version") && out.detail.contains("nothing was run"),
            "{}",
            out.detail
        );
        assert!(!ran.exists(), "{value:?} ran the command");
    }
    let params = ActionParams {
        target_version: Some("1.2.3-rc.1+build_7".into()),
        ..ActionParams::default()
    };
    let out = execute(&t, &claims(Action::Rollback, params)).await;
    assert_eq!(out.status, ExecutionStatus::Executed, "{out:?}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "--to=1.2.3-rc.1+build_7\n");
}

#[tokio::test]
async fn a_command_sees_only_path_and_the_cn_variables() {
    let out = execute(&template(&["env"]), &claims(Action::Restart, ActionParams::default())).await;
    assert_eq!(out.status, ExecutionStatus::Executed, "{out:?}");
    let tail = out.output_tail.unwrap();
    let mut names: Vec<&str> = tail.lines().filter_map(|l| l.split('=').next()).collect();
    names.sort_unstable();
    assert_eq!(names, ["CN_ACTION", "CN_ENV", "CN_PROPOSAL_ID", "CN_SERVICE", "PATH"], "{tail}");
    assert!(
        tail.contains("CN_SERVICE=payments-api\n") && tail.contains("CN_ACTION=restart\n"),
        "{tail}"
    );
}

#[tokio::test]
async fn exit_codes_output_spawn_failures_and_timeouts_are_reported() {
    let ok = run(&sh("echo fine"), &[], Duration::from_secs(10)).await;
    assert_eq!(
        (ok.status, ok.exit_code, ok.output_tail.as_deref()),
        (ExecutionStatus::Executed, Some(0), Some("fine\n"))
    );

    let failed = run(&sh("echo out; echo err >&2; exit 3"), &[], Duration::from_secs(10)).await;
    assert_eq!((failed.status, failed.exit_code), (ExecutionStatus::Failed, Some(3)));
    assert_eq!(failed.output_tail.as_deref(), Some("out\nerr\n"));
    assert!(failed.detail.contains("exit code 3"), "{}", failed.detail);

    let missing =
        run(&["/nonexistent/restart-tool".to_owned()], &[], Duration::from_secs(10)).await;
    assert_eq!((missing.status, missing.exit_code), (ExecutionStatus::Failed, None));
    assert!(
        missing.detail.contains("could not start [\"/nonexistent/restart-tool\"]")
            && missing.detail.contains("No such file"),
        "{}",
        missing.detail
    );

    let started = Instant::now();
    let slow = run(&sh("echo starting; exec sleep 30"), &[], Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "killed at the timeout");
    assert_eq!((slow.status, slow.exit_code), (ExecutionStatus::Failed, None));
    assert!(slow.detail.starts_with("timed out after 300ms"), "{}", slow.detail);
    assert_eq!(slow.output_tail.as_deref(), Some("starting\n"), "output until the timeout is kept");

    let started = Instant::now();
    let left_behind = run(&sh("sleep 3 & echo done"), &[], Duration::from_secs(10)).await;
    assert_eq!(
        (left_behind.status, left_behind.output_tail.as_deref()),
        (ExecutionStatus::Executed, Some("done\n"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a process holding the pipes does not hold the result"
    );

    let killed = run(&sh("kill -9 $$"), &[], Duration::from_secs(10)).await;
    assert_eq!((killed.status, killed.exit_code), (ExecutionStatus::Failed, None));
    assert!(killed.detail.contains("killed by signal 9"), "{}", killed.detail);
}

#[tokio::test]
async fn the_output_tail_is_the_last_2_kib_cut_at_a_character_boundary() {
    let big = run(
        &sh("i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done"),
        &[],
        Duration::from_secs(10),
    )
    .await;
    let tail = big.output_tail.unwrap();
    assert_eq!(tail.len(), TAIL_BYTES);
    assert!(tail.ends_with("line 1999\n"), "{tail}");

    let text = output_tail("é".repeat(1500).as_bytes(), b"end").unwrap();
    assert!(text.len() <= TAIL_BYTES && text.ends_with("end"));
    assert!(text.starts_with('é'), "no broken character at the cut");
    assert_eq!(output_tail(b"", b""), None);
    assert_eq!(
        output_tail(b"\xffok", b"").as_deref(),
        Some("\u{fffd}ok"),
        "invalid UTF-8 is replaced"
    );
}
