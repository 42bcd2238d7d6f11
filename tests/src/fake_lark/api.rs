//! The HTTP handlers of the fake Lark: request checks, scripted failures and
//! Lark's response envelopes, kept apart from the inspection API of [`FakeLark`].
//!
//! The code: this file is the router; `outcome.rs` is Lark's response
//! envelope, `call.rs` the common start and end of every call (a scripted
//! failure, the token, the scope, the record of the attempt), `auth.rs` the
//! token and bot-info endpoints, `messages.rs` send, reply and update,
//! `reactions.rs` the reactions, `sandbox.rs` the sandbox's own routes.

use std::sync::Arc;

use axum::routing::{delete, get, patch, post, put};
use axum::Router;

use super::cardkit;
use super::Shared;

mod auth;
mod call;
mod messages;
mod outcome;
mod reactions;
mod sandbox;

use auth::{bot_info, tenant_token};
pub(super) use call::Call;
use messages::{patch_message, put_message, reply_message, send_message};
pub(super) use outcome::{parse_json, Outcome};
use reactions::{add_reaction, delete_reaction};
pub use sandbox::SandboxRegistration;
use sandbox::{sandbox_messages, sandbox_register};

/// The routes of Lark's Open API the bridge uses, plus the sandbox's own.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/open-apis/auth/v3/tenant_access_token/internal", post(tenant_token))
        .route("/open-apis/bot/v3/info", get(bot_info))
        .route("/open-apis/im/v1/messages", post(send_message))
        .route("/open-apis/im/v1/messages/{message_id}", patch(patch_message).put(put_message))
        .route("/open-apis/im/v1/messages/{message_id}/reply", post(reply_message))
        .route("/open-apis/im/v1/messages/{message_id}/reactions", post(add_reaction))
        .route("/open-apis/im/v1/messages/{message_id}/reactions/{reaction_id}", delete(delete_reaction))
        .route("/open-apis/cardkit/v1/cards", post(cardkit::create_card))
        .route("/open-apis/cardkit/v1/cards/{card_id}", put(cardkit::update_card))
        .route("/open-apis/cardkit/v1/cards/{card_id}/settings", patch(cardkit::card_settings))
        .route("/open-apis/cardkit/v1/cards/{card_id}/elements/{element_id}/content", put(cardkit::element_content))
        .route("/_sandbox/messages", get(sandbox_messages))
        .route("/_sandbox/register", post(sandbox_register))
        .merge(super::resources::routes())
        .with_state(shared)
}
