//! `POST /api/v1/chat/completions`: the API key check, the turn stored
//! before the workflow (`preChatRound`) or refused, then the answer, run to
//! its end in a task of its own as FastGPT runs a workflow whoever listens.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;

use super::answers::{answer_with, error_body};
use super::request::{string_of, FastGptRequest};
use super::sse::broken_stream;
use super::{chats, files, FakeAnswer, Shared};

pub(super) async fn completions(State(shared): State<Arc<Shared>>, headers: HeaderMap, raw: Bytes) -> Response {
    let auth = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let request = FastGptRequest::received(auth.clone(), &body);
    let data_id = string_of(body.get("responseChatItemId")).filter(|d| !d.is_empty());
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
