//! Incident lifecycle for one service: one open incident per kind, updated rather than
//! duplicated, resolved after `resolve_after_samples` healthy readings, reopened (same id)
//! when it comes back within `flap_window_s`, and then slower to resolve (flap damping).
//!
//! Causes explain symptoms, as in Alertmanager's inhibition: while a crash loop, failed deploy
//! or deploy regression is firing (or fired or resolved less than [`detect::inhibit_for`]
//! ago), the error rate, latency, log patterns and SLO burn it causes do not open incidents of
//! their own; their evidence and severity are added to the cause instead. A high error rate
//! likewise explains an SLO burn.
//!
//! Updates are published when the severity, the conflict flag or the set of evidence signals
//! changes, and otherwise at most every `update_interval_s`, so a thousand bad samples make one
//! incident with a few updates, not a thousand messages.

use std::collections::{BTreeMap, BTreeSet};

use bus_schema::{
    Env, Evidence, Incident, IncidentKind, IncidentStatus, ServiceName, Severity, Timestamp, Uuid,
    derive_id,
};

use crate::config::Tunables;
use crate::detect::{self, Finding, Verdict, Verdicts};
pub use crate::records::{Incidents, Tracked};

/// Reopened incidents need this many times more healthy samples, at most.
const MAX_DAMPING: u32 = 4;
/// Evidence entries kept on one incident.
const MAX_EVIDENCE: usize = 24;

const CAUSES: [IncidentKind; 3] =
    [IncidentKind::CrashLoop, IncidentKind::DeployFailed, IncidentKind::DeployRegression];

/// The kinds that explain `kind` when open, if it is a symptom.
fn explained_by(kind: IncidentKind) -> &'static [IncidentKind] {
    const SLO: [IncidentKind; 4] = [
        IncidentKind::CrashLoop,
        IncidentKind::DeployFailed,
        IncidentKind::DeployRegression,
        IncidentKind::HighErrorRate,
    ];
    match kind {
        IncidentKind::HighErrorRate | IncidentKind::HighLatency | IncidentKind::LogPattern => {
            &CAUSES
        }
        IncidentKind::SloBurn => &SLO,
        _ => &[],
    }
}

/// One event's context.
#[derive(Debug)]
pub struct Step<'a> {
    pub env: &'a Env,
    pub service: &'a ServiceName,
    pub now: Timestamp,
    pub input_id: &'a str,
    pub tunables: &'a Tunables,
    /// Conflicting readings right now; flags every incident of the service.
    pub conflicts: Vec<Evidence>,
    /// The event's own bad readings, added to incidents it opens or updates.
    pub related: Vec<Evidence>,
}

impl Incidents {
    pub fn is_open(&self, kind: IncidentKind) -> bool {
        self.open.contains_key(&kind)
    }

    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.open.values().map(|t| &t.incident)
    }

    /// An incident by id, open or recently resolved.
    pub fn find(&self, id: Uuid) -> Option<&Incident> {
        self.open
            .values()
            .chain(self.resolved.values())
            .map(|t| &t.incident)
            .find(|i| i.incident_id == id)
    }

    /// Applies one event's verdicts; returns the incidents to publish.
    pub fn apply(&mut self, step: &Step<'_>, verdicts: Verdicts) -> Vec<Incident> {
        let mut changed: BTreeMap<IncidentKind, Incident> = BTreeMap::new();
        let mut explained: BTreeMap<IncidentKind, (Vec<Evidence>, Severity)> = BTreeMap::new();
        for (kind, verdict) in verdicts {
            match verdict {
                Verdict::Firing(finding) => {
                    if let Some(cause) = self.explaining(kind, step) {
                        let (evidence, severity) =
                            explained.entry(cause).or_insert((Vec::new(), Severity::Low));
                        *severity = (*severity).max(finding.severity);
                        evidence.extend(finding.evidence.into_iter().map(|mut e| {
                            e.detail = format!("{} (explained by {cause})", e.detail);
                            e
                        }));
                        self.touch(kind, false);
                    } else if let Some(incident) = self.fire(kind, finding, step) {
                        changed.insert(kind, incident);
                    }
                }
                Verdict::Bad => self.touch(kind, false),
                Verdict::Healthy => {
                    self.touch(kind, true);
                    let required = self.open.get(&kind).map(|t| {
                        step.tunables.resolve_after_samples
                            * (1 + t.incident.reopen_count).min(MAX_DAMPING)
                    });
                    if self.open.get(&kind).zip(required).is_some_and(|(t, r)| t.healthy_run >= r) {
                        changed.extend(self.resolve(kind, step.now).map(|i| (kind, i)));
                    }
                }
                Verdict::Cleared => changed.extend(self.resolve(kind, step.now).map(|i| (kind, i))),
            }
        }
        // Symptoms' evidence (and severity) goes on the incidents that explain them, and
        // conflicts on everything.
        let kinds: Vec<IncidentKind> = self.open.keys().copied().collect();
        for kind in kinds {
            let (extra, severity) = explained.remove(&kind).unwrap_or((Vec::new(), Severity::Low));
            if let Some(mut incident) = self.refresh(kind, extra, severity, step) {
                // Opened in this step: it goes out once, as opened, with everything added.
                if let Some(earlier) = changed.get(&kind) {
                    incident.status = earlier.status;
                }
                changed.insert(kind, incident);
            }
        }
        self.prune(step.now, step.tunables);
        changed.into_values().collect()
    }

    /// The cause that explains a symptom of `kind`: one that fired (or resolved) within
    /// [`detect::inhibit_for`]. A cause that went quiet — a failed deploy hours ago, a crash
    /// loop no sample mentions any more — explains nothing new.
    fn explaining(&self, kind: IncidentKind, step: &Step<'_>) -> Option<IncidentKind> {
        let recent = step.now.minus(detect::inhibit_for(step.tunables));
        explained_by(kind).iter().copied().find(|cause| {
            self.open.get(cause).is_some_and(|t| t.last_firing >= recent)
                || self
                    .resolved
                    .get(cause)
                    .is_some_and(|t| t.incident.resolved_at.is_some_and(|at| at >= recent))
        })
    }

    fn touch(&mut self, kind: IncidentKind, healthy: bool) {
        if let Some(t) = self.open.get_mut(&kind) {
            if healthy {
                t.healthy_run += 1;
            } else {
                t.healthy_run = 0;
                t.incident.sample_count += 1;
            }
        }
    }

    fn fire(&mut self, kind: IncidentKind, finding: Finding, step: &Step<'_>) -> Option<Incident> {
        let now = step.now;
        if let Some(t) = self.open.get_mut(&kind) {
            t.healthy_run = 0;
            t.last_firing = now;
            t.incident.sample_count += 1;
            let mut next = t.incident.clone();
            // An open incident's severity only rises.
            next.severity = next.severity.max(finding.severity);
            next.summary = finding.summary;
            // Fresh figures first; what only earlier events showed stays listed.
            next.evidence = union(merge(finding.evidence, &step.related), &t.incident.evidence);
            next.suspect_version = finding.suspect_version.or(next.suspect_version);
            t.draft = Some(next);
            return None;
        }
        let reopen = self.resolved.remove(&kind).filter(|t| {
            t.incident
                .resolved_at
                .is_some_and(|at| now.since(at).as_secs() < step.tunables.flap_window_s)
        });
        let incident = match reopen {
            Some(previous) => Incident {
                status: IncidentStatus::Opened,
                severity: finding.severity,
                summary: finding.summary,
                updated_at: now,
                resolved_at: None,
                time_to_recover_s: None,
                evidence: merge(finding.evidence, &step.related),
                suspect_version: finding
                    .suspect_version
                    .or(previous.incident.suspect_version.clone()),
                sample_count: previous.incident.sample_count + 1,
                reopen_count: previous.incident.reopen_count.saturating_add(1),
                signal_conflict: !step.conflicts.is_empty(),
                ..previous.incident
            },
            None => Incident {
                incident_id: derive_id(&["incident", step.input_id, kind.as_str()]),
                env: step.env.clone(),
                service: step.service.clone(),
                kind,
                severity: finding.severity,
                status: IncidentStatus::Opened,
                summary: finding.summary,
                opened_at: now,
                updated_at: now,
                resolved_at: None,
                evidence: merge(finding.evidence, &step.related),
                signal_conflict: !step.conflicts.is_empty(),
                suspect_version: finding.suspect_version,
                time_to_recover_s: None,
                sample_count: 1,
                reopen_count: 0,
            },
        };
        let mut incident = incident;
        incident.evidence = merge(incident.evidence, &step.conflicts);
        self.open.insert(
            kind,
            Tracked {
                incident: incident.clone(),
                healthy_run: 0,
                since: now,
                last_published: now,
                last_firing: now,
                draft: None,
            },
        );
        Some(incident)
    }

    /// Adds explained symptoms (raising the severity to theirs) and the conflict flag to an
    /// open incident; publishes if that is material.
    fn refresh(
        &mut self,
        kind: IncidentKind,
        extra: Vec<Evidence>,
        severity: Severity,
        step: &Step<'_>,
    ) -> Option<Incident> {
        let t = self.open.get_mut(&kind)?;
        let mut next = t.draft.take().unwrap_or_else(|| t.incident.clone());
        next.evidence = merge(merge(next.evidence, &extra), &step.conflicts);
        next.severity = next.severity.max(severity);
        next.signal_conflict = !step.conflicts.is_empty();
        Self::publish_if_material(t, next, step)
    }

    fn publish_if_material(
        t: &mut Tracked,
        mut next: Incident,
        step: &Step<'_>,
    ) -> Option<Incident> {
        let signals =
            |i: &Incident| i.evidence.iter().map(|e| e.signal.clone()).collect::<BTreeSet<_>>();
        let material = next.severity != t.incident.severity
            || next.signal_conflict != t.incident.signal_conflict
            || !signals(&next).is_subset(&signals(&t.incident));
        let due = step.now.since(t.last_published).as_secs() >= step.tunables.update_interval_s;
        next.updated_at = step.now;
        if !(material || due) {
            // Keep the newest figures without publishing them.
            t.incident.evidence = next.evidence;
            t.incident.summary = next.summary;
            return None;
        }
        next.status = IncidentStatus::Updated;
        t.incident = next.clone();
        t.last_published = step.now;
        Some(next)
    }

    fn resolve(&mut self, kind: IncidentKind, now: Timestamp) -> Option<Incident> {
        let mut t = self.open.remove(&kind)?;
        t.incident.status = IncidentStatus::Resolved;
        t.incident.updated_at = now;
        t.incident.resolved_at = Some(now);
        t.incident.time_to_recover_s = Some(now.since(t.since).as_secs_f64());
        t.last_published = now;
        let incident = t.incident.clone();
        self.resolved.insert(kind, t);
        Some(incident)
    }

    /// Forgets resolved incidents that can no longer reopen or be judged.
    fn prune(&mut self, now: Timestamp, t: &Tunables) {
        let keep_s = t.flap_window_s.max(t.verification_s).max(detect::inhibit_for(t).as_secs());
        self.resolved.retain(|_, r| {
            r.incident.resolved_at.is_some_and(|at| now.since(at).as_secs() <= keep_s)
        });
    }
}

/// `base` plus the entries of `old` whose signal it does not have, capped.
fn union(mut base: Vec<Evidence>, old: &[Evidence]) -> Vec<Evidence> {
    for e in old {
        if !base.iter().any(|b| b.signal == e.signal) {
            base.push(e.clone());
        }
    }
    base.truncate(MAX_EVIDENCE);
    base
}

/// `base` plus the entries of `extra` whose signal it does not have yet, capped.
fn merge(mut base: Vec<Evidence>, extra: &[Evidence]) -> Vec<Evidence> {
    for e in extra {
        match base.iter_mut().find(|b| b.signal == e.signal) {
            Some(b)
                if b.detail.contains("explained by")
                    || b.detail == "in the latest sample"
                    || b.signal.starts_with("conflict:") =>
            {
                *b = e.clone()
            }
            Some(_) => {}
            None => base.push(e.clone()),
        }
    }
    base.truncate(MAX_EVIDENCE);
    base
}
