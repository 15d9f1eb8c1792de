//! Reading the approval families from CN_WORK and publishing a decision.

use super::*;

/// CN_WORK, opened as the configured NATS user.
pub(super) struct Work {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    user: String,
}

impl Work {
    pub(super) async fn open(nats: &NatsArgs) -> Result<Self, Failure> {
        let client = crate::connect(nats).await?;
        let js =
            jetstream::context::ContextBuilder::new().timeout(JS_TIMEOUT).build(client.clone());
        let user = nats.user.clone().unwrap_or_else(|| "(no user)".to_owned());
        let stream = match js.get_stream(Stream::Work.name()).await {
            Ok(s) => s,
            Err(e) if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(_)) => {
                return Err(format!("cannot open CN_WORK: {e}; has the fleet run yet?").into());
            }
            Err(e) => return Err(format!("cannot read CN_WORK: {e}{}", denied(&user)).into()),
        };
        Ok(Self { client, js, stream, user })
    }

    /// An ephemeral pull consumer over `filter`; nothing to ack, gone when idle.
    async fn consumer(
        &self,
        filter: &str,
        deliver_policy: DeliverPolicy,
    ) -> Result<jetstream::consumer::PullConsumer, Failure> {
        let config = pull::Config {
            filter_subject: filter.to_owned(),
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        };
        let consumer = self.stream.create_consumer(config).await.map_err(|e| {
            use jetstream::stream::ConsumerErrorKind as K;
            let hint = if matches!(e.kind(), K::TimedOut | K::Request) {
                denied(&self.user)
            } else {
                String::new()
            };
            format!("cannot read {filter} from CN_WORK: {e}{hint}")
        })?;
        Ok(consumer)
    }

    /// Calls `each` with every message stored on `filter` now, in stream order.
    async fn read(
        &self,
        filter: &Filter,
        progress: &mut Progress,
        mut each: impl FnMut(&jetstream::Message),
    ) -> Result<(), Failure> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot read {filter} from CN_WORK: {e}");
        let consumer = self.consumer(filter.pattern(), DeliverPolicy::All).await?;
        let mut left = consumer.cached_info().num_pending;
        if left > 0 {
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(500)
                .messages()
                .await
                .map_err(|e| fail(&e))?;
            while left > 0 {
                let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
                    .await
                    .map_err(|_| fail(&"timed out"))?;
                let Some(msg) = next else { break };
                let msg = msg.map_err(|e| fail(&e))?;
                left = msg.info().map(|i| i.pending).unwrap_or(0);
                each(&msg);
                progress.tick(filter, left);
            }
        }
        // Best effort: an idle consumer goes away by itself anyway.
        let _ = self.stream.delete_consumer(&consumer.cached_info().name).await;
        Ok(())
    }

    /// Every pending approval (of one environment, when given), matched with what became of it.
    pub(super) async fn ledger(&self, env: Option<&Env>) -> Result<Ledger, Failure> {
        fn scoped<P>(family: &ServiceFamily<P>, env: Option<&Env>) -> Filter {
            env.map_or_else(|| family.all(), |e| family.env(e))
        }
        let mut ledger = Ledger::default();
        let mut progress = Progress::new();
        self.read(&scoped(&PENDING, env), &mut progress, |m| {
            match decode_stored::<PendingApproval>(m) {
                Some(p) => ledger.pending(Approval {
                    correlation_id: header(m, headers::CORRELATION_ID),
                    causation_id: header(m, headers::MSG_ID),
                    ..Approval::new(p)
                }),
                None => ledger.unreadable += 1,
            }
        })
        .await?;
        self.read(&scoped(&APPROVED, env), &mut progress, |m| {
            match decode_stored::<SignedApproval>(m) {
                Some(a) => ledger.approved(&a),
                None => ledger.unreadable += 1,
            }
        })
        .await?;
        self.read(&scoped(&REFUSED, env), &mut progress, |m| match decode_stored::<Refusal>(m) {
            Some(r) => ledger.refused(&r),
            None => ledger.unreadable += 1,
        })
        .await?;
        self.read(&scoped(&HUMAN_DECISIONS, env), &mut progress, |m| {
            match decode_stored::<HumanDecision>(m) {
                Some(h) => ledger.sent(&m.subject, h, stored_at(m)),
                None => ledger.unreadable += 1,
            }
        })
        .await?;
        progress.done();
        if ledger.unreadable > 0 {
            eprintln!(
                "note: skipped {} stored messages that could not be decoded",
                ledger.unreadable
            );
        }
        Ok(ledger)
    }

    /// Stores the decision and waits for JetStream's ack.
    pub(super) async fn publish(
        &self,
        a: &Approval,
        decision: &HumanDecision,
    ) -> Result<Published, Failure> {
        let subject = a.decision_subject();
        let msg_id = decision.msg_id();
        let trace = Trace {
            correlation_id: a.correlation_id.clone().unwrap_or_else(|| msg_id.clone()),
            causation_id: a.causation_id.clone().unwrap_or_else(|| msg_id.clone()),
            msg_id,
            traceparent: None,
        };
        let publisher = Publisher::new(self.client.clone(), self.js.clone());
        Ok(publisher
            .publish(&subject, decision, &trace)
            .await
            .map_err(|e| format!("the decision was not stored: {e}{}", denied(&self.user)))?)
    }

    /// Governance's answer about `a`, stored after stream sequence `after`, within `wait`.
    pub(super) async fn answer(
        &self,
        a: &Approval,
        after: u64,
        wait: Duration,
    ) -> Result<Option<Answer>, Failure> {
        // The environment's answers: the ledger picks this proposal's out.
        let env = &a.pending.proposal.env;
        let from = DeliverPolicy::ByStartSequence { start_sequence: after + 1 };
        let fail = |e: &dyn std::fmt::Display| format!("cannot wait for governance's answer: {e}");
        let approved = self
            .consumer(APPROVED.env(env).pattern(), from)
            .await?
            .messages()
            .await
            .map_err(|e| fail(&e))?;
        let refused = self
            .consumer(REFUSED.env(env).pattern(), from)
            .await?
            .messages()
            .await
            .map_err(|e| fail(&e))?;
        let approved = approved.map(|m| m.map(|m| (true, m)));
        let refused = refused.map(|m| m.map(|m| (false, m)));
        let mut both = futures_util::stream::select(approved, refused);
        let mut ledger = Ledger::default();
        ledger.pending(a.clone());
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(next)) = tokio::time::timeout_at(deadline, both.next()).await {
            let (is_approval, msg) = next.map_err(|e| fail(&e))?;
            match is_approval {
                true => decode_stored::<SignedApproval>(&msg)
                    .into_iter()
                    .for_each(|s| ledger.approved(&s)),
                false => {
                    decode_stored::<Refusal>(&msg).into_iter().for_each(|r| ledger.refused(&r))
                }
            }
            if let Some(answer) = ledger.get(&a.id()).and_then(|a| a.answer.clone()) {
                return Ok(Some(answer));
            }
        }
        Ok(None)
    }
}

/// What to suspect when a JetStream call goes unanswered: the server drops what a user may not
/// send and says so only in an asynchronous error, which the connect helper logs.
fn denied(user: &str) -> String {
    format!(
        "; reading and deciding approvals needs the `operator` NATS user (connected as {user}; set --nats-user/NATS_USER), and a PERMISSION VIOLATION above names what was refused"
    )
}

fn header(m: &jetstream::Message, name: &str) -> Option<String> {
    m.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned())
}

fn stored_at(m: &jetstream::Message) -> Option<Timestamp> {
    m.info().ok().and_then(|i| Timestamp::from_unix_nanos(i.published.unix_timestamp_nanos()))
}

/// Decodes a stored message by its `Content-Type` (inputs may be JSON or MessagePack).
fn decode_stored<P: Payload>(m: &jetstream::Message) -> Option<P> {
    let content_type = header(m, headers::CONTENT_TYPE);
    decode_by_content_type(content_type.as_deref(), &m.payload, &Limits::DEFAULT).ok()
}

/// A progress line on a terminal, only once reading has taken a while.
#[derive(Debug)]
struct Progress {
    started: Instant,
    last: Option<Instant>,
    read: u64,
    tty: bool,
}

impl Progress {
    fn new() -> Self {
        Self { started: Instant::now(), last: None, read: 0, tty: std::io::stderr().is_terminal() }
    }

    fn tick(&mut self, filter: &Filter, left: u64) {
        self.read += 1;
        let due = self.last.is_none_or(|l| l.elapsed() >= Duration::from_secs(1));
        if self.tty && due && self.started.elapsed() >= Duration::from_secs(2) {
            eprint!(
                "\rreading CN_WORK: {} messages read, {left} left on {filter}\x1b[K",
                self.read
            );
            self.last = Some(Instant::now());
        }
    }

    fn done(&self) {
        if self.last.is_some() {
            eprint!("\r\x1b[K");
        }
    }
}
