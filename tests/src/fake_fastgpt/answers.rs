//! What the fake answers a question: the echo or the next scripted
//! [`FakeAnswer`], as FastGPT's JSON bodies or streamed, an interactive node
//! left waiting in the chatId, a knowledge base's quotes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::hints::{paced, Hints};
use super::request::FastGptRequest;
use super::sse::{broken_stream, runaway, stream_answer, StreamEnd};
use super::{files, interactive, long_markdown_text, markdown_sample, FakeAnswer, Interactive, Shared};
use crate::fake_lark::server::sleep_unless_cancelled;

/// FastGPT's error body (`jsonRes`): `{"code", "statusText", "message", "data": null}`.
pub(super) fn error_body(http_status: u16, code: i64, status_text: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "code": code, "statusText": status_text, "message": message, "data": null });
    (status, Json(body)).into_response()
}

/// A successful answer: [`success_body`] as JSON.
fn success(chat_id: Option<&str>, content: &str, error: Option<&str>, detail: bool) -> Response {
    Json(success_body(chat_id, content, error, detail)).into_response()
}

/// A successful answer's JSON body; with `detail`, the v1 handler's
/// `responseData` and `newVariables` too.
fn success_body(chat_id: Option<&str>, content: &str, error: Option<&str>, detail: bool) -> Value {
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
    body
}

/// The answer to `request` (the fake's request `index`): `answer`, or what
/// it stands for.
pub(super) async fn answer_with(
    shared: &Arc<Shared>,
    index: usize,
    request: &FastGptRequest,
    answer: FakeAnswer,
) -> Response {
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
    let mut body = success_body(request.chat_id.as_deref(), &content, None, request.detail);
    if let (Some(responses), true) = (responses, request.detail) {
        body["responseData"] = responses;
    }
    Json(body).into_response()
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
pub(super) fn remember_turn(shared: &Shared, request: &FastGptRequest) {
    if let Some(chat_id) = &request.chat_id {
        shared.lock().history.entry(chat_id.clone()).or_default().push(request.content.clone());
    }
}

/// The response of the fake's one AI chat node.
pub(super) fn chat_node_response() -> Value {
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
