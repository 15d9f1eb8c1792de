//! The console's OTLP export against a real fleet: a pipeline's `traceparent` comes back as a
//! span, received by an OTLP/HTTP endpoint of the test's own, with the trace's id and the span
//! id of the executed action's proof record.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::process::Command;
use std::time::Duration;

use bus_schema::proof::ProofKind;
use cn_tests::console::Console;
use cn_tests::fleet::{Fleet, binary};
use cn_tests::http_sink::HttpSink;
use cn_tests::scenario::{deploy, for_service, metric_at, pipeline_pub};
use serde_json::{Value, json};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Every span `collector` received so far, each with its resource's attributes, as OTLP JSON.
fn spans(collector: &HttpSink) -> Vec<(Value, Value)> {
    let mut spans = Vec::new();
    for request in collector.requests() {
        assert!(request.head.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{}", request.head);
        let content_type = request.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("application/json"), "{}", request.head);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        for resource_spans in body["resourceSpans"].as_array().unwrap() {
            let resource = resource_spans["resource"]["attributes"].clone();
            for scope_spans in resource_spans["scopeSpans"].as_array().unwrap() {
                for span in scope_spans["spans"].as_array().unwrap() {
                    spans.push((resource.clone(), span.clone()));
                }
            }
        }
    }
    spans
}

/// The string value of attribute `key` in an OTLP JSON attribute list.
fn attribute<'a>(attributes: &'a Value, key: &str) -> Option<&'a str> {
    let found = attributes.as_array()?.iter().find(|a| a["key"] == key)?;
    found["value"]["stringValue"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_traceparent_comes_back_as_the_executed_actions_span_over_otlp() {
    let fleet = Fleet::start().await.unwrap();
    let collector = HttpSink::start().unwrap();
    let endpoint = collector.url("");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""), // empty is unset
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", ""),
    ];
    let _console = Console::start(&fleet, "auditor", &[], &env).unwrap();

    let mut deployed = deploy("stage", "traced", "2.0.0", Some("1.9.0"), "succeeded");
    deployed["timestamp"] = metric_at("stage", "traced", -700, json!({}))["timestamp"].clone();
    pipeline_pub(&fleet, "cn.events.deploy.stage.traced", deployed).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01").as_str());
    let crash = metric_at("stage", "traced", -600, json!({"crash_looping": true, "restarts": 4}));
    let client = fleet.client_as("pipeline").await.unwrap();
    client
        .publish_with_headers("cn.events.metric.stage.traced", headers, crash.to_string().into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let records = fleet
        .records_until("the restart executed", |r| {
            !for_service(r, ProofKind::ActionExecuted, "traced").is_empty()
        })
        .await
        .unwrap();
    let executed = for_service(&records, ProofKind::ActionExecuted, "traced").remove(0);
    let traceparent = executed.traceparent.unwrap_or_else(|| panic!("untraced: {executed:#?}"));
    assert_eq!(traceparent.trace_id(), TRACE);

    let mut spans = Vec::new();
    for _ in 0..150 {
        spans = self::spans(&collector);
        if spans.iter().any(|(_, s)| s["name"] == "cn.action_executed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (resource, span) = spans
        .iter()
        .find(|(_, s)| s["name"] == "cn.action_executed")
        .unwrap_or_else(|| panic!("no cn.action_executed span after 15 s: {spans:#?}"));
    assert_eq!(span["traceId"], TRACE, "{span:#}");
    assert_eq!(span["spanId"], traceparent.parent_id().as_str(), "{span:#}");
    assert_eq!(attribute(resource, "service.name"), Some("chaos-negotiator"), "{resource:#}");
    assert_eq!(attribute(&span["attributes"], "cn.agent"), Some("executor"), "{span:#}");
    assert_eq!(attribute(&span["attributes"], "cn.service"), Some("traced"), "{span:#}");
    assert_eq!(attribute(&span["attributes"], "cn.action"), Some("restart"), "{span:#}");
    let at = executed.ts.unix_nanos().to_string();
    assert_eq!((&span["startTimeUnixNano"], &span["endTimeUnixNano"]), (&json!(at), &json!(at)));
    assert!(
        spans.iter().all(|(_, s)| s["traceId"] == TRACE),
        "only traced records become spans (the fleet's start is not): {spans:#?}"
    );
    let names: Vec<&str> = spans.iter().filter_map(|(_, s)| s["name"].as_str()).collect();
    for kind in ["cn.incident_opened", "cn.action_proposed", "cn.action_approved"] {
        assert!(names.contains(&kind), "{kind} in {names:?}");
    }
}

/// Only OTLP/HTTP is built in: protocol `grpc` stops the console at start, with a message
/// that names the variable, before it connects to anything.
#[test]
fn a_grpc_protocol_is_refused_at_start() {
    let out = Command::new(binary("cn-console").unwrap())
        .args(["--listen", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .env("NATS_URL", "nats://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\""), "{stderr}");
    assert!(stderr.contains("OTLP/HTTP only"), "{stderr}");
}
