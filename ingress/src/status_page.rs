//! `GET /status` (HTML, no JavaScript) and `GET /status.json`: per channel,
//! the last event received, the last answer sent, the last error with its
//! fix, and the dead letters waiting. The answer to "I sent a message but got
//! no response" at a glance.
//!
//! Off unless `ingress.admin_token` is set (`deploy/run-local` sets a fresh
//! one in sandbox mode and prints it); the token goes in
//! `Authorization: Bearer <token>`, or as the password of HTTP Basic
//! authentication so a browser can open the page (any user name).
//!
//! Under each channel's row, [`advice`] says what to look at next, from what
//! the row shows: nothing received yet, events but no answers, answers that
//! do not reach Lark, dead letters, or all well.

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
    /// The long connections of this replica.
    pub connections: crate::long_connection::Board,
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
    /// A long-connection channel's connections in this replica (state, last
    /// event, last problem); `None` for a webhook channel.
    pub long_connection: Option<crate::long_connection::board::ChannelConnections>,
    /// What to look at next, from the fields above ([`advice`]).
    pub advice: String,
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
                if let Some(channel) = page.topology.parse(&subject).map(|s| s.channel()) {
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
            .max_by_key(|(_, e)| sortable(&e.at));
        let mut status = ChannelStatus {
            channel: channel.clone(),
            last_event_received: ok("ingress"),
            last_question_answered: ok("relay"),
            last_answer_sent: ok("responder"),
            last_error,
            dead_letters_waiting: dead_counts.get(channel).copied().unwrap_or(0),
            long_connection: page.connections.get(channel),
            advice: String::new(),
        };
        status.advice = advice(&status);
        out.push(status);
    }
    out
}

/// An RFC 3339 time in UTC that compares as text: its fraction of a second
/// padded to nine digits (the status board writes as many as it needs).
fn sortable(t: &str) -> String {
    let Some((head, rest)) = t.split_once('.') else {
        return t.strip_suffix('Z').map_or_else(|| t.to_owned(), |h| format!("{h}.000000000Z"));
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    format!("{head}.{:0<9}{}", &rest[..digits], &rest[digits..])
}

/// What to look at next for one channel, from what its row shows.
pub fn advice(c: &ChannelStatus) -> String {
    let newer = |a: &Option<String>, b: &Option<String>| match (a, b) {
        (Some(a), Some(b)) => sortable(a) > sortable(b),
        (Some(_), None) => true,
        (None, _) => false,
    };
    let error_at = c.last_error.as_ref().map(|(_, e)| e.at.clone());
    let mut out = match (&c.last_event_received, &c.last_question_answered, &c.last_answer_sent) {
        (None, _, _) if c.long_connection.as_ref().is_some_and(|l| l.up == 0) => {
            "No long connection to Lark is up in this replica: see its last problem, and `ingress --check`.".to_owned()
        }
        (None, _, _) if c.long_connection.is_some() => "No event received yet: in the Lark console, check that \
                         Events & Callbacks uses the persistent connection mode with im.message.receive_v1, and that \
                         the app's version is published."
            .to_owned(),
        (None, _, _) => "No event received yet: check the Request URL and the event subscription \
                         (im.message.receive_v1) in the Lark console, and that the app's version is published. \
                         In the sandbox, send a message with `sandbox chat`."
            .to_owned(),
        (Some(_), None, _) => "Events arrive but no question was answered yet: see the last error, \
                               and the relay's log (FastGPT's root URL and API key: `relay --check`)."
            .to_owned(),
        (Some(_), Some(_), None) => "FastGPT answers but no answer reached Lark yet: usually a missing \
                                     permission (im:message:send_as_bot) or a version not published; \
                                     see the last error and `responder --check`."
            .to_owned(),
        (Some(_), Some(_), Some(_)) if newer(&error_at, &c.last_answer_sent) => {
            "Working, but the last error is newer than the last answer sent: see its fix.".to_owned()
        }
        (Some(_), Some(_), Some(_)) => "Working: events received, questions answered, answers sent.".to_owned(),
    };
    if c.dead_letters_waiting > 0 {
        out.push_str(&format!(
            " {} dead letter(s) waiting: `responder --dead-letters` lists them with their reasons; \
             fix the cause, then `responder --redrive`.",
            c.dead_letters_waiting
        ));
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
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n\
             {}<tr><td></td><td colspan=\"5\"><i>next:</i> {}</td></tr>\n",
            esc(&c.channel),
            t(&c.last_event_received),
            t(&c.last_question_answered),
            t(&c.last_answer_sent),
            c.dead_letters_waiting,
            error,
            c.long_connection
                .as_ref()
                .map(|l| format!(
                    "<tr><td></td><td colspan=\"5\"><i>long connection (this replica):</i> {}</td></tr>\n",
                    esc(&l.summary())
                ))
                .unwrap_or_default(),
            esc(&c.advice)
        ));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>lark-bridge status</title>\
         <style>body{{font-family:sans-serif}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}table{{border-collapse:collapse}}</style>\
         </head><body><h1>lark-bridge status</h1>\
         <table><tr><th>channel</th><th>last event received</th><th>last question answered</th><th>last answer sent</th><th>dead letters waiting</th><th>last error</th></tr>\n{rows}</table>\
         <p>Times are UTC; the page shows what the services reported up to two seconds ago. Reload for news.</p>\
         </body></html>"
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> ChannelStatus {
        ChannelStatus {
            channel: "c".into(),
            last_event_received: None,
            last_question_answered: None,
            last_answer_sent: None,
            last_error: None,
            dead_letters_waiting: 0,
            long_connection: None,
            advice: String::new(),
        }
    }

    fn error_at(at: &str) -> Option<(String, common::status::StatusError)> {
        let e = common::status::StatusError { at: at.into(), what: "w".into(), fix: "f".into() };
        Some(("responder".into(), e))
    }

    #[test]
    fn the_advice_follows_what_the_row_shows() {
        let mut c = status();
        assert!(advice(&c).starts_with("No event received yet"), "{}", advice(&c));

        c.last_event_received = Some("2026-01-01T10:00:00Z".into());
        assert!(advice(&c).starts_with("Events arrive but no question"), "{}", advice(&c));
        assert!(!advice(&c).contains("No event received"));

        c.last_question_answered = Some("2026-01-01T10:00:01Z".into());
        assert!(advice(&c).contains("im:message:send_as_bot"), "{}", advice(&c));

        c.last_answer_sent = Some("2026-01-01T10:00:02Z".into());
        assert!(advice(&c).starts_with("Working: "), "{}", advice(&c));
        c.last_error = error_at("2026-01-01T09:00:00Z");
        assert!(advice(&c).starts_with("Working: "), "an older error: {}", advice(&c));
        c.last_error = error_at("2026-01-01T11:00:00Z");
        assert!(advice(&c).contains("last error is newer"), "{}", advice(&c));

        c.last_error = error_at("2026-01-01T10:00:02.5Z");
        c.last_answer_sent = Some("2026-01-01T10:00:02.50000001Z".into());
        assert!(advice(&c).starts_with("Working: "), "fractions of a second compare as numbers: {}", advice(&c));
        assert_eq!(sortable("2026-01-01T10:00:02Z"), "2026-01-01T10:00:02.000000000Z");

        c.dead_letters_waiting = 2;
        assert!(advice(&c).contains("2 dead letter(s) waiting") && advice(&c).contains("--redrive"), "{}", advice(&c));
    }

    #[test]
    fn a_long_connection_channel_gets_its_own_advice() {
        let mut c = status();
        c.long_connection = Some(crate::long_connection::board::ChannelConnections { wanted: 1, ..Default::default() });
        assert!(advice(&c).contains("No long connection to Lark is up"), "{}", advice(&c));
        c.long_connection =
            Some(crate::long_connection::board::ChannelConnections { wanted: 1, up: 1, ..Default::default() });
        assert!(advice(&c).contains("persistent connection mode"), "{}", advice(&c));
    }
}
