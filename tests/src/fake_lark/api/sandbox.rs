//! The sandbox's own routes, not Lark's: the messages a user would see,
//! long-polled so that the sandbox chat shows a reply (or a card growing)
//! the moment it changes, and the registration of a message the sandbox
//! CLI sent as an event itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::fake_lark::{Inner, MessageInfo, SandboxMessage, SandboxPage, SentMessage, Shared};

#[derive(Deserialize)]
pub(super) struct AfterQuery {
    #[serde(default)]
    after: usize,
    /// Wait up to this long (capped at [`LONG_POLL_MAX`]) for a message past
    /// `after` before answering with none: the sandbox chat shows a reply the
    /// moment it arrives without polling in a tight loop.
    #[serde(default)]
    wait_ms: u64,
    /// Also answer (before `wait_ms`) when a message before `after` changed
    /// after this change stamp, listing those in `changed`.
    #[serde(default)]
    changes_since: Option<u64>,
}

/// The longest `GET /_sandbox/messages` holds a request open.
const LONG_POLL_MAX: Duration = Duration::from_secs(5);
/// How often a held request looks for new messages.
const LONG_POLL_STEP: Duration = Duration::from_millis(5);

pub(super) async fn sandbox_messages(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<AfterQuery>,
) -> Json<SandboxPage> {
    let deadline = Instant::now() + Duration::from_millis(query.wait_ms).min(LONG_POLL_MAX);
    loop {
        {
            let mut inner = shared.lock();
            inner.expire_streaming();
            let changed = query
                .changes_since
                .is_some_and(|since| inner.visible_stamps.iter().take(query.after).any(|stamp| *stamp > since));
            let ready = inner.visible.len() > query.after || changed;
            if ready || Instant::now() >= deadline || shared.cancel.is_cancelled() {
                return Json(sandbox_page(&inner, query.after, query.changes_since));
            }
        }
        tokio::time::sleep(LONG_POLL_STEP).await;
    }
}

fn sandbox_page(inner: &Inner, after: usize, changes_since: Option<u64>) -> SandboxPage {
    let shown = |(index, m): (usize, &SentMessage)| {
        let m = inner.with_card(m);
        let card = m.card.as_ref();
        SandboxMessage {
            index,
            app_id: m.app_id.clone(),
            via: m.via.clone(),
            message_id: m.message_id.clone(),
            chat_id: m.chat_id.clone(),
            thread_id: m.thread_id.clone(),
            msg_type: m.msg_type.clone(),
            content: m.content.clone(),
            text: m.text(),
            uuid: m.uuid.clone(),
            reply_in_thread: m.reply_in_thread,
            updates: m.updates,
            card_id: card.map(|c| c.card_id.clone()),
            version: m.updates as u64 + card.map_or(0, |c| c.version),
            streaming: card.is_some_and(|c| c.streaming),
            card: match card {
                Some(c) => Some(c.json.clone()),
                None => (m.msg_type == "interactive").then(|| m.content.clone()),
            },
        }
    };
    let messages = inner.visible.iter().enumerate().skip(after).map(shown).collect();
    let changed = match changes_since {
        Some(since) => inner
            .visible
            .iter()
            .enumerate()
            .take(after)
            .filter(|(index, _)| inner.visible_stamps.get(*index).is_some_and(|stamp| *stamp > since))
            .map(shown)
            .collect(),
        None => Vec::new(),
    };
    SandboxPage { messages, next: inner.visible.len(), changed, stamp: inner.stamp }
}

/// The body of `POST /_sandbox/register`: what [`FakeLark::register_message`]
/// does, for a process that sends events itself (the sandbox CLI).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxRegistration {
    pub message_id: String,
    pub chat_id: String,
    pub thread_id: Option<String>,
}

pub(super) async fn sandbox_register(
    State(shared): State<Arc<Shared>>,
    Json(r): Json<SandboxRegistration>,
) -> StatusCode {
    let info = MessageInfo { chat_id: r.chat_id, thread_id: r.thread_id, root_id: None };
    shared.lock().messages.insert(r.message_id, info);
    StatusCode::NO_CONTENT
}
