//! Proptest strategies for every payload, shared by the property tests.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use uuid::Uuid;

use crate::payload::*;
use crate::proof::{ProofHash, ProofKind, ProofRecord};
use crate::{Action, AgentName, Env, InstanceId, ReasonCode, ServiceName, Timestamp};

pub fn token() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,62}"
}
pub fn env() -> impl Strategy<Value = Env> {
    token().prop_map(|s| Env::new(s).unwrap())
}
pub fn service() -> impl Strategy<Value = ServiceName> {
    token().prop_map(|s| ServiceName::new(s).unwrap())
}
pub fn agent() -> impl Strategy<Value = AgentName> {
    token().prop_map(|s| AgentName::new(s).unwrap())
}
pub fn instance() -> impl Strategy<Value = InstanceId> {
    token().prop_map(|s| InstanceId::new(s).unwrap())
}
pub fn ts() -> impl Strategy<Value = Timestamp> {
    // 2000-01-01 .. 2199-12-31, nanosecond precision.
    (946_684_800_000_000_000i128..7_258_118_400_000_000_000i128)
        .prop_map(|n| Timestamp::from_unix_nanos(n).unwrap())
}
pub fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}
/// Any finite number (JSON cannot carry NaN or infinities).
pub fn num() -> impl Strategy<Value = f64> {
    prop_oneof![any::<f64>().prop_filter("finite", |f| f.is_finite()), 0.0..1.0f64]
}
pub fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}
fn pick<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    prop::sample::select(all)
}
pub fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        prop::sample::select(Action::BUILT_IN.to_vec()),
        "[a-z][a-z0-9_]{0,30}".prop_map(|s| s.parse().unwrap()),
    ]
}
fn params() -> impl Strategy<Value = ActionParams> {
    (option::of(any::<u8>()), option::of(any::<u32>()), option::of(text())).prop_map(
        |(canary_weight, replicas, target_version)| ActionParams {
            canary_weight,
            replicas,
            target_version,
        },
    )
}

pub fn deploy_event() -> impl Strategy<Value = DeployEvent> {
    (
        service(),
        env(),
        text(),
        option::of(text()),
        option::of(text()),
        pick(DeployStatus::ALL),
        ts(),
        option::of(text()),
    )
        .prop_map(
            |(
                service,
                env,
                version,
                previous_version,
                commit_sha,
                status,
                timestamp,
                deployment_id,
            )| DeployEvent {
                service,
                env,
                version,
                previous_version,
                commit_sha,
                status,
                timestamp,
                deployment_id,
            },
        )
}

pub fn metric_sample() -> impl Strategy<Value = MetricSample> {
    let nums = (
        option::of(num()),
        option::of(num()),
        option::of(num()),
        option::of(num()),
        option::of(num()),
        option::of(num()),
    );
    (
        service(),
        env(),
        nums,
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(pick(Variant::ALL)),
        ts(),
        option::of(text()),
    )
        .prop_map(
            |(
                service,
                env,
                (error_rate, p95, p99, cpu, mem, qps),
                crash_looping,
                restarts,
                variant,
                timestamp,
                source,
            )| MetricSample {
                service,
                env,
                error_rate,
                p95_latency_ms: p95,
                p99_latency_ms: p99,
                cpu_percent: cpu,
                memory_percent: mem,
                crash_looping,
                restarts,
                qps,
                variant,
                timestamp,
                source,
            },
        )
}

pub fn log_event() -> impl Strategy<Value = LogEvent> {
    (service(), env(), pick(LogLevel::ALL), text(), ts(), option::of(text())).prop_map(
        |(service, env, level, message, timestamp, source)| LogEvent {
            service,
            env,
            level,
            message,
            timestamp,
            source,
        },
    )
}

fn change() -> impl Strategy<Value = Change> {
    (text(), pick(ChangeType::ALL), any::<u32>(), vec(text(), 0..3), text()).prop_map(
        |(file_path, change_type, lines_changed, risk_tags, description)| Change {
            file_path,
            change_type,
            lines_changed,
            risk_tags,
            description,
        },
    )
}

pub fn contract_request() -> impl Strategy<Value = ContractRequest> {
    let nums = (option::of(num()), option::of(num()), option::of(num()), option::of(num()));
    (text(), service(), env(), text(), vec(change(), 0..3), nums, any::<bool>(), vec(text(), 0..3))
        .prop_map(
            |(
                deployment_id,
                service,
                env,
                version,
                changes,
                (cer, cp95, tp95, ter),
                rollback_capability,
                dependencies,
            )| ContractRequest {
                deployment_id,
                service,
                env,
                version,
                changes,
                current_error_rate: cer,
                current_p95_latency_ms: cp95,
                target_p95_latency_ms: tp95,
                target_error_rate: ter,
                rollback_capability,
                dependencies,
            },
        )
}

pub fn onboard_request() -> impl Strategy<Value = OnboardRequest> {
    (text(), text(), text(), env()).prop_map(|(app_name, repo_url, runtime, env)| OnboardRequest {
        app_name,
        repo_url,
        runtime,
        env,
    })
}

pub fn human_decision() -> impl Strategy<Value = HumanDecision> {
    (uuid(), pick(Decision::ALL), text(), text()).prop_map(
        |(proposal_id, decision, operator, reason)| HumanDecision {
            proposal_id,
            decision,
            operator,
            reason,
        },
    )
}

fn risk() -> impl Strategy<Value = RiskAssessment> {
    (num(), pick(RiskLevel::ALL), num(), vec((text(), num(), text()), 0..3)).prop_map(
        |(score, level, confidence, f)| RiskAssessment {
            score,
            level,
            confidence,
            factors: f
                .into_iter()
                .map(|(name, contribution, detail)| RiskFactor { name, contribution, detail })
                .collect(),
        },
    )
}

pub fn contract() -> impl Strategy<Value = Contract> {
    let guard =
        (num(), num(), option::of(num()), any::<u8>()).prop_map(|(e, p95, p99, step)| Guardrails {
            max_error_rate: e,
            max_p95_latency_ms: p95,
            max_p99_latency_ms: p99,
            max_traffic_step_percent: step,
        });
    let validators = vec(
        (pick(ValidatorKind::ALL), text()).prop_map(|(kind, reason)| Validator { kind, reason }),
        0..3,
    );
    let canary = vec(
        (any::<u8>(), any::<u32>(), any::<u32>()).prop_map(|(w, d, n)| CanaryStage {
            weight_percent: w,
            min_duration_s: d,
            min_samples: n,
        }),
        0..4,
    );
    let rollback = (any::<bool>(), vec(text(), 0..3), any::<u32>(), pick(DataLossRisk::ALL))
        .prop_map(|(possible, steps, estimated_s, data_loss_risk)| RollbackPlan {
            possible,
            steps,
            estimated_s,
            data_loss_risk,
        });
    let ids = (uuid(), text(), env(), service(), text(), pick(ContractStatus::ALL), any::<u32>());
    (
        ids,
        risk(),
        guard,
        validators,
        canary,
        rollback,
        vec(text(), 0..2),
        (option::of(text()), ts()),
    )
        .prop_map(
            |(
                (contract_id, deployment_id, env, service, version, status, revision),
                risk,
                guardrails,
                validators,
                canary,
                rollback,
                suggestions,
                (reason, updated_at),
            )| Contract {
                contract_id,
                deployment_id,
                env,
                service,
                version,
                status,
                revision,
                risk,
                guardrails,
                validators,
                canary,
                rollback,
                suggestions,
                reason,
                updated_at,
            },
        )
}

fn ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        any::<u8>().prop_map(|stages| Ask::ShortenCanary { stages }),
        Just(Ask::SkipCanary),
        (text(), num()).prop_map(|(guardrail, value)| Ask::RelaxGuardrail { guardrail, value }),
        pick(ValidatorKind::ALL).prop_map(|validator| Ask::WaiveValidator { validator }),
    ]
}

pub fn counter_proposal() -> impl Strategy<Value = CounterProposal> {
    (uuid(), env(), service(), text(), vec(ask(), 0..4), text()).prop_map(
        |(contract_id, env, service, requested_by, asks, justification)| CounterProposal {
            contract_id,
            env,
            service,
            requested_by,
            asks,
            justification,
        },
    )
}

pub fn negotiation_reply() -> impl Strategy<Value = NegotiationReply> {
    (
        uuid(),
        any::<u32>(),
        any::<bool>(),
        vec((ask(), any::<bool>(), text()), 0..3),
        option::of(contract()),
        option::of(text()),
    )
        .prop_map(|(contract_id, round, accepted, d, contract, reason)| NegotiationReply {
            contract_id,
            round,
            accepted,
            contract,
            reason,
            decisions: d
                .into_iter()
                .map(|(ask, accepted, reason)| AskDecision { ask, accepted, reason })
                .collect(),
        })
}

fn evidence() -> impl Strategy<Value = Evidence> {
    (text(), num(), num(), any::<u64>(), text()).prop_map(
        |(signal, value, threshold, window_s, detail)| Evidence {
            signal,
            value,
            threshold,
            window_s,
            detail,
        },
    )
}

pub fn incident() -> impl Strategy<Value = Incident> {
    let head = (
        uuid(),
        env(),
        service(),
        pick(IncidentKind::ALL),
        pick(Severity::ALL),
        pick(IncidentStatus::ALL),
        text(),
    );
    let times = (ts(), ts(), option::of(ts()));
    let rest = (
        vec(evidence(), 0..3),
        any::<bool>(),
        option::of(text()),
        option::of(num()),
        (any::<u64>(), any::<u32>()),
    );
    (head, times, rest).prop_map(
        |(
            (incident_id, env, service, kind, severity, status, summary),
            (opened_at, updated_at, resolved_at),
            (
                evidence,
                signal_conflict,
                suspect_version,
                time_to_recover_s,
                (sample_count, reopen_count),
            ),
        )| Incident {
            incident_id,
            env,
            service,
            kind,
            severity,
            status,
            summary,
            opened_at,
            updated_at,
            resolved_at,
            evidence,
            signal_conflict,
            suspect_version,
            time_to_recover_s,
            sample_count,
            reopen_count,
        },
    )
}

pub fn outcome() -> impl Strategy<Value = Outcome> {
    let head = (
        uuid(),
        option::of(uuid()),
        env(),
        service(),
        action(),
        any::<bool>(),
        option::of(num()),
        ts(),
        text(),
    );
    (head, any::<bool>(), option::of(uuid())).prop_map(
        |(
            (
                incident_id,
                proposal_id,
                env,
                service,
                action,
                recovered,
                time_to_recover_s,
                judged_at,
                detail,
            ),
            revised,
            superseded_by,
        )| Outcome {
            incident_id,
            proposal_id,
            env,
            service,
            action,
            recovered,
            time_to_recover_s,
            judged_at,
            detail,
            revised,
            superseded_by,
        },
    )
}

pub fn slo_status() -> impl Strategy<Value = SloStatus> {
    (
        env(),
        service(),
        num(),
        any::<u32>(),
        vec((any::<u64>(), num()).prop_map(|(window_s, rate)| BurnRate { window_s, rate }), 0..4),
        num(),
        ts(),
    )
        .prop_map(
            |(env, service, objective, window_days, burn_rates, budget_remaining, ts)| SloStatus {
                env,
                service,
                objective,
                window_days,
                burn_rates,
                budget_remaining,
                ts,
            },
        )
}

pub fn proposal() -> impl Strategy<Value = ActionProposal> {
    let head = (uuid(), option::of(uuid()), env(), service(), action(), params());
    let tail = (
        num(),
        agent(),
        text(),
        vec((action(), num()).prop_map(|(action, value)| Candidate { action, value }), 0..3),
        any::<bool>(),
        any::<bool>(),
        ts(),
    );
    (head, tail, option::of(num())).prop_map(
        |(
            (proposal_id, incident_id, env, service, action, params),
            (
                confidence,
                proposer,
                explanation,
                candidates,
                exploratory,
                require_human,
                proposed_at,
            ),
            propensity,
        )| {
            ActionProposal {
                proposal_id,
                incident_id,
                env,
                service,
                action,
                params,
                confidence,
                proposer,
                explanation,
                candidates,
                exploratory,
                require_human,
                proposed_at,
                propensity,
            }
        },
    )
}

pub fn signed_approval() -> impl Strategy<Value = SignedApproval> {
    let claims = (
        (uuid(), uuid(), text(), option::of(uuid())),
        env(),
        service(),
        action(),
        params(),
        text(),
        ts(),
        ts(),
    )
        .prop_map(
            |(
                (approval_id, proposal_id, proposal_hash, incident_id),
                env,
                service,
                action,
                params,
                approved_by,
                issued_at,
                expires_at,
            )| ApprovalClaims {
                approval_id,
                proposal_id,
                proposal_hash,
                incident_id,
                env,
                service,
                action,
                params,
                approved_by,
                issued_at,
                expires_at,
            },
        );
    (claims, text(), text()).prop_map(|(claims, key_id, signature)| SignedApproval {
        claims,
        key_id,
        signature,
    })
}

pub fn refusal() -> impl Strategy<Value = Refusal> {
    (uuid(), option::of(uuid()), env(), service(), action(), pick(ReasonCode::ALL), text(), ts())
        .prop_map(|(proposal_id, incident_id, env, service, action, reason, detail, refused_at)| {
            Refusal { proposal_id, incident_id, env, service, action, reason, detail, refused_at }
        })
}

pub fn pending_approval() -> impl Strategy<Value = PendingApproval> {
    (proposal(), text(), ts(), ts()).prop_map(|(proposal, reason, requested_at, expires_at)| {
        PendingApproval { proposal, reason, requested_at, expires_at }
    })
}

pub fn execution_result() -> impl Strategy<Value = ExecutionResult> {
    let head = (
        uuid(),
        option::of(uuid()),
        option::of(uuid()),
        env(),
        service(),
        action(),
        pick(Backend::ALL),
        pick(ExecutionStatus::ALL),
    );
    let tail = (
        option::of(pick(ReasonCode::ALL)),
        option::of(any::<i32>()),
        option::of(text()),
        text(),
        ts(),
        ts(),
    );
    (head, tail).prop_map(
        |(
            (proposal_id, approval_id, incident_id, env, service, action, backend, status),
            (refusal, exit_code, output_tail, detail, started_at, finished_at),
        )| ExecutionResult {
            proposal_id,
            approval_id,
            incident_id,
            env,
            service,
            action,
            backend,
            status,
            refusal,
            exit_code,
            output_tail,
            detail,
            started_at,
            finished_at,
        },
    )
}

pub fn sim_action() -> impl Strategy<Value = SimAction> {
    (uuid(), env(), service(), action(), params(), ts()).prop_map(
        |(proposal_id, env, service, action, params, issued_at)| SimAction {
            proposal_id,
            env,
            service,
            action,
            params,
            issued_at,
        },
    )
}

pub fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (agent(), instance(), text(), ts(), ts(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(agent, instance, version, started_at, ts, processed, rejected, proof_seq)| Heartbeat {
            agent,
            instance,
            version,
            started_at,
            ts,
            processed,
            rejected,
            proof_seq,
        },
    )
}

pub fn agent_status() -> impl Strategy<Value = AgentStatus> {
    (heartbeat(), vec(text(), 0..3), any::<bool>()).prop_map(|(heartbeat, consumers, stopping)| {
        AgentStatus { heartbeat, consumers, stopping, degraded: Vec::new() }
    })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

pub fn proof_record() -> impl Strategy<Value = ProofRecord> {
    let head =
        (agent(), instance(), 1u64..u64::MAX, ts(), pick(ProofKind::ALL), option::of(text()));
    let scope = (
        option::of(env()),
        option::of(service()),
        option::of(action()),
        option::of(uuid()),
        option::of(uuid()),
        option::of(text()),
    );
    (head, scope, json_value(), any::<[u8; 32]>(), option::of(traceparent())).prop_map(
        |(
            (agent, instance, seq, ts, kind, correlation_id),
            (env, service, action, proposal_id, incident_id, reason),
            detail,
            prev,
            traceparent,
        )| ProofRecord {
            v: crate::proof::PROOF_VERSION,
            agent,
            instance,
            seq,
            ts,
            kind,
            correlation_id,
            traceparent,
            env,
            service,
            action,
            proposal_id,
            incident_id,
            reason,
            detail,
            prev_hash: ProofHash::of(&prev),
        },
    )
}

/// A valid W3C `traceparent`.
pub fn traceparent() -> impl Strategy<Value = crate::trace::TraceParent> {
    (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())
        .prop_filter("ids are not all zero", |(t, p, _)| *t != [0; 16] && *p != [0; 8])
        .prop_map(|(t, p, flags)| {
            let hex = crate::hex::encode;
            format!("00-{}-{}-{flags:02x}", hex(&t), hex(&p)).parse().unwrap()
        })
}
