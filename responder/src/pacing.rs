//! Lark's send limits, kept before Lark enforces them: at most 5 messages per
//! second into one chat (code 230020 past that, shared by every bot in the
//! chat), and the app's limits for all its messages (50 per second and 1,000
//! per minute), whichever replica sends. A burst in one chat waits its turn
//! on its own key, so other chats are not held up behind it.
//!
//! - **per chat**: the replies queue is partitioned by chat and each partition
//!   is leased by one replica (`common::worker`), so every reply of a chat is
//!   sent by the one replica holding its partition, one at a time, through
//!   this replica's per-chat limiter;
//! - **per app**: the app's budget for messages, shared out by partitions
//!   ([`crate::budget`]): the shares of all replicas add up to at most the
//!   limit at every moment.
//!
//! A 230020 that slips through anyway (another bot in the chat, a lease
//! changing hands) is retried.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};

use crate::budget::{Api, Budget, Class};

const SECOND: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Pacing {
    per_chat: Arc<DefaultKeyedRateLimiter<String>>,
    budget: Budget,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// A quota that lets at most `n` through in ANY window of `window`, bursts
/// included: a GCRA with burst `b` and period `p` admits up to `b + window/p`
/// in a window, so `p = window / (n - b + 1)`, with 5 % margin for timing.
pub fn at_most(n: u32, window: Duration, burst: u32) -> Quota {
    let n = n.max(1);
    let burst = burst.clamp(1, n);
    let period = window.mul_f64(1.05) / (n - burst + 1);
    Quota::with_period(period.max(Duration::from_micros(1)))
        .unwrap_or_else(|| Quota::per_second(nz(n)))
        .allow_burst(nz(burst))
}

impl Pacing {
    /// Pacing of `per_chat_per_second` into each chat, within `budget`'s
    /// limits for the app's messages.
    pub fn new(per_chat_per_second: u32, budget: Budget) -> Self {
        // One at a time into a chat: Lark counts every bot's messages there.
        Self { per_chat: Arc::new(governor::RateLimiter::keyed(at_most(per_chat_per_second, SECOND, 1))), budget }
    }

    /// Waits until one more message may go to `chat` of `app`.
    pub async fn wait(&self, app: &str, chat: &str) {
        self.per_chat.until_key_ready(&chat.to_owned()).await;
        self.budget.take(app, Api::Messages, Class::Answer).await;
    }

    /// Lark refused a message as over the app's limit: messages of `app`
    /// wait for Lark's reset.
    pub fn pause(&self, app: &str, reset: Option<Duration>) {
        self.budget.pause(app, Api::Messages, reset);
    }

    /// Forgets chats that have been quiet (keeps memory flat).
    pub fn forget_idle(&self) {
        self.per_chat.retain_recent();
        self.per_chat.shrink_to_fit();
        self.budget.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Simulates a quota at a steady clock and counts the worst window.
    fn worst_window(q: Quota, window: Duration, total: usize) -> usize {
        use governor::clock::FakeRelativeClock;
        let clock = FakeRelativeClock::default();
        let limiter = governor::RateLimiter::direct_with_clock(q, clock.clone());
        let mut sent: Vec<Duration> = Vec::new();
        let mut now = Duration::ZERO;
        let step = Duration::from_micros(500);
        while sent.len() < total {
            if limiter.check().is_ok() {
                sent.push(now);
            } else {
                clock.advance(step);
                now += step;
            }
        }
        sent.iter().map(|t| sent.iter().filter(|u| **u >= *t && **u - *t < window).count()).max().unwrap_or(0)
    }

    #[test]
    fn no_window_ever_holds_more_than_the_limit() {
        assert!(worst_window(at_most(5, SECOND, 1), SECOND, 30) <= 5);
        assert!(worst_window(at_most(50, SECOND, 5), SECOND, 200) <= 50);
    }

    #[tokio::test]
    async fn one_chat_is_paced_others_are_not_held_up() {
        let budget = Budget::new(crate::budget::Limits { per_second: 50, per_minute: 1000 });
        budget.set_share(common::worker::Share { held: 16, of: 16, set: 0xFFFF });
        let p = Pacing::new(5, budget);
        let start = Instant::now();
        for _ in 0..10 {
            p.wait("app", "busy").await;
        }
        let busy = start.elapsed();
        // 10 sends at 5/s, one at a time: about 200 ms apart.
        assert!(busy >= Duration::from_millis(1800), "{busy:?}");
        assert!(p.per_chat.check_key(&"busy".to_owned()).is_err(), "the busy chat is at its limit");
        assert!(p.per_chat.check_key(&"quiet".to_owned()).is_ok(), "another chat is not held up");
    }
}
