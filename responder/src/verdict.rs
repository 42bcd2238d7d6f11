//! What a failed Lark send means for its reply, by the error's class and the
//! attempt: try again (when), or a dead letter (why). Only the decision: the
//! handler pauses the pacing, counts, logs and dead-letters around it.

use std::time::Duration;

use common::lark::errors::ErrorClass;
use common::worker::backoff;

/// The longest a reply waits before it is tried again, whatever Lark's
/// reset header says: a chat's younger replies wait behind this one, and a
/// partition's new owner waits at most 300 s for it.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(120);

/// The longest backoff before the reset header is considered.
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// How soon a reply whose token Lark still calls invalid is tried again:
/// the client has already fetched a new token and retried once, so a
/// second look is cheap and the next one most likely works.
pub(crate) const TOKEN_RETRY: Duration = Duration::from_secs(1);

/// What a failed send of a reply leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A transient failure (rate limit, 5xx, network): again after this long.
    Retry(Duration),
    /// Lark still says the token is invalid: again after this long.
    RetryToken(Duration),
    /// Lark will never take it: a dead letter with what to fix.
    Refused { fix: &'static str },
    /// The last attempt failed too: a dead letter naming the attempts.
    LastAttempt,
}

/// The verdict for a failure of `class` at attempt `attempt` (from 1) of
/// `max_attempts`. A permanent refusal is final at any attempt; anything
/// else is retried until the last attempt. A transient failure waits its
/// backoff (with jitter), at least Lark's reset and at most
/// [`MAX_RETRY_DELAY`].
pub(crate) fn verdict(class: ErrorClass, attempt: u32, max_attempts: u32) -> Verdict {
    match class {
        ErrorClass::Transient { retry_after } if attempt < max_attempts => {
            Verdict::Retry(backoff(attempt, BACKOFF_CAP).max(retry_after.unwrap_or_default()).min(MAX_RETRY_DELAY))
        }
        ErrorClass::TokenInvalid if attempt < max_attempts => Verdict::RetryToken(TOKEN_RETRY),
        ErrorClass::Permanent { fix } => Verdict::Refused { fix },
        ErrorClass::Transient { .. } | ErrorClass::TokenInvalid => Verdict::LastAttempt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 5;

    fn transient(retry_after: Option<u64>) -> ErrorClass {
        ErrorClass::Transient { retry_after: retry_after.map(Duration::from_secs) }
    }

    fn delay_of(v: Verdict) -> Duration {
        match v {
            Verdict::Retry(d) => d,
            other => panic!("not a retry: {other:?}"),
        }
    }

    #[test]
    fn a_transient_failure_waits_its_backoff_with_jitter() {
        for _ in 0..100 {
            let first = delay_of(verdict(transient(None), 1, MAX));
            assert!(first >= Duration::from_millis(750) && first <= Duration::from_millis(1250), "{first:?}");
            let fourth = delay_of(verdict(transient(None), 4, MAX));
            assert!(fourth >= Duration::from_secs(6) && fourth <= Duration::from_secs(10), "{fourth:?}");
        }
    }

    #[test]
    fn a_transient_failure_waits_at_least_until_lark_s_reset() {
        for _ in 0..100 {
            assert_eq!(delay_of(verdict(transient(Some(30)), 1, MAX)), Duration::from_secs(30));
            let later = delay_of(verdict(transient(Some(1)), 4, MAX));
            assert!(later >= Duration::from_secs(6), "the backoff when it is longer: {later:?}");
        }
    }

    #[test]
    fn no_retry_waits_longer_than_two_minutes() {
        assert_eq!(delay_of(verdict(transient(Some(3600)), 1, MAX)), MAX_RETRY_DELAY);
        for _ in 0..100 {
            let late = delay_of(verdict(transient(None), 30, 40));
            assert!(late >= Duration::from_secs(45) && late <= Duration::from_secs(75), "{late:?}");
        }
    }

    #[test]
    fn a_token_lark_still_calls_invalid_is_tried_again_in_a_second() {
        assert_eq!(verdict(ErrorClass::TokenInvalid, 1, MAX), Verdict::RetryToken(Duration::from_secs(1)));
    }

    #[test]
    fn a_permanent_refusal_is_dead_lettered_with_its_fix_at_any_attempt() {
        let fix = "add the bot to the group";
        for attempt in [1, MAX - 1, MAX] {
            assert_eq!(verdict(ErrorClass::Permanent { fix }, attempt, MAX), Verdict::Refused { fix });
        }
    }

    #[test]
    fn the_last_attempt_is_dead_lettered_whatever_the_failure() {
        assert_eq!(verdict(transient(Some(1)), MAX, MAX), Verdict::LastAttempt);
        assert_eq!(verdict(ErrorClass::TokenInvalid, MAX, MAX), Verdict::LastAttempt);
        assert_eq!(verdict(transient(None), MAX + 1, MAX), Verdict::LastAttempt, "a redelivery past the last");
    }
}
