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

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::fake_lark::server::{sleep_unless_cancelled, ServerHandle};

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
    WorkflowError,
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
        let mut out = String::new();
        let mut section = 0;
        while out.len() < bytes {
            section += 1;
            out.push_str(&markdown_sample(&format!("Section {section}"), section));
            out.push('\n');
        }
        FakeAnswer::Markdown(out)
    }
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
}

struct Inner {
    api_key: String,
    queue: VecDeque<FakeAnswer>,
    requests: Vec<FastGptRequest>,
    /// Questions answered per chatId, as FastGPT keeps chat history.
    history: HashMap<String, Vec<String>>,
}

struct Shared {
    inner: Mutex<Inner>,
    cancel: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
            }),
            cancel: cancel.clone(),
        });
        let router = Router::new().route("/api/v1/chat/completions", post(completions)).with_state(shared.clone());
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
    };
    let answer = {
        let mut inner = shared.lock();
        inner.requests.push(request.clone());
        let expected = format!("Bearer {}", inner.api_key);
        if auth.as_deref().map(str::trim) != Some(expected.as_str()) {
            None
        } else {
            Some(inner.queue.pop_front().unwrap_or(FakeAnswer::Echo))
        }
    };
    let Some(answer) = answer else {
        return error_body(500, 514, "unAuthApiKey", "Api Key 不合法");
    };
    if !body.is_object() {
        return error_body(500, 500, "error", "Unexpected token in JSON");
    }
    if request.content.is_empty() {
        return error_body(500, 500, "error", "messages is empty");
    }
    answer_with(&shared, &request, answer).await
}

async fn answer_with(shared: &Shared, request: &FastGptRequest, answer: FakeAnswer) -> Response {
    let chat_id = request.chat_id.as_deref();
    let content = match answer {
        FakeAnswer::Echo => {
            let turn = chat_id.map_or(0, |c| shared.lock().history.get(c).map_or(0, Vec::len)) + 1;
            if request.content.to_lowercase().contains("markdown") {
                format!("**Echo (turn {turn})**: {}\n\n{}", request.content, markdown_sample("Markdown", turn))
            } else {
                format!("Echo (turn {turn}): {}", request.content)
            }
        }
        FakeAnswer::Text(text) | FakeAnswer::Markdown(text) => text,
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
            return success(chat_id, "", Some(error), request.detail);
        }
        FakeAnswer::Delay(d, then) => {
            sleep_unless_cancelled(d, &shared.cancel).await;
            return Box::pin(answer_with(shared, request, *then)).await;
        }
    };
    if let Some(chat_id) = chat_id {
        shared.lock().history.entry(chat_id.to_owned()).or_default().push(request.content.clone());
    }
    success(chat_id, &content, None, request.detail)
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
}
