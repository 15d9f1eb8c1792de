//! The fleet (docs/contract.md): each agent's name, what it consumes and what it publishes.
//!
//! Agents build their consumers from this table, and `cnctl permissions` renders the NATS
//! permissions from it, so "who may publish what" cannot drift from what the agents do.

use crate::AgentName;
use crate::subject::{self, FamilyInfo, Filter, Stream};

pub const DEPLOY_AGENT: AgentName = AgentName::from_static("deploy-agent");
pub const ISSUE_DETECTOR: AgentName = AgentName::from_static("issue-detector");
pub const RISK_NEGOTIATOR: AgentName = AgentName::from_static("risk-negotiator");
pub const RL_OPTIMIZER: AgentName = AgentName::from_static("rl-optimizer");
pub const GOVERNANCE_GATE: AgentName = AgentName::from_static("governance-gate");
pub const EXECUTOR: AgentName = AgentName::from_static("executor");
pub const SIMULATOR: AgentName = AgentName::from_static("simulator");

/// One input of an agent: a durable consumer `{agent}-{name}` over a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputDef {
    pub name: &'static str,
    pub filter: Filter,
}

impl InputDef {
    pub fn new(name: &'static str, filter: Filter) -> Self {
        Self { name, filter }
    }

    /// The durable consumer's name for `agent`.
    pub fn durable(&self, agent: &AgentName) -> String {
        format!("{agent}-{}", self.name)
    }

    /// The stream the consumer lives on (inputs are always stored subjects).
    pub fn stream(&self) -> Option<Stream> {
        self.filter.stream()
    }
}

/// An agent of the fleet.
#[derive(Debug, Clone)]
pub struct AgentDef {
    pub name: AgentName,
    pub description: &'static str,
    pub inputs: Vec<InputDef>,
    /// The subject families it publishes decisions on (besides its proof chain and heartbeat).
    pub outputs: Vec<FamilyInfo>,
    /// Core NATS subjects it answers requests on (queue group: the agent's name).
    pub requests: Vec<Filter>,
}

pub fn deploy_agent() -> AgentDef {
    AgentDef {
        name: DEPLOY_AGENT,
        description: "Chaos Negotiator deploy agent: onboarding, and canary rollouts driven by accepted contracts and judged against the stable version",
        inputs: vec![
            InputDef::new("deploys", subject::DEPLOY_EVENTS.all()),
            InputDef::new("onboarding", subject::ONBOARD_REQUESTS.all()),
            InputDef::new("contracts", subject::CONTRACTS.all()),
            InputDef::new("metrics", subject::METRIC_EVENTS.all()),
            InputDef::new("executed", subject::EXECUTED.all()),
            InputDef::new("refused", subject::REFUSED.all()),
        ],
        outputs: vec![subject::PROPOSED.info(), subject::DEPLOY_EVENTS.info()],
        requests: vec![],
    }
}

pub fn issue_detector() -> AgentDef {
    AgentDef {
        name: ISSUE_DETECTOR,
        description: "Chaos Negotiator issue detector: events in; incidents, outcomes and SLO status out",
        inputs: vec![
            InputDef::new("events", subject::all_events()),
            InputDef::new("executed", subject::EXECUTED.all()),
        ],
        outputs: vec![subject::INCIDENTS.info(), subject::OUTCOMES.info(), subject::SLO.info()],
        requests: vec![],
    }
}

pub fn risk_negotiator() -> AgentDef {
    AgentDef {
        name: RISK_NEGOTIATOR,
        description: "Chaos Negotiator risk negotiator: contract requests in, contracts out; negotiates and learns from deploy outcomes",
        inputs: vec![
            InputDef::new("requests", subject::CONTRACT_REQUESTS.all()),
            InputDef::new("deploys", subject::DEPLOY_EVENTS.all()),
            InputDef::new("incidents", subject::INCIDENTS.all()),
            InputDef::new("slo", subject::SLO.all()),
        ],
        outputs: vec![subject::CONTRACTS.info()],
        requests: vec![subject::NEGOTIATE.all(), subject::MODEL.agent(&RISK_NEGOTIATOR)],
    }
}

pub fn rl_optimizer() -> AgentDef {
    AgentDef {
        name: RL_OPTIMIZER,
        description: "Chaos Negotiator optimizer: incidents in, action proposals out, one after another until the service is well; learns from outcomes",
        inputs: vec![
            InputDef::new("incidents", subject::INCIDENTS.all()),
            InputDef::new("outcomes", subject::OUTCOMES.all()),
            InputDef::new("refusals", subject::REFUSED.all()),
            InputDef::new("deploys", subject::DEPLOY_EVENTS.all()),
        ],
        outputs: vec![subject::PROPOSED.info()],
        requests: vec![subject::POLICY.agent(&RL_OPTIMIZER)],
    }
}

pub fn governance_gate() -> AgentDef {
    AgentDef {
        name: GOVERNANCE_GATE,
        description: "Chaos Negotiator governance gate: proposals in, signed approvals or refusals out",
        inputs: vec![
            InputDef::new("deploys", subject::DEPLOY_EVENTS.all()),
            InputDef::new("proposals", subject::PROPOSED.all()),
            InputDef::new("decisions", subject::HUMAN_DECISIONS.all()),
            InputDef::new("incidents", subject::INCIDENTS.all()),
            InputDef::new("outcomes", subject::OUTCOMES.all()),
            InputDef::new("slo", subject::SLO.all()),
        ],
        outputs: vec![subject::APPROVED.info(), subject::REFUSED.info(), subject::PENDING.info()],
        requests: vec![],
    }
}

pub fn executor() -> AgentDef {
    AgentDef {
        name: EXECUTOR,
        description: "Chaos Negotiator executor: signed approvals in, execution results out",
        inputs: vec![InputDef::new("approvals", subject::APPROVED.all())],
        outputs: vec![subject::EXECUTED.info(), subject::SIM_ACTIONS.info()],
        requests: vec![],
    }
}

/// The simulated world: acts on the executor's `sim` actions and publishes the events a
/// pipeline would (for demos, tests and benchmarks). Idle without a scenario.
pub fn simulator() -> AgentDef {
    AgentDef {
        name: SIMULATOR,
        description: "Chaos Negotiator simulator: a simulated world of services that reacts to sim actions",
        inputs: vec![InputDef::new("actions", subject::SIM_ACTIONS.all())],
        outputs: vec![
            subject::DEPLOY_EVENTS.info(),
            subject::METRIC_EVENTS.info(),
            subject::LOG_EVENTS.info(),
        ],
        requests: vec![],
    }
}

/// Every agent, in the contract's order.
pub fn fleet() -> Vec<AgentDef> {
    vec![
        deploy_agent(),
        issue_detector(),
        risk_negotiator(),
        rl_optimizer(),
        governance_gate(),
        executor(),
        simulator(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_governance_publishes_approvals() {
        let approvers: Vec<String> = fleet()
            .into_iter()
            .filter(|a| a.outputs.contains(&subject::APPROVED.info()))
            .map(|a| a.name.to_string())
            .collect();
        assert_eq!(approvers, vec!["governance-gate"]);
    }

    #[test]
    fn every_input_is_a_stored_subject_and_durable_names_are_unique() {
        let mut durables = Vec::new();
        for agent in fleet() {
            for input in &agent.inputs {
                assert!(input.stream().is_some(), "{} {}", agent.name, input.name);
                durables.push(input.durable(&agent.name));
            }
        }
        let n = durables.len();
        durables.sort();
        durables.dedup();
        assert_eq!(durables.len(), n);
    }
}
