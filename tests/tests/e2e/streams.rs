//! Stream and bucket settings follow the configuration, and a size limit is
//! reported, never a silent drop: an existing
//! stream is updated at start (limits, discard policy, replicas), what NATS
//! cannot change is an error naming it, and a full events stream makes the
//! ingress answer 503 (Lark retries) while the gauges and `--check` show why.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::config::{NatsSettings, Settings};
use common::topology::Topology;
use lark_bridge_tests::eventually::{eventually, within_every};
use lark_bridge_tests::harness::{config_toml, delete_namespace, nats_url, Bridge, Options};
use lark_bridge_tests::lark_events::random_hex;

use crate::cluster::NatsCluster;
use crate::procs::ProcBridge;

async fn shared_js() -> jetstream::Context {
    jetstream::new(async_nats::connect(nats_url()).await.expect("NATS runs for the tests"))
}

/// The events stream as the release before this one declared it: no size
/// limit, old messages dropped after 7 days.
fn as_before(t: &Topology) -> stream::Config {
    stream::Config {
        max_bytes: -1,
        max_age: Duration::from_secs(7 * 24 * 3600),
        discard: stream::DiscardPolicy::Old,
        ..t.events_stream_config()
    }
}

#[tokio::test]
async fn an_existing_stream_is_updated_to_the_configuration_at_start() {
    let js = shared_js().await;
    let ns = format!("s{}", random_hex(10));
    let old = Topology::new(&NatsSettings { namespace: ns.clone(), ..Default::default() });
    js.create_stream(as_before(&old)).await.expect("the old stream");
    js.publish(old.event_subject("support", "waiting"), "work from before".into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    let b = Bridge::start_with(Options {
        relays: 0,
        responders: 0,
        env: vec![
            ("LARK_BRIDGE__NATS__NAMESPACE", ns.clone()),
            ("LARK_BRIDGE__NATS__EVENTS_MAX_BYTES", "2097152".into()),
        ],
        ..Options::default()
    })
    .await;
    let mut s = js.get_stream(b.topology().events_stream()).await.expect("the stream");
    let info = s.info().await.expect("stream info");
    assert_eq!(info.config.max_bytes, 2_097_152, "the size limit of the configuration");
    assert_eq!(info.config.discard, stream::DiscardPolicy::New, "full refuses instead of dropping");
    assert!(info.config.max_age.is_zero(), "unhandled work no longer expires: {:?}", info.config.max_age);
    assert_eq!(info.state.messages, 1, "the work already stored is kept");
    b.stop().await;
}

#[tokio::test]
async fn a_setting_nats_cannot_change_is_an_error_naming_it_and_how_to_apply_it() {
    let js = shared_js().await;
    let t = Topology::new(&NatsSettings { namespace: format!("s{}", random_hex(10)), ..Default::default() });
    js.create_stream(stream::Config { retention: stream::RetentionPolicy::Limits, ..t.events_stream_config() })
        .await
        .expect("a stream with another retention");
    let e = t.ensure_streams(&js).await.expect_err("retention cannot change in place").to_string();
    delete_namespace(&js, &t).await;
    assert!(e.contains(&t.events_stream()) && e.contains("retention limits -> workqueue"), "{e}");
    assert!(e.contains("nats stream rm"), "says how to apply it: {e}");
}

#[tokio::test]
async fn a_limit_below_what_a_stream_holds_is_refused_instead_of_dropping_work() {
    let js = shared_js().await;
    let ns = format!("s{}", random_hex(10));
    let old = Topology::new(&NatsSettings { namespace: ns.clone(), ..Default::default() });
    js.create_stream(as_before(&old)).await.expect("the old stream");
    for i in 0..3 {
        let body = format!("work {i} {}", "x".repeat(1000));
        js.publish(old.event_subject("support", "waiting"), body.into()).await.expect("publish").await.expect("stored");
    }
    let small = Topology::new(&NatsSettings { namespace: ns, events_max_bytes: 1024, ..Default::default() });
    let e = small.ensure_streams(&js).await.expect_err("the limit would drop work");
    assert!(e.is_permanent(), "the start stops on it: {e}");
    let text = e.to_string();
    let mut s = js.get_stream(small.events_stream()).await.expect("stream");
    let state = s.info().await.expect("info").state.clone();
    delete_namespace(&js, &small).await;
    assert!(text.contains("would drop") && text.contains("Raise the limit"), "{text}");
    assert_eq!(state.messages, 3, "nothing was dropped");
}

/// The value of a gauge with `stream="{stream}"` in Prometheus text.
fn gauge(metrics: &str, name: &str, stream: &str) -> Option<f64> {
    let prefix = format!("{name}{{stream=\"{stream}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_full_events_stream_makes_ingress_answer_503_and_reports_it() {
    const LIMIT: u64 = 8 * 1024;
    // Only the ingress: nothing drains the events stream.
    let b = Bridge::start_with(Options {
        relays: 0,
        responders: 0,
        env: vec![("LARK_BRIDGE__NATS__EVENTS_MAX_BYTES", LIMIT.to_string())],
        ..Options::default()
    })
    .await;
    let stream = b.topology().events_stream();
    let (mut accepted, mut refused) = (0u64, 0);
    for i in 0..100 {
        let event = b.events().p2p_text("oc_full", "ou_full", &format!("question {i} {}", "x".repeat(200)));
        let resp = b.deliver(&event).await;
        match resp.status().as_u16() {
            200 => accepted += 1,
            503 => {
                refused += 1;
                let body = resp.text().await.unwrap_or_default();
                assert!(body.contains("maximum bytes") || body.contains("refused"), "{body}");
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(refused, 1, "a full stream refuses the event with 503 (Lark retries), after {accepted} accepted");
    assert!(accepted > 0);
    let mut s = b.js.get_stream(&stream).await.expect("stream");
    let state = s.info().await.expect("info").state.clone();
    assert_eq!(state.messages, accepted, "every accepted event is still there: none was dropped");
    assert_eq!(state.first_sequence, 1, "the oldest event is still there");

    // The gauges show it (sampled every few seconds).
    let metrics_url = b.url("/metrics");
    let last = eventually(Duration::from_secs(30), "the stream's bytes gauge near its limit", || async {
        let last = b.http.get(&metrics_url).send().await.expect("metrics").text().await.expect("text");
        gauge(&last, "lark_bridge_stream_bytes", &stream).is_some_and(|v| v >= 0.8 * LIMIT as f64).then_some(last)
    })
    .await;
    assert_eq!(gauge(&last, "lark_bridge_stream_limit_bytes", &stream), Some(LIMIT as f64), "{last}");
    let bytes = gauge(&last, "lark_bridge_stream_bytes", &stream).expect("the bytes gauge");
    assert!(bytes >= 0.8 * LIMIT as f64, "{bytes} of {LIMIT}");
    assert_eq!(gauge(&last, "lark_bridge_stream_messages", &stream), Some(accepted as f64));

    // And `--check` says which stream, and what to do.
    let config = tempfile::NamedTempFile::new().expect("temp file");
    let toml =
        config_toml(&nats_url(), &b.settings.nats.namespace, "http://127.0.0.1:1", "http://127.0.0.1:1/api", true);
    std::fs::write(config.path(), toml).expect("config");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lb-ingress"))
        .arg("--config")
        .arg(config.path())
        .arg("--check")
        .env("LARK_BRIDGE__NATS__EVENTS_MAX_BYTES", LIMIT.to_string())
        .output()
        .await
        .expect("ingress --check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("[FAIL] stream {stream}")), "{text}");
    assert!(text.contains("raise nats.events_max_bytes"), "{text}");
    b.stop().await;
}

#[tokio::test]
async fn moving_from_one_to_three_nats_replicas_updates_every_stream_and_bucket_at_start() {
    let cluster = NatsCluster::start().await;
    let ns = format!("s{}", random_hex(10));
    // What a deployment made with `replicas = 1`.
    let one = Settings::from_toml_with_env(
        &config_toml(&cluster.url(), &ns, "http://127.0.0.1:1", "http://127.0.0.1:1/api", true),
        &Default::default(),
    )
    .expect("config");
    let t1 = Topology::new(&one.nats);
    let servers = common::nats::server_addrs(&cluster.url()).expect("urls");
    let js = jetstream::new(async_nats::connect(servers).await.expect("the cluster"));
    t1.ensure_streams(&js).await.expect("R1 streams");
    for kv in [t1.sessions(&js).await, t1.handled(&js).await, t1.status(&js).await, t1.attempts(&js).await] {
        kv.expect("R1 bucket");
    }
    for c in t1.all_configs() {
        if let Ok(mut s) = js.get_stream(&c.name).await {
            assert_eq!(s.info().await.expect("info").config.num_replicas, 1, "{}", c.name);
        }
    }

    // The services start with `replicas = 3`.
    let b = ProcBridge::start_on(
        &cluster.url(),
        vec![("LARK_BRIDGE__NATS__NAMESPACE".into(), ns.clone()), ("LARK_BRIDGE__NATS__REPLICAS".into(), "3".into())],
    )
    .await;
    // Readiness may answer before the relay opened its buckets: wait for them.
    let all = Topology::new(&b.settings.nats).all_configs();
    let read_replicas = || async {
        let mut replicas = Vec::new();
        for c in &all {
            if let Ok(mut s) = js.get_stream(&c.name).await {
                replicas.push((c.name.clone(), s.info().await.map(|i| i.config.num_replicas).unwrap_or(0)));
            }
        }
        replicas
    };
    let settled = within_every(Duration::from_secs(30), Duration::from_millis(100), || async {
        let replicas = read_replicas().await;
        (replicas.len() >= 7 && replicas.iter().all(|(_, n)| *n == 3)).then_some(replicas)
    })
    .await;
    let replicas = match settled {
        Some(replicas) => replicas,
        None => read_replicas().await,
    };
    for (name, n) in &replicas {
        assert_eq!(*n, 3, "{name} has 3 replicas now: {replicas:?}");
    }
    let checked = replicas.len();
    assert!(checked >= 7, "the streams and the buckets: {checked}");
    b.stop().await;
}
