//! The JetStream streams: their contract settings, the bootstrap step that creates them,
//! and the check every agent makes at start.
//!
//! Subjects come from bus-schema; this module owns the settings. All streams use file
//! storage and a duplicate window for `Nats-Msg-Id` de-duplication. CN_PROOF keeps records
//! forever and denies delete and purge, so the audit trail cannot be edited through the
//! JetStream API.
//!
//! Only the `bootstrap` user may create or update a stream ([`ensure_streams`], run by
//! `cnctl streams ensure`). Agents only read the settings ([`verify_streams`]): a stream that
//! is missing is waited for; one whose settings were weakened (a lower limit, a shorter
//! duplicate window, delete or purge allowed, another retention…) stops the agent with
//! [`RuntimeError::StreamWeakened`], naming each setting, because under such a stream records
//! could disappear without anyone deleting them.

use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{RawMessageError, RawMessageErrorKind};

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
        Stream::Events => {
            ("Chaos Negotiator pipeline inputs: deploy, metric and log events, requests", 7 * day)
        }
        Stream::Work => {
            ("Chaos Negotiator decisions: incidents, proposals, approvals, results", 30 * day)
        }
        Stream::Proof => {
            ("Chaos Negotiator proof log: hash-chained records, never deleted", Duration::ZERO)
        }
        Stream::Leases => (
            "Chaos Negotiator partition leases: which instance of a partitioned agent owns which partition",
            Duration::ZERO,
        ),
    };
    let proof = stream == Stream::Proof;
    // A lease is its subject's last record: writes compare-and-swap on it.
    let max_messages_per_subject = if stream == Stream::Leases { 1 } else { 0 };
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
        max_messages_per_subject,
        deny_delete: proof,
        deny_purge: proof,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates each stream, or updates it to the settings above (restoring any that was
/// weakened); safe to run again and from many places at once. Needs the bootstrap user's rights.
/// New streams have one replica, existing ones keep theirs.
pub async fn ensure_streams(js: &jetstream::Context) -> Result<(), RuntimeError> {
    ensure_streams_replicated(js, None).await
}

/// [`ensure_streams`], with `replicas` copies of each stream on a cluster (`None`: one for a
/// new stream, as many as it has for an existing one). nats-server moves an existing stream to
/// the new count itself, up and down.
pub async fn ensure_streams_replicated(
    js: &jetstream::Context,
    replicas: Option<usize>,
) -> Result<(), RuntimeError> {
    for s in Stream::ALL {
        ensure(js, config(s), replicas).await?;
    }
    Ok(())
}

async fn ensure(
    js: &jetstream::Context,
    mut wanted: stream::Config,
    replicas: Option<usize>,
) -> Result<(), RuntimeError> {
    let name = wanted.name.clone();
    let fail = |e: &dyn std::fmt::Display| RuntimeError::Stream {
        stream: name.clone(),
        message: e.to_string(),
    };
    wanted.num_replicas = replicas.unwrap_or(1);
    match js.get_stream(&name).await {
        Ok(mut existing) => {
            let current = existing.info().await.map_err(|e| fail(&e))?.config.clone();
            wanted.num_replicas = replicas.unwrap_or(current.num_replicas.max(1));
            if !same_settings(&current, &wanted) || !weakened(&current, &wanted).is_empty() {
                js.update_stream(&wanted).await.map_err(|e| fail(&e))?;
                tracing::info!(stream = %name, replicas = wanted.num_replicas, "updated stream settings");
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

/// Checks that every stream exists with settings at least as strong as the contract's.
/// A missing stream is an ordinary (retried) error; a weakened one is fatal.
pub async fn verify_streams(js: &jetstream::Context) -> Result<(), RuntimeError> {
    for s in Stream::ALL {
        let wanted = config(s);
        let name = wanted.name.clone();
        let current = match js.get_stream(&name).await {
            Ok(mut stream) => stream
                .info()
                .await
                .map_err(|e| RuntimeError::Stream { stream: name.clone(), message: e.to_string() })?
                .config
                .clone(),
            Err(e) if is_not_found(&e) => {
                return Err(RuntimeError::Stream {
                    stream: name,
                    message: "does not exist yet: create the streams with `cnctl streams ensure` as the bootstrap user (scripts/up and docker compose do)".to_owned(),
                });
            }
            Err(e) => return Err(RuntimeError::Stream { stream: name, message: e.to_string() }),
        };
        let weakened = weakened(&current, &wanted);
        if !weakened.is_empty() {
            return Err(RuntimeError::StreamWeakened {
                stream: name,
                settings: weakened.join("; "),
            });
        }
    }
    Ok(())
}

/// Each setting of `current` that is weaker than the contract's `wanted`, said in words.
pub fn weakened(current: &stream::Config, wanted: &stream::Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut differs = |setting: &str, found: String, contract: String| {
        out.push(format!("{setting} is {found}, the contract says {contract}"))
    };
    let unlimited = |n: i64| if n <= 0 { "unlimited".to_owned() } else { n.to_string() };
    // A limit is weaker when it is set and lower than the contract's (0 or -1: unlimited).
    let tighter = |found: i64, contract: i64| found > 0 && (contract <= 0 || found < contract);
    for (setting, found, contract) in [
        ("max_msgs", current.max_messages, wanted.max_messages),
        ("max_bytes", current.max_bytes, wanted.max_bytes),
        ("max_msgs_per_subject", current.max_messages_per_subject, wanted.max_messages_per_subject),
        ("max_msg_size", i64::from(current.max_message_size), i64::from(wanted.max_message_size)),
    ] {
        if tighter(found, contract) {
            differs(setting, unlimited(found), unlimited(contract));
        }
    }
    let age = |d: Duration| {
        if d.is_zero() { "unlimited".to_owned() } else { format!("{}s", d.as_secs()) }
    };
    if !current.max_age.is_zero() && (wanted.max_age.is_zero() || current.max_age < wanted.max_age)
    {
        differs("max_age", age(current.max_age), age(wanted.max_age));
    }
    if current.duplicate_window < wanted.duplicate_window {
        differs("duplicate_window", age(current.duplicate_window), age(wanted.duplicate_window));
    }
    if current.retention != wanted.retention {
        differs("retention", format!("{:?}", current.retention), format!("{:?}", wanted.retention));
    }
    if current.discard != wanted.discard {
        differs("discard", format!("{:?}", current.discard), format!("{:?}", wanted.discard));
    }
    if current.storage != wanted.storage {
        differs("storage", format!("{:?}", current.storage), format!("{:?}", wanted.storage));
    }
    for (setting, found, contract) in [
        ("deny_delete", current.deny_delete, wanted.deny_delete),
        ("deny_purge", current.deny_purge, wanted.deny_purge),
    ] {
        if contract && !found {
            differs(setting, "false".to_owned(), "true".to_owned());
        }
    }
    if current.allow_rollup && !wanted.allow_rollup {
        differs(
            "allow_rollup_hdrs",
            "true".to_owned(),
            "false (a rollup purges a subject)".to_owned(),
        );
    }
    let missing: Vec<&String> =
        wanted.subjects.iter().filter(|s| !current.subjects.contains(s)).collect();
    if !missing.is_empty() {
        differs("subjects", format!("{:?}", current.subjects), format!("{:?}", wanted.subjects));
    }
    out
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

fn same_settings(a: &stream::Config, b: &stream::Config) -> bool {
    a.subjects == b.subjects
        && a.storage == b.storage
        && a.max_age == b.max_age
        && a.max_messages_per_subject == b.max_messages_per_subject
        && a.duplicate_window == b.duplicate_window
        && a.deny_delete == b.deny_delete
        && a.deny_purge == b.deny_purge
        && a.allow_direct == b.allow_direct
        && a.description == b.description
        && a.num_replicas.max(1) == b.num_replicas.max(1)
}

/// The last message stored on a subject as a publisher names it: under the partition token
/// the server's mapping appends to a service subject (`cn.slo.prod.api.7`), or, on a server
/// without the mappings, under the subject itself.
pub async fn last_of_subject(
    stream: &stream::Stream<()>,
    subject: &str,
) -> Result<StreamMessage, async_nats::jetstream::stream::LastRawMessageError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let stored = bus_schema::subject::with_partition(subject);
    if stored != subject {
        match stream.get_last_raw_message_by_subject(&stored).await {
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            other => return other,
        }
    }
    stream.get_last_raw_message_by_subject(subject).await
}

/// The messages of `stream` on `filter` (wildcards allowed) with sequences `from..=through`, in
/// order, one direct read each (`$JS.API.STREAM.MSG.GET` with `next_by_subj`, which agents may
/// use on the streams they read). For reading back a short stretch: a replay after a crash, a
/// proof chain's records newer than a snapshot.
pub async fn read_range(
    stream: &stream::Stream<()>,
    filter: &str,
    from: u64,
    through: u64,
) -> Result<Vec<StreamMessage>, RawMessageError> {
    let mut out = Vec::new();
    let mut next = from;
    while next <= through {
        let request = stream.raw_message_builder().sequence(next).next_by_subject(filter);
        match request.send().await {
            Ok(m) if m.sequence <= through => {
                next = m.sequence + 1;
                out.push(m);
            }
            Ok(_) => break,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
