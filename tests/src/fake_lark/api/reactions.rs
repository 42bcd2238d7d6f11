//! Reactions on a message: added by emoji type, deleted by id (231010 when
//! there is no such reaction or it was deleted); each kept with when it was
//! added and removed, for the tests to read.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use super::{parse_json, Outcome};
use crate::fake_lark::{Endpoint, Reaction, Shared};
use crate::lark_events::{now_ms, random_hex};

fn reaction_data(r: &Reaction) -> Value {
    json!({
        "reaction_id": r.reaction_id,
        "operator": { "operator_id": r.app_id, "operator_type": "app" },
        "action_time": now_ms().to_string(),
        "reaction_type": { "emoji_type": r.emoji_type },
    })
}

pub(super) async fn add_reaction(
    State(shared): State<Arc<Shared>>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = match shared.begin(Endpoint::AddReaction, &headers).await {
        Ok(call) => call,
        Err(refused) => return shared.refuse(Endpoint::AddReaction, refused),
    };
    let emoji = parse_json(&body)
        .ok()
        .and_then(|b| b.pointer("/reaction_type/emoji_type").and_then(Value::as_str).map(str::to_owned));
    let Some(emoji_type) = emoji.filter(|e| !e.is_empty()) else {
        let outcome = Outcome::field_violation("reaction_type.emoji_type", "emoji_type is required");
        return shared.finish(Endpoint::AddReaction, &call, outcome, None, false);
    };
    let reaction = Reaction {
        app_id: call.app_id.clone(),
        message_id,
        reaction_id: random_hex(24),
        emoji_type,
        added_at: Instant::now(),
        removed_at: None,
    };
    let data = reaction_data(&reaction);
    shared.lock().reactions.push(reaction);
    let outcome = Outcome::ok(json!({ "code": 0, "msg": "success", "data": data }));
    shared.finish(Endpoint::AddReaction, &call, outcome, None, false)
}

pub(super) async fn delete_reaction(
    State(shared): State<Arc<Shared>>,
    Path((message_id, reaction_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let call = match shared.begin(Endpoint::DeleteReaction, &headers).await {
        Ok(call) => call,
        Err(refused) => return shared.refuse(Endpoint::DeleteReaction, refused),
    };
    let mut inner = shared.lock();
    let found = inner
        .reactions
        .iter_mut()
        .find(|r| r.message_id == message_id && r.reaction_id == reaction_id && r.removed_at.is_none());
    let outcome = match found {
        Some(reaction) => {
            reaction.removed_at = Some(Instant::now());
            Outcome::ok(json!({ "code": 0, "msg": "success", "data": reaction_data(reaction) }))
        }
        None => Outcome::error(400, 231010, "The reaction does not exist or has been deleted."),
    };
    drop(inner);
    shared.finish(Endpoint::DeleteReaction, &call, outcome, None, false)
}
