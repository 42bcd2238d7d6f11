//! Payloads shaped like real traffic (`testdata/real/`), each through the
//! parser that meets it in production: Lark's events and card callbacks
//! through the ingress's accept path (the Request URL's `verify` and the long
//! connection's `accept_plain`), then the relay's reading of the message;
//! long-connection frames through the pbbp2 decoder and the fragment joiner;
//! FastGPT's event streams through the relay's stream parser; Lark's API
//! answers through the Lark client and its error classes.
//!
//! Each folder's `SOURCES.md` has one row per file: what a user would expect
//! of it (the `expected` column, read here) and where its shape comes from.
//! A file without a row, or a row without a file, fails the test, so the
//! corpus cannot grow without saying where a payload comes from. One test
//! per parser walks its folder and names every file that failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use common::channel::Channel;
use common::config::ChannelSettings;
use common::conversation::ConversationKey;
use common::lark::api::LarkClient;
use common::lark::card_action::CardAction;
use common::lark::errors::ErrorClass;
use common::lark::long_connection::endpoint::{self, EndpointError, Refusal};
use common::lark::long_connection::fragments::Fragments;
use common::lark::long_connection::frame::{Frame, Kind};
use futures::StreamExt;
use ingress::callback::{self, Rejection, Verified, VerifiedEvent};
use relay::fastgpt::{pieces, FastGptError, Piece};
use relay::incoming::{self, Asked};
use serde_json::Value;

/// One file of a folder, with what its `SOURCES.md` row expects of it.
struct Fixture {
    name: String,
    bytes: Vec<u8>,
    expected: String,
}

fn real(folder: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/real").join(folder)
}

/// The files of `folder` (not its subfolders) with their expected outcome,
/// from the table rows of its `SOURCES.md`: `` | `file` | `expected` | source | ``.
fn fixtures(folder: &str) -> Vec<Fixture> {
    let dir = real(folder);
    let sources =
        std::fs::read_to_string(dir.join("SOURCES.md")).unwrap_or_else(|e| panic!("{}/SOURCES.md: {e}", dir.display()));
    let mut rows = std::collections::BTreeMap::new();
    for line in sources.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, file, expected, source, ..] = cells[..] else { panic!("{folder}/SOURCES.md: a row too short: {line}") };
        assert!(!source.is_empty(), "{folder}/SOURCES.md: {file} says nothing of where it comes from");
        rows.insert(file.trim_matches('`').to_owned(), expected.trim_matches('`').to_owned());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("a UTF-8 file name").to_owned();
        if path.is_dir() || name == "SOURCES.md" || name.ends_with(".py") {
            continue;
        }
        let expected =
            rows.remove(&name).unwrap_or_else(|| panic!("{folder}/{name} has no row in {folder}/SOURCES.md"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        found.push(Fixture { name, bytes, expected });
    }
    assert!(rows.is_empty(), "{folder}/SOURCES.md lists files that are not there: {:?}", rows.keys());
    assert!(!found.is_empty(), "{folder} holds no fixture");
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// Fails with every file that did not do what its row expects.
fn report(folder: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} file(s) of testdata/real/{folder} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A channel bound to the payload's app, with its verification token when
/// it carries one: the ids and the shape are under test, not the binding.
fn channel_for(bytes: &[u8]) -> Channel {
    let header = serde_json::from_slice::<Value>(bytes).ok().map(|v| v["header"].clone()).unwrap_or_default();
    let app_id = header["app_id"].as_str().unwrap_or("cli_test");
    let token = header["token"].as_str().filter(|t| !t.is_empty());
    let settings: ChannelSettings = serde_json::from_value(serde_json::json!({
        "id": "real", "app_id": app_id, "verification_token": token,
        "fastgpt_base_url": "http://127.0.0.1:9/api",
    }))
    .expect("channel settings");
    Channel::new(&settings)
}

/// How a payload reaches the ingress: the Request URL (plain body, no
/// Encrypt Key) or the long connection. By file name: `webhook_`, `ws_`.
fn accept(name: &str, bytes: &[u8]) -> Vec<(&'static str, Result<VerifiedEvent, Rejection>)> {
    let channel = channel_for(bytes);
    let webhook = || match callback::verify(&channel, &HeaderMap::new(), bytes, 1_733_212_345, 3600) {
        Ok(Verified::Event(event)) => Ok(*event),
        Ok(Verified::Challenge(_)) => Err(Rejection::Unsupported("a challenge, not an event".into())),
        Err(e) => Err(e),
    };
    let long_connection = || callback::accept_plain(&channel, bytes.to_vec());
    if name.starts_with("webhook_") {
        vec![("webhook", webhook())]
    } else if name.starts_with("ws_") {
        vec![("long connection", long_connection())]
    } else {
        vec![("webhook", webhook()), ("long connection", long_connection())]
    }
}

/// The bot's open_id in the corpus's apps: its @mention is not part of the question.
const BOT_OPEN_IDS: [&str; 2] = ["ou_7d8a6e6df7621556ce0d21922b676706", "ou_0a2c4e6b8d0f2a4c6e8b0d2f4a6c8e0b"];

/// What an accepted event becomes: `accepted` (stored), `ask: TEXT` (the
/// relay asks FastGPT exactly TEXT), `ask+images: TEXT`, `click` (a click
/// on one of the bridge's question cards, stored once per question).
fn outcome(event: &VerifiedEvent) -> Result<String, String> {
    if let Some(action) = CardAction::of(&event.envelope) {
        let action = action.map_err(|e| format!("the card action does not read: {e}"))?;
        if action.operator.open_id.is_none() {
            return Err("no operator.open_id".into());
        }
        return Ok(if event.dedup_key.contains(":click:") { "click" } else { "accepted" }.to_owned());
    }
    let Some(message) = event.envelope.message_event() else { return Ok("accepted".into()) };
    let m = message.map_err(|e| format!("the relay cannot read the message: {e}"))?;
    let ids = [&m.message.root_id, &m.message.parent_id, &m.message.thread_id, &m.sender.sender_id.user_id];
    if ids.iter().any(|id| id.as_deref() == Some("")) {
        return Err("an empty id was kept as an id".into());
    }
    if ConversationKey::of(&m).token().is_empty() {
        return Err("no conversation".into());
    }
    let bot = m.message.mentions.iter().filter_map(|x| x.id.open_id.as_deref()).find(|id| BOT_OPEN_IDS.contains(id));
    match incoming::read(&m.message, bot).map_err(|e| format!("the relay cannot read the content: {e}"))? {
        Asked::Ask(text) => Ok(format!("ask: {text}")),
        Asked::WithResources { text, .. } => Ok(format!("ask+images: {text}")),
        other => Ok(format!("{other:?}")),
    }
}

fn check_payload(f: &Fixture) -> Vec<String> {
    let mut failures = Vec::new();
    for (via, result) in accept(&f.name, &f.bytes) {
        let got = match result {
            Ok(event) => outcome(&event).unwrap_or_else(|e| format!("accepted, but {e}")),
            Err(rejection) => format!("{} ({rejection})", rejection.reason()),
        };
        let reason = got.split(" (").next().unwrap_or_default();
        if got != f.expected && reason != f.expected {
            failures.push(format!("{} via {via}: expected {:?}, got {got:?}", f.name, f.expected));
        }
    }
    failures
}

#[test]
fn real_events_are_accepted_and_hostile_ones_refused() {
    for folder in ["events", "events/hostile"] {
        let failures = fixtures(folder).iter().flat_map(check_payload).collect();
        report(folder, failures);
    }
}

#[test]
fn real_card_callbacks_are_read_and_hostile_ones_refused() {
    for folder in ["card_actions", "card_actions/hostile"] {
        let failures = fixtures(folder).iter().flat_map(check_payload).collect();
        report(folder, failures);
    }
}

/// Frames (`.bin`): `KIND` or `KIND accepted` (the payload, joined when
/// split, passes the long connection's accept path), `KIND part` (a part
/// that does not yet complete its event), `pong config` (a ClientConfig).
/// Endpoint answers (`endpoint_*.json`): `ok`, `transient`, `app`.
/// Refused handshakes (`handshake_*.json`): the refusal's label.
#[test]
fn real_long_connection_frames_and_answers_decode() {
    let mut failures = Vec::new();
    let mut fragments = Fragments::new(16, 1 << 20, Duration::from_secs(60));
    for f in fixtures("long_connection") {
        let got = if f.name.ends_with(".bin") {
            frame_outcome(&f.bytes, &mut fragments)
        } else if f.name.starts_with("endpoint_") {
            match endpoint::parse(&f.bytes) {
                Ok(e) if e.service_id > 0 && !e.device_id.is_empty() => "ok".to_owned(),
                Ok(e) => format!("ok without ids: {e:?}"),
                Err(EndpointError::Transient(_)) => "transient".to_owned(),
                Err(EndpointError::App { .. }) => "app".to_owned(),
            }
        } else {
            let v: Value = serde_json::from_slice(&f.bytes).expect("a handshake answer");
            let status = v["status"].as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or(0);
            Refusal::from_headers(status, |name| v["headers"][name].as_str()).label().to_owned()
        };
        if got != f.expected {
            failures.push(format!("{}: expected {:?}, got {got:?}", f.name, f.expected));
        }
    }
    report("long_connection", failures);
}

fn frame_outcome(bytes: &[u8], fragments: &mut Fragments) -> String {
    let frame = match Frame::decode_bytes(bytes) {
        Ok(frame) => frame,
        Err(e) => return format!("not decoded: {e}"),
    };
    if frame.to_bytes() != bytes {
        return "decoded, but does not re-encode byte for byte".into();
    }
    let kind = frame.kind();
    match kind {
        Kind::Ping => return "ping".into(),
        Kind::Pong => {
            let config = frame.payload.as_deref().and_then(endpoint::ClientConfig::from_pong);
            return if config.is_some() { "pong config" } else { "pong" }.into();
        }
        Kind::Other => return "other".into(),
        Kind::Event | Kind::Card => {}
    }
    let h = frame.data_headers();
    let part = frame.payload.clone().unwrap_or_default();
    let whole = match fragments.add(&h.message_id, h.sum, h.seq, part, Instant::now()) {
        Ok(Some(whole)) => whole,
        Ok(None) => return format!("{} part", kind.label()),
        Err(e) => return format!("{} not joined: {e}", kind.label()),
    };
    let channel = channel_for(&whole);
    match callback::accept_plain(&channel, whole) {
        Ok(_) => format!("{} accepted", kind.label()),
        Err(e) => format!("{} refused: {} ({e})", kind.label(), e.reason()),
    }
}

/// `answer: TEXT` (complete, the answer is TEXT), `interactive: TYPE`
/// (complete, with a user-select or form node of that type that the relay
/// turns into a question card), `error: LABEL`
/// (ends in an error of that class: `auth`, `quota`, `workflow`, `transient`...).
#[tokio::test]
async fn real_fastgpt_streams_parse() {
    let mut failures = Vec::new();
    for f in fixtures("fastgpt") {
        let whole = stream_outcome(vec![f.bytes.clone()]).await;
        let chunked = stream_outcome(f.bytes.chunks(5).map(<[u8]>::to_vec).collect()).await;
        if whole != chunked {
            failures.push(format!("{}: {whole:?} whole, but {chunked:?} in 5-byte chunks", f.name));
        } else if whole != f.expected {
            failures.push(format!("{}: expected {:?}, got {whole:?}", f.name, f.expected));
        }
    }
    report("fastgpt", failures);
}

async fn stream_outcome(chunks: Vec<Vec<u8>>) -> String {
    let body = futures::stream::iter(chunks.into_iter().map(|c| Ok::<_, std::convert::Infallible>(Bytes::from(c))));
    let items: Vec<Result<Piece, FastGptError>> = pieces(body, 200, Duration::from_secs(5)).collect().await;
    let mut text = String::new();
    let mut interactive = None;
    for item in items {
        match item {
            Ok(Piece::Text(t)) => text.push_str(&t),
            Ok(Piece::Responses(_)) => {}
            Ok(Piece::Interactive(v)) => {
                if relay::interactive::read(&v).is_none() {
                    return format!("an interactive node the relay cannot turn into a question card: {v}");
                }
                interactive = Some(v["type"].as_str().unwrap_or("?").to_owned());
            }
            Err(e) => return format!("error: {}", e.label()),
        }
    }
    match interactive {
        Some(kind) => format!("interactive: {kind}"),
        None => format!("answer: {text}"),
    }
}

/// Serves one recorded answer (`{"status", "headers", "body"}`) to every
/// call but the token's, which gets `token` (a good one unless the token
/// answer is under test).
async fn lark(token: Value, answer: Value) -> String {
    fn respond(v: &Value) -> Response {
        let status = v["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        let body = match &v["body"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut resp = (status, body).into_response();
        for (k, val) in v["headers"].as_object().into_iter().flatten() {
            if let (Ok(k), Some(Ok(val))) = (HeaderName::try_from(k.as_str()), val.as_str().map(HeaderValue::from_str))
            {
                resp.headers_mut().insert(k, val);
            }
        }
        resp
    }
    let (token, answer) = (Arc::new(token), Arc::new(answer));
    let app = Router::new()
        .route("/open-apis/auth/v3/tenant_access_token/internal", post(move || async move { respond(&token) }))
        .fallback(move || async move { respond(&answer) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// `ok`, `token_invalid`, `permanent`, `transient` or `transient Ns` (with
/// the wait Lark asked for). By file name: `token_` answers the token
/// request, `bot_info_` the bot info, any other a reply.
#[tokio::test]
async fn real_lark_api_answers_are_classified() {
    let read = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).expect("a recorded answer");
    let all = fixtures("lark_api");
    let good_token = all.iter().find(|f| f.name == "token_ok.json").map(|f| read(&f.bytes)).expect("token_ok.json");
    let mut failures = Vec::new();
    for f in &all {
        let answer = read(&f.bytes);
        let is_token = f.name.starts_with("token_");
        let base = if is_token { lark(answer, Value::Null).await } else { lark(good_token.clone(), answer).await };
        let settings: ChannelSettings = serde_json::from_value(serde_json::json!({
            "id": "real", "app_id": "cli_9f5343c580712544", "app_secret": "secret",
            "lark_base_url": base, "fastgpt_base_url": "http://127.0.0.1:9/api",
        }))
        .expect("channel settings");
        let client = LarkClient::new(reqwest::Client::new(), Arc::new(Channel::new(&settings)));
        let result = if is_token {
            client.tenant_token().await.map(|_| ())
        } else if f.name.starts_with("bot_info_") {
            client.bot_info().await.map(|info| assert!(!info.open_id.is_empty(), "{}: no open_id", f.name))
        } else {
            client
                .reply("om_x100b494e7a37dcb40d786a11ed4eb53", "text", r#"{"text":"hi"}"#, false, "u-1")
                .await
                .map(|_| ())
        };
        let got = match result.map_err(|e| e.class()) {
            Ok(()) => "ok".to_owned(),
            Err(ErrorClass::TokenInvalid) => "token_invalid".to_owned(),
            Err(ErrorClass::Permanent { .. }) => "permanent".to_owned(),
            Err(ErrorClass::Transient { retry_after: None }) => "transient".to_owned(),
            Err(ErrorClass::Transient { retry_after: Some(d) }) => format!("transient {}s", d.as_secs()),
        };
        if got != f.expected {
            failures.push(format!("{}: expected {:?}, got {got:?}", f.name, f.expected));
        }
    }
    report("lark_api", failures);
}
