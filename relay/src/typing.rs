//! "The bot is working": when FastGPT has not answered after a few seconds, a
//! `Typing` reaction appears on the user's message, so they do not ask again;
//! it is removed once the answer is on its way. Best effort: a failure here is
//! logged and never delays the answer.

use std::sync::Arc;
use std::time::Duration;

use common::lark::api::LarkClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const EMOJI: &str = "Typing";

pub struct Typing {
    cancel: CancellationToken,
    task: JoinHandle<Option<String>>,
    lark: Arc<LarkClient>,
    message_id: String,
}

impl Typing {
    /// Adds the reaction after `after`, unless finished before.
    pub fn start(lark: Arc<LarkClient>, message_id: &str, after: Duration) -> Self {
        let (l, id) = (lark.clone(), message_id.to_owned());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = c.cancelled() => return None,
            }
            match l.add_reaction(&id, EMOJI).await {
                Ok(r) => Some(r.reaction_id),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot add the Typing reaction (permission im:message.reactions:write_only?)");
                    None
                }
            }
        });
        Self { cancel, task, lark, message_id: message_id.to_owned() }
    }

    /// Stops the timer, or removes the reaction if it was added.
    pub async fn finish(self) {
        self.cancel.cancel();
        if let Ok(Some(reaction_id)) = self.task.await {
            if let Err(e) = self.lark.delete_reaction(&self.message_id, &reaction_id).await {
                tracing::debug!(error = %e, "cannot remove the Typing reaction");
            }
        }
    }
}
