//! What the fake records of each request, for a test to read back
//! ([`FakeFastGpt::requests`](super::FakeFastGpt::requests)): what was asked,
//! how, and what came of it as the answer was written.

use std::time::Instant;

use serde_json::Value;

use super::{Interactive, Resume};

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
    /// When the first answer delta was written (streamed answers only).
    pub fn first_delta_at(&self) -> Option<Instant> {
        self.delta_times.first().copied()
    }

    /// The record of a request just received, with its `Authorization`
    /// header and its body (`Null` when not JSON); nothing answered yet.
    pub(super) fn received(auth: Option<String>, body: &Value) -> Self {
        FastGptRequest {
            chat_id: string_of(body.get("chatId")),
            custom_uid: string_of(body.get("customUid")),
            content: question_of(body),
            auth,
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
        }
    }
}

/// A string field, or a number as its text.
pub(super) fn string_of(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
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
