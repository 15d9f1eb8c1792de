//! The three streams against a real nats-server: settings, idempotent setup, an
//! undeletable proof log, and Nats-Msg-Id de-duplication.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::time::Duration;

use agent_runtime::streams::{self, DUPLICATE_WINDOW};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::StorageType};
use bus_schema::headers;
use bus_schema::subject::Stream;
use cn_tests::NatsServer;
use futures_util::StreamExt;

#[tokio::test]
async fn streams_are_created_with_the_contract_settings_and_setup_is_idempotent()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let js = jetstream::new(server.client().await?);
    streams::ensure_streams(&js).await?;
    // A second agent starting (or a restart) changes nothing and does not fail.
    streams::ensure_streams(&js).await?;
    streams::ensure_streams(&js).await?;

    for kind in Stream::ALL {
        let config = js.get_stream(kind.name()).await?.get_info().await?.config;
        assert_eq!(config.storage, StorageType::File, "{}", kind.name());
        assert_eq!(config.duplicate_window, DUPLICATE_WINDOW, "{}", kind.name());
        let expected: Vec<String> = kind.subjects().iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(config.subjects, expected, "{}", kind.name());
        let proof = kind == Stream::Proof;
        assert_eq!((config.deny_delete, config.deny_purge), (proof, proof), "{}", kind.name());
    }
    let proof = js.get_stream("CN_PROOF").await?.get_info().await?.config;
    assert_eq!(proof.max_age, Duration::ZERO, "proof records never expire");
    assert_eq!(js.stream_names().count().await, Stream::ALL.len());
    Ok(())
}

#[tokio::test]
async fn a_drifted_stream_is_brought_back_to_its_settings() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let js = jetstream::new(server.client().await?);
    streams::ensure_streams(&js).await?;
    let mut drifted = streams::config(Stream::Work);
    drifted.max_age = Duration::from_secs(3600);
    js.update_stream(&drifted).await?;
    streams::ensure_streams(&js).await?;
    let config = js.get_stream("CN_WORK").await?.get_info().await?.config;
    assert_eq!(config.max_age, streams::config(Stream::Work).max_age);
    Ok(())
}

#[tokio::test]
async fn the_proof_log_refuses_delete_and_purge() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let js = jetstream::new(server.client().await?);
    streams::ensure_streams(&js).await?;
    let ack = js.publish("cn.proof.executor.0", "{}".into()).await?.await?;
    let stream = js.get_stream("CN_PROOF").await?;

    let delete = stream.delete_message(ack.sequence).await;
    assert!(delete.is_err(), "deleting a proof record must fail: {delete:?}");
    let purge = stream.purge().await;
    assert!(purge.is_err(), "purging the proof log must fail: {purge:?}");
    let purge_subject = stream.purge().filter("cn.proof.executor.0").await;
    assert!(purge_subject.is_err(), "purging one chain must fail: {purge_subject:?}");
    // And the settings cannot be relaxed afterwards.
    let mut relaxed = streams::config(Stream::Proof);
    relaxed.deny_delete = false;
    relaxed.deny_purge = false;
    assert!(
        js.update_stream(&relaxed).await.is_err(),
        "deny_delete/deny_purge must not be removable"
    );

    assert_eq!(stream.get_info().await?.state.messages, 1);
    Ok(())
}

#[tokio::test]
async fn a_second_publish_with_the_same_msg_id_is_dropped() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let js = jetstream::new(server.client().await?);
    streams::ensure_streams(&js).await?;
    let mut h = HeaderMap::new();
    h.insert(headers::MSG_ID, "issue-detector:CN_EVENTS:7:cn.v1.incident:1");
    let subject = "cn.incidents.prod.payments-api";
    let first = js.publish_with_headers(subject, h.clone(), "a".into()).await?.await?;
    let second = js.publish_with_headers(subject, h.clone(), "b".into()).await?.await?;
    assert!(!first.duplicate);
    assert!(second.duplicate, "the repeat must be recognised as a duplicate");
    assert_eq!(second.sequence, first.sequence);
    let state = js.get_stream("CN_WORK").await?.get_info().await?.state;
    assert_eq!(state.messages, 1, "only the first copy is stored");
    Ok(())
}
