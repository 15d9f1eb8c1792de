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
use crate::tail::{Since, proof_consumer};

/// Reads CN_PROOF up to its last message at the time of the call and audits it.
pub async fn audit(js: &jetstream::Context) -> Result<(ProofAudit, u64), Failure> {
    let mut stream = js.get_stream(Stream::Proof.name()).await.map_err(|e| format!("cannot open CN_PROOF: {e}"))?;
    let last = stream.info().await.map_err(|e| format!("cannot read CN_PROOF: {e}"))?.state.last_sequence;
    let mut audit = ProofAudit::new();
    let mut read = 0;
    if last == 0 {
        return Ok((audit, 0));
    }
    let consumer = proof_consumer(js, PROOF.all().pattern().to_owned(), Since::All).await?;
    let mut messages = consumer.stream().max_messages_per_batch(1000).messages().await.map_err(|e| format!("cannot read CN_PROOF: {e}"))?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await.map_err(|_| "timed out reading CN_PROOF")?;
        let Some(msg) = next else { break };
        let msg = msg.map_err(|e| format!("reading CN_PROOF: {e}"))?;
        let info = msg.info().map_err(|e| format!("reading CN_PROOF: {e}"))?;
        let stream_seq = info.stream_sequence;
        let header = msg.headers.as_ref().and_then(|h| h.get(headers::PROOF_HASH)).map(|v| v.as_str().to_owned());
        audit.push(StoredProof { stream_seq, subject: msg.subject.as_str(), payload: &msg.payload, header_hash: header.as_deref() });
        read += 1;
        if stream_seq >= last {
            break;
        }
    }
    Ok((audit, read))
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
        println!("{}", json!({"intact": audit.is_intact(), "records": read, "chains": chains}));
    } else {
        for r in &reports {
            match &r.first_break {
                None => println!("ok      {}  {} records, seq 1..{}", r.subject, r.records, r.verified_through),
                Some(b) => println!("BROKEN  {}  verified through seq {}: {b}", r.subject, r.verified_through),
            }
        }
        let broken = reports.iter().filter(|r| r.first_break.is_some()).count();
        println!("{read} records in {} chains; {}", reports.len(), if broken == 0 { "every chain is intact".to_owned() } else { format!("{broken} broken") });
    }
    Ok(if audit.is_intact() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
