//! The house rule, checked: agents and tools share only the crates under `crates/`. No crate
//! outside this test crate may depend on a crate under `agents/` (an agent linking another
//! agent, or a tool linking one, is how the shared tier erodes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

#[test]
fn no_crate_depends_on_an_agent_crate() {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let agents = repo().join("agents");
    let tests = repo().join("tests");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for package in meta["packages"].as_array().unwrap() {
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
        if manifest.starts_with(&tests) {
            continue; // integration tests and the learning evaluation drive agents in process
        }
        checked += 1;
        for dep in package["dependencies"].as_array().unwrap() {
            let Some(path) = dep["path"].as_str().map(PathBuf::from) else { continue };
            if path.starts_with(&agents) {
                wrong.push(format!(
                    "{} depends on {} ({})",
                    package["name"],
                    dep["name"],
                    path.display()
                ));
            }
        }
        let dir = manifest.parent().unwrap();
        let tier =
            ["crates", "agents", "tools"].iter().any(|t| dir.parent() == Some(&repo().join(t)));
        assert!(tier, "{} sits outside crates/, agents/ and tools/", dir.display());
    }
    assert!(checked >= 12, "only {checked} crates were checked");
    assert!(wrong.is_empty(), "share through crates/ instead:\n{}", wrong.join("\n"));
}
