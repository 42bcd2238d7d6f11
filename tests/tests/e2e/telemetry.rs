//! Operators can follow one Lark message through all three services: one
//! trace id in the JSON logs of each, spans exported with OTLP, metrics that
//! count what happened, and no secret in any log line.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde_json::Value;

use crate::pipeline::WAIT;
use crate::procs::{ProcBridge, Service};
use lark_bridge_tests::eventually::until;
use lark_bridge_tests::harness::{APP_SECRET, ENCRYPT_KEY, FASTGPT_KEY, VERIFICATION_TOKEN};

/// trace ids of the log lines that mention `needle` anywhere.
fn trace_ids(lines: &[Value], needle: &str) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|l| l.to_string().contains(needle))
        .flat_map(|l| l["spans"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["trace_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn one_message_has_one_trace_id_in_all_three_services_and_no_secret_is_logged() {
    let b = ProcBridge::start(vec![]).await;
    let question = "a question nobody should find in the logs";
    let event = b.events().message_id("om_traced").p2p_text("oc_trace", "ou_t", question);
    assert_eq!(b.deliver(&event).await, Some(200));
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    let event_id = event["header"]["event_id"].as_str().expect("event id").to_owned();
    // Each process writes its log lines as it goes: wait until all three have.
    until(WAIT, "every service logged the message", || async {
        Service::ALL.iter().all(|s| {
            let key = if *s == Service::Ingress { event_id.as_str() } else { "om_traced" };
            !trace_ids(&b.logs(*s), key).is_empty()
        })
    })
    .await;

    let mut all = BTreeSet::new();
    for s in Service::ALL {
        let logs = b.logs(s);
        let ids = trace_ids(&logs, if s == Service::Ingress { &event_id } else { "om_traced" });
        assert!(!ids.is_empty(), "{} logged the message with a trace_id: {logs:#?}", s.name());
        all.extend(ids);
    }
    assert_eq!(all.len(), 1, "one trace across the services: {all:?}");
    let trace_id = all.into_iter().next().expect("one");
    assert_eq!(trace_id.len(), 32, "a W3C trace id: {trace_id}");

    // Secrets never appear; the question text is not logged at info level.
    let token = b.lark.tenant_tokens().into_iter().collect::<Vec<_>>();
    for line in b.raw_logs() {
        for secret in [APP_SECRET, ENCRYPT_KEY, FASTGPT_KEY, VERIFICATION_TOKEN, question] {
            assert!(!line.contains(secret), "{secret:?} in a log line: {line}");
        }
        for t in &token {
            assert!(!line.contains(t.as_str()), "a tenant token in a log line: {line}");
        }
    }
    b.stop().await;
}

#[tokio::test]
async fn spans_are_exported_with_otlp_and_metrics_count_the_traffic() {
    // An in-test OTLP/HTTP collector.
    let received: Arc<Mutex<Vec<Bytes>>> = Default::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().expect("collector").push(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let collector = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let b = ProcBridge::start(vec![("LARK_BRIDGE__TELEMETRY__OTLP_ENDPOINT".into(), collector)]).await;
    for i in 0..3 {
        let e = b.events().p2p_text(&format!("oc_m{i}"), "ou_m", "count me");
        assert_eq!(b.deliver(&e).await, Some(200));
    }
    let bad = b
        .lark
        .deliver(&format!("http://{}/lark/nope/events", b.addr(Service::Ingress)), &serde_json::json!({}), None)
        .await;
    assert_eq!(bad.expect("answer").status(), 404);
    assert_eq!(b.lark.wait_for_messages(3, WAIT).await.len(), 3);

    // Metrics, per process, after known traffic (the responder counts a
    // reply once Lark has taken it).
    let sent = r#"lark_bridge_replies_sent_total{channel="support",kind="answer"}"#;
    until(WAIT, "the responder counted the three replies", || async {
        parse_metrics(&b.metrics(Service::Responder).await).get(sent) == Some(&3.0)
    })
    .await;
    let ingress = parse_metrics(&b.metrics(Service::Ingress).await);
    assert_eq!(
        ingress.get(r#"lark_bridge_ingress_accepted_total{channel="support",event_type="im.message.receive_v1"}"#),
        Some(&3.0),
        "{ingress:?}"
    );
    assert_eq!(
        ingress.get(r#"lark_bridge_ingress_rejected_total{reason="unknown_channel"}"#),
        Some(&1.0),
        "{ingress:?}"
    );
    assert!(ingress.keys().any(|k| k.starts_with("lark_bridge_ingress_publish_seconds")), "{ingress:?}");
    let relay = parse_metrics(&b.metrics(Service::Relay).await);
    assert_eq!(
        relay.get(r#"lark_bridge_relay_replies_total{channel="support",kind="answer"}"#),
        Some(&3.0),
        "{relay:?}"
    );
    assert!(relay.keys().any(|k| k.starts_with("lark_bridge_fastgpt_seconds")), "{relay:?}");
    let responder = parse_metrics(&b.metrics(Service::Responder).await);
    assert_eq!(
        responder.get(r#"lark_bridge_replies_sent_total{channel="support",kind="answer"}"#),
        Some(&3.0),
        "{responder:?}"
    );
    assert!(responder.keys().any(|k| k.starts_with("lark_bridge_lark_send_seconds")), "{responder:?}");
    for (name, m) in [("relay", &relay), ("responder", &responder)] {
        assert!(m.keys().any(|k| k.starts_with("lark_bridge_consumer_pending")), "{name} reports its lag: {m:?}");
        assert!(m.keys().any(|k| k.starts_with("lark_bridge_in_flight")), "{name} reports work in flight: {m:?}");
    }

    // SIGTERM flushes the exporters.
    b.stop().await;
    let bodies = received.lock().expect("collector").clone();
    assert!(!bodies.is_empty(), "the collector received spans");
    let mut spans_by_service: HashMap<String, BTreeSet<String>> = HashMap::new();
    for body in bodies {
        let req = ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP protobuf");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans_by_service.entry(service.clone()).or_default().insert(span.name);
                }
            }
        }
    }
    let has = |svc: &str, span: &str| spans_by_service.iter().any(|(s, names)| s.contains(svc) && names.contains(span));
    assert!(has("lark-bridge-ingress", "ingress.callback"), "{spans_by_service:?}");
    assert!(has("lark-bridge-relay", "relay.event") && has("lark-bridge-relay", "fastgpt.ask"), "{spans_by_service:?}");
    assert!(
        has("lark-bridge-responder", "responder.reply") && has("lark-bridge-responder", "lark.send"),
        "{spans_by_service:?}"
    );
}

/// Prometheus text → `name{labels}` → value (labels as printed, sorted by the exporter).
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}
