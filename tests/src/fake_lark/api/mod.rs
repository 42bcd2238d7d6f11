//! The HTTP handlers of the fake Lark: request checks, scripted failures and
//! Lark's response envelopes, kept apart from the inspection API of [`FakeLark`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cardkit;
use super::server::sleep_unless_cancelled;
use super::{
    Attempt, Endpoint, Failure, Inner, MessageInfo, Reaction, SandboxMessage, SandboxPage, SentMessage, Shared,
    TokenInfo, Via, CARD_LIMIT_BYTES, INVALID_TOKEN_MSG, MISSING_TOKEN_MSG, TEXT_LIMIT_BYTES, TOKEN_REUSE_SECS,
    UUID_WINDOW,
};
use crate::lark_events::{new_message_id, now_ms, random_hex};

/// The routes of Lark's Open API the bridge uses, plus the sandbox's own.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/open-apis/auth/v3/tenant_access_token/internal", post(tenant_token))
        .route("/open-apis/bot/v3/info", get(bot_info))
        .route("/open-apis/im/v1/messages", post(send_message))
        .route("/open-apis/im/v1/messages/{message_id}", patch(patch_message).put(put_message))
        .route("/open-apis/im/v1/messages/{message_id}/reply", post(reply_message))
        .route("/open-apis/im/v1/messages/{message_id}/reactions", post(add_reaction))
        .route("/open-apis/im/v1/messages/{message_id}/reactions/{reaction_id}", delete(delete_reaction))
        .route("/open-apis/cardkit/v1/cards", post(cardkit::create_card))
        .route("/open-apis/cardkit/v1/cards/{card_id}", put(cardkit::update_card))
        .route("/open-apis/cardkit/v1/cards/{card_id}/settings", patch(cardkit::card_settings))
        .route("/open-apis/cardkit/v1/cards/{card_id}/elements/{element_id}/content", put(cardkit::element_content))
        .route("/_sandbox/messages", get(sandbox_messages))
        .route("/_sandbox/register", post(sandbox_register))
        .merge(super::resources::routes())
        .with_state(shared)
}

/// What a handler answers; also what is recorded about the attempt.
pub(super) enum Outcome {
    Json { status: StatusCode, code: i64, body: Value, headers: Vec<(String, String)> },
    Plain { status: StatusCode, text: &'static str },
}

impl Outcome {
    pub(super) fn ok(body: Value) -> Self {
        Outcome::Json { status: StatusCode::OK, code: 0, body, headers: Vec::new() }
    }

    pub(super) fn error(http_status: u16, code: i64, msg: &str) -> Self {
        Self::error_with(http_status, code, msg, json!({}), Vec::new())
    }

    pub(super) fn error_with(
        http_status: u16,
        code: i64,
        msg: &str,
        mut error: Value,
        headers: Vec<(String, String)>,
    ) -> Self {
        error["log_id"] = json!(log_id());
        let status = StatusCode::from_u16(http_status).unwrap_or(StatusCode::BAD_REQUEST);
        Outcome::Json { status, code, body: json!({ "code": code, "msg": msg, "error": error }), headers }
    }

    fn invalid_param(what: &str) -> Self {
        Self::error(400, 230001, &format!("Your request contains an invalid request parameter, ext={what}"))
    }

    pub(super) fn field_violation(field: &str, description: &str) -> Self {
        let error = json!({ "field_violations": [{ "field": field, "description": description }] });
        Self::error_with(400, 99992402, "field validation failed", error, Vec::new())
    }

    pub(super) fn status_and_code(&self) -> (u16, i64) {
        match self {
            Outcome::Json { status, code, .. } => (status.as_u16(), *code),
            Outcome::Plain { status, .. } => (status.as_u16(), 0),
        }
    }

    fn from_failure(failure: Failure) -> Option<Self> {
        match failure {
            Failure::Lark { http_status, code, msg, headers } => {
                Some(Self::error_with(http_status, code, &msg, json!({}), headers))
            }
            Failure::Http500 => Some(Outcome::Plain { status: StatusCode::INTERNAL_SERVER_ERROR, text: "" }),
            Failure::AcceptButDropResponse | Failure::Delay(_) => None,
        }
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let log_id = log_id();
        match self {
            Outcome::Json { status, body, headers, .. } => {
                let mut response = (status, Json(body)).into_response();
                let map = response.headers_mut();
                for (name, value) in
                    headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).chain([("x-tt-logid", log_id.as_str())])
                {
                    if let (Ok(n), Ok(v)) = (name.parse::<axum::http::HeaderName>(), value.parse()) {
                        map.insert(n, v);
                    }
                }
                response
            }
            Outcome::Plain { status, text } => (status, text).into_response(),
        }
    }
}

fn log_id() -> String {
    format!("2025{}", random_hex(13).to_uppercase())
}

/// The common start of every API call: a scripted failure, then the token.
pub(super) struct Call {
    pub(super) app_id: String,
    pub(super) drop_response: bool,
}

impl Shared {
    /// Consumes this endpoint's next scripted failure: an answer to give now,
    /// or a flag to lose the response after executing the request.
    async fn scripted(&self, endpoint: Endpoint) -> Result<bool, Outcome> {
        let next = self.lock().failures.get_mut(&endpoint).and_then(VecDeque::pop_front);
        match next {
            None => Ok(false),
            Some(Failure::Delay(d)) => {
                sleep_unless_cancelled(d, &self.cancel).await;
                Ok(false)
            }
            Some(Failure::AcceptButDropResponse) => Ok(true),
            Some(other) => Err(Outcome::from_failure(other).unwrap_or_else(|| Outcome::ok(json!({})))),
        }
    }

    pub(super) async fn begin(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
    ) -> Result<Call, (Option<String>, Outcome)> {
        let drop_response = self.scripted(endpoint).await.map_err(|o| (None, o))?;
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err((None, Outcome::error(400, 99991661, MISSING_TOKEN_MSG)));
        };
        let inner = self.lock();
        let app_id = match inner.tokens.get(token) {
            Some(info) if info.remaining().is_some() => info.app_id.clone(),
            _ => return Err((None, Outcome::error(400, 99991663, INVALID_TOKEN_MSG))),
        };
        let scopes = endpoint.scopes();
        let granted = inner.apps.get(&app_id).map(|a| &a.scopes);
        if !scopes.is_empty() && !scopes.iter().any(|s| granted.is_some_and(|g| g.contains(*s))) {
            return Err((Some(app_id.clone()), missing_scope(&app_id, scopes)));
        }
        Ok(Call { app_id, drop_response })
    }

    fn record(
        &self,
        endpoint: Endpoint,
        app_id: Option<String>,
        outcome: &Outcome,
        message: Option<SentMessage>,
        duplicate: bool,
    ) {
        let (http_status, code) = outcome.status_and_code();
        let attempt = Attempt { endpoint, app_id, http_status, code, message, duplicate, received_at: Instant::now() };
        self.lock().attempts.push(attempt);
    }

    /// Records the attempt and answers; a lost response becomes a 502.
    pub(super) fn finish(
        &self,
        endpoint: Endpoint,
        call: &Call,
        outcome: Outcome,
        message: Option<SentMessage>,
        duplicate: bool,
    ) -> Response {
        let outcome = if call.drop_response && outcome.status_and_code() == (200, 0) {
            Outcome::Plain {
                status: StatusCode::BAD_GATEWAY,
                text: "<html><body><h1>502 Bad Gateway</h1></body></html>",
            }
        } else {
            outcome
        };
        self.record(endpoint, Some(call.app_id.clone()), &outcome, message, duplicate);
        outcome.into_response()
    }

    pub(super) fn refuse(&self, endpoint: Endpoint, (app_id, outcome): (Option<String>, Outcome)) -> Response {
        self.record(endpoint, app_id, &outcome, None, false);
        outcome.into_response()
    }
}

/// Lark's 99991672, in the style of its troubleshooting page.
fn missing_scope(app_id: &str, scopes: &[&str]) -> Outcome {
    let list = scopes.join(", ");
    let url =
        format!("https://open.feishu.cn/app/{app_id}/auth?q={}&op_from=openapi&token_type=tenant", scopes.join(","));
    let msg = format!(
        "Access denied. One of the following scopes is required: [{list}].应用尚未开通所需的应用身份权限：[{list}]，点击链接申请并开通任一权限即可：{url}"
    );
    let violations: Vec<Value> =
        scopes.iter().map(|s| json!({ "type": "action_scope_required", "subject": s })).collect();
    let error = json!({
        "message": "Refer to the documentation to fix the error: https://open.feishu.cn/document/uAjLw4CM/ugTN1YjL4UTN24CO1UjN/trouble-shooting/how-to-fix-the-99991672-error",
        "permission_violations": violations,
        "helps": [{ "url": url, "description": format!("Learn more about scopes and how to add them: [{list}]") }],
    });
    Outcome::error_with(400, 99991672, &msg, error, Vec::new())
}

pub(super) fn parse_json(body: &Bytes) -> Result<Value, Outcome> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| Outcome::error(400, 9499, "Bad Request"))
}

async fn tenant_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    shared.lock().token_fetches += 1;
    if let Err(outcome) = shared.scripted(Endpoint::TenantToken).await {
        return outcome.into_response();
    }
    let body = match parse_json(&body) {
        Ok(body) => body,
        Err(outcome) => return outcome.into_response(),
    };
    let app_id = body.get("app_id").and_then(Value::as_str).unwrap_or_default();
    let secret = body.get("app_secret").and_then(Value::as_str).unwrap_or_default();
    let mut inner = shared.lock();
    let lifetime = inner.token_lifetime;
    let current = {
        let Some(app) = inner.apps.get(app_id) else {
            return Outcome::error(400, 10003, "invalid param").into_response();
        };
        if app.secret_rejected || app.app.app_secret != secret {
            return Outcome::error(400, 10014, "app secret invalid").into_response();
        }
        app.current_token.clone()
    };
    let reusable = current.and_then(|t| {
        let remaining = inner.tokens.get(&t)?.remaining()?;
        (remaining.as_secs() >= TOKEN_REUSE_SECS).then_some((t, remaining.as_secs()))
    });
    let (token, expire) = match reusable {
        Some(found) => found,
        None => {
            let token = format!("t-{}", random_hex(20));
            let info = TokenInfo { app_id: app_id.to_owned(), issued: Instant::now(), lifetime, revoked: false };
            inner.tokens.insert(token.clone(), info);
            if let Some(app) = inner.apps.get_mut(app_id) {
                app.current_token = Some(token.clone());
            }
            (token, lifetime.as_secs())
        }
    };
    Json(json!({ "code": 0, "msg": "ok", "tenant_access_token": token, "expire": expire })).into_response()
}

async fn bot_info(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let call = match shared.begin(Endpoint::BotInfo, &headers).await {
        Ok(call) => call,
        Err(refused) => return shared.refuse(Endpoint::BotInfo, refused),
    };
    let app = shared.lock().apps.get(&call.app_id).map(|a| a.app.clone());
    let outcome = match app {
        Some(app) => Outcome::ok(json!({
            "code": 0,
            "msg": "ok",
            "bot": {
                "activate_status": 2,
                "app_name": app.app_name,
                "avatar_url": "https://s1-imfile.feishucdn.com/static-resource/v1/fake_avatar",
                "ip_white_list": [],
                "open_id": app.bot_open_id,
            }
        })),
        None => Outcome::error(400, 99991663, INVALID_TOKEN_MSG),
    };
    shared.finish(Endpoint::BotInfo, &call, outcome, None, false)
}

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

impl Failure {
    fn into_outcome(self) -> Outcome {
        Outcome::from_failure(self).unwrap_or_else(|| Outcome::ok(json!({})))
    }
}

async fn reply_message(
    State(shared): State<Arc<Shared>>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    deliver_message(&shared, Endpoint::Reply, &headers, Via::Reply { message_id }, &body, None).await
}

#[derive(Deserialize)]
struct SendQuery {
    receive_id_type: Option<String>,
}

async fn send_message(
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

async fn patch_message(
    State(shared): State<Arc<Shared>>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    update_message(&shared, &headers, &message_id, &body, true).await
}

async fn put_message(
    State(shared): State<Arc<Shared>>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    update_message(&shared, &headers, &message_id, &body, false).await
}

fn reaction_data(r: &Reaction) -> Value {
    json!({
        "reaction_id": r.reaction_id,
        "operator": { "operator_id": r.app_id, "operator_type": "app" },
        "action_time": now_ms().to_string(),
        "reaction_type": { "emoji_type": r.emoji_type },
    })
}

async fn add_reaction(
    State(shared): State<Arc<Shared>>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = match shared.begin(Endpoint::AddReaction, &headers).await {
        Ok(call) => call,
        Err(refused) => return shared.refuse(Endpoint::AddReaction, refused),
    };
    let emoji = parse_json(&body)
        .ok()
        .and_then(|b| b.pointer("/reaction_type/emoji_type").and_then(Value::as_str).map(str::to_owned));
    let Some(emoji_type) = emoji.filter(|e| !e.is_empty()) else {
        let outcome = Outcome::field_violation("reaction_type.emoji_type", "emoji_type is required");
        return shared.finish(Endpoint::AddReaction, &call, outcome, None, false);
    };
    let reaction = Reaction {
        app_id: call.app_id.clone(),
        message_id,
        reaction_id: random_hex(24),
        emoji_type,
        added_at: Instant::now(),
        removed_at: None,
    };
    let data = reaction_data(&reaction);
    shared.lock().reactions.push(reaction);
    let outcome = Outcome::ok(json!({ "code": 0, "msg": "success", "data": data }));
    shared.finish(Endpoint::AddReaction, &call, outcome, None, false)
}

async fn delete_reaction(
    State(shared): State<Arc<Shared>>,
    Path((message_id, reaction_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let call = match shared.begin(Endpoint::DeleteReaction, &headers).await {
        Ok(call) => call,
        Err(refused) => return shared.refuse(Endpoint::DeleteReaction, refused),
    };
    let mut inner = shared.lock();
    let found = inner
        .reactions
        .iter_mut()
        .find(|r| r.message_id == message_id && r.reaction_id == reaction_id && r.removed_at.is_none());
    let outcome = match found {
        Some(reaction) => {
            reaction.removed_at = Some(Instant::now());
            Outcome::ok(json!({ "code": 0, "msg": "success", "data": reaction_data(reaction) }))
        }
        None => Outcome::error(400, 231010, "The reaction does not exist or has been deleted."),
    };
    drop(inner);
    shared.finish(Endpoint::DeleteReaction, &call, outcome, None, false)
}

#[derive(Deserialize)]
struct AfterQuery {
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

async fn sandbox_messages(State(shared): State<Arc<Shared>>, Query(query): Query<AfterQuery>) -> Json<SandboxPage> {
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

async fn sandbox_register(State(shared): State<Arc<Shared>>, Json(r): Json<SandboxRegistration>) -> StatusCode {
    let info = MessageInfo { chat_id: r.chat_id, thread_id: r.thread_id, root_id: None };
    shared.lock().messages.insert(r.message_id, info);
    StatusCode::NO_CONTENT
}
