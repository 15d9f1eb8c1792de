//! `cnctl contract from-git --offline` on this repository's own history, as a developer runs it:
//! a real git, a real change set, the negotiator's own drafting model, no NATS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bus_schema::Contract;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn text(out: &Output) -> String {
    format!("exit {:?}\n--- stdout\n{}--- stderr\n{}", out.status.code(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `HEAD~5..HEAD`, or as much history as the checkout has (a shallow clone may have less).
fn recent_range() -> String {
    let out = Command::new("git").arg("-C").arg(repo()).args(["rev-list", "--count", "HEAD"]).output().unwrap();
    let commits: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("this test needs the repository's git history");
    match commits.saturating_sub(1).min(5) {
        0 => "HEAD".to_owned(),
        n => format!("HEAD~{n}..HEAD"),
    }
}

/// Runs cnctl with no NATS in reach: `--offline` must not need it.
fn cnctl(args: &[&str]) -> Output {
    Command::new(cn_tests::fleet::binary("cnctl").unwrap()).args(args).env("NATS_URL", "nats://127.0.0.1:1").output().unwrap()
}

fn from_git(range: &str, extra: &[&str]) -> Output {
    let repo = repo();
    let mut args = vec!["contract", "from-git", "--offline", "--repo", repo.to_str().unwrap(), "--env", "stage", "--service", "cnctl"];
    args.extend(extra);
    // After `--`, so that a hostile range reaches cnctl's own check rather than clap's.
    args.extend(["--", range]);
    cnctl(&args)
}

#[test]
fn from_git_offline_drafts_a_contract_from_this_repositorys_history() {
    let range = recent_range();
    let out = from_git(&range, &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let contract: Contract = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!((contract.env.as_str(), contract.service.as_str()), ("stage", "cnctl"));
    assert!(!contract.risk.factors.is_empty(), "no risk factors: {}", text(&out));
    assert!(!contract.validators.is_empty(), "no validators: {}", text(&out));
    assert!(contract.deployment_id.starts_with("cnctl-"), "{}", contract.deployment_id);
    assert!(!contract.version.is_empty());
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains(&format!("change set {range}:")) && summary.contains("files"), "{summary}");
}

#[test]
fn from_git_offline_reads_as_text_with_the_risk_and_the_canary() {
    let out = from_git(&recent_range(), &["--version", "v0.1.0-test", "--dependency", "nats"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    for expected in ["risk ", "canary", "guardrails", "validators", "rollback", "v0.1.0-test", "blast_radius"] {
        assert!(printed.contains(expected), "missing {expected:?}:\n{printed}");
    }
}

#[test]
fn a_bad_range_or_repository_is_a_clear_error() {
    for (range, says) in
        [("no-such-rev..HEAD", "no-such-rev is not a commit"), ("--output=/tmp/x", "cannot be an option"), ("HEAD; rm -rf /", "whitespace")]
    {
        let out = from_git(range, &[]);
        assert_eq!(out.status.code(), Some(1), "{range}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{range}: {}", text(&out));
        assert!(out.stdout.is_empty(), "{range}: {}", text(&out));
    }
    let nowhere = tempfile::tempdir().unwrap();
    let out =
        cnctl(&["contract", "from-git", "--offline", "--repo", nowhere.path().to_str().unwrap(), "HEAD", "--env", "stage", "--service", "cnctl"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a git repository"), "{}", text(&out));
}
