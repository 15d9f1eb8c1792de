//! The house rule, checked: agents and tools share only the crates under `crates/`. No crate
//! outside this test crate may depend on a crate under `agents/` (an agent linking another
//! agent, or a tool linking one, is how the shared tier erodes), nor on this test crate, which
//! links agents (an agent's own tests use `crates/test-support`).

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
            if path.starts_with(&agents) || path.starts_with(&tests) {
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
    assert!(checked >= 13, "only {checked} crates were checked");
    assert!(wrong.is_empty(), "share through crates/ instead:\n{}", wrong.join("\n"));
}

/// The modules of `src/` (top-level files) each module names with `crate::…`, outside comments
/// and test modules.
fn module_imports(
    src: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let modules: Vec<String> = std::fs::read_dir(src)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name().to_str().and_then(|n| n.strip_suffix(".rs")).map(str::to_owned)
        })
        .filter(|m| m != "lib" && m != "main" && !m.ends_with("_tests"))
        .collect();
    let mut graph = std::collections::BTreeMap::new();
    for m in &modules {
        let text = std::fs::read_to_string(src.join(format!("{m}.rs"))).unwrap();
        let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
        let mut uses = std::collections::BTreeSet::new();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for piece in line.split("crate::").skip(1) {
                let name: String =
                    piece.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if &name != m && modules.contains(&name) {
                    uses.insert(name);
                }
            }
        }
        graph.insert(m.clone(), uses);
    }
    graph
}

/// A cycle through `from`, if there is one.
fn cycle_from(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    from: &str,
) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_owned(), vec![from.to_owned()])];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in &graph[&node] {
            if next == from {
                return Some([path.clone(), vec![from.to_owned()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

#[test]
fn modules_import_a_foundation_rather_than_each_other_in_circles() {
    let mut cycles = Vec::new();
    for tier in ["crates", "agents", "tools"] {
        for krate in std::fs::read_dir(repo().join(tier)).unwrap().flatten() {
            let src = krate.path().join("src");
            if !src.is_dir() {
                continue;
            }
            let graph = module_imports(&src);
            for m in graph.keys() {
                if let Some(c) = cycle_from(&graph, m) {
                    cycles.push(format!("{}: {}", src.display(), c.join(" → ")));
                    break;
                }
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}
