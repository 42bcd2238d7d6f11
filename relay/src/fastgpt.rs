//! The FastGPT client: `POST {fastgpt_base_url}/v1/chat/completions`, and what
//! each answer means. [`FastGpt::ask`] takes the answer whole;
//! [`FastGpt::ask_streaming`] (`stream`) reads it as FastGPT writes it.
//!
//! FastGPT reports its own errors in a JSON body
//! `{"code", "statusText", "message", "data"}`, with HTTP 500 in current
//! versions and HTTP 200 in older ones. So the body is classified first, keyed
//! on `statusText` (numeric team codes have shifted between versions); the
//! HTTP status only decides when there is no such body.

use std::time::Duration;

use common::channel::Channel;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) mod stream;
pub use stream::{pieces, AnswerStream, Piece};

/// One question to FastGPT.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub chat_id: &'a str,
    /// A stable id of the Lark user, so FastGPT's chat logs show who asked.
    pub custom_uid: &'a str,
    pub text: &'a str,
    /// The message's images and files (`crate::attachments`); with any, the
    /// content is FastGPT's array instead of the text alone.
    pub attachments: &'a [crate::attachments::ContentPart],
    /// The dataId of this turn's AI item (`responseChatItemId`), the same on
    /// every retry ([`crate::once::data_id`]): FastGPT 4.15+ refuses it a
    /// second time instead of running the workflow again.
    pub data_id: Option<&'a str>,
}

/// Why FastGPT gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FastGptError {
    /// Worth retrying: no answer, a timeout, 429, 502-504, a bare 500, `tooManyRequest`.
    #[error("FastGPT is unavailable ({0})")]
    Transient(String),
    /// FastGPT said no; retrying will not help.
    #[error("FastGPT refused: {cause:?}, HTTP {http_status}, statusText {status_text:?}, message {message:?}")]
    Refused { cause: Refusal, http_status: u16, status_text: String, message: String },
    /// The app's workflow failed (HTTP 200 with a top-level `error`).
    #[error("the FastGPT app's workflow failed: {0}")]
    Workflow(String),
    /// The answer is larger than [`MAX_ANSWER_BYTES`]; asking again would
    /// pay for the same runaway answer.
    #[error("FastGPT's answer is too large: {0}")]
    TooLarge(String),
    /// FastGPT already ran this turn (its `responseChatItemId` exists): the
    /// answer is in the chat's records ([`crate::once`]), not asked again.
    #[error("FastGPT already has this turn (dataId {0})")]
    Duplicate(String),
}

/// The kind of refusal, for the user's apology and the operator's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A wrong API key or no access: the operator must fix the channel's key.
    Auth,
    /// The FastGPT account is out of balance or quota.
    Quota,
    /// The app's model is not available to the team.
    Model,
    /// Anything else FastGPT rejects (team, app, dataset errors, a bad request).
    Other,
}

impl FastGptError {
    /// What an operator does about it.
    pub fn fix(&self) -> &'static str {
        match self {
            Self::Transient(_) => "check fastgpt_base_url (the API root FastGPT shows, e.g. https://cloud.fastgpt.io/api) and that FastGPT is up and reachable from the relay",
            Self::Refused { cause: Refusal::Auth, message, .. } if message.contains(TEAM_KEY_MESSAGE) => {
                "set fastgpt_app_id to the app's id (FastGPT: the app's URL, appId=...), or use an API key of the app instead of the account key"
            }
            Self::Refused { cause: Refusal::Auth, .. } => "set fastgpt_api_key to an API key of the app (FastGPT: the app > Publish > API access)",
            Self::Refused { cause: Refusal::Quota, .. } => "top up the FastGPT account's balance or raise its plan",
            Self::Refused { cause: Refusal::Model, .. } => "give the app a model its FastGPT team may use",
            Self::Refused { .. } => "see FastGPT's message; check the app in FastGPT",
            Self::Workflow(_) => "open the app in FastGPT and run it once: its workflow fails",
            Self::TooLarge(_) => "bound the app's answer (the model's max tokens, the loops of its workflow), or turn streaming on for the channel: a streamed answer is cut instead",
            Self::Duplicate(_) => "none: the stored answer is read instead",
        }
    }

    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Transient(_) => "transient",
            Self::Refused { cause: Refusal::Auth, .. } => "auth",
            Self::Refused { cause: Refusal::Quota, .. } => "quota",
            Self::Refused { cause: Refusal::Model, .. } => "model",
            Self::Refused { cause: Refusal::Other, .. } => "refused",
            Self::Workflow(_) => "workflow",
            Self::TooLarge(_) => "too_large",
            Self::Duplicate(_) => "duplicate",
        }
    }
}

/// FastGPT's error body. `statusText` names a refusal; an empty or missing
/// one (with a numeric `code`) is an unexpected internal error, such as a
/// model provider timing out: transient.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(rename = "statusText", default)]
    status_text: Option<String>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Value,
    #[serde(default)]
    choices: Option<Value>,
}

impl ErrorBody {
    /// Whether this JSON is FastGPT's error body at all (an answer is not).
    fn is_error(&self) -> bool {
        self.choices.is_none() && (self.status_text.is_some() || (self.code.is_some() && !self.message.is_null()))
    }
}

#[derive(Clone)]
pub struct FastGpt {
    pub(crate) http: reqwest::Client,
    pub(crate) timeout: Duration,
    /// Each channel's app id, once learned from `init` (`crate::once`).
    pub(crate) app_ids: crate::once::AppIds,
}

impl FastGpt {
    pub fn new(http: reqwest::Client, timeout: Duration) -> Self {
        Self { http, timeout, app_ids: Default::default() }
    }

    /// Asks and returns the answer (its text possibly empty).
    pub async fn ask(&self, channel: &Channel, ask: &Ask<'_>) -> Result<Answer, FastGptError> {
        let body = request_body(channel, ask, false);
        let key = api_key(channel)?;
        let resp = self
            .http
            .post(channel.fastgpt_completions_url())
            .bearer_auth(key.expose_secret())
            .timeout(self.timeout)
            .headers(trace_headers())
            .json(&body)
            .send()
            .await
            .map_err(|e| FastGptError::Transient(network_error(&e, self.timeout)))?;
        let status = resp.status().as_u16();
        // Bounded: with `detail: true` the answer carries every node's details.
        let bytes = stream::read_bounded(resp, MAX_ANSWER_BYTES, self.timeout).await?;
        if bytes.len() >= MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        let text = classify(status, &bytes)?;
        // A run that stopped at a node asking the user carries it in the content array.
        let interaction = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|json| json.pointer("/choices/0/message/content").and_then(crate::interactive::in_content));
        let responses =
            serde_json::from_slice::<Value>(&bytes).ok().and_then(|mut json| match json.get_mut("responseData") {
                Some(r) if !r.is_null() => Some(r.take()),
                _ => None,
            });
        Ok(Answer { text, interaction, responses })
    }
}

/// The most of one answer the relay holds: a whole (non-streamed) answer's
/// body, node details included, and a streamed answer's text
/// (`crate::streaming`). Past it a whole answer cannot be read (an apology,
/// not asked again) and a streamed one is cut there; either way a runaway
/// workflow costs the relay at most this much memory per question.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// A whole answer cut at [`MAX_ANSWER_BYTES`]: cut JSON cannot be read, and
/// asking again would pay for the same answer.
pub(crate) fn too_large() -> FastGptError {
    FastGptError::TooLarge(format!(
        "the whole answer (node details included) is larger than {} MiB",
        MAX_ANSWER_BYTES >> 20
    ))
}

/// A whole (non-streamed) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    /// FastGPT stopped to ask the user this.
    pub interaction: Option<common::question::Interaction>,
    /// The nodes' responses (`responseData`), with the quotes (`crate::sources`).
    pub responses: Option<Value>,
}

/// The JSON body of `POST /v1/chat/completions`, for [`FastGpt::ask`]
/// (`stream: false`: one JSON answer) and the streaming call (`stream:
/// true`: SSE with named events, so answer deltas, `interactive` nodes and
/// `error` events can be told apart). Always `detail: true`: only then does
/// FastGPT say that it stopped at a node asking the user. One function, so
/// both calls always send the same question.
/// With `fastgpt_app_id` set the body names the app (`appId`), which a team
/// key needs; with `ask.data_id` it carries `responseChatItemId`.
pub(crate) fn request_body(channel: &Channel, ask: &Ask<'_>, stream: bool) -> Value {
    let mut body = json!({
        "chatId": ask.chat_id,
        "stream": stream,
        "detail": true,
        "customUid": ask.custom_uid,
        "messages": [{ "role": "user", "content": crate::attachments::message_content(ask.text, ask.attachments) }],
    });
    if let Some(data_id) = ask.data_id {
        body["responseChatItemId"] = json!(data_id);
    }
    if let Some(app_id) = &channel.fastgpt_app_id {
        body["appId"] = json!(app_id);
    }
    body
}

/// The start of FastGPT's refusal of a `responseChatItemId` it has already
/// stored in the chat: `Chat dataId already exists: <id>`
/// (`CHAT_DATA_ID_DUPLICATE_ERROR_MESSAGE`,
/// `packages/service/core/chat/dataIdValidation.ts`, thrown as a `UserError`
/// before the workflow runs).
pub const DUPLICATE_MESSAGE: &str = "Chat dataId already exists";

/// What FastGPT names a turn refused because the chat is still answering
/// another one (`chatIsGenerating`, checked before the dataId): transient.
pub const GENERATING: &str = "chatIsGenerating";

/// FastGPT's refusal of a team (account) key without `appId`.
pub const TEAM_KEY_MESSAGE: &str = "You need to use the app key rather than the account key";

/// The dataId a refusal names as already stored, if it is that refusal.
pub(crate) fn duplicate_of(message: &str) -> Option<String> {
    let rest = message.trim().strip_prefix(DUPLICATE_MESSAGE)?;
    let id = rest.trim_start_matches([':', ' ']).trim();
    Some(id.chars().take(128).collect())
}

/// A message, status text or body naming `chatIsGenerating`.
pub(crate) fn is_generating(text: &str) -> bool {
    text.contains(GENERATING)
}

/// The channel's FastGPT key. The relay always holds it
/// (`Settings::for_service`); without one FastGPT would answer
/// unAuthorization, so say so here instead.
pub(crate) fn api_key(channel: &Channel) -> Result<&secrecy::SecretString, FastGptError> {
    channel.fastgpt_api_key.as_ref().ok_or_else(|| FastGptError::Refused {
        cause: Refusal::Auth,
        http_status: 0,
        status_text: String::new(),
        message: format!("channel {} has no fastgpt_api_key in this service", channel.id),
    })
}

/// The current trace's `traceparent`, so FastGPT-side tracing can join.
fn trace_headers() -> reqwest::header::HeaderMap {
    common::telemetry::http_headers()
        .into_iter()
        .filter_map(|(k, v)| Some((k.parse::<reqwest::header::HeaderName>().ok()?, v.parse().ok()?)))
        .collect()
}

pub(crate) fn network_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {}s (relay.fastgpt_timeout_secs)", timeout.as_secs())
    } else if e.is_connect() {
        "cannot connect: check fastgpt_base_url".to_owned()
    } else {
        format!("request failed: {}", e.without_url_ref())
    }
}

trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}
impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(url) = self.url() {
            s = s.replace(url.as_str(), "<fastgpt>");
        }
        s
    }
}

/// Maps one HTTP answer to an answer text or an error class.
pub fn classify(status: u16, body: &[u8]) -> Result<String, FastGptError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    // 1. FastGPT's own error body, whatever the HTTP status.
    if let Some(err) = json.as_ref().and_then(|v| ErrorBody::deserialize(v).ok()).filter(ErrorBody::is_error) {
        let message = match &err.message {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let status_text = err.status_text.unwrap_or_default();
        if let Some(id) = duplicate_of(&message) {
            return Err(FastGptError::Duplicate(id));
        }
        if is_generating(&status_text) || is_generating(&message) {
            return Err(FastGptError::Transient(format!("the chat is still answering an earlier turn: {message}")));
        }
        if message.contains(TEAM_KEY_MESSAGE) {
            return Err(FastGptError::Refused { cause: Refusal::Auth, http_status: status, status_text, message });
        }
        if status_text.is_empty() {
            let code = err.code.map(|c| c.to_string()).unwrap_or_else(|| "none".to_owned());
            return Err(FastGptError::Transient(format!(
                "FastGPT internal error (HTTP {status}, code {code}, no statusText): {message}"
            )));
        }
        let cause = match status_text.as_str() {
            "tooManyRequest" => return Err(FastGptError::Transient(format!("tooManyRequest: {message}"))),
            "unAuthApiKey" | "unAuthorization" => Refusal::Auth,
            "insufficientQuota" => Refusal::Quota,
            "unAuthModel" => Refusal::Model,
            _ => Refusal::Other,
        };
        return Err(FastGptError::Refused { cause, http_status: status, status_text, message });
    }
    // 2. Statuses without a FastGPT body.
    match status {
        200..=299 => {}
        429 | 500 | 502 | 503 | 504 => return Err(FastGptError::Transient(format!("HTTP {status}"))),
        401 | 403 => {
            return Err(FastGptError::Refused {
                cause: Refusal::Auth,
                http_status: status,
                status_text: String::new(),
                message: snippet(body),
            })
        }
        _ => {
            return Err(FastGptError::Refused {
                cause: Refusal::Other,
                http_status: status,
                status_text: String::new(),
                message: format!("{} (check fastgpt_base_url: the API root, ending in /api)", snippet(body)),
            })
        }
    }
    // 3. A 2xx: the answer, or a workflow error.
    let Some(json) = json else {
        return Err(FastGptError::Transient(format!("HTTP {status} with a body that is not JSON: {}", snippet(body))));
    };
    let content = json.pointer("/choices/0/message/content").map(content_text);
    let error = json.get("error").filter(|e| !e.is_null());
    match (content, error) {
        (Some(text), _) if !text.trim().is_empty() => return Ok(text),
        (_, Some(error)) => {
            let text = error
                .as_str()
                .or_else(|| error.get("message").and_then(Value::as_str))
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            return Err(FastGptError::Workflow(text));
        }
        (Some(empty), None) => return Ok(empty),
        (None, None) => {}
    }
    Err(FastGptError::Refused {
        cause: Refusal::Other,
        http_status: status,
        status_text: String::new(),
        message: format!("no choices[0].message.content in the answer: {}", snippet(body)),
    })
}

/// One answer of FastGPT's other APIs (`jsonRes`: `{code: 200, statusText:
/// "", message: "", data}` on success): their `data`, or the error class.
pub(crate) fn classify_json(status: u16, body: &[u8]) -> Result<Value, FastGptError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(json) = &json {
        let code = json.get("code").and_then(Value::as_i64);
        if (200..300).contains(&status) && matches!(code, None | Some(200)) {
            return Ok(json.get("data").cloned().unwrap_or(Value::Null));
        }
    }
    match classify(status, body) {
        Err(e) => Err(e),
        Ok(_) => Err(FastGptError::Refused {
            cause: Refusal::Other,
            http_status: status,
            status_text: String::new(),
            message: format!("an unexpected answer: {}", snippet(body)),
        }),
    }
}

/// `content` is a string, or (some app types) an array of `{type, text}` parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            // `{"type":"text","text":"..."}`, or with detail `{"type":"text","text":{"content":"..."}}`.
            .filter_map(|p| {
                let text = p.get("text");
                text.and_then(Value::as_str)
                    .or_else(|| text.and_then(|t| t.get("content")).and_then(Value::as_str))
                    .or_else(|| p.as_str())
            })
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, body: &str) -> FastGptError {
        classify(status, body.as_bytes()).expect_err("an error")
    }

    #[test]
    fn reads_the_answer() {
        let body = r#"{"id":"c","model":"","usage":{},"choices":[{"message":{"role":"assistant","content":"Hi **there**"},"finish_reason":"stop","index":0}]}"#;
        assert_eq!(classify(200, body.as_bytes()), Ok("Hi **there**".into()));
        let parts = r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#;
        assert_eq!(classify(200, parts.as_bytes()), Ok("ab".into()));
        assert_eq!(classify(200, br#"{"choices":[{"message":{"content":""}}]}"#), Ok(String::new()));
    }

    #[test]
    fn the_body_decides_before_the_status() {
        let body = r#"{"code":514,"statusText":"unAuthApiKey","message":"Api Key 不合法","data":null}"#;
        assert!(matches!(err(500, body), FastGptError::Refused { cause: Refusal::Auth, http_status: 500, .. }));
        assert!(matches!(err(200, body), FastGptError::Refused { cause: Refusal::Auth, .. }), "older versions use 200");
        let quota = r#"{"code":510,"statusText":"insufficientQuota","message":"账号余额不足","data":null}"#;
        assert!(matches!(err(500, quota), FastGptError::Refused { cause: Refusal::Quota, .. }));
        let model = r#"{"code":511,"statusText":"unAuthModel","message":"x","data":null}"#;
        assert!(matches!(err(500, model), FastGptError::Refused { cause: Refusal::Model, .. }));
        let team = r#"{"code":500001,"statusText":"aiPointsNotEnough","message":"x","data":null}"#;
        assert!(matches!(err(500, team), FastGptError::Refused { cause: Refusal::Other, .. }));
        let qpm = r#"{"code":429,"statusText":"tooManyRequest","message":"x","data":null}"#;
        assert!(matches!(err(500, qpm), FastGptError::Transient(_)));
    }

    /// FastGPT's shape for an unexpected internal error (a model provider
    /// timing out): no refusal named, so retried like a bare 500.
    #[test]
    fn an_internal_error_without_status_text_is_transient() {
        let empty = r#"{"code":500,"statusText":"","message":"Connection error: upstream timed out","data":null}"#;
        assert!(matches!(err(500, empty), FastGptError::Transient(m) if m.contains("upstream timed out")));
        assert!(matches!(err(200, empty), FastGptError::Transient(_)), "older versions use 200");
        let missing = r#"{"code":500,"message":"internal error"}"#;
        assert!(matches!(err(500, missing), FastGptError::Transient(_)));
        let named = r#"{"code":500,"statusText":"appUnExist","message":"x"}"#;
        assert!(matches!(err(500, named), FastGptError::Refused { cause: Refusal::Other, .. }));
    }

    /// FastGPT 4.15+: `preChatRound` refuses a stored `responseChatItemId`
    /// (a `UserError`, through `jsonRes`: HTTP 500, statusText `error`).
    #[test]
    fn a_duplicate_data_id_and_a_generating_chat() {
        let dup = r#"{"code":500,"statusText":"error","message":"Chat dataId already exists: lb-0011","data":null}"#;
        assert_eq!(err(500, dup), FastGptError::Duplicate("lb-0011".into()));
        let generating = r#"{"code":500,"statusText":"chatIsGenerating","message":"chatIsGenerating","data":null}"#;
        assert!(matches!(err(500, generating), FastGptError::Transient(_)));
        let team = r#"{"code":500,"statusText":"error","message":"Key is error. You need to use the app key rather than the account key.","data":null}"#;
        let e = err(500, team);
        assert!(matches!(e, FastGptError::Refused { cause: Refusal::Auth, .. }), "{e:?}");
        assert!(e.fix().contains("fastgpt_app_id"), "{}", e.fix());
    }

    #[test]
    fn statuses_without_a_fastgpt_body() {
        for s in [429, 500, 502, 503, 504] {
            assert!(matches!(err(s, "<html>bad gateway</html>"), FastGptError::Transient(_)), "{s}");
        }
        assert!(matches!(err(401, "nope"), FastGptError::Refused { cause: Refusal::Auth, .. }));
        assert!(matches!(err(404, "Not Found"), FastGptError::Refused { cause: Refusal::Other, .. }));
    }

    #[test]
    fn a_workflow_error_is_permanent() {
        let body = r#"{"error":{"message":"node failed"},"choices":null}"#;
        assert_eq!(err(200, body), FastGptError::Workflow("node failed".into()));
        let with_empty_content =
            r#"{"error":"model timed out","choices":[{"message":{"role":"assistant","content":""}}]}"#;
        assert_eq!(err(200, with_empty_content), FastGptError::Workflow("model timed out".into()));
    }
}
