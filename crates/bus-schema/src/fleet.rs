//! The fleet (docs/contract.md): each agent's name, what it consumes and what it publishes.
//!
//! Each agent's inputs are a type declared here ([`crate::inputs!`]): the agent's handler
//! matches it, its consumers and the table's inputs are built from it, and `cnctl permissions`
//! renders the NATS permissions from the table, so "who may read and publish what" cannot drift
//! from what the agents do.

use crate::AgentName;
pub use crate::inputs::InputDef;
use crate::inputs::{AgentInputs, AgentRequests, NoRequests, PipelineEvent, PipelineEvents, Query};
use crate::payload::*;
use crate::subject::{self, FamilyInfo, Filter};

pub const DEPLOY_AGENT: AgentName = AgentName::from_static("deploy-agent");
pub const ISSUE_DETECTOR: AgentName = AgentName::from_static("issue-detector");
pub const RISK_NEGOTIATOR: AgentName = AgentName::from_static("risk-negotiator");
pub const RL_OPTIMIZER: AgentName = AgentName::from_static("rl-optimizer");
pub const GOVERNANCE_GATE: AgentName = AgentName::from_static("governance-gate");
pub const EXECUTOR: AgentName = AgentName::from_static("executor");
pub const SIMULATOR: AgentName = AgentName::from_static("simulator");
/// Not an agent of the fleet table: the console's proof chain (its notifications).
pub const CONSOLE: AgentName = AgentName::from_static("console");

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
    /// Whether it may run as several instances, each owning a share of the service
    /// partitions: everything it reads and keeps is per service.
    pub partitioned: bool,
}

impl AgentDef {
    /// Every durable consumer it may run: its inputs, and, when it can be partitioned, each
    /// input's consumer in every partition.
    pub fn consumers(&self) -> Vec<InputDef> {
        let mut all = self.inputs.clone();
        if self.partitioned {
            for p in 0..crate::partition::PARTITIONS {
                all.extend(self.inputs.iter().filter_map(|i| i.in_partition(p)));
            }
        }
        all
    }
}

crate::inputs! {
    /// What the deploy agent reads.
    pub enum DeployAgentInput, names DeployAgentInputName {
        Deploy(DeployEvent) = "deploys" from subject::DEPLOY_EVENTS,
        Onboard(OnboardRequest) = "onboarding" from subject::ONBOARD_REQUESTS,
        Contract(Contract) = "contracts" from subject::CONTRACTS,
        Metric(MetricSample) = "metrics" from subject::METRIC_EVENTS,
        MetricBatch(MetricBatch) = "metric-batches" from subject::METRIC_BATCHES,
        Executed(ExecutionResult) = "executed" from subject::EXECUTED,
        Refused(Refusal) = "refused" from subject::REFUSED,
        /// An operator's promote or abort of a rollout in progress.
        Command(RolloutCommand) = "rollout-commands" from subject::ROLLOUT_COMMANDS,
    }
}

pub fn deploy_agent() -> AgentDef {
    AgentDef {
        name: DEPLOY_AGENT,
        description: "Chaos Negotiator deploy agent: onboarding, and canary rollouts driven by accepted contracts and judged against the stable version",
        inputs: DeployAgentInput::defs(),
        outputs: vec![subject::PROPOSED.info(), subject::DEPLOY_EVENTS.info()],
        requests: NoRequests::filters(),
        partitioned: false,
    }
}

crate::inputs! {
    /// What the issue detector reads.
    pub enum DetectorInput, names DetectorInputName {
        /// Deploys, samples and logs through one consumer, in the order they were stored.
        Event(PipelineEvent) = "events" from PipelineEvents,
        Executed(ExecutionResult) = "executed" from subject::EXECUTED,
    }
}

pub fn issue_detector() -> AgentDef {
    AgentDef {
        name: ISSUE_DETECTOR,
        description: "Chaos Negotiator issue detector: events in; incidents, outcomes and SLO status out",
        inputs: DetectorInput::defs(),
        outputs: vec![subject::INCIDENTS.info(), subject::OUTCOMES.info(), subject::SLO.info()],
        requests: NoRequests::filters(),
        partitioned: true,
    }
}

crate::inputs! {
    /// What the risk negotiator reads.
    pub enum NegotiatorInput, names NegotiatorInputName {
        Request(ContractRequest) = "requests" from subject::CONTRACT_REQUESTS,
        Deploy(DeployEvent) = "deploys" from subject::DEPLOY_EVENTS,
        Incident(Incident) = "incidents" from subject::INCIDENTS,
        Slo(SloStatus) = "slo" from subject::SLO,
    }
}

crate::requests! {
    /// What the risk negotiator answers.
    pub enum NegotiatorRequest {
        /// A counter-proposal to a contract.
        Counter(CounterProposal) on subject::NEGOTIATE.all(),
        /// Its learned model and calibration.
        Model(Query) on subject::MODEL.agent(&RISK_NEGOTIATOR),
    }
}

pub fn risk_negotiator() -> AgentDef {
    AgentDef {
        name: RISK_NEGOTIATOR,
        description: "Chaos Negotiator risk negotiator: contract requests in, contracts out; negotiates and learns from deploy outcomes",
        inputs: NegotiatorInput::defs(),
        outputs: vec![subject::CONTRACTS.info()],
        requests: NegotiatorRequest::filters(),
        partitioned: false,
    }
}

crate::inputs! {
    /// What the optimizer reads.
    pub enum OptimizerInput, names OptimizerInputName {
        Incident(Incident) = "incidents" from subject::INCIDENTS,
        Outcome(Outcome) = "outcomes" from subject::OUTCOMES,
        Refused(Refusal) = "refusals" from subject::REFUSED,
        Deploy(DeployEvent) = "deploys" from subject::DEPLOY_EVENTS,
    }
}

crate::requests! {
    /// What the optimizer answers.
    pub enum OptimizerRequest {
        /// Its learned action values.
        Policy(Query) on subject::POLICY.agent(&RL_OPTIMIZER),
    }
}

pub fn rl_optimizer() -> AgentDef {
    AgentDef {
        name: RL_OPTIMIZER,
        description: "Chaos Negotiator optimizer: incidents in, action proposals out, one after another until the service is well; learns from outcomes",
        inputs: OptimizerInput::defs(),
        outputs: vec![subject::PROPOSED.info()],
        requests: OptimizerRequest::filters(),
        partitioned: false,
    }
}

crate::inputs! {
    /// What the governance gate reads: proposals and human decisions to decide on, and the
    /// facts its gates weigh.
    pub enum GovernanceInput, names GovernanceInputName {
        Deploy(DeployEvent) = "deploys" from subject::DEPLOY_EVENTS,
        Proposal(ActionProposal) = "proposals" from subject::PROPOSED,
        Decision(HumanDecision) = "decisions" from subject::HUMAN_DECISIONS,
        Incident(Incident) = "incidents" from subject::INCIDENTS,
        Outcome(Outcome) = "outcomes" from subject::OUTCOMES,
        Slo(SloStatus) = "slo" from subject::SLO,
    }
}

pub fn governance_gate() -> AgentDef {
    AgentDef {
        name: GOVERNANCE_GATE,
        description: "Chaos Negotiator governance gate: proposals in, signed approvals or refusals out",
        inputs: GovernanceInput::defs(),
        outputs: vec![subject::APPROVED.info(), subject::REFUSED.info(), subject::PENDING.info()],
        requests: NoRequests::filters(),
        partitioned: true,
    }
}

crate::inputs! {
    /// What the executor reads: signed approvals, nothing else.
    pub enum ExecutorInput, names ExecutorInputName {
        Approval(SignedApproval) = "approvals" from subject::APPROVED,
    }
}

pub fn executor() -> AgentDef {
    AgentDef {
        name: EXECUTOR,
        description: "Chaos Negotiator executor: signed approvals in, execution results out",
        inputs: ExecutorInput::defs(),
        outputs: vec![subject::EXECUTED.info(), subject::SIM_ACTIONS.info()],
        requests: NoRequests::filters(),
        partitioned: true,
    }
}

crate::inputs! {
    /// What the simulator reads: the executor's actions on simulated services.
    pub enum SimulatorInput, names SimulatorInputName {
        Action(SimAction) = "actions" from subject::SIM_ACTIONS,
    }
}

/// The simulated world: acts on the executor's `sim` actions and publishes the events a
/// pipeline would (for demos, tests and benchmarks). Idle without a scenario.
pub fn simulator() -> AgentDef {
    AgentDef {
        name: SIMULATOR,
        description: "Chaos Negotiator simulator: a simulated world of services that reacts to sim actions",
        inputs: SimulatorInput::defs(),
        outputs: vec![
            subject::DEPLOY_EVENTS.info(),
            subject::METRIC_EVENTS.info(),
            subject::LOG_EVENTS.info(),
        ],
        requests: NoRequests::filters(),
        partitioned: false,
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

/// A durable consumer of the fleet: the agent, its stream and the consumer's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    pub agent: AgentName,
    pub stream: subject::Stream,
    pub durable: String,
}

/// Every agent consumer whose filter takes `subject`, in the fleet's order: who must be done
/// with a message on it before the fleet's verdict on it is in (`cnctl publish --wait`).
pub fn readers_of(subject: &str) -> Vec<Reader> {
    // As the server stores it: a partitioned instance's consumer matches the partition token.
    let stored = subject::with_partition(subject);
    let mut readers = Vec::new();
    for agent in fleet() {
        for input in agent.consumers().iter().filter(|i| i.filter.matches(&stored)) {
            let Some(stream) = input.stream() else { continue };
            readers.push(Reader {
                agent: agent.name.clone(),
                stream,
                durable: input.durable(&agent.name),
            });
        }
    }
    readers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_is_read_by_every_agent_that_weighs_deploys() {
        let readers: Vec<String> =
            readers_of("cn.events.deploy.prod.api").into_iter().map(|r| r.durable).collect();
        assert_eq!(
            readers,
            [
                "deploy-agent-deploys",
                "issue-detector-events",
                // api is in partition 7: a partitioned instance's consumer reads it there.
                "issue-detector-events-p7",
                "risk-negotiator-deploys",
                "rl-optimizer-deploys",
                "governance-gate-deploys",
                "governance-gate-deploys-p7"
            ]
        );
        let readers: Vec<String> =
            readers_of("cn.events.log.prod.api").into_iter().map(|r| r.durable).collect();
        assert_eq!(readers, ["issue-detector-events", "issue-detector-events-p7"]);
        assert!(readers_of("cn.nothing.here").is_empty());
    }

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
    fn a_partitioned_agent_reads_each_service_in_exactly_one_partition() {
        let detector = issue_detector();
        let subject = "cn.events.metric.prod.checkout.1";
        let readers: Vec<String> = detector
            .consumers()
            .into_iter()
            .filter(|i| i.partition.is_some() && i.filter.matches(subject))
            .map(|i| i.durable(&detector.name))
            .collect();
        assert_eq!(readers, ["issue-detector-events-p1"]);
        // Every partitioned agent's inputs can all be split by service.
        for agent in fleet().into_iter().filter(|a| a.partitioned) {
            let n = agent.inputs.len() * (1 + usize::from(crate::partition::PARTITIONS));
            assert_eq!(agent.consumers().len(), n, "{}", agent.name);
        }
    }

    #[test]
    fn every_input_is_a_stored_subject_and_durable_names_are_unique() {
        let mut durables = Vec::new();
        for agent in fleet() {
            for input in &agent.consumers() {
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
