use super::*;
use bus_schema::{
    AskDecision, Calibration, CanaryStage, ChangeType, ContractStatus, DataLossRisk, FactorWeight,
    Guardrails, ModelStats, NegotiationReply, ReliabilityBucket, RiskAssessment, RiskFactor,
    RiskLevel, RollbackPlan, Validator,
};
use clap::Parser;

// ---- ranges ----

#[test]
fn ranges_that_could_become_options_or_commands_are_refused() {
    for hostile in [
        "--output=/tmp/x",
        "-p",
        "HEAD; rm -rf /",
        "a b",
        "HEAD\0x",
        "HEAD\n",
        "HEAD..--output=/tmp/x",
        "-x..HEAD",
        "",
        "..HEAD",
        "HEAD..",
        "a..b..c",
        "a...b",
    ] {
        assert!(GitRange::parse(hostile).is_err(), "{hostile:?} was accepted");
    }
    assert!(GitRange::parse(&"a".repeat(201)).is_err());
}

#[test]
fn ordinary_ranges_are_accepted() {
    let r = GitRange::parse("HEAD~5..HEAD").unwrap();
    assert_eq!(
        (r.end(), r.spec().as_str(), r.to_string().as_str()),
        ("HEAD", "HEAD~5..HEAD", "HEAD~5..HEAD")
    );
    let one = GitRange::parse("d1e2f3a").unwrap();
    assert_eq!((one.end(), one.spec().as_str()), ("d1e2f3a", "d1e2f3a^!"));
    assert!(GitRange::parse("v1.14.2..origin/main").is_ok());
    assert!(GitRange::parse("main@{2}..HEAD^2").is_ok());
}

// ---- git output ----

/// `git diff -z -M --numstat`: a modify, a rename with edits, a binary file, a path with a tab.
const NUMSTAT: &str = "12\t3\tsrc/api/users.rs\0\
                       4\t1\t\0src/old_name.rs\0src/new_name.rs\0\
                       -\t-\tassets/logo.png\0\
                       7\t0\tdocs/a\tb.md\0";

/// `git diff -z -M --name-status` of the same range, plus a delete and an add.
const NAME_STATUS: &str = "M\0src/api/users.rs\0R087\0src/old_name.rs\0src/new_name.rs\0A\0assets/logo.png\0M\0docs/a\tb.md\0D\0db/migrations/0001_old.sql\0";

#[test]
fn numstat_counts_added_plus_deleted_binary_as_zero_and_renames_by_new_path() {
    let lines = parse_numstat(NUMSTAT);
    assert_eq!(lines.get("src/api/users.rs"), Some(&15));
    assert_eq!(lines.get("src/new_name.rs"), Some(&5));
    assert_eq!(lines.get("src/old_name.rs"), None);
    assert_eq!(lines.get("assets/logo.png"), Some(&0));
    assert_eq!(lines.get("docs/a\tb.md"), Some(&7));
}

#[test]
fn name_status_gives_change_types_and_both_rename_paths() {
    let touched = parse_name_status(NAME_STATUS);
    let types: Vec<(ChangeType, &str)> =
        touched.iter().map(|t| (t.change_type(), t.path.as_str())).collect();
    assert_eq!(
        types,
        vec![
            (ChangeType::Modify, "src/api/users.rs"),
            (ChangeType::Rename, "src/new_name.rs"),
            (ChangeType::Add, "assets/logo.png"),
            (ChangeType::Modify, "docs/a\tb.md"),
            (ChangeType::Delete, "db/migrations/0001_old.sql"),
        ]
    );
    assert_eq!(touched[1].old_path.as_deref(), Some("src/old_name.rs"));
}

/// `git log -z -M --no-merges --format=%x1e%s --name-status`, newest first: the renamed file
/// was edited under its old name before the rename; users.rs was touched by three commits.
const LOG: &str = "\x1eTighten the users API\0\nM\0src/api/users.rs\0R087\0src/old_name.rs\0src/new_name.rs\0\
                   \x1eAdd logo; drop old migration\0\nA\0assets/logo.png\0D\0db/migrations/0001_old.sql\0M\0src/api/users.rs\0\
                   \x1ePaginate users endpoint\0\nM\0src/api/users.rs\0M\0src/old_name.rs\0M\0docs/a\tb.md\0\
                   \x1eTighten the users API\0\nM\0src/api/users.rs\0";

#[test]
fn commit_subjects_attach_to_files_through_renames_and_repeat_once() {
    let commits = parse_log(LOG);
    assert_eq!(commits.len(), 4);
    let by_path = subjects_by_path(&commits);
    assert_eq!(
        by_path["src/api/users.rs"],
        vec!["Tighten the users API", "Add logo; drop old migration", "Paginate users endpoint"]
    );
    assert_eq!(
        by_path["src/new_name.rs"],
        vec!["Tighten the users API", "Paginate users endpoint"]
    );
    assert!(!by_path.contains_key("src/old_name.rs"));
}

#[test]
fn a_change_set_joins_the_three_outputs() {
    let set =
        ChangeSet::build(&parse_name_status(NAME_STATUS), &parse_numstat(NUMSTAT), &parse_log(LOG));
    assert_eq!((set.commits, set.files, set.lines, set.folded), (4, 5, 27, 0));
    let users = &set.changes[0];
    assert_eq!((users.file_path.as_str(), users.lines_changed), ("src/api/users.rs", 15));
    assert_eq!(
        users.description,
        "Tighten the users API; Add logo; drop old migration; Paginate users endpoint"
    );
    let deleted = &set.changes[4];
    assert_eq!(
        (deleted.change_type, deleted.lines_changed, deleted.description.as_str()),
        (ChangeType::Delete, 0, "Add logo; drop old migration")
    );
}

#[test]
fn descriptions_stay_bounded_and_say_what_they_left_out() {
    let many: Vec<String> =
        (0..40).map(|i| format!("commit number {i} changed this file")).collect();
    let d = describe(&many);
    assert!(d.chars().count() <= MAX_DESCRIPTION, "{} chars: {d}", d.chars().count());
    assert!(d.starts_with("commit number 0 changed this file; commit number 1"), "{d}");
    assert!(d.ends_with(" more commits)"), "{d}");
    let huge = describe(&["é".repeat(1000)]);
    assert!(huge.chars().count() <= MAX_DESCRIPTION && huge.ends_with('…'));
}

#[test]
fn a_huge_change_set_is_folded_to_fit_one_message_keeping_its_line_count() {
    let touched: Vec<Touched> = (0..3000)
        .map(|i| Touched {
            status: 'M',
            path: format!("src/module_{i:04}/file.rs"),
            old_path: None,
        })
        .collect();
    let lines = touched.iter().enumerate().map(|(i, t)| (t.path.clone(), i as u32)).collect();
    let set = ChangeSet::build(&touched, &lines, &[]);
    assert!(set.changes.len() <= MAX_CHANGES && set.folded > 0);
    assert_eq!(set.changes.iter().map(|c| u64::from(c.lines_changed)).sum::<u64>(), set.lines);
    assert!(
        serde_json::to_vec(&set.changes).unwrap().len()
            < bus_schema::codec::Limits::DEFAULT.max_payload
    );
    let (kept, summary) = set.changes.split_at(set.changes.len() - 1);
    assert_eq!(summary[0].file_path, format!("({} more files)", set.folded));
    assert!(
        kept.iter().all(|c| c.lines_changed >= 3000 - kept.len() as u32),
        "the largest changes are kept"
    );
}

// ---- asks ----

fn cli(args: &[&str]) -> Result<crate::Cli, clap::Error> {
    crate::Cli::try_parse_from(["cnctl", "contract"].iter().chain(args))
}

const ID: &str = "0b6f3c4e-9d1a-4c1e-8f7e-2a1b3c4d5e6f";

#[test]
fn ask_flags_become_asks_in_a_fixed_order() {
    let parsed = cli(&[
        "counter",
        ID,
        "--env",
        "prod",
        "--service",
        "api",
        "--waive",
        "load_test",
        "--shorten-canary",
        "2",
        "--relax",
        "max_p95_latency_ms=400",
        "--relax",
        "max_error_rate=0.02",
        "--waive",
        "load_test",
        "--justification",
        "hotfix",
    ])
    .unwrap();
    let crate::Command::Contract { command: ContractCommand::Counter(a), .. } = parsed.command
    else {
        panic!("not a counter")
    };
    let asks = asks_from_flags(a.shorten_canary, a.skip_canary, &a.relax, &a.waive);
    assert_eq!(
        asks,
        vec![
            Ask::ShortenCanary { stages: 2 },
            Ask::RelaxGuardrail { guardrail: "max_p95_latency_ms".into(), value: 400.0 },
            Ask::RelaxGuardrail { guardrail: "max_error_rate".into(), value: 0.02 },
            Ask::WaiveValidator { validator: ValidatorKind::LoadTest },
        ]
    );
}

#[test]
fn bad_asks_are_usage_errors() {
    for bad in [
        "max_error_rate",
        "max_latency=5",
        "max_error_rate=2",
        "max_error_rate=NaN",
        "max_traffic_step_percent=0",
        "max_traffic_step_percent=50",
        "max_p95_latency_ms=-1",
        "max_p99_latency_ms=fast",
    ] {
        assert!(parse_relax(bad).is_err(), "{bad:?} was accepted");
    }
    let step = parse_relax("max_traffic_step_percent=50").unwrap_err().to_string();
    assert!(step.contains("--shorten-canary"), "{step}");
    assert!(
        !parse_relax("max_latency=5").unwrap_err().to_string().contains("max_traffic_step_percent")
    );
    let base = ["counter", ID, "--env", "prod", "--service", "api", "--justification", "x"];
    let with = |extra: &[&str]| cli(&base.iter().chain(extra).copied().collect::<Vec<_>>());
    assert!(with(&["--waive", "vibes"]).is_err());
    assert!(with(&["--shorten-canary", "0"]).is_err());
    assert!(with(&["--skip-canary", "--shorten-canary", "2"]).is_err());
    assert!(
        cli(&[
            "counter",
            "not-a-uuid",
            "--env",
            "prod",
            "--service",
            "api",
            "--skip-canary",
            "--justification",
            "x"
        ])
        .is_err()
    );
    assert!(
        cli(&["counter", ID, "--env", "prod", "--service", "api", "--skip-canary"]).is_err(),
        "--justification is required"
    );
    assert!(with(&["--skip-canary"]).is_ok());
}

#[test]
fn the_requester_is_the_flag_else_user_and_never_blank() {
    assert_eq!(requester_name(Some("dev".into()), Some("me".into())), Ok("dev".into()));
    assert_eq!(requester_name(None, Some("me".into())), Ok("me".into()));
    assert!(requester_name(Some("  ".into()), None).is_err());
}

// ---- rendering ----

fn contract() -> Contract {
    Contract {
        contract_id: Uuid::from_u128(7),
        deployment_id: "cnctl-d7d1dee".into(),
        env: "stage".parse().unwrap(),
        service: "cnctl".parse().unwrap(),
        version: "d7d1dee".into(),
        status: ContractStatus::Draft,
        revision: 1,
        risk: RiskAssessment {
            score: 38.0,
            level: RiskLevel::Medium,
            confidence: 0.8,
            factors: vec![
                RiskFactor {
                    name: "dependencies".into(),
                    contribution: 8.0,
                    detail: String::new(),
                },
                RiskFactor {
                    name: "change_size".into(),
                    contribution: 15.0,
                    detail: "1234 lines in 40 files".into(),
                },
            ],
        },
        guardrails: Guardrails {
            max_error_rate: 0.01,
            max_p95_latency_ms: 500.0,
            max_p99_latency_ms: Some(900.0),
            max_traffic_step_percent: 25,
        },
        validators: vec![Validator {
            kind: ValidatorKind::Tests,
            reason: "always required".into(),
        }],
        canary: vec![
            CanaryStage { weight_percent: 10, min_duration_s: 120, min_samples: 30 },
            CanaryStage { weight_percent: 100, min_duration_s: 120, min_samples: 0 },
        ],
        rollback: RollbackPlan {
            possible: true,
            steps: vec!["set canary weight to 0".into()],
            estimated_s: 300,
            data_loss_risk: DataLossRisk::None,
        },
        suggestions: vec!["split the change".into()],
        reason: None,
        updated_at: "2026-11-22T10:00:00Z".parse().unwrap(),
    }
}

#[test]
fn a_contract_reads_with_every_factor_validator_stage_and_step() {
    let text = render_contract(&contract());
    for expected in [
        "contract 00000000-0000-0000-0000-000000000007  revision 1  status draft",
        "risk 38.0/100 (medium), confidence 0.80",
        "change_size    +15.0  1234 lines in 40 files",
        "dependencies    +8.0",
        "max error rate      1.00%",
        "max p99 latency     900 ms",
        "tests  always required",
        "canary in 2 stages",
        "1.  10% of traffic for at least 2m 00s, 30 samples",
        "2. 100% of traffic for at least 2m 00s\n",
        "rollback possible, about 5m 00s, data-loss risk none",
        "1. set canary weight to 0",
        "- split the change",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn a_reply_says_each_ask_and_why_and_the_new_revision() {
    let mut revised = contract();
    (revised.revision, revised.status) = (2, ContractStatus::Negotiated);
    let reply = NegotiationReply {
        contract_id: Uuid::from_u128(7),
        round: 1,
        accepted: true,
        decisions: vec![
            AskDecision {
                ask: Ask::ShortenCanary { stages: 2 },
                accepted: true,
                reason: "medium risk allows 2 stages".into(),
            },
            AskDecision {
                ask: Ask::WaiveValidator { validator: ValidatorKind::Tests },
                accepted: false,
                reason: "tests are never waived".into(),
            },
        ],
        contract: Some(revised),
        reason: None,
    };
    let text = render_reply(&reply);
    assert!(
        text.contains("round 1 on contract 00000000-0000-0000-0000-000000000007: accepted in part"),
        "{text}"
    );
    assert!(
        text.contains("accepted  shorten the canary to 2 stages: medium risk allows 2 stages"),
        "{text}"
    );
    assert!(text.contains("REFUSED   waive the tests validator: tests are never waived"), "{text}");
    assert!(text.contains("the contract is now revision 2, status negotiated"), "{text}");
    assert!(!all_accepted(&reply));
    let unchanged = NegotiationReply { decisions: vec![], contract: None, ..reply };
    assert!(all_accepted(&unchanged) && render_reply(&unchanged).contains("contract accepted"));
    let refused = NegotiationReply {
        accepted: false,
        reason: Some("cannot accept: contract is rejected: the contract is closed".into()),
        ..unchanged
    };
    let text = render_reply(&refused);
    assert!(
        text.contains("refused") && text.contains("why: cannot accept: contract is rejected"),
        "{text}"
    );
}

#[test]
fn stats_show_calibration_and_weights_by_magnitude() {
    let stats = ModelStats {
        observations: 42,
        brier: Some(0.1234),
        ece: Some(0.0217),
        reliability: vec![ReliabilityBucket {
            from: 0.0,
            to: 0.2,
            count: 30,
            mean_predicted: 0.08,
            observed_rate: 0.1,
        }],
        bias: -1.5,
        weights: vec![
            FactorWeight { name: "caching".into(), weight: 0.2 },
            FactorWeight { name: "schema".into(), weight: -1.1 },
        ],
        calibration: Some(Calibration { a: 0.93, b: -0.04 }),
        updated_at: None,
    };
    let text = render_stats(&stats);
    assert!(text.contains("42 deploy outcomes") && text.contains("Brier score 0.1234"), "{text}");
    assert!(
        text.contains("expected calibration error 0.0217") && text.contains("sigmoid(0.930"),
        "{text}"
    );
    assert!(
        text.contains("0.00–0.20") && text.contains("0.080") && text.contains("0.100"),
        "{text}"
    );
    assert!(text.find("schema").unwrap() < text.find("caching").unwrap(), "{text}");
    let empty = ModelStats {
        observations: 0,
        brier: None,
        ece: None,
        reliability: vec![],
        bias: 0.0,
        weights: vec![],
        calibration: None,
        updated_at: None,
    };
    assert!(render_stats(&empty).contains("none yet"));
}
