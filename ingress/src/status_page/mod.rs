//! `GET /status` (HTML, no JavaScript) and `GET /status.json`: per channel,
//! its mode and long connections, the last event received, the last answer
//! sent, the last error with its fix, events and answers of the last hour
//! with the answers' median latency, Lark API calls this month, and the dead
//! letters waiting, each with a re-drive button. What an operator opens in
//! the morning, and the answer to "I sent a message but got no response".
//!
//! Off unless `ingress.admin_token` is set (`deploy/run-local` sets a fresh
//! one in sandbox mode and prints it); the token goes in
//! `Authorization: Bearer <token>`, or as the password of HTTP Basic
//! authentication so a browser can open the page (any user name). Every page
//! and action needs it.
//!
//! Safe to open on a hostile day: every value shown is escaped (an error text
//! can echo what a sender wrote), the page forbids scripts, frames and
//! foreign form targets (Content-Security-Policy), and the one action,
//! `POST /status/redrive`, needs a CSRF token that only the page carries (an
//! HMAC of the admin token: the same on every replica, unknown to another
//! site the browser visits while it remembers the Basic password).
//!
//! Under each channel, [`advice`](fn@advice) says what to look at next, from
//! what the row shows: nothing received yet, events but no answers, answers
//! that do not reach Lark, dead letters, or all well.
//!
//! This file holds the routes and what every request passes first: the
//! admin token and the CSRF token of the forms. The rest, one job a file:
//!
//! - `gather.rs`: each channel's status, from the status bucket, the counts
//!   of the last hour, the dead-letter stream and the long-connection board;
//!   `/status.json` is this as it is.
//! - `advice.rs`: what a channel's row means: its badge, and the "Next:"
//!   line that says what to look at.
//! - `time.rs`: times as the page shows them ("3 min ago", the exact UTC time
//!   on hover) and as they compare.
//! - `html.rs`: the page itself: each channel's section, the style, the
//!   escaping, and the headers that forbid scripts and frames.
//! - `redrive.rs`: the re-drive form and its `POST`, checked against the
//!   CSRF token and the site it came from.

mod advice;
mod gather;
mod html;
mod redrive;
mod time;

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use common::topology::Topology;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

pub use advice::advice;
pub use gather::{ChannelStatus, DeadLetterView, LarkCalls};
pub use html::esc;
pub use time::ago;

/// Dead letters listed on the page (newest first); the count covers all.
pub const DEAD_LETTERS_SHOWN: usize = 50;

pub struct StatusPage {
    pub token: SecretString,
    pub channels: Vec<PageChannel>,
    /// The status bucket, opened on first use (it may not exist at start).
    pub store: tokio::sync::OnceCell<kv::Store>,
    pub js: jetstream::Context,
    pub topology: Topology,
    /// The long connections of this replica.
    pub connections: crate::long_connection::Board,
}

/// A configured channel, as the page names it.
#[derive(Debug, Clone)]
pub struct PageChannel {
    pub id: String,
    pub long_connection: bool,
    /// Its Lark app, whose calls this month the page shows.
    pub app_id: String,
    /// `lark_calls_per_month`, when set.
    pub lark_calls_per_month: Option<u64>,
}

pub fn router(page: StatusPage) -> Router {
    Router::new()
        .route("/status", get(html::page))
        .route("/status.json", get(json))
        .route("/status/redrive", post(redrive::redrive))
        .with_state(Arc::new(page))
}

fn authorized(page: &StatusPage, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let given: Option<String> = if let Some(t) = value.strip_prefix("Bearer ") {
        Some(t.trim().to_owned())
    } else if let Some(b) = value.strip_prefix("Basic ") {
        base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|s| s.split_once(':').map(|(_, p)| p.to_owned()))
    } else {
        None
    };
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(page.token.expose_secret().as_bytes())))
}

fn refuse() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"lark-bridge status\", charset=\"UTF-8\"")],
        "the status page needs ingress.admin_token: Authorization: Bearer <token>, or it as the Basic password\n",
    )
        .into_response()
}

/// The CSRF token of the page's forms: an HMAC of the admin token, so every
/// replica computes the same one and no other site can.
fn csrf_token(page: &StatusPage) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(page.token.expose_secret().as_bytes()) else {
        return String::new();
    };
    mac.update(b"lark-bridge status page: re-drive form");
    hex::encode(mac.finalize().into_bytes())
}

/// `GET /status.json`: what the page shows, as gathered.
async fn json(State(page): State<Arc<StatusPage>>, headers: HeaderMap) -> Response {
    if !authorized(&page, &headers) {
        return refuse();
    }
    Json(gather::collect(&page).await).into_response()
}
