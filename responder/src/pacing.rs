//! Lark's send limits, kept before Lark enforces them: at most 5 messages per
//! second into one chat (code 230020 past that, shared by every bot in the
//! chat), 50 per second and 1,000 per minute per app. A burst in one chat waits
//! its turn on its own key, so other chats are not held up behind it.
//!
//! The limits are per responder replica; with N replicas set the app limits
//! to 1/N of Lark's (`responder.app_per_second`, `responder.app_per_minute`).
//! One chat's replies are handled in order, one at a time (the worker's order
//! per subject), and a 230020 that slips through is retried.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Pacing {
    per_chat: Arc<DefaultKeyedRateLimiter<String>>,
    /// Per app id: (per second, per minute).
    per_app: Arc<HashMap<String, (DefaultDirectRateLimiter, DefaultDirectRateLimiter)>>,
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
    pub fn new<'a>(
        apps: impl IntoIterator<Item = &'a str>,
        per_chat_per_second: u32,
        app_per_second: u32,
        app_per_minute: u32,
    ) -> Self {
        let per_app = apps
            .into_iter()
            .map(|app| {
                let second = governor::RateLimiter::direct(at_most(app_per_second, SECOND, app_per_second / 10));
                let minute = governor::RateLimiter::direct(at_most(app_per_minute, MINUTE, app_per_minute / 20));
                (app.to_owned(), (second, minute))
            })
            .collect();
        Self {
            // One at a time into a chat: Lark counts every bot's messages there.
            per_chat: Arc::new(governor::RateLimiter::keyed(at_most(per_chat_per_second, SECOND, 1))),
            per_app: Arc::new(per_app),
        }
    }

    /// Waits until one more message may go to `chat` of `app`.
    pub async fn wait(&self, app: &str, chat: &str) {
        self.per_chat.until_key_ready(&chat.to_owned()).await;
        if let Some((second, minute)) = self.per_app.get(app) {
            second.until_ready().await;
            minute.until_ready().await;
        }
    }

    /// Forgets chats that have been quiet (keeps memory flat).
    pub fn forget_idle(&self) {
        self.per_chat.retain_recent();
        self.per_chat.shrink_to_fit();
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
        assert!(worst_window(at_most(1000, MINUTE, 50), MINUTE, 2500) <= 1000);
    }

    #[tokio::test]
    async fn one_chat_is_paced_others_are_not_held_up() {
        let p = Pacing::new(["app"], 5, 50, 1000);
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
