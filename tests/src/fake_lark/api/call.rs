//! The common start and end of every API call, as Lark's gateway checks a
//! request before its API sees it: a scripted failure first, then the
//! bearer token (99991661 missing, 99991663 invalid), then the app's scopes
//! (99991672, as its troubleshooting page words it); at the end the attempt
//! is recorded, and a response scripted to be lost becomes a 502.

use std::collections::VecDeque;
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::Outcome;
use crate::fake_lark::server::sleep_unless_cancelled;
use crate::fake_lark::{Attempt, Endpoint, Failure, SentMessage, Shared, INVALID_TOKEN_MSG, MISSING_TOKEN_MSG};

/// The common start of every API call: a scripted failure, then the token.
pub(in crate::fake_lark) struct Call {
    pub(in crate::fake_lark) app_id: String,
    pub(in crate::fake_lark) drop_response: bool,
}

impl Shared {
    /// Consumes this endpoint's next scripted failure: an answer to give now,
    /// or a flag to lose the response after executing the request.
    pub(super) async fn scripted(&self, endpoint: Endpoint) -> Result<bool, Outcome> {
        let next = self.lock().failures.get_mut(&endpoint).and_then(VecDeque::pop_front);
        match next {
            None => Ok(false),
            Some(Failure::Delay(d)) => {
                sleep_unless_cancelled(d, &self.cancel).await;
                Ok(false)
            }
            Some(Failure::AcceptButDropResponse) => Ok(true),
            Some(other) => Err(other.into_outcome()),
        }
    }

    pub(in crate::fake_lark) async fn begin(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
    ) -> Result<Call, (Option<String>, Outcome)> {
        let drop_response = self.scripted(endpoint).await.map_err(|o| (None, o))?;
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err((None, Outcome::error(400, 99991661, MISSING_TOKEN_MSG)));
        };
        let inner = self.lock();
        let app_id = match inner.tokens.get(token) {
            Some(info) if info.remaining().is_some() => info.app_id.clone(),
            _ => return Err((None, Outcome::error(400, 99991663, INVALID_TOKEN_MSG))),
        };
        let scopes = endpoint.scopes();
        let granted = inner.apps.get(&app_id).map(|a| &a.scopes);
        if !scopes.is_empty() && !scopes.iter().any(|s| granted.is_some_and(|g| g.contains(*s))) {
            return Err((Some(app_id.clone()), missing_scope(&app_id, scopes)));
        }
        Ok(Call { app_id, drop_response })
    }

    fn record(
        &self,
        endpoint: Endpoint,
        app_id: Option<String>,
        outcome: &Outcome,
        message: Option<SentMessage>,
        duplicate: bool,
    ) {
        let (http_status, code) = outcome.status_and_code();
        let attempt = Attempt { endpoint, app_id, http_status, code, message, duplicate, received_at: Instant::now() };
        self.lock().attempts.push(attempt);
    }

    /// Records the attempt and answers; a lost response becomes a 502.
    pub(in crate::fake_lark) fn finish(
        &self,
        endpoint: Endpoint,
        call: &Call,
        outcome: Outcome,
        message: Option<SentMessage>,
        duplicate: bool,
    ) -> Response {
        let outcome = if call.drop_response && outcome.status_and_code() == (200, 0) {
            Outcome::Plain {
                status: StatusCode::BAD_GATEWAY,
                text: "<html><body><h1>502 Bad Gateway</h1></body></html>",
            }
        } else {
            outcome
        };
        self.record(endpoint, Some(call.app_id.clone()), &outcome, message, duplicate);
        outcome.into_response()
    }

    pub(in crate::fake_lark) fn refuse(
        &self,
        endpoint: Endpoint,
        (app_id, outcome): (Option<String>, Outcome),
    ) -> Response {
        self.record(endpoint, app_id, &outcome, None, false);
        outcome.into_response()
    }
}

/// Lark's 99991672, in the style of its troubleshooting page.
fn missing_scope(app_id: &str, scopes: &[&str]) -> Outcome {
    let list = scopes.join(", ");
    let url =
        format!("https://open.feishu.cn/app/{app_id}/auth?q={}&op_from=openapi&token_type=tenant", scopes.join(","));
    let msg = format!(
        "Access denied. One of the following scopes is required: [{list}].应用尚未开通所需的应用身份权限：[{list}]，点击链接申请并开通任一权限即可：{url}"
    );
    let violations: Vec<Value> =
        scopes.iter().map(|s| json!({ "type": "action_scope_required", "subject": s })).collect();
    let error = json!({
        "message": "Refer to the documentation to fix the error: https://open.feishu.cn/document/uAjLw4CM/ugTN1YjL4UTN24CO1UjN/trouble-shooting/how-to-fix-the-99991672-error",
        "permission_violations": violations,
        "helps": [{ "url": url, "description": format!("Learn more about scopes and how to add them: [{list}]") }],
    });
    Outcome::error_with(400, 99991672, &msg, error, Vec::new())
}
