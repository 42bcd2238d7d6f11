//! The four CardKit endpoints over HTTP: each call's common start (a
//! scripted failure, the token, the scope, the app's rate limit), the card
//! created, the three operations on an existing card, and the record of
//! every request ([`super::CardOperation`]) whatever its outcome.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use super::card::{new_card_id, validate_card, CardState};
use super::operations::{apply, parse_op, Applied};
use super::{CardOpKind, CardOperation};
use crate::fake_lark::api::{parse_json, Call, Outcome};
use crate::fake_lark::Shared;

/// The fields of an operation record that do not depend on its outcome.
#[derive(Clone)]
struct OpDraft {
    card_id: String,
    kind: CardOpKind,
    element_id: Option<String>,
    sequence: Option<i64>,
    uuid: Option<String>,
    content: Option<String>,
}

impl Shared {
    fn record_op(&self, draft: OpDraft, app_id: Option<String>, outcome: &Outcome, replayed: bool, lost: bool) {
        let (http_status, code) = outcome.status_and_code();
        let op = CardOperation {
            card_id: draft.card_id,
            kind: draft.kind,
            element_id: draft.element_id,
            sequence: draft.sequence,
            uuid: draft.uuid,
            app_id,
            http_status,
            code,
            content: draft.content,
            replayed,
            response_lost: lost && (http_status, code) == (200, 0),
            at: Instant::now(),
        };
        self.lock().cardkit.ops.push(op);
    }

    /// Records the operation and the attempt, and answers.
    fn finish_op(&self, draft: OpDraft, call: &Call, applied: Applied) -> Response {
        let endpoint = draft.kind.endpoint();
        self.record_op(draft, Some(call.app_id.clone()), &applied.outcome, applied.replayed, call.drop_response);
        self.finish(endpoint, call, applied.outcome, None, false)
    }

    /// The common start of a CardKit call; a refusal (including the app's
    /// rate limits) is recorded and answered.
    async fn begin_op(&self, draft: &OpDraft, headers: &HeaderMap) -> Result<Call, Response> {
        let endpoint = draft.kind.endpoint();
        match self.begin(endpoint, headers).await {
            Ok(call) => {
                let admitted = self.lock().cardkit.admit(&call.app_id, draft.kind, Instant::now());
                match admitted {
                    Ok(()) => Ok(call),
                    Err(outcome) => Err(self.finish_op(draft.clone(), &call, Applied::of(outcome))),
                }
            }
            Err((app_id, outcome)) => {
                self.record_op(draft.clone(), app_id.clone(), &outcome, false, false);
                Err(self.refuse(endpoint, (app_id, outcome)))
            }
        }
    }
}

/// `POST /open-apis/cardkit/v1/cards`
pub(in crate::fake_lark) async fn create_card(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut draft = OpDraft {
        card_id: String::new(),
        kind: CardOpKind::Create,
        element_id: None,
        sequence: None,
        uuid: None,
        content: None,
    };
    let call = match shared.begin_op(&draft, &headers).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let card = parse_json(&body).and_then(|body| {
        match body.get("type").and_then(Value::as_str) {
            Some("card_json") => {}
            Some("template") => {
                let msg =
                    "Your request contains an invalid request parameter: the fake Lark builds card_json cards only.";
                return Err(Outcome::error(400, 10002, msg));
            }
            _ => return Err(Outcome::field_violation("type", "type is required: card_json or template")),
        }
        let data = body.get("data").and_then(Value::as_str);
        let data = data.ok_or_else(|| Outcome::field_violation("data", "data is required and must be a string"))?;
        validate_card(data)
    });
    let card = match card {
        Ok(card) => card,
        Err(outcome) => return shared.finish_op(draft, &call, Applied::of(outcome)),
    };
    let card_id = new_card_id();
    let now = Instant::now();
    let streaming = card.pointer("/config/streaming_mode") == Some(&Value::Bool(true));
    let mut state = CardState {
        card_id: card_id.clone(),
        app_id: call.app_id.clone(),
        json: card,
        created_at: now,
        streaming_on: streaming,
        streaming_since: streaming.then_some(now),
        timeout_untold: false,
        last_sequence: 0,
        version: 0,
        recent: VecDeque::new(),
        uuids: HashMap::new(),
        message: None,
        history: Vec::new(),
    };
    state.history.push((now, state.text()));
    shared.lock().cardkit.cards.insert(card_id.clone(), state);
    draft.card_id = card_id.clone();
    let outcome = Outcome::ok(json!({ "code": 0, "msg": "success", "data": { "card_id": card_id } }));
    shared.finish_op(draft, &call, Applied::of(outcome))
}

/// The common part of the three operations on an existing card.
async fn operate(
    shared: &Shared,
    kind: CardOpKind,
    card_id: String,
    element_id: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut draft = OpDraft { card_id, kind, element_id, sequence: None, uuid: None, content: None };
    if let Ok(body) = serde_json::from_slice::<Value>(body) {
        draft.sequence = body.get("sequence").and_then(Value::as_i64);
        draft.uuid = body.get("uuid").and_then(Value::as_str).map(str::to_owned);
        if kind == CardOpKind::Content {
            draft.content = body.get("content").and_then(Value::as_str).map(str::to_owned);
        }
    }
    let call = match shared.begin_op(&draft, headers).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let request = match parse_op(kind, body) {
        Ok(request) => request,
        Err(outcome) => return shared.finish_op(draft, &call, Applied::of(outcome)),
    };
    let applied = {
        let mut inner = shared.lock();
        apply(&mut inner, &call.app_id, &draft.card_id, draft.element_id.as_deref(), &request)
    };
    shared.finish_op(draft, &call, applied)
}

/// `PUT /open-apis/cardkit/v1/cards/{card_id}/elements/{element_id}/content`
pub(in crate::fake_lark) async fn element_content(
    State(shared): State<Arc<Shared>>,
    Path((card_id, element_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    operate(&shared, CardOpKind::Content, card_id, Some(element_id), &headers, &body).await
}

/// `PATCH /open-apis/cardkit/v1/cards/{card_id}/settings`
pub(in crate::fake_lark) async fn card_settings(
    State(shared): State<Arc<Shared>>,
    Path(card_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    operate(&shared, CardOpKind::Settings, card_id, None, &headers, &body).await
}

/// `PUT /open-apis/cardkit/v1/cards/{card_id}`
pub(in crate::fake_lark) async fn update_card(
    State(shared): State<Arc<Shared>>,
    Path(card_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    operate(&shared, CardOpKind::Update, card_id, None, &headers, &body).await
}
