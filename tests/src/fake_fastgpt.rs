//! A fake of FastGPT's OpenAI-style chat API, for the end-to-end suites and the sandbox.
//!
//! The relay must be tested against what FastGPT really answers, not an
//! idealised OpenAI server: `POST {base}/api/v1/chat/completions` answers
//! `{"id", "model": "", "usage", "choices": [...]}`; its own errors are HTTP 500
//! with `{"code", "statusText", "message", "data": null}` (`jsonRes` in
//! `packages/service/common/response`, codes from
//! `packages/global/common/error/errorCode.ts`); a failed workflow is HTTP 200
//! with a top-level `error` and empty content (`projects/app/src/pages/api/v1/
//! chat/completions.ts`). By default the fake echoes the question with the turn
//! number of its chatId, so a test can see which history a question landed in;
//! a test can script other answers in order.
//!
//! # Streaming (`"stream": true`)
//!
//! A successful answer is then `Content-Type: text/event-stream;charset=utf-8`,
//! written as FastGPT writes it (`responseWrite` in
//! `packages/service/common/response`: an optional `event: NAME` line, a
//! `data: ...` line, a blank line). Each delta is `textAdaptGptResponse`'s
//! chunk, `{"id":"","object":"","created":0,"model":"","choices":[{"delta":
//! {"role":"assistant","content":"..."},"index":0,"finish_reason":null}]}`.
//! With `"detail": true` every frame has an event line: `event: flowNodeStatus`
//! first, `event: answer` for each delta, `event: workflowDuration`, the final
//! `event: answer` chunk with `"content":null` and `"finish_reason":"stop"`,
//! `event: answer` / `data: [DONE]`, and `event: flowResponses` after [DONE]
//! (the order of the v1 handler). With `"detail": false` there are no event
//! lines and only the answer frames. A workflow error while streaming is
//! `event: error` / `data: {"message": ...}` (`sseErrRes`), no [DONE], HTTP 200.
//! Errors the fake answers before streaming ([`FakeAnswer::FastGptError`],
//! [`FakeAnswer::Status`], a wrong API key) stay JSON bodies. (Real FastGPT's
//! v1 handler sends those through `sseErrRes` too when `stream` is true:
//! script [`FakeAnswer::StreamThenError`] with no deltas for that shape.)
//!
//! The echo and scripted `Text` / `Markdown` answers stream in deltas of three
//! words (at most 50 deltas; a longer answer is cut into 50 parts on char
//! boundaries), each written 15 ms after the one before (the first 15 ms after
//! the headers). [`FakeAnswer::Stream`] and its variants script the deltas and
//! the pace exactly. Each request records whether it was streamed and when
//! each delta was written ([`FastGptRequest::delta_times`]).
//!
//! # Hints in the question (the echo only)
//!
//! - `markdown` anywhere: the echo is a rich Markdown answer.
//! - `stream:NxD`, with `D` like `100ms` or `2s`: when streamed, the echo comes
//!   in exactly `N` deltas (fewer if the answer has fewer characters), `D`
//!   apart, the first `D` after the headers: `stream:40x100ms` is 40 deltas
//!   over 4 s.
//! - `stream-long:BYTES`: the echo is followed by a long Markdown answer of
//!   about `BYTES` bytes (as [`FakeAnswer::long_markdown`]), for answers longer
//!   than one card; with `stream:NxD` too, that pace.
//!
//! - `runaway:BYTES`: a runaway workflow (a loop node around an AI chat node,
//!   a model without a token limit): `BYTES` of answer text, written as fast
//!   as the client reads, in deltas of 64 KiB (each FastGPT's
//!   `textAdaptGptResponse` chunk, as above), then the stop chunk and
//!   [DONE]. Not streamed, one JSON body whose content is that text. Made
//!   as it is written, never held whole; [`FastGptRequest::delta_times`]
//!   counts the deltas written (the text is not recorded).
//!
//! - `select:` (or `app:select`): the user-select app ([`Interactive::select_app`]):
//!   "Let me help you choose." then the node "Which product?" with the
//!   options Product A, Product B and 产品 C. `form:` (or `app:form`): the
//!   form app ([`Interactive::form_app`]): "Please fill in the form." then a
//!   form with a field of each type (input `name` required, textarea
//!   `备注 notes`, numberInput `年龄` required 1..120, select `dept`). The
//!   same node wrapped: `select-nested:` / `form-nested:` (in a child app,
//!   `childrenInteractive`) and `select-loop:` / `form-loop:`
//!   (`loopInteractive`). Those words start the hint: `select:now` works too.
//! - `sources`: the answer cites a knowledge base's quotes inline
//!   (`[id](CITE)`) and reports them (`flowResponses` / `responseData`).
//! - `array:legacy`, `array:public`, `array:untyped`: the shape of a
//!   non-streamed interactive answer's content array (default: the fake's
//!   [`FakeFastGpt::set_array_style`], itself `legacy` by default).
//!
//! Hints are words of the question (separated by whitespace); punctuation
//! after them is ignored. Without `"stream": true` the pace is ignored and the
//! answer is the same text as one JSON body.
//!
//! # Interactive nodes
//!
//! An answer may end with a user-select or form node (the hints above, or a
//! scripted [`FakeAnswer::Interactive`]): with `"stream": true, "detail":
//! true` the deltas of its text are followed by `event: interactive`, before
//! `event: workflowDuration`; not streamed with `"detail": true` the content
//! is an array ([`ArrayStyle`]); without `detail` only the text comes. The
//! node then waits in its chatId: the next question there (with the echo, or
//! any scripted successful answer) is taken by the node as FastGPT does, and
//! recorded in [`FastGptRequest::resume`]. An option's exact `value` answers
//! "You chose: VALUE."; a form's JSON object "Form received: KEY = VALUE, ..."
//! (the form's keys in order, `(missing)` or `(empty)` for what was not
//! given: FastGPT checks neither required keys nor unknown ones). Anything
//! else is [`NotAnAnswer`]: see [`interactive`] for the shapes and sources.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::fake_lark::server::{sleep_unless_cancelled, ServerHandle};

/// Stored chats: the dataId check, records, status, feedback, init.
pub mod chats;
/// The images and files of a question: what the echo says it received.
mod files;
/// User-select and form nodes: their wire shapes and how a run resumes.
pub mod interactive;

pub use interactive::{ArrayStyle, FormField, Interactive, InteractiveNode, NodeKind, NotAnAnswer, Resume, Wrapper};

/// One scripted answer, consumed by one request (after the API key check).
#[derive(Clone, Debug)]
pub enum FakeAnswer {
    /// The default: `"Echo (turn N): question"` (Markdown when the question says "markdown").
    Echo,
    /// A successful answer with this content (may be empty).
    Text(String),
    /// A successful Markdown answer (same wire shape as `Text`).
    Markdown(String),
    /// Any status and body: `Null` is an empty body, a string is sent as text, anything else as JSON.
    Status { status: u16, body: Value },
    /// FastGPT's own error body.
    FastGptError { http_status: u16, code: i64, status_text: String, message: String },
    /// This answer after a delay.
    Delay(Duration, Box<FakeAnswer>),
    /// HTTP 200 with a top-level `error` string and empty content: the app's workflow failed.
    /// When streamed: `event: error` with `{"message": ...}`, no [DONE].
    WorkflowError,
    /// Streamed (`"stream": true`) as exactly these deltas, each `every` after
    /// the one before (the first `every` after the headers), then the end
    /// frames and [DONE]. Without `"stream": true`: their concatenation as JSON.
    Stream { deltas: Vec<String>, every: Duration },
    /// These deltas, then `event: error` / `data: <error>` (FastGPT's
    /// `sseErrRes`: an error body `{"code","statusText","message"}` or
    /// `{"message"}`); no [DONE], HTTP 200. Without `"stream": true`: HTTP 500
    /// with `error` as the JSON body.
    StreamThenError { deltas: Vec<String>, every: Duration, error: Value },
    /// These deltas, then half a frame, and the connection breaks (no
    /// terminating chunk, no [DONE]). Without `"stream": true`: the connection
    /// breaks before any body.
    StreamCut { deltas: Vec<String>, every: Duration },
    /// Its text, then the interactive node (see the module documentation);
    /// the node then waits in the chatId for the next question.
    Interactive(Box<Interactive>),
}

impl FakeAnswer {
    /// What FastGPT answers for a wrong API key: HTTP 500, code 514 `unAuthApiKey`.
    pub fn unauth_api_key() -> Self {
        Self::fastgpt_error(500, 514, "unAuthApiKey", "Api Key 不合法")
    }

    /// FastGPT's per-team QPM limit: HTTP 500, code 429 `tooManyRequest`.
    pub fn too_many_request() -> Self {
        Self::fastgpt_error(500, 429, "tooManyRequest", "Too many requests, please try again later")
    }

    /// The team's points are used up: HTTP 500, code 510 `insufficientQuota`.
    pub fn insufficient_quota() -> Self {
        Self::fastgpt_error(500, 510, "insufficientQuota", "账号余额不足")
    }

    pub fn fastgpt_error(http_status: u16, code: i64, status_text: &str, message: &str) -> Self {
        FakeAnswer::FastGptError { http_status, code, status_text: status_text.to_owned(), message: message.to_owned() }
    }

    /// A long Markdown answer of about `bytes` bytes (headings, lists, code
    /// blocks, a table), for tests of splitting.
    pub fn long_markdown(bytes: usize) -> Self {
        FakeAnswer::Markdown(long_markdown_text(bytes))
    }

    /// An answer streamed in these deltas, `every` apart: see [`FakeAnswer::Stream`].
    pub fn stream<S: Into<String>>(deltas: impl IntoIterator<Item = S>, every: Duration) -> Self {
        FakeAnswer::Stream { deltas: deltas.into_iter().map(Into::into).collect(), every }
    }

    /// `text`, then a user-select node with `(key, value)` options.
    pub fn user_select(text: &str, description: &str, options: &[(&str, &str)]) -> Self {
        FakeAnswer::Interactive(Box::new(Interactive::user_select(text, description, options)))
    }

    /// `text`, then a form node.
    pub fn form(text: &str, description: &str, fields: Vec<FormField>) -> Self {
        FakeAnswer::Interactive(Box::new(Interactive::form(text, description, fields)))
    }
}

/// A long Markdown text of about `bytes` bytes: see [`FakeAnswer::long_markdown`].
pub fn long_markdown_text(bytes: usize) -> String {
    let mut out = String::new();
    let mut section = 0;
    while out.len() < bytes {
        section += 1;
        out.push_str(&markdown_sample(&format!("Section {section}"), section));
        out.push('\n');
    }
    out
}

/// A rich Markdown answer: bold, a list, a code block and a table.
fn markdown_sample(heading: &str, turn: usize) -> String {
    format!(
        "## {heading}\n\n**Bold answer** for turn {turn}.\n\n- first item\n- second item\n  - nested item\n\n\
         ```rust\nfn main() {{\n    println!(\"turn {turn}\");\n}}\n```\n\n\
         | key | value |\n| --- | --- |\n| turn | {turn} |\n| fake | yes |\n"
    )
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct FastGptRequest {
    pub chat_id: Option<String>,
    pub custom_uid: Option<String>,
    /// The text of the last user message.
    pub content: String,
    /// The whole `Authorization` header.
    pub auth: Option<String>,
    pub stream: bool,
    pub detail: bool,
    pub body: Value,
    pub received_at: Instant,
    /// Answered as server-sent events (`text/event-stream`).
    pub streamed: bool,
    /// When each answer delta (a chunk with content) was written, in order.
    pub delta_times: Vec<Instant>,
    /// The answer text the client was given: the JSON content, or the deltas
    /// written so far when streamed. `None` for error answers without content.
    pub answer: Option<String>,
    /// An interactive node was waiting in the chatId: what it made of this
    /// question (its `value` chosen, a form's JSON, or not an answer).
    pub resume: Option<Resume>,
    /// The answer ended with this interactive node (now waiting in the chatId).
    pub interactive: Option<Interactive>,
    /// Refused before its workflow ran (FastGPT's message): a stored
    /// `responseChatItemId`, or the chat still generating. No run, no answer.
    pub refused: Option<String>,
    /// Bytes of the answer's body the client was handed (the run itself
    /// goes on to its end whoever listens, as FastGPT's does).
    pub handed_to_client: usize,
}

impl FastGptRequest {
    /// Whether FastGPT ran the workflow for this request (not refused before it).
    pub fn ran(&self) -> bool {
        self.refused.is_none()
    }
}

impl FastGptRequest {
    /// When the first answer delta was written (streamed answers only).
    pub fn first_delta_at(&self) -> Option<Instant> {
        self.delta_times.first().copied()
    }
}

struct Inner {
    api_key: String,
    queue: VecDeque<FakeAnswer>,
    requests: Vec<FastGptRequest>,
    /// Questions answered per chatId, as FastGPT keeps chat history.
    history: HashMap<String, Vec<String>>,
    /// The interactive node each chatId's last answer ended with, not answered yet.
    pending: HashMap<String, Interactive>,
    array_style: ArrayStyle,
    not_an_answer: NotAnAnswer,
    chats: chats::Chats,
}

struct Shared {
    inner: Mutex<Inner>,
    cancel: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Updates the record of request `index`.
    fn record(&self, index: usize, update: impl FnOnce(&mut FastGptRequest)) {
        if let Some(request) = self.lock().requests.get_mut(index) {
            update(request);
        }
    }
}

/// The fake FastGPT server. Stops when dropped or on [`FakeFastGpt::shutdown`].
pub struct FakeFastGpt {
    shared: Arc<Shared>,
    server: ServerHandle,
}

impl FakeFastGpt {
    /// Starts on 127.0.0.1 with a random port, accepting `api_key`.
    pub async fn start(api_key: impl Into<String>) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(addr, api_key).await.expect("bind the fake FastGPT server on 127.0.0.1:0")
    }

    pub async fn start_on(addr: SocketAddr, api_key: impl Into<String>) -> std::io::Result<Self> {
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                api_key: api_key.into(),
                queue: VecDeque::new(),
                requests: Vec::new(),
                history: HashMap::new(),
                pending: HashMap::new(),
                array_style: ArrayStyle::default(),
                not_an_answer: NotAnAnswer::default(),
                chats: chats::Chats::new(),
            }),
            cancel: cancel.clone(),
        });
        let router = Router::new()
            .route("/api/v1/chat/completions", post(completions))
            .route("/api/core/chat/record/getPaginationRecords", post(chats::records))
            .route("/api/core/chat/history/getHistoryStatus", post(chats::history_status))
            .route("/api/core/chat/feedback/updateUserFeedback", post(chats::feedback))
            .route("/api/core/chat/init", axum::routing::get(chats::init))
            .with_state(shared.clone());
        let server = ServerHandle::spawn(addr, router, cancel).await?;
        Ok(Self { shared, server })
    }

    /// `http://127.0.0.1:PORT/api`: the channel's `fastgpt_base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.server.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// Queues answers for the next requests with a valid key, in order; after
    /// them the fake echoes again.
    pub fn push_responses(&self, answers: Vec<FakeAnswer>) {
        self.shared.lock().queue.extend(answers);
    }

    /// Every request received, in order (wrong keys included).
    pub fn requests(&self) -> Vec<FastGptRequest> {
        self.shared.lock().requests.clone()
    }

    /// The questions answered so far in one chatId.
    pub fn history(&self, chat_id: &str) -> Vec<String> {
        self.shared.lock().history.get(chat_id).cloned().unwrap_or_default()
    }

    /// The interactive node waiting in a chatId for its answer, if any.
    pub fn pending_interactive(&self, chat_id: &str) -> Option<Interactive> {
        self.shared.lock().pending.get(chat_id).cloned()
    }

    /// The shape of non-streamed interactive answers (default [`ArrayStyle::Legacy`]);
    /// the `array:` hint overrides it per question.
    pub fn set_array_style(&self, style: ArrayStyle) {
        self.shared.lock().array_style = style;
    }

    /// What a question that does not answer the waiting node does (default:
    /// as FastGPT, [`NotAnAnswer::SkipsBranches`]).
    pub fn set_not_an_answer(&self, policy: NotAnAnswer) {
        self.shared.lock().not_an_answer = policy;
    }

    /// The stored items of a chatId, oldest first.
    pub fn items(&self, chat_id: &str) -> Vec<chats::ChatItem> {
        self.shared.lock().chats.items.get(chat_id).cloned().unwrap_or_default()
    }

    /// Turns FastGPT 4.15's check of `responseChatItemId` off (an older
    /// FastGPT) or on (the default).
    pub fn set_check_data_id(&self, on: bool) {
        self.shared.lock().chats.check_data_id = on;
    }

    /// The app's welcome text (`chatConfig.welcomeText` of `init`).
    pub fn set_welcome_text(&self, text: &str) {
        self.shared.lock().chats.welcome_text = text.to_owned();
    }

    /// Also accepts this team (account) key, with an `appId` only.
    pub fn set_team_key(&self, key: &str) {
        self.shared.lock().chats.team_key = Some(key.to_owned());
    }

    /// The app's id ([`chats::APP_ID`]).
    pub fn app_id(&self) -> &'static str {
        chats::APP_ID
    }

    /// Every `updateUserFeedback` call: (chatId, dataId, good, bad).
    pub fn feedback_calls(&self) -> Vec<(String, String, Option<String>, Option<String>)> {
        self.shared.lock().chats.feedback_calls.clone()
    }

    /// Every `init` call's chatId.
    pub fn init_calls(&self) -> Vec<String> {
        self.shared.lock().chats.init_calls.clone()
    }

    /// Waits until at least `n` requests arrived or `timeout` passes; returns them either way.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<FastGptRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= n || Instant::now() >= deadline {
                return requests;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The text of the last user message: a string, or the `text` parts of an array.
fn question_of(body: &Value) -> String {
    let messages = body.get("messages").and_then(Value::as_array);
    let last = messages.and_then(|m| m.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")));
    match last.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

fn error_body(http_status: u16, code: i64, status_text: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "code": code, "statusText": status_text, "message": message, "data": null });
    (status, Json(body)).into_response()
}

fn success(chat_id: Option<&str>, content: &str, error: Option<&str>, detail: bool) -> Response {
    let mut body = json!({
        "id": chat_id.unwrap_or_default(),
        "model": "",
        "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 1 },
        "choices": [{ "message": { "role": "assistant", "content": content }, "finish_reason": "stop", "index": 0 }],
    });
    if let Some(error) = error {
        body["error"] = json!(error);
    }
    if detail {
        body["responseData"] = json!([]);
        body["newVariables"] = json!({});
    }
    Json(body).into_response()
}

async fn completions(State(shared): State<Arc<Shared>>, headers: HeaderMap, raw: Bytes) -> Response {
    let auth = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let as_string = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let request = FastGptRequest {
        chat_id: as_string(body.get("chatId")),
        custom_uid: as_string(body.get("customUid")),
        content: question_of(&body),
        auth: auth.clone(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        detail: body.get("detail").and_then(Value::as_bool).unwrap_or(false),
        body: body.clone(),
        received_at: Instant::now(),
        streamed: false,
        delta_times: Vec::new(),
        answer: None,
        resume: None,
        interactive: None,
        refused: None,
        handed_to_client: 0,
    };
    let data_id = as_string(body.get("responseChatItemId")).filter(|d| !d.is_empty());
    let (index, answer, run) = {
        let mut inner = shared.lock();
        inner.requests.push(request.clone());
        let index = inner.requests.len() - 1;
        let expected = format!("Bearer {}", inner.api_key);
        let token = auth.as_deref().map(str::trim).unwrap_or_default();
        let team = inner.chats.team_key.as_ref().is_some_and(|k| token == format!("Bearer {k}"));
        if team && body.get("appId").and_then(Value::as_str) != Some(chats::APP_ID) {
            drop(inner);
            return error_body(500, 500, "error", chats::TEAM_KEY_REFUSAL);
        }
        if token != expected && !team {
            (index, None, None)
        } else {
            // `preChatRound`: refused before the workflow, or its items stored now.
            let run = match (&request.chat_id, &data_id) {
                (Some(chat_id), Some(data_id)) if !request.content.is_empty() || files::has_attachments(&body) => {
                    let resuming = inner.pending.contains_key(chat_id);
                    match inner.chats.begin(chat_id, data_id, &request.content, resuming) {
                        Ok(run) => Some(run),
                        Err(refused) => {
                            inner.requests[index].refused = Some(refused.message());
                            drop(inner);
                            return refused.response(request.stream);
                        }
                    }
                }
                _ => None,
            };
            (index, Some(inner.queue.pop_front().unwrap_or(FakeAnswer::Echo)), run)
        }
    };
    let Some(answer) = answer else {
        return error_body(500, 514, "unAuthApiKey", "Api Key 不合法");
    };
    if !body.is_object() {
        return error_body(500, 500, "error", "Unexpected token in JSON");
    }
    if request.content.is_empty() && !files::has_attachments(&body) {
        return error_body(500, 500, "error", "messages is empty");
    }
    let Some(run) = run else {
        return answer_with(&shared, index, &request, answer).await;
    };
    // FastGPT finishes a run whose client went away: the run is a task of
    // its own (this handler is dropped with the connection), its body read
    // to the end whether or not anyone still listens.
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let response = answer_with(&shared, index, &request, answer).await;
        let _ = tx.send(run_to_the_end(shared, index, run, response));
    });
    rx.await.unwrap_or_else(|_| error_body(500, 500, "", "the fake's run panicked"))
}

/// Reads `response`'s body to its end in a task of its own, forwarding it to
/// the client while the client listens, then stores the run's outcome.
fn run_to_the_end(shared: Arc<Shared>, index: usize, run: chats::Run, response: Response) -> Response {
    use futures::StreamExt;
    let (parts, body) = response.into_parts();
    let ok = parts.status.is_success();
    let streamed = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let shared_for_body = shared.clone();
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        let mut seen = Vec::new();
        let mut broke = false;
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(bytes) => {
                    seen.extend_from_slice(&bytes);
                    let _ = tx.send(Ok(bytes));
                }
                Err(_) => {
                    broke = true;
                    let _ = tx.send(Err(broken_stream()));
                    break;
                }
            }
        }
        drop(tx);
        let answer = shared.lock().requests.get(index).and_then(|r| r.answer.clone());
        let outcome = if !ok || broke {
            // Refused before the run (a named error), or cut: the fake stores nothing.
            Err(None)
        } else if streamed {
            match stream_error(&seen) {
                Some(error) if error.get("statusText").is_some() => Err(None),
                Some(error) => Err(Some(error.get("message").and_then(Value::as_str).unwrap_or("error").to_owned())),
                None => Ok(answer.unwrap_or_default()),
            }
        } else {
            match answer {
                Some(answer) => Ok(answer),
                None => Err(Some("the workflow failed".to_owned())),
            }
        };
        shared.lock().chats.end(&run, outcome);
    });
    let body = futures::stream::unfold((rx, shared_for_body, index), |(mut rx, shared, index)| async move {
        let item = rx.recv().await?;
        if let Ok(bytes) = &item {
            shared.record(index, |r| r.handed_to_client += bytes.len());
        }
        Some((item, (rx, shared, index)))
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// The data of an `event: error` in a streamed body, if any.
fn stream_error(body: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(body);
    let at = text.find("event: error\ndata: ")?;
    let rest = &text[at + "event: error\ndata: ".len()..];
    let line = rest.split('\n').next()?;
    Some(serde_json::from_str(line).unwrap_or(Value::Null))
}

async fn answer_with(shared: &Arc<Shared>, index: usize, request: &FastGptRequest, answer: FakeAnswer) -> Response {
    let chat_id = request.chat_id.as_deref();
    let hints = Hints::of(&request.content);
    let echo_long = if matches!(answer, FakeAnswer::Echo) { hints.long_bytes } else { None };
    let content = match answer {
        FakeAnswer::Echo => {
            // A node waiting in the chatId takes the question, as FastGPT resumes there.
            if let Some(answer) = take_pending(shared, index, request) {
                return answer_text(shared, index, request, answer, &hints);
            }
            if let Some(bytes) = hints.runaway_bytes {
                return runaway(shared, index, request, bytes);
            }
            if let Some((kind, wrapper)) = hints.app {
                return answer_interactive(shared, index, request, interactive::app(kind, wrapper), &hints);
            }
            let turn = chat_id.map_or(0, |c| shared.lock().history.get(c).map_or(0, Vec::len)) + 1;
            if request.content.to_lowercase().contains("markdown") {
                format!("**Echo (turn {turn})**: {}\n\n{}", request.content, markdown_sample("Markdown", turn))
            } else {
                format!("Echo (turn {turn}): {}{}", request.content, files::received(&request.body).await)
            }
        }
        FakeAnswer::Text(text) | FakeAnswer::Markdown(text) => {
            take_pending(shared, index, request);
            text
        }
        FakeAnswer::Interactive(node) => {
            take_pending(shared, index, request);
            return answer_interactive(shared, index, request, *node, &hints);
        }
        FakeAnswer::Status { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return match body {
                Value::Null => status.into_response(),
                Value::String(text) => (status, text).into_response(),
                other => (status, Json(other)).into_response(),
            };
        }
        FakeAnswer::FastGptError { http_status, code, status_text, message } => {
            return error_body(http_status, code, &status_text, &message);
        }
        FakeAnswer::WorkflowError => {
            let error = "Fake workflow error: the AI chat node failed (model request timed out)";
            if request.stream {
                let end = StreamEnd::Error(json!({ "message": error }));
                return stream_answer(shared, index, request, Vec::new(), Duration::ZERO, end);
            }
            return success(chat_id, "", Some(error), request.detail);
        }
        FakeAnswer::Stream { deltas, every } => {
            take_pending(shared, index, request);
            remember_turn(shared, request);
            if !request.stream {
                let content = deltas.concat();
                shared.record(index, |r| r.answer = Some(content.clone()));
                return success(chat_id, &content, None, request.detail);
            }
            return stream_answer(shared, index, request, deltas, every, StreamEnd::Done);
        }
        FakeAnswer::StreamThenError { deltas, every, error } => {
            if !request.stream {
                return (StatusCode::INTERNAL_SERVER_ERROR, Json(error)).into_response();
            }
            return stream_answer(shared, index, request, deltas, every, StreamEnd::Error(error));
        }
        FakeAnswer::StreamCut { deltas, every } => {
            take_pending(shared, index, request);
            remember_turn(shared, request);
            if !request.stream {
                let broken = futures::stream::once(async { Err::<Bytes, _>(broken_stream()) });
                let json = [(header::CONTENT_TYPE, "application/json")];
                return (StatusCode::OK, json, Body::from_stream(broken)).into_response();
            }
            return stream_answer(shared, index, request, deltas, every, StreamEnd::Cut);
        }
        FakeAnswer::Delay(d, then) => {
            sleep_unless_cancelled(d, &shared.cancel).await;
            return Box::pin(answer_with(shared, index, request, *then)).await;
        }
    };
    let content = match echo_long {
        Some(bytes) => format!("{content}\n\n{}", long_markdown_text(bytes)),
        None => content,
    };
    answer_text(shared, index, request, content, &hints)
}

/// A successful answer of this text: streamed at the hinted pace, or as JSON.
fn answer_text(
    shared: &Arc<Shared>,
    index: usize,
    request: &FastGptRequest,
    content: String,
    hints: &Hints,
) -> Response {
    remember_turn(shared, request);
    let (content, responses) = match hints.sources {
        true => {
            let (text, responses) = with_sources(&content);
            (text, Some(responses))
        }
        false => (content, None),
    };
    if request.stream {
        let (deltas, every) = paced(hints, &content);
        let end = responses.map_or(StreamEnd::Done, StreamEnd::DoneWith);
        return stream_answer(shared, index, request, deltas, every, end);
    }
    shared.record(index, |r| r.answer = Some(content.clone()));
    let mut response = success(request.chat_id.as_deref(), &content, None, request.detail);
    if let (Some(responses), true) = (responses, request.detail) {
        let body = json!({
            "responseData": responses,
            "newVariables": {},
            "id": request.chat_id.as_deref().unwrap_or_default(),
            "model": "",
            "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 1 },
            "choices": [{ "message": { "role": "assistant", "content": content }, "finish_reason": "stop", "index": 0 }],
        });
        response = Json(body).into_response();
    }
    response
}

/// The deltas of `content` and their pace: the `stream:NxD` hint, or the default.
fn paced(hints: &Hints, content: &str) -> (Vec<String>, Duration) {
    match hints.pace {
        Some((n, every)) => (split_even(content, n), every),
        None => (split_default(content), DEFAULT_EVERY),
    }
}

/// The node waiting in the question's chatId takes the question (it waits no
/// more): records what it made of it, and returns the answer of the resumed
/// run (empty when every branch was skipped). `None`: no node waited, or the
/// question is to be answered afresh ([`NotAnAnswer::Restarts`]).
fn take_pending(shared: &Shared, index: usize, request: &FastGptRequest) -> Option<String> {
    let chat_id = request.chat_id.as_ref()?;
    let (node, policy) = {
        let mut inner = shared.lock();
        let node = inner.pending.remove(chat_id)?;
        (node, inner.not_an_answer)
    };
    let resume = node.resume_with(&request.content);
    let answer = node.resumed_answer(&resume, policy);
    shared.record(index, |r| r.resume = Some(resume));
    answer
}

/// An answer ending with an interactive node, which then waits in the chatId.
fn answer_interactive(
    shared: &Arc<Shared>,
    index: usize,
    request: &FastGptRequest,
    node: Interactive,
    hints: &Hints,
) -> Response {
    remember_turn(shared, request);
    let style = {
        let mut inner = shared.lock();
        if let Some(chat_id) = &request.chat_id {
            inner.pending.insert(chat_id.clone(), node.clone());
        }
        hints.array_style.unwrap_or(inner.array_style)
    };
    shared.record(index, |r| r.interactive = Some(node.clone()));
    if request.stream {
        let (deltas, every) = paced(hints, &node.text);
        let end = match request.detail {
            true => StreamEnd::Interactive(node.event_data(&request.content)),
            false => StreamEnd::Done,
        };
        return stream_answer(shared, index, request, deltas, every, end);
    }
    shared.record(index, |r| r.answer = Some(node.text.clone()));
    if !request.detail {
        return success(request.chat_id.as_deref(), &node.text, None, false);
    }
    // The v1 handler's key order; the content array as FastGPT writes it.
    let id = Value::from(request.chat_id.as_deref().unwrap_or_default());
    let content = node.content_array(&request.content, style);
    let body = format!(
        r#"{{"responseData":[],"newVariables":{{}},"id":{id},"model":"","usage":{{"prompt_tokens":1,"completion_tokens":1,"total_tokens":1}},"choices":[{{"message":{{"role":"assistant","content":{content}}},"finish_reason":"stop","index":0}}]}}"#
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Counts the question in its chatId's history (the turn of the next echo).
fn remember_turn(shared: &Shared, request: &FastGptRequest) {
    if let Some(chat_id) = &request.chat_id {
        shared.lock().history.entry(chat_id.clone()).or_default().push(request.content.clone());
    }
}

/// The error that makes the server drop the connection mid-body.
fn broken_stream() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the fake FastGPT broke the connection")
}

/// How the fake paces the deltas of an answer without a `stream:NxD` hint.
const DEFAULT_EVERY: Duration = Duration::from_millis(15);
/// Words per delta without a hint.
const DEFAULT_WORDS: usize = 3;
/// At most this many deltas without a hint.
const DEFAULT_MAX_DELTAS: usize = 50;

/// The hints the echo takes from the question: see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Hints {
    /// `stream:NxD`: `N` deltas, `D` apart.
    pace: Option<(usize, Duration)>,
    /// `stream-long:BYTES`.
    long_bytes: Option<usize>,
    /// `runaway:BYTES`.
    runaway_bytes: Option<usize>,
    /// `select:`, `form:` and their wrapped variants: an interactive app.
    app: Option<(NodeKind, Wrapper)>,
    /// `array:STYLE`.
    array_style: Option<ArrayStyle>,
    /// `sources`: the answer quotes a knowledge base (see [`with_sources`]).
    sources: bool,
}

impl Hints {
    fn of(question: &str) -> Self {
        let mut hints = Hints::default();
        for raw in question.split_whitespace() {
            let word = raw.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
            if let Some(app) = interactive::app_of_hint(raw) {
                hints.app = Some(app);
            }
            if let Some(style) = interactive::array_style_of_hint(word) {
                hints.array_style = Some(style);
            }
            if let Some(bytes) = word.strip_prefix("runaway:").and_then(|b| b.parse().ok()) {
                hints.runaway_bytes = Some(bytes);
            }
            if word == "sources" {
                hints.sources = true;
            }
            if let Some(bytes) = word.strip_prefix("stream-long:").and_then(|b| b.parse().ok()) {
                hints.long_bytes = Some(bytes);
            } else if let Some((n, every)) = word.strip_prefix("stream:").and_then(|p| p.split_once('x')) {
                let every = match every.strip_suffix("ms") {
                    Some(ms) => ms.parse().ok().map(Duration::from_millis),
                    None => every.strip_suffix('s').and_then(|s| s.parse().ok()).map(Duration::from_secs),
                };
                if let (Ok(n), Some(every)) = (n.parse::<usize>(), every) {
                    hints.pace = Some((n.max(1), every));
                }
            }
        }
        hints
    }
}

/// Deltas of [`DEFAULT_WORDS`] words (each with the whitespace after it), or
/// [`DEFAULT_MAX_DELTAS`] even parts when that would be more.
fn split_default(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            words.push(&text[start..i]);
            start = i;
            in_space = false;
        }
    }
    if start < text.len() {
        words.push(&text[start..]);
    }
    if words.len().div_ceil(DEFAULT_WORDS) > DEFAULT_MAX_DELTAS {
        return split_even(text, DEFAULT_MAX_DELTAS);
    }
    words.chunks(DEFAULT_WORDS).map(|w| w.concat()).collect()
}

/// `text` in `n` parts of about the same number of characters (fewer parts
/// when it has fewer characters); none for an empty text.
fn split_even(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.min(chars.len());
    (0..n).map(|i| chars[i * chars.len() / n..(i + 1) * chars.len() / n].iter().collect()).collect()
}

/// How a streamed answer ends after its deltas.
enum StreamEnd {
    /// The stop chunk, [DONE] (and, with detail, the noise FastGPT sends).
    Done,
    /// As `Done`, with these nodes' responses in `event: flowResponses`.
    DoneWith(Value),
    /// `event: interactive` with this data (detail only), then as `Done`.
    Interactive(String),
    /// `event: error` with this body; no [DONE].
    Error(Value),
    /// Half a frame, then the connection breaks.
    Cut,
}

/// One step of a streamed answer.
enum Step {
    Wait(Duration),
    /// Bytes to write; `delta` is the answer text they carry, if any.
    Write {
        bytes: String,
        delta: Option<String>,
    },
    /// Break the connection (an error from the body: no terminating chunk).
    Break,
}

/// The response of the fake's one AI chat node.
fn chat_node_response() -> Value {
    json!([{ "moduleName": "AI 对话", "moduleType": "chatNode", "runningTime": 0.42, "totalPoints": 0 }])
}

/// The quote ids the `sources` hint cites.
pub const QUOTE_IDS: [&str; 3] = ["65f0c0ffee0000000000aa01", "65f0c0ffee0000000000bb02", "65f0c0ffee0000000000cc03"];

/// The `sources` hint: the answer cites two quotes inline and a third that
/// no node reported, and the dataset search node's `quoteList` holds three
/// quotes from two sources (one a web link). Shapes: `SearchDataResponseItemType`
/// (`packages/global/core/dataset/type.d.ts`); the `[<24 hex id>](CITE)`
/// marks FastGPT's own chat renders and its `removeAIResponseCite` strips for
/// the publishing channels (its stream parser buffers up to 32 characters,
/// `[<24 hex>](CITE)`, to keep a mark whole).
fn with_sources(content: &str) -> (String, Value) {
    let [a, b, c] = QUOTE_IDS;
    let text = format!(
        "{content}\n\nEmployees get 10 days of leave[{a}](CITE). Ask HR first[{b}](CITE)[{}](CITE).",
        "65f0c0ffee0000000000dd04"
    );
    let quote = |id: &str, name: &str, source_id: &str| {
        json!({ "id": id, "q": "How many days of leave?", "a": "", "sourceName": name, "sourceId": source_id,
                "collectionId": "65f0c0ffee0000000000c011", "datasetId": "65f0c0ffee0000000000da7a",
                "score": [{ "type": "embedding", "value": 0.87, "index": 0 }] })
    };
    let mut responses = vec![json!({
        "moduleName": "知识库搜索",
        "moduleType": "datasetSearchNode",
        "runningTime": 0.12,
        "quoteList": [
            quote(a, "Leave policy.pdf", "65f0c0ffee0000000000f111"),
            quote(b, "https://hr.example.com/faq", "https://hr.example.com/faq"),
            quote(c, "Leave policy.pdf", "65f0c0ffee0000000000f111"),
        ],
    })];
    responses.extend(chat_node_response().as_array().cloned().unwrap_or_default());
    (text, Value::Array(responses))
}

/// One server-sent event as FastGPT's `responseWrite` writes it.
fn sse(event: Option<&str>, data: &str) -> String {
    match event {
        Some(event) => format!("event: {event}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// `textAdaptGptResponse` as FastGPT serialises it (its key order).
fn chunk(content: Option<&str>, finish_reason: Option<&str>) -> String {
    let content = content.map_or_else(|| "null".to_owned(), |c| Value::from(c).to_string());
    let finish = finish_reason.map_or_else(|| "null".to_owned(), |f| Value::from(f).to_string());
    format!(
        r#"{{"id":"","object":"","created":0,"model":"","choices":[{{"delta":{{"role":"assistant","content":{content}}},"index":0,"finish_reason":{finish}}}]}}"#
    )
}

/// The bytes of a streamed answer, in order, with the waits between them.
fn stream_steps(detail: bool, deltas: Vec<String>, every: Duration, end: StreamEnd) -> Vec<Step> {
    let event = |name: &'static str| detail.then_some(name);
    let mut steps = Vec::new();
    if detail {
        let status = sse(Some("flowNodeStatus"), r#"{"status":"running","name":"AI 对话"}"#);
        steps.push(Step::Write { bytes: status, delta: None });
    }
    for delta in deltas {
        steps.push(Step::Wait(every));
        let bytes = sse(event("answer"), &chunk(Some(&delta), None));
        steps.push(Step::Write { bytes, delta: Some(delta) });
    }
    let tail = match end {
        StreamEnd::Done | StreamEnd::DoneWith(_) | StreamEnd::Interactive(_) => {
            let mut tail = String::new();
            if let (true, StreamEnd::Interactive(data)) = (detail, &end) {
                tail.push_str(&sse(Some("interactive"), data));
            }
            if detail {
                tail.push_str(&sse(Some("workflowDuration"), r#"{"durationSeconds":0.42}"#));
            }
            tail.push_str(&sse(event("answer"), &chunk(None, Some("stop"))));
            tail.push_str(&sse(event("answer"), "[DONE]"));
            if detail {
                let responses = match &end {
                    StreamEnd::DoneWith(r) => r.clone(),
                    _ => chat_node_response(),
                };
                tail.push_str(&sse(Some("flowResponses"), &responses.to_string()));
            }
            tail
        }
        StreamEnd::Error(error) => sse(Some("error"), &error.to_string()),
        StreamEnd::Cut => {
            let frame = sse(event("answer"), &chunk(Some("and then the connection"), None));
            steps.push(Step::Write { bytes: frame[..frame.len() / 2].to_owned(), delta: None });
            steps.push(Step::Wait(Duration::from_millis(20)));
            steps.push(Step::Break);
            return steps;
        }
    };
    steps.push(Step::Write { bytes: tail, delta: None });
    steps
}

/// Answers with server-sent events, written as the steps say; records when
/// each delta was written.
fn stream_answer(
    shared: &Arc<Shared>,
    index: usize,
    request: &FastGptRequest,
    deltas: Vec<String>,
    every: Duration,
    end: StreamEnd,
) -> Response {
    shared.record(index, |r| {
        r.streamed = true;
        r.answer = Some(String::new());
    });
    let steps: VecDeque<Step> = stream_steps(request.detail, deltas, every, end).into();
    let body = futures::stream::unfold((steps, shared.clone()), move |(mut steps, shared)| async move {
        loop {
            match steps.pop_front()? {
                Step::Wait(d) => {
                    sleep_unless_cancelled(d, &shared.cancel).await;
                    if shared.cancel.is_cancelled() {
                        steps = VecDeque::from([Step::Break]);
                    }
                }
                Step::Write { bytes, delta } => {
                    if let Some(delta) = delta {
                        shared.record(index, |r| {
                            r.delta_times.push(Instant::now());
                            r.answer.get_or_insert_with(String::new).push_str(&delta);
                        });
                    }
                    return Some((Ok(Bytes::from(bytes)), (steps, shared)));
                }
                Step::Break => return Some((Err(broken_stream()), (VecDeque::new(), shared))),
            }
        }
    });
    sse_response(Body::from_stream(body))
}

/// The bytes of one runaway delta (see the module documentation).
const RUNAWAY_DELTA: usize = 64 << 10;

/// A runaway answer of `bytes` bytes of text: see the module documentation.
fn runaway(shared: &Arc<Shared>, index: usize, request: &FastGptRequest, bytes: usize) -> Response {
    remember_turn(shared, request);
    let text = "runaway ".repeat(RUNAWAY_DELTA / 8);
    let deltas = bytes.div_ceil(RUNAWAY_DELTA);
    let counted = |shared: Arc<Shared>| {
        move |piece: Bytes| {
            shared.record(index, |r| r.delta_times.push(Instant::now()));
            Ok::<_, std::io::Error>(piece)
        }
    };
    if !request.stream {
        let (head, tail) = (
            r#"{"id":"","model":"","choices":[{"message":{"role":"assistant","content":""#,
            r#""},"finish_reason":"stop","index":0}]}"#,
        );
        let pieces = futures::stream::repeat(Bytes::from(text)).take(deltas).map(counted(shared.clone()));
        let body = futures::stream::once(async move { Ok(Bytes::from_static(head.as_bytes())) })
            .chain(pieces)
            .chain(futures::stream::once(async move { Ok(Bytes::from_static(tail.as_bytes())) }));
        return ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response();
    }
    shared.record(index, |r| r.streamed = true);
    let event = |name: &'static str| request.detail.then_some(name);
    let frame = Bytes::from(sse(event("answer"), &chunk(Some(&text), None)));
    let tail = sse(event("answer"), &chunk(None, Some("stop"))) + &sse(event("answer"), "[DONE]");
    let pieces = futures::stream::repeat(frame).take(deltas).map(counted(shared.clone()));
    sse_response(Body::from_stream(pieces.chain(futures::stream::once(async move { Ok(Bytes::from(tail)) }))))
}

/// A `text/event-stream` answer with FastGPT's headers.
fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/event-stream;charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache, no-transform"),
        (header::CONNECTION, "keep-alive"),
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
    ] {
        headers.insert(name, axum::http::HeaderValue::from_static(value));
    }
    headers.insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ask(client: &reqwest::Client, fake: &FakeFastGpt, key: &str, chat_id: &str, q: &str) -> reqwest::Response {
        client
            .post(format!("{}/v1/chat/completions", fake.base_url()))
            .bearer_auth(key)
            .json(&json!({
                "chatId": chat_id, "stream": false, "detail": false,
                "customUid": "lark:c:ou_1",
                "messages": [{ "role": "user", "content": q }]
            }))
            .send()
            .await
            .expect("request")
    }

    async fn content(resp: reqwest::Response) -> String {
        let body: Value = resp.json().await.expect("JSON");
        body["choices"][0]["message"]["content"].as_str().expect("content").to_owned()
    }

    #[tokio::test]
    async fn echoes_with_turns_per_chat_id() {
        let fake = FakeFastGpt::start("fastgpt-key").await;
        let client = reqwest::Client::new();
        let resp = ask(&client, &fake, "fastgpt-key", "c1", "hello").await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(body["id"], "c1");
        assert_eq!(body["model"], "");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["choices"][0]["message"]["content"], "Echo (turn 1): hello");
        assert_eq!(content(ask(&client, &fake, "fastgpt-key", "c1", "again").await).await, "Echo (turn 2): again");
        assert_eq!(content(ask(&client, &fake, "fastgpt-key", "c2", "other").await).await, "Echo (turn 1): other");
        let md = content(ask(&client, &fake, "fastgpt-key", "c2", "some markdown please").await).await;
        assert!(md.contains("```rust") && md.contains("| key | value |"));
        let requests = fake.wait_for_requests(4, Duration::from_millis(50)).await;
        assert_eq!(requests.len(), 4);
        assert_eq!(requests[0].custom_uid.as_deref(), Some("lark:c:ou_1"));
        assert_eq!(requests[0].auth.as_deref(), Some("Bearer fastgpt-key"));
        assert_eq!(fake.history("c1"), vec!["hello", "again"]);
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn wrong_key_is_fastgpts_514() {
        let fake = FakeFastGpt::start("right").await;
        let client = reqwest::Client::new();
        fake.push_responses(vec![FakeAnswer::Text("scripted".into())]);
        let resp = ask(&client, &fake, "wrong", "c", "q").await;
        assert_eq!(resp.status(), 500);
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(
            body,
            json!({ "code": 514, "statusText": "unAuthApiKey", "message": "Api Key 不合法", "data": null })
        );
        assert_eq!(
            content(ask(&client, &fake, "right", "c", "q").await).await,
            "scripted",
            "the wrong key consumed nothing"
        );
    }

    #[tokio::test]
    async fn scripted_answers_in_order() {
        let fake = FakeFastGpt::start("k").await;
        let client = reqwest::Client::new();
        fake.push_responses(vec![
            FakeAnswer::Status { status: 502, body: Value::Null },
            FakeAnswer::too_many_request(),
            FakeAnswer::Delay(Duration::from_millis(20), Box::new(FakeAnswer::WorkflowError)),
            FakeAnswer::Text(String::new()),
        ]);
        assert_eq!(ask(&client, &fake, "k", "c", "q").await.status(), 502);
        let resp = ask(&client, &fake, "k", "c", "q").await;
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.json::<Value>().await.expect("JSON")["statusText"], "tooManyRequest");
        let resp = ask(&client, &fake, "k", "c", "q").await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("JSON");
        assert!(body["error"].is_string());
        assert_eq!(body["choices"][0]["message"]["content"], "");
        assert_eq!(content(ask(&client, &fake, "k", "c", "q").await).await, "");
        assert_eq!(content(ask(&client, &fake, "k", "c", "q").await).await, "Echo (turn 2): q");
    }

    async fn ask_streamed(fake: &FakeFastGpt, chat_id: &str, q: &str, detail: bool) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", fake.base_url()))
            .bearer_auth("k")
            .json(&json!({
                "chatId": chat_id, "stream": true, "detail": detail,
                "messages": [{ "role": "user", "content": q }]
            }))
            .send()
            .await
            .expect("request")
    }

    /// The events of a server-sent-events body: (event, data), in order.
    fn events(body: &str) -> Vec<(Option<String>, String)> {
        assert!(body.ends_with("\n\n"), "every event ends with a blank line: {body:?}");
        body.trim_end_matches('\n')
            .split("\n\n")
            .map(|block| {
                let mut event = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(d.to_owned());
                    } else {
                        panic!("not an SSE line: {line:?} in {body:?}");
                    }
                }
                (event, data.expect("every event has data"))
            })
            .collect()
    }

    /// The answer text the deltas of `events` carry.
    fn deltas(events: &[(Option<String>, String)]) -> Vec<String> {
        events
            .iter()
            .filter(|(e, d)| e.as_deref().is_none_or(|e| e == "answer") && d.as_str() != "[DONE]")
            .filter_map(|(_, d)| {
                let chunk: Value = serde_json::from_str(d).expect("an answer chunk is JSON");
                chunk.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned)
            })
            .collect()
    }

    /// FastGPT's delta chunk, as its `textAdaptGptResponse` serialises it.
    fn chunk_of(content: &str, finish_reason: &str) -> String {
        format!(
            r#"{{"id":"","object":"","created":0,"model":"","choices":[{{"delta":{{"role":"assistant","content":{content}}},"index":0,"finish_reason":{finish_reason}}}]}}"#
        )
    }

    #[tokio::test]
    async fn streamed_answers_are_framed_as_fastgpt_frames_them() {
        let fake = FakeFastGpt::start("k").await;
        let every = Duration::from_millis(5);
        fake.push_responses(vec![FakeAnswer::stream(["Hel", "lo \"you\""], every), FakeAnswer::stream(["Hi"], every)]);

        let resp = ask_streamed(&fake, "c", "q", true).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream;charset=utf-8");
        let expected = [
            "event: flowNodeStatus\ndata: {\"status\":\"running\",\"name\":\"AI 对话\"}\n\n".to_owned(),
            format!("event: answer\ndata: {}\n\n", chunk_of(r#""Hel""#, "null")),
            format!("event: answer\ndata: {}\n\n", chunk_of(r#""lo \"you\"""#, "null")),
            "event: workflowDuration\ndata: {\"durationSeconds\":0.42}\n\n".to_owned(),
            format!("event: answer\ndata: {}\n\n", chunk_of("null", r#""stop""#)),
            "event: answer\ndata: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let body = resp.text().await.expect("body");
        assert!(body.starts_with(&expected), "{body}");
        let rest = &body[expected.len()..];
        assert!(rest.starts_with("event: flowResponses\ndata: [{") && rest.ends_with("}]\n\n"), "{rest}");
        assert_eq!(deltas(&events(&body)), ["Hel", "lo \"you\""]);

        let body = ask_streamed(&fake, "c", "q", false).await.text().await.expect("body");
        let expected = [
            format!("data: {}\n\n", chunk_of(r#""Hi""#, "null")),
            format!("data: {}\n\n", chunk_of("null", r#""stop""#)),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        assert_eq!(body, expected, "no event lines and no noise without detail");

        let requests = fake.requests();
        assert!(requests.iter().all(|r| r.streamed && r.stream));
        assert_eq!(requests[0].delta_times.len(), 2);
        assert_eq!(requests[0].answer.as_deref(), Some("Hello \"you\""));
        assert!(requests[0].first_delta_at().expect("a first delta") >= requests[0].received_at + every);
    }

    #[tokio::test]
    async fn the_echo_streams_in_word_deltas_or_at_the_hinted_pace() {
        let fake = FakeFastGpt::start("k").await;
        let body =
            ask_streamed(&fake, "c", "one two three four five six seven", true).await.text().await.expect("body");
        let parts = deltas(&events(&body));
        assert_eq!(parts.concat(), "Echo (turn 1): one two three four five six seven");
        assert_eq!(parts, ["Echo (turn 1): ", "one two three ", "four five six ", "seven"]);

        let q = "pace stream:4x30ms, please";
        let started = Instant::now();
        let body = ask_streamed(&fake, "c", q, false).await.text().await.expect("body");
        assert!(started.elapsed() >= Duration::from_millis(120), "{:?}", started.elapsed());
        let parts = deltas(&events(&body));
        assert_eq!(parts.len(), 4, "{parts:?}");
        assert_eq!(parts.concat(), format!("Echo (turn 2): {q}"));
        let request = &fake.requests()[1];
        let times = &request.delta_times;
        assert_eq!(times.len(), 4);
        assert!(times.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(25)), "{times:?}");
        assert_eq!(request.answer.as_deref(), Some(parts.concat().as_str()));

        let body = ask_streamed(&fake, "c", "stream-long:6000 stream:10x1ms", true).await.text().await.expect("body");
        let parts = deltas(&events(&body));
        assert_eq!(parts.len(), 10);
        let answer = parts.concat();
        assert!(answer.starts_with("Echo (turn 3): stream-long:6000") && answer.len() >= 6000, "{}", answer.len());
        assert!(answer.contains("## Section 2") && answer.contains("```rust"), "{answer}");

        // Without "stream": true the hints change nothing but the length.
        let long = content(ask(&reqwest::Client::new(), &fake, "k", "c", "stream-long:3000 stream:9x1s").await).await;
        assert!(long.len() >= 3000 && long.starts_with("Echo (turn 4)"), "{}", long.len());
        assert!(!fake.requests()[3].streamed);
    }

    #[tokio::test]
    async fn stream_errors_breaks_and_errors_before_streaming() {
        let fake = FakeFastGpt::start("k").await;
        let error = json!({ "code": 510, "statusText": "insufficientQuota", "message": "账号余额不足" });
        fake.push_responses(vec![
            FakeAnswer::StreamThenError { deltas: vec!["part".into()], every: Duration::ZERO, error: error.clone() },
            FakeAnswer::StreamCut { deltas: vec!["half ".into(), "way".into()], every: Duration::ZERO },
            FakeAnswer::WorkflowError,
            FakeAnswer::insufficient_quota(),
        ]);
        let resp = ask_streamed(&fake, "c", "q", false).await;
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.expect("body");
        let all = events(&body);
        assert_eq!(deltas(&all), ["part"]);
        assert_eq!(all.last(), Some(&(Some("error".to_owned()), error.to_string())), "{body}");
        assert!(!body.contains("[DONE]"));

        let mut resp = ask_streamed(&fake, "c", "q", true).await;
        let mut received = Vec::new();
        let broke = loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => received.extend_from_slice(&bytes),
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        let received = String::from_utf8(received).expect("UTF-8");
        assert!(broke, "the connection breaks: {received}");
        assert!(!received.contains("[DONE]") && !received.ends_with("\n\n"), "{received}");
        let (whole, _) = received.rsplit_once("\n\n").expect("whole frames first");
        assert_eq!(deltas(&events(&format!("{whole}\n\n"))), ["half ", "way"]);

        let body = ask_streamed(&fake, "c", "q", true).await.text().await.expect("body");
        let (event, data) = events(&body).pop().expect("an event");
        assert_eq!(event.as_deref(), Some("error"));
        assert!(serde_json::from_str::<Value>(&data).expect("JSON")["message"].is_string());

        let resp = ask_streamed(&fake, "c", "q", true).await;
        assert_eq!(resp.status(), 500, "an error before streaming stays a JSON body");
        assert_eq!(resp.json::<Value>().await.expect("JSON")["statusText"], "insufficientQuota");
        let requests = fake.requests();
        assert_eq!(requests[0].answer.as_deref(), Some("part"));
        assert_eq!(requests[1].answer.as_deref(), Some("half way"));
        assert!(!requests[3].streamed);
    }

    #[test]
    fn hints_and_splits() {
        let hints = Hints::of("a stream:40x100ms, b stream-long:20000.");
        assert_eq!(hints.pace, Some((40, Duration::from_millis(100))));
        assert_eq!(hints.long_bytes, Some(20000));
        assert_eq!(Hints::of("stream:3x2s").pace, Some((3, Duration::from_secs(2))));
        assert_eq!(Hints::of("stream:x stream:3 streaming stream-long:"), Hints::default());
        assert_eq!(split_even("中文ab", 3), ["中", "文", "ab"]);
        assert_eq!(split_even("ab", 5), ["a", "b"]);
        assert!(split_even("", 3).is_empty());
        assert_eq!(split_default("  a b\n\nc d "), ["  a b\n\n", "c d "]);
        let long = "word ".repeat(1000);
        let parts = split_default(&long);
        assert_eq!(parts.len(), DEFAULT_MAX_DELTAS);
        assert_eq!(parts.concat(), long);
    }
}
