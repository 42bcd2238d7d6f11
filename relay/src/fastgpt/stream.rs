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
mod tests;
