//! Answers whose reply command NATS did not store, kept in memory for the
//! event's next attempt: a redelivery goes to the same replica (the
//! partition's owner), which then publishes the kept answer instead of
//! asking FastGPT, and paying for it, again. Bounded in count and age; a
//! redelivery elsewhere, or after a restart, asks again as before.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::decision::Decision;

/// At most this many answers are kept (each at most
/// `common::envelope::MAX_REPLY_TEXT`, once cut for the chat).
const MAX_KEPT: usize = 64;
/// Longer than every backoff of `relay.max_attempts` retries.
const KEEP: Duration = Duration::from_secs(10 * 60);

/// What a kept answer needs to be concluded again.
pub(crate) struct Kept {
    pub decision: Decision,
    /// The conversation whose question card the answer closes.
    pub closing: Option<String>,
}

#[derive(Default)]
pub struct Unsent {
    /// The answered-events key of the event → its answer, and when kept.
    inner: Mutex<HashMap<String, (Instant, Kept)>>,
}

impl Unsent {
    /// Keeps the answer to the event `key` (unless full: then it is asked again).
    pub(crate) fn keep(&self, key: &str, kept: Kept) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, (at, _)| at.elapsed() < KEEP);
        if map.len() < MAX_KEPT || map.contains_key(key) {
            map.insert(key.to_owned(), (Instant::now(), kept));
        }
    }

    /// The answer kept for the event `key`, taken out.
    pub(crate) fn take(&self, key: &str) -> Option<Kept> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(key).filter(|(at, _)| at.elapsed() < KEEP).map(|(_, kept)| kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::envelope::ReplyKind;

    fn kept(text: &str) -> Kept {
        Kept {
            decision: Decision {
                kind: ReplyKind::Answer,
                text: text.into(),
                pending: None,
                extras: Default::default(),
            },
            closing: None,
        }
    }

    #[test]
    fn an_answer_is_taken_once_and_the_count_is_bounded() {
        let unsent = Unsent::default();
        unsent.keep("k", kept("answer"));
        assert_eq!(unsent.take("k").map(|k| k.decision.text), Some("answer".into()));
        assert!(unsent.take("k").is_none(), "taken once");
        for i in 0..MAX_KEPT + 10 {
            unsent.keep(&format!("k{i}"), kept("x"));
        }
        let held = (0..MAX_KEPT + 10).filter(|i| unsent.take(&format!("k{i}")).is_some()).count();
        assert_eq!(held, MAX_KEPT);
    }
}
