//! One event received over the long connection, from its joined payload to
//! the acknowledgement's answer: the checks the Request URL makes after
//! decryption ([`crate::callback::accept_plain`]), then the durable publish
//! ([`crate::accept::store`]).
//!
//! | outcome | answer | why |
//! |---|---|---|
//! | stored (or already stored: a re-push) | 200 | Lark stops pushing it |
//! | not stored (NATS down, stream full, too slow) | 500 | Lark pushes it again after 15 s, 5 min, 1 h, 6 h |
//! | refused (not JSON, not schema 2.0, another app, bad ids, too large) | 200 | retrying cannot help: logged, counted, on `/status`, nothing published |
//!
//! Card actions may come as `type=card` frames or as `type=event`; both go
//! this way (the payload's `header.event_type` says what it is). A click on
//! a question card is answered like on the Request URL
//! ([`crate::card_action`]): `{"code": 200, "data": <base64 of the toast
//! and card>}`; any card action is answered, never left for Lark to time
//! out (the user would see error 200340).

use common::channel::Channel;
use common::lark::card_action::CARD_ACTION;
use common::lark::long_connection::frame::Answer;
use tracing::Instrument;

use super::Deps;
use crate::accept::Via;
use crate::callback;

/// Checks and stores one event; says what to answer Lark.
pub async fn handle(channel: &Channel, deps: &Deps, payload: Vec<u8>, message_id: &str) -> Answer {
    if payload.len() > deps.max_event_bytes {
        return refused(
            channel,
            deps,
            "too_large",
            format!("an event of {} bytes, over ingress.body_limit_bytes ({})", payload.len(), deps.max_event_bytes),
            "raise ingress.body_limit_bytes if Lark's events are that large",
        );
    }
    let event = match callback::accept_plain(channel, payload) {
        Ok(event) => event,
        Err(rejection) => {
            return refused(channel, deps, rejection.reason(), rejection.to_string(), rejection.fix());
        }
    };
    let span = tracing::info_span!(
        "ingress.long_connection",
        channel = %channel.id,
        trace_id = tracing::field::Empty,
        event_id = %event.envelope.header.event_id,
        dedup_key = %event.dedup_key,
        frame_message_id = %message_id
    );
    common::telemetry::record_trace_id(&span);
    if event.envelope.header.event_type == CARD_ACTION {
        // The answer (toast, card) travels in the acknowledgement's data.
        let answer = crate::card_action::answer(
            &deps.clicks,
            &deps.publisher,
            &deps.status,
            channel,
            &event,
            Via::LongConnection,
        )
        .instrument(span)
        .await;
        deps.board.event(&channel.id);
        return Answer { code: 200, data: Some(answer.to_string().into_bytes()) };
    }
    let stored = crate::accept::store(&deps.publisher, &deps.status, channel, &event, Via::LongConnection)
        .instrument(span)
        .await;
    match stored {
        Ok(published) => {
            deps.board.event(&channel.id);
            if published.duplicate {
                metrics::counter!(common::metric_names::INGRESS_LONG_CONNECTION_REPUSHES_ANSWERED_TOTAL, "channel" => channel.id.clone())
                    .increment(1);
            }
            Answer::OK
        }
        Err(_) => Answer::RETRY,
    }
}

/// An event that can never be stored: acknowledged as handled, so that Lark
/// does not push it again for hours, and reported.
fn refused(channel: &Channel, deps: &Deps, reason: &'static str, what: String, fix: &str) -> Answer {
    metrics::counter!(common::metric_names::INGRESS_REJECTED_TOTAL, "reason" => reason, "channel" => channel.id.clone())
        .increment(1);
    tracing::warn!(channel = %channel.id, reason, error = %what, "event over the long connection refused; acknowledged so Lark does not push it again");
    deps.status.error(&channel.id, format!("event over the long connection refused ({reason}): {what}"), fix);
    Answer::OK
}
