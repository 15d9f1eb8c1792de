//! Where each input stands: the stream sequence an agent has applied up to.
//!
//! JetStream keeps this in the durable consumer (its ack floor), but a consumer can be lost:
//! deleted by an administrator, or gone with a recreated server. An agent that recreated its
//! consumer from the start would re-read the whole stream; one that started from "new" would
//! miss what arrived meanwhile. So the runtime tracks, per durable, the inputs it received but
//! has not finished (acked or rejected) and the highest one it finished, and recreates a lost
//! consumer from the first sequence not yet applied. The position is written to the state
//! file about once a second and at stop; after a crash it may be a second behind, which only
//! means a few inputs are delivered again (handlers de-duplicate redeliveries anyway).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::store::Table;

/// The first stream sequence of an input not yet applied, within one incarnation (epoch) of
/// its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: String,
    pub next: u64,
}

/// Positions in the agent's state file, by durable name.
pub const POSITIONS: Table<Position> = Table::new("runtime.positions");

#[derive(Debug, Default)]
struct Track {
    epoch: String,
    /// Received and not yet finished: a retried input stays here until it is.
    outstanding: BTreeSet<u64>,
    /// Every input below this was finished or never belonged to this consumer.
    next: u64,
    /// The highest sequence finished.
    done: u64,
    /// Inputs the consumer had delivered before this start and not seen acked, up to a stream
    /// sequence: they come back after their ack wait, and the position stays put until they
    /// are finished.
    held: Option<Held>,
    /// Stored and not delivered yet, as the server counted with the last delivery (or at
    /// start): what the agent has not even received of this input.
    undelivered: u64,
    changed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    up_to: u64,
    left: u64,
}

/// Every input's position, shared by the pullers (received) and the run loop (finished).
#[derive(Debug, Default)]
pub struct Positions {
    inner: Mutex<HashMap<String, Track>>,
}

impl Positions {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Track>) -> T) -> T {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Where `durable` stands at start: the stored position if it is of this epoch, or the
    /// consumer's ack floor + 1, whichever is further along. `pending` is the consumer's
    /// delivered-but-unacked count and the last stream sequence it delivered.
    pub fn seed(
        &self,
        durable: &str,
        epoch: &str,
        stored: Option<&Position>,
        ack_floor_next: u64,
        pending: (u64, u64),
    ) {
        let stored = stored.filter(|p| p.epoch == epoch).map_or(1, |p| p.next);
        let (left, up_to) = pending;
        let held = (left > 0).then_some(Held { up_to, left });
        let next = if held.is_some() { ack_floor_next } else { stored.max(ack_floor_next) };
        self.with(|m| {
            m.insert(
                durable.to_owned(),
                Track {
                    epoch: epoch.to_owned(),
                    outstanding: BTreeSet::new(),
                    next: next.max(1),
                    done: 0,
                    held,
                    undelivered: 0,
                    changed: true,
                },
            );
        });
    }

    /// The consumer delivered `seq`; `undelivered` more were stored behind it (the count the
    /// server sends with each delivery).
    pub fn received(&self, durable: &str, seq: u64, undelivered: u64) {
        self.with(|m| {
            if let Some(t) = m.get_mut(durable) {
                t.undelivered = undelivered;
                if seq >= t.next {
                    t.outstanding.insert(seq);
                }
            }
        });
    }

    /// The input at `seq` is applied (handled or rejected) and acked.
    pub fn finished(&self, durable: &str, seq: u64) {
        self.with(|m| {
            if let Some(t) = m.get_mut(durable) {
                t.outstanding.remove(&seq);
                t.done = t.done.max(seq);
                if let Some(h) = t.held.as_mut() {
                    if seq <= h.up_to {
                        h.left = h.left.saturating_sub(1);
                    }
                    if h.left > 0 {
                        return;
                    }
                    t.held = None;
                }
                let next = t.outstanding.first().copied().unwrap_or(t.done + 1);
                if next > t.next {
                    t.next = next;
                    t.changed = true;
                }
            }
        });
    }

    /// The first sequence of `durable` not yet applied.
    pub fn next(&self, durable: &str) -> Option<Position> {
        self.with(|m| {
            m.get(durable).map(|t| Position {
                epoch: t.epoch.clone(),
                next: t.outstanding.first().copied().unwrap_or(t.next).min(t.next.max(1)),
            })
        })
    }

    /// The server's count of `durable`'s messages not delivered yet, as of now (at start).
    pub fn undelivered(&self, durable: &str, undelivered: u64) {
        self.with(|m| {
            if let Some(t) = m.get_mut(durable) {
                t.undelivered = undelivered;
            }
        });
    }

    /// How far the agent is behind on `durable` without asking the server: inputs received and
    /// not finished, inputs delivered before this start and not back yet, and what the server
    /// said was stored and not delivered with its last delivery. A message stored after that
    /// delivery is counted only once it arrives — a window as short as the server's push to
    /// the agent's waiting pull request.
    pub fn behind(&self, durable: &str) -> u64 {
        self.with(|m| {
            m.get(durable).map_or(0, |t| {
                // A held input that came back is in hand: counted once.
                let held = t.held.map_or(0, |h| {
                    h.left.saturating_sub(t.outstanding.range(..=h.up_to).count() as u64)
                });
                t.outstanding.len() as u64 + held + t.undelivered
            })
        })
    }

    /// The positions that moved since the last call, to store.
    pub fn take_changed(&self) -> Vec<(String, Position)> {
        self.with(|m| {
            m.iter_mut()
                .filter_map(|(d, t)| {
                    std::mem::take(&mut t.changed)
                        .then(|| (d.clone(), Position { epoch: t.epoch.clone(), next: t.next }))
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_input_holds_the_position_until_it_is_finished() {
        let p = Positions::default();
        p.seed("d", "e1", None, 1, (0, 0));
        for seq in [3, 7, 9] {
            p.received("d", seq, 0);
        }
        p.finished("d", 3);
        assert_eq!(
            p.next("d").unwrap().next,
            7,
            "4..6 are not this consumer's; 7 is not applied yet"
        );
        // 7 failed and waits for its retry; 9 is done meanwhile.
        p.finished("d", 9);
        assert_eq!(
            p.next("d").unwrap().next,
            7,
            "7 is not applied yet (4..6 are not this consumer's)"
        );
        p.finished("d", 7);
        assert_eq!(p.next("d").unwrap().next, 10);
        assert_eq!(
            p.take_changed(),
            vec![("d".to_owned(), Position { epoch: "e1".to_owned(), next: 10 })]
        );
        assert!(p.take_changed().is_empty(), "nothing moved since");
    }

    #[test]
    fn a_stored_position_of_another_epoch_is_ignored_and_the_ack_floor_wins_when_further() {
        let p = Positions::default();
        p.seed("d", "e2", Some(&Position { epoch: "e1".to_owned(), next: 500 }), 1, (0, 0));
        assert_eq!(
            p.next("d").unwrap().next,
            1,
            "the stream was recreated: its sequences restarted"
        );
        p.seed("d", "e2", Some(&Position { epoch: "e2".to_owned(), next: 40 }), 77, (0, 0));
        assert_eq!(p.next("d").unwrap().next, 77);
        p.seed("d", "e2", Some(&Position { epoch: "e2".to_owned(), next: 90 }), 77, (0, 0));
        assert_eq!(p.next("d").unwrap().next, 90);
    }

    #[test]
    fn inputs_delivered_before_a_crash_hold_the_position_until_they_come_back_and_finish() {
        let p = Positions::default();
        // The consumer's ack floor is 10; 12 and 15 were delivered to the crashed process.
        p.seed("d", "e", Some(&Position { epoch: "e".to_owned(), next: 16 }), 11, (2, 15));
        p.received("d", 20, 0);
        p.finished("d", 20);
        assert_eq!(p.next("d").unwrap().next, 11, "12 and 15 are not applied yet");
        p.received("d", 12, 0);
        p.finished("d", 12);
        p.received("d", 15, 0);
        p.finished("d", 15);
        assert_eq!(p.next("d").unwrap().next, 21, "20 was applied meanwhile");
    }

    #[test]
    fn how_far_behind_counts_what_is_in_hand_held_and_not_delivered_yet() {
        let p = Positions::default();
        assert_eq!(p.behind("unknown"), 0);
        p.seed("d", "e", None, 11, (1, 12));
        p.undelivered("d", 3);
        assert_eq!(p.behind("d"), 4, "12 is held, 3 wait on the server");
        p.received("d", 12, 3);
        p.received("d", 13, 2);
        assert_eq!(p.behind("d"), 2 + 2, "12 (held, now back) and 13 in hand, 2 on the server");
        p.finished("d", 12);
        p.finished("d", 13);
        assert_eq!(p.behind("d"), 2);
        p.received("d", 14, 1);
        p.received("d", 15, 0);
        p.finished("d", 14);
        p.finished("d", 15);
        assert_eq!(p.behind("d"), 0, "caught up");
    }
}
