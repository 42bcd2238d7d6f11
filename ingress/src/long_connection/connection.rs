//! One long connection to Lark, for its whole life: ask the endpoint where
//! to connect, dial, then read frames until the connection drops or the
//! ingress stops, and dial again ([`super::backoff`]).
//!
//! While up:
//! - a ping every `PingInterval` (a pong may carry new settings);
//! - nothing heard for two ping intervals: the connection is dead, replaced;
//! - each data frame is handled in a task of its own ([`super::handler`]),
//!   so a slow publish does not hold the frames behind it; its
//!   acknowledgement goes out once the event is stored (or refused), through
//!   one writer; at most [`MAX_IN_FLIGHT`] frames are handled at once;
//! - fragments are joined here, in the reader, before any task.
//!
//! On shutdown the reader stops taking frames, the frames in flight finish
//! (stored and acknowledged within `drain_timeout`, else left to Lark's
//! re-push: an unacknowledged event is pushed again), and the connection is
//! closed with a Close frame.
//!
//! A refusal (endpoint code, refused handshake) is logged once with its fix,
//! on `/status` and in metrics, and retried slowly; the same refusal again is
//! logged at debug level only. The WebSocket URL carries secrets and is only
//! ever shown through [`WsUrl`]'s Display (scheme, host, path).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::channel::Channel;
use common::lark::long_connection::endpoint::{self, ClientConfig, EndpointError, Refusal, WsUrl};
use common::lark::long_connection::fragments::{self, Fragments};
use common::lark::long_connection::frame::{Answer, Frame, Kind};
use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::Backoff;
use super::{handler, Deps};

/// Frames handled at once on one connection; the reader waits beyond.
pub const MAX_IN_FLIGHT: usize = 256;
/// Events waiting for their other fragments, per connection.
const MAX_PARTIAL_EVENTS: usize = 64;
/// The endpoint call and the handshake each get this long.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a session ended.
enum Ended {
    Shutdown,
    /// It was up for this long, then dropped.
    Dropped {
        up: Duration,
        why: String,
    },
    /// Lark's side failed (busy, unreachable): retry after the interval.
    Failed(String),
    /// Lark refused the app: retry slowly, say what to fix.
    Refused {
        label: &'static str,
        what: String,
        fix: &'static str,
    },
}

/// Runs connection `index` of `channel` until `shutdown`.
pub async fn run(channel: Arc<Channel>, index: usize, deps: Deps, shutdown: CancellationToken) {
    let Some(secret) = channel.app_secret.clone() else {
        tracing::error!(channel = %channel.id, "long-connection channel without app_secret: not connecting");
        return;
    };
    let mut config = ClientConfig::default();
    let mut backoff = Backoff::default();
    let mut last_refusal: Option<&'static str> = None;
    let mut attempt = 0u64;
    loop {
        if attempt > 0 {
            metrics::counter!(common::metric_names::INGRESS_LONG_CONNECTION_RECONNECTS_TOTAL, "channel" => channel.id.clone())
                .increment(1);
        }
        attempt += 1;
        let ended = session(&channel, index, &secret, &deps, &mut config, &mut backoff, &shutdown).await;
        let wait = match ended {
            Ended::Shutdown => return,
            Ended::Dropped { up, why } => {
                last_refusal = None;
                tracing::warn!(channel = %channel.id, connection = index, up_secs = up.as_secs(), reason = %why, "long connection lost; reconnecting");
                backoff.after_drop(&config, up)
            }
            Ended::Failed(why) => {
                tracing::warn!(channel = %channel.id, connection = index, reason = %why, "cannot open the long connection; retrying");
                backoff.after_failure(&config)
            }
            Ended::Refused { label, what, fix } => {
                metrics::counter!(common::metric_names::INGRESS_LONG_CONNECTION_REFUSALS_TOTAL, "channel" => channel.id.clone(), "reason" => label)
                    .increment(1);
                let wait = backoff.after_refusal(&config);
                if last_refusal == Some(label) {
                    tracing::debug!(channel = %channel.id, connection = index, reason = label, retry_in_secs = wait.as_secs(), "long connection still refused");
                } else {
                    tracing::error!(channel = %channel.id, connection = index, reason = label, error = %what, fix, retry_in_secs = wait.as_secs(), "Lark refused the long connection");
                    deps.status.error(&channel.id, what.clone(), fix);
                    deps.board.problem(&channel.id, format!("{what} (fix: {fix})"));
                }
                last_refusal = Some(label);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Opens one connection (endpoint, handshake) to `channel`'s app. `config`
/// takes the endpoint's settings as soon as it answers: they apply from then
/// on, also to the wait after a refused handshake.
pub async fn dial(
    channel: &Channel,
    secret: &secrecy::SecretString,
    http: &reqwest::Client,
    max_event_bytes: usize,
    config: &mut ClientConfig,
) -> Result<(Ws, endpoint::Endpoint), DialError> {
    let ep = ask_endpoint(channel, secret, http).await?;
    *config = ep.config;
    let ws = handshake(&ep, max_event_bytes).await?;
    Ok((ws, ep))
}

/// Asks Lark's endpoint where to connect, within [`DIAL_TIMEOUT`].
async fn ask_endpoint(
    channel: &Channel,
    secret: &secrecy::SecretString,
    http: &reqwest::Client,
) -> Result<endpoint::Endpoint, DialError> {
    tokio::time::timeout(DIAL_TIMEOUT, endpoint::fetch(http, &channel.lark_base_url, &channel.app_id, secret))
        .await
        .map_err(|_| DialError::Endpoint(EndpointError::Transient("no answer within 10 s".into())))?
        .map_err(DialError::Endpoint)
}

/// Opens the WebSocket the endpoint named, within [`DIAL_TIMEOUT`].
async fn handshake(ep: &endpoint::Endpoint, max_event_bytes: usize) -> Result<Ws, DialError> {
    // The whole event arrives in one frame or in fragments of it; leave room
    // for the frame around the payload.
    let limit = max_event_bytes.saturating_add(64 * 1024);
    let ws_config = WebSocketConfig::default().max_message_size(Some(limit)).max_frame_size(Some(limit));
    let connect = tokio_tungstenite::connect_async_with_config(ep.url.expose(), Some(ws_config), true);
    match tokio::time::timeout(DIAL_TIMEOUT, connect).await {
        Err(_) => Err(DialError::Handshake { url: ep.url.clone(), why: "no handshake within 10 s".into() }),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let headers = resp.headers();
            let refusal =
                Refusal::from_headers(resp.status().as_u16(), |k| headers.get(k).and_then(|v| v.to_str().ok()));
            Err(DialError::Refused(refusal))
        }
        Ok(Err(e)) => Err(DialError::Handshake { url: ep.url.clone(), why: describe(&e) }),
    }
}

/// Why a dial failed. Never shows the URL's secrets.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(transparent)]
    Endpoint(EndpointError),
    #[error("{0}")]
    Refused(Refusal),
    #[error("cannot open the WebSocket to {url}: {why}")]
    Handshake { url: WsUrl, why: String },
}

impl DialError {
    /// Lark refused the app: retrying soon will not help until its settings
    /// change. Otherwise Lark or the way to it failed: retry at the interval.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Endpoint(EndpointError::App { .. }) | Self::Refused(_))
    }

    /// What to do about it.
    pub fn fix(&self) -> &'static str {
        match self {
            Self::Endpoint(e) => e.fix(),
            Self::Refused(r) => r.fix(),
            Self::Handshake { .. } => {
                "check that this host reaches Lark (outbound HTTPS and WebSocket, no proxy in the way)"
            }
        }
    }

    /// The reason, as a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Endpoint(e) => e.label(),
            Self::Refused(r) => r.label(),
            Self::Handshake { .. } => "handshake_failed",
        }
    }
}

/// A tungstenite error in words, without any URL it may hold.
fn describe(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) => format!("I/O: {io}"),
        tungstenite::Error::Tls(_) => "TLS handshake failed".into(),
        tungstenite::Error::Url(_) => "the URL Lark gave is not a WebSocket URL".into(),
        tungstenite::Error::Http(resp) => format!("HTTP {}", resp.status()),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "connection closed".into(),
        tungstenite::Error::Protocol(p) => format!("protocol: {p}"),
        tungstenite::Error::Capacity(c) => format!("capacity: {c}"),
        _ => "WebSocket error".into(),
    }
}

async fn session(
    channel: &Arc<Channel>,
    index: usize,
    secret: &secrecy::SecretString,
    deps: &Deps,
    config: &mut ClientConfig,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Ended {
    // The endpoint's settings apply from its answer on, also to the waits
    // after a refused handshake.
    let dialed = tokio::select! {
        r = dial(channel, secret, &deps.http, deps.max_event_bytes, config) => r,
        () = shutdown.cancelled() => return Ended::Shutdown,
    };
    let (ws, ep) = match dialed {
        Ok(ok) => ok,
        Err(e) if e.is_refusal() => return Ended::Refused { label: e.label(), what: e.to_string(), fix: e.fix() },
        Err(e) => return Ended::Failed(e.to_string()),
    };
    backoff.connected();
    let up_since = Instant::now();
    deps.board.connected(&channel.id);
    metrics::gauge!(common::metric_names::INGRESS_LONG_CONNECTIONS_UP, "channel" => channel.id.clone()).increment(1.0);
    tracing::info!(channel = %channel.id, connection = index, url = %ep.url, device_id = %ep.device_id, ping_secs = config.ping_interval, "long connection to Lark up");
    let ended = read_loop(channel, ws, ep.service_id, deps, config, shutdown).await;
    metrics::gauge!(common::metric_names::INGRESS_LONG_CONNECTIONS_UP, "channel" => channel.id.clone()).decrement(1.0);
    deps.board.disconnected(&channel.id);
    match ended {
        Some(why) => Ended::Dropped { up: up_since.elapsed(), why },
        None => {
            tracing::info!(channel = %channel.id, connection = index, "long connection closed for shutdown");
            Ended::Shutdown
        }
    }
}

/// Reads until the connection drops (`Some(why)`) or shutdown (`None`).
async fn read_loop(
    channel: &Arc<Channel>,
    ws: Ws,
    service_id: i32,
    deps: &Deps,
    config: &mut ClientConfig,
    shutdown: &CancellationToken,
) -> Option<String> {
    let (mut sink, mut stream) = ws.split();
    // Shared by the frame tasks without a clone of every field per frame.
    let shared = Arc::new(deps.clone());
    let (acks, mut outbox) = mpsc::channel::<Message>(MAX_IN_FLIGHT);
    let tasks = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut fragments = Fragments::new(MAX_PARTIAL_EVENTS, deps.max_event_bytes.saturating_mul(4), fragments::TTL)
        .with_max_event_bytes(deps.max_event_bytes);
    let mut ping_every = config.ping_interval();
    let mut next_ping = tokio::time::Instant::now();
    let mut last_heard = tokio::time::Instant::now();
    let label = channel.id.clone();

    let why = loop {
        let silent_at = last_heard + ping_every * 2;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break None,
            Some(ack) = outbox.recv() => {
                if let Err(e) = sink.send(ack).await {
                    break Some(format!("cannot send an acknowledgement: {}", describe(&e)));
                }
            }
            () = tokio::time::sleep_until(next_ping) => {
                next_ping = tokio::time::Instant::now() + ping_every;
                let ping = Frame::ping(service_id).to_bytes();
                if let Err(e) = sink.send(Message::Binary(ping.into())).await {
                    break Some(format!("cannot send a ping: {}", describe(&e)));
                }
            }
            () = tokio::time::sleep_until(silent_at) => {
                metrics::counter!(common::metric_names::INGRESS_LONG_CONNECTION_FRAMES_TOTAL, "channel" => label.clone(), "kind" => "silence").increment(1);
                break Some(format!("nothing heard for {} s (two ping intervals)", (ping_every * 2).as_secs()));
            }
            msg = stream.next() => {
                last_heard = tokio::time::Instant::now();
                let bytes = match msg {
                    None => break Some("closed by the peer".into()),
                    Some(Err(e)) => break Some(describe(&e)),
                    Some(Ok(Message::Close(frame))) => {
                        break Some(format!("closed by Lark{}", frame.map(|f| format!(": {} {}", f.code, f.reason)).unwrap_or_default()))
                    }
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(_)) => continue,
                };
                let mut frame = match Frame::decode_bytes(&bytes) {
                    Ok(f) => f,
                    Err(e) => {
                        metrics::counter!(common::metric_names::INGRESS_LONG_CONNECTION_FRAMES_TOTAL, "channel" => label.clone(), "kind" => "invalid").increment(1);
                        tracing::warn!(channel = %label, error = %e, bytes = bytes.len(), "a frame that is not pbbp2: ignored");
                        continue;
                    }
                };
                let kind = frame.kind();
                metrics::counter!(common::metric_names::INGRESS_LONG_CONNECTION_FRAMES_TOTAL, "channel" => label.clone(), "kind" => kind.label()).increment(1);
                match kind {
                    Kind::Ping => {}
                    Kind::Pong => {
                        if let Some(new) = frame.payload.as_deref().and_then(ClientConfig::from_pong) {
                            if new != *config {
                                tracing::info!(channel = %label, ping_secs = new.ping_interval, reconnect_secs = new.reconnect_interval, "Lark sent new long-connection settings");
                                *config = new;
                                ping_every = config.ping_interval();
                                next_ping = tokio::time::Instant::now() + ping_every;
                            }
                        }
                    }
                    Kind::Other => tracing::debug!(channel = %label, method = frame.method, kind = ?frame.header("type"), "a frame of an unknown kind: ignored"),
                    Kind::Event | Kind::Card => {
                        let h = frame.data_headers();
                        let part = frame.payload.take().unwrap_or_default();
                        let payload = if h.sum > 1 {
                            match fragments.add(&h.message_id, h.sum, h.seq, part, Instant::now()) {
                                Ok(Some(whole)) => whole,
                                Ok(None) => continue,
                                Err(e) => {
                                    // Garbage headers, or an event too large to hold: it cannot
                                    // get better by a re-push, so it is answered as handled.
                                    tracing::warn!(channel = %label, message_id = %h.message_id, error = %e, "fragment refused");
                                    let ack = frame.ack(&Answer::OK, Duration::ZERO);
                                    count_ack(&label, &Answer::OK);
                                    if acks.try_send(Message::Binary(ack.to_bytes().into())).is_err() {
                                        tracing::warn!(channel = %label, "acknowledgement queue full; Lark will push again");
                                    }
                                    continue;
                                }
                            }
                        } else {
                            part
                        };
                        let Ok(permit) = permits.clone().acquire_owned().await else { break Some("closing".into()) };
                        let (channel, deps, acks) = (channel.clone(), shared.clone(), acks.clone());
                        tasks.spawn(async move {
                            let started = Instant::now();
                            let answer = handler::handle(&channel, &deps, payload, &h.message_id).await;
                            let ack = frame.ack(&answer, started.elapsed());
                            count_ack(&channel.id, &answer);
                            // Fails only when the connection is gone: the event is
                            // stored (or not), and Lark pushes it again either way.
                            let _ = acks.send(Message::Binary(ack.to_bytes().into())).await;
                            drop(permit);
                        });
                    }
                }
                fragments.expire(Instant::now());
            }
        }
    };

    // On shutdown, frames in flight finish (stored and acknowledged) before
    // the close; their acks go out while the socket lives. After a drop
    // there is no socket to answer on: the tasks still store what they
    // hold, and Lark pushes it again (answered once, by de-duplication).
    drop(acks);
    if why.is_none() {
        tasks.close();
        let drain = async {
            while let Some(ack) = outbox.recv().await {
                if sink.send(ack).await.is_err() {
                    break;
                }
            }
        };
        if tokio::time::timeout(deps.drain_timeout, drain).await.is_err() {
            tracing::warn!(channel = %label, in_flight = tasks.len(), "frames still in flight at close: Lark will push them again");
        }
    }
    if why.is_none() {
        let close = CloseFrame { code: CloseCode::Normal, reason: "shutting down".into() };
        let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(Some(close)))).await;
        // The closing handshake: wait (briefly) for Lark's Close in return.
        let _ = tokio::time::timeout(Duration::from_secs(1), async { while let Some(Ok(_)) = stream.next().await {} })
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }
    why
}

fn count_ack(channel: &str, answer: &Answer) {
    metrics::counter!(common::metric_names::INGRESS_LONG_CONNECTION_ACKS_TOTAL, "channel" => channel.to_owned(), "code" => answer.code.to_string())
        .increment(1);
}
