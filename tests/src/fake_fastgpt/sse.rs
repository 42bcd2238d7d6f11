//! Server-sent events as FastGPT writes them (`responseWrite`,
//! `textAdaptGptResponse`), each delta at its time, and how a stream ends:
//! [DONE], an error event, or a broken connection. Also the runaway answer,
//! written as fast as the client reads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;

use super::answers::{chat_node_response, remember_turn};
use super::request::FastGptRequest;
use super::Shared;
use crate::fake_lark::server::sleep_unless_cancelled;

/// The error that makes the server drop the connection mid-body.
pub(super) fn broken_stream() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the fake FastGPT broke the connection")
}

/// How a streamed answer ends after its deltas.
pub(super) enum StreamEnd {
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
pub(super) fn stream_answer(
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
pub(super) fn runaway(shared: &Arc<Shared>, index: usize, request: &FastGptRequest, bytes: usize) -> Response {
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
