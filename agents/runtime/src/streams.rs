//! The three JetStream streams, created or brought up to date at every start.
//!
//! Subjects come from bus-schema; this module owns the settings. All streams use file
//! storage and a duplicate window for `Nats-Msg-Id` de-duplication. CN_PROOF keeps records
//! forever and denies delete and purge, so the audit trail cannot be edited through the
//! JetStream API.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bus_schema::subject::Stream;

use crate::error::RuntimeError;

/// How long JetStream remembers a `Nats-Msg-Id`: a redelivered input published again within
/// this window produces a duplicate that is dropped.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The settings for one stream.
pub fn config(stream: Stream) -> stream::Config {
    let day = Duration::from_secs(24 * 3600);
    let (description, max_age) = match stream {
        Stream::Events => ("Chaos Negotiator pipeline inputs: deploy, metric and log events, requests", 7 * day),
        Stream::Work => ("Chaos Negotiator decisions: incidents, proposals, approvals, results", 30 * day),
        Stream::Proof => ("Chaos Negotiator proof log: hash-chained records, never deleted", Duration::ZERO),
    };
    let proof = stream == Stream::Proof;
    stream::Config {
        name: stream.name().to_owned(),
        description: Some(description.to_owned()),
        subjects: stream.subjects().iter().map(|s| (*s).to_owned()).collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: 1,
        deny_delete: proof,
        deny_purge: proof,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates each stream, or updates it to the settings above; safe to run at every start
/// and from many agents at once.
pub async fn ensure_streams(js: &jetstream::Context) -> Result<(), RuntimeError> {
    for s in Stream::ALL {
        ensure(js, config(s)).await?;
    }
    Ok(())
}

async fn ensure(js: &jetstream::Context, wanted: stream::Config) -> Result<(), RuntimeError> {
    let name = wanted.name.clone();
    let fail = |e: &dyn std::fmt::Display| RuntimeError::Stream { stream: name.clone(), message: e.to_string() };
    match js.get_stream(&name).await {
        Ok(mut existing) => {
            let current = existing.info().await.map_err(|e| fail(&e))?.config.clone();
            if !same_settings(&current, &wanted) {
                js.update_stream(&wanted).await.map_err(|e| fail(&e))?;
                tracing::info!(stream = %name, "updated stream settings");
            }
            Ok(())
        }
        Err(e) if is_not_found(&e) => {
            // Another agent may create it between our look-up and our create.
            match js.create_stream(wanted.clone()).await {
                Ok(_) => {
                    tracing::info!(stream = %name, "created stream");
                    Ok(())
                }
                Err(create_err) => match js.get_stream(&name).await {
                    Ok(_) => Ok(()),
                    Err(_) => Err(fail(&create_err)),
                },
            }
        }
        Err(e) => Err(fail(&e)),
    }
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

fn same_settings(a: &stream::Config, b: &stream::Config) -> bool {
    a.subjects == b.subjects
        && a.storage == b.storage
        && a.max_age == b.max_age
        && a.duplicate_window == b.duplicate_window
        && a.deny_delete == b.deny_delete
        && a.deny_purge == b.deny_purge
        && a.allow_direct == b.allow_direct
        && a.description == b.description
}
