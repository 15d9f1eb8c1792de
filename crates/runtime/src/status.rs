//! Showing that an agent is alive: heartbeats and the NATS micro-service endpoint.
//!
//! Heartbeats go to `cn.heartbeat.{agent}.{instance}` on core NATS every interval. Each agent
//! also registers as a NATS micro service named after the agent, so `nats micro ls` and
//! `$SRV.PING` find every instance, and answers `cn.status.{agent}.{instance}` with its status
//! as JSON (`nats req cn.status.executor.0 ''`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::service::ServiceExt;
use bus_schema::{AgentName, AgentStatus, Heartbeat, InstanceId, Timestamp, subject};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::RuntimeError;
use crate::publish::{Publisher, Trace};
use crate::spec::AgentSpec;

/// Counters shared between the run loop and the status tasks.
#[derive(Debug)]
pub struct Stats {
    pub started_at: Timestamp,
    pub processed: AtomicU64,
    pub rejected: AtomicU64,
    pub proof_seq: AtomicU64,
    pub stopping: AtomicBool,
    /// Inputs not being consumed right now, by durable: why.
    degraded: Mutex<BTreeMap<String, String>>,
}

impl Stats {
    pub fn new(proof_seq: u64) -> Self {
        Self {
            started_at: Timestamp::now(),
            processed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            proof_seq: AtomicU64::new(proof_seq),
            stopping: AtomicBool::new(false),
            degraded: Mutex::new(BTreeMap::new()),
        }
    }

    /// Marks an input degraded (`Some(why)`) or well again (`None`).
    pub fn set_degraded(&self, durable: &str, why: Option<&str>) {
        let mut map = self.degraded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match why {
            Some(why) => map.insert(durable.to_owned(), why.to_owned()),
            None => map.remove(durable),
        };
    }

    /// Each degraded input as `durable: why`.
    pub fn degraded(&self) -> Vec<String> {
        let map = self.degraded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(d, why)| format!("{d}: {why}")).collect()
    }

    fn heartbeat(&self, agent: &AgentName, instance: &InstanceId, version: &str) -> Heartbeat {
        Heartbeat {
            agent: agent.clone(),
            instance: instance.clone(),
            version: version.to_owned(),
            started_at: self.started_at,
            ts: Timestamp::now(),
            processed: self.processed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            proof_seq: self.proof_seq.load(Ordering::Relaxed),
        }
    }
}

/// The running heartbeat and status tasks.
#[derive(Debug)]
pub struct StatusTasks {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    service: async_nats::service::Service,
}

impl StatusTasks {
    pub async fn start(
        publisher: &Publisher,
        spec: &AgentSpec,
        instance: &InstanceId,
        interval: Duration,
        stats: Arc<Stats>,
        consumers: Vec<String>,
    ) -> Result<Self, RuntimeError> {
        let stop = CancellationToken::new();
        let service = publisher
            .client()
            .service_builder()
            .description(spec.description)
            .metadata(HashMap::from([("instance".to_owned(), instance.to_string())]))
            .start(spec.name.as_str(), spec.version)
            .await
            .map_err(|e| RuntimeError::Service(e.to_string()))?;
        let status_subject = subject::STATUS.subject(&spec.name, instance);
        let mut endpoint = service
            .endpoint_builder()
            .name("status")
            .add(status_subject.as_str())
            .await
            .map_err(|e| RuntimeError::Service(e.to_string()))?;

        let (agent, inst, version) = (spec.name.clone(), instance.clone(), spec.version);
        let status_task = {
            let (stop, stats, agent, inst) =
                (stop.clone(), stats.clone(), agent.clone(), inst.clone());
            tokio::spawn(async move {
                loop {
                    let request = tokio::select! { () = stop.cancelled() => return, r = endpoint.next() => r };
                    let Some(request) = request else { return };
                    let status = AgentStatus {
                        heartbeat: stats.heartbeat(&agent, &inst, version),
                        consumers: consumers.clone(),
                        stopping: stats.stopping.load(Ordering::Relaxed),
                        degraded: stats.degraded(),
                    };
                    let body = serde_json::to_vec(&status).map(Into::into).map_err(|e| {
                        async_nats::service::error::Error { status: e.to_string(), code: 500 }
                    });
                    if let Err(e) = request.respond(body).await {
                        tracing::debug!(error = %e, "status reply failed");
                    }
                }
            })
        };

        let heartbeat_task = {
            let publisher = publisher.clone();
            let stop = stop.clone();
            let subject = subject::HEARTBEAT.subject(&agent, &inst);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! { () = stop.cancelled() => return, _ = tick.tick() => {} }
                    let beat = stats.heartbeat(&agent, &inst, version);
                    let id = format!("heartbeat:{agent}:{inst}:{}", beat.ts.unix_millis());
                    let trace = Trace::new(id);
                    if let Err(e) = publisher.publish(&subject, &beat, &trace).await {
                        tracing::warn!(error = %e, "heartbeat not sent");
                    }
                }
            })
        };
        Ok(Self { stop, tasks: vec![status_task, heartbeat_task], service })
    }

    /// Stops heartbeats and deregisters the micro service.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.service.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_is_degraded_until_it_is_marked_well_again() {
        let stats = Stats::new(0);
        assert!(stats.degraded().is_empty());
        stats.set_degraded("issue-detector-events", Some("consumer missing: recreating it"));
        stats.set_degraded(
            "issue-detector-executed",
            Some("consumer missing and cannot be recreated"),
        );
        assert_eq!(
            stats.degraded(),
            [
                "issue-detector-events: consumer missing: recreating it",
                "issue-detector-executed: consumer missing and cannot be recreated"
            ]
        );
        stats.set_degraded("issue-detector-events", None);
        assert_eq!(
            stats.degraded(),
            ["issue-detector-executed: consumer missing and cannot be recreated"]
        );
        let status = AgentStatus {
            heartbeat: stats.heartbeat(
                &"issue-detector".parse().unwrap(),
                &"0".parse().unwrap(),
                "0.8.0",
            ),
            consumers: vec![],
            stopping: false,
            degraded: stats.degraded(),
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["degraded"][0],
            "issue-detector-executed: consumer missing and cannot be recreated"
        );
    }
}
