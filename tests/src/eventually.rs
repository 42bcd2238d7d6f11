//! Waiting for what the bridge does asynchronously, without guessing how
//! long it takes: a test states the condition and the most it will wait,
//! and [`eventually`] polls until the condition holds. A fixed sleep before
//! an assertion is either too short on a slow machine (a flaky failure) or
//! too long everywhere (a slow suite); this is neither.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often the condition is checked.
const POLL: Duration = Duration::from_millis(25);

/// Polls `check` until it returns `Some`, and returns that value. Panics
/// with `what` once `timeout` has passed without it.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match within(timeout, check).await {
        Some(value) => value,
        None => panic!("not within {timeout:?}: {what}"),
    }
}

/// Polls `check` until it returns `Some` (that value) or `timeout` has
/// passed (`None`): for a caller that says more than one sentence when the
/// wait fails (the state it saw, a server's log), or judges what it finds
/// after the wait.
pub async fn within<T, F, Fut>(timeout: Duration, check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within_every(timeout, POLL, check).await
}

/// [`within`], checking every `poll`: for a check that costs the server
/// something (many requests, a webhook delivered), polled at the pace the
/// real client would use.
pub async fn within_every<T, F, Fut>(timeout: Duration, poll: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Polls `condition` until it holds; panics with `what` after `timeout`.
pub async fn until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(timeout, what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// Checks that `condition` holds for the whole of `period`, at every poll:
/// for what must *not* happen (a second answer, a retry), where waiting is
/// the only proof. Panics with `what` at the first poll where it fails.
pub async fn throughout<F, Fut>(period: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + period;
    loop {
        assert!(condition().await, "{what}");
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let polls = AtomicUsize::new(0);
        let got = eventually(Duration::from_secs(5), "three polls", || {
            let n = polls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { (n >= 3).then_some(n) }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn within_says_none_after_the_timeout() {
        let got: Option<()> = within(Duration::from_millis(60), || async { None }).await;
        assert_eq!(got, None);
    }

    #[tokio::test]
    #[should_panic(expected = "not within")]
    async fn panics_after_the_timeout() {
        until(Duration::from_millis(60), "never", || async { false }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "went wrong")]
    async fn throughout_fails_at_the_first_poll_that_fails() {
        let polls = AtomicUsize::new(0);
        throughout(Duration::from_secs(5), "went wrong", || {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            async move { n < 2 }
        })
        .await;
    }
}
