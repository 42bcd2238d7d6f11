//! When to dial Lark again, following Lark's `ClientConfig` as the official
//! SDKs do: after a connection that was up drops, a random wait up to
//! `ReconnectNonce` (so a fleet does not reconnect at once); after a failed
//! attempt, `ReconnectInterval`. A refusal (bad secret, too many connections,
//! app blocked) will not pass by itself: the wait doubles from
//! `ReconnectInterval` up to [`MAX_REFUSED_WAIT`], so the log and Lark see a
//! few attempts an hour, never a tight loop. `ReconnectCount` is not obeyed:
//! the bridge never stops trying (a service that silently stops receiving is
//! worse than one that keeps knocking).

use std::time::Duration;

use common::lark::long_connection::endpoint::ClientConfig;
use rand::Rng as _;

/// The longest wait between attempts after refusals.
pub const MAX_REFUSED_WAIT: Duration = Duration::from_secs(600);
/// A connection that drops sooner than this after it came up is flapping:
/// the next attempt waits `ReconnectInterval` as after a failure.
pub const MIN_HEALTHY_UP: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Backoff {
    refusals: u32,
}

impl Backoff {
    /// The connection came up: refusals are forgotten.
    pub fn connected(&mut self) {
        self.refusals = 0;
    }

    /// A connection that was up for `up` dropped.
    pub fn after_drop(&mut self, c: &ClientConfig, up: Duration) -> Duration {
        if up < MIN_HEALTHY_UP {
            return self.after_failure(c);
        }
        jitter(c.reconnect_nonce())
    }

    /// An attempt failed on Lark's side (busy, unreachable): try again later.
    pub fn after_failure(&mut self, c: &ClientConfig) -> Duration {
        c.reconnect_interval() + jitter(c.reconnect_nonce().min(c.reconnect_interval()) / 4)
    }

    /// Lark refused the app: wait longer each time.
    pub fn after_refusal(&mut self, c: &ClientConfig) -> Duration {
        let base = c.reconnect_interval();
        let cap = MAX_REFUSED_WAIT.max(base);
        let wait = base.saturating_mul(1u32 << self.refusals.min(16)).min(cap);
        self.refusals = self.refusals.saturating_add(1);
        wait + jitter(c.reconnect_nonce().min(base) / 4)
    }
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=max.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval: u64, nonce: u64) -> ClientConfig {
        ClientConfig { reconnect_interval: interval, reconnect_nonce: nonce, ..Default::default() }
    }

    #[test]
    fn after_a_drop_a_random_wait_up_to_the_nonce() {
        let mut b = Backoff::default();
        for _ in 0..100 {
            assert!(b.after_drop(&config(120, 30), Duration::from_secs(60)) <= Duration::from_secs(30));
        }
        assert_eq!(b.after_drop(&config(120, 0), Duration::from_secs(60)), Duration::ZERO);
        assert!(b.after_drop(&config(120, 0), Duration::from_secs(1)) >= Duration::from_secs(120), "flapping");
    }

    #[test]
    fn refusals_double_the_wait_up_to_the_cap_and_reset_once_connected() {
        let mut b = Backoff::default();
        let c = config(2, 0);
        let waits: Vec<u64> = (0..12).map(|_| b.after_refusal(&c).as_secs()).collect();
        assert_eq!(&waits[..5], &[2, 4, 8, 16, 32]);
        assert!(waits.iter().all(|w| *w <= MAX_REFUSED_WAIT.as_secs()));
        assert_eq!(*waits.last().expect("waits"), MAX_REFUSED_WAIT.as_secs());
        b.connected();
        assert_eq!(b.after_refusal(&c), Duration::from_secs(2));
    }

    #[test]
    fn never_a_tight_loop() {
        let mut b = Backoff::default();
        let zero = config(0, 0);
        assert!(b.after_failure(&zero) >= Duration::from_secs(1));
        assert!(b.after_refusal(&zero) >= Duration::from_secs(1));
    }
}
