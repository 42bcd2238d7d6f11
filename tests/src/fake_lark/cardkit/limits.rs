//! Lark's rate limits on CardKit: each API per app, across every caller (50
//! requests a second and 1,000 a minute, each API's page, "接口频率限制"),
//! and 10 operations a second on one card (stated in Lark's pages without
//! its code). Both are answered as Lark's other rate limits: HTTP 429, code
//! 99991400 and `x-ogw-ratelimit-reset`.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{CardKit, CardOpKind};
use crate::fake_lark::api::Outcome;

/// Lark's limit of operations per second on one card.
pub const CARD_OPS_PER_SECOND: usize = 10;

/// Lark's limits of each CardKit API per app: per second, per minute.
pub const APP_LIMITS: (usize, usize) = (50, 1000);

impl CardKit {
    /// Admits one request of `app_id` to `kind` within the app's limits, or
    /// answers as Lark does past them.
    pub(super) fn admit(&mut self, app_id: &str, kind: CardOpKind, now: Instant) -> Result<(), Outcome> {
        let Some((per_second, per_minute)) = self.app_limits else { return Ok(()) };
        let recent = self.app_recent.entry((app_id.to_owned(), kind)).or_default();
        while recent.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            recent.pop_front();
        }
        let in_second = recent.iter().rev().take_while(|t| now.duration_since(**t) < Duration::from_secs(1)).count();
        let over = if in_second >= per_second {
            Some((per_second, recent.get(recent.len() - in_second).map(|t| *t + Duration::from_secs(1))))
        } else if recent.len() >= per_minute {
            Some((per_minute, recent.front().map(|t| *t + Duration::from_secs(60))))
        } else {
            None
        };
        if let Some((limit, frees_at)) = over {
            let wait = frees_at.map_or(Duration::from_secs(1), |at| at.saturating_duration_since(now));
            let reset = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let headers = vec![
                ("x-ogw-ratelimit-limit".to_owned(), limit.to_string()),
                ("x-ogw-ratelimit-reset".to_owned(), reset.max(1).to_string()),
            ];
            return Err(Outcome::error_with(429, 99991400, "request trigger frequency limit", json!({}), headers));
        }
        recent.push_back(now);
        Ok(())
    }
}

/// Lark's rate limit, as the fake answers the per-card limit.
pub(super) fn card_rate_limited(limit: usize) -> Outcome {
    let headers = vec![
        ("x-ogw-ratelimit-limit".to_owned(), limit.to_string()),
        ("x-ogw-ratelimit-reset".to_owned(), "1".to_owned()),
    ];
    Outcome::error_with(429, 99991400, "request trigger frequency limit", json!({}), headers)
}
