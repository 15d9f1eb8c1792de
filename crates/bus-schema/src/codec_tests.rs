//! Property tests for the codecs: round trips, routing by subject, and rejection of bad input.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::arb;
use crate::codec::{
    DecodeError, Encoding, Inbound, Limits, MAX_CLOCK_SKEW, Outgoing, Payload, decode,
    decode_inbound, decode_inbound_at, encode_as,
};
use crate::payload::*;
use crate::subject;
use crate::{RejectReason, proof::ProofRecord};

fn round_trips<P: Payload + PartialEq>(p: &P) -> Result<(), TestCaseError> {
    let json = encode_as(p, Encoding::Json).unwrap();
    let back: P = serde_json::from_slice(&json).unwrap();
    prop_assert_eq!(&back, p, "JSON: {}", String::from_utf8_lossy(&json));
    let msgpack = encode_as(p, Encoding::MsgPack).unwrap();
    let back: P = rmp_serde::from_slice(&msgpack).unwrap();
    prop_assert_eq!(&back, p, "MessagePack");
    Ok(())
}

macro_rules! round_trip_tests {
    ($($name:ident: $strategy:expr;)+) => {
        proptest! {
            $(
                #[test]
                fn $name(p in $strategy) { round_trips(&p)?; }
            )+
        }
    };
}

round_trip_tests! {
    deploy_event_round_trips: arb::deploy_event();
    metric_sample_round_trips: arb::metric_sample();
    log_event_round_trips: arb::log_event();
    contract_request_round_trips: arb::contract_request();
    onboard_request_round_trips: arb::onboard_request();
    human_decision_round_trips: arb::human_decision();
    contract_round_trips: arb::contract();
    counter_proposal_round_trips: arb::counter_proposal();
    negotiation_reply_round_trips: arb::negotiation_reply();
    incident_round_trips: arb::incident();
    outcome_round_trips: arb::outcome();
    slo_status_round_trips: arb::slo_status();
    action_proposal_round_trips: arb::proposal();
    signed_approval_round_trips: arb::signed_approval();
    refusal_round_trips: arb::refusal();
    pending_approval_round_trips: arb::pending_approval();
    execution_result_round_trips: arb::execution_result();
    sim_action_round_trips: arb::sim_action();
    heartbeat_round_trips: arb::heartbeat();
    agent_status_round_trips: arb::agent_status();
    proof_record_round_trips: arb::proof_record();
}

fn good_metric() -> Value {
    json!({"service":"payments-api","env":"prod","error_rate":0.13,"p95_latency_ms":1450,
           "p99_latency_ms":2100,"cpu_percent":91,"memory_percent":70,"crash_looping":true,
           "restarts":4,"qps":1200,"variant":"stable","timestamp":"2026-02-20T17:01:00Z"})
}

const METRIC_SUBJECT: &str = "cn.events.metric.prod.payments-api";

fn decode_metric(v: &Value) -> Result<Inbound, DecodeError> {
    decode_inbound(METRIC_SUBJECT, None, v.to_string().as_bytes(), &Limits::DEFAULT)
}

#[test]
fn the_design_examples_decode() {
    let Inbound::Metric(m) = decode_metric(&good_metric()).unwrap() else { panic!("not a metric") };
    assert_eq!(m.error_rate, Some(0.13));
    assert_eq!(m.crash_looping, Some(true));
    let deploy = json!({"service":"payments-api","env":"prod","version":"1.15.0","previous_version":"1.14.2",
        "commit_sha":"d1e2f3a","status":"failed","timestamp":"2026-02-20T17:00:00Z"});
    let got = decode_inbound(
        "cn.events.deploy.prod.payments-api",
        None,
        deploy.to_string().as_bytes(),
        &Limits::DEFAULT,
    );
    assert!(matches!(got, Ok(Inbound::Deploy(d)) if d.status == DeployStatus::Failed));
    let request = json!({"deployment_id":"deploy-001","service":"user-service","env":"prod","version":"v2.1.0",
        "changes":[{"file_path":"src/cache/manager.py","change_type":"modify","lines_changed":45,
                    "risk_tags":["caching"],"description":"Optimize cache TTL strategy"}],
        "current_error_rate":0.0005,"current_p95_latency_ms":180,"target_p95_latency_ms":250,
        "target_error_rate":0.001,"rollback_capability":true,"dependencies":["postgres","redis"]});
    let got = decode_inbound(
        "cn.requests.contract.prod.user-service",
        None,
        request.to_string().as_bytes(),
        &Limits::DEFAULT,
    );
    assert!(matches!(got, Ok(Inbound::ContractRequest(r)) if r.changes.len() == 1));
    let onboard = json!({"app_name":"demo-api","repo_url":"https://example.com/org/demo-api","runtime":"backend","env":"dev"});
    let got = decode_inbound(
        "cn.requests.onboard.dev",
        None,
        onboard.to_string().as_bytes(),
        &Limits::DEFAULT,
    );
    assert!(matches!(got, Ok(Inbound::Onboard(_))));
    let decision = json!({"proposal_id":"6f1c2b1e-7d8a-4c55-9a43-3f2f4f0b2a10","decision":"approve","operator":"oncall-sre","reason":"checked dashboards"});
    let got = decode_inbound(
        "cn.approvals.prod.payments-api",
        None,
        decision.to_string().as_bytes(),
        &Limits::DEFAULT,
    );
    assert!(matches!(got, Ok(Inbound::HumanDecision(d)) if d.decision == Decision::Approve));
}

#[test]
fn unknown_fields_are_ignored() {
    let mut v = good_metric();
    v["from_the_future"] = json!({"nested": [1, 2, 3]});
    assert!(decode_metric(&v).is_ok());
}

#[test]
fn wrong_types_name_the_field() {
    let mut v = good_metric();
    v["error_rate"] = json!("high");
    let err = decode_metric(&v).unwrap_err();
    assert_eq!(err.reason(), RejectReason::InvalidField);
    assert!(err.to_string().starts_with("error_rate: invalid type: string \"high\""), "{err}");

    let mut v = good_metric();
    v["timestamp"] = json!("yesterday");
    let err = decode_metric(&v).unwrap_err();
    assert!(err.to_string().starts_with("timestamp: "), "{err}");
    assert!(err.to_string().contains("RFC 3339"), "{err}");

    let mut v = good_metric();
    v.as_object_mut().unwrap().remove("timestamp");
    let err = decode_metric(&v).unwrap_err();
    assert_eq!(err.reason(), RejectReason::InvalidField);
    assert!(err.to_string().contains("missing field `timestamp`"), "{err}");

    let mut v = good_metric();
    v["variant"] = json!("blue");
    let err = decode_metric(&v).unwrap_err();
    assert!(
        err.to_string()
            .contains("variant: unknown Variant \"blue\"; expected one of: stable, canary"),
        "{err}"
    );
}

#[test]
fn malformed_json_is_malformed() {
    for bad in [&b"{\"service\":"[..], b"not json", b"{\"service\":\"x\",}", b"{\"a\":1"] {
        let err = decode_inbound(METRIC_SUBJECT, None, bad, &Limits::DEFAULT).unwrap_err();
        assert_eq!(err.reason(), RejectReason::Malformed, "{err}");
    }
    let err = decode_inbound(METRIC_SUBJECT, None, b"", &Limits::DEFAULT).unwrap_err();
    assert_eq!(err, DecodeError::Empty);
    let err = decode_inbound(METRIC_SUBJECT, None, b"{}", &Limits::DEFAULT).unwrap_err();
    assert_eq!(err.to_string(), "payload: missing field `service`");
}

#[test]
fn payload_tokens_are_validated_too() {
    let mut v = good_metric();
    v["service"] = json!("Payments.API");
    let err = decode_metric(&v).unwrap_err();
    assert_eq!(err.reason(), RejectReason::InvalidField);
    assert!(err.to_string().starts_with("service: service \"Payments.API\" has 'P'"), "{err}");
}

#[test]
fn payload_and_subject_must_agree() {
    let mut v = good_metric();
    v["service"] = json!("other-api");
    let err = decode_metric(&v).unwrap_err();
    assert_eq!(err.reason(), RejectReason::ScopeMismatch);
    assert_eq!(
        err.to_string(),
        "payload service is \"other-api\" but the subject says \"payments-api\""
    );
}

#[test]
fn bad_subjects_explain_the_expected_shape() {
    let body = good_metric().to_string();
    let err = decode_inbound(
        "cn.events.metric.prod.payments.api",
        None,
        body.as_bytes(),
        &Limits::DEFAULT,
    )
    .unwrap_err();
    assert_eq!(err.reason(), RejectReason::InvalidSubject);
    assert!(err.to_string().contains("expected cn.events.metric.{env}.{service}"), "{err}");
    let err = decode_inbound(
        "cn.events.metric.PROD.payments-api",
        None,
        body.as_bytes(),
        &Limits::DEFAULT,
    )
    .unwrap_err();
    assert!(err.to_string().contains("environment \"PROD\" has 'P'"), "{err}");
    let err =
        decode_inbound("orders.created", None, body.as_bytes(), &Limits::DEFAULT).unwrap_err();
    assert!(err.to_string().contains("not a Chaos Negotiator subject"), "{err}");
}

#[test]
fn content_types() {
    let sample: MetricSample = serde_json::from_value(good_metric()).unwrap();
    let packed = encode_as(&sample, Encoding::MsgPack).unwrap();
    let got =
        decode_inbound(METRIC_SUBJECT, Some("application/msgpack"), &packed, &Limits::DEFAULT)
            .unwrap();
    assert_eq!(got, Inbound::Metric(sample));
    let err =
        decode_inbound(METRIC_SUBJECT, Some("text/xml"), b"<x/>", &Limits::DEFAULT).unwrap_err();
    assert_eq!(err.reason(), RejectReason::UnsupportedContentType);
    let body = good_metric().to_string();
    assert!(
        decode_inbound(
            METRIC_SUBJECT,
            Some("application/json; charset=utf-8"),
            body.as_bytes(),
            &Limits::DEFAULT
        )
        .is_ok()
    );
    let mut trailing = packed.clone();
    trailing.push(0xc0);
    let err =
        decode_inbound(METRIC_SUBJECT, Some("application/msgpack"), &trailing, &Limits::DEFAULT)
            .unwrap_err();
    assert_eq!(err.reason(), RejectReason::Malformed);
}

#[test]
fn oversized_payloads_are_rejected_before_parsing() {
    let mut v = good_metric();
    v["padding"] = json!("x".repeat(70 * 1024));
    let err = decode_metric(&v).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { limit: 65536, .. }), "{err}");
    assert_eq!(err.reason(), RejectReason::TooLarge);
    let mut v = json!({"service":"payments-api","env":"prod","level":"error","timestamp":"2026-02-20T17:01:02Z"});
    v["message"] = json!("y".repeat(5000));
    let err = decode_inbound(
        "cn.events.log.prod.payments-api",
        None,
        v.to_string().as_bytes(),
        &Limits::DEFAULT,
    )
    .unwrap_err();
    assert_eq!(err.reason(), RejectReason::FieldTooLarge);
    assert_eq!(err.to_string(), "message is 5000 bytes long; at most 4096 are allowed");
}

#[test]
fn every_family_routes_to_its_payload() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut sample =
        |s: proptest::strategy::BoxedStrategy<Inbound>| s.new_tree(&mut runner).unwrap().current();
    let cases: Vec<(String, Inbound)> = vec![
        {
            let p = sample(arb::incident().prop_map(Inbound::Incident).boxed());
            let Inbound::Incident(i) = &p else { unreachable!() };
            (subject::INCIDENTS.subject(&i.env, &i.service).as_str().to_owned(), p)
        },
        {
            let p = sample(arb::signed_approval().prop_map(Inbound::Approved).boxed());
            let Inbound::Approved(a) = &p else { unreachable!() };
            (subject::APPROVED.subject(&a.claims.env, &a.claims.service).as_str().to_owned(), p)
        },
        {
            let p = sample(arb::proof_record().prop_map(Inbound::Proof).boxed());
            let Inbound::Proof(r) = &p else { unreachable!() };
            (subject::PROOF.subject(&r.agent, &r.instance).as_str().to_owned(), p)
        },
    ];
    for (subject, expected) in cases {
        let bytes = match &expected {
            Inbound::Incident(p) => {
                Outgoing::new(&subject::INCIDENTS.subject(&p.env, &p.service), p).unwrap().payload
            }
            Inbound::Approved(p) => {
                Outgoing::new(&subject::APPROVED.subject(&p.claims.env, &p.claims.service), p)
                    .unwrap()
                    .payload
            }
            Inbound::Proof(p) => {
                Outgoing::new(&subject::PROOF.subject(&p.agent, &p.instance), p).unwrap().payload
            }
            _ => unreachable!(),
        };
        // Random values may be out of range; routing and decoding must still agree on the type.
        match decode_inbound(&subject, None, &bytes, &Limits { max_payload: 1 << 20 }) {
            Ok(got) => assert_eq!(got, expected, "{subject}"),
            Err(DecodeError::Invalid(_)) => {}
            Err(e) => panic!("{subject}: {e}"),
        }
    }
    for family in subject::FAMILIES {
        let probe = family
            .template()
            .replace("{env}", "prod")
            .replace("{service}", "api")
            .replace("{agent}", "a")
            .replace("{instance}", "0");
        let err = decode_inbound(&probe, None, b"\x80", &Limits::DEFAULT);
        let routed = !matches!(err, Err(DecodeError::BadSubject { .. }));
        let consumed = family.stream.is_some()
            || family.prefix == "cn.negotiate"
            || family.prefix == "cn.heartbeat";
        assert_eq!(routed, consumed, "{}", family.template());
    }
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), msgpack in any::<bool>()) {
        let ct = msgpack.then_some("application/msgpack");
        let _ = decode_inbound(METRIC_SUBJECT, ct, &bytes, &Limits::DEFAULT);
        let _ = decode_inbound("cn.actions.approved.prod.api", ct, &bytes, &Limits::DEFAULT);
    }

    #[test]
    fn out_of_range_values_are_rejected_with_the_field(
        field in prop::sample::select(vec!["error_rate", "cpu_percent", "memory_percent", "p95_latency_ms", "p99_latency_ms", "qps"]),
        over in prop_oneof![-1e12..-0.001f64, 100.001..1e6f64],
    ) {
        let mut v = good_metric();
        let value = if field == "error_rate" && over > 0.0 { 1.0 + over / 1e6 } else if field.ends_with("_ms") && over > 0.0 { 86_400_001.0 + over } else if field == "qps" && over > 0.0 { 1e9 + over } else { over };
        v[field] = json!(value);
        let err = decode_metric(&v).unwrap_err();
        prop_assert_eq!(err.reason(), RejectReason::OutOfRange);
        prop_assert!(err.to_string().starts_with(&format!("{field} = ")), "{}", err);
    }

    #[test]
    fn wrong_types_are_rejected_with_the_field(
        field in prop::sample::select(vec!["error_rate", "cpu_percent", "restarts", "crash_looping", "variant", "env", "timestamp"]),
        wrong in prop_oneof![Just(json!([1])), Just(json!({"a": 1})), Just(json!(-3.5)), Just(json!(true))],
    ) {
        let mut v = good_metric();
        v[field] = wrong.clone();
        // Some wrong values happen to be the right type for some fields (a bool for crash_looping).
        prop_assume!(!(field == "crash_looping" && wrong.is_boolean()));
        prop_assume!(!(matches!(field, "error_rate" | "cpu_percent") && wrong.is_number()));
        let err = decode_metric(&v).unwrap_err();
        prop_assert!(matches!(err.reason(), RejectReason::InvalidField | RejectReason::OutOfRange), "{}", err);
        prop_assert!(err.to_string().starts_with(field), "{}", err);
    }

    #[test]
    fn payloads_over_the_limit_are_rejected(extra in 0usize..4096, limit in 256usize..8192) {
        let body = vec![b' '; limit + 1 + extra];
        let err = decode_inbound(METRIC_SUBJECT, None, &body, &Limits { max_payload: limit }).unwrap_err();
        prop_assert_eq!(err, DecodeError::TooLarge { size: limit + 1 + extra, limit });
    }

    #[test]
    fn subjects_with_invalid_tokens_are_rejected(
        bad in prop_oneof![
            Just(String::new()), "[a-z]{1,5}[.*> A-Z_][a-z]{0,5}", "[a-z]{64,80}",
        ],
        at_service in any::<bool>(),
    ) {
        let subject = if at_service { format!("cn.events.metric.prod.{bad}") } else { format!("cn.events.metric.{bad}.payments-api") };
        let err = decode_inbound(&subject, None, good_metric().to_string().as_bytes(), &Limits::DEFAULT).unwrap_err();
        prop_assert_eq!(err.reason(), RejectReason::InvalidSubject);
    }

    #[test]
    fn valid_generated_samples_decode_through_their_subject(mut m in arb::metric_sample()) {
        // Clamp the random measurements into range so the sample is valid.
        m.error_rate = m.error_rate.map(|x| x.abs().fract());
        for f in [&mut m.p95_latency_ms, &mut m.p99_latency_ms] { *f = f.map(|x| x.abs() % 86_400_000.0); }
        for f in [&mut m.cpu_percent, &mut m.memory_percent] { *f = f.map(|x| x.abs() % 100.0); }
        m.qps = m.qps.map(|x| x.abs() % 1e9);
        m.source = m.source.map(|s| s.chars().take(100).collect());
        let out = Outgoing::new(&subject::METRIC_EVENTS.subject(&m.env, &m.service), &m).unwrap();
        // Generated times reach 2199; arriving just after them, none is ahead of the clock.
        let got = decode_inbound_at(&out.subject, Some(out.encoding.content_type()), &out.payload, &Limits::DEFAULT, m.timestamp.plus(std::time::Duration::from_secs(1))).unwrap();
        prop_assert_eq!(got, Inbound::Metric(m));
    }
}

#[test]
fn deeply_nested_input_is_rejected_not_a_crash() {
    // An unknown field holding 5000 nested arrays (MessagePack: 0x91 = array of one).
    let mut body = vec![0x82]; // map of 2
    body.extend(rmp_serde::to_vec(&"service").unwrap());
    body.extend(rmp_serde::to_vec(&"api").unwrap());
    body.extend(rmp_serde::to_vec(&"junk").unwrap());
    body.extend(std::iter::repeat_n(0x91, 5000));
    body.push(0xc0);
    let err = decode_inbound(METRIC_SUBJECT, Some("application/msgpack"), &body, &Limits::DEFAULT)
        .unwrap_err();
    assert_eq!(err.reason(), RejectReason::Malformed, "{err}");
    // serde_json skips unknown values without recursing and caps nesting of known ones at 128.
    let json = format!("{{\"junk\": {}{}}}", "[".repeat(5000), "]".repeat(5000));
    let err = decode_inbound(METRIC_SUBJECT, None, json.as_bytes(), &Limits::DEFAULT).unwrap_err();
    assert_eq!(err.to_string(), "payload: missing field `service`");
    let json = format!("{{\"service\": {}{}}}", "[".repeat(5000), "]".repeat(5000));
    let err = decode_inbound(METRIC_SUBJECT, None, json.as_bytes(), &Limits::DEFAULT).unwrap_err();
    assert!(matches!(err.reason(), RejectReason::Malformed | RejectReason::InvalidField), "{err}");
}

#[test]
fn decode_of_a_known_type_validates() {
    let r: Result<ProofRecord, _> = decode(Encoding::Json, b"{\"v\":2}", &Limits::DEFAULT);
    assert!(r.is_err());
}

#[test]
fn an_event_time_ahead_of_the_arrival_clock_beyond_the_skew_is_rejected_as_out_of_order() {
    let clock = crate::Timestamp::now();
    let at = |ahead: std::time::Duration| {
        let body = json!({"service": "payments-api", "env": "prod", "version": "1.2.3", "status": "succeeded", "timestamp": clock.plus(ahead).to_string()});
        decode_inbound_at(
            "cn.events.deploy.prod.payments-api",
            None,
            body.to_string().as_bytes(),
            &Limits::DEFAULT,
            clock,
        )
    };
    assert!(at(MAX_CLOCK_SKEW).is_ok(), "within the skew");
    let err = at(MAX_CLOCK_SKEW + std::time::Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.reason(), RejectReason::OutOfOrder);
    assert!(err.to_string().contains("ahead of the clock at arrival"), "{err}");
}

#[test]
fn a_version_with_a_bidi_override_or_control_character_is_rejected_naming_the_field() {
    for (field, value) in [
        ("previous_version", "1.14.2\u{202e}"),
        ("version", "1.15.0\u{1b}[2J"),
        ("commit_sha", "abc\ndef"),
    ] {
        let mut body = json!({"service": "payments-api", "env": "prod", "version": "1.15.0", "status": "failed", "timestamp": crate::Timestamp::now().to_string()});
        body[field] = json!(value);
        let err = decode_inbound(
            "cn.events.deploy.prod.payments-api",
            None,
            body.to_string().as_bytes(),
            &Limits::DEFAULT,
        )
        .unwrap_err();
        assert_eq!(err.reason(), RejectReason::InvalidField, "{field}: {err}");
        assert!(err.to_string().contains(field), "{err}");
    }
}

const BATCH_SUBJECT: &str = "cn.events.metric-batch.prod.payments-api";

fn decode_batch(v: &Value, content_type: Option<&str>) -> Result<Inbound, DecodeError> {
    let bytes = match content_type {
        Some("application/msgpack") => rmp_serde::to_vec_named(v).unwrap(),
        _ => v.to_string().into_bytes(),
    };
    decode_inbound(BATCH_SUBJECT, content_type, &bytes, &Limits::DEFAULT)
}

fn metric_at(second: u32) -> Value {
    let mut m = good_metric();
    m["timestamp"] = json!(format!("2026-02-20T17:01:{second:02}Z"));
    m
}

#[test]
fn a_metric_batch_decodes_in_json_and_msgpack_with_its_samples_in_order() {
    let batch = json!({"samples": [metric_at(1), metric_at(2), {"service":"payments-api","env":"prod","timestamp":"2026-02-20T17:01:03Z"}]});
    for ct in [None, Some("application/json"), Some("application/msgpack")] {
        let Inbound::MetricBatch(b) = decode_batch(&batch, ct).unwrap() else {
            panic!("not a batch")
        };
        let seconds: Vec<String> = b.samples.iter().map(|m| m.timestamp.to_string()).collect();
        assert_eq!(seconds.len(), 3, "{ct:?}");
        assert!(seconds[0] < seconds[1] && seconds[1] < seconds[2], "{seconds:?}");
        assert_eq!(b.samples[2].error_rate, None, "every measurement stays optional");
    }
}

#[test]
fn a_bad_sample_rejects_the_batch_naming_its_place_and_keeping_its_reason() {
    let mut bad = metric_at(2);
    bad["error_rate"] = json!(2.5);
    let err = decode_batch(&json!({"samples": [metric_at(1), bad]}), None).unwrap_err();
    assert_eq!(err.reason(), RejectReason::OutOfRange);
    assert_eq!(err.to_string(), "samples[1].error_rate = 2.5 is out of range (allowed: 0..=1)");

    let mut other = metric_at(2);
    other["service"] = json!("checkout");
    let err = decode_batch(&json!({"samples": [metric_at(1), other]}), None).unwrap_err();
    assert_eq!(err.reason(), RejectReason::InvalidField);
    assert!(err.to_string().starts_with("samples[1].service: is \"checkout\""), "{err}");

    let mut wrong_type = metric_at(2);
    wrong_type["cpu_percent"] = json!("high");
    let err = decode_batch(&json!({"samples": [metric_at(1), wrong_type]}), None).unwrap_err();
    assert_eq!(err.reason(), RejectReason::InvalidField);
    assert!(err.to_string().starts_with("samples[1].cpu_percent:"), "{err}");
}

#[test]
fn a_batch_must_match_its_subject_hold_samples_and_not_too_many() {
    let elsewhere = decode_inbound(
        "cn.events.metric-batch.prod.checkout",
        None,
        json!({"samples": [metric_at(1)]}).to_string().as_bytes(),
        &Limits::DEFAULT,
    )
    .unwrap_err();
    assert_eq!(elsewhere.reason(), RejectReason::ScopeMismatch);

    let empty = decode_batch(&json!({"samples": []}), None).unwrap_err();
    assert_eq!(empty.to_string(), "samples must not be empty");
    assert_eq!(decode_batch(&json!({}), None).unwrap_err().reason(), RejectReason::InvalidField);
    assert_eq!(
        decode_batch(&json!([metric_at(1)]), None).unwrap_err().reason(),
        RejectReason::InvalidField
    );

    let minimal = json!({"service":"payments-api","env":"prod","timestamp":"2026-02-20T17:01:00Z"});
    let many = json!({"samples": vec![minimal; MAX_BATCH_SAMPLES + 1]});
    let err = decode_inbound(
        BATCH_SUBJECT,
        Some("application/msgpack"),
        &rmp_serde::to_vec_named(&many).unwrap(),
        &Limits::DEFAULT,
    )
    .unwrap_err();
    assert_eq!(err.reason(), RejectReason::FieldTooLarge, "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "samples has {} items; at most {MAX_BATCH_SAMPLES} are allowed",
            MAX_BATCH_SAMPLES + 1
        )
    );
}

#[test]
fn a_batch_with_one_sample_ahead_of_the_clock_is_rejected_as_out_of_order() {
    let clock: crate::Timestamp = "2026-02-20T17:01:00Z".parse().unwrap();
    let mut ahead = metric_at(0);
    ahead["timestamp"] = json!("2026-02-20T17:05:00Z");
    let bytes = json!({"samples": [metric_at(0), ahead]}).to_string();
    let err = decode_inbound_at(BATCH_SUBJECT, None, bytes.as_bytes(), &Limits::DEFAULT, clock)
        .unwrap_err();
    assert_eq!(err.reason(), RejectReason::OutOfOrder);
}

proptest! {
    #[test]
    fn metric_batches_round_trip_through_their_subject(mut samples in proptest::collection::vec(arb::metric_sample(), 1..20)) {
        // One service, values clamped into range, as in the single-sample property.
        let (env, service) = (samples[0].env.clone(), samples[0].service.clone());
        for m in &mut samples {
            m.env = env.clone();
            m.service = service.clone();
            m.error_rate = m.error_rate.map(|x| x.abs().fract());
            for f in [&mut m.p95_latency_ms, &mut m.p99_latency_ms] { *f = f.map(|x| x.abs() % 86_400_000.0); }
            for f in [&mut m.cpu_percent, &mut m.memory_percent] { *f = f.map(|x| x.abs() % 100.0); }
            m.qps = m.qps.map(|x| x.abs() % 1e9);
            m.source = m.source.take().map(|s| s.chars().take(100).collect());
        }
        let batch = MetricBatch { samples };
        round_trips(&batch)?;
        let out = Outgoing::new(&subject::METRIC_BATCHES.subject(&env, &service), &batch).unwrap();
        let clock = batch.newest().unwrap().plus(std::time::Duration::from_secs(1));
        if out.payload.len() <= Limits::DEFAULT.max_payload {
            let got = decode_inbound_at(&out.subject, Some(out.encoding.content_type()), &out.payload, &Limits::DEFAULT, clock).unwrap();
            prop_assert_eq!(got, Inbound::MetricBatch(batch));
        }
    }
}

#[test]
fn a_stored_subject_with_the_servers_partition_token_decodes_and_a_wrong_token_is_refused() {
    let p = crate::partition::of_service("payments-api");
    let body = good_metric().to_string();
    let mapped = format!("{METRIC_SUBJECT}.{p}");
    let got = decode_inbound(&mapped, None, body.as_bytes(), &Limits::DEFAULT);
    assert!(matches!(got, Ok(Inbound::Metric(_))), "{got:?}");
    let wrong = format!("{METRIC_SUBJECT}.{}", (p + 1) % crate::partition::PARTITIONS);
    let e = decode_inbound(&wrong, None, body.as_bytes(), &Limits::DEFAULT).unwrap_err();
    assert_eq!(e.reason(), RejectReason::InvalidSubject);
    assert!(e.to_string().contains("publish to cn.events.metric.prod.payments-api"), "{e}");
    // Not a token the server writes: a malformed subject, as before.
    let e = decode_inbound(&format!("{METRIC_SUBJECT}.x"), None, body.as_bytes(), &Limits::DEFAULT)
        .unwrap_err();
    assert_eq!(e.reason(), RejectReason::InvalidSubject);
}
