//! Partition leases: which instance of a partitioned agent owns which partition of the
//! services (docs/contract.md, Partitions), kept on the CN_LEASES stream, nothing else.
//!
//! Each partition has one subject, `cn.leases.{agent}.partition.{p}`, whose last record says
//! who holds it. Every write is a compare-and-swap: it carries
//! `Nats-Expected-Last-Subject-Sequence` with the sequence the writer last read, so of two
//! instances that want the same partition at once one write is stored and the other refused.
//! The holder writes its lease again every tick; a lease nobody has written for a whole TTL,
//! as this instance's own monotonic clock measures it (no wall clocks compared), is free to
//! take. The holder stops using a partition once its last successful write is older than the
//! TTL less a margin, so an instance cut off from NATS has stopped before anyone may take
//! its partitions over.
//!
//! Each instance also writes `cn.leases.{agent}.member.{instance}` every tick: how many
//! instances are alive decides each one's share of the partitions, so a new instance gets
//! partitions handed over by the others and a dead one's are taken by the rest.
//!
//! nats-server 2.9 does not check an expected sequence of 0 ("the subject is empty"), so a
//! partition's first record is a released lease published with a `Nats-Msg-Id` that every
//! instance uses alike: JetStream stores it once, and every claim is a compare-and-swap on it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream::LastRawMessageErrorKind};
use bus_schema::partition::PARTITIONS;
use bus_schema::subject::Stream;
use bus_schema::{AgentName, Timestamp, headers};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::RuntimeError;

/// `cn.leases.{agent}`: every lease and member record of one agent is under it.
pub fn subject_prefix(agent: &AgentName) -> String {
    format!("cn.leases.{agent}")
}

/// The subject of one partition's lease.
pub fn partition_subject(agent: &AgentName, partition: u16) -> String {
    format!("{}.partition.{partition}", subject_prefix(agent))
}

/// The subject of one instance's member record.
pub fn member_subject(agent: &AgentName, instance: &str) -> String {
    format!("{}.member.{instance}", subject_prefix(agent))
}

/// One run of one instance: the instance's name, and what tells this run from an earlier one
/// under the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub instance: String,
    /// Random per process start.
    pub run: String,
    pub host: String,
    pub pid: u32,
}

/// The last record of a partition's subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub agent: String,
    pub partition: u16,
    /// Who holds it; `None` once released.
    pub holder: Option<Holder>,
    pub ttl_ms: u64,
    /// The writer's clock, for people reading it; nobody's liveness is judged by it.
    pub at: Timestamp,
}

/// The last record of an instance's member subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub agent: String,
    pub holder: Holder,
    /// The partitions it held when it wrote this.
    pub owns: Vec<u16>,
    pub ttl_ms: u64,
    pub at: Timestamp,
    /// Written on a clean stop: it counts as gone at once.
    #[serde(default)]
    pub leaving: bool,
}

/// A subject's last record as this instance saw it, and since when it has not changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen<T> {
    pub seq: u64,
    pub record: T,
    /// When this instance first saw this sequence (its own monotonic clock).
    pub since: Instant,
}

impl<T> Seen<T> {
    /// Nobody has written it for `ttl`.
    fn stale(&self, now: Instant, ttl: Duration) -> bool {
        now.duration_since(self.since) >= ttl
    }
}

/// What one instance knows of its agent's leases and members.
#[derive(Debug, Default)]
pub struct View {
    pub partitions: BTreeMap<u16, Seen<Lease>>,
    pub members: BTreeMap<String, Seen<Member>>,
}

impl View {
    /// Records a read: `since` moves only when the sequence does.
    pub fn saw_partition(&mut self, partition: u16, seq: u64, record: Lease, now: Instant) {
        match self.partitions.get_mut(&partition) {
            Some(seen) if seen.seq == seq => seen.record = record,
            _ => {
                self.partitions.insert(partition, Seen { seq, record, since: now });
            }
        }
    }

    pub fn saw_member(&mut self, instance: &str, seq: u64, record: Member, now: Instant) {
        match self.members.get_mut(instance) {
            Some(seen) if seen.seq == seq => seen.record = record,
            _ => {
                self.members.insert(instance.to_owned(), Seen { seq, record, since: now });
            }
        }
    }

    /// The instances alive now: written within the TTL and not leaving, and `me`.
    pub fn alive(&self, me: &Holder, now: Instant, ttl: Duration) -> BTreeSet<String> {
        let mut alive: BTreeSet<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.record.leaving && !m.stale(now, ttl))
            .filter(|(name, m)| **name != me.instance || m.record.holder.run == me.run)
            .map(|(name, _)| name.clone())
            .collect();
        alive.insert(me.instance.clone());
        alive
    }

    /// Whether `partition` may be claimed: never held, released, or not written for a TTL.
    /// Returns the sequence a claim must expect.
    pub fn claimable(
        &self,
        partition: u16,
        me: &Holder,
        now: Instant,
        ttl: Duration,
    ) -> Option<u64> {
        let seen = self.partitions.get(&partition)?;
        match &seen.record.holder {
            None => Some(seen.seq),
            // This run's own, not held any more (a write whose outcome was unknown, a release
            // that failed): [`plan`] skips what is held or stopping.
            Some(h) if h.run == me.run => Some(seen.seq),
            // Anyone else's — an earlier run of this instance too, which may still be stopping,
            // or another process given the same name — once nobody has written it for a TTL.
            Some(_) if seen.stale(now, ttl) => Some(seen.seq),
            Some(_) => None,
        }
    }
}

/// What an instance does on one tick about its share of the partitions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Partitions to hand back (it holds more than its share).
    pub release: Vec<u16>,
    /// Partitions to claim, with the sequence each claim expects.
    pub claim: Vec<(u16, u64)>,
}

/// Each alive instance's share: the partitions spread as evenly as they go.
pub fn share(alive: usize) -> usize {
    usize::from(PARTITIONS).div_ceil(alive.max(1))
}

/// The plan for one tick. `held` are the partitions this instance runs (or is starting);
/// `busy` those it must not claim yet (still stopping, or cooling off after a failure).
pub fn plan(
    view: &View,
    me: &Holder,
    held: &BTreeSet<u16>,
    busy: &BTreeSet<u16>,
    now: Instant,
    ttl: Duration,
) -> Plan {
    let share = share(view.alive(me, now, ttl).len());
    let mut plan = Plan::default();
    if held.len() > share {
        // The highest first: the lowest stay where they are as instances come and go.
        plan.release = held.iter().rev().take(held.len() - share).copied().collect();
        return plan;
    }
    for p in 0..PARTITIONS {
        if held.len() + plan.claim.len() >= share {
            break;
        }
        if held.contains(&p) || busy.contains(&p) {
            continue;
        }
        if let Some(seq) = view.claimable(p, me, now, ttl) {
            plan.claim.push((p, seq));
        }
    }
    plan
}

/// Reads and writes one agent's leases on CN_LEASES.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    js: jetstream::Context,
    agent: AgentName,
}

/// Why a lease write was not stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Someone wrote the subject since we read it.
    #[error("the lease changed since it was read")]
    Conflict,
    #[error(transparent)]
    Bus(#[from] RuntimeError),
}

impl LeaseStore {
    pub fn new(js: jetstream::Context, agent: AgentName) -> Self {
        Self { js, agent }
    }

    fn fail(&self, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Stream { stream: Stream::Leases.name().to_owned(), message: e.to_string() }
    }

    /// A subject's last record, if it has one.
    async fn last<T: for<'de> Deserialize<'de>>(
        &self,
        subject: &str,
    ) -> Result<Option<(u64, T)>, RuntimeError> {
        let stream =
            self.js.get_stream_no_info(Stream::Leases.name()).await.map_err(|e| self.fail(e))?;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(msg) => {
                let record = serde_json::from_slice(&msg.payload).map_err(|e| {
                    self.fail(format!("{subject} (stream seq {}) is unreadable: {e}", msg.sequence))
                })?;
                Ok(Some((msg.sequence, record)))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// A partition's lease as it is, without writing anything (for tools).
    pub async fn read_partition(
        &self,
        partition: u16,
    ) -> Result<Option<(u64, Lease)>, RuntimeError> {
        self.last(&partition_subject(&self.agent, partition)).await
    }

    /// A partition's lease. The first read of a partition nobody has written yet stores its
    /// released record (once, however many instances do it at the same time).
    pub async fn partition(&self, partition: u16) -> Result<(u64, Lease), RuntimeError> {
        let subject = partition_subject(&self.agent, partition);
        if let Some(found) = self.last(&subject).await? {
            return Ok(found);
        }
        let lease = Lease {
            agent: self.agent.to_string(),
            partition,
            holder: None,
            ttl_ms: 0,
            at: Timestamp::now(),
        };
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::MSG_ID, format!("lease-init:{subject}").as_str());
        h.insert(headers::CONTENT_TYPE, headers::JSON);
        let body = serde_json::to_vec(&lease).map_err(|e| self.fail(e))?;
        let ack = self
            .js
            .publish_with_headers(subject.clone(), h, body.into())
            .await
            .map_err(|e| self.fail(e))?
            .await
            .map_err(|e| self.fail(e))?;
        // A duplicate's ack names the record stored first; read back what is there now.
        match self.last(&subject).await? {
            Some(found) => Ok(found),
            None => {
                Err(self.fail(format!("{subject}: stored at seq {} but not found", ack.sequence)))
            }
        }
    }

    /// Every member record of the agent (the stream's subjects under `member.*`).
    pub async fn members(&self) -> Result<Vec<(String, u64, Member)>, RuntimeError> {
        let filter = format!("{}.member.*", subject_prefix(&self.agent));
        let stream =
            self.js.get_stream_no_info(Stream::Leases.name()).await.map_err(|e| self.fail(e))?;
        let mut subjects = Vec::new();
        {
            use futures_util::StreamExt as _;
            let mut listed = stream.info_with_subjects(&filter).await.map_err(|e| self.fail(e))?;
            while let Some(item) = listed.next().await {
                let (subject, _count) = item.map_err(|e| self.fail(e))?;
                subjects.push(subject);
            }
        }
        let mut out = Vec::new();
        for subject in subjects {
            let Some(instance) = subject.rsplit('.').next().map(str::to_owned) else { continue };
            if let Some((seq, member)) = self.last::<Member>(&subject).await? {
                out.push((instance, seq, member));
            }
        }
        Ok(out)
    }

    /// Writes `record` on `subject` if its last record is still `expected`; the new sequence.
    /// An ack that never came is settled by reading back: stored if the record there is ours.
    pub async fn write_if<T: Serialize + for<'de> Deserialize<'de> + PartialEq>(
        &self,
        subject: &str,
        record: &T,
        expected: u64,
    ) -> Result<u64, WriteError> {
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::CONTENT_TYPE, headers::JSON);
        h.insert("Nats-Expected-Last-Subject-Sequence", expected.to_string().as_str());
        let body = serde_json::to_vec(record).map_err(|e| self.fail(e))?;
        let sent = self.js.publish_with_headers(subject.to_owned(), h, body.into()).await;
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => return Err(WriteError::Bus(self.fail(e))),
        };
        match acked {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(WriteError::Conflict),
            Err(e) => match self.last::<T>(subject).await {
                Ok(Some((seq, stored))) if seq > expected && stored == *record => Ok(seq),
                Ok(Some((seq, _))) if seq != expected => Err(WriteError::Conflict),
                _ => Err(WriteError::Bus(self.fail(e))),
            },
        }
    }

    /// Whether the server appends partition tokens (`deploy/partitions.conf` included): a
    /// probe written to `cn.leases.{agent}.probe.{instance}` must be stored with a token after
    /// it.
    pub async fn server_partitions(&self, instance: &str) -> Result<bool, RuntimeError> {
        let subject = format!("{}.probe.{instance}", subject_prefix(&self.agent));
        let stream =
            self.js.get_stream_no_info(Stream::Leases.name()).await.map_err(|e| self.fail(e))?;
        let mut attempt = 0;
        loop {
            let ack = self
                .js
                .publish(subject.clone(), "{}".into())
                .await
                .map_err(|e| self.fail(e))?
                .await
                .map_err(|e| self.fail(e))?;
            // The subject keeps one record: another process of this name may have replaced it.
            match stream.get_raw_message(ack.sequence).await {
                Ok(stored) => return Ok(stored.subject.as_str() != subject),
                Err(e) if attempt >= 5 => return Err(self.fail(e)),
                Err(_) => attempt += 1,
            }
        }
    }

    /// Writes a member record (no compare-and-swap: one writer per instance name).
    pub async fn announce(&self, member: &Member) -> Result<(), RuntimeError> {
        let subject = member_subject(&self.agent, &member.holder.instance);
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::CONTENT_TYPE, headers::JSON);
        let body = serde_json::to_vec(member).map_err(|e| self.fail(e))?;
        self.js
            .publish_with_headers(subject, h, body.into())
            .await
            .map_err(|e| self.fail(e))?
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(6);

    fn holder(instance: &str, run: &str) -> Holder {
        Holder { instance: instance.into(), run: run.into(), host: "h".into(), pid: 1 }
    }

    fn lease(p: u16, holder: Option<Holder>) -> Lease {
        Lease { agent: "a".into(), partition: p, holder, ttl_ms: 6000, at: Timestamp::now() }
    }

    fn member(h: &Holder) -> Member {
        Member {
            agent: "a".into(),
            holder: h.clone(),
            owns: vec![],
            ttl_ms: 6000,
            at: Timestamp::now(),
            leaving: false,
        }
    }

    fn view_all_free(now: Instant) -> View {
        let mut v = View::default();
        for p in 0..PARTITIONS {
            v.saw_partition(p, u64::from(p) + 1, lease(p, None), now);
        }
        v
    }

    #[test]
    fn one_instance_alone_claims_every_partition() {
        let now = Instant::now();
        let me = holder("a", "r1");
        let v = view_all_free(now);
        let plan = plan(&v, &me, &BTreeSet::new(), &BTreeSet::new(), now, TTL);
        assert_eq!(plan.claim.len(), usize::from(PARTITIONS));
        assert_eq!(plan.claim[3], (3, 4));
        assert!(plan.release.is_empty());
    }

    #[test]
    fn a_second_instance_gets_half_handed_over() {
        let now = Instant::now();
        let (a, b) = (holder("a", "r1"), holder("b", "r2"));
        let mut v = view_all_free(now);
        for p in 0..PARTITIONS {
            v.saw_partition(p, 100 + u64::from(p), lease(p, Some(a.clone())), now);
        }
        v.saw_member("b", 50, member(&b), now);
        v.saw_member("a", 51, member(&a), now);
        let held: BTreeSet<u16> = (0..PARTITIONS).collect();
        let plan_a = plan(&v, &a, &held, &BTreeSet::new(), now, TTL);
        assert_eq!(plan_a.release, [7, 6, 5, 4]);
        // b claims nothing a holds while a writes its leases; it waits for the releases.
        let plan_b = plan(&v, &b, &BTreeSet::new(), &BTreeSet::new(), now, TTL);
        assert_eq!(plan_b, Plan::default());
        for p in 4..PARTITIONS {
            v.saw_partition(p, 200 + u64::from(p), lease(p, None), now);
        }
        let plan_b = plan(&v, &b, &BTreeSet::new(), &BTreeSet::new(), now, TTL);
        assert_eq!(plan_b.claim, [(4, 204), (5, 205), (6, 206), (7, 207)]);
    }

    #[test]
    fn a_dead_instances_partitions_are_taken_only_after_a_whole_ttl_unwritten() {
        let t0 = Instant::now();
        let (a, b) = (holder("a", "r1"), holder("b", "r2"));
        let mut v = View::default();
        for p in 0..PARTITIONS {
            let h = if p < 4 { a.clone() } else { b.clone() };
            v.saw_partition(p, 10 + u64::from(p), lease(p, Some(h)), t0);
        }
        v.saw_member("a", 1, member(&a), t0);
        v.saw_member("b", 2, member(&b), t0);
        let held: BTreeSet<u16> = (0..4).collect();
        let almost = t0 + TTL - Duration::from_millis(1);
        assert_eq!(plan(&v, &a, &held, &BTreeSet::new(), almost, TTL), Plan::default());
        // a went on writing; b did not.
        for p in 0..4 {
            v.saw_partition(p, 20 + u64::from(p), lease(p, Some(a.clone())), almost);
        }
        v.saw_member("a", 3, member(&a), almost);
        let later = t0 + TTL;
        let got = plan(&v, &a, &held, &BTreeSet::new(), later, TTL);
        assert_eq!(got.claim, [(4, 14), (5, 15), (6, 16), (7, 17)]);
        // One still stopping is left for the next tick.
        let busy = BTreeSet::from([5]);
        let got = plan(&v, &a, &held, &busy, later, TTL);
        assert_eq!(got.claim, [(4, 14), (6, 16), (7, 17)]);
    }

    #[test]
    fn a_leaving_member_no_longer_counts_and_an_earlier_run_of_mine_waits_out_its_ttl() {
        let now = Instant::now();
        let (a, b) = (holder("a", "r2"), holder("b", "r1"));
        let mut v = view_all_free(now);
        let mut gone = member(&b);
        gone.leaving = true;
        v.saw_member("b", 9, gone, now);
        // Partition 2 still names a's previous run: like anyone else's, claimable once it has
        // not been written for a TTL (that run may still be stopping).
        v.saw_partition(2, 30, lease(2, Some(holder("a", "r1"))), now);
        assert_eq!(v.alive(&a, now, TTL).len(), 1);
        assert_eq!(v.claimable(2, &a, now, TTL), None);
        assert_eq!(v.claimable(2, &a, now + TTL, TTL), Some(30));
        // Partition 3 names this run, but this run does not hold it (a lost ack): claimable.
        v.saw_partition(3, 31, lease(3, Some(a.clone())), now);
        assert_eq!(v.claimable(3, &a, now, TTL), Some(31));
        assert_eq!(share(3), 3);
        assert_eq!(share(2), 4);
        assert_eq!(share(0), usize::from(PARTITIONS));
    }
}
