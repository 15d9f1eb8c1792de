//! The deployment files, checked as far as this machine allows (no Docker engine here):
//! the server config is valid for nats-server, every agent has a compose service that runs
//! its binary as its own NATS user, every compose service is something we build, and the image
//! ships every binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bus_schema::fleet::fleet;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The top-level services of docker-compose.yml and the text of each block.
fn compose_services() -> BTreeMap<String, String> {
    compose_file_services("docker-compose.yml")
}

fn compose_file_services(file: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let mut services = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_services = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() && !line.starts_with('#') {
            in_services = line.trim_end() == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 2 && line.trim_end().ends_with(':') && !line.trim_start().starts_with('#') {
            let name = line.trim().trim_end_matches(':').to_owned();
            services.insert(name.clone(), String::new());
            current = Some(name);
        } else if let Some(name) = &current {
            let block = services.get_mut(name).unwrap();
            block.push_str(line);
            block.push('\n');
        }
    }
    services
}

#[test]
fn every_agent_has_a_compose_service_running_its_binary_as_its_own_user() {
    let services = compose_services();
    for agent in fleet() {
        let name = agent.name.to_string();
        let block = services.get(&name).unwrap_or_else(|| panic!("no compose service for {name}"));
        assert!(block.contains(&format!("command: [\"{name}\"]")), "{name}: {block}");
        assert!(block.contains(&format!("NATS_USER: {name}")), "{name}: {block}");
        assert!(
            block.contains(&format!("NATS_PASSWORD_FILE: /creds/{name}.password")),
            "{name}: {block}"
        );
    }
    assert!(
        services["executor"].contains("governance-public")
            && !services["executor"].contains("governance-secret"),
        "the executor gets only the public key"
    );
    assert!(services["governance-gate"].contains("governance-secret"));
}

#[test]
fn every_compose_service_is_something_we_build_or_nats() {
    let agents: Vec<String> = fleet().iter().map(|a| a.name.to_string()).collect();
    for (service, block) in compose_services() {
        if agents.contains(&service) {
            assert!(
                block.contains("<<: *agent"),
                "{service} waits for the streams like every agent"
            );
        }
        match service.as_str() {
            "nats" => assert!(block.contains("image: nats:")),
            "init" | "cnctl" => assert!(block.contains("cnctl")),
            // The console runs as its own user, keeps its chain's state in the data volume,
            // and publishes its port (where people may decide) on loopback only.
            "console" => {
                assert!(
                    block.contains("[\"cn-console\"]")
                        && block.contains("NATS_USER: console")
                        && block.contains("/creds/console.password")
                        && block.contains("CN_CONSOLE_STATE_DIR: /data/")
                        && block.contains("CN_CONSOLE_DECISION_TOKEN_FILE: /creds/console.token"),
                    "{block}"
                );
                assert!(block.contains("\"127.0.0.1:9464:9464\""), "{block}");
                cn_tests::fleet::binary("cn-console").unwrap();
            }
            // The bootstrap step: streams created by the only user allowed to, before the agents.
            "streams" => assert!(
                block.contains("\"streams\", \"ensure\"") && block.contains("NATS_USER: bootstrap"),
                "{block}"
            ),
            other => {
                assert!(
                    agents.iter().any(|a| a == other),
                    "compose service {other} is not a fleet agent"
                );
                cn_tests::fleet::binary(other).unwrap();
            }
        }
    }
    cn_tests::fleet::binary("cnctl").unwrap();
}

#[test]
fn the_image_ships_every_binary() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for name in fleet().iter().map(|a| a.name.to_string()).chain(["cnctl".to_owned()]) {
        assert!(
            dockerfile.contains(&format!("/src/target/release/{name}")),
            "Dockerfile does not copy {name}"
        );
    }
}

#[test]
fn the_server_config_is_valid_for_nats_server() {
    let server = std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"));
    // One server, and a node of the compose cluster (which includes the one-server config).
    for conf in ["deploy/nats-server.conf", "deploy/nats-cluster.conf"] {
        let mut cmd = Command::new(&server);
        cmd.arg("-t")
            .arg("-c")
            .arg(repo().join(conf))
            .env("CN_JETSTREAM_DIR", "/tmp/cn-config-check")
            .env("CN_NATS_NAME", "cn-1");
        for user in cnctl::creds::users() {
            cmd.env(cnctl::creds::password_var(&user), "config-check");
        }
        let out =
            cmd.output().expect("nats-server on PATH or in NATS_SERVER (scripts/test sets it)");
        assert!(out.status.success(), "{conf}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The cluster override: two more nodes on the cluster config, three replicas, and every
/// service of the fleet given all three URLs.
#[test]
fn the_cluster_override_gives_every_client_every_node() {
    let base = compose_services();
    let cluster = compose_file_services("docker-compose.cluster.yml");
    let text = std::fs::read_to_string(repo().join("docker-compose.cluster.yml")).unwrap();
    assert!(
        text.contains("&cluster-url nats://nats:4222,nats://nats-2:4222,nats://nats-3:4222"),
        "{text}"
    );
    for node in ["nats", "nats-2", "nats-3"] {
        let block = &cluster[node];
        assert!(block.contains("nats-cluster.conf"), "{node}: {block}");
    }
    assert!(cluster["streams"].contains("\"--replicas\", \"3\""), "{}", cluster["streams"]);
    for (service, block) in &base {
        if block.contains("NATS_URL") || block.contains("<<: *agent-env") {
            let over =
                cluster.get(service).unwrap_or_else(|| panic!("{service} is not in the override"));
            assert!(over.contains("NATS_URL: *cluster-url"), "{service}: {over}");
        }
    }
    for service in cluster.keys() {
        assert!(base.contains_key(service) || service.starts_with("nats-"), "{service} is new");
    }
}
