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
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `HEAD~5..HEAD`, or as much history as the checkout has (a shallow clone may have less).
fn recent_range() -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["rev-list", "--count", "HEAD"])
        .output()
        .unwrap();
    let commits: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("this test needs the repository's git history");
    match commits.saturating_sub(1).min(5) {
        0 => "HEAD".to_owned(),
        n => format!("HEAD~{n}..HEAD"),
    }
}

/// Runs cnctl with no NATS in reach: `--offline` must not need it.
fn cnctl(args: &[&str]) -> Output {
    Command::new(cn_tests::fleet::binary("cnctl").unwrap())
        .args(args)
        .env("NATS_URL", "nats://127.0.0.1:1")
        .output()
        .unwrap()
}

fn from_git(range: &str, extra: &[&str]) -> Output {
    let repo = repo();
    let mut args = vec![
        "contract",
        "from-git",
        "--offline",
        "--repo",
        repo.to_str().unwrap(),
        "--env",
        "stage",
        "--service",
        "cnctl",
    ];
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
    let contract: Contract =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!((contract.env.as_str(), contract.service.as_str()), ("stage", "cnctl"));
    assert!(!contract.risk.factors.is_empty(), "no risk factors: {}", text(&out));
    assert!(!contract.validators.is_empty(), "no validators: {}", text(&out));
    assert!(contract.deployment_id.starts_with("cnctl-"), "{}", contract.deployment_id);
    assert!(!contract.version.is_empty());
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains(&format!("change set {range}:")) && summary.contains("files"),
        "{summary}"
    );
}

#[test]
fn from_git_offline_reads_as_text_with_the_risk_and_the_canary() {
    let out = from_git(&recent_range(), &["--version", "v0.1.0-test", "--dependency", "nats"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    for expected in
        ["risk ", "canary", "guardrails", "validators", "rollback", "v0.1.0-test", "blast_radius"]
    {
        assert!(printed.contains(expected), "missing {expected:?}:\n{printed}");
    }
}

#[test]
fn a_bad_range_or_repository_is_a_clear_error() {
    for (range, says) in [
        ("no-such-rev..HEAD", "no-such-rev is not a commit"),
        ("--output=/tmp/x", "cannot be an option"),
        ("HEAD; rm -rf /", "whitespace"),
    ] {
        let out = from_git(range, &[]);
        assert_eq!(out.status.code(), Some(1), "{range}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{range}: {}", text(&out));
        assert!(out.stdout.is_empty(), "{range}: {}", text(&out));
    }
    let nowhere = tempfile::tempdir().unwrap();
    let out = cnctl(&[
        "contract",
        "from-git",
        "--offline",
        "--repo",
        nowhere.path().to_str().unwrap(),
        "HEAD",
        "--env",
        "stage",
        "--service",
        "cnctl",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a git repository"),
        "{}",
        text(&out)
    );
}

/// Runs git in `dir` for the test's own setup, failing the test if git does.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository set up to run a program of its choosing: a commit carrying a (fake) signature,
/// `log.showSignature` on with `gpg.program` pointing at a script, and an fsmonitor hook and an
/// external diff driver pointing at the same script. The script leaves a marker file behind.
fn hostile_repo(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let marker = dir.join("ran");
    let script = dir.join("evil.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = dir.join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "."]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "base"]);
    std::fs::write(repo.join("schema.sql"), "create table t (id int);\n").unwrap();
    git(&repo, &["add", "schema.sql"]);
    git(&repo, &["commit", "-q", "-m", "add a table"]);
    let (tree, parent) =
        (git(&repo, &["rev-parse", "HEAD^{tree}"]), git(&repo, &["rev-parse", "HEAD"]));
    let object = format!(
        "tree {tree}\nparent {parent}\nauthor t <t@example.com> 1700000000 +0000\ncommitter t <t@example.com> 1700000000 +0000\n\
         gpgsig -----BEGIN PGP SIGNATURE-----\n \n fake\n -----END PGP SIGNATURE-----\n\nsigned commit\n"
    );
    std::fs::write(dir.join("commit"), object).unwrap();
    let signed =
        git(&repo, &["hash-object", "-t", "commit", "-w", dir.join("commit").to_str().unwrap()]);
    git(&repo, &["update-ref", "HEAD", &signed]);
    let script = script.to_str().unwrap();
    for (key, value) in [
        ("log.showSignature", "true"),
        ("gpg.program", script),
        ("core.fsmonitor", script),
        ("diff.external", script),
    ] {
        git(&repo, &["config", key, value]);
    }
    repo
}

#[test]
fn from_git_never_runs_a_program_the_repository_configures() {
    let dir = tempfile::tempdir().unwrap();
    let repo = hostile_repo(dir.path());
    let marker = dir.path().join("ran");
    // The repository is hostile indeed: a plain `git log` runs the script.
    let _ = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["log", "-1", "--format=%s"])
        .output()
        .unwrap();
    assert!(
        marker.exists(),
        "the test repository should make a plain `git log` run its gpg.program"
    );
    std::fs::remove_file(&marker).unwrap();

    for range in ["HEAD~2..HEAD", "HEAD"] {
        let args = [
            "contract",
            "from-git",
            "--offline",
            "--repo",
            repo.to_str().unwrap(),
            "--env",
            "stage",
            "--service",
            "db",
            "--json",
            "--",
            range,
        ];
        let out = cnctl(&args);
        assert!(out.status.success(), "{range}: {}", text(&out));
        assert!(!marker.exists(), "{range}: cnctl ran a program the repository chose");
        let contract: Contract =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        assert_eq!(contract.service.as_str(), "db");
    }
}
