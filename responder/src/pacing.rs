//! Lark's send limits, kept before Lark enforces them: at most 5 messages per
//! second into one chat (code 230020 past that, shared by every bot in the
//! chat), and the app's limits for all its messages (50 per second and 1,000
//! per minute), whichever replica sends. A burst in one chat waits its turn
//! on its own key, so other chats are not held up behind it.
//!
//! - **per chat**: the replies queue is partitioned by chat and each partition
//!   is leased by one replica (`common::worker`), so every reply of a chat is
//!   sent by the one replica holding its partition, one at a time and spaced
//!   out here (a message waiting for the app's budget keeps the chat's turn,
//!   so the spacing counts from real sends);
//! - **per app**: the app's budget for messages, shared out by partitions
//!   ([`crate::budget`]): the shares of all replicas add up to at most the
//!   limit at every moment.
//!
//! A 230020 that slips through anyway (another bot in the chat, a lease
//! changing hands) is retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::budget::{Api, Budget, Class};

/// How much longer than `1 / per_chat_per_second` two messages into one
/// chat are kept apart: a request that reaches Lark a little late must not
/// put two of them in one of Lark's windows.
const MARGIN: f64 = 0.05;

/// One chat's turn: when its last message went out. Held while a message
/// waits for the app's budget, so the chat's spacing counts from real sends.
type Turn = Arc<tokio::sync::Mutex<Option<Instant>>>;

#[derive(Clone)]
pub struct Pacing {
    chats: Arc<Mutex<HashMap<String, Turn>>>,
    /// The least time between two messages into one chat.
    spacing: Duration,
    budget: Budget,
}

impl Pacing {
    /// Pacing of `per_chat_per_second` into each chat, within `budget`'s
    /// limits for the app's messages.
    pub fn new(per_chat_per_second: u32, budget: Budget) -> Self {
        let spacing = Duration::from_secs(1).mul_f64(1.0 + MARGIN) / per_chat_per_second.max(1);
        Self { chats: Arc::default(), spacing, budget }
    }

    fn turn(&self, chat: &str) -> Turn {
        let mut chats = self.chats.lock().unwrap_or_else(PoisonError::into_inner);
        chats.entry(chat.to_owned()).or_default().clone()
    }

    /// Waits until one more message may go to `chat` of `app`: one at a
    /// time into a chat (Lark counts every bot's messages there), spaced
    /// out, and within the app's budget.
    pub async fn wait(&self, app: &str, chat: &str) {
        let turn = self.turn(chat);
        let mut last = turn.lock().await;
        if let Some(at) = *last {
            tokio::time::sleep_until((at + self.spacing).into()).await;
        }
        self.budget.take(app, Api::Messages, Class::Answer).await;
        *last = Some(Instant::now());
    }

    /// Lark refused a message as over the app's limit: messages of `app`
    /// wait for Lark's reset.
    pub fn pause(&self, app: &str, reset: Option<Duration>) {
        self.budget.pause(app, Api::Messages, reset);
    }

    /// Forgets chats that have been quiet (keeps memory flat).
    pub fn forget_idle(&self) {
        let spacing = self.spacing;
        self.chats.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, turn| {
            // In use (a message waits or is being paced), or sent lately.
            Arc::strong_count(turn) > 1
                || turn.try_lock().map_or(true, |last| last.is_some_and(|at| at.elapsed() < spacing))
        });
        self.budget.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(per_chat: u32, app_per_second: u32) -> Pacing {
        let budget = Budget::new(crate::budget::Limits { per_second: app_per_second, per_minute: 100_000 });
        budget.set_share(common::worker::Share { held: 16, of: 16, set: 0xFFFF });
        Pacing::new(per_chat, budget)
    }

    /// The most sends in any one-second window.
    fn busiest(times: &[Instant]) -> usize {
        (0..times.len())
            .map(|i| times[i..].iter().take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1)).count())
            .max()
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn one_chat_is_paced_others_are_not_held_up() {
        let p = pacing(5, 1000);
        tokio::time::sleep(Duration::from_millis(1100)).await; // the app budget's ramp
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..10 {
            p.wait("app", "busy").await;
            sent.push(Instant::now());
        }
        let busy = start.elapsed();
        // 10 sends at 5/s, one at a time: about 210 ms apart.
        assert!(busy >= Duration::from_millis(1800), "{busy:?}");
        assert!(busiest(&sent) <= 5, "{} in one second", busiest(&sent));
        let quiet = Instant::now();
        p.wait("app", "quiet").await;
        assert!(quiet.elapsed() < Duration::from_millis(100), "another chat is not held up");
    }

    /// Messages into one chat that wait for the app's budget still go out
    /// spaced, not bunched when the budget frees up.
    #[tokio::test]
    async fn a_wait_for_the_app_budget_does_not_bunch_a_chats_messages() {
        let p = pacing(5, 3);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let sent = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (p, sent) = (p.clone(), sent.clone());
                tokio::spawn(async move {
                    p.wait("app", "chat").await;
                    sent.lock().expect("lock").push(Instant::now());
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let mut sent = sent.lock().expect("lock").clone();
        sent.sort();
        for pair in sent.windows(2) {
            assert!(pair[1].duration_since(pair[0]) >= Duration::from_millis(200), "{:?}", pair[1] - pair[0]);
        }
        assert!(busiest(&sent) <= 3, "the app's 3 a second hold too");
    }
}
