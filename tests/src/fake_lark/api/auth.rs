//! The token endpoint (`tenant_access_token/internal`) and the bot's info
//! (`bot/v3/info`): the two answers whose fields are at the top level, not
//! under `data`. A token is handed out again while it has at least 30
//! minutes to live, as Lark does.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{parse_json, Outcome};
use crate::fake_lark::{Endpoint, Shared, TokenInfo, INVALID_TOKEN_MSG, TOKEN_REUSE_SECS};
use crate::lark_events::random_hex;

pub(super) async fn tenant_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    shared.lock().token_fetches += 1;
    if let Err(outcome) = shared.scripted(Endpoint::TenantToken).await {
        return outcome.into_response();
    }
    let body = match parse_json(&body) {
        Ok(body) => body,
        Err(outcome) => return outcome.into_response(),
    };
    let app_id = body.get("app_id").and_then(Value::as_str).unwrap_or_default();
    let secret = body.get("app_secret").and_then(Value::as_str).unwrap_or_default();
    let mut inner = shared.lock();
    let lifetime = inner.token_lifetime;
    let current = {
        let Some(app) = inner.apps.get(app_id) else {
            return Outcome::error(400, 10003, "invalid param").into_response();
        };
        if app.secret_rejected || app.app.app_secret != secret {
            return Outcome::error(400, 10014, "app secret invalid").into_response();
        }
        app.current_token.clone()
    };
    let reusable = current.and_then(|t| {
        let remaining = inner.tokens.get(&t)?.remaining()?;
        (remaining.as_secs() >= TOKEN_REUSE_SECS).then_some((t, remaining.as_secs()))
    });
    let (token, expire) = match reusable {
        Some(found) => found,
        None => {
            let token = format!("t-{}", random_hex(20));
            let info = TokenInfo { app_id: app_id.to_owned(), issued: Instant::now(), lifetime, revoked: false };
            inner.tokens.insert(token.clone(), info);
            if let Some(app) = inner.apps.get_mut(app_id) {
                app.current_token = Some(token.clone());
            }
            (token, lifetime.as_secs())
        }
    };
    Json(json!({ "code": 0, "msg": "ok", "tenant_access_token": token, "expire": expire })).into_response()
}

pub(super) async fn bot_info(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let call = match shared.begin(Endpoint::BotInfo, &headers).await {
        Ok(call) => call,
        Err(refused) => return shared.refuse(Endpoint::BotInfo, refused),
    };
    let app = shared.lock().apps.get(&call.app_id).map(|a| a.app.clone());
    let outcome = match app {
        Some(app) => Outcome::ok(json!({
            "code": 0,
            "msg": "ok",
            "bot": {
                "activate_status": 2,
                "app_name": app.app_name,
                "avatar_url": "https://s1-imfile.feishucdn.com/static-resource/v1/fake_avatar",
                "ip_white_list": [],
                "open_id": app.bot_open_id,
            }
        })),
        None => Outcome::error(400, 99991663, INVALID_TOKEN_MSG),
    };
    shared.finish(Endpoint::BotInfo, &call, outcome, None, false)
}
