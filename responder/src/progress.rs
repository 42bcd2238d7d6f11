//! Which parts of a split reply this responder has already shown, so that a
//! retry resumes after them instead of sending them again.
//!
//! Sending them again would not show anything twice (each part's Lark `uuid`
//! makes a second send a no-op for an hour), but a retry usually follows
//! Lark's rate limit, and every part resent spends the app's and the chat's
//! budget again and invites the next 429. The record is in memory: a
//! redelivery to another replica starts from the first part, which is still
//! correct (the uuids), only less frugal. An entry ends when its reply is
//! shown or dead-lettered; one whose reply went to another replica is
//! forgotten after Lark's uuid window.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long an entry is kept without news: Lark's uuid window.
const KEEP: Duration = Duration::from_secs(3600);
/// Above this many entries, old ones are swept on the next record.
const SWEEP_ABOVE: usize = 1024;

#[derive(Default)]
pub struct ShownParts {
    /// Reply source (the event's de-duplication key) → parts shown, and when.
    inner: Mutex<HashMap<String, (usize, Instant)>>,
}

impl ShownParts {
    /// The first part still to send for the reply to `source`.
    pub fn resume_from(&self, source: &str) -> usize {
        self.lock().get(source).map_or(0, |(shown, _)| *shown)
    }

    /// Records that the first `count` parts of the reply to `source` are shown.
    pub fn shown(&self, source: &str, count: usize) {
        let mut map = self.lock();
        if map.len() > SWEEP_ABOVE {
            map.retain(|_, (_, at)| at.elapsed() < KEEP);
        }
        map.insert(source.to_owned(), (count, Instant::now()));
    }

    /// The reply to `source` is finished (shown or dead-lettered).
    pub fn forget(&self, source: &str) {
        self.lock().remove(source);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (usize, Instant)>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_what_was_shown_until_forgotten() {
        let parts = ShownParts::default();
        assert_eq!(parts.resume_from("c:msg:om_1"), 0);
        parts.shown("c:msg:om_1", 2);
        assert_eq!(parts.resume_from("c:msg:om_1"), 2);
        assert_eq!(parts.resume_from("c:msg:om_2"), 0, "per reply");
        parts.forget("c:msg:om_1");
        assert_eq!(parts.resume_from("c:msg:om_1"), 0);
    }

    #[test]
    fn recent_entries_survive_a_sweep() {
        let parts = ShownParts::default();
        for i in 0..=SWEEP_ABOVE + 1 {
            parts.shown(&format!("k{i}"), 1);
        }
        assert_eq!(parts.resume_from("k0"), 1, "younger than an hour: kept");
    }
}
