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
//!
//! The code: this file is the server and what a test calls; the rest is in
//! `completions.rs` (the chat completions handler), `answers.rs` (what each
//! answer is), `hints.rs` (the echo's hints and pace), `sse.rs` (server-sent
//! events, written over time), `request.rs` ([`FastGptRequest`], what is
//! recorded of each request), [`chats`], `files.rs` and [`interactive`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::eventually::within_every;
use crate::fake_lark::server::ServerHandle;

/// What FastGPT answers: the echo, scripted answers, JSON and SSE bodies.
mod answers;
/// Stored chats: the dataId check, records, status, feedback, init.
pub mod chats;
/// `POST /api/v1/chat/completions`: the key check, the stored turn, the run.
mod completions;
/// The images and files of a question: what the echo says it received.
mod files;
/// The echo's hints and the pace of its deltas.
mod hints;
/// User-select and form nodes: their wire shapes and how a run resumes.
pub mod interactive;
/// What the fake records of each request.
mod request;
/// Server-sent events as FastGPT writes them, and the runaway answer.
mod sse;
#[cfg(test)]
mod tests;

pub use answers::QUOTE_IDS;
pub use interactive::{ArrayStyle, FormField, Interactive, InteractiveNode, NodeKind, NotAnAnswer, Resume, Wrapper};
pub use request::FastGptRequest;

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
            .route("/api/v1/chat/completions", post(completions::completions))
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
        let enough = within_every(timeout, Duration::from_millis(10), || async {
            let requests = self.requests();
            (requests.len() >= n).then_some(requests)
        });
        enough.await.unwrap_or_else(|| self.requests())
    }
}
