//! `POST /lark/{channel}/events`: body → verified event → durable publish → 200.
//!
//! | answer | when |
//! |---|---|
//! | 200 `{"challenge": ...}` | url_verification |
//! | 200 `{}` | the event is stored in JetStream (or was already) |
//! | 200 `{"toast": ...}` | a click on a question card: taken (with the card updated) or refused, said in the toast |
//! | 400 | not JSON, undecryptable, not a schema 2.0 callback |
//! | 401 | bad or missing signature, stale timestamp, wrong token |
//! | 403 | the event belongs to another app; or the channel receives its events over the long connection and has no secret to check a callback with |
//! | 404 | no such channel |
//! | 413 | body over `ingress.body_limit_bytes` |
//! | 503 | JetStream did not store it in time: Lark retries |

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use common::channel::{Channel, Channels};
use common::config::Subscription;
use serde_json::json;
use tracing::Instrument;

use common::lark::card_action::CARD_ACTION;

use crate::accept::Via;
use crate::callback::{self, Verified};
use crate::publish::Publisher;

pub struct AppState {
    pub channels: Channels,
    pub status: common::status::StatusBoard,
    pub publisher: Publisher,
    pub replay_window_secs: u64,
    pub clicks: Arc<crate::card_action::Clicks>,
}

pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .route("/lark/{channel}/events", post(lark_events))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn error(status: StatusCode, reason: &str, message: String) -> Response {
    (status, Json(json!({ "error": reason, "message": message }))).into_response()
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

async fn lark_events(
    State(state): State<Arc<AppState>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(channel) = state.channels.get(&channel_id) else {
        metrics::counter!(common::metric_names::INGRESS_REJECTED_TOTAL, "reason" => "unknown_channel").increment(1);
        tracing::warn!(channel = %channel_id, "callback for an unknown channel");
        return error(
            StatusCode::NOT_FOUND,
            "unknown_channel",
            format!(
                "no channel {channel_id:?}: the Request URL must be /lark/<id>/events with an id from [[channels]]"
            ),
        );
    };
    if channel.subscription == Subscription::LongConnection
        && channel.encrypt_key.is_none()
        && channel.verification_token.is_none()
    {
        metrics::counter!(common::metric_names::INGRESS_REJECTED_TOTAL, "reason" => "long_connection_only", "channel" => channel.id.clone())
            .increment(1);
        tracing::warn!(channel = %channel.id, "callback for a long-connection channel without encrypt_key or verification_token: refused");
        return error(
            StatusCode::FORBIDDEN,
            "long_connection_only",
            format!(
                "channel {:?} receives its events over the long connection (subscription = \"long_connection\") and has \
                 no encrypt_key or verification_token to check a callback with: in the Lark console keep the subscription \
                 mode \"persistent connection\", or set subscription = \"webhook\" with an Encrypt Key",
                channel.id
            ),
        );
    }
    let verified = match callback::verify(channel, &headers, &body, now_secs(), state.replay_window_secs) {
        Ok(v) => v,
        Err(rejection) => {
            metrics::counter!(common::metric_names::INGRESS_REJECTED_TOTAL, "reason" => rejection.reason(), "channel" => channel.id.clone())
                .increment(1);
            tracing::warn!(channel = %channel.id, reason = rejection.reason(), error = %rejection, "callback rejected");
            state.status.error(
                &channel.id,
                format!("callback refused ({}): {rejection}", rejection.status()),
                rejection.fix(),
            );
            return error(rejection.status(), rejection.reason(), rejection.to_string());
        }
    };
    match verified {
        Verified::Challenge(challenge) => {
            tracing::info!(channel = %channel.id, "answered the url_verification challenge");
            Json(json!({ "challenge": challenge })).into_response()
        }
        Verified::Event(event) => {
            // The span opens once the event is known, with its fields set at
            // once: recording fields later re-serialises a JSON span each time.
            let span = tracing::info_span!(
                "ingress.callback",
                channel = %channel.id,
                trace_id = tracing::field::Empty,
                event_id = %event.envelope.header.event_id,
                dedup_key = %event.dedup_key
            );
            common::telemetry::record_trace_id(&span);
            if event.envelope.header.event_type == CARD_ACTION {
                // Answered with a toast (and a card), never a retry: Lark does not send it again.
                let answer = crate::card_action::answer(
                    &state.clicks,
                    &state.publisher,
                    &state.status,
                    channel,
                    &event,
                    Via::Webhook,
                )
                .instrument(span)
                .await;
                return Json(answer).into_response();
            }
            accept(&state, channel, &event).instrument(span).await
        }
    }
}

/// Publishes a verified event and answers Lark.
async fn accept(state: &AppState, channel: &Channel, event: &crate::callback::VerifiedEvent) -> Response {
    match crate::accept::store(&state.publisher, &state.status, channel, event, Via::Webhook).await {
        Ok(_) => Json(json!({})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
    }
}
