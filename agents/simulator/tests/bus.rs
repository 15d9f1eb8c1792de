//! The simulator binary against a real nats-server: it publishes its world's events on
//! CN_EVENTS and a `sim` restart clears a crash loop in later samples.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::HeaderMap;
use bus_schema::codec::Outgoing;
use bus_schema::{
    Action, ActionParams, MetricSample, SimAction, Timestamp, Uuid, headers, subject,
};
use futures_util::StreamExt;
use test_support::{NatsServer, eventually};

const SIMULATOR: &str = env!("CARGO_BIN_EXE_simulator");

/// The simulator process, stopped on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(server: &NatsServer, dir: &std::path::Path, extra: &[&str]) -> Running {
    let child = Command::new(SIMULATOR)
        .args(["--nats-url", &server.url(), "--heartbeat-interval", "200ms", "--data-dir"])
        .arg(dir.join("data"))
        .args(extra)
        .env_remove("NATS_URL")
        .env_remove("CN_SIM_SCENARIO")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("simulator.log")).unwrap())
        .spawn()
        .unwrap();
    Running(child)
}

async fn next_sample(sub: &mut async_nats::Subscriber) -> MetricSample {
    let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("a sample within 20 s")
        .expect("subscription open");
    serde_json::from_slice(&msg.payload).unwrap()
}

#[tokio::test]
async fn publishes_its_world_and_a_restart_clears_a_crash_loop() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let scenario = dir.path().join("s.toml");
    std::fs::write(
        &scenario,
        "seed = 3\ntick_s = 10\nspeed = 20\n[[service]]\nenv = \"stage\"\nname = \"web\"\nfailure = \"crash_loop\"\n",
    )?;
    let client = server.client().await?;
    let mut samples = client.subscribe("cn.events.metric.stage.web").await?;
    let _sim =
        spawn(&server, dir.path(), &["--scenario", scenario.to_str().unwrap(), "--lead", "30m"]);

    let first = next_sample(&mut samples).await;
    assert_eq!(first.crash_looping, Some(true), "the crash loop starts at once");
    assert!(
        first.timestamp < Timestamp::now().minus(Duration::from_secs(25 * 60)),
        "simulated time starts --lead behind"
    );
    let js = async_nats::jetstream::new(client.clone());
    eventually(Duration::from_secs(10), "metric and deploy events stored on CN_EVENTS", || {
        let js = js.clone();
        async move {
            Ok((js.get_stream("CN_EVENTS").await?.info().await?.state.messages >= 4).then_some(()))
        }
    })
    .await?;

    let action = SimAction {
        proposal_id: Uuid::new_v4(),
        env: "stage".parse()?,
        service: "web".parse()?,
        action: Action::Restart,
        params: ActionParams::default(),
        issued_at: Timestamp::now(),
    };
    let out = Outgoing::new(&subject::SIM_ACTIONS.subject(&action.env, &action.service), &action)?;
    let mut h = HeaderMap::new();
    h.insert(headers::CONTENT_TYPE, headers::MSGPACK);
    h.insert(headers::MSG_ID, action.proposal_id.to_string().as_str());
    js.publish_with_headers(out.subject, h, out.payload.into()).await?.await?;

    // Ticks computed before the action still show the loop; then it is gone for good.
    let mut waited = 0;
    while next_sample(&mut samples).await.crash_looping == Some(true) {
        waited += 1;
        assert!(waited < 40, "the crash loop did not clear after the restart");
    }
    for _ in 0..5 {
        let s = next_sample(&mut samples).await;
        assert_eq!(s.crash_looping, Some(false));
        assert!(s.error_rate.unwrap() < 0.005);
    }
    Ok(())
}

#[tokio::test]
async fn without_a_scenario_it_is_idle_and_consumes_actions_for_unknown_services()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let client = server.client().await?;
    let mut events = client.subscribe("cn.events.>").await?;
    let _sim = spawn(&server, dir.path(), &[]);
    let js = async_nats::jetstream::new(client.clone());
    let consumer = eventually(Duration::from_secs(10), "the simulator's consumer", || {
        let js = js.clone();
        async move {
            Ok(js
                .get_stream("CN_WORK")
                .await?
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>("simulator-actions")
                .await
                .ok())
        }
    })
    .await?;
    let action = SimAction {
        proposal_id: Uuid::new_v4(),
        env: "stage".parse()?,
        service: "nobody".parse()?,
        action: Action::Restart,
        params: ActionParams::default(),
        issued_at: Timestamp::now(),
    };
    let out = Outgoing::new(&subject::SIM_ACTIONS.subject(&action.env, &action.service), &action)?;
    let mut h = HeaderMap::new();
    h.insert(headers::CONTENT_TYPE, headers::MSGPACK);
    js.publish_with_headers(out.subject, h, out.payload.into()).await?.await?;
    eventually(Duration::from_secs(10), "the action acked", || {
        let mut c = consumer.clone();
        async move {
            let info = c.info().await?;
            Ok((info.num_pending == 0
                && info.num_ack_pending == 0
                && info.delivered.stream_sequence > 0)
                .then_some(()))
        }
    })
    .await?;
    assert!(
        tokio::time::timeout(Duration::from_secs(2), events.next()).await.is_err(),
        "an idle simulator publishes no events"
    );
    Ok(())
}

#[test]
fn a_bad_scenario_exits_64_naming_the_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "tick_s = 10\n[[service]]\nenv = \"dev\"\nname = \"a\"\nfailur = \"crash_loop\"\n",
    )?;
    let out = Command::new(SIMULATOR)
        .args(["--scenario", file.to_str().unwrap(), "--data-dir"])
        .arg(dir.path())
        .env_remove("NATS_URL")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("unknown field `failur`") && stderr.contains("bad.toml"), "{stderr}");
    let out = Command::new(SIMULATOR).args(["--speed", "0"]).output()?;
    assert_eq!(out.status.code(), Some(64));
    Ok(())
}
