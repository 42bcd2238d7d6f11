//! The streaming FastGPT call: `"stream": true, "detail": true`, read as
//! server-sent events while FastGPT writes the answer.
//!
//! The wire shapes come from FastGPT's source (labring/FastGPT):
//! - `responseWrite` (`packages/service/common/response/index.ts`) writes
//!   `event: {name}\n` (only when `detail` is true) and `data: {json}\n\n`;
//!   `getWorkflowResponseWrite` drops the detail-only events (`error`,
//!   `interactive`, `flowNodeStatus`, `toolCall`, ...) when `detail` is false.
//! - `SseResponseEventEnum` (`packages/global/core/workflow/runtime/constants.ts`)
//!   names the events: `answer`, `fastAnswer`, `error`, `interactive`,
//!   `flowNodeStatus`, `flowNodeResponse`, `flowResponses`, `updateVariables`,
//!   `workflowDuration`, `toolCall`, `toolParams`, `toolResponse`, and newer
//!   ones (`plan`, `stepTitle`, `chatTitle`, ...).
//! - `textAdaptGptResponse` (`packages/global/core/workflow/runtime/utils.ts`)
//!   shapes every answer delta: `{"id":"","object":"","created":0,"model":"",
//!   "choices":[{"delta":{"role":"assistant","content":"..."},"index":0,
//!   "finish_reason":null}]}`, with `reasoning_content` beside `content` for a
//!   reasoning model, `content: null` (or no `content`) in the closing
//!   `finish_reason: "stop"` delta, and `content: ""` in the heartbeat that
//!   `dispatchWorkFlow` writes every 10 s while a workflow runs.
//! - `projects/app/src/pages/api/v1/chat/completions.ts` ends a run with that
//!   stop delta, `data: [DONE]` (as `event: answer` with detail), then
//!   `event: flowResponses`, which this client never waits for.
//! - `sseErrRes` (same file as `responseWrite`) reports a failed run as
//!   `event: error` over the HTTP 200 already sent, with FastGPT's error body
//!   `{"code","statusText","message","data"}` for the errors FastGPT names,
//!   or a bare `{"message": "..."}` for any other thrown error, and no [DONE].
//!   The error can come before `dispatchWorkFlow` set
//!   `Content-Type: text/event-stream` (a wrong API key, a missing app): such
//!   an answer has no Content-Type at all, and is read as SSE too.
//! - `handleInteractiveResult` (`packages/service/core/workflow/dispatch/index.ts`)
//!   writes `event: interactive` with `data: {"interactive": {...}}` when a
//!   run stops at a user-select or form node.
//!
//! The SSE line protocol is `sse-stream`'s: a byte-level decoder that scans
//! each line once with memchr and appends a data line split across chunks
//! piece by piece, so the cost is linear in the answer whatever the chunking
//! (eventsource-stream, the other candidate, copies the rest of its buffer
//! after every line and re-parses a partial line on every chunk: quadratic
//! for a large chunk or a long line). Each event's JSON is parsed once, here.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::channel::Channel;
use futures::{stream, Stream, StreamExt};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;
use sse_stream::{Sse, SseByteStream};

use super::{
    api_key, classify, content_text, network_error, request_body, snippet, too_large, trace_headers, Ask, ErrorBody,
    FastGpt, FastGptError, Refusal, WithoutUrlRef, MAX_ANSWER_BYTES,
};

/// The largest single server-sent event read. FastGPT's deltas are a few
/// tokens and its `interactive` event some kilobytes; only a broken or hostile
/// upstream sends megabytes without an event boundary, and the decoder would
/// buffer all of it. Measured as bytes read since the last event, so the
/// bound holds within one network chunk. Exceeding it is a refusal, not
/// transient: the same app would send the same event again.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// How much of an error body that is not an event stream is read before
/// classifying it (a whole JSON answer from an old FastGPT may be as long
/// as any answer, `MAX_ANSWER_BYTES`).
pub const MAX_JSON_BODY_BYTES: usize = 1 << 20;

/// A ceiling on one streamed answer, replacing the client's total timeout
/// (`relay.fastgpt_timeout_secs`, which is the idle timeout here): answers
/// may last more than ten minutes, but FastGPT's heartbeat (an empty delta
/// every 10 s) keeps a stuck workflow's stream busy forever, so something
/// must end it.
pub const MAX_ANSWER_DURATION: Duration = Duration::from_secs(60 * 60);

/// One part of a streamed answer, in FastGPT's order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// One delta of the answer's visible content (never empty). The answer is
    /// the concatenation of all of them.
    Text(String),
    /// The `interactive` object of an `event: interactive` (FastGPT's
    /// user-select or form node), unwrapped from its `data` and otherwise raw.
    Interactive(Value),
    /// The nodes' responses (`event: flowResponses`, after `[DONE]`): where
    /// the quotes are (`crate::sources`). The answer is complete before it.
    Responses(Value),
}

/// How long the answer's end waits after `[DONE]` for `event:
/// flowResponses` (FastGPT writes it at once, then ends the response).
pub const AFTER_DONE_WAIT: Duration = Duration::from_secs(2);

/// A FastGPT answer as it arrives. Each item is final: [`AnswerStream::next`]
/// returns `None` after `[DONE]` (a complete answer), or one `Err` and then
/// `None`; a stream that ends any other way is an `Err`.
pub struct AnswerStream {
    inner: Pin<Box<dyn Stream<Item = Result<Piece, FastGptError>> + Send>>,
}

impl AnswerStream {
    /// The next piece; `None` once the answer is complete (or failed).
    pub async fn next(&mut self) -> Option<Result<Piece, FastGptError>> {
        self.inner.next().await
    }

    fn new(pieces: impl Stream<Item = Result<Piece, FastGptError>> + Send + 'static) -> Self {
        // Fused: `None` again after the end, however often it is asked.
        Self { inner: Box::pin(pieces.fuse()) }
    }

    /// A whole answer that came as one JSON body: one piece, or none if empty.
    fn whole(text: String) -> Self {
        let piece = (!text.is_empty()).then_some(Ok(Piece::Text(text)));
        Self::new(stream::iter(piece))
    }
}

impl Stream for AnswerStream {
    type Item = Result<Piece, FastGptError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for AnswerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerStream").finish_non_exhaustive()
    }
}

impl FastGpt {
    /// Asks with `"stream": true, "detail": true` and returns the answer as
    /// it is written. The error here is the request's (no connection, no
    /// headers within `relay.fastgpt_timeout_secs`, an error status or body);
    /// errors after that come from the stream. There is no total timeout but
    /// [`MAX_ANSWER_DURATION`]: `relay.fastgpt_timeout_secs` bounds each wait
    /// for bytes instead. The client's connect timeout still holds.
    pub async fn ask_streaming(&self, channel: &Channel, ask: &Ask<'_>) -> Result<AnswerStream, FastGptError> {
        let key = api_key(channel)?;
        let request = self
            .http
            .post(channel.fastgpt_completions_url())
            .bearer_auth(key.expose_secret())
            // Replaces the client's total timeout for this request (reqwest
            // keeps one timeout per request, the client's by default).
            .timeout(MAX_ANSWER_DURATION)
            .headers(trace_headers())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&request_body(channel, ask, true));
        let resp = match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => return Err(idle_timeout(self.timeout)),
            Ok(Err(e)) => return Err(FastGptError::Transient(network_error(&e, self.timeout))),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        if !status.is_success() || !is_event_stream(resp.headers()) {
            // A whole answer (an old FastGPT) may be as long as any answer.
            let limit = if status.is_success() { MAX_ANSWER_BYTES } else { MAX_JSON_BODY_BYTES };
            let body = read_bounded(resp, limit, self.timeout).await?;
            if body.len() >= MAX_ANSWER_BYTES {
                return Err(too_large());
            }
            return classify(status.as_u16(), &body).map(AnswerStream::whole);
        }
        let bytes = resp.bytes_stream().map(|chunk| chunk.map_err(|e| body_error(&e)));
        Ok(AnswerStream::new(pieces(bytes, status.as_u16(), self.timeout)))
    }
}

/// An event stream by its Content-Type, or by having none: FastGPT writes an
/// early `event: error` before it sets the header (see the module doc).
/// Anything else (JSON, an HTML error page of a proxy) is a whole body.
fn is_event_stream(headers: &reqwest::header::HeaderMap) -> bool {
    match headers.get(reqwest::header::CONTENT_TYPE) {
        None => true,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream")),
    }
}

/// Reads at most `limit` bytes of a body, each wait bounded by `idle`. A
/// longer body is cut: what matters of an error or answer is at its start.
pub(crate) async fn read_bounded(
    mut resp: reqwest::Response,
    limit: usize,
    idle: Duration,
) -> Result<Vec<u8>, FastGptError> {
    let mut body = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(idle, resp.chunk()).await {
            Err(_) => return Err(idle_timeout(idle)),
            Ok(Err(e)) => return Err(FastGptError::Transient(network_error(&e, idle))),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => chunk,
        };
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            return Ok(body);
        }
    }
}

/// A read error of the answer's body, without FastGPT's URL.
fn body_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("the answer took longer than {} minutes", MAX_ANSWER_DURATION.as_secs() / 60)
    } else {
        e.without_url_ref()
    }
}

fn idle_timeout(idle: Duration) -> FastGptError {
    FastGptError::Transient(format!("FastGPT sent nothing for {}s (relay.fastgpt_timeout_secs)", idle.as_secs_f32()))
}

/// The answer's pieces from its body's bytes, however they are chunked.
/// `http_status` is the status the stream came with (for errors it reports);
/// `idle` bounds each wait for bytes. Public so that recorded FastGPT
/// bodies (`testdata/real/fastgpt/`) go through this very parser.
pub fn pieces<S, E>(
    bytes: S,
    http_status: u16,
    idle: Duration,
) -> impl Stream<Item = Result<Piece, FastGptError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    let since_event = Arc::new(AtomicUsize::new(0));
    let events = Box::pin(SseByteStream::new(guarded(bytes, idle, since_event.clone())));
    let decoder = Decoder { events, since_event, http_status, finished: false, done: false };
    stream::unfold(decoder, |mut decoder| async move {
        let item = decoder.next_piece().await?;
        Some((item, decoder))
    })
}

/// The body's bytes with the idle timeout and the event size bound applied;
/// every failure is a [`FastGptError`], which the decoder hands back whole.
fn guarded<S, E>(
    bytes: S,
    idle: Duration,
    since_event: Arc<AtomicUsize>,
) -> impl Stream<Item = Result<Bytes, FastGptError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    stream::unfold(Some(Box::pin(bytes)), move |state| {
        let since_event = since_event.clone();
        async move {
            let mut bytes = state?;
            let failure = match tokio::time::timeout(idle, bytes.next()).await {
                Err(_) => idle_timeout(idle),
                Ok(None) => return None,
                Ok(Some(Err(e))) => FastGptError::Transient(format!("the answer stream broke off: {e}")),
                Ok(Some(Ok(chunk))) => {
                    let pending = since_event.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len();
                    if pending <= MAX_EVENT_BYTES {
                        return Some((Ok(chunk), Some(bytes)));
                    }
                    FastGptError::Refused {
                        cause: Refusal::Other,
                        http_status: 0,
                        status_text: String::new(),
                        message: format!("one event of the answer stream is larger than {} MiB", MAX_EVENT_BYTES >> 20),
                    }
                }
            };
            Some((Err(failure), None))
        }
    })
}

struct Decoder<D> {
    events: Pin<Box<D>>,
    /// Bytes read since the last event, shared with [`guarded`].
    since_event: Arc<AtomicUsize>,
    http_status: u16,
    finished: bool,
    /// `[DONE]` came: the answer is whole; only `flowResponses` may follow.
    done: bool,
}

impl<D> Decoder<D>
where
    D: Stream<Item = Result<Sse, sse_stream::Error>>,
{
    async fn next_piece(&mut self) -> Option<Result<Piece, FastGptError>> {
        if self.finished {
            return None;
        }
        loop {
            if self.done {
                return self.after_done().await;
            }
            let step = match self.events.next().await {
                Some(Ok(event)) => {
                    self.since_event.store(0, Ordering::Relaxed);
                    interpret(event.event.as_deref(), event.data.as_deref(), self.http_status)
                }
                Some(Err(e)) => Step::Fail(decode_error(e)),
                None => Step::Fail(FastGptError::Transient(
                    "the answer stream ended before [DONE] (FastGPT or a proxy closed the connection)".to_owned(),
                )),
            };
            match step {
                Step::Skip => continue,
                Step::Piece(piece) => return Some(Ok(piece)),
                Step::Done => {
                    self.done = true;
                }
                Step::Fail(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl<D> Decoder<D>
where
    D: Stream<Item = Result<Sse, sse_stream::Error>>,
{
    /// After `[DONE]`: the `flowResponses` event if it comes within
    /// [`AFTER_DONE_WAIT`]; anything else (another event, an error, the end,
    /// the wait running out) ends the answer as it is, whole.
    async fn after_done(&mut self) -> Option<Result<Piece, FastGptError>> {
        let deadline = tokio::time::Instant::now() + AFTER_DONE_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(Some(Ok(event))) if event.event.as_deref() == Some("flowResponses") => {
                    self.finished = true;
                    let responses = serde_json::from_str(event.data.as_deref().unwrap_or("").trim()).ok()?;
                    return Some(Ok(Piece::Responses(responses)));
                }
                Ok(Some(Ok(_))) => {
                    self.since_event.store(0, Ordering::Relaxed);
                }
                _ => {
                    self.finished = true;
                    return None;
                }
            }
        }
    }
}

/// What one event means for the answer.
#[derive(Debug)]
enum Step {
    Skip,
    Piece(Piece),
    Done,
    Fail(FastGptError),
}

/// One event, by its name and data (`None` when it had no `data:` line).
fn interpret(event: Option<&str>, data: Option<&str>, http_status: u16) -> Step {
    match event.unwrap_or("") {
        // Unnamed events are what `detail: false` sends.
        "" | "message" | "answer" | "fastAnswer" => answer(data.unwrap_or("")),
        "error" => Step::Fail(error_event(data.unwrap_or(""), http_status)),
        "interactive" => interactive(data.unwrap_or("")),
        _ => Step::Skip,
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
}

/// Only `content`: `reasoning_content` (a reasoning model's thoughts) is not
/// part of the answer.
#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<Value>,
}

fn answer(data: &str) -> Step {
    let data = data.trim();
    if data == "[DONE]" {
        return Step::Done;
    }
    let chunk: Chunk = match serde_json::from_str(data) {
        Ok(chunk) => chunk,
        Err(e) => {
            // Lenient: one odd line must not cost the user the answer.
            tracing::debug!(error = %e, data = %snippet(data.as_bytes()), "FastGPT answer event is not a delta; skipped");
            return Step::Skip;
        }
    };
    let text = chunk
        .choices
        .into_iter()
        .next()
        .and_then(|choice| choice.delta)
        .and_then(|delta| delta.content)
        .map(|content| content_text(&content))
        .unwrap_or_default();
    if text.is_empty() {
        Step::Skip
    } else {
        Step::Piece(Piece::Text(text))
    }
}

/// `event: error` ends the answer. FastGPT's error body (it has `statusText`
/// or a `code`) is classified like any FastGPT error, by [`classify`]: a
/// named refusal is not retried, `tooManyRequest` and an empty `statusText`
/// are transient. A bare `{"message"}` (or a plain string) is what
/// `sseErrRes` writes for every error FastGPT did not name: an error thrown
/// while running this app (a missing or outdated app, a bad request, a
/// failed dependency). It becomes [`FastGptError::Workflow`], permanent:
/// nothing in it says a retry would help, and a retry would run the whole
/// workflow again after the user may have seen part of its answer. A
/// transient condition FastGPT knows of comes with a `statusText`.
fn error_event(data: &str, http_status: u16) -> FastGptError {
    let data = data.trim();
    let Ok(json) = serde_json::from_str::<Value>(data) else {
        return FastGptError::Workflow(if data.is_empty() {
            "no message".to_owned()
        } else {
            snippet(data.as_bytes())
        });
    };
    if ErrorBody::deserialize(&json).is_ok_and(|body| body.is_error()) {
        return match classify(http_status, data.as_bytes()) {
            Err(e) => e,
            Ok(_) => FastGptError::Workflow(snippet(data.as_bytes())),
        };
    }
    let message = json.get("message").or_else(|| json.get("error")).unwrap_or(&json);
    let message = match message {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => message.to_string(),
        },
        other => other.to_string(),
    };
    // `preChatRound` throws both before the workflow: nothing ran this time.
    if let Some(id) = super::duplicate_of(&message) {
        return FastGptError::Duplicate(id);
    }
    if super::is_generating(&message) {
        return FastGptError::Transient(format!("the chat is still answering an earlier turn: {message}"));
    }
    FastGptError::Workflow(message)
}

fn interactive(data: &str) -> Step {
    match serde_json::from_str::<Value>(data.trim()) {
        Ok(Value::Object(mut o)) if o.contains_key("interactive") => {
            Step::Piece(Piece::Interactive(o.remove("interactive").unwrap_or(Value::Null)))
        }
        _ => {
            tracing::warn!(data = %snippet(data.as_bytes()), "FastGPT interactive event without an interactive object; skipped");
            Step::Skip
        }
    }
}

/// A decoder failure: our own errors come back whole (idle timeout, size
/// bound, a broken connection); the rest is a stream that cannot be read.
fn decode_error(e: sse_stream::Error) -> FastGptError {
    match e {
        sse_stream::Error::Body(inner) => match inner.downcast::<FastGptError>() {
            Ok(e) => *e,
            Err(other) => FastGptError::Transient(format!("the answer stream broke off: {other}")),
        },
        other => FastGptError::Transient(format!("the answer stream cannot be read: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    const IDLE: Duration = Duration::from_secs(5);

    /// FastGPT's shapes (see the module doc).
    fn delta(text: &str) -> String {
        let json = serde_json::json!({
            "id": "", "object": "", "created": 0, "model": "",
            "choices": [{ "delta": { "role": "assistant", "content": text }, "index": 0, "finish_reason": null }],
        });
        json.to_string()
    }
    const STOP: &str = r#"{"id":"","object":"","created":0,"model":"","choices":[{"delta":{"role":"assistant","content":null},"index":0,"finish_reason":"stop"}]}"#;

    fn named(event: &str, data: &str) -> String {
        format!("event: {event}\ndata: {data}\n\n")
    }
    fn unnamed(data: &str) -> String {
        format!("data: {data}\n\n")
    }

    /// Runs the parser over `chunks` and returns every item, up to the end.
    async fn run(chunks: Vec<Vec<u8>>) -> Vec<Result<Piece, FastGptError>> {
        let bytes = stream::iter(chunks.into_iter().map(|c| Ok::<_, Infallible>(Bytes::from(c))));
        pieces(bytes, 200, IDLE).collect().await
    }

    async fn run_str(body: &str) -> Vec<Result<Piece, FastGptError>> {
        run(vec![body.as_bytes().to_vec()]).await
    }

    fn text(items: &[Result<Piece, FastGptError>]) -> String {
        items
            .iter()
            .filter_map(|i| match i {
                Ok(Piece::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    fn texts(parts: &[&str]) -> Vec<Result<Piece, FastGptError>> {
        parts.iter().map(|p| Ok(Piece::Text((*p).to_owned()))).collect()
    }

    #[tokio::test]
    async fn detail_true_answer_events() {
        let body = [
            named("flowNodeStatus", r#"{"status":"running","name":"AI 对话"}"#),
            named("answer", &delta("")), // the 10 s heartbeat
            named("answer", &delta("Hello")),
            named("answer", &delta(", **world**")),
            named("answer", STOP),
            named("answer", "[DONE]"),
            named("flowResponses", r#"[{"moduleName":"AI 对话","runningTime":1.2}]"#),
        ]
        .concat();
        let mut want = texts(&["Hello", ", **world**"]);
        want.push(Ok(Piece::Responses(serde_json::json!([{ "moduleName": "AI 对话", "runningTime": 1.2 }]))));
        assert_eq!(run_str(&body).await, want, "the nodes' responses after [DONE]");
        let without = body.replace("event: flowResponses", "event: workflowDuration");
        assert_eq!(run_str(&without).await, texts(&["Hello", ", **world**"]), "no responses: the answer ends as it is");
    }

    #[tokio::test]
    async fn detail_false_unnamed_events() {
        let body = [unnamed(&delta("你好")), unnamed(&delta("！")), unnamed(STOP), unnamed("[DONE]")].concat();
        assert_eq!(run_str(&body).await, texts(&["你好", "！"]));
    }

    #[tokio::test]
    async fn fast_answer_is_text() {
        let body = [
            named("fastAnswer", &delta("Quick reply. ")),
            named("answer", &delta("Then more.")),
            named("answer", "[DONE]"),
        ]
        .concat();
        assert_eq!(run_str(&body).await, texts(&["Quick reply. ", "Then more."]));
    }

    #[tokio::test]
    async fn other_events_are_ignored() {
        let body = [
            named("flowNodeStatus", r#"{"status":"running","name":"Search"}"#),
            named("flowNodeResponse", r#"{"id":"x","nodeId":"n","moduleName":"Search","error":null}"#),
            named("toolCall", r#"{"tool":{"id":"t","toolName":"search","params":""}}"#),
            named("toolParams", r#"{"tool":{"id":"t","params":"{\"q\":1}"}}"#),
            named("toolResponse", r#"{"tool":{"id":"t","response":"{}"}}"#),
            named("updateVariables", r#"{"city":"Paris"}"#),
            named("workflowDuration", r#"{"durationSeconds":1.5}"#),
            named("somethingNew", r#"{"choices":[{"delta":{"content":"not the answer"}}]}"#),
            ": a comment line\n\n".to_owned(),
            "id: 7\nretry: 1000\n\n".to_owned(),
            named("answer", &delta("only this")),
            named("answer", "[DONE]"),
        ]
        .concat();
        assert_eq!(run_str(&body).await, texts(&["only this"]));
    }

    #[tokio::test]
    async fn done_ends_the_stream() {
        let body = [named("answer", &delta("a")), named("answer", "[DONE]"), named("answer", &delta("late"))].concat();
        let bytes = stream::iter([Ok::<_, Infallible>(Bytes::from(body))]).chain(stream::pending());
        let mut answer = AnswerStream::new(pieces(bytes, 200, IDLE));
        assert_eq!(answer.next().await, Some(Ok(Piece::Text("a".into()))));
        // Ends at [DONE] without waiting for the connection to close.
        assert_eq!(answer.next().await, None);
        assert_eq!(answer.next().await, None);
    }

    #[tokio::test]
    async fn an_error_event_with_fastgpt_error_body_is_classified() {
        let cases = [
            (r#"{"code":514,"statusText":"unAuthApiKey","message":"Api Key 不合法","data":null}"#, "auth"),
            (r#"{"code":510,"statusText":"insufficientQuota","message":"账号余额不足","data":null}"#, "quota"),
            (r#"{"code":511,"statusText":"unAuthModel","message":"x","data":null}"#, "model"),
            (r#"{"code":502000,"statusText":"appUnExist","message":"应用不存在","data":null}"#, "refused"),
            (r#"{"code":429,"statusText":"tooManyRequest","message":"x","data":null}"#, "transient"),
            (r#"{"code":500,"statusText":"","message":"upstream timed out","data":null}"#, "transient"),
        ];
        for (data, label) in cases {
            // No [DONE]: the error ends the stream.
            let items = run_str(&named("error", data)).await;
            assert_eq!(items.len(), 1, "{data}");
            let err = items[0].clone().expect_err("an error");
            assert_eq!(err.label(), label, "{data}: {err}");
        }
        let items = run_str(&named("error", r#"{"code":514,"statusText":"unAuthApiKey","message":"m"}"#)).await;
        assert!(matches!(&items[0], Err(FastGptError::Refused { http_status: 200, message, .. }) if message == "m"));
    }

    #[tokio::test]
    async fn an_error_event_with_a_bare_message_is_a_workflow_failure() {
        let body = [
            named("answer", &delta("Part of it")),
            named("error", r#"{"message":"您的工作流版本过低，请重新发布一次"}"#),
        ]
        .concat();
        let items = run_str(&body).await;
        assert_eq!(
            items,
            vec![
                Ok(Piece::Text("Part of it".into())),
                Err(FastGptError::Workflow("您的工作流版本过低，请重新发布一次".into()))
            ]
        );
        assert_eq!(
            run_str(&named("error", r#""app is empty""#)).await,
            vec![Err(FastGptError::Workflow("app is empty".into()))]
        );
        assert_eq!(run_str(&named("error", "not json")).await, vec![Err(FastGptError::Workflow("not json".into()))]);
        assert_eq!(
            run_str(&named("error", r#"{"error":{"message":"boom"}}"#)).await,
            vec![Err(FastGptError::Workflow("boom".into()))]
        );
    }

    #[tokio::test]
    async fn an_end_without_done_is_transient() {
        let items = run_str(&named("answer", &delta("cut short"))).await;
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[1], Err(FastGptError::Transient(m)) if m.contains("before [DONE]")), "{items:?}");
        let items = run_str("").await;
        assert!(matches!(&items[..], [Err(FastGptError::Transient(_))]), "{items:?}");
    }

    #[tokio::test]
    async fn a_stream_cut_mid_line_is_transient() {
        let body = format!("{}event: answer\ndata: {{\"choices\":[{{\"del", named("answer", &delta("first")));
        let items = run_str(&body).await;
        assert_eq!(items[0], Ok(Piece::Text("first".into())));
        assert!(matches!(&items[1..], [Err(FastGptError::Transient(m))] if m.contains("before [DONE]")), "{items:?}");
    }

    #[tokio::test]
    async fn a_network_error_mid_stream_is_transient() {
        let first = Bytes::from(named("answer", &delta("so far")));
        let bytes = stream::iter([Ok(first), Err("connection reset by peer")]);
        let items: Vec<_> = pieces(bytes, 200, IDLE).collect().await;
        assert_eq!(items[0], Ok(Piece::Text("so far".into())));
        assert!(
            matches!(&items[1..], [Err(FastGptError::Transient(m))] if m.contains("connection reset")),
            "{items:?}"
        );
    }

    #[tokio::test]
    async fn silence_longer_than_the_idle_timeout_is_transient() {
        let first = Bytes::from(named("answer", &delta("thinking")));
        let bytes = stream::iter([Ok::<_, Infallible>(first)]).chain(stream::pending());
        let items: Vec<_> = pieces(bytes, 200, Duration::from_millis(100)).collect().await;
        assert_eq!(items[0], Ok(Piece::Text("thinking".into())));
        assert!(
            matches!(&items[1..], [Err(FastGptError::Transient(m))] if m.contains("relay.fastgpt_timeout_secs")),
            "{items:?}"
        );
    }

    /// Every chunk boundary: inside `data:`, inside the JSON, inside a
    /// three-byte and a four-byte UTF-8 character, between CR and LF.
    #[tokio::test]
    async fn one_byte_at_a_time() {
        for sep in ["\n", "\r\n", "\r"] {
            let body = [
                named("flowNodeStatus", r#"{"status":"running","name":"x"}"#),
                named("answer", &delta("汉字 and 🦀")),
                unnamed(&delta(" — ok")),
                named("answer", "[DONE]"),
            ]
            .concat()
            .replace('\n', sep);
            let chunks = body.as_bytes().iter().map(|b| vec![*b]).collect();
            assert_eq!(run(chunks).await, texts(&["汉字 and 🦀", " — ok"]), "{sep:?}");
        }
    }

    #[tokio::test]
    async fn crlf_line_endings() {
        let body = "event: answer\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\r\n\r\n\
                    event: answer\r\ndata: [DONE]\r\n\r\n";
        assert_eq!(run_str(body).await, texts(&["a", "b"]));
    }

    #[tokio::test]
    async fn reasoning_content_is_not_the_answer() {
        let thinking = r#"{"choices":[{"delta":{"role":"assistant","reasoning_content":"Let me think"},"index":0}]}"#;
        let both = r#"{"choices":[{"delta":{"role":"assistant","content":"","reasoning_content":"still"},"index":0}]}"#;
        let body = [
            named("answer", thinking),
            named("answer", both),
            named("answer", &delta("42")),
            named("answer", "[DONE]"),
        ]
        .concat();
        assert_eq!(run_str(&body).await, texts(&["42"]));
    }

    #[tokio::test]
    async fn answer_data_that_is_not_a_delta_is_skipped() {
        let body = [
            named("answer", "not json at all"),
            named("answer", r#"{"unexpected":true}"#),
            named("answer", r#"{"choices":[]}"#),
            named("answer", &delta("fine")),
            named("answer", "[DONE]"),
        ]
        .concat();
        assert_eq!(run_str(&body).await, texts(&["fine"]));
    }

    /// FastGPT's userSelect node as it streams it, with the
    /// fields FastGPT adds (`entryNodeIds`, `memoryEdges`, `nodeOutputs`).
    #[tokio::test]
    async fn an_interactive_event_is_passed_raw() {
        let interactive = serde_json::json!({
            "type": "userSelect",
            "params": {
                "description": "Which plan?",
                "userSelectOptions": [{ "key": "option1", "value": "Basic" }, { "key": "option2", "value": "Pro" }],
            },
            "entryNodeIds": ["n1"],
            "memoryEdges": [],
            "nodeOutputs": [],
        });
        let data = serde_json::json!({ "interactive": interactive }).to_string();
        let body = [
            named("answer", &delta("Choose:")),
            named("interactive", &data),
            named("workflowDuration", r#"{"durationSeconds":0.3}"#),
            named("answer", STOP),
            named("answer", "[DONE]"),
        ]
        .concat();
        assert_eq!(run_str(&body).await, vec![Ok(Piece::Text("Choose:".into())), Ok(Piece::Interactive(interactive))]);
    }

    /// A 1 MiB answer in 16 Ki deltas, in one chunk and in 1 000-byte chunks
    /// (chunk edges fall anywhere, in characters too): every byte arrives.
    #[tokio::test]
    async fn a_long_answer_in_many_deltas() {
        let part = "0123456789abcdefghijklmnopqrstuvwxyz 汉字🦀 ABCDEFGHIJKLMNO\n";
        assert_eq!(part.len(), 64);
        let mut body = String::new();
        for _ in 0..(1 << 14) {
            body.push_str(&named("answer", &delta(part)));
        }
        body.push_str(&named("answer", "[DONE]"));
        let want = part.repeat(1 << 14);
        let whole = run_str(&body).await;
        assert_eq!(whole.len(), 1 << 14);
        assert!(text(&whole) == want);
        let chunked = run(body.as_bytes().chunks(1000).map(<[u8]>::to_vec).collect()).await;
        assert!(chunked.iter().all(Result::is_ok));
        assert!(text(&chunked) == want);
    }

    #[tokio::test]
    async fn an_oversized_event_is_refused() {
        let chunk = vec![b'x'; 64 << 10];
        let mut chunks = vec![b"event: answer\ndata: ".to_vec()];
        chunks.extend(std::iter::repeat_n(chunk, (MAX_EVENT_BYTES >> 16) + 2));
        let items = run(chunks).await;
        assert!(
            matches!(&items[..], [Err(FastGptError::Refused { cause: Refusal::Other, message, .. })] if message.contains("MiB")),
            "{:?}",
            items.iter().map(|i| i.as_ref().map(|_| ())).collect::<Vec<_>>()
        );
        // Many events adding up to more than the bound are fine.
        let mut body = String::new();
        let big = "y".repeat(1 << 20);
        for _ in 0..6 {
            body.push_str(&named("answer", &delta(&big)));
        }
        body.push_str(&named("answer", "[DONE]"));
        let items = run(body.as_bytes().chunks(64 << 10).map(<[u8]>::to_vec).collect()).await;
        assert_eq!(text(&items).len(), 6 << 20);
        assert!(items.iter().all(Result::is_ok));
    }

    #[test]
    fn event_stream_content_types() {
        use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
            h
        };
        assert!(is_event_stream(&with("text/event-stream;charset=utf-8")));
        assert!(is_event_stream(&with("Text/Event-Stream")));
        assert!(is_event_stream(&HeaderMap::new()), "FastGPT's early error event has no Content-Type");
        assert!(!is_event_stream(&with("application/json; charset=utf-8")));
        assert!(!is_event_stream(&with("text/html")));
    }

    /// The HTTP path, against a local server.
    mod http {
        use super::*;
        use axum::body::Body;
        use axum::http::Response as Builder;
        use axum::http::{header, StatusCode};
        use axum::response::Response;
        use axum::routing::post;
        use axum::Router;
        use common::config::ChannelSettings;

        /// Serves `respond` at `/api/v1/chat/completions`; returns the base URL.
        async fn serve(respond: fn() -> Response) -> String {
            serve_after(Duration::ZERO, respond).await
        }

        /// Like [`serve`], answering (headers included) after `delay`.
        async fn serve_after(delay: Duration, respond: fn() -> Response) -> String {
            let answer = move || async move {
                tokio::time::sleep(delay).await;
                respond()
            };
            let app = Router::new().route("/api/v1/chat/completions", post(answer));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}/api")
        }

        fn channel(base: &str) -> Channel {
            let settings: ChannelSettings = serde_json::from_value(serde_json::json!({
                "id": "test", "app_id": "cli_test", "fastgpt_base_url": base, "fastgpt_api_key": "fastgpt-key",
            }))
            .expect("settings");
            Channel::new(&settings)
        }

        /// A client like the relay's, whose total timeout is shorter than
        /// the answers below: streaming must not be bound by it.
        fn client(idle: Duration) -> FastGpt {
            let http = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_millis(300))
                .build()
                .expect("client");
            FastGpt::new(http, idle)
        }

        const ASK: Ask<'static> =
            Ask { chat_id: "chat", custom_uid: "lark:test:ou_1", text: "hi", attachments: &[], data_id: None };

        /// Sends `events` one every 100 ms, after none for `pause`.
        fn trickle(events: Vec<String>, pause: Duration) -> Body {
            Body::from_stream(stream::iter(events).then(move |event| async move {
                tokio::time::sleep(pause).await;
                Ok::<_, Infallible>(Bytes::from(event))
            }))
        }

        async fn all(mut answer: AnswerStream) -> Vec<Result<Piece, FastGptError>> {
            let mut items = Vec::new();
            while let Some(item) = answer.next().await {
                items.push(item);
            }
            items
        }

        #[tokio::test]
        async fn an_event_stream_answer() {
            let base = serve(|| {
                let mut events: Vec<String> = (0..8).map(|i| named("answer", &delta(&format!("{i} ")))).collect();
                events.push(named("answer", "[DONE]"));
                Builder::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream;charset=utf-8")
                    .body(trickle(events, Duration::from_millis(100)))
                    .expect("response")
            })
            .await;
            // About 900 ms in all: longer than the client's total timeout.
            let answer = client(Duration::from_secs(5)).ask_streaming(&channel(&base), &ASK).await.expect("stream");
            let items = all(answer).await;
            assert!(items.iter().all(Result::is_ok), "{items:?}");
            assert_eq!(text(&items), "0 1 2 3 4 5 6 7 ");
        }

        #[tokio::test]
        async fn a_json_error_body_is_classified() {
            let base = serve(|| {
                Builder::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
                    .body(Body::from(
                        r#"{"code":514,"statusText":"unAuthApiKey","message":"Api Key 不合法","data":null}"#,
                    ))
                    .expect("response")
            })
            .await;
            let err = client(IDLE).ask_streaming(&channel(&base), &ASK).await.expect_err("refused");
            assert!(matches!(err, FastGptError::Refused { cause: Refusal::Auth, http_status: 500, .. }), "{err}");
        }

        #[tokio::test]
        async fn a_whole_json_answer_is_one_piece() {
            let base = serve(|| {
                Builder::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(r#"{"choices":[{"message":{"role":"assistant","content":"All at once"}}]}"#))
                    .expect("response")
            })
            .await;
            let answer = client(IDLE).ask_streaming(&channel(&base), &ASK).await.expect("answer");
            assert_eq!(all(answer).await, texts(&["All at once"]));
        }

        /// FastGPT's error before it set the event-stream header: HTTP 200,
        /// no Content-Type.
        #[tokio::test]
        async fn an_early_error_event_without_content_type() {
            let base = serve(|| {
                let body =
                    named("error", r#"{"code":510,"statusText":"insufficientQuota","message":"余额不足","data":null}"#);
                Builder::builder().body(Body::from(body)).expect("response")
            })
            .await;
            let answer = client(IDLE).ask_streaming(&channel(&base), &ASK).await.expect("stream");
            let items = all(answer).await;
            assert!(matches!(&items[..], [Err(FastGptError::Refused { cause: Refusal::Quota, .. })]), "{items:?}");
        }

        #[tokio::test]
        async fn an_idle_stream_times_out() {
            let base = serve(|| {
                let first = stream::iter([Ok::<_, Infallible>(Bytes::from(named("answer", &delta("Hel"))))]);
                Builder::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(Body::from_stream(first.chain(stream::pending())))
                    .expect("response")
            })
            .await;
            let answer = client(Duration::from_secs(1)).ask_streaming(&channel(&base), &ASK).await.expect("stream");
            let items = all(answer).await;
            assert_eq!(items[0], Ok(Piece::Text("Hel".into())));
            assert!(
                matches!(&items[1..], [Err(FastGptError::Transient(m))] if m.contains("relay.fastgpt_timeout_secs")),
                "{items:?}"
            );
        }

        #[tokio::test]
        async fn no_headers_within_the_idle_timeout() {
            let base = serve_after(Duration::from_secs(3), || {
                Builder::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(Body::empty())
                    .expect("response")
            })
            .await;
            let err =
                client(Duration::from_millis(300)).ask_streaming(&channel(&base), &ASK).await.expect_err("timeout");
            assert!(matches!(&err, FastGptError::Transient(m) if m.contains("relay.fastgpt_timeout_secs")), "{err}");
        }
    }
}
