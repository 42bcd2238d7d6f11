//! What an attacker can send the ingress, and what a hostile FastGPT answer can
//! put in a Lark message: each hole an adversarial test found has its test
//! here (README, "Security").

use std::time::Duration;

use common::lark::event::Callback;
use lark_bridge_tests::eventually::eventually;
use lark_bridge_tests::harness::{config_toml, nats_url, Bridge, Options, APP_ID, CHANNEL, VERIFICATION_TOKEN};
use lark_bridge_tests::lark_events::{random_hex, EventBuilder, SignedRequest};
use lark_bridge_tests::ports::free_port;
use lark_bridge_tests::readiness::readyz_becomes;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pipeline::WAIT;

/// Generous: the server's own limits in these tests are 1 to 3 s; this only
/// bounds how long a broken server keeps the test waiting.
const CLOSE_WITHIN: Duration = Duration::from_secs(30);

async fn ingress_only(env: Vec<(&'static str, String)>) -> Bridge {
    Bridge::start_with(Options { relays: 0, responders: 0, encrypt: true, env, ..Default::default() }).await
}

/// Posts raw bytes with no signature headers.
async fn post_unsigned(b: &Bridge, body: Vec<u8>) -> (u16, String) {
    let resp = b.http.post(b.events_url()).header("content-type", "application/json").body(body).send().await;
    let resp = resp.expect("answer");
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

/// Point 7: the padding oracle. Unsigned encrypted bodies that fail at
/// base64, at the padding, at the JSON or later all get the same bytes back,
/// so an attacker learns nothing about the plaintext from the answer.
#[tokio::test]
async fn unsigned_encrypted_failures_get_one_answer_byte_for_byte() {
    use base64::Engine as _;
    let b = ingress_only(vec![]).await;
    let key = b.key.clone().expect("encrypted channel");
    let wrap = |encrypt: String| json!({ "encrypt": encrypt }).to_string().into_bytes();
    let event = b.events().p2p_text("oc_1", "ou_1", "hello");
    let mut bad_padding = key.encrypt(b"{}").into_bytes();
    // Flip the last byte of the base64 ciphertext's final block.
    let decoded = base64::engine::general_purpose::STANDARD.decode(&bad_padding).expect("base64");
    let mut tampered = decoded.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x5a;
    bad_padding = base64::engine::general_purpose::STANDARD.encode(tampered).into_bytes();
    let bodies = [
        wrap("not base64 !!".into()),
        wrap(String::from_utf8(bad_padding).expect("ascii")),
        wrap(key.encrypt(b"{\"not\": json")),
        wrap(key.encrypt(br#"{"schema":"1.0"}"#)),
        wrap(key.encrypt(event.to_string().as_bytes())),
        b"{ not even json".to_vec(),
    ];
    let mut answers = Vec::new();
    for body in bodies {
        answers.push(post_unsigned(&b, body).await);
    }
    assert_eq!(answers[0].0, 401, "{answers:#?}");
    assert!(answers.iter().all(|a| a == &answers[0]), "the answers differ: {answers:#?}");
    assert_eq!(b.stream_len(&b.topology().events_stream()).await, 0);
    b.stop().await;
}

/// Point 10: ids that are not Lark ids (a path, a CR/LF, 200 KB) are a 4xx,
/// never a panic, a reset connection or a 503 that Lark would retry forever.
#[tokio::test]
async fn events_with_hostile_ids_are_refused_and_the_server_stays_up() {
    let b = ingress_only(vec![]).await;
    let huge = "o".repeat(200_000);
    let cases: Vec<(&str, Value)> = vec![
        ("a path in message_id", b.events().message_id("om_x/../../../../bot/v3/info#").p2p_text("oc_1", "ou_1", "x")),
        ("CR/LF in message_id", b.events().message_id("om_x\r\nX-Evil: 1").p2p_text("oc_1", "ou_1", "x")),
        ("CR/LF in event_id", b.events().event_id("e1\r\nX-Evil: 1").p2p_text("oc_1", "ou_1", "x")),
        ("a 200 KB message_id", b.events().message_id(huge.clone()).p2p_text("oc_1", "ou_1", "x")),
        ("a 200 KB event_id", b.events().event_id(huge.clone()).p2p_text("oc_1", "ou_1", "x")),
        ("a path in chat_id", b.events().p2p_text("oc_1/../x", "ou_1", "x")),
        ("CR/LF in open_id", b.events().p2p_text("oc_1", "ou_1\n", "x")),
    ];
    for (what, event) in cases {
        let resp = b.deliver(&event).await;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, 400, "{what}: {}", &body[..body.len().min(300)]);
        assert!(body.contains("not a Lark id"), "{what}: says why: {}", &body[..body.len().min(300)]);
    }
    // A non-message event with a CR/LF event_id and a hostile event type.
    let mut other = b.events().p2p_text("oc_1", "ou_1", "x");
    other["header"]["event_type"] = json!("im.chat.disbanded_v1");
    other["header"]["event_id"] = json!("e\r\n1");
    assert_eq!(b.deliver(&other).await.status(), 400);
    other["header"]["event_id"] = json!("e2");
    other["header"]["event_type"] = json!(format!("x{}", "y".repeat(500)));
    assert_eq!(b.deliver(&other).await.status(), 400);
    // Still serving, nothing stored.
    b.deliver_ok(&b.events().p2p_text("oc_1", "ou_1", "a real one")).await;
    assert_eq!(b.stream_len(&b.topology().events_stream()).await, 1);
    b.stop().await;
}

/// Point 10, the other end: an id that reached NATS without the ingress (a
/// forged message on the stream) is never put in a Lark API path.
#[tokio::test]
async fn the_responder_never_puts_a_hostile_id_in_a_lark_path() {
    let b = Bridge::start_with(Options { ingress: false, ..Default::default() }).await;
    let event = b.events().message_id("om_x/../../../../bot/v3/info#").p2p_text("oc_1", "ou_1", "hello");
    let plain = event.to_string();
    let Callback::Event(envelope) = Callback::parse(plain.as_bytes()).expect("parses") else { panic!("an event") };
    let forged = ingress::callback::VerifiedEvent {
        plain: plain.clone().into(),
        envelope,
        dedup_key: format!("{CHANNEL}:msg:forged"),
        subject_token: "forgedconversation".into(),
    };
    let client = async_nats::connect(nats_url()).await.expect("NATS");
    let publisher = ingress::publish::Publisher::new(
        client.clone(),
        async_nats::jetstream::new(client),
        b.topology(),
        Duration::from_secs(2),
    );
    publisher.publish(CHANNEL, &forged).await.expect("stored");
    let reason = wait_for_dead_letter(&b).await;
    assert!(reason.contains("not a Lark id"), "{reason}");
    let calls = b.lark.all_attempts();
    assert!(
        calls.iter().all(|a| a.endpoint != lark_bridge_tests::fake_lark::Endpoint::Reply),
        "no reply was attempted: {calls:#?}"
    );
    assert!(b.lark.visible_messages().is_empty());
    b.stop().await;
}

async fn wait_for_dead_letter(b: &Bridge) -> String {
    eventually(WAIT, "a dead letter", || async {
        let stream = b.js.get_stream(b.topology().dead_stream()).await.ok()?;
        let dead = stream.direct_get_first_for_subject(b.topology().dead_filter()).await.ok()?;
        dead.headers.get(common::dead_letter::REASON_HEADER).map(|r| r.as_str().to_owned())
    })
    .await
}

/// Point 11: the event type is a metrics label; 300 made-up types must not
/// make 300 series.
#[tokio::test]
async fn made_up_event_types_do_not_grow_the_metrics() {
    let b = ingress_only(vec![]).await;
    for i in 0..300 {
        let mut e = b.events().p2p_text("oc_1", "ou_1", "x");
        e["header"]["event_type"] = json!(format!("made.up.type_{i}_{}", random_hex(6)));
        b.deliver_ok(&e).await;
    }
    let metrics = b.http.get(b.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(!metrics.contains("made.up.type"), "an unbounded label");
    assert!(metrics.contains(r#"event_type="other""#), "bucketed as other");
    assert!(metrics.len() < 64 * 1024, "/metrics is {} bytes", metrics.len());
    b.stop().await;
}

/// Point 11: a 600 KB app_id in a refused event does not make a status entry
/// over NATS's max payload; the status keeps updating.
#[tokio::test]
async fn a_huge_error_text_does_not_freeze_the_status() {
    let token = "admin-token-for-attacks";
    let b = ingress_only(vec![("LARK_BRIDGE__INGRESS__ADMIN_TOKEN", token.into())]).await;
    let forged = EventBuilder::new("a".repeat(600_000)).token(VERIFICATION_TOKEN).p2p_text("oc_1", "ou_1", "x");
    let resp = b.deliver(&forged).await;
    assert!(resp.status().is_client_error());
    let body = resp.text().await.unwrap_or_default();
    assert!(body.len() < 4096, "the answer echoes {} bytes", body.len());
    // A later, different error must show: the status is not frozen.
    let wrong_app = EventBuilder::new("cli_another_app").token(VERIFICATION_TOKEN).p2p_text("oc_1", "ou_1", "x");
    assert_eq!(b.deliver(&wrong_app).await.status(), 403);
    let text = eventually(WAIT, "the status shows the later error", || async {
        let resp = b.http.get(b.url("/status.json")).bearer_auth(token).send().await.expect("status");
        Some(resp.text().await.unwrap_or_default()).filter(|t| t.contains("cli_another_app"))
    })
    .await;
    assert!(text.len() < 64 * 1024, "status is {} bytes", text.len());
    let _ = APP_ID;
    b.stop().await;
}

/// Point 8: idle, half-header and half-body connections are closed by the
/// server after its own timeouts (1 s for headers, 3 s for a request here).
#[tokio::test]
async fn idle_and_trickling_connections_are_closed() {
    let b = ingress_only(vec![
        ("LARK_BRIDGE__INGRESS__HEADER_TIMEOUT_SECS", "1".into()),
        ("LARK_BRIDGE__INGRESS__REQUEST_TIMEOUT_SECS", "3".into()),
    ])
    .await;
    let addr = b.ingress_addr.expect("ingress");
    let path = format!("/lark/{CHANNEL}/events");
    let idle = TcpStream::connect(addr).await.expect("connect");
    let mut half_header = TcpStream::connect(addr).await.expect("connect");
    half_header.write_all(format!("POST {path} HTTP/1.1\r\nHost: x\r\n").as_bytes()).await.expect("write");
    let mut half_body = TcpStream::connect(addr).await.expect("connect");
    half_body
        .write_all(format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{\"a\":").as_bytes())
        .await
        .expect("write");
    for (what, conn) in [("idle", idle), ("half a header", half_header), ("half a body", half_body)] {
        let answer = read_until_closed(conn).await;
        let answer = answer.unwrap_or_else(|| panic!("{what}: still open after {CLOSE_WITHIN:?}"));
        if what == "half a body" {
            assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer}");
        }
    }
    b.deliver_ok(&b.events().p2p_text("oc_1", "ou_1", "still serving")).await;
    b.stop().await;
}

/// What the server sent before it closed the connection; `None` when it is
/// still open after [`CLOSE_WITHIN`].
async fn read_until_closed(mut conn: TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(CLOSE_WITHIN, async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|_| String::from_utf8_lossy(&got).into_owned())
}

/// Point 8, as found: an ingress whose process may open 256 files, 300 idle
/// connections, then a real callback (answered), then SIGTERM with a
/// connection still held (the process exits).
#[tokio::test]
async fn held_connections_neither_starve_callbacks_nor_block_shutdown() {
    let lark = lark_bridge_tests::fake_lark::FakeLark::start(vec![]).await;
    let ns = format!("t{}", random_hex(10));
    let port = free_port();
    let toml = config_toml(&nats_url(), &ns, &lark.base_url(), "http://127.0.0.1:9/api", true)
        .replace("[ingress]\nlisten = \"127.0.0.1:0\"", &format!("[ingress]\nlisten = \"127.0.0.1:{port}\""));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, toml).expect("config written");
    let mut child = tokio::process::Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_lb-ingress"))
        .arg("--config")
        .arg(&config)
        .env("LARK_BRIDGE__INGRESS__HEADER_TIMEOUT_SECS", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prlimit (util-linux) runs the ingress");
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    readyz_becomes(&http, &ready, 200, Duration::from_secs(10), "the ingress becomes ready").await;
    let mut held = Vec::new();
    for _ in 0..300 {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(c) => held.push(c),
            Err(_) => break,
        }
    }
    let key = common::lark::crypto::EncryptKey::new(secrecy::SecretString::from(
        lark_bridge_tests::harness::ENCRYPT_KEY.to_owned(),
    ));
    let event = EventBuilder::new(APP_ID).token(VERIFICATION_TOKEN).p2p_text("oc_1", "ou_1", "a real callback");
    let url = format!("http://127.0.0.1:{port}/lark/{CHANNEL}/events");
    let resp = tokio::time::timeout(CLOSE_WITHIN, SignedRequest::now(&event, Some(&key)).post_to(&http, &url)).await;
    let status = resp.expect("answered while 300 connections are held").expect("answer").status();
    assert_eq!(status, 200);
    drop(held);
    // One connection holds on, half a header sent, while the process is told to stop.
    let mut stuck = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stuck.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let pid = child.id().expect("pid");
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let exited = tokio::time::timeout(CLOSE_WITHIN, child.wait()).await;
    assert!(exited.is_ok(), "SIGTERM did not finish with a connection held");
    let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.expect("NATS"));
    let settings = common::config::Settings::from_toml_with_env(
        &config_toml(&nats_url(), &ns, &lark.base_url(), "http://127.0.0.1:9/api", true),
        &Default::default(),
    )
    .expect("config");
    lark_bridge_tests::harness::delete_namespace(&js, &common::topology::Topology::new(&settings.nats)).await;
}

/// Point 9: an answer that echoes Lark mention markup or a `javascript:` link
/// (the fake FastGPT echoes the question) reaches Lark inert, as text and as a
/// card, while http(s) links stay links.
#[tokio::test]
async fn an_echoed_mention_or_script_link_reaches_lark_inert() {
    let b = Bridge::start().await;
    let questions = [
        r#"ping <at user_id="all">everyone</at>"#,
        "**card** <at id=all></at> [click](javascript:alert(1)) and [docs](https://example.com/docs)",
    ];
    for (i, q) in questions.iter().enumerate() {
        b.deliver_ok(&b.events().p2p_text(&format!("oc_echo_{i}"), "ou_1", q)).await;
    }
    let shown = b.lark.wait_for_messages(questions.len(), WAIT).await;
    assert_eq!(shown.len(), questions.len());
    for m in &shown {
        let raw = m.content.to_string().to_ascii_lowercase();
        assert!(!raw.contains("<at user_id") && !raw.contains("<at id"), "a live mention reached Lark: {raw}");
        assert!(!raw.contains("](javascript:"), "a live script link reached Lark: {raw}");
    }
    let card = shown.iter().find(|m| m.msg_type == "interactive").expect("the Markdown answer is a card");
    assert!(card.content.to_string().contains("[docs](https://example.com/docs)"), "http(s) links stay");
    b.stop().await;
}

/// Point 12: the public-facing ingress starts with only its own secrets (no
/// App Secret, no FastGPT key) and holds none of the others; the relay names
/// what it misses; an unverified webhook channel needs an explicit yes.
#[tokio::test]
async fn each_service_starts_with_only_its_own_secrets() {
    let ns = format!("t{}", random_hex(10));
    let full = config_toml(&nats_url(), &ns, "http://127.0.0.1:9", "http://127.0.0.1:9/api", true);
    let ingress_view = full
        .lines()
        .filter(|l| !l.starts_with("app_secret") && !l.starts_with("fastgpt_api_key"))
        .collect::<Vec<_>>()
        .join("\n");
    let settings =
        common::config::Settings::from_toml_with_env(&ingress_view, &Default::default()).expect("config parses");
    let app = ingress::Application::build(settings.clone()).await.expect("the ingress needs neither key");
    drop(app);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let e = relay::Application::build(settings.clone(), &shutdown).await.err().expect("the relay needs its keys");
    assert!(e.to_string().contains("app_secret"), "{e}");

    let open = full
        .lines()
        .filter(|l| !l.starts_with("encrypt_key") && !l.starts_with("verification_token"))
        .collect::<Vec<_>>()
        .join("\n");
    let open = common::config::Settings::from_toml_with_env(&open, &Default::default()).expect("config parses");
    let e = ingress::Application::build(open.clone()).await.err().expect("refused");
    assert!(e.to_string().contains("allow_unverified"), "{e}");
    let mut allowed = open;
    allowed.channels[0].allow_unverified = true;
    drop(ingress::Application::build(allowed).await.expect("allowed when the channel says so"));
    let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.expect("NATS"));
    lark_bridge_tests::harness::delete_namespace(&js, &common::topology::Topology::new(&settings.nats)).await;
}
