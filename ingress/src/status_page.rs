//! `GET /status` (HTML, no JavaScript) and `GET /status.json`: per channel,
//! the last event received, the last answer sent, the last error with its
//! fix, and the dead letters waiting. The answer to "I sent a message but got
//! no response" at a glance.
//!
//! Off unless `ingress.admin_token` is set; the token goes in
//! `Authorization: Bearer <token>`, or as the password of HTTP Basic
//! authentication so a browser can open the page (any user name).

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use common::status::{read, StageStatus};
use common::topology::Topology;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use subtle::ConstantTimeEq;

pub struct StatusPage {
    pub token: SecretString,
    pub channels: Vec<String>,
    /// The status bucket, opened on first use (it may not exist at start).
    pub store: tokio::sync::OnceCell<kv::Store>,
    pub js: jetstream::Context,
    pub topology: Topology,
}

pub fn router(page: StatusPage) -> Router {
    Router::new().route("/status", get(html)).route("/status.json", get(json)).with_state(Arc::new(page))
}

#[derive(Debug, Serialize)]
pub struct ChannelStatus {
    pub channel: String,
    pub last_event_received: Option<String>,
    pub last_question_answered: Option<String>,
    pub last_answer_sent: Option<String>,
    /// The newest error of any service, with the service's name.
    pub last_error: Option<(String, common::status::StatusError)>,
    pub dead_letters_waiting: u64,
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

async fn collect(page: &StatusPage) -> Vec<ChannelStatus> {
    let mut dead_counts = std::collections::HashMap::new();
    if let Ok(stream) = page.js.get_stream(page.topology.dead_stream()).await {
        let filter = format!("{}.dead.>", page.topology.namespace());
        if let Ok(mut subjects) = stream.info_with_subjects(filter).await {
            use futures::StreamExt;
            while let Some(Ok((subject, count))) = subjects.next().await {
                if let Some(channel) = subject.split('.').nth(2) {
                    *dead_counts.entry(channel.to_owned()).or_insert(0u64) += count as u64;
                }
            }
        }
    }
    let mut out = Vec::new();
    let store = page.store.get_or_try_init(|| page.topology.status(&page.js)).await.ok();
    for channel in &page.channels {
        let stages = match store {
            Some(s) => read(s, channel).await,
            None => Default::default(),
        };
        let ok = |s: &str| stages.get(s).and_then(|st: &StageStatus| st.last_ok_at.clone());
        let last_error = stages
            .iter()
            .filter_map(|(stage, st)| st.last_error.clone().map(|e| (stage.to_string(), e)))
            .max_by(|a, b| a.1.at.cmp(&b.1.at));
        out.push(ChannelStatus {
            channel: channel.clone(),
            last_event_received: ok("ingress"),
            last_question_answered: ok("relay"),
            last_answer_sent: ok("responder"),
            last_error,
            dead_letters_waiting: dead_counts.get(channel).copied().unwrap_or(0),
        });
    }
    out
}

async fn json(State(page): State<Arc<StatusPage>>, headers: HeaderMap) -> Response {
    if !authorized(&page, &headers) {
        return refuse();
    }
    Json(collect(&page).await).into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn html(State(page): State<Arc<StatusPage>>, headers: HeaderMap) -> Response {
    if !authorized(&page, &headers) {
        return refuse();
    }
    let mut rows = String::new();
    for c in collect(&page).await {
        let t = |v: &Option<String>| esc(v.as_deref().unwrap_or("never"));
        let error = match &c.last_error {
            Some((stage, e)) => {
                format!("<b>{}</b> at {}<br>{}<br><i>fix:</i> {}", esc(stage), esc(&e.at), esc(&e.what), esc(&e.fix))
            }
            None => "none".into(),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&c.channel),
            t(&c.last_event_received),
            t(&c.last_question_answered),
            t(&c.last_answer_sent),
            c.dead_letters_waiting,
            error
        ));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>lark-bridge status</title>\
         <style>body{{font-family:sans-serif}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}table{{border-collapse:collapse}}</style>\
         </head><body><h1>lark-bridge status</h1>\
         <table><tr><th>channel</th><th>last event received</th><th>last question answered</th><th>last answer sent</th><th>dead letters waiting</th><th>last error</th></tr>\n{rows}</table>\
         <p>No event received: check the Request URL and the event subscription in the Lark console. Events but no answers: see the last error; \
         a FastGPT record but no answer in Lark usually means a missing permission. Dead letters: <code>responder --dead-letters</code>, then <code>--redrive</code>.</p>\
         </body></html>"
    ))
    .into_response()
}
