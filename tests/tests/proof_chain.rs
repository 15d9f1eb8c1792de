//! The proof writer against a real nats-server: chains continue across restarts and outages,
//! cannot be forked, and the verifier names the first forged or missing record.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use agent_runtime::proof::{ProofDraft, ProofWriter};
use agent_runtime::store::Store;
use agent_runtime::{Publisher, RuntimeError, streams};
use async_nats::HeaderMap;
use async_nats::jetstream;
use bus_schema::proof::{ChainBreak, ProofHash, ProofKind, ProofRecord};
use bus_schema::{AgentName, InstanceId, headers};
use cn_tests::{NatsServer, proof_log};
use serde_json::json;

async fn writer(
    server: &NatsServer,
    dir: &std::path::Path,
    instance: &str,
) -> anyhow::Result<ProofWriter> {
    let client = server.client().await?;
    let js = jetstream::new(client.clone());
    streams::ensure_streams(&js).await?;
    let store = Store::open(&dir.join(format!("w-{instance}.redb")))?;
    let agent: AgentName = "executor".parse()?;
    let instance: InstanceId = instance.parse()?;
    Ok(ProofWriter::open(Publisher::new(client, js), store, agent, instance).await?)
}

fn draft(i: u64) -> ProofDraft {
    ProofDraft::new(ProofKind::ActionExecuted).detail(json!({ "i": i }))
}

async fn all_records(server: &NatsServer) -> anyhow::Result<Vec<proof_log::StoredRecord>> {
    proof_log::read_all(&jetstream::new(server.client().await?)).await
}

#[tokio::test]
async fn a_chain_continues_across_restarts_and_verifies_end_to_end() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    {
        let mut w = writer(&server, dir.path(), "0").await?;
        for i in 0..3 {
            w.append(draft(i), None).await?;
        }
        assert_eq!(w.head().seq, 3);
    }
    {
        // Same instance, same data dir: a plain restart.
        let mut w = writer(&server, dir.path(), "0").await?;
        assert_eq!(w.head().seq, 3, "the head is read back from CN_PROOF");
        w.append(draft(3), None).await?;
    }
    {
        // Same instance, state file lost: the stream is the source of truth.
        let other = tempfile::tempdir()?;
        let mut w = writer(&server, other.path(), "0").await?;
        assert_eq!(w.head().seq, 4);
        w.append(draft(4), None).await?;
    }
    let records = all_records(&server).await?;
    let seqs: Vec<u64> = records.iter().filter_map(|r| r.record.as_ref().map(|r| r.seq)).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let audit = proof_log::audit(&records);
    assert!(audit.is_intact(), "{:?}", audit.reports());
    assert_eq!(audit.reports()[0].verified_through, 5);
    Ok(())
}

#[tokio::test]
async fn an_idempotency_key_records_a_decision_once() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let mut w = writer(&server, dir.path(), "0").await?;
    let first = w.append(draft(1), Some("CN_WORK:9:action_executed:1")).await?;
    let again = w.append(draft(1), Some("CN_WORK:9:action_executed:1")).await?;
    assert_eq!(first, again);
    drop(w);
    let mut w = writer(&server, dir.path(), "0").await?;
    assert_eq!(
        w.append(draft(1), Some("CN_WORK:9:action_executed:1")).await?,
        first,
        "keys survive a restart"
    );
    assert_eq!(all_records(&server).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_decision_cut_off_by_an_outage_is_recorded_exactly_once_when_its_input_is_retried()
-> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let mut w = writer(&server, dir.path(), "0").await?;
    w.append(draft(1), Some("input-1")).await?;
    w.append(draft(2), Some("input-2")).await?;

    server.kill();
    let err = w.append(draft(3), Some("input-3")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Publish { .. } | RuntimeError::Proof { .. }), "{err}");
    server.restart()?;
    // The same writer, once NATS is back: the input is retried and decides again.
    let seq = w.append(draft(3), Some("input-3")).await?;
    assert_eq!(seq, 3);
    assert_eq!(w.append(draft(3), Some("input-3")).await?, 3, "recorded once");
    drop(w);
    // A restart with the state file: the keys are known, the chain continues.
    let mut w = writer(&server, dir.path(), "0").await?;
    assert_eq!(w.append(draft(3), Some("input-3")).await?, 3);
    w.append(draft(4), None).await?;

    let records = all_records(&server).await?;
    let details: Vec<i64> =
        records.iter().filter_map(|r| r.record.as_ref()?.detail["i"].as_i64()).collect();
    assert_eq!(details, vec![1, 2, 3, 4]);
    assert!(proof_log::audit(&records).is_intact());
    Ok(())
}

#[tokio::test]
async fn keys_of_records_the_state_file_missed_are_read_back_from_the_chain() -> anyhow::Result<()>
{
    let server = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let mut w = writer(&server, dir.path(), "0").await?;
    for i in 0..5 {
        w.append(draft(i), Some(&format!("CN_WORK:e:{i}:action_executed:1"))).await?;
    }
    w.append(draft(5), None).await?;
    drop(w);
    // The state file is lost (or older than the chain, after a crash): the records carry their
    // keys in a header, and the writer learns them from the chain at open.
    let lost = tempfile::tempdir()?;
    let mut w = writer(&server, lost.path(), "0").await?;
    for i in 0..5 {
        let key = format!("CN_WORK:e:{i}:action_executed:1");
        assert_eq!(w.append(draft(i), Some(&key)).await?, i + 1, "{key} is recorded already");
    }
    assert_eq!(w.append(draft(6), Some("new")).await?, 7);
    let records = all_records(&server).await?;
    assert_eq!(records.len(), 7, "nothing recorded twice");
    let stream = jetstream::new(server.client().await?).get_stream("CN_PROOF").await?;
    let mut keyed = 0;
    for r in &records {
        let stored = stream.get_raw_message(r.stored.stream_seq).await?;
        keyed += usize::from(stored.headers.get(headers::PROOF_KEY).is_some());
    }
    assert_eq!(keyed, 6, "every keyed record carries its key");
    assert!(proof_log::audit(&records).is_intact());
    Ok(())
}

#[tokio::test]
async fn two_processes_with_one_instance_id_cannot_fork_the_chain() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut a = writer(&server, a_dir.path(), "0").await?;
    let mut b = writer(&server, b_dir.path(), "0").await?;
    a.append(draft(1), None).await?;
    let err = b.append(draft(2), None).await.unwrap_err();
    assert!(matches!(err, RuntimeError::ProofChainContended { .. }), "{err}");
    assert!(err.to_string().contains("--instance"), "{err}");
    assert!(proof_log::audit(&all_records(&server).await?).is_intact());
    Ok(())
}

/// Publishes a forged record on a chain's subject, as someone with publish rights could.
async fn forge(
    server: &NatsServer,
    record: &ProofRecord,
    header_hash: Option<String>,
    bytes: Option<Vec<u8>>,
) -> anyhow::Result<()> {
    let js = jetstream::new(server.client().await?);
    let bytes = match bytes {
        Some(b) => b,
        None => serde_json::to_vec(record)?,
    };
    let mut h = HeaderMap::new();
    h.insert(
        headers::PROOF_HASH,
        header_hash.unwrap_or_else(|| ProofHash::of(&bytes).to_hex()).as_str(),
    );
    js.publish_with_headers(
        format!("cn.proof.{}.{}", record.agent, record.instance),
        h,
        bytes.into(),
    )
    .await?
    .await?;
    Ok(())
}

#[tokio::test]
async fn forged_and_missing_records_are_reported_with_their_seq() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let mut last = Vec::new();
    for instance in ["gap", "tamper", "relink", "intact"] {
        let mut w = writer(&server, dir.path(), instance).await?;
        for i in 0..3 {
            w.append(draft(i), None).await?;
        }
        last.push((instance, w.head()));
    }
    let records = all_records(&server).await?;
    let third = |instance: &str| -> ProofRecord {
        records
            .iter()
            .filter_map(|r| r.record.clone())
            .find(|r| r.instance.as_str() == instance && r.seq == 3)
            .unwrap()
    };

    // "gap": seq 4 never arrives, seq 5 does.
    let mut skip = third("gap");
    skip.seq = 5;
    skip.prev_hash = last[0].1.hash;
    forge(&server, &skip, None, None).await?;

    // "tamper": a record whose bytes do not match the hash it claims.
    let mut next = third("tamper");
    next.seq = 4;
    next.prev_hash = last[1].1.hash;
    let honest = serde_json::to_vec(&next)?;
    let altered = String::from_utf8(honest.clone())?.replace("\"i\":2", "\"i\":99").into_bytes();
    forge(&server, &next, Some(ProofHash::of(&honest).to_hex()), Some(altered)).await?;

    // "relink": a well-formed seq 4 that does not link to seq 3.
    let mut fork = third("relink");
    fork.seq = 4;
    fork.prev_hash = ProofHash::of(b"some other history");
    forge(&server, &fork, None, None).await?;

    let audit = proof_log::audit(&all_records(&server).await?);
    let by_instance = |i: &str| {
        audit.reports().into_iter().find(|r| r.subject.ends_with(&format!(".{i}"))).unwrap()
    };
    assert!(matches!(
        by_instance("gap").first_break,
        Some(ChainBreak::Gap { expected: 4, found: 5, .. })
    ));
    assert!(matches!(by_instance("tamper").first_break, Some(ChainBreak::Tampered { seq: 4, .. })));
    assert!(matches!(
        by_instance("relink").first_break,
        Some(ChainBreak::PrevHashMismatch { seq: 4, .. })
    ));
    assert_eq!(by_instance("intact").first_break, None);
    assert_eq!(by_instance("gap").verified_through, 3);
    assert!(!audit.is_intact());
    Ok(())
}
