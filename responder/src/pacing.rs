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

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

#[derive(Clone)]
pub struct Pacing {
    per_chat: Arc<DefaultKeyedRateLimiter<String>>,
    /// Per app id: (per second, per minute).
    per_app: Arc<HashMap<String, (DefaultDirectRateLimiter, DefaultDirectRateLimiter)>>,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
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
                let second = governor::RateLimiter::direct(Quota::per_second(nz(app_per_second)));
                let minute = governor::RateLimiter::direct(Quota::per_minute(nz(app_per_minute)));
                (app.to_owned(), (second, minute))
            })
            .collect();
        Self {
            per_chat: Arc::new(governor::RateLimiter::keyed(Quota::per_second(nz(per_chat_per_second)))),
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
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn one_chat_is_paced_others_are_not_held_up() {
        let p = Pacing::new(["app"], 5, 50, 1000);
        let start = Instant::now();
        for _ in 0..10 {
            p.wait("app", "busy").await;
        }
        let busy = start.elapsed();
        // 10 sends at 5/s: the first 5 at once (the burst), the rest 200 ms apart.
        assert!(busy >= Duration::from_millis(900), "{busy:?}");
        assert!(p.per_chat.check_key(&"busy".to_owned()).is_err(), "the busy chat is at its limit");
        assert!(p.per_chat.check_key(&"quiet".to_owned()).is_ok(), "another chat is not held up");
    }
}
