//! The question card waiting in each conversation (`{ns}_questions`, one per
//! conversation, key `common::topology::keys::question`).
//!
//! The relay writes it when FastGPT stops at a node that asks the user,
//! removes it when the conversation moves on (any new message, a Reset) or
//! when its click has been answered. The ingress reads it to refuse a click
//! at once (expired, another member, not an option) and the relay reads it
//! again when it resumes the workflow.

use async_nats::jetstream::kv;
use common::question::Pending;
use common::topology::keys;

#[derive(Debug, thiserror::Error)]
#[error("the pending-questions bucket: {0}")]
pub struct QuestionsError(String);

#[derive(Clone)]
pub struct Questions {
    kv: kv::Store,
}

impl Questions {
    pub fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// The question waiting in `conversation`, if any.
    pub async fn get(&self, channel: &str, conversation: &str) -> Result<Option<Pending>, QuestionsError> {
        let value =
            self.kv.get(keys::question(channel, conversation)).await.map_err(|e| QuestionsError(e.to_string()))?;
        match value {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| QuestionsError(e.to_string())),
            None => Ok(None),
        }
    }

    /// Records `pending` as its conversation's question (replacing any other).
    pub async fn put(&self, channel: &str, pending: &Pending) -> Result<(), QuestionsError> {
        let bytes = serde_json::to_vec(pending).map_err(|e| QuestionsError(e.to_string()))?;
        self.kv
            .put(keys::question(channel, &pending.question.conversation), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| QuestionsError(e.to_string()))
    }

    /// Removes the conversation's question if it is still `question`
    /// (cleanup after a crash; best effort).
    pub async fn remove_if(&self, channel: &str, conversation: &str, question: &str) {
        if let Ok(Some(p)) = self.get(channel, conversation).await {
            if p.question.id == question {
                let _ = self.remove(channel, conversation).await;
            }
        }
    }

    /// Removes the conversation's question: a click on it has expired.
    pub async fn remove(&self, channel: &str, conversation: &str) -> Result<(), QuestionsError> {
        self.kv.delete(keys::question(channel, conversation)).await.map_err(|e| QuestionsError(e.to_string()))?;
        tracing::info!("the conversation's question card is closed");
        Ok(())
    }
}
