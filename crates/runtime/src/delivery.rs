//! One input from delivery to its end: handled and acked, rejected and acked, or handed back.
//!
//! The message is decoded and validated before the handler sees it (bad input becomes
//! `event_rejected`). While the handler works, the runtime tells JetStream it is still in
//! progress, so a slow handler is not redelivered under it. A failing input is retried with
//! back-off and rejected as poison on its last attempt; a rejection that cannot be recorded
//! leaves the input unacked, so it comes back. Errors that make going on unsafe (another
//! process writing this chain, a broken state file) end the run.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use bus_schema::codec::{Limits, decode_message_at};
use bus_schema::fleet::InputDef;
use bus_schema::inputs::AgentInputs;
use bus_schema::proof::ProofKind;
use bus_schema::{AgentName, RejectReason, headers};
use serde_json::json;
use tracing::{error, warn};

use crate::consumer::{Delivery, DeliveryPolicy};
use crate::error::RuntimeError;
use crate::handler::{Context, HandleError, Handler, InputMeta};
use crate::position::Positions;
use crate::proof::{ProofDraft, ProofWriter};
use crate::publish::Publisher;
use crate::status::Stats;

/// Everything one input's processing needs from the agent.
pub(crate) struct Processor<'a> {
    pub agent: &'a AgentName,
    pub inputs: &'a [InputDef],
    pub publisher: &'a Publisher,
    pub proof: &'a mut ProofWriter,
    pub stats: &'a Stats,
    pub limits: &'a Limits,
    pub policy: DeliveryPolicy,
    pub positions: &'a Positions,
}

/// A stored input as the processor sees it: delivered live by a consumer, or read back from its
/// stream to replay it after a crash.
pub(crate) struct Stored<'m> {
    pub subject: &'m str,
    pub headers: Option<&'m async_nats::HeaderMap>,
    pub payload: &'m [u8],
    pub stream: &'m str,
    pub stream_seq: u64,
    /// 1 on first delivery.
    pub delivered: u32,
    /// When JetStream stored it: the clock for the input rules.
    pub stored_at: Option<bus_schema::Timestamp>,
}

/// How the handling of an input ended, short of a reason to stop the agent.
enum Settled {
    /// Handled, or rejected with the rejection recorded: done with.
    Done,
    /// Try again after this delay.
    Retry(Duration),
}

impl Processor<'_> {
    /// Handles one delivery to its end: acked when done with, handed back for a retry
    /// otherwise. `Err` means the agent must stop.
    pub async fn process<H: Handler>(
        &mut self,
        handler: &mut H,
        delivery: Delivery,
    ) -> Result<(), RuntimeError> {
        let msg = &delivery.msg;
        let Ok(info) = msg.info() else {
            warn!(subject = %msg.subject, "message without JetStream metadata; ignoring it");
            return Ok(());
        };
        let stored = Stored {
            subject: msg.subject.as_str(),
            headers: msg.headers.as_ref(),
            payload: &msg.payload,
            stream: info.stream,
            stream_seq: info.stream_sequence,
            delivered: u32::try_from(info.delivered).unwrap_or(u32::MAX),
            stored_at: bus_schema::Timestamp::from_unix_nanos(
                info.published.unix_timestamp_nanos(),
            ),
        };
        let input_id = format!("{}:{}:{}", stored.stream, delivery.epoch, stored.stream_seq);
        match self.settle(handler, &stored, delivery.input, &delivery.epoch, Some(msg)).await {
            Ok(Settled::Done) => {
                ack(msg, &input_id).await;
                self.positions.finished(&delivery.durable, stored.stream_seq);
                Ok(())
            }
            Ok(Settled::Retry(delay)) => {
                nak(msg, delay).await;
                Ok(())
            }
            Err(e) => {
                nak(msg, Duration::ZERO).await;
                Err(e)
            }
        }
    }

    /// Handles an input read back from its stream because the state file's snapshot did not
    /// cover it: like a delivery, without acking (it was acked before the crash), retrying in
    /// place with the same back-off until it is done with.
    pub async fn replay<H: Handler>(
        &mut self,
        handler: &mut H,
        mut stored: Stored<'_>,
        input: &'static str,
        epoch: &str,
    ) -> Result<(), RuntimeError> {
        loop {
            match self.settle(handler, &stored, input, epoch, None).await? {
                Settled::Done => return Ok(()),
                Settled::Retry(delay) => {
                    tokio::time::sleep(delay).await;
                    stored.delivered = stored.delivered.saturating_add(1);
                }
            }
        }
    }

    /// Decodes, validates and handles one input, and records its rejection if it is rejected.
    /// `live` is the delivery to keep telling JetStream about while the handler works.
    async fn settle<H: Handler>(
        &mut self,
        handler: &mut H,
        stored: &Stored<'_>,
        input: &'static str,
        epoch: &str,
        live: Option<&jetstream::Message>,
    ) -> Result<Settled, RuntimeError> {
        let meta = input_meta(stored, input, epoch);
        if let Some(tp) = meta.traceparent {
            self.publisher.remember_trace(&meta.correlation_id, tp);
        }
        let outcome = if meta.delivered > self.policy.max_attempts {
            Err(HandleError::Reject {
                reason: RejectReason::MaxDeliveriesExceeded,
                message: format!(
                    "delivered {} times; an earlier attempt did not finish (did the agent crash?)",
                    meta.delivered
                ),
            })
        } else {
            // The clock for the input rules is JetStream's: when the server stored the message.
            let clock = stored.stored_at.unwrap_or_else(bus_schema::Timestamp::now);
            match decode_message_at(
                &meta.subject,
                &crate::publish::header_pairs(stored.headers),
                stored.payload,
                self.limits,
                clock,
            ) {
                Err(e) => Err(HandleError::Reject { reason: e.reason(), message: e.to_string() }),
                Ok(inbound) => match H::Input::from_input(input, inbound) {
                    Some(decoded) => {
                        let mut ctx = Context::new(
                            self.agent,
                            self.inputs,
                            &meta,
                            self.publisher,
                            self.proof,
                            self.positions,
                        );
                        let work = async {
                            let handled = handler.handle(&mut ctx, decoded).await;
                            ctx.conclude(handled).await
                        };
                        match live {
                            Some(msg) => with_progress(msg, self.policy.ack_wait, work).await,
                            None => work.await,
                        }
                    }
                    None => Err(HandleError::Reject {
                        reason: RejectReason::InvalidSubject,
                        message: format!("not a message the input {input:?} reads"),
                    }),
                },
            }
        };
        let outcome = match outcome {
            Err(HandleError::Retry(message)) if meta.delivered >= self.policy.max_attempts => {
                Err(HandleError::Reject {
                    reason: RejectReason::MaxDeliveriesExceeded,
                    message: format!(
                        "gave up after {} attempts; last error: {message}",
                        meta.delivered
                    ),
                })
            }
            other => other,
        };
        let settled = match outcome {
            Ok(()) => {
                self.stats.processed.fetch_add(1, Ordering::Relaxed);
                Ok(Settled::Done)
            }
            Err(HandleError::Reject { reason, message }) => {
                match self.reject(stored, &meta, reason, &message).await {
                    Ok(()) => Ok(Settled::Done),
                    Err(e) if e.is_fatal() => Err(e),
                    Err(e) => {
                        // Not done with: it comes again and the rejection is retried.
                        error!(input = %meta.input_id, error = %e, "could not record the rejection; will retry");
                        Ok(Settled::Retry(self.policy.retry_delay(meta.delivered)))
                    }
                }
            }
            Err(HandleError::Retry(message)) => {
                let delay = self.policy.retry_delay(meta.delivered);
                warn!(input = %meta.input_id, attempt = meta.delivered, retry_in = ?delay, error = %message, "handling failed; will retry");
                Ok(Settled::Retry(delay))
            }
            Err(HandleError::Fatal(e)) => Err(e),
        };
        self.stats.proof_seq.store(self.proof.head().seq, Ordering::Relaxed);
        settled
    }

    /// Records `event_rejected` with everything needed to find and replay the input.
    async fn reject(
        &mut self,
        msg: &Stored<'_>,
        meta: &InputMeta,
        reason: RejectReason,
        message: &str,
    ) -> Result<(), RuntimeError> {
        warn!(input = %meta.input_id, subject = %meta.subject, reason = %reason, "rejected input: {message}");
        let excerpt: String =
            String::from_utf8_lossy(&msg.payload[..msg.payload.len().min(256)]).into_owned();
        // What the subject says it was about, so the pipeline finds its rejection by service.
        let draft = ProofDraft::new(ProofKind::EventRejected)
            .reason(reason.as_str())
            .correlation(meta.correlation_id.clone())
            .scope_of_subject(&meta.subject)
            .detail(json!({
                "error": message,
                "subject": truncate(&meta.subject, 256),
                "stream": meta.stream,
                "stream_seq": meta.stream_seq,
                "delivered": meta.delivered,
                "size": msg.payload.len(),
                "payload_excerpt": excerpt,
            }));
        self.proof.append(draft, Some(&format!("{}:rejected", meta.input_id))).await?;
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs the handler, telling JetStream every third of the ack wait that the input is still
/// being worked on.
async fn with_progress<F: std::future::Future<Output = Result<(), HandleError>>>(
    msg: &jetstream::Message,
    ack_wait: Duration,
    work: F,
) -> Result<(), HandleError> {
    tokio::pin!(work);
    let period = (ack_wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = tick.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    warn!(error = %e, "could not extend the ack wait");
                }
            }
        }
    }
}

/// An id header (message, correlation), if it is fit to end up in records and keys: printable
/// ASCII, at most 200 bytes. Shared by stored inputs and core requests.
pub(crate) fn id_header(headers: Option<&async_nats::HeaderMap>, name: &str) -> Option<String> {
    headers
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
        .filter(|v| !v.is_empty() && v.len() <= 200 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
}

fn input_meta(stored: &Stored<'_>, input: &'static str, epoch: &str) -> InputMeta {
    let input_id = format!("{}:{epoch}:{}", stored.stream, stored.stream_seq);
    let header = |name: &str| id_header(stored.headers, name);
    let message_id = header(headers::MSG_ID).unwrap_or_else(|| input_id.clone());
    let correlation_id = header(headers::CORRELATION_ID).unwrap_or_else(|| message_id.clone());
    let traceparent = header(headers::TRACEPARENT).and_then(|v| v.parse().ok());
    // As the publisher named it: the partition token the server appended is a detail of
    // storage, checked by the decoder (a wrong one stays, and the input is rejected).
    let subject = bus_schema::subject::without_partition(stored.subject).unwrap_or(stored.subject);
    InputMeta {
        input,
        subject: subject.to_owned(),
        stream: stored.stream.to_owned(),
        stream_seq: stored.stream_seq,
        delivered: stored.delivered,
        input_id,
        message_id,
        correlation_id,
        traceparent,
    }
}

/// Acks without waiting for the server's confirmation: a lost ack means a redelivery, and
/// handling a redelivered input is harmless (its outputs and records are de-duplicated).
async fn ack(msg: &jetstream::Message, input_id: &str) {
    if let Err(e) = msg.ack().await {
        warn!(input = %input_id, error = %e, "ack not sent; the input will be redelivered");
    }
}

async fn nak(msg: &jetstream::Message, delay: Duration) {
    let kind = if delay.is_zero() { AckKind::Nak(None) } else { AckKind::Nak(Some(delay)) };
    if let Err(e) = msg.ack_with(kind).await {
        warn!(error = %e, "nak failed; the input will be redelivered after the ack wait");
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
