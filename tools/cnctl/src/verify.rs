//! `cnctl proof verify`: check every hash chain in CN_PROOF.

use std::process::ExitCode;
use std::time::Duration;

use agent_runtime::config::NatsArgs;
use async_nats::jetstream;
use bus_schema::headers;
use bus_schema::proof::ProofAudit;
use bus_schema::proof::verify::StoredProof;
use bus_schema::subject::{PROOF, Stream};
use futures_util::StreamExt;
use serde_json::json;

use crate::Failure;
use crate::style::{Tone, paint};
use crate::tail::{Since, proof_consumer};

/// One message of CN_PROOF as stored.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub stream_seq: u64,
    pub subject: String,
    pub payload: Vec<u8>,
    /// The `Cn-Proof-Hash` header, when present.
    pub header_hash: Option<String>,
}

impl StoredMessage {
    pub fn as_stored(&self) -> StoredProof<'_> {
        StoredProof {
            stream_seq: self.stream_seq,
            subject: &self.subject,
            payload: &self.payload,
            header_hash: self.header_hash.as_deref(),
        }
    }
}

/// Every message in CN_PROOF up to its last one at the time of the call, in stream order.
pub async fn read_all(js: &jetstream::Context) -> Result<Vec<StoredMessage>, Failure> {
    let mut stream = js
        .get_stream(Stream::Proof.name())
        .await
        .map_err(|e| format!("cannot open CN_PROOF: {e}"))?;
    let last =
        stream.info().await.map_err(|e| format!("cannot read CN_PROOF: {e}"))?.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let consumer = proof_consumer(js, PROOF.all().pattern().to_owned(), Since::All).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .map_err(|e| format!("cannot read CN_PROOF: {e}"))?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| "timed out reading CN_PROOF")?;
        let Some(msg) = next else { break };
        let msg = msg.map_err(|e| format!("reading CN_PROOF: {e}"))?;
        let stream_seq = msg.info().map_err(|e| format!("reading CN_PROOF: {e}"))?.stream_sequence;
        let header_hash = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::PROOF_HASH))
            .map(|v| v.as_str().to_owned());
        out.push(StoredMessage {
            stream_seq,
            subject: msg.subject.to_string(),
            payload: msg.payload.to_vec(),
            header_hash,
        });
        if stream_seq >= last {
            break;
        }
    }
    Ok(out)
}

/// Reads CN_PROOF and audits every chain.
pub async fn audit(js: &jetstream::Context) -> Result<(ProofAudit, u64), Failure> {
    let messages = read_all(js).await?;
    let mut audit = ProofAudit::new();
    for m in &messages {
        audit.push(m.as_stored());
    }
    Ok((audit, messages.len() as u64))
}

pub async fn run(nats: &NatsArgs, as_json: bool) -> Result<ExitCode, Failure> {
    let client = crate::connect(nats).await?;
    let (audit, read) = audit(&jetstream::new(client)).await?;
    let reports = audit.reports();
    if as_json {
        let chains: Vec<_> = reports
            .iter()
            .map(|r| json!({"chain": r.subject, "records": r.records, "verified_through": r.verified_through, "break": r.first_break.as_ref().map(ToString::to_string)}))
            .collect();
        outln!("{}", json!({"intact": audit.is_intact(), "records": read, "chains": chains}));
    } else {
        for r in &reports {
            match &r.first_break {
                None => outln!(
                    "{}      {}  {} records, seq 1..{}",
                    paint("ok", Tone::Good),
                    r.subject,
                    r.records,
                    r.verified_through
                ),
                Some(b) => outln!(
                    "{}  {}  verified through seq {}: {b}",
                    paint("BROKEN", Tone::Bad),
                    r.subject,
                    r.verified_through
                ),
            }
        }
        let broken = reports.iter().filter(|r| r.first_break.is_some()).count();
        outln!(
            "{read} records in {} chains; {}",
            reports.len(),
            if broken == 0 {
                "every chain is intact".to_owned()
            } else {
                format!("{broken} broken")
            }
        );
    }
    Ok(if audit.is_intact() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
