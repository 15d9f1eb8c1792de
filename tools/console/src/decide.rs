//! Approving and denying from the page: a [`HumanDecision`] stored on
//! `cn.approvals.{env}.{service}`, the same path as `cnctl approvals approve|deny`. Governance
//! checks it and answers on the proof log; the console never approves anything itself.

use agent_runtime::publish::{Publisher, Trace};
use bus_schema::HumanDecision;
use bus_schema::subject::HUMAN_DECISIONS;

use crate::view::Scope;

/// Sends people's decisions; only built when the console may decide (`--allow-decisions`).
#[derive(Debug, Clone)]
pub struct Decider {
    publisher: Publisher,
    user: String,
}

impl Decider {
    pub fn new(client: async_nats::Client, user: String) -> Self {
        let js = async_nats::jetstream::new(client.clone());
        Self { publisher: Publisher::new(client, js), user }
    }

    /// Stores `decision` about the approval at `scope`; returns its stream sequence.
    pub async fn send(&self, scope: &Scope, decision: &HumanDecision) -> Result<u64, String> {
        let msg_id = decision.msg_id();
        let trace = Trace {
            correlation_id: scope.correlation_id.clone().unwrap_or_else(|| msg_id.clone()),
            causation_id: msg_id.clone(),
            traceparent: scope.traceparent.as_ref().map(|t| t.child(&msg_id)),
            msg_id,
        };
        let subject = HUMAN_DECISIONS.subject(&scope.env, &scope.service);
        match self.publisher.publish(&subject, decision, &trace).await {
            Ok(p) => Ok(p.stream_seq),
            Err(e) => Err(format!(
                "the decision was not stored on {subject}: {e} (the console connects as NATS user {}; deciding needs one that may publish cn.approvals.>, such as operator)",
                self.user
            )),
        }
    }
}
