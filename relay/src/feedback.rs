//! 👍 / 👎 on a final answer: the buttons the answer's card carries, and the
//! click that rates the answer in FastGPT's chat log.
//!
//! The ingress already checked the click (the asker, the card's chat) and
//! showed the toast; here FastGPT is told, with
//! `POST core/chat/feedback/updateUserFeedback` `{appId, chatId, dataId,
//! userGoodFeedback?, userBadFeedback?}`
//! (`projects/app/src/pages/api/core/chat/feedback/updateUserFeedback.ts`):
//! the field left out is cleared, so the other button switches the rating.

use std::time::Duration;

use common::answer::{Extras, FeedbackClick, FeedbackTarget, Source, Verdict};
use common::channel::Channel;
use common::envelope::ReplyCommand;
use common::lark::card_action::CardAction;
use common::worker::{backoff, Outcome};
use serde_json::json;

use crate::fastgpt::FastGptError;
use crate::handler::Relay;

/// What a final answer's card shows below the answer: its `sources`, and,
/// when the channel says so, the feedback buttons for turn `data_id`.
pub(crate) fn extras(
    channel: &Channel,
    chat_id: &str,
    data_id: &str,
    asked_by: Option<String>,
    sources: Vec<Source>,
    target: &ReplyCommand,
) -> Extras {
    let feedback = channel.feedback.then(|| {
        Box::new(FeedbackTarget {
            chat_id: chat_id.to_owned(),
            data_id: data_id.to_owned(),
            asked_by,
            lark_chat_id: target.chat_id.clone(),
        })
    });
    Extras { sources, feedback }
}

impl Relay {
    pub(crate) async fn handle_feedback(
        &self,
        channel: &Channel,
        action: &CardAction,
        click: FeedbackClick,
        attempt: u32,
    ) -> Outcome {
        // Checked again: the ingress answered the click, this says FastGPT.
        if !click.allowed(action.operator.open_id.as_deref(), action.context.open_chat_id.as_deref()) {
            tracing::info!("a feedback click by someone other than the asker; ignored");
            return Outcome::Done;
        }
        let target = &click.target;
        let result = match self.fastgpt.app_id(channel, &target.chat_id).await {
            Ok(app_id) => {
                let mut body = json!({ "appId": app_id, "chatId": target.chat_id, "dataId": target.data_id });
                match click.verdict {
                    Verdict::Good => body["userGoodFeedback"] = json!(Verdict::Good.fastgpt_text()),
                    Verdict::Bad => body["userBadFeedback"] = json!(Verdict::Bad.fastgpt_text()),
                }
                self.fastgpt.post(channel, "core/chat/feedback/updateUserFeedback", &body).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(()) => "ok",
            Err(e) => e.label(),
        };
        metrics::counter!(common::metric_names::RELAY_FEEDBACK_TOTAL, "channel" => channel.id.clone(), "verdict" => click.verdict.as_str(), "outcome" => outcome)
            .increment(1);
        match result {
            Ok(()) => {
                tracing::info!(verdict = click.verdict.as_str(), "feedback recorded in FastGPT");
                Outcome::Done
            }
            Err(FastGptError::Transient(detail)) if attempt < self.settings.max_attempts => {
                let delay = backoff(attempt, Duration::from_secs(60));
                tracing::warn!(%detail, attempt, retry_in = ?delay, "cannot record the feedback; will retry");
                Outcome::Retry(delay)
            }
            Err(e) => {
                tracing::error!(error = %e, "FastGPT did not take the feedback");
                self.status.error(&channel.id, format!("FastGPT did not take a feedback: {e}"), e.fix());
                Outcome::Done
            }
        }
    }
}
