//! Lark's side of the long connection, for the end-to-end suites and the
//! sandbox: `POST /callback/ws/endpoint` on the fake's HTTP port (App ID and
//! Secret checked like the token endpoint), and a WebSocket server on a port
//! of its own speaking pbbp2 frames as Lark does: pongs with the
//! ClientConfig, events (whole or in fragments), a record of every
//! acknowledgement, and a re-push of an event not acknowledged with code 200
//! within a delay (Lark: 15 s, then 5 min, 1 h, 6 h; here configurable).
//!
//! Test controls: push an event or raw bytes, drop every connection, refuse
//! the next handshakes with Lark's `Handshake-*` headers, stop answering
//! pings, and count pings, handshakes, connections and clean closes.
//!
//! The ClientConfig defaults to quick reconnects (interval 1 s, no jitter)
//! so that tests do not wait Lark's two minutes.
//!
//! For `sandbox chat` (another process), `POST /_sandbox/long_connection/push`
//! with an event pushes it over its app's long connection and answers with
//! the acknowledgement's code once it came (or 504 after 5 s, 503 when the
//! app has no connection).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use common::lark::long_connection::frame::{Frame, Header, METHOD_CONTROL, METHOD_DATA};
use futures::{SinkExt as _, StreamExt as _};
use prost::Message as _;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{http, Message};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::lark_events::random_hex;

/// The route `sandbox chat` pushes an event over the long connection with.
pub const SANDBOX_PUSH_PATH: &str = "/_sandbox/long_connection/push";

/// The `service_id` the fake's URLs carry (the SDK reads it for pings).
pub const SERVICE_ID: i32 = 33554678;

/// Lark's client settings, as the endpoint and pongs send them (seconds).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ClientConfig {
    #[serde(rename = "ReconnectCount")]
    pub reconnect_count: i64,
    #[serde(rename = "ReconnectInterval")]
    pub reconnect_interval: u64,
    #[serde(rename = "ReconnectNonce")]
    pub reconnect_nonce: u64,
    #[serde(rename = "PingInterval")]
    pub ping_interval: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self { reconnect_count: -1, reconnect_interval: 1, reconnect_nonce: 0, ping_interval: 30 }
    }
}

/// An acknowledgement the client sent.
#[derive(Clone, Debug)]
pub struct Ack {
    pub connection: u64,
    pub seq_id: u64,
    pub message_id: String,
    /// `code` of the payload JSON (`None`: not JSON).
    pub code: Option<i64>,
    pub payload: Value,
    pub biz_rt_ms: Option<u64>,
    pub headers: Vec<(String, String)>,
    pub at: Instant,
}

/// A handshake to refuse, with Lark's headers.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub http_status: u16,
    pub headers: Vec<(String, String)>,
}

impl Refusal {
    /// 514 / 1000040350: the app has too many connections.
    pub fn too_many_connections() -> Self {
        Self {
            http_status: 403,
            headers: vec![
                ("Handshake-Status".into(), "514".into()),
                ("Handshake-Msg".into(), "exceed connection limit".into()),
                ("Handshake-Autherrcode".into(), "1000040350".into()),
            ],
        }
    }

    /// 403: the app is blocked.
    pub fn app_blocked() -> Self {
        Self {
            http_status: 403,
            headers: vec![("Handshake-Status".into(), "403".into()), ("Handshake-Msg".into(), "forbidden".into())],
        }
    }
}

enum Command {
    Send(Vec<u8>),
    /// Cut the TCP connection without a Close frame.
    Drop,
}

struct Connection {
    app_id: String,
    tx: mpsc::UnboundedSender<Command>,
}

/// An event pushed, for re-pushes until acknowledged with 200.
struct Pushed {
    app_id: String,
    kind: &'static str,
    payload: Vec<u8>,
    fragments: usize,
    last_push: Instant,
    pushes: usize,
    done: bool,
}

#[derive(Default)]
struct Inner {
    config: ClientConfig,
    tickets: HashMap<String, String>,
    connections: BTreeMap<u64, Connection>,
    next_connection: u64,
    next_seq: u64,
    round_robin: usize,
    refuse: VecDeque<Refusal>,
    endpoint_calls: usize,
    handshakes: Vec<Instant>,
    refused_handshakes: usize,
    pings: usize,
    answer_pings: bool,
    acks: Vec<Ack>,
    pushed: HashMap<String, Pushed>,
    repush_after: Option<Duration>,
    clean_closes: usize,
    /// Where each acknowledgement is also sent, as it arrives (the benchmark).
    ack_tx: Option<mpsc::UnboundedSender<Ack>>,
}

pub(super) struct LcShared {
    inner: Mutex<Inner>,
    ws_addr: SocketAddr,
}

impl LcShared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The long connection of the fake Lark: see the module documentation.
#[derive(Clone)]
pub struct LongConnection {
    shared: Arc<LcShared>,
}

#[derive(Clone)]
struct RouteState {
    api: Arc<Shared>,
    lc: Arc<LcShared>,
}

impl LongConnection {
    /// Starts the WebSocket server on a random port of 127.0.0.1.
    pub(super) async fn start(api: Arc<Shared>, cancel: CancellationToken) -> std::io::Result<(Self, Router)> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let ws_addr = listener.local_addr()?;
        let inner = Inner { answer_pings: true, ..Default::default() };
        let shared = Arc::new(LcShared { inner: Mutex::new(inner), ws_addr });
        tokio::spawn(accept_loop(listener, shared.clone(), cancel.clone()));
        tokio::spawn(repush_loop(shared.clone(), cancel));
        let router = Router::new()
            .route(common::lark::long_connection::endpoint::ENDPOINT_PATH, post(endpoint))
            .route(SANDBOX_PUSH_PATH, post(sandbox_push))
            .with_state(RouteState { api, lc: shared.clone() });
        Ok((Self { shared }, router))
    }

    /// Where the WebSockets are served.
    pub fn ws_addr(&self) -> SocketAddr {
        self.shared.ws_addr
    }

    /// The ClientConfig of the endpoint and of pongs from now on.
    pub fn set_client_config(&self, config: ClientConfig) {
        self.shared.lock().config = config;
    }

    /// Re-push an event not acknowledged with code 200 after `after` (None: never).
    pub fn set_repush_after(&self, after: Option<Duration>) {
        self.shared.lock().repush_after = after;
    }

    /// Whether pings get a pong (false: the connection goes silent).
    pub fn set_answer_pings(&self, answer: bool) {
        self.shared.lock().answer_pings = answer;
    }

    /// Every acknowledgement from now on, as it arrives (instead of polling
    /// [`LongConnection::acks`]); one subscriber at a time.
    pub fn subscribe_acks(&self) -> mpsc::UnboundedReceiver<Ack> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.lock().ack_tx = Some(tx);
        rx
    }

    /// Refuses the next handshakes, one per refusal.
    pub fn refuse_next(&self, refusals: Vec<Refusal>) {
        self.shared.lock().refuse.extend(refusals);
    }

    /// Open connections of `app_id`.
    pub fn connections(&self, app_id: &str) -> usize {
        self.shared.lock().connections.values().filter(|c| c.app_id == app_id).count()
    }

    /// Waits until `app_id` has exactly `n` connections or `timeout` passes; returns the count.
    pub async fn wait_for_connections(&self, app_id: &str, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.connections(app_id);
            if c == n || Instant::now() >= deadline {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pings(&self) -> usize {
        self.shared.lock().pings
    }
    pub fn endpoint_calls(&self) -> usize {
        self.shared.lock().endpoint_calls
    }
    /// Handshakes attempted (refused ones included).
    pub fn handshakes(&self) -> usize {
        self.shared.lock().handshakes.len()
    }
    /// When each handshake was attempted.
    pub fn handshake_times(&self) -> Vec<Instant> {
        self.shared.lock().handshakes.clone()
    }
    pub fn refused_handshakes(&self) -> usize {
        self.shared.lock().refused_handshakes
    }
    /// Connections the client closed with a Close frame.
    pub fn clean_closes(&self) -> usize {
        self.shared.lock().clean_closes
    }
    /// Every acknowledgement received, in order.
    pub fn acks(&self) -> Vec<Ack> {
        self.shared.lock().acks.clone()
    }
    /// Acknowledgements of one pushed event.
    pub fn acks_of(&self, message_id: &str) -> Vec<Ack> {
        self.acks().into_iter().filter(|a| a.message_id == message_id).collect()
    }
    /// How many times an event was pushed (1 + re-pushes).
    pub fn pushes_of(&self, message_id: &str) -> usize {
        self.shared.lock().pushed.get(message_id).map(|p| p.pushes).unwrap_or(0)
    }

    /// Waits for an acknowledgement of `message_id` with `code` (or `timeout`).
    pub async fn wait_for_ack(&self, message_id: &str, code: i64, timeout: Duration) -> Option<Ack> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self.acks_of(message_id).into_iter().find(|a| a.code == Some(code)) {
                return Some(a);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Pushes an event to one of the app's connections (round robin), as one
    /// frame of type `event`; returns the frame's `message_id`, or `None`
    /// when the app has no connection. The event's message is registered
    /// by the caller ([`super::FakeLark::push_event`] does both).
    pub fn push(&self, app_id: &str, payload: Vec<u8>, kind: &'static str, fragments: usize) -> Option<String> {
        let message_id = format!("lc_{}", random_hex(12));
        let mut inner = self.shared.lock();
        let pushed = Pushed {
            app_id: app_id.to_owned(),
            kind,
            payload,
            fragments: fragments.max(1),
            last_push: Instant::now(),
            pushes: 0,
            done: false,
        };
        if !send_event(&mut inner, &message_id, &pushed) {
            return None;
        }
        let mut pushed = pushed;
        pushed.pushes = 1;
        inner.pushed.insert(message_id.clone(), pushed);
        Some(message_id)
    }

    /// Pushes a card callback as [`LongConnection::push`] does, once: Lark
    /// never sends a callback again, acknowledged or not.
    pub fn push_callback(&self, app_id: &str, payload: Vec<u8>, kind: &'static str) -> Option<String> {
        let id = self.push(app_id, payload, kind, 1)?;
        if let Some(p) = self.shared.lock().pushed.get_mut(&id) {
            p.done = true;
        }
        Some(id)
    }

    /// Sends raw bytes (not necessarily a frame) on one of the app's connections.
    pub fn push_raw(&self, app_id: &str, bytes: Vec<u8>) -> bool {
        let mut inner = self.shared.lock();
        match pick(&mut inner, app_id) {
            Some(tx) => tx.send(Command::Send(bytes)).is_ok(),
            None => false,
        }
    }

    /// Cuts every connection without a Close frame, as a network failure would.
    pub fn drop_connections(&self) {
        for c in self.shared.lock().connections.values() {
            let _ = c.tx.send(Command::Drop);
        }
    }
}

fn pick(inner: &mut Inner, app_id: &str) -> Option<mpsc::UnboundedSender<Command>> {
    let txs: Vec<_> = inner.connections.values().filter(|c| c.app_id == app_id).map(|c| c.tx.clone()).collect();
    if txs.is_empty() {
        return None;
    }
    inner.round_robin = inner.round_robin.wrapping_add(1);
    Some(txs[inner.round_robin % txs.len()].clone())
}

/// Sends an event's frames (one, or `fragments`) on one connection.
fn send_event(inner: &mut Inner, message_id: &str, p: &Pushed) -> bool {
    let Some(tx) = pick(inner, &p.app_id) else { return false };
    let n = p.fragments;
    let size = p.payload.len().div_ceil(n).max(1);
    let trace_id = random_hex(8);
    for seq in 0..n {
        let part = p.payload.chunks(size).nth(seq).unwrap_or_default().to_vec();
        inner.next_seq += 1;
        let frame = Frame {
            seq_id: inner.next_seq,
            log_id: inner.next_seq + 1_000_000,
            service: SERVICE_ID,
            method: METHOD_DATA,
            headers: vec![
                Header::new("type", p.kind),
                Header::new("message_id", message_id),
                Header::new("sum", n.to_string()),
                Header::new("seq", seq.to_string()),
                Header::new("trace_id", trace_id.clone()),
            ],
            payload: Some(part),
            ..Default::default()
        };
        if tx.send(Command::Send(frame.encode_to_vec())).is_err() {
            return false;
        }
    }
    true
}

async fn endpoint(State(s): State<RouteState>, Json(body): Json<Value>) -> Json<Value> {
    let app_id = body.get("AppID").and_then(Value::as_str).unwrap_or_default().to_owned();
    let secret = body.get("AppSecret").and_then(Value::as_str).unwrap_or_default();
    let known = {
        let api = s.api.lock();
        api.apps.get(&app_id).is_some_and(|a| a.app.app_secret == secret && !a.secret_rejected)
    };
    let mut inner = s.lc.lock();
    inner.endpoint_calls += 1;
    if !known {
        return Json(json!({ "code": 1000040345, "msg": "app_id or app_secret is invalid" }));
    }
    let ticket = random_hex(16);
    inner.tickets.insert(ticket.clone(), app_id);
    let device_id = random_hex(6);
    let url = format!(
        "ws://{}/ws/v2?fpid=493&aid=552564&device_id={device_id}&access_key={}&service_id={SERVICE_ID}&ticket={ticket}",
        s.lc.ws_addr,
        random_hex(16)
    );
    Json(json!({ "code": 0, "msg": "ok", "data": { "URL": url, "ClientConfig": inner.config } }))
}

/// `POST /_sandbox/long_connection/push`: see the module documentation.
async fn sandbox_push(State(s): State<RouteState>, Json(event): Json<Value>) -> (http::StatusCode, Json<Value>) {
    let message = event.pointer("/event/message");
    let text = |k: &str| message.and_then(|m| m.get(k)).and_then(Value::as_str).map(str::to_owned);
    if let (Some(id), Some(chat)) = (text("message_id"), text("chat_id")) {
        let info = super::MessageInfo { chat_id: chat, thread_id: text("thread_id"), root_id: None };
        s.api.lock().messages.insert(id, info);
    }
    let app_id = event.pointer("/header/app_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let lc = LongConnection { shared: s.lc.clone() };
    let Some(id) = lc.push(&app_id, event.to_string().into_bytes(), "event", 1) else {
        let why = format!("app {app_id} has no long connection: is the ingress running with this channel?");
        return (http::StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": why })));
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(ack) = lc.acks_of(&id).into_iter().next() {
            return (http::StatusCode::OK, Json(json!({ "message_id": id, "code": ack.code })));
        }
        if Instant::now() >= deadline {
            return (http::StatusCode::GATEWAY_TIMEOUT, Json(json!({ "error": "no acknowledgement within 5 s" })));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<LcShared>, cancel: CancellationToken) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            () = cancel.cancelled() => return,
        };
        tokio::spawn(serve(stream, shared.clone(), cancel.clone()));
    }
}

// The handshake callback's error type is tungstenite's (an HTTP response).
#[allow(clippy::result_large_err)]
async fn serve(stream: tokio::net::TcpStream, shared: Arc<LcShared>, cancel: CancellationToken) {
    let mut app_id = None;
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let mut inner = shared.lock();
        inner.handshakes.push(Instant::now());
        if let Some(r) = inner.refuse.pop_front() {
            inner.refused_handshakes += 1;
            let mut b = http::Response::builder().status(r.http_status);
            for (k, v) in &r.headers {
                b = b.header(k, v);
            }
            return Err(b.body(None).unwrap_or_else(|_| http::Response::new(None)));
        }
        let ticket = req.uri().query().unwrap_or_default().split('&').find_map(|kv| kv.strip_prefix("ticket="));
        match ticket.and_then(|t| inner.tickets.get(t)) {
            Some(a) => {
                app_id = Some(a.clone());
                Ok(resp)
            }
            None => {
                let mut e = http::Response::new(Some("unknown ticket".to_owned()));
                *e.status_mut() = http::StatusCode::UNAUTHORIZED;
                Err(e)
            }
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else { return };
    let Some(app_id) = app_id else { return };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = {
        let mut inner = shared.lock();
        inner.next_connection += 1;
        let id = inner.next_connection;
        inner.connections.insert(id, Connection { app_id, tx: tx.clone() });
        id
    };
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            cmd = rx.recv() => match cmd {
                Some(Command::Send(bytes)) => {
                    if sink.send(Message::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                Some(Command::Drop) | None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if let Some(reply) = from_client(&shared, id, &b) {
                        let _ = tx.send(Command::Send(reply));
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    shared.lock().clean_closes += 1;
                    let _ = sink.close().await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    shared.lock().connections.remove(&id);
}

/// A frame from the client: a ping (answered with a pong) or an ack (recorded).
fn from_client(shared: &LcShared, connection: u64, bytes: &[u8]) -> Option<Vec<u8>> {
    let frame = Frame::decode(bytes).ok()?;
    let mut inner = shared.lock();
    match (frame.method, frame.header("type")) {
        (METHOD_CONTROL, Some("ping")) => {
            inner.pings += 1;
            if !inner.answer_pings {
                return None;
            }
            let pong = Frame {
                service: frame.service,
                method: METHOD_CONTROL,
                headers: vec![Header::new("type", "pong")],
                payload: Some(serde_json::to_vec(&inner.config).unwrap_or_default()),
                ..Default::default()
            };
            Some(pong.encode_to_vec())
        }
        (METHOD_DATA, _) => {
            let payload: Value =
                frame.payload.as_deref().and_then(|p| serde_json::from_slice(p).ok()).unwrap_or(Value::Null);
            let code = payload.get("code").and_then(Value::as_i64);
            let message_id = frame.header("message_id").unwrap_or_default().to_owned();
            if code == Some(200) {
                if let Some(p) = inner.pushed.get_mut(&message_id) {
                    p.done = true;
                }
            }
            let ack = Ack {
                connection,
                seq_id: frame.seq_id,
                message_id,
                code,
                payload,
                biz_rt_ms: frame.header("biz_rt").and_then(|v| v.parse().ok()),
                headers: frame.headers.iter().map(|h| (h.key.clone(), h.value.clone())).collect(),
                at: Instant::now(),
            };
            if let Some(tx) = &inner.ack_tx {
                let _ = tx.send(ack.clone());
            }
            inner.acks.push(ack);
            None
        }
        _ => None,
    }
}

/// Pushes again what was not acknowledged with 200 in time, as Lark does.
async fn repush_loop(shared: Arc<LcShared>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = cancel.cancelled() => return,
        }
        let mut inner = shared.lock();
        let Some(after) = inner.repush_after else { continue };
        let due: Vec<String> = inner
            .pushed
            .iter()
            .filter(|(_, p)| !p.done && p.last_push.elapsed() >= after)
            .map(|(k, _)| k.clone())
            .collect();
        for id in due {
            let Some(p) = inner.pushed.remove(&id) else { continue };
            let sent = send_event(&mut inner, &id, &p);
            let p = Pushed { last_push: Instant::now(), pushes: p.pushes + usize::from(sent), ..p };
            inner.pushed.insert(id, p);
        }
    }
}
