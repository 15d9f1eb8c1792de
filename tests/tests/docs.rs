//! `docs/contract.md` is the public contract; these tests keep it equal to the code: every
//! subject family, reason code, reject reason and proof kind on both sides, and the gates in
//! the order governance applies them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::path::{Path, PathBuf};

use bus_schema::proof::ProofKind;
use bus_schema::subject::FAMILIES;
use bus_schema::{ReasonCode, RejectReason};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn contract() -> String {
    std::fs::read_to_string(repo().join("docs/contract.md")).unwrap()
}

/// The backticked values in column `col` of the table under `## {section}`.
fn column(doc: &str, section: &str, col: usize) -> Vec<String> {
    let start =
        doc.find(&format!("\n## {section}\n")).unwrap_or_else(|| panic!("no section {section}"));
    let body = &doc[start + section.len() + 5..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .skip(1) // the header
        .filter_map(|l| l.split('|').nth(col + 1))
        .filter_map(|cell| {
            cell.trim().strip_prefix('`').and_then(|c| c.split('`').next()).map(str::to_owned)
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn every_subject_family_is_documented_and_nothing_else() {
    let code: Vec<String> = FAMILIES.iter().map(|f| f.template()).collect();
    assert_eq!(sorted(column(&contract(), "Subjects", 0)), sorted(code));
}

#[test]
fn the_actions_and_the_global_block_list_are_the_codes() {
    let doc = contract();
    let builtin: Vec<String> =
        bus_schema::Action::BUILT_IN.iter().map(ToString::to_string).collect();
    assert_eq!(column(&doc, "Actions", 0)[..builtin.len()], builtin[..]);
    let blocked: Vec<String> =
        bus_schema::action::GLOBAL_BLOCK_LIST.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(column(&doc, "Actions", 0)[builtin.len()..], blocked[..]);
}

#[test]
fn reason_codes_reject_reasons_and_proof_kinds_are_the_codes() {
    let doc = contract();
    let names = |all: Vec<&str>| sorted(all.into_iter().map(str::to_owned).collect());
    assert_eq!(
        sorted(column(&doc, "Reason codes", 0)),
        names(ReasonCode::ALL.iter().map(|r| r.as_str()).collect())
    );
    assert_eq!(
        sorted(column(&doc, "Reject reasons", 0)),
        names(RejectReason::ALL.iter().map(|r| r.as_str()).collect())
    );
    assert_eq!(
        sorted(column(&doc, "Proof kinds", 0)),
        names(ProofKind::ALL.iter().map(|k| k.as_str()).collect())
    );
}

/// `InvalidProposal` → `invalid_proposal`.
fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[test]
fn the_gates_are_documented_in_the_order_governance_applies_them() {
    // The order in which gates.rs first refuses with each reason code, then the human.
    let source =
        std::fs::read_to_string(repo().join("agents/governance-gate/src/gates.rs")).unwrap();
    let source = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
    let mut order: Vec<String> = Vec::new();
    for piece in source.split("ReasonCode::").skip(1) {
        let name: String = piece.chars().take_while(char::is_ascii_alphanumeric).collect();
        let code = snake(&name);
        if !order.contains(&code) {
            order.push(code);
        }
    }
    assert!(source.contains("Verdict::NeedsHuman"), "the last gate asks a human");
    order.push(ReasonCode::ApprovalRequired.as_str().to_owned());
    assert_eq!(column(&contract(), "Governance gates", 2), order);
}

#[test]
fn the_readme_is_a_front_door_and_code_cites_only_documents_in_the_repository() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.len() <= 20 * 1024, "README.md is {} bytes; move detail to docs/", readme.len());
    for doc in [
        "docs/contract.md",
        "docs/agents.md",
        "docs/operations.md",
        "docs/development.md",
        "CHANGELOG.md",
    ] {
        assert!(readme.contains(doc), "README.md does not link {doc}");
        assert!(repo().join(doc).is_file(), "{doc} is missing");
    }
    let mut cites = Vec::new();
    for top in ["crates", "agents", "tools", "tests"] {
        let mut stack = vec![repo().join(top)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && path.file_name() != Some("docs.rs".as_ref())
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (n, line) in text.lines().enumerate() {
                        if line.contains("DESIGN.md") || line.contains("DESIGN §") {
                            cites.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
    }
    assert!(cites.is_empty(), "cite docs/contract.md instead:\n{}", cites.join("\n"));
}

/// The version every binary reports (`--version`, `agent_started`, `cnctl status`) is the
/// workspace's, and it follows the changelog: the newest release, or the next minor one with
/// `-dev` while the changelog's first entry is "Unreleased". (It said 0.1.0 beside a
/// changelog at 0.6.0.)
#[test]
fn the_version_is_the_changelogs() {
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let changelog = std::fs::read_to_string(repo().join("CHANGELOG.md")).unwrap();
    let entries: Vec<&str> = changelog
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split(" — ").next())
        .filter(|v| *v == "Unreleased" || v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    let released = entries.iter().find(|e| **e != "Unreleased").unwrap();
    let expected = if entries[0] == "Unreleased" {
        let mut parts = released.split('.').map(|p| p.parse::<u32>().unwrap());
        let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
        format!("{major}.{}.0-dev", minor + 1)
    } else {
        (*released).to_owned()
    };
    assert_eq!(version, expected, "Cargo.toml's workspace version against CHANGELOG.md");
    for member in ["agents", "crates", "tools"] {
        for dir in std::fs::read_dir(repo().join(member)).unwrap() {
            let manifest = dir.unwrap().path().join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest).unwrap();
            assert!(
                text.contains("version.workspace = true"),
                "{} sets its own version",
                manifest.display()
            );
        }
    }
    let out = std::process::Command::new(cn_tests::fleet::binary("cnctl").unwrap())
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("cnctl {version}"));
}

/// The README publishes `deploy/examples/contract-request.json` as a newcomer's first contract
/// request: it must be one the negotiator takes.
#[test]
fn the_readmes_example_request_is_a_valid_contract_request() {
    use bus_schema::Validate;
    use bus_schema::codec::{Encoding, Limits, decode};
    let bytes = std::fs::read(repo().join("deploy/examples/contract-request.json")).unwrap();
    let request: bus_schema::ContractRequest =
        decode(Encoding::Json, &bytes, &Limits::DEFAULT).unwrap();
    request.validate().unwrap();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains("cnctl publish contract deploy/examples/contract-request.json"));
}
