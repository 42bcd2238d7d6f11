//! FastGPT's stored chats: the items of each turn, the chat's status, and the
//! APIs that read and annotate them. Sources (labring/FastGPT, 4.15+):
//!
//! - `preChatRound` (`packages/service/core/chat/saveChat.ts`) with
//!   `packages/service/core/chat/dataIdValidation.ts`: before the workflow,
//!   a chat that is generating refuses another turn (`chatIsGenerating`),
//!   then a `responseChatItemId` already stored in the app's chat is refused
//!   with `Chat dataId already exists: <id>` (a `UserError`: HTTP 500
//!   `{"code":500,"statusText":"error","message":...}` from `jsonRes`, or
//!   `event: error` / `data: {"message":...}` over HTTP 200 when streamed)
//!   and the chat's status becomes `error`. Otherwise the human and the AI
//!   item are stored (both under that dataId) and the status is
//!   `generating` until the run ends, whether or not its client is still
//!   there. An interactive continue (the chat's last AI item waits for a
//!   node's answer) skips the check and writes into that item. The shape of
//!   the `chatIsGenerating` refusal is this fake's assumption: the bridge
//!   matches the name only.
//! - `projects/app/src/pages/api/core/chat/record/getPaginationRecords.ts`:
//!   `{appId, chatId, offset, pageSize}` → `data: {list, total}`, items
//!   `{dataId, obj: "Human"|"AI", value: [{text: {content}}], errorMsg?,
//!   userGoodFeedback?, userBadFeedback?}`, oldest first, `offset` counted
//!   from the newest.
//! - `.../core/chat/history/getHistoryStatus.ts`: `{appId, chatIds}` →
//!   `data: {list: [{chatId, chatGenerateStatus}]}`; an empty list without
//!   an `appId`.
//! - `.../core/chat/feedback/updateUserFeedback.ts`: `{appId, chatId,
//!   dataId, userGoodFeedback?, userBadFeedback?}`; a field left out is
//!   cleared.
//! - `.../core/chat/init.ts`: `GET ?appId=&chatId=` → `data: {chatId, appId,
//!   app: {chatConfig: {welcomeText}, name, ...}}`; an app key implies its
//!   app, a team key needs `appId`.
//! - `authCert` with a team (account) key and no `appId`: "Key is error. You
//!   need to use the app key rather than the account key."

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::answers::error_body;
use super::Shared;

/// The fake app's id (a Mongo ObjectId, as FastGPT's).
pub const APP_ID: &str = "65f0c0ffee0000000000fa57";
/// FastGPT's refusal of a team key used without `appId`.
pub const TEAM_KEY_REFUSAL: &str = "Key is error. You need to use the app key rather than the account key.";

/// One stored chat item.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatItem {
    pub data_id: String,
    /// `Human` or `AI`.
    pub obj: &'static str,
    pub text: String,
    pub error: Option<String>,
    pub good_feedback: Option<String>,
    pub bad_feedback: Option<String>,
}

/// `chatGenerateStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerateStatus {
    Generating,
    Done,
    Error,
}

impl GenerateStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Generating => "generating",
            Self::Done => "done",
            Self::Error => "error",
        }
    }
}

/// The stored chats of the fake's app.
#[derive(Default)]
pub struct Chats {
    pub items: HashMap<String, Vec<ChatItem>>,
    pub status: HashMap<String, GenerateStatus>,
    /// Whether the check of `responseChatItemId` is on (FastGPT 4.15+; on by default).
    pub check_data_id: bool,
    pub welcome_text: String,
    /// A team key, accepted with an `appId` only.
    pub team_key: Option<String>,
    /// Every feedback call: (chatId, dataId, good, bad).
    pub feedback_calls: Vec<(String, String, Option<String>, Option<String>)>,
    /// Every `init` call's chatId.
    pub init_calls: Vec<String>,
}

/// A run of one turn: where its answer is stored when it ends.
#[derive(Clone, Debug)]
pub struct Run {
    pub chat_id: String,
    pub data_id: String,
    /// Appends to the AI item of an interactive node's turn.
    pub resume: bool,
}

/// Why a turn was refused before its workflow ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    Generating,
    Duplicate(String),
}

impl Refused {
    pub fn message(&self) -> String {
        match self {
            Self::Generating => "chatIsGenerating".to_owned(),
            Self::Duplicate(id) => format!("Chat dataId already exists: {id}"),
        }
    }

    /// HTTP 500 JSON, or `event: error` over HTTP 200 when streamed.
    pub fn response(&self, stream: bool) -> Response {
        let status_text = match self {
            Self::Generating => "chatIsGenerating",
            Self::Duplicate(_) => "error",
        };
        if stream {
            let body = format!("event: error\ndata: {}\n\n", json!({ "message": self.message() }));
            return ([(axum::http::header::CONTENT_TYPE, "text/event-stream;charset=utf-8")], body).into_response();
        }
        error_body(500, 500, status_text, &self.message())
    }
}

impl Chats {
    pub fn new() -> Self {
        Self { check_data_id: true, ..Default::default() }
    }

    /// `preChatRound`: refuses the turn, or stores its items and marks the
    /// chat generating. `resuming`: an interactive node waits in the chat.
    pub fn begin(&mut self, chat_id: &str, data_id: &str, question: &str, resuming: bool) -> Result<Run, Refused> {
        if self.status.get(chat_id) == Some(&GenerateStatus::Generating) {
            return Err(Refused::Generating);
        }
        let items = self.items.entry(chat_id.to_owned()).or_default();
        if resuming {
            if let Some(ai) = items.iter().rev().find(|i| i.obj == "AI") {
                let run = Run { chat_id: chat_id.to_owned(), data_id: ai.data_id.clone(), resume: true };
                self.status.insert(chat_id.to_owned(), GenerateStatus::Generating);
                return Ok(run);
            }
        }
        if self.check_data_id && items.iter().any(|i| i.data_id == data_id) {
            self.status.insert(chat_id.to_owned(), GenerateStatus::Error);
            return Err(Refused::Duplicate(data_id.to_owned()));
        }
        let item = |obj, text: &str| ChatItem {
            data_id: data_id.to_owned(),
            obj,
            text: text.to_owned(),
            error: None,
            good_feedback: None,
            bad_feedback: None,
        };
        items.push(item("Human", question));
        items.push(item("AI", ""));
        self.status.insert(chat_id.to_owned(), GenerateStatus::Generating);
        Ok(Run { chat_id: chat_id.to_owned(), data_id: data_id.to_owned(), resume: false })
    }

    /// The run ended: `Ok(answer)` stored; `Err(Some(error))` stored as the
    /// AI item's `errorMsg`; `Err(None)`: refused before it ran (nothing stays).
    pub fn end(&mut self, run: &Run, outcome: Result<String, Option<String>>) {
        let items = self.items.entry(run.chat_id.clone()).or_default();
        let status = match outcome {
            Err(None) if !run.resume => {
                items.retain(|i| i.data_id != run.data_id);
                GenerateStatus::Error
            }
            Err(None) => GenerateStatus::Error,
            Err(Some(error)) => {
                if let Some(ai) = items.iter_mut().rev().find(|i| i.obj == "AI" && i.data_id == run.data_id) {
                    ai.error = Some(error);
                }
                GenerateStatus::Error
            }
            Ok(answer) => {
                if let Some(ai) = items.iter_mut().rev().find(|i| i.obj == "AI" && i.data_id == run.data_id) {
                    if run.resume && !ai.text.is_empty() && !answer.is_empty() {
                        ai.text.push_str("\n\n");
                    }
                    ai.text.push_str(&answer);
                }
                GenerateStatus::Done
            }
        };
        self.status.insert(run.chat_id.clone(), status);
    }
}

fn ok(data: Value) -> Response {
    Json(json!({ "code": 200, "statusText": "", "message": "", "data": data })).into_response()
}

/// The key check of these APIs: the app key, or the team key with `appId`;
/// `Some` is the refusal.
fn refused(shared: &Shared, headers: &HeaderMap, app_id: Option<&str>) -> Option<Response> {
    let auth = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let token = auth.trim().strip_prefix("Bearer ").unwrap_or("");
    let inner = shared.lock();
    if token == inner.api_key {
        return None;
    }
    if inner.chats.team_key.as_deref() == Some(token) {
        return app_id.is_none().then(|| error_body(500, 500, "error", TEAM_KEY_REFUSAL));
    }
    Some(error_body(500, 514, "unAuthApiKey", "Api Key 不合法"))
}

fn str_of<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

fn item_json(item: &ChatItem) -> Value {
    let mut v = json!({
        "_id": format!("{}-{}", item.data_id, item.obj),
        "dataId": item.data_id,
        "obj": item.obj,
        "value": [{ "text": { "content": item.text } }],
    });
    if let Some(e) = &item.error {
        v["errorMsg"] = json!(e);
    }
    if let Some(f) = &item.good_feedback {
        v["userGoodFeedback"] = json!(f);
    }
    if let Some(f) = &item.bad_feedback {
        v["userBadFeedback"] = json!(f);
    }
    v
}

pub(super) async fn records(
    State(shared): State<std::sync::Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refusal) = refused(&shared, &headers, str_of(&body, "appId")) {
        return refusal;
    }
    if str_of(&body, "appId") != Some(APP_ID) {
        return ok(json!({ "list": [], "total": 0 }));
    }
    let chat_id = str_of(&body, "chatId").unwrap_or_default();
    let offset = body.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
    let size = body.get("pageSize").and_then(Value::as_u64).unwrap_or(10).min(100) as usize;
    let inner = shared.lock();
    let items = inner.chats.items.get(chat_id).cloned().unwrap_or_default();
    let end = items.len().saturating_sub(offset);
    let start = end.saturating_sub(size);
    let list: Vec<Value> = items[start..end].iter().map(item_json).collect();
    ok(json!({ "list": list, "total": items.len() }))
}

pub(super) async fn history_status(
    State(shared): State<std::sync::Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refusal) = refused(&shared, &headers, str_of(&body, "appId")) {
        return refusal;
    }
    if str_of(&body, "appId") != Some(APP_ID) {
        return ok(json!({ "list": [] }));
    }
    let inner = shared.lock();
    let ids = body.get("chatIds").and_then(Value::as_array).cloned().unwrap_or_default();
    let list: Vec<Value> = ids
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|id| inner.chats.status.get(id).map(|s| json!({ "chatId": id, "chatGenerateStatus": s.as_str() })))
        .collect();
    ok(json!({ "list": list }))
}

pub(super) async fn feedback(
    State(shared): State<std::sync::Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refusal) = refused(&shared, &headers, str_of(&body, "appId")) {
        return refusal;
    }
    let (Some(app_id), Some(chat_id), Some(data_id)) =
        (str_of(&body, "appId"), str_of(&body, "chatId"), str_of(&body, "dataId"))
    else {
        return error_body(500, 500, "error", "appId, chatId and dataId are required");
    };
    if app_id != APP_ID {
        return error_body(500, 500, "error", "Chat item not found");
    }
    let good = str_of(&body, "userGoodFeedback").map(str::to_owned);
    let bad = str_of(&body, "userBadFeedback").map(str::to_owned);
    let mut inner = shared.lock();
    inner.chats.feedback_calls.push((chat_id.to_owned(), data_id.to_owned(), good.clone(), bad.clone()));
    let items = inner.chats.items.entry(chat_id.to_owned()).or_default();
    match items.iter_mut().find(|i| i.obj == "AI" && i.data_id == data_id) {
        Some(item) => {
            item.good_feedback = good;
            item.bad_feedback = bad;
            ok(Value::Null)
        }
        None => error_body(500, 500, "error", "Chat item not found"),
    }
}

pub(super) async fn init(
    State(shared): State<std::sync::Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let app_id = query.get("appId").map(String::as_str).filter(|a| !a.is_empty());
    if let Some(refusal) = refused(&shared, &headers, app_id) {
        return refusal;
    }
    if app_id.is_some_and(|a| a != APP_ID) {
        return error_body(500, 500, "appUnExist", "App is not exists");
    }
    let chat_id = query.get("chatId").cloned().unwrap_or_default();
    let mut inner = shared.lock();
    inner.chats.init_calls.push(chat_id.clone());
    let welcome = inner.chats.welcome_text.clone();
    ok(json!({
        "chatId": chat_id,
        "appId": APP_ID,
        "title": "New chat",
        "userAvatar": "",
        "variables": {},
        "app": {
            "chatConfig": { "welcomeText": welcome, "variables": [], "questionGuide": { "open": false } },
            "chatModels": ["gpt-4o-mini"],
            "name": "Fake FastGPT app",
            "avatar": "",
            "intro": "",
            "type": "advanced",
            "pluginInputs": []
        }
    }))
}
