//! The long connection: the ingress dials the
//! fake Lark's WebSocket, and every event pushed on it is stored in
//! JetStream before it is acknowledged; what cannot be stored is not
//! acknowledged with 200, so the fake (as Lark) pushes it again, and the
//! re-push is answered once. Garbage is acknowledged as handled and never
//! published; refusals back off; SIGTERM closes the connection cleanly.
//!
//! Waits are bounded (for liveness), never asserted as speeds.

use std::time::Duration;

use lark_bridge_tests::eventually::{eventually, until};
use lark_bridge_tests::fake_lark::long_connection::{ClientConfig, Refusal};
use lark_bridge_tests::harness::{Bridge, Options, APP_ID};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "lc-admin-token";

fn options() -> Options {
    Options { long_connection: true, relays: 0, responders: 0, ..Default::default() }
}

/// The bridge with its channel on the long connection, once connected.
async fn connected(opts: Options, config: ClientConfig) -> Bridge {
    let mut b = Bridge::start_with(Options { ingress: false, ..opts.clone() }).await;
    b.lark.long_connection().set_client_config(config);
    if opts.ingress {
        b.spawn_ingress().await;
        let want = connections_wanted(&opts);
        assert_eq!(b.lark.long_connection().wait_for_connections(APP_ID, want, WAIT).await, want, "connected");
    }
    b
}

fn connections_wanted(opts: &Options) -> usize {
    opts.env
        .iter()
        .find(|(k, _)| *k == "LARK_BRIDGE__INGRESS__LONG_CONNECTIONS_PER_CHANNEL")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1)
}

fn event(b: &Bridge, text: &str) -> Value {
    b.events().p2p_text("oc_lc", "ou_lc_user", text)
}

async fn events_stored(b: &Bridge) -> u64 {
    b.stream_len(&b.topology().events_stream()).await
}

/// The fake's count of clean closes, once it reaches `n` (or after a bounded wait).
async fn clean_closes(lc: &lark_bridge_tests::fake_lark::long_connection::LongConnection, n: usize) -> usize {
    until(WAIT, &format!("{n} clean closes"), || async { lc.clean_closes() >= n }).await;
    lc.clean_closes()
}

async fn acked_ok(b: &Bridge, message_id: &str) -> lark_bridge_tests::fake_lark::long_connection::Ack {
    b.lark.long_connection().wait_for_ack(message_id, 200, WAIT).await.expect("acknowledged with code 200")
}

#[tokio::test]
async fn an_event_is_stored_acknowledged_and_answered() {
    let env = vec![("LARK_BRIDGE__INGRESS__ADMIN_TOKEN", TOKEN.to_owned())];
    let b = connected(Options { long_connection: true, env, ..Default::default() }, ClientConfig::default()).await;
    let id = b.lark.push_event(&event(&b, "hello over the long connection"), 1).expect("pushed");
    let ack = acked_ok(&b, &id).await;
    assert_eq!(ack.payload, json!({ "code": 200 }));
    assert!(ack.biz_rt_ms.is_some(), "biz_rt header: {:?}", ack.headers);
    assert!(ack.headers.iter().any(|(k, v)| k == "message_id" && v == &id), "the frame's own headers come back");
    let replies = b.lark.wait_for_messages(1, WAIT).await;
    assert_eq!(replies.len(), 1, "the bot answered once");
    assert!(replies[0].text().contains("hello over the long connection"), "{}", replies[0].text());
    assert_eq!(b.lark.long_connection().acks_of(&id).len(), 1);

    // A card action frame is answered too (never left for the user's error
    // 200340): a card that is not one of the bridge's questions gets a toast saying so.
    let card = json!({
        "schema": "2.0",
        "header": { "event_id": "ev_card_1", "event_type": "card.action.trigger", "app_id": APP_ID, "token": "" },
        "event": { "operator": { "open_id": "ou_lc_user" }, "action": { "value": { "k": "v" }, "tag": "button" } }
    });
    let card_id = b.lark.long_connection().push(APP_ID, card.to_string().into_bytes(), "card", 1).expect("pushed");
    let answer = acked_ok(&b, &card_id).await.payload;
    assert_eq!(answer["code"], 200);
    let data = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        answer["data"].as_str().expect("the answer travels in data"),
    )
    .expect("base64");
    let toast: Value = serde_json::from_slice(&data).expect("JSON");
    assert!(toast["toast"]["content"].as_str().is_some_and(|t| t.contains("not one of")), "{toast}");

    // The Request URL of a long-connection channel without secrets refuses callbacks.
    let resp = b.deliver(&event(&b, "by webhook")).await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap_or_default().contains("long_connection"));

    // The status page shows the connection and its last event.
    let status: Value = eventually(Duration::from_secs(5), "the status page shows the last event", || async {
        let status: Value = b
            .http
            .get(b.url("/status.json"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("json");
        status[0]["long_connection"]["last_event_at"].is_string().then_some(status)
    })
    .await;
    assert_eq!(status[0]["long_connection"]["up"], 1, "{status}");
    assert!(status[0]["long_connection"]["last_event_at"].is_string(), "{status}");
    assert_eq!(status[0]["mode"], "long_connection", "{status}");
    let page = b.http.get(b.url("/status")).bearer_auth(TOKEN).send().await.expect("page").text().await.expect("text");
    assert!(page.contains("long connection: <span data-connections>1 of 1 up</span>"), "{page}");
    let metrics = b.http.get(b.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for name in [
        "lark_bridge_ingress_long_connections_up",
        "lark_bridge_ingress_long_connection_frames_total",
        "lark_bridge_ingress_long_connection_acks_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    b.stop().await;
}

#[tokio::test]
async fn fragments_are_joined_and_only_the_completing_frame_is_acknowledged() {
    let env = vec![("LARK_BRIDGE__INGRESS__LONG_CONNECTIONS_PER_CHANNEL", "2".to_owned())];
    let b = connected(Options { env, ..options() }, ClientConfig::default()).await;
    let text = "a long question, ".repeat(200);
    let e = event(&b, &text);
    let id = b.lark.push_event(&e, 3).expect("pushed");
    acked_ok(&b, &id).await;
    assert_eq!(b.lark.long_connection().acks_of(&id).len(), 1, "one ack, for the completing fragment");
    assert_eq!(events_stored(&b).await, 1);
    let stored = b.js.get_stream(b.topology().events_stream()).await.expect("stream");
    let msg = stored.get_raw_message(1).await.expect("stored message");
    let payload: Value = serde_json::from_slice(&msg.payload).expect("json");
    assert_eq!(payload, e, "joined in seq order");
    b.stop().await;
}

#[tokio::test]
async fn pings_are_sent_and_a_silent_connection_is_replaced() {
    let config = ClientConfig { ping_interval: 1, ..Default::default() };
    let b = connected(options(), config).await;
    let lc = b.lark.long_connection();
    until(WAIT, "pings every PingInterval", || async { lc.pings() >= 2 }).await;
    // Lark goes silent: after two ping intervals the client dials again.
    lc.set_answer_pings(false);
    let before = lc.handshakes();
    until(WAIT, "a silent connection is replaced", || async { lc.handshakes() > before }).await;
    lc.set_answer_pings(true);
    assert_eq!(lc.wait_for_connections(APP_ID, 1, WAIT).await, 1);
    let id = b.lark.push_event(&event(&b, "after silence"), 1).expect("pushed");
    acked_ok(&b, &id).await;
    b.stop().await;
}

#[tokio::test]
async fn the_connection_comes_back_after_lark_drops_it() {
    let b = connected(options(), ClientConfig::default()).await;
    let lc = b.lark.long_connection();
    lc.drop_connections();
    until(WAIT, "a second handshake", || async { lc.handshakes() >= 2 }).await;
    assert_eq!(lc.wait_for_connections(APP_ID, 1, WAIT).await, 1, "reconnected");
    assert!(lc.handshakes() >= 2);
    let id = b.lark.push_event(&event(&b, "after the drop"), 1).expect("pushed");
    acked_ok(&b, &id).await;
    assert_eq!(events_stored(&b).await, 1);
    b.stop().await;
}

/// NATS cannot store the event (the events stream is full): no 200, so the
/// fake pushes it again; once there is room the re-push is stored and
/// acknowledged, and a later re-push of the same event is answered without
/// a second copy.
#[tokio::test]
async fn an_event_is_acknowledged_only_once_stored_and_a_re_push_is_answered_once() {
    let env = vec![("LARK_BRIDGE__NATS__EVENTS_MAX_BYTES", "1024".to_owned())];
    let b = connected(Options { env, ..options() }, ClientConfig::default()).await;
    let lc = b.lark.long_connection();
    lc.set_repush_after(Some(Duration::from_millis(500)));
    let e = event(&b, &"too big for a 1 KB stream ".repeat(60));
    let id = b.lark.push_event(&e, 1).expect("pushed");
    let refused = lc.wait_for_ack(&id, 500, WAIT).await.expect("answered 500: not stored");
    assert_eq!(refused.payload, json!({ "code": 500 }));
    assert!(lc.acks_of(&id).iter().all(|a| a.code != Some(200)), "no success before the store");
    assert_eq!(events_stored(&b).await, 0);

    // Room again: the next re-push is stored and acknowledged.
    let name = b.topology().events_stream();
    let mut stream = b.js.get_stream(&name).await.expect("stream");
    let mut config = stream.info().await.expect("info").config.clone();
    config.max_bytes = 1024 * 1024;
    b.js.update_stream(config).await.expect("stream updated");
    acked_ok(&b, &id).await;
    assert!(lc.pushes_of(&id) >= 2, "stored on a re-push");
    assert_eq!(events_stored(&b).await, 1);

    // Lark pushes the same event again (say the ack was lost): answered, not stored twice.
    let again = b.lark.push_event(&e, 1).expect("pushed");
    acked_ok(&b, &again).await;
    assert_eq!(events_stored(&b).await, 1, "de-duplicated");
    b.stop().await;
}

#[tokio::test]
async fn a_refused_handshake_backs_off_then_connects() {
    let mut b = connected(Options { ingress: false, ..options() }, ClientConfig::default()).await;
    b.lark.long_connection().refuse_next(vec![Refusal::too_many_connections(), Refusal::too_many_connections()]);
    b.spawn_ingress().await;
    let lc = b.lark.long_connection();
    assert_eq!(lc.wait_for_connections(APP_ID, 1, WAIT).await, 1, "connected once Lark accepts");
    assert_eq!(lc.refused_handshakes(), 2);
    let times = lc.handshake_times();
    assert_eq!(times.len(), 3, "no attempt beyond the refusals: {times:?}");
    // The waits after refusals are at least ReconnectInterval (1 s here), then double.
    assert!(times[1] - times[0] >= Duration::from_millis(900), "{:?}", times[1] - times[0]);
    assert!(times[2] - times[1] >= Duration::from_millis(1900), "{:?}", times[2] - times[1]);
    let metrics = b.http.get(b.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("reason=\"too_many_connections\""), "refusals counted");
    let id = b.lark.push_event(&event(&b, "after the refusals"), 1).expect("pushed");
    acked_ok(&b, &id).await;
    b.stop().await;
}

#[tokio::test]
async fn garbage_is_acknowledged_as_handled_and_never_published() {
    let b = connected(options(), ClientConfig::default()).await;
    let lc = b.lark.long_connection();
    assert!(lc.push_raw(APP_ID, b"\xff\xff\xff not a protobuf frame".to_vec()));
    let mut ids = Vec::new();
    ids.push(lc.push(APP_ID, b"not json at all".to_vec(), "event", 1).expect("pushed"));
    ids.push(lc.push(APP_ID, br#"{"uuid":"u1","event":{"type":"message"}}"#.to_vec(), "event", 1).expect("pushed"));
    let mut other_app = event(&b, "for another app");
    other_app["header"]["app_id"] = "cli_another_app".into();
    ids.push(lc.push(APP_ID, other_app.to_string().into_bytes(), "event", 1).expect("pushed"));
    for id in &ids {
        assert_eq!(acked_ok(&b, id).await.payload, json!({ "code": 200 }), "handled, so Lark does not push it again");
    }
    // The connection stayed up and still works.
    let id = b.lark.push_event(&event(&b, "a real one"), 1).expect("pushed");
    acked_ok(&b, &id).await;
    assert_eq!(lc.handshakes(), 1, "the same connection throughout");
    assert_eq!(events_stored(&b).await, 1, "only the real event was published");
    b.stop().await;
}

#[tokio::test]
async fn shutdown_closes_the_connection_cleanly() {
    let b = connected(Options { ingress: false, ..options() }, ClientConfig::default()).await;
    let app = ingress::Application::build(b.settings.clone()).await.expect("ingress starts");
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(stop.clone()));
    let lc = b.lark.long_connection();
    assert_eq!(lc.wait_for_connections(APP_ID, 1, WAIT).await, 1);
    let id = b.lark.push_event(&event(&b, "just before the shutdown"), 1).expect("pushed");
    stop.cancel();
    tokio::time::timeout(WAIT, task).await.expect("ingress stops").expect("task").expect("clean exit");
    assert_eq!(clean_closes(lc, 1).await, 1, "closed with a Close frame");
    assert_eq!(lc.connections(APP_ID), 0);
    // The event in flight was stored and acknowledged, or left unacknowledged
    // for Lark's re-push: never acknowledged without being stored.
    let stored = events_stored(&b).await;
    let acked = lc.acks_of(&id).iter().any(|a| a.code == Some(200));
    assert!(!acked || stored == 1, "acknowledged but not stored");
    b.stop().await;
}

/// `ingress --check` opens a connection with the channel's credentials and
/// closes it; a refusal fails the check with its fix. The URL's secrets never
/// show.
#[tokio::test]
async fn check_opens_and_closes_a_connection_and_names_the_fix_when_refused() {
    let b = connected(Options { ingress: false, ..options() }, ClientConfig::default()).await;
    let toml = lark_bridge_tests::harness::long_connection_toml(&lark_bridge_tests::harness::config_toml(
        &lark_bridge_tests::harness::nats_url(),
        &b.ns,
        &b.lark.base_url(),
        &b.fastgpt.base_url(),
        false,
    ));
    let config = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(config.path(), toml).expect("config");
    let check = || async {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lb-ingress"))
            .arg("--config")
            .arg(config.path())
            .arg("--check")
            .output()
            .await
            .expect("the binary runs");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let lc = b.lark.long_connection();
    let (code, out) = check().await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("opened and closed a long connection"), "{out}");
    assert!(!out.contains("ticket") && !out.contains("access_key"), "secrets of the URL shown: {out}");
    assert_eq!(lc.handshakes(), 1);

    lc.refuse_next(vec![Refusal::too_many_connections()]);
    let (code, out) = check().await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("too many long connections") && out.contains("long_connections_per_channel"), "{out}");
    b.stop().await;
}

/// The real binaries: a message over the long connection is answered; the
/// logs (tungstenite's trace level included) never show the URL's secrets;
/// SIGTERM closes the connection with a Close frame before the exit.
#[tokio::test]
async fn the_processes_answer_log_no_secret_and_close_on_sigterm() {
    use crate::procs::{ProcBridge, Service};
    let env = vec![
        ("LARK_BRIDGE__CHANNELS__SUPPORT__SUBSCRIPTION".to_owned(), "long_connection".to_owned()),
        ("RUST_LOG".to_owned(), "info,async_nats=warn,tungstenite=trace,tokio_tungstenite=trace".to_owned()),
    ];
    let mut b = ProcBridge::start(env).await;
    let lc = b.lark.long_connection().clone();
    assert_eq!(lc.wait_for_connections(APP_ID, 1, WAIT).await, 1, "connected");
    let e = b.events().p2p_text("oc_lc_proc", "ou_lc_proc", "hello from a process");
    let id = b.lark.push_event(&e, 1).expect("pushed");
    lc.wait_for_ack(&id, 200, WAIT).await.expect("acknowledged");
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1, "answered");
    b.terminate(Service::Ingress).await;
    assert_eq!(clean_closes(&lc, 1).await, 1, "closed with a Close frame on SIGTERM");
    let logs = b.raw_logs();
    assert!(logs.iter().any(|l| l.contains("long connection to Lark up")), "the connection is logged");
    for l in &logs {
        assert!(!l.contains("ticket=") && !l.contains("access_key="), "a secret of the URL in a log line: {l}");
    }
    b.stop().await;
}

/// `sandbox chat` talks to a long-connection channel: the Request URL refuses
/// the message, so the chat has the fake Lark push it over the connection.
#[tokio::test]
async fn the_sandbox_chat_talks_to_a_long_connection_channel() {
    use lark_bridge_tests::lark_events::ChatRef;
    use lark_bridge_tests::sandbox_chat::{LarkUser, Target, Timing};
    let b = connected(Options { long_connection: true, ..Default::default() }, ClientConfig::default()).await;
    let target = Target {
        ingress: b.events_url(),
        lark: b.lark.base_url(),
        encrypt_key: None,
        verification_token: None,
        app_id: APP_ID.to_owned(),
        bot_open_id: lark_bridge_tests::harness::BOT_OPEN_ID.to_owned(),
    };
    let mut user = LarkUser::connect(target).await.expect("the fake Lark answers");
    let p2p = ChatRef::P2p { chat_id: "oc_lc_sandbox".into() };
    let id = user.send(&p2p, "ou_lc_sandbox", "hi over the long connection").await.expect("sent");
    let timing = Timing { timeout: WAIT, ..Timing::default() };
    let replies = user.wait_for_replies(&id, timing).await.expect("replies").replies;
    assert_eq!(replies.len(), 1, "{replies:?}");
    b.stop().await;
}
