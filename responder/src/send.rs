//! One part of a reply into its chat: as a reply to the user's message
//! (in its topic when it was in one), or into the chat when there is none
//! or it was withdrawn. Every part carries its own Lark `uuid`, so a retry
//! never shows it twice.

use common::envelope::ReplyCommand;
use common::lark::api::{LarkClient, LarkError};

use crate::render::Part;

/// Sends part `i`: a reply to the user's message (into its topic when it was in
/// one); when that message was withdrawn, or there is none, into the chat instead.
pub async fn send_part(lark: &LarkClient, command: &ReplyCommand, i: usize, part: &Part) -> Result<(), LarkError> {
    let uuid = command.lark_uuid(i);
    // Nothing to reply to (the app's welcome when the bot joins a chat).
    if command.reply_to.is_empty() {
        return lark.send_to_chat(&command.chat_id, part.msg_type, &part.content, &uuid).await.map(|_| ());
    }
    match lark.reply(&command.reply_to, part.msg_type, &part.content, command.in_thread, &uuid).await {
        Ok(_) => Ok(()),
        Err(LarkError::Api { code: Some(code), .. }) if common::lark::errors::WITHDRAWN.contains(&code) => {
            tracing::info!(code, "the message was withdrawn; sending the answer into the chat instead");
            lark.send_to_chat(&command.chat_id, part.msg_type, &part.content, &format!("{uuid}c")).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}
