//! Send, reply and update: the body checked as Lark checks it (content per
//! `msg_type`, size limits 230025), a `uuid` repeated within the hour
//! answered with the first message and nothing shown, the per-chat rate
//! limit, a card sent by reference checked against CardKit; what a user
//! would see is recorded apart from the attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_json, Outcome};
use crate::fake_lark::{
    cardkit, Endpoint, Failure, MessageInfo, SentMessage, Shared, Via, CARD_LIMIT_BYTES, TEXT_LIMIT_BYTES, UUID_WINDOW,
};
use crate::lark_events::{new_message_id, now_ms, random_hex};

/// The fields of a send or reply request body that Lark checks.
struct MessageRequest {
    msg_type: String,
    content_raw: String,
    content: Value,
    uuid: Option<String>,
    reply_in_thread: bool,
}

fn parse_message_request(body: &Value) -> Result<MessageRequest, Outcome> {
    let msg_type = body.get("msg_type").and_then(Value::as_str).unwrap_or_default();
    if msg_type.is_empty() {
        return Err(Outcome::field_violation("msg_type", "msg_type is required"));
    }
    let Some(content_raw) = body.get("content").and_then(Value::as_str) else {
        return Err(Outcome::field_violation("content", "content is required and must be a string"));
    };
    let uuid = body.get("uuid").and_then(Value::as_str).map(str::to_owned);
    if uuid.as_ref().is_some_and(|u| u.chars().count() > 50) {
        return Err(Outcome::field_violation("uuid", "the max len is 50"));
    }
    let content = validate_content(msg_type, content_raw)?;
    Ok(MessageRequest {
        msg_type: msg_type.to_owned(),
        content_raw: content_raw.to_owned(),
        content,
        uuid,
        reply_in_thread: body.get("reply_in_thread").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Checks `content` as Lark does for the types the bridge sends.
fn validate_content(msg_type: &str, raw: &str) -> Result<Value, Outcome> {
    let Ok(content) = serde_json::from_str::<Value>(raw) else {
        return Err(Outcome::invalid_param("content is not a string in json format"));
    };
    let limit = if msg_type == "text" { TEXT_LIMIT_BYTES } else { CARD_LIMIT_BYTES };
    if matches!(msg_type, "text" | "post" | "interactive") && raw.len() > limit {
        return Err(Outcome::error(400, 230025, "The length of the message content reaches its limit."));
    }
    let valid = match msg_type {
        "text" => content.get("text").is_some_and(Value::is_string),
        // A sent post needs a locale wrapper: {"zh_cn": {"title", "content": [[...]]}}.
        "post" => content
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.values().all(|v| v.get("content").is_some_and(Value::is_array))),
        "interactive" => content.is_object(),
        _ => true,
    };
    if valid {
        Ok(content)
    } else {
        Err(Outcome::invalid_param(&format!("invalid {msg_type} content")))
    }
}

fn pseudo_chat_id(message_id: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("oc_{}", hex::encode(&Sha256::digest(message_id.as_bytes())[..16]))
}

fn message_data(m: &SentMessage, parent_id: Option<&str>, root_id: Option<&str>, content_raw: &str) -> Value {
    let mut data = json!({
        "message_id": m.message_id,
        "msg_type": m.msg_type,
        "create_time": m.create_time_ms.to_string(),
        "update_time": now_ms().to_string(),
        "deleted": false,
        "updated": m.updates > 0,
        "chat_id": m.chat_id.clone().unwrap_or_else(|| pseudo_chat_id(&m.message_id)),
        "sender": { "id": m.app_id, "id_type": "app_id", "sender_type": "app", "tenant_key": "736588c9260f175e" },
        "body": { "content": content_raw },
    });
    if let Some(parent) = parent_id {
        data["parent_id"] = json!(parent);
        data["root_id"] = json!(root_id.unwrap_or(parent));
    }
    if let Some(thread) = &m.thread_id {
        data["thread_id"] = json!(thread);
    }
    data
}

/// The shared part of send and reply: validation, per-chat limit, uuid idempotency.
async fn deliver_message(
    shared: &Shared,
    endpoint: Endpoint,
    headers: &HeaderMap,
    via: Via,
    body: &Bytes,
    chat_hint: Option<String>,
) -> Response {
    let call = match shared.begin(endpoint, headers).await {
        Ok(call) => call,
        Err(refused) => return shared.refuse(endpoint, refused),
    };
    let request = match parse_json(body).and_then(|b| parse_message_request(&b)) {
        Ok(request) => request,
        Err(outcome) => return shared.finish(endpoint, &call, outcome, None, false),
    };
    let mut inner = shared.lock();
    let target = match &via {
        Via::Reply { message_id } => inner.messages.get(message_id).cloned(),
        Via::Chat { .. } => None,
    };
    let chat_id = chat_hint.or_else(|| target.as_ref().map(|t| t.chat_id.clone()));
    let thread_id = target.as_ref().and_then(|t| t.thread_id.clone()).or_else(|| {
        (request.reply_in_thread && matches!(via, Via::Reply { .. })).then(|| format!("omt_{}", random_hex(6)))
    });
    let message = SentMessage {
        app_id: call.app_id.clone(),
        via: via.clone(),
        message_id: new_message_id(),
        chat_id: chat_id.clone(),
        thread_id,
        msg_type: request.msg_type.clone(),
        content: request.content.clone(),
        uuid: request.uuid.clone(),
        reply_in_thread: request.reply_in_thread,
        updates: 0,
        create_time_ms: now_ms(),
        received_at: Instant::now(),
        card: None,
    };
    let (parent, root) = match &via {
        Via::Reply { message_id } => {
            let root = target.as_ref().and_then(|t| t.root_id.clone()).unwrap_or_else(|| message_id.clone());
            (Some(message_id.clone()), Some(root))
        }
        Via::Chat { .. } => (None, None),
    };

    // Same uuid within the hour: Lark returns the first message, shows nothing new.
    let key = request.uuid.clone().map(|u| (call.app_id.clone(), u));
    let seen = key.as_ref().and_then(|k| inner.by_uuid.get(k).copied());
    if let Some(first) = seen.and_then(|i| inner.visible.get(i)).filter(|m| m.received_at.elapsed() < UUID_WINDOW) {
        let data = message_data(first, parent.as_deref(), root.as_deref(), &first.content.to_string());
        drop(inner);
        let outcome = Outcome::ok(json!({ "code": 0, "msg": "success", "data": data }));
        return shared.finish(endpoint, &call, outcome, Some(message), true);
    }

    // A card sent by reference must exist, be this app's and not be sent yet.
    let card_ref = match cardkit::referenced_card(&inner, &call.app_id, &request.msg_type, &request.content) {
        Ok(card_ref) => card_ref,
        Err(outcome) => {
            drop(inner);
            return shared.finish(endpoint, &call, outcome, Some(message), false);
        }
    };

    if let (Some(limit), Some(chat)) = (inner.chat_rate_limit, &chat_id) {
        let recent = inner
            .visible
            .iter()
            .filter(|m| m.chat_id.as_ref() == Some(chat) && m.received_at.elapsed() < Duration::from_secs(1))
            .count();
        if recent >= limit {
            drop(inner);
            return shared.finish(endpoint, &call, Failure::chat_rate_limited().into_outcome(), Some(message), false);
        }
    }

    let data = message_data(&message, parent.as_deref(), root.as_deref(), &request.content_raw);
    if let Some(chat) = &chat_id {
        let info = MessageInfo { chat_id: chat.clone(), thread_id: message.thread_id.clone(), root_id: root.clone() };
        inner.messages.insert(message.message_id.clone(), info);
    }
    let index = inner.visible.len();
    if let Some(key) = key {
        inner.by_uuid.insert(key, index);
    }
    inner.visible.push(message.clone());
    inner.touch(index);
    if let Some(card_id) = &card_ref {
        cardkit::link_message(&mut inner, card_id, index, &message.message_id);
    }
    drop(inner);
    let outcome = Outcome::ok(json!({ "code": 0, "msg": "success", "data": data }));
    shared.finish(endpoint, &call, outcome, Some(message), false)
}

pub(super) async fn reply_message(
    State(shared): State<Arc<Shared>>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    deliver_message(&shared, Endpoint::Reply, &headers, Via::Reply { message_id }, &body, None).await
}

#[derive(Deserialize)]
pub(super) struct SendQuery {
    receive_id_type: Option<String>,
}

pub(super) async fn send_message(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<SendQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id_type = query.receive_id_type.unwrap_or_default();
    if !matches!(id_type.as_str(), "chat_id" | "open_id" | "user_id" | "union_id" | "email") {
        let outcome = Outcome::field_violation("receive_id_type", "receive_id_type is required");
        return shared.refuse(Endpoint::Send, (None, outcome));
    }
    let receive_id = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.get("receive_id").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    if receive_id.is_empty() {
        let outcome = Outcome::field_violation("receive_id", "receive_id is required");
        return shared.refuse(Endpoint::Send, (None, outcome));
    }
    let chat_hint = (id_type == "chat_id").then(|| receive_id.clone());
    deliver_message(&shared, Endpoint::Send, &headers, Via::Chat { receive_id }, &body, chat_hint).await
}

/// PATCH updates a card the app sent; PUT edits a text or post. Either
/// replaces the content of the visible message in place.
async fn update_message(
    shared: &Shared,
    headers: &HeaderMap,
    message_id: &str,
    body: &Bytes,
    is_patch: bool,
) -> Response {
    let call = match shared.begin(Endpoint::Update, headers).await {
        Ok(call) => call,
        Err(refused) => return shared.refuse(Endpoint::Update, refused),
    };
    let body = match parse_json(body) {
        Ok(body) => body,
        Err(outcome) => return shared.finish(Endpoint::Update, &call, outcome, None, false),
    };
    let mut inner = shared.lock();
    let Some(index) = inner.visible.iter().position(|m| m.message_id == message_id && m.app_id == call.app_id) else {
        drop(inner);
        let outcome = Outcome::invalid_param("message_id is not a message this app sent");
        return shared.finish(Endpoint::Update, &call, outcome, None, false);
    };
    let msg_type = if is_patch {
        "interactive".to_owned()
    } else {
        body.get("msg_type").and_then(Value::as_str).unwrap_or_default().to_owned()
    };
    let raw = body.get("content").and_then(Value::as_str).unwrap_or_default().to_owned();
    let content = match validate_content(&msg_type, &raw) {
        Ok(content) if inner.visible[index].msg_type == msg_type => content,
        Ok(_) => {
            drop(inner);
            let outcome = Outcome::invalid_param("the message type cannot change");
            return shared.finish(Endpoint::Update, &call, outcome, None, false);
        }
        Err(outcome) => {
            drop(inner);
            return shared.finish(Endpoint::Update, &call, outcome, None, false);
        }
    };
    let message = &mut inner.visible[index];
    message.content = content;
    message.updates += 1;
    inner.touch(index);
    let updated = inner.with_card(&inner.visible[index]);
    drop(inner);
    let data = if is_patch { json!({}) } else { message_data(&updated, None, None, &raw) };
    let outcome = Outcome::ok(json!({ "code": 0, "msg": "success", "data": data }));
    shared.finish(Endpoint::Update, &call, outcome, Some(updated), false)
}

pub(super) async fn patch_message(
    State(shared): State<Arc<Shared>>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    update_message(&shared, &headers, &message_id, &body, true).await
}

pub(super) async fn put_message(
    State(shared): State<Arc<Shared>>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    update_message(&shared, &headers, &message_id, &body, false).await
}
