//! The Reset generation of each conversation, in a JetStream KV bucket so that
//! every relay replica agrees. A conversation starts at generation 0; `Reset`
//! bumps it with a compare-and-set, so two Resets at once both count.

use async_nats::jetstream::kv;
use common::conversation::ConversationKey;

#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct SessionError(String);

#[derive(Clone)]
pub struct Sessions {
    store: kv::Store,
}

fn key(channel: &str, conversation: &ConversationKey) -> String {
    common::topology::keys::session(channel, &conversation.token())
}

fn parse(v: &[u8]) -> u64 {
    std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl Sessions {
    /// The bucket itself, for the other durable per-chat marks it holds (`crate::welcome`).
    pub fn store(&self) -> &kv::Store {
        &self.store
    }

    pub fn new(store: kv::Store) -> Self {
        Self { store }
    }

    pub async fn generation(&self, channel: &str, conversation: &ConversationKey) -> Result<u64, SessionError> {
        let v = self.store.get(key(channel, conversation)).await.map_err(|e| SessionError(e.to_string()))?;
        Ok(v.as_deref().map(parse).unwrap_or(0))
    }

    /// Starts a new history; returns the new generation.
    pub async fn reset(&self, channel: &str, conversation: &ConversationKey) -> Result<u64, SessionError> {
        let k = key(channel, conversation);
        for _ in 0..16 {
            let entry = self.store.entry(&k).await.map_err(|e| SessionError(e.to_string()))?;
            let result = match entry.filter(|e| e.operation == kv::Operation::Put) {
                Some(e) => {
                    let next = parse(&e.value) + 1;
                    self.store
                        .update(&k, next.to_string().into(), e.revision)
                        .await
                        .map(|_| next)
                        .map_err(|e| e.to_string())
                }
                None => self.store.create(&k, "1".into()).await.map(|_| 1).map_err(|e| e.to_string()),
            };
            match result {
                Ok(g) => return Ok(g),
                Err(e) => tracing::debug!(error = %e, "concurrent Reset; trying again"),
            }
        }
        Err(SessionError("too many concurrent Resets of one conversation".into()))
    }
}
