//! Chaos runs of the real fleet: load, crashes and hostile input at once, then an honest count.
//!
//! [`run`] starts the fleet ([`Fleet`]: a secured nats-server and every agent binary), and for
//! the plan's duration publishes load as a pipeline would ([`load`]), kills a random agent with
//! SIGKILL every few seconds and starts it again, kills nats-server a few times ([`faults`]),
//! and sends hostile payloads ([`hostile`]). Then it stops the load, restarts whatever is down,
//! waits until every durable consumer has nothing pending or unacked, and reads everything back
//! as the operator: the consumers' positions, every message of CN_EVENTS, the proof log
//! ([`judge`]). The [`Report`] counts only what was observed: an event is published when
//! JetStream acked it, lost when acked and not in CN_EVENTS; a hostile payload is rejected when
//! the consuming agent's proof chain says so, silently dropped when its consumer acked it and
//! the chain says nothing.
//!
//! `scripts/chaos` runs it for ten minutes; tests/tests/chaos.rs for about one.

pub mod faults;
pub mod hostile;
pub mod judge;
pub mod load;
pub mod observe;
pub mod report;

pub use report::Report;

use std::time::{Duration, Instant};

use agent_runtime::rng::Rng;
use async_nats::jetstream;
use bus_schema::Timestamp;
use policy::Policy;
use tokio_util::sync::CancellationToken;

use crate::fleet::Fleet;

/// How often a run says where it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);
/// How long messages still unacked when the load stops are retried before they count as unacked.
const RETRY_GRACE: Duration = Duration::from_secs(30);

/// What a run does, and for how long.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How long load and faults go on.
    pub duration: Duration,
    /// A random agent is killed this often.
    pub kill_every: Duration,
    /// nats-server restarts, evenly spread over the duration (on a cluster, one node at a
    /// time, in turn).
    pub nats_restarts: u32,
    /// nats-servers: 1, or a cluster of this many with every stream replicated on each.
    pub cluster: usize,
    pub services: usize,
    pub seed: u64,
    /// Each service's metric samples come this often.
    pub sample_every: Duration,
    /// A stage service starts crash-looping this often.
    pub crash_every: Duration,
    /// A prod deploy fails this often.
    pub failed_deploy_every: Duration,
    /// How long the fleet may take to drain its consumers at the end.
    pub settle_timeout: Duration,
}

/// Runs the plan against a fleet of its own; `progress` gets a line every 15 s.
pub async fn run(plan: &Plan, progress: &(dyn Fn(&str) + Sync)) -> anyhow::Result<Report> {
    let started = Instant::now();
    progress(&format!("chaos: starting the fleet (seed {})", plan.seed));
    let mut fleet = if plan.cluster > 1 {
        Fleet::start_clustered(plan.cluster).await?
    } else {
        Fleet::start().await?
    };
    let pipeline = fleet.client_as("pipeline").await?;
    let operator = jetstream::new(fleet.client_as("operator").await?);
    let (stop, give_up) = (CancellationToken::new(), CancellationToken::new());

    let load = load::start(jetstream::new(pipeline.clone()), plan, stop.clone(), give_up.clone());
    let mut rng = Rng::derive(plan.seed, "hostile");
    let list = hostile::catalogue(&mut rng, Timestamp::now())?;
    let spread = plan.duration.mul_f64(0.8);
    let hostile = tokio::spawn({
        let (stop, give_up) = (stop.clone(), give_up.clone());
        async move { hostile::send_all(pipeline, list, spread, &mut rng, stop, give_up).await }
    });

    let load_started = Instant::now();
    progress(&format!(
        "chaos: fleet up after {:.0} s; load, kills and hostile payloads for {:?}",
        started.elapsed().as_secs_f64(),
        plan.duration
    ));
    let mut faults = faults::Faults::new(plan, load_started);
    let mut next_progress = load_started + PROGRESS_EVERY;
    let line = |faults: &faults::Faults| {
        format!(
            "[{:>5.0} s] events acked {}, crash loops {}, failed deploys {}, kills {}, nats restarts {}, crashes {}",
            load_started.elapsed().as_secs_f64(),
            load.ledger.acked(),
            load.ledger.crash_loops.load(std::sync::atomic::Ordering::Relaxed),
            load.ledger.failed_deploys.load(std::sync::atomic::Ordering::Relaxed),
            faults.kills.len(),
            faults.nats_restarts.len(),
            faults.crashes.len()
        )
    };
    while load_started.elapsed() < plan.duration {
        faults.tick(&mut fleet, true)?;
        if Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            progress(&line(&faults));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load_s = load_started.elapsed().as_secs_f64();
    stop.cancel();

    // What is still unacked gets a while longer; the agents we killed come back meanwhile.
    let give_up_at = Instant::now() + RETRY_GRACE;
    while !(hostile.is_finished() && load.tasks.iter().all(|t| t.is_finished())) {
        faults.tick(&mut fleet, false)?;
        if Instant::now() >= give_up_at {
            give_up.cancel();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    give_up.cancel();
    let hostile = hostile.await?;
    for t in load.tasks {
        t.await?;
    }
    faults.restart_all(&mut fleet)?;
    progress(&format!("{}; load stopped, settling", line(&faults)));

    let settle_started = Instant::now();
    let mut settled_s = None;
    let mut quiet = 0;
    while settle_started.elapsed() < plan.settle_timeout {
        faults.check_crashes(&mut fleet)?;
        if observe::consumers(&operator).await.iter().all(observe::ConsumerState::idle) {
            quiet += 1;
            if quiet == 2 {
                settled_s = Some(settle_started.elapsed().as_secs_f64());
                break;
            }
        } else {
            quiet = 0;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    progress(&format!(
        "chaos: {}; reading back",
        settled_s.map_or("did not settle".to_owned(), |s| format!("settled in {s:.1} s"))
    ));

    // Consumers first: an agent records a rejection before it acks, so every ack seen here has
    // its record in the proof log read after it.
    let consumers = observe::consumers(&operator).await;
    let stored =
        observe::read_stream(&operator, bus_schema::subject::Stream::Events.name()).await?;
    let records = fleet.records().await?;
    let mut replicas = Vec::new();
    for s in bus_schema::subject::Stream::ALL {
        let n = match operator.get_stream(s.name()).await {
            Ok(mut stream) => stream.info().await.map_or(0, |i| i.config.num_replicas),
            Err(_) => 0,
        };
        replicas.push((s.name().to_owned(), n));
    }
    faults.check_crashes(&mut fleet)?;
    let sent = load.ledger.sent();
    Ok(Report {
        seed: plan.seed,
        services: plan.services,
        load_s,
        total_s: started.elapsed().as_secs_f64(),
        kills_by_agent: faults.kills_by_agent(),
        kills: faults.kills,
        nats_restarts: faults.nats_restarts,
        crashes: faults.crashes,
        nodes: fleet.nodes(),
        replicas,
        crash_loops: load.ledger.crash_loops.load(std::sync::atomic::Ordering::Relaxed),
        failed_deploys: load.ledger.failed_deploys.load(std::sync::atomic::Ordering::Relaxed),
        settled_s,
        events: judge::events(&sent, &hostile, &stored, &consumers),
        decisions: judge::decisions(&records, &Policy::default()),
        proof: judge::proof(&records),
        hostile: judge::hostile(&hostile, &records, &consumers),
        consumers,
    })
}
