//! `cnctl publish --wait`: the fleet's verdict on one published message.
//!
//! Every agent consumer that reads the subject acks the message once it is done with it, and an
//! agent that refuses it records `event_rejected` — carrying the message's correlation id —
//! before it acks. So cnctl listens to the proof log before it publishes, then asks each of
//! those consumers how far it has acked (its ack floor). When every floor has passed the
//! message the verdict is in: rejected by the agents that recorded a rejection, accepted by the
//! others. An agent that is down leaves its floor where it was, and the wait ends without a
//! verdict from it.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, response::Response};
use bus_schema::fleet::{Reader, readers_of};
use bus_schema::proof::{ProofKind, ProofRecord};
use bus_schema::subject::PROOF;
use futures_util::{FutureExt as _, StreamExt};
use serde::Serialize;
use tokio::time::Instant;

use crate::Failure;

/// The proof log, listened to from before the message is published.
#[derive(Debug)]
pub struct Listener {
    records: async_nats::Subscriber,
}

impl Listener {
    /// Starts listening; the server has the subscription when this returns, so no record about
    /// a message published afterwards is missed.
    pub async fn start(client: &async_nats::Client) -> Result<Self, Failure> {
        let records = client
            .subscribe(PROOF.all().pattern().to_owned())
            .await
            .map_err(|e| format!("cannot listen to the proof log for the verdict: {e}"))?;
        client.flush().await.map_err(|e| format!("cannot listen to the proof log: {e}"))?;
        Ok(Self { records })
    }

    /// Waits until every agent that reads `subject` is past `stream_seq`, or `timeout`.
    pub async fn verdict(
        mut self,
        client: &async_nats::Client,
        subject: &str,
        stream_seq: u64,
        correlation_id: &str,
        timeout: Duration,
    ) -> Verdict {
        let js = jetstream::new(client.clone());
        let deadline = Instant::now() + timeout;
        let mut readers: Vec<ReaderVerdict> =
            readers_of(subject).into_iter().map(ReaderVerdict::waiting).collect();
        let mut records = Vec::new();
        let mut pause = Duration::from_millis(5);
        loop {
            for r in readers.iter_mut().filter(|r| r.verdict == Answer::NoAnswer) {
                r.verdict = match ack_floor(&js, &r.reader).await {
                    Ok(Some(floor)) if floor >= stream_seq => Answer::Accepted,
                    Ok(Some(_)) => Answer::NoAnswer,
                    Ok(None) => Answer::NoConsumer,
                    Err(e) => {
                        r.error = Some(e);
                        Answer::NoAnswer
                    }
                };
            }
            let done = readers.iter().all(|r| r.verdict != Answer::NoAnswer);
            // Records arrive before the ack that moved the floor; a flush round-trip makes
            // sure the ones sent before it are here.
            if done {
                let _ = client.flush().await;
            }
            self.drain(correlation_id, &mut records);
            if done || Instant::now() >= deadline {
                break;
            }
            let wake = (Instant::now() + pause).min(deadline);
            tokio::select! {
                Some(msg) = self.records.next() => keep(&msg.payload, correlation_id, &mut records),
                _ = tokio::time::sleep_until(wake) => pause = (pause * 2).min(Duration::from_millis(200)),
            }
        }
        for r in &mut readers {
            let rejection = records
                .iter()
                .find(|x| x.kind == ProofKind::EventRejected && x.agent == r.reader.agent);
            if let Some(x) = rejection {
                r.verdict = Answer::Rejected;
                r.reason = x.reason.as_ref().map(|c| c.to_string());
                r.error = x.detail.get("error").and_then(|e| e.as_str()).map(str::to_owned);
            }
        }
        Verdict { readers, records }
    }

    fn drain(&mut self, correlation_id: &str, records: &mut Vec<ProofRecord>) {
        while let Some(Some(msg)) = self.records.next().now_or_never() {
            keep(&msg.payload, correlation_id, records);
        }
    }
}

/// Keeps a record about the message (its correlation id).
fn keep(payload: &[u8], correlation_id: &str, records: &mut Vec<ProofRecord>) {
    if let Ok(r) = serde_json::from_slice::<ProofRecord>(payload) {
        if r.correlation_id.as_deref() == Some(correlation_id) {
            records.push(r);
        }
    }
}

/// How far the consumer has acked on its stream; `None` when it does not exist (its agent has
/// never run against this server).
async fn ack_floor(js: &jetstream::Context, reader: &Reader) -> Result<Option<u64>, String> {
    let subject = format!("CONSUMER.INFO.{}.{}", reader.stream.name(), reader.durable);
    match js.request::<_, _, Response<consumer::Info>>(subject, &serde_json::json!({})).await {
        Ok(Response::Ok(info)) => Ok(Some(info.ack_floor.stream_sequence)),
        Ok(Response::Err { error })
            if error.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND =>
        {
            Ok(None)
        }
        Ok(Response::Err { error }) => Err(format!("cannot ask {}: {error}", reader.durable)),
        Err(e) => Err(format!("cannot ask {}: {e}", reader.durable)),
    }
}

/// What one reader made of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Accepted,
    Rejected,
    /// Its consumer does not exist: the agent never ran against this server.
    NoConsumer,
    /// Not done with it when the wait ended.
    NoAnswer,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReaderVerdict {
    #[serde(serialize_with = "agent_name")]
    pub reader: Reader,
    pub verdict: Answer,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn agent_name<S: serde::Serializer>(r: &Reader, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}/{}", r.agent, r.durable))
}

impl ReaderVerdict {
    fn waiting(reader: Reader) -> Self {
        Self { reader, verdict: Answer::NoAnswer, reason: None, error: None }
    }
}

/// The fleet's verdict: each reader's answer, and the records about the message.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub readers: Vec<ReaderVerdict>,
    pub records: Vec<ProofRecord>,
}

impl Verdict {
    /// The verdict in one word: rejected if any reader rejected it, else no answer if any
    /// reader did not get to it, else accepted (by every reader that exists).
    pub fn summary(&self) -> Answer {
        let any = |a: Answer| self.readers.iter().any(|r| r.verdict == a);
        if any(Answer::Rejected) {
            Answer::Rejected
        } else if any(Answer::NoAnswer) {
            Answer::NoAnswer
        } else if any(Answer::Accepted) {
            Answer::Accepted
        } else {
            Answer::NoConsumer
        }
    }

    /// The agents with an answer `a`, comma separated.
    pub fn agents(&self, a: Answer) -> String {
        let mut names: Vec<String> = self
            .readers
            .iter()
            .filter(|r| r.verdict == a)
            .map(|r| r.reader.agent.to_string())
            .collect();
        names.dedup();
        names.join(", ")
    }
}
