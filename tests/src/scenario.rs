//! The vocabulary of fleet scenarios: events as a pipeline publishes them, and questions
//! about the proof log. Like the tests that use them, they fail by panicking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bus_schema::Timestamp;
use bus_schema::proof::{ProofKind, ProofRecord};
use serde_json::{Value, json};

use crate::fleet::Fleet;
use crate::proof_log::{StoredRecord, of_kind};

/// Publishes JSON as the pipeline user, exactly like `nats pub SUBJECT 'JSON'`.
pub async fn pipeline_pub(fleet: &Fleet, subject: &str, body: Value) {
    let client = fleet.client_as("pipeline").await.unwrap();
    client.publish(subject.to_owned(), body.to_string().into()).await.unwrap();
    client.flush().await.unwrap();
}

pub fn now() -> String {
    Timestamp::now().to_string()
}

pub fn deploy(
    env: &str,
    service: &str,
    version: &str,
    previous: Option<&str>,
    status: &str,
) -> Value {
    json!({"service": service, "env": env, "version": version, "previous_version": previous, "status": status, "timestamp": now()})
}

/// A pipeline deploys `service` to prod (1.14.2, which runs) and then 1.15.0, which fails: the
/// fleet answers with a rollback waiting for a human.
pub async fn failed_prod_deploy(fleet: &Fleet, service: &str) {
    let subject = format!("cn.events.deploy.prod.{service}");
    pipeline_pub(fleet, &subject, deploy("prod", service, "1.14.2", None, "succeeded")).await;
    pipeline_pub(fleet, &subject, deploy("prod", service, "1.15.0", Some("1.14.2"), "failed"))
        .await;
}

pub fn crash(env: &str, service: &str, looping: bool) -> Value {
    json!({"service": service, "env": env, "crash_looping": looping, "restarts": 4, "timestamp": now()})
}

pub fn for_service(records: &[StoredRecord], kind: ProofKind, service: &str) -> Vec<ProofRecord> {
    of_kind(records, kind)
        .into_iter()
        .filter(|r| r.service.as_ref().is_some_and(|s| s.as_str() == service))
        .collect()
}

pub fn position(records: &[StoredRecord], kind: ProofKind, service: &str) -> usize {
    records
        .iter()
        .position(|r| {
            r.record.as_ref().is_some_and(|r| {
                r.kind == kind && r.service.as_ref().is_some_and(|s| s.as_str() == service)
            })
        })
        .unwrap_or_else(|| panic!("no {kind} for {service}"))
}

/// A metric sample `offset_s` from now.
pub fn metric_at(env: &str, service: &str, offset_s: i64, fields: Value) -> Value {
    let now = Timestamp::now();
    let at = if offset_s >= 0 {
        now.plus(Duration::from_secs(offset_s as u64))
    } else {
        now.minus(Duration::from_secs(offset_s.unsigned_abs()))
    };
    let mut body = json!({"service": service, "env": env, "timestamp": at.to_string()});
    body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    body
}

/// Runs the cnctl binary as a NATS user, with `stdin` as its input, and waits for it. The
/// operator-name and wait variables of the caller's environment are not passed on.
pub fn cnctl(
    fleet: &Fleet,
    user: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    use std::io::Write;
    let mut child = cnctl_spawn(fleet, user, args);
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// cnctl started as `user` with its standard streams piped, for a command that runs a while
/// (`rollout get --watch`).
pub fn cnctl_spawn(fleet: &Fleet, user: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new(crate::fleet::binary("cnctl").unwrap())
        .args(args)
        .env("NATS_URL", fleet.server.url())
        .env("NATS_USER", user)
        .env("NATS_PASSWORD_FILE", fleet.password_file(user))
        .env_remove("CN_OPERATOR")
        .env_remove("CN_APPROVAL_WAIT")
        // As in a container's shell: who runs cnctl is the account, not the environment.
        .env_remove("USER")
        .env_remove("LOGNAME")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// A crash loop in stage, stamped in the recent past, until its restart is executed.
pub async fn crash_restarted(fleet: &Fleet, service: &str) {
    let mut deployed = deploy("stage", service, "2.0.0", Some("1.9.0"), "succeeded");
    deployed["timestamp"] = metric_at("stage", service, -700, json!({}))["timestamp"].clone();
    pipeline_pub(fleet, &format!("cn.events.deploy.stage.{service}"), deployed).await;
    pipeline_pub(
        fleet,
        &format!("cn.events.metric.stage.{service}"),
        metric_at("stage", service, -600, json!({"crash_looping": true, "restarts": 4})),
    )
    .await;
    fleet
        .records_until("the restart to be executed", |r| {
            !for_service(r, ProofKind::ActionExecuted, service).is_empty()
        })
        .await
        .unwrap();
}

/// After [`crash_restarted`]: the service recovers, the restart is judged once the verification
/// window (5 min of the service's time) has run out, and then — still within the restart's
/// 60 s cooldown — a latency problem whose first choice is a restart too. Returns the proof
/// log once that restart was refused.
pub async fn latency_within_the_cooldown(fleet: &Fleet, service: &str) -> Vec<StoredRecord> {
    let subject = format!("cn.events.metric.stage.{service}");
    for offset in (-590..-250).step_by(10) {
        pipeline_pub(
            fleet,
            &subject,
            metric_at(
                "stage",
                service,
                offset,
                json!({"crash_looping": false, "p95_latency_ms": 150}),
            ),
        )
        .await;
    }
    for offset in (-240..-90).step_by(10) {
        pipeline_pub(
            fleet,
            &subject,
            metric_at(
                "stage",
                service,
                offset,
                json!({"crash_looping": false, "p95_latency_ms": 2500}),
            ),
        )
        .await;
    }
    fleet
        .records_until("the second restart to be refused", |r| {
            !for_service(r, ProofKind::ActionRefused, service).is_empty()
        })
        .await
        .unwrap()
}

/// `GET path` on `addr` (host:port) over plain HTTP/1.1: the whole response, head and body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    http_request(addr, "GET", path, &[], None)
}

/// One plain HTTP/1.1 request (`Connection: close`), with a JSON body if any: the whole
/// response, head and body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&Value>,
) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = json.map(Value::to_string).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if json.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    write!(tcp, "{head}\r\n{body}")?;
    // Read to the end, or as far as Content-Length says (some servers keep the connection).
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = tcp.read(&mut buf)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            });
            if length.is_some_and(|n: usize| rest.len() >= n) {
                break;
            }
        }
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}
