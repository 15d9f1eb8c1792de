//! Apply once, publish for sure: what a stateful handler keeps beside its state.
//!
//! A handler whose state outlives an input (a service's windows, a rollout) must not apply a
//! redelivered input twice, and must publish what it decided even if it crashes between
//! deciding and publishing. [`Outbox`] holds both halves: the highest stream sequence applied
//! per input, and the outputs decided but not yet stored on the bus, oldest first. Stored with
//! the state in one write, it makes "decide, store, publish, store again" safe to repeat: a
//! redelivery finds the input applied and only publishes what is still waiting, under the same
//! message ids, which JetStream drops if they were stored. Ids derive either from
//! [`Outbox::published`] under a key of the state's own (a rollout's id), or from the input
//! that decided the output ([`DecidedBy`]): an output left waiting by one input and published
//! while handling a later one keeps the first input's ids and chain (its `Cn-Causation-Id`
//! names the input it went out with).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::handler::{InputMeta, stream_position};

/// How many stream incarnations' positions are remembered per input: a recreated stream starts
/// a new epoch, and the old ones are forgotten after a while.
const POSITIONS_KEPT: usize = 8;

/// Applied positions and unpublished outputs of one piece of state.
///
/// Its fields keep the names the detector and the deploy agent stored before it existed
/// (`applied`, `outbox`, `published`), so it is `#[serde(flatten)]`-ed into their state
/// without a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outbox<T> {
    /// The highest stream sequence applied, per `{input}:{stream}:{epoch}`.
    #[serde(default)]
    applied: BTreeMap<String, u64>,
    /// Outputs decided but not yet stored on the bus, oldest first.
    #[serde(default = "VecDeque::new")]
    outbox: VecDeque<T>,
    /// Outputs published so far: the next one's number.
    #[serde(default)]
    published: u64,
    /// Which input decided each waiting output, lined up with `outbox` from the back: outputs
    /// queued before this was kept have no entry, those queued by [`Outbox::push`] `None`.
    #[serde(default = "VecDeque::new")]
    decided_by: VecDeque<Option<DecidedBy>>,
}

/// The input that decided an output, and the output's place among what it decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidedBy {
    pub input_id: String,
    pub correlation_id: String,
    /// 0 for the first output the input decided.
    pub n: u32,
}

impl DecidedBy {
    /// A key unique to this output: `{input id}:{n}` (for `publish_keyed`, `prove_keyed`).
    pub fn key(&self) -> String {
        format!("{}:{}", self.input_id, self.n)
    }
}

/// An output waiting to be published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Waiting<'a, T> {
    /// Its number: [`Outbox::published`] counts up to it.
    pub number: u64,
    pub decided_by: Option<&'a DecidedBy>,
    pub output: &'a T,
}

/// An input not applied yet, from [`Outbox::unapplied`]: hand it to [`Outbox::applied`] with
/// what it decided.
#[derive(Debug)]
#[must_use = "mark the input applied with Outbox::applied"]
pub struct Unapplied {
    position: Option<(String, u64)>,
    input_id: String,
    correlation_id: String,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Self {
            applied: BTreeMap::new(),
            outbox: VecDeque::new(),
            published: 0,
            decided_by: VecDeque::new(),
        }
    }
}

impl<T> Outbox<T> {
    /// The input `meta` describes, unless it (or a later input of the same consumer and
    /// stream) was applied before. Due work and requests have no position: always new.
    ///
    /// ```
    /// # use agent_runtime::{InputMeta, Outbox};
    /// # fn meta(id: &str) -> InputMeta { InputMeta { input: "events", subject: String::new(),
    /// #     stream: String::new(), stream_seq: 0, delivered: 1, input_id: id.into(),
    /// #     message_id: id.into(), correlation_id: id.into(), traceparent: None } }
    /// let mut outbox = Outbox::default();
    /// for id in ["CN_EVENTS:k3:7", "CN_EVENTS:k3:7", "CN_EVENTS:k3:8"] {
    ///     if let Some(input) = outbox.unapplied(&meta(id)) {
    ///         // decide (an error here marks nothing: a retry decides again) …
    ///         outbox.applied(input, [format!("decided under {id}")]);
    ///     }
    /// }
    /// assert_eq!(outbox.len(), 2, "the redelivery of 7 decided nothing");
    /// ```
    pub fn unapplied(&self, meta: &InputMeta) -> Option<Unapplied> {
        let unapplied = |position| Unapplied {
            position,
            input_id: meta.input_id.clone(),
            correlation_id: meta.correlation_id.clone(),
        };
        let Some((source, seq)) = stream_position(&meta.input_id) else {
            return Some(unapplied(None));
        };
        let key = format!("{}:{source}", meta.input);
        // Positions written before the input's name was part of the key (0.8) still count.
        let done = self.applied.get(&key).or_else(|| self.applied.get(source));
        if done.is_some_and(|done| *done >= seq) {
            return None;
        }
        Some(unapplied(Some((key, seq))))
    }

    /// Marks `input` applied and queues what it decided, each output with its [`DecidedBy`].
    pub fn applied(&mut self, input: Unapplied, outputs: impl IntoIterator<Item = T>) {
        let Unapplied { position, input_id, correlation_id } = input;
        if let Some((key, seq)) = position {
            self.mark(key, seq);
        }
        for (n, output) in (0_u32..).zip(outputs) {
            self.outbox.push_back(output);
            let (input_id, correlation_id) = (input_id.clone(), correlation_id.clone());
            self.decided_by.push_back(Some(DecidedBy { input_id, correlation_id, n }));
        }
    }

    fn mark(&mut self, key: String, seq: u64) {
        self.applied.insert(key, seq);
        while self.applied.len() > POSITIONS_KEPT {
            let oldest = self.applied.iter().min_by_key(|(_, s)| **s).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.applied.remove(&k);
            }
        }
    }

    /// Queues outputs decided outside an input (e.g. when a rollout starts).
    pub fn push(&mut self, outputs: impl IntoIterator<Item = T>) {
        for output in outputs {
            self.outbox.push_back(output);
            self.decided_by.push_back(None);
        }
    }

    /// Nothing is waiting to be published.
    pub fn is_empty(&self) -> bool {
        self.outbox.is_empty()
    }

    /// Outputs waiting to be published.
    pub fn len(&self) -> usize {
        self.outbox.len()
    }

    /// Outputs published so far; the number of the next one.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// The oldest output waiting to be published, and its number (from which its message id
    /// may derive). Publish it, wait until it is stored ([`crate::Context::confirm`]), then
    /// call [`Outbox::sent`]; on failure leave it for the retry:
    ///
    /// ```ignore
    /// while let Some((n, output)) = state.outbox.next() {
    ///     publish(ctx, n, output).await?;
    ///     ctx.confirm().await?;
    ///     state.outbox.sent();
    /// }
    /// ```
    ///
    /// To send several at once, publish every one of [`Outbox::waiting`], confirm, then call
    /// [`Outbox::sent_all`].
    pub fn next(&self) -> Option<(u64, &T)> {
        self.outbox.front().map(|t| (self.published, t))
    }

    /// Every output waiting, oldest first, with its number and the input that decided it.
    pub fn waiting(&self) -> impl Iterator<Item = Waiting<'_, T>> {
        let (queued, known) = (self.outbox.len(), self.decided_by.len());
        self.outbox.iter().enumerate().map(move |(i, output)| Waiting {
            number: self.published + i as u64,
            decided_by: (i + known)
                .checked_sub(queued)
                .and_then(|j| self.decided_by.get(j)?.as_ref()),
            output,
        })
    }

    /// The first `n` outputs [`Outbox::waiting`] gave are stored on the bus.
    pub fn sent_all(&mut self, n: usize) {
        for _ in 0..n.min(self.outbox.len()) {
            self.sent();
        }
    }

    /// The output [`Outbox::next`] gave is stored on the bus: the next one comes up.
    pub fn sent(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        if self.decided_by.len() >= self.outbox.len() {
            self.decided_by.pop_front();
        }
        self.outbox.pop_front();
        self.published += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &'static str, id: &str) -> InputMeta {
        InputMeta {
            input: name,
            subject: String::new(),
            stream: String::new(),
            stream_seq: 0,
            delivered: 1,
            input_id: id.to_owned(),
            message_id: id.to_owned(),
            correlation_id: id.to_owned(),
            traceparent: None,
        }
    }

    /// Applies the input with `decide` unless it was applied before; whether it ran.
    fn apply<T, E>(
        o: &mut Outbox<T>,
        meta: &InputMeta,
        decide: impl FnOnce() -> Result<Vec<T>, E>,
    ) -> Result<bool, E> {
        let Some(input) = o.unapplied(meta) else { return Ok(false) };
        let outputs = decide()?;
        o.applied(input, outputs);
        Ok(true)
    }

    fn decided(items: &[u32]) -> impl FnOnce() -> Result<Vec<u32>, ()> + '_ {
        move || Ok(items.to_vec())
    }

    #[test]
    fn an_input_is_applied_once_per_consumer_and_stream() {
        let mut o = Outbox::default();
        assert_eq!(apply(&mut o, &input("events", "CN_EVENTS:a:7"), decided(&[1])), Ok(true));
        assert_eq!(apply(&mut o, &input("events", "CN_EVENTS:a:7"), decided(&[2])), Ok(false));
        assert_eq!(apply(&mut o, &input("events", "CN_EVENTS:a:3"), decided(&[2])), Ok(false));
        assert_eq!(apply(&mut o, &input("events", "CN_EVENTS:a:8"), decided(&[2])), Ok(true));
        // Another consumer on the same stream is not ordered with this one.
        assert_eq!(apply(&mut o, &input("deploys", "CN_EVENTS:a:5"), decided(&[3])), Ok(true));
        // A recreated stream (new epoch) starts again.
        assert_eq!(apply(&mut o, &input("events", "CN_EVENTS:b:1"), decided(&[4])), Ok(true));
        // Due work has no position: always applied.
        assert_eq!(apply(&mut o, &input("", "due:tick:1"), decided(&[5])), Ok(true));
        assert_eq!(apply(&mut o, &input("", "due:tick:1"), decided(&[5])), Ok(true));
        assert_eq!(o.outbox, [1, 2, 3, 4, 5, 5]);
    }

    #[test]
    fn a_failed_decision_marks_nothing() {
        let mut o: Outbox<u32> = Outbox::default();
        assert_eq!(apply(&mut o, &input("events", "CN_EVENTS:a:7"), || Err("late")), Err("late"));
        assert_eq!(
            apply(&mut o, &input("events", "CN_EVENTS:a:7"), || Ok::<_, &str>(vec![1])),
            Ok(true)
        );
    }

    #[test]
    fn positions_of_old_stream_epochs_are_forgotten() {
        let mut o: Outbox<u32> = Outbox::default();
        for epoch in 0..20 {
            let id = format!("CN_EVENTS:e{epoch}:{}", epoch + 1);
            apply(&mut o, &input("events", &id), decided(&[])).unwrap();
        }
        assert_eq!(o.applied.len(), POSITIONS_KEPT);
        assert!(o.applied.contains_key("events:CN_EVENTS:e19"));
    }

    #[test]
    fn positions_stored_by_stream_alone_still_count() {
        let mut o: Outbox<u32> = Outbox::default();
        o.applied.insert("CN_EVENTS:a".to_owned(), 7);
        assert_eq!(apply(&mut o, &input("events", "CN_EVENTS:a:7"), decided(&[1])), Ok(false));
        assert_eq!(apply(&mut o, &input("events", "CN_EVENTS:a:8"), decided(&[1])), Ok(true));
    }

    #[test]
    fn outputs_come_out_in_order_numbered_and_stay_until_sent() {
        let mut o = Outbox::default();
        o.push([10, 11]);
        assert_eq!(o.next(), Some((0, &10)));
        assert_eq!(o.next(), Some((0, &10)), "not sent: the same output again");
        o.sent();
        o.push([12]);
        assert_eq!(o.next(), Some((1, &11)));
        o.sent();
        o.sent();
        assert_eq!((o.next(), o.published(), o.is_empty()), (None, 3, true));
        o.sent();
        assert_eq!(o.published(), 3, "nothing to send: nothing counted");
    }

    /// The key and chain each waiting output would be published under.
    fn keys(o: &Outbox<u32>) -> Vec<(u32, Option<(String, String)>)> {
        o.waiting()
            .map(|w| (*w.output, w.decided_by.map(|d| (d.key(), d.correlation_id.clone()))))
            .collect()
    }

    fn by(input: &str, n: u32) -> Option<(String, String)> {
        Some((format!("{input}:{n}"), input.to_owned()))
    }

    #[test]
    fn an_output_left_waiting_keeps_the_identity_of_the_input_that_decided_it() {
        let mut o = Outbox::default();
        apply(&mut o, &input("events", "CN_EVENTS:a:7"), decided(&[1, 2])).unwrap();
        o.sent();
        // Output 2's publish failed; a later input decides 3 and publishes 2 along with it:
        // 2 keeps input 7's key and chain, so a repeat of a publish that was stored after all
        // is dropped, not published again under input 8's ids.
        apply(&mut o, &input("events", "CN_EVENTS:a:8"), decided(&[3])).unwrap();
        assert_eq!(keys(&o), [(2, by("CN_EVENTS:a:7", 1)), (3, by("CN_EVENTS:a:8", 0))]);
        o.push([4]);
        o.sent_all(2);
        assert_eq!(keys(&o), [(4, None)], "pushed outside an input: no input to keep");
    }

    #[test]
    fn outputs_waiting_from_before_inputs_were_kept_line_up_with_later_ones() {
        // As loaded from a state file written before `decided_by` existed.
        let mut o: Outbox<u32> = Outbox { outbox: VecDeque::from([1, 2]), ..Outbox::default() };
        apply(&mut o, &input("events", "CN_EVENTS:a:9"), decided(&[3])).unwrap();
        assert_eq!(keys(&o), [(1, None), (2, None), (3, by("CN_EVENTS:a:9", 0))]);
        o.sent();
        assert_eq!(keys(&o), [(2, None), (3, by("CN_EVENTS:a:9", 0))]);
        o.sent();
        assert_eq!(keys(&o), [(3, by("CN_EVENTS:a:9", 0))]);
        let again: Outbox<u32> =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&o).unwrap()).unwrap();
        assert_eq!(again, o, "kept across the state file");
    }

    #[test]
    fn state_stored_before_the_outbox_existed_loads_into_it() {
        #[derive(Serialize)]
        struct Before {
            name: String,
            outbox: VecDeque<u32>,
            applied: BTreeMap<String, u64>,
        }
        #[derive(Deserialize, Serialize, Debug, PartialEq)]
        struct After {
            name: String,
            #[serde(flatten)]
            delivery: Outbox<u32>,
        }
        let before = Before {
            name: "cart".to_owned(),
            outbox: VecDeque::from([4, 5]),
            applied: BTreeMap::from([("CN_EVENTS:a".to_owned(), 9)]),
        };
        let after: After = rmp_serde::from_slice(&rmp_serde::to_vec_named(&before).unwrap())
            .expect("the old state loads");
        assert_eq!(after.name, "cart");
        assert_eq!(after.delivery.outbox, [4, 5]);
        assert_eq!(after.delivery.applied["CN_EVENTS:a"], 9);
        let again: After =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&after).unwrap()).unwrap();
        assert_eq!(again, after);
    }
}
