//! Lark's answers as the handlers build them: the error envelope `{"code",
//! "msg", "error": {"log_id"}}` with its HTTP status and headers (an
//! `x-tt-logid` on every answer), a field violation (99992402), a scripted
//! failure turned into its answer, and the 9499 of a body that is not JSON.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::fake_lark::Failure;
use crate::lark_events::random_hex;

/// What a handler answers; also what is recorded about the attempt.
pub(in crate::fake_lark) enum Outcome {
    Json { status: StatusCode, code: i64, body: Value, headers: Vec<(String, String)> },
    Plain { status: StatusCode, text: &'static str },
}

impl Outcome {
    pub(in crate::fake_lark) fn ok(body: Value) -> Self {
        Outcome::Json { status: StatusCode::OK, code: 0, body, headers: Vec::new() }
    }

    pub(in crate::fake_lark) fn error(http_status: u16, code: i64, msg: &str) -> Self {
        Self::error_with(http_status, code, msg, json!({}), Vec::new())
    }

    pub(in crate::fake_lark) fn error_with(
        http_status: u16,
        code: i64,
        msg: &str,
        mut error: Value,
        headers: Vec<(String, String)>,
    ) -> Self {
        error["log_id"] = json!(log_id());
        let status = StatusCode::from_u16(http_status).unwrap_or(StatusCode::BAD_REQUEST);
        Outcome::Json { status, code, body: json!({ "code": code, "msg": msg, "error": error }), headers }
    }

    pub(super) fn invalid_param(what: &str) -> Self {
        Self::error(400, 230001, &format!("Your request contains an invalid request parameter, ext={what}"))
    }

    pub(in crate::fake_lark) fn field_violation(field: &str, description: &str) -> Self {
        let error = json!({ "field_violations": [{ "field": field, "description": description }] });
        Self::error_with(400, 99992402, "field validation failed", error, Vec::new())
    }

    pub(in crate::fake_lark) fn status_and_code(&self) -> (u16, i64) {
        match self {
            Outcome::Json { status, code, .. } => (status.as_u16(), *code),
            Outcome::Plain { status, .. } => (status.as_u16(), 0),
        }
    }

    fn from_failure(failure: Failure) -> Option<Self> {
        match failure {
            Failure::Lark { http_status, code, msg, headers } => {
                Some(Self::error_with(http_status, code, &msg, json!({}), headers))
            }
            Failure::Http500 => Some(Outcome::Plain { status: StatusCode::INTERNAL_SERVER_ERROR, text: "" }),
            Failure::AcceptButDropResponse | Failure::Delay(_) => None,
        }
    }
}

impl Failure {
    /// The answer a scripted failure gives; one that has none of its own (a
    /// delay, a response lost) answers a plain success.
    pub(super) fn into_outcome(self) -> Outcome {
        Outcome::from_failure(self).unwrap_or_else(|| Outcome::ok(json!({})))
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let log_id = log_id();
        match self {
            Outcome::Json { status, body, headers, .. } => {
                let mut response = (status, Json(body)).into_response();
                let map = response.headers_mut();
                for (name, value) in
                    headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).chain([("x-tt-logid", log_id.as_str())])
                {
                    if let (Ok(n), Ok(v)) = (name.parse::<axum::http::HeaderName>(), value.parse()) {
                        map.insert(n, v);
                    }
                }
                response
            }
            Outcome::Plain { status, text } => (status, text).into_response(),
        }
    }
}

fn log_id() -> String {
    format!("2025{}", random_hex(13).to_uppercase())
}

pub(in crate::fake_lark) fn parse_json(body: &Bytes) -> Result<Value, Outcome> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| Outcome::error(400, 9499, "Bad Request"))
}
