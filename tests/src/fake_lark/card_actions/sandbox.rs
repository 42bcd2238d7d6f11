//! `POST /_sandbox/card_action`: clicks for `sandbox chat`, which runs in
//! another process and so cannot call [`FakeLark::click`](crate::fake_lark::FakeLark::click).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::lark::crypto::EncryptKey;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ButtonRef, ClickError, Clicks, FrameType, SANDBOX_CARD_ACTION_PATH};

/// The body of `POST /_sandbox/card_action`: a click (`button`) or a form
/// submitted (`form_values`) on `message_id` by `operator_open_id`, sent to
/// `url` (encrypted and signed with `encrypt_key` when given), or over the
/// long connection (frames of type `event`) when the ingress answers 403
/// `long_connection_only`. `verification_token` replaces the app's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxCardAction {
    pub url: String,
    pub encrypt_key: Option<String>,
    pub verification_token: Option<String>,
    pub message_id: String,
    pub operator_open_id: String,
    #[serde(default)]
    pub button: Option<ButtonRef>,
    #[serde(default)]
    pub form_values: Option<Vec<(String, String)>>,
}

/// The route of [`SandboxCardAction`].
pub(in crate::fake_lark) fn routes(clicks: Clicks) -> Router {
    Router::new().route(SANDBOX_CARD_ACTION_PATH, post(sandbox_card_action)).with_state(clicks)
}

async fn sandbox_card_action(
    State(clicks): State<Clicks>,
    Json(request): Json<SandboxCardAction>,
) -> (StatusCode, Json<Value>) {
    let refused = |e: ClickError| (StatusCode::CONFLICT, Json(json!({ "error": e.to_string() })));
    let builder = match (&request.button, &request.form_values) {
        (Some(button), _) => clicks.click_callback(&request.message_id, button, &request.operator_open_id),
        (None, Some(values)) => {
            let values: Vec<(&str, &str)> = values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            clicks.submit_callback(&request.message_id, &values, &request.operator_open_id)
        }
        (None, None) => {
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": "a button or form_values is needed" })));
        }
    };
    let mut builder = match builder {
        Ok(builder) => builder,
        Err(e) => return refused(e),
    };
    if let Some(token) = &request.verification_token {
        builder = builder.token(token);
    }
    let callback = builder.build();
    let key = request.encrypt_key.clone().filter(|k| !k.is_empty()).map(|k| EncryptKey::new(SecretString::from(k)));
    let mut outcome = clicks.post(&request.url, key.as_ref(), &callback).await;
    if let Ok(o) = &outcome {
        if o.status == 403 && o.raw_body.contains("long_connection_only") {
            // The channel takes its callbacks over the long connection: Lark sends them there.
            outcome = clicks.push(&callback, FrameType::Event).await;
        }
    }
    match outcome {
        Ok(outcome) => (StatusCode::OK, Json(serde_json::to_value(outcome).unwrap_or_default())),
        Err(e) => refused(e),
    }
}
