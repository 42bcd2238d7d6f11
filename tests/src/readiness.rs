//! Waiting for a service's `/readyz` to answer what a test expects: 200 once
//! it has started (its streams and buckets exist), 503 while NATS is down.

use std::time::Duration;

use crate::eventually::until;

/// Polls `url` (a service's `/readyz`) until it answers `want`; panics with
/// `what` after `limit`. No answer at all counts as not yet.
pub async fn readyz_becomes(http: &reqwest::Client, url: &str, want: u16, limit: Duration, what: &str) {
    until(limit, what, || async { http.get(url).send().await.is_ok_and(|r| r.status().as_u16() == want) }).await
}
