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
use bus_schema::codec::{Limits, decode_inbound_at};
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

impl Processor<'_> {
    /// Handles one delivery to its end. `Err` means the agent must stop.
    pub async fn process<H: Handler>(
        &mut self,
        handler: &mut H,
        delivery: Delivery,
    ) -> Result<(), RuntimeError> {
        let msg = &delivery.msg;
        let Some(meta) = input_meta(msg, delivery.input, &delivery.epoch) else {
            warn!(subject = %msg.subject, "message without JetStream metadata; ignoring it");
            return Ok(());
        };
        let outcome = if meta.delivered > self.policy.max_attempts {
            Err(HandleError::Reject {
                reason: RejectReason::MaxDeliveriesExceeded,
                message: format!(
                    "delivered {} times; an earlier attempt did not finish (did the agent crash?)",
                    meta.delivered
                ),
            })
        } else {
            let content_type = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(headers::CONTENT_TYPE))
                .map(|v| v.as_str().to_owned());
            // The clock for the input rules is JetStream's: when the server stored the message.
            let clock = msg
                .info()
                .ok()
                .and_then(|i| {
                    bus_schema::Timestamp::from_unix_nanos(i.published.unix_timestamp_nanos())
                })
                .unwrap_or_else(bus_schema::Timestamp::now);
            match decode_inbound_at(
                &meta.subject,
                content_type.as_deref(),
                &msg.payload,
                self.limits,
                clock,
            ) {
                Err(e) => Err(HandleError::Reject { reason: e.reason(), message: e.to_string() }),
                Ok(inbound) => match H::Input::from_input(delivery.input, inbound) {
                    Some(input) => {
                        let mut ctx = Context::new(
                            self.agent,
                            self.inputs,
                            &meta,
                            self.publisher,
                            self.proof,
                        );
                        let work = handler.handle(&mut ctx, input);
                        with_progress(msg, self.policy.ack_wait, work).await
                    }
                    None => Err(HandleError::Reject {
                        reason: RejectReason::InvalidSubject,
                        message: format!("not a message the input {:?} reads", delivery.input),
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
        let result = match outcome {
            Ok(()) => {
                self.stats.processed.fetch_add(1, Ordering::Relaxed);
                ack(msg, &meta).await;
                self.positions.finished(&delivery.durable, meta.stream_seq);
                Ok(())
            }
            Err(HandleError::Reject { reason, message }) => {
                match self.reject(msg, &meta, reason, &message).await {
                    Ok(()) => {
                        ack(msg, &meta).await;
                        self.positions.finished(&delivery.durable, meta.stream_seq);
                        Ok(())
                    }
                    Err(e) if e.is_fatal() => Err(e),
                    Err(e) => {
                        // Not acked: JetStream delivers it again and the rejection is retried.
                        error!(input = %meta.input_id, error = %e, "could not record the rejection; will retry");
                        nak(msg, self.policy.retry_delay(meta.delivered)).await;
                        Ok(())
                    }
                }
            }
            Err(HandleError::Retry(message)) => {
                let delay = self.policy.retry_delay(meta.delivered);
                warn!(input = %meta.input_id, attempt = meta.delivered, retry_in = ?delay, error = %message, "handling failed; will retry");
                nak(msg, delay).await;
                Ok(())
            }
            Err(HandleError::Fatal(e)) => {
                nak(msg, Duration::ZERO).await;
                Err(e)
            }
        };
        self.stats.proof_seq.store(self.proof.head().seq, Ordering::Relaxed);
        result
    }

    /// Records `event_rejected` with everything needed to find and replay the input.
    async fn reject(
        &mut self,
        msg: &jetstream::Message,
        meta: &InputMeta,
        reason: RejectReason,
        message: &str,
    ) -> Result<(), RuntimeError> {
        warn!(input = %meta.input_id, subject = %meta.subject, reason = %reason, "rejected input: {message}");
        let excerpt: String =
            String::from_utf8_lossy(&msg.payload[..msg.payload.len().min(256)]).into_owned();
        let draft = ProofDraft::new(ProofKind::EventRejected)
            .reason(reason.as_str())
            .correlation(meta.correlation_id.clone())
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

fn input_meta(msg: &jetstream::Message, input: &'static str, epoch: &str) -> Option<InputMeta> {
    let info = msg.info().ok()?;
    let input_id = format!("{}:{epoch}:{}", info.stream, info.stream_sequence);
    let header = |name: &str| id_header(msg.headers.as_ref(), name);
    let message_id = header(headers::MSG_ID).unwrap_or_else(|| input_id.clone());
    let correlation_id = header(headers::CORRELATION_ID).unwrap_or_else(|| message_id.clone());
    Some(InputMeta {
        input,
        subject: msg.subject.to_string(),
        stream: info.stream.to_owned(),
        stream_seq: info.stream_sequence,
        delivered: u32::try_from(info.delivered).unwrap_or(u32::MAX),
        input_id,
        message_id,
        correlation_id,
    })
}

/// Acks without waiting for the server's confirmation: a lost ack means a redelivery, and
/// handling a redelivered input is harmless (its outputs and records are de-duplicated).
async fn ack(msg: &jetstream::Message, meta: &InputMeta) {
    if let Err(e) = msg.ack().await {
        warn!(input = %meta.input_id, error = %e, "ack not sent; the input will be redelivered");
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
