//! One service's reaction to one event: record it, run the detectors, move the incidents
//! along, judge pending outcomes and decide whether the SLO status is worth publishing.
//! Pure: no bus, no clock except the wall clock handed in for the skew check.

use std::time::Duration;

use bus_schema::{
    Action, Backend, DeployEvent, DeployStatus, ExecutionResult, ExecutionStatus, Incident,
    IncidentKind, LogEvent, MetricBatch, MetricSample, SloStatus, Timestamp, Variant,
};

use crate::config::DetectorConfig;
use crate::detect::{self, Verdict, Verdicts};
use crate::lifecycle::Step;
use crate::outcome::{self, Judged};
pub use crate::records::Pending;
use crate::service::{NotAdmitted, ServiceState, SloMark};
use crate::slo::{self, SloView};

/// SLO status is re-published at least this often (event time) while samples flow.
const SLO_PUBLISH_EVERY: Duration = Duration::from_secs(60);

/// What one event produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub incidents: Vec<Incident>,
    pub outcomes: Vec<Judged>,
    pub slo: Option<SloStatus>,
    /// Samples of a batch that could not be judged: their place in the batch and why.
    pub rejected: Vec<(usize, NotAdmitted)>,
}

impl Output {
    /// The outputs in publishing order.
    pub fn into_pending(self) -> Vec<Pending> {
        // Last, so the other outputs' numbers do not depend on it.
        let rejected = (!self.rejected.is_empty()).then(|| {
            let samples = self.rejected.into_iter();
            Pending::Rejected(samples.map(|(i, why)| (i, why.not_judged())).collect())
        });
        let incidents = self.incidents.into_iter().map(Pending::Incident);
        let outcomes =
            self.outcomes.into_iter().map(|(o, correlation)| Pending::Outcome(o, correlation));
        incidents.chain(outcomes).chain(self.slo.map(Pending::Slo)).chain(rejected).collect()
    }
}

impl ServiceState {
    /// A metric sample: windows, every detector, lifecycle, outcomes, SLO status.
    /// Canary samples are left to the deploy agent, which judges them against the stable
    /// version: a bad canary is aborted, not remediated.
    pub fn on_metric(
        &mut self,
        m: &MetricSample,
        config: &DetectorConfig,
        input_id: &str,
        wall_clock: Timestamp,
    ) -> Result<Output, NotAdmitted> {
        if m.variant == Some(Variant::Canary) {
            return Ok(Output::default());
        }
        self.admit(m.timestamp, config, wall_clock)?;
        let t = config.for_service(&self.env, &self.service);
        self.record_metric(m, t);
        let now = self.now_or(m.timestamp);
        let view = slo::evaluate(&self.windows, now.unix_millis() / 1000, t);
        let verdicts = detect::on_metric(self, m, t, &view, &config.log_patterns);
        let related = detect::sample_evidence(m, t);
        let mut out = self.step(config, input_id, verdicts, related);
        out.slo = self.slo_status(&view, now);
        Ok(out)
    }

    /// A batch of samples, in order, each as if it had come alone (under an id of its own,
    /// `{input_id}/{i}`). A sample too far out of order is rejected by itself and the rest are
    /// judged; of the SLO statuses only the last is kept (telemetry, not a decision).
    pub fn on_metric_batch(
        &mut self,
        batch: &MetricBatch,
        config: &DetectorConfig,
        input_id: &str,
        wall_clock: Timestamp,
    ) -> Output {
        let mut all = Output::default();
        for (i, m) in batch.samples.iter().enumerate() {
            match self.on_metric(m, config, &format!("{input_id}/{i}"), wall_clock) {
                Ok(out) => {
                    all.incidents.extend(out.incidents);
                    all.outcomes.extend(out.outcomes);
                    all.slo = out.slo.or(all.slo);
                }
                Err(why) => all.rejected.push((i, why)),
            }
        }
        all
    }

    /// A deploy event: failed deploys, regression watches.
    pub fn on_deploy(
        &mut self,
        d: &DeployEvent,
        config: &DetectorConfig,
        input_id: &str,
        wall_clock: Timestamp,
    ) -> Result<Output, NotAdmitted> {
        // A late deploy is still a fact (it cannot move event time back); a far-future one is not.
        self.admit_future(d.timestamp, config, wall_clock)?;
        self.advance(d.timestamp);
        let verdicts = detect::on_deploy(d);
        match d.status {
            DeployStatus::Succeeded => {
                self.record_deploy(d, config.for_service(&self.env, &self.service))
            }
            DeployStatus::RolledBack => self.deploy = None,
            DeployStatus::Started | DeployStatus::Failed => {}
        }
        Ok(self.step(config, input_id, verdicts, Vec::new()))
    }

    /// A log line: pattern matches.
    pub fn on_log(
        &mut self,
        l: &LogEvent,
        config: &DetectorConfig,
        input_id: &str,
        wall_clock: Timestamp,
    ) -> Result<Output, NotAdmitted> {
        self.admit(l.timestamp, config, wall_clock)?;
        self.advance(l.timestamp);
        self.logs.record(&config.log_patterns, l);
        let longest = config.log_patterns.iter().map(|p| p.window_s).max().unwrap_or(0);
        self.logs.prune(self.now_or(l.timestamp), longest);
        let verdicts = detect::on_log(self, &config.log_patterns);
        Ok(self.step(config, input_id, verdicts, Vec::new()))
    }

    /// An execution result: starts (or, for a failure, settles) the verdict on the action. A
    /// rollback a real backend carried out (`command`) ends a failed deploy or a regression
    /// as a rolled-back deploy event would: pipelines do not always report the rollback.
    pub fn on_executed(
        &mut self,
        r: &ExecutionResult,
        config: &DetectorConfig,
        input_id: &str,
        correlation_id: &str,
    ) -> Output {
        let t = config.for_service(&self.env, &self.service);
        let mut outcomes =
            outcome::start(self, r, correlation_id, Duration::from_secs(t.verification_s));
        let rolled_back = r.action == Action::Rollback
            && r.status == ExecutionStatus::Executed
            && r.backend == Backend::Command;
        if rolled_back {
            self.deploy = None;
            let verdicts = vec![
                (IncidentKind::DeployFailed, Verdict::Cleared),
                (IncidentKind::DeployRegression, Verdict::Cleared),
            ];
            let mut out = self.step(config, input_id, verdicts, Vec::new());
            outcomes.append(&mut out.outcomes);
            return Output { outcomes, ..out };
        }
        outcomes.extend(outcome::judge_due(self, Duration::from_secs(t.flap_window_s)));
        Output { outcomes, ..Output::default() }
    }

    fn step(
        &mut self,
        config: &DetectorConfig,
        input_id: &str,
        verdicts: Verdicts,
        related: Vec<bus_schema::Evidence>,
    ) -> Output {
        let Some(now) = self.newest else { return Output::default() };
        let t = config.for_service(&self.env, &self.service);
        let step = Step {
            env: &self.env,
            service: &self.service,
            now,
            input_id,
            tunables: t,
            conflicts: self.conflicts(now, t),
            related,
        };
        let incidents = self.incidents.apply(&step, verdicts);
        let mut outcomes = outcome::revise(self, &incidents);
        outcomes.extend(outcome::judge_due(self, Duration::from_secs(t.flap_window_s)));
        Output { incidents, outcomes, ..Output::default() }
    }

    /// The SLO status, when it changed meaningfully or was last published a while ago.
    fn slo_status(&mut self, view: &SloView, now: Timestamp) -> Option<SloStatus> {
        let alert = view.alert.as_ref().map(|(i, _)| *i);
        let exhausted = view.remaining() <= 0.0;
        let due = match &self.slo_published {
            None => true,
            Some(last) => {
                last.alert != alert
                    || last.exhausted != exhausted
                    || now.since(last.at) >= SLO_PUBLISH_EVERY
            }
        };
        if !due || view.burn_rates.is_empty() {
            return None;
        }
        self.slo_published = Some(SloMark { at: now, alert, exhausted });
        Some(SloStatus {
            env: self.env.clone(),
            service: self.service.clone(),
            objective: view.objective,
            window_days: view.period_days,
            burn_rates: view.burn_rates.clone(),
            budget_remaining: view.remaining().max(-1e6),
            ts: now,
        })
    }
}
