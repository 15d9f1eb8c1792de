//! Publishing a contract request and waiting for the contract the negotiator drafts.
//!
//! The position in CN_WORK is taken before publishing, so the contract cannot slip past even
//! when the negotiator answers at once. A request published before (same subject and bytes)
//! is dropped by JetStream as a duplicate and drafts nothing new; then the contract already
//! stored for it is shown, by reading the service's contracts from the start.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use agent_runtime::config::{LogFormat, NatsArgs};
use agent_runtime::{Publisher, Trace};
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use bus_schema::codec::{Limits, decode_by_content_type, encode};
use bus_schema::subject::{CONTRACT_REQUESTS, CONTRACTS, Stream};
use bus_schema::{Contract, ContractRequest, Validate, headers};
use futures_util::StreamExt;

use super::{EXIT_NO_ANSWER, Output, print_contract};
use crate::Failure;

/// How long one JetStream call may take (a permission violation looks like no answer).
const JS_TIMEOUT: Duration = Duration::from_secs(5);

/// A contract request from a JSON file or stdin, checked as the negotiator will check it.
pub(super) fn read_request(path: &Path) -> Result<ContractRequest, Failure> {
    crate::publish::read_json(&path.to_path_buf())
}

/// Publishes `request`, waits up to `wait` for its contract and prints it.
pub(super) async fn request_contract(
    nats: &NatsArgs,
    request: &ContractRequest,
    out: Output,
    wait: Duration,
) -> Result<ExitCode, Failure> {
    request.validate().map_err(|e| format!("not published: {e}"))?;
    let bytes = encode(request)?;
    if bytes.len() > Limits::DEFAULT.max_payload {
        return Err(format!(
            "not published: the request is {} bytes, over the {}-byte limit",
            bytes.len(),
            Limits::DEFAULT.max_payload
        )
        .into());
    }
    // The connect helper logs permission violations (they arrive asynchronously); show them.
    agent_runtime::telemetry::init(LogFormat::Plain, "agent_runtime=error")?;
    let client = crate::connect(nats).await?;
    let user = nats.user.clone().unwrap_or_else(|| "(no user)".to_owned());
    let js = jetstream::context::ContextBuilder::new().timeout(JS_TIMEOUT).build(client.clone());
    let mut work = match js.get_stream(Stream::Work.name()).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(_)) => {
            return Err(format!("cannot open CN_WORK: {e}; has the fleet run yet?").into());
        }
        Err(e) => {
            return Err(format!(
                "cannot open CN_WORK to wait for the contract: {e}{}",
                denied(&user)
            )
            .into());
        }
    };
    let after = work
        .info()
        .await
        .map_err(|e| format!("cannot read CN_WORK: {e}{}", denied(&user)))?
        .state
        .last_sequence;

    let subject = CONTRACT_REQUESTS.subject(&request.env, &request.service);
    let id = format!(
        "cnctl:contract-request:{}",
        bus_schema::derive_id(&[subject.as_str(), &String::from_utf8_lossy(&bytes)])
    );
    let trace = Trace::new(id);
    let published = Publisher::new(client.clone(), js)
        .publish(&subject, request, &trace)
        .await
        .map_err(|e| format!("not published: {e}"))?;
    let from = if published.duplicate {
        eprintln!(
            "contract request {} was already published on {subject} (stream seq {}); looking for its contract",
            request.deployment_id, published.stream_seq
        );
        DeliverPolicy::All
    } else {
        eprintln!(
            "published contract request {} on {subject} (stream seq {}); waiting up to {wait:?} for the contract",
            request.deployment_id, published.stream_seq
        );
        DeliverPolicy::ByStartSequence { start_sequence: after + 1 }
    };

    let contracts = CONTRACTS.subject(&request.env, &request.service);
    let config = pull::Config {
        // The environment's (stored subjects may carry a partition token); the deployment id
        // picks the contract out.
        filter_subject: CONTRACTS.env(&request.env).pattern().to_owned(),
        deliver_policy: from,
        ack_policy: AckPolicy::None,
        inactive_threshold: Duration::from_secs(30),
        ..Default::default()
    };
    let fail = |e: &dyn std::fmt::Display| {
        format!("cannot read {contracts} from CN_WORK: {e}{}", denied(&user))
    };
    let consumer = work.create_consumer(config).await.map_err(|e| fail(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| fail(&e))?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut latest: Option<Contract> = None;
    while let Ok(Some(next)) = tokio::time::timeout_at(deadline, messages.next()).await {
        let msg = next.map_err(|e| fail(&e))?;
        if let Some(c) = decode_contract(&msg).filter(|c| c.deployment_id == request.deployment_id)
        {
            latest = Some(c);
        }
        // The newest stored contract for this deployment, once everything stored has been read.
        if latest.is_some() && msg.info().map_or(true, |i| i.pending == 0) {
            break;
        }
    }
    // Best effort: an idle consumer goes away by itself anyway.
    let _ = work.delete_consumer(&consumer.cached_info().name).await;
    match latest {
        Some(contract) => {
            print_contract(&contract, out)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "no contract for deployment {} arrived on {contracts} within {wait:?}; is the risk negotiator running? (`cnctl status`, `cnctl tail --kind event_rejected`)",
                request.deployment_id
            );
            Ok(ExitCode::from(EXIT_NO_ANSWER))
        }
    }
}

fn decode_contract(m: &jetstream::Message) -> Option<Contract> {
    let content_type = m
        .headers
        .as_ref()
        .and_then(|h| h.get(headers::CONTENT_TYPE))
        .map(|v| v.as_str().to_owned());
    decode_by_content_type(content_type.as_deref(), &m.payload, &Limits::DEFAULT).ok()
}

/// What to suspect when a JetStream call fails or goes unanswered.
fn denied(user: &str) -> String {
    format!(
        "; waiting for the contract reads CN_WORK, which needs the `ci` (for pipelines) or `operator` NATS user (connected as {user}); `cnctl publish contract FILE` only publishes"
    )
}
