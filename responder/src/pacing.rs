//! Lark's send limits, kept before Lark enforces them: at most 5 messages per
//! second into one chat (code 230020 past that, shared by every bot in the
//! chat), 50 per second and 1,000 per minute per app. A burst in one chat waits
//! its turn on its own key, so other chats are not held up behind it.
//!
//! The limits hold for all responder replicas together (DESIGN.md, "Scaled
//! out"), without a shared counter:
//! - **per chat**: the replies queue is partitioned by chat and each partition
//!   is leased by one replica (`common::worker`), so every reply of a chat is
//!   sent by the one replica holding its partition, one at a time, through
//!   this replica's per-chat limiter;
//! - **per app**: each replica paces to its share of the app's limits, the
//!   limit times the partitions it holds over all partitions (rounded down, at
//!   least 1), recomputed whenever its leases change ([`Pacing::set_share`]).
//!   The shares of all replicas add up to at most the limit. A replica whose
//!   partitions carry more than their share of the traffic waits for its own
//!   share even if another replica is idle: the price of needing no
//!   coordination per message.
//!
//! A 230020 that slips through anyway (another bot in the chat, a lease
//! changing hands) is retried.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

const SECOND: Duration = Duration::from_secs(1);
/// How often a wait looks at the limiters again (they change with the share).
const RECHECK: Duration = Duration::from_millis(100);
const MINUTE: Duration = Duration::from_secs(60);

/// Per app id: (per second, per minute).
type AppLimiters = HashMap<String, (DefaultDirectRateLimiter, DefaultDirectRateLimiter)>;

#[derive(Clone)]
pub struct Pacing {
    per_chat: Arc<DefaultKeyedRateLimiter<String>>,
    per_app: Arc<RwLock<Arc<AppLimiters>>>,
    apps: Arc<Vec<String>>,
    /// Lark's per-app limits: per second, per minute.
    app_limits: (u32, u32),
    /// This replica's share of them now (per second, per minute).
    share: Arc<std::sync::Mutex<(u32, u32)>>,
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

/// `limit × held / of`, rounded down, at least 1: a replica's share. A
/// replica holding nothing (starting, or giving its partitions up while its
/// last sends finish) paces as if it held one partition.
pub fn share_of(limit: u32, held: u16, of: u16) -> u32 {
    let of = of.max(1);
    let held = held.clamp(1, of);
    let share = u64::from(limit) * u64::from(held) / u64::from(of);
    u32::try_from(share).unwrap_or(limit).max(1)
}

fn app_limiters(apps: &[String], (per_second, per_minute): (u32, u32), held: u16, of: u16) -> AppLimiters {
    let (second, minute) = (share_of(per_second, held, of), share_of(per_minute, held, of));
    apps.iter()
        .map(|app| {
            let s = governor::RateLimiter::direct(at_most(second, SECOND, second / 10));
            let m = governor::RateLimiter::direct(at_most(minute, MINUTE, minute / 20));
            (app.clone(), (s, m))
        })
        .collect()
}

impl Pacing {
    /// Pacing for a replica holding every partition (a single replica).
    pub fn new<'a>(
        apps: impl IntoIterator<Item = &'a str>,
        per_chat_per_second: u32,
        app_per_second: u32,
        app_per_minute: u32,
    ) -> Self {
        let apps: Vec<String> = apps.into_iter().map(str::to_owned).collect();
        let app_limits = (app_per_second, app_per_minute);
        Self {
            // One at a time into a chat: Lark counts every bot's messages there.
            per_chat: Arc::new(governor::RateLimiter::keyed(at_most(per_chat_per_second, SECOND, 1))),
            per_app: Arc::new(RwLock::new(Arc::new(app_limiters(&apps, app_limits, 1, 1)))),
            apps: Arc::new(apps),
            app_limits,
            share: Arc::new(std::sync::Mutex::new(app_limits)),
        }
    }

    /// This replica now holds `held` of `of` partitions: its share of the
    /// per-app limits follows.
    /// The limiters are rebuilt only when the share really changes: a new
    /// limiter starts with a full burst and no history, so rebuilding on
    /// every lease event would let bursts through while leases move.
    pub fn set_share(&self, held: u16, of: u16) {
        let (per_second, per_minute) = self.app_limits;
        let share = (share_of(per_second, held, of), share_of(per_minute, held, of));
        match self.share.lock() {
            Ok(current) if *current == share => return,
            Ok(mut current) => *current = share,
            Err(_) => {}
        }
        let limiters = Arc::new(app_limiters(&self.apps, self.app_limits, held, of));
        if let Ok(mut current) = self.per_app.write() {
            *current = limiters;
        }
    }

    /// Waits until one more message may go to `chat` of `app`. The app's
    /// limiters are looked up again while waiting, so a wait started under a
    /// smaller share ends under a larger one.
    pub async fn wait(&self, app: &str, chat: &str) {
        self.per_chat.until_key_ready(&chat.to_owned()).await;
        for minute in [false, true] {
            loop {
                let current = self.per_app.read().map(|l| l.clone()).ok();
                let Some((second, per_minute)) = current.as_ref().and_then(|l| l.get(app)) else { return };
                let limiter = if minute { per_minute } else { second };
                match limiter.check() {
                    Ok(()) => break,
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(limiter.clock().now());
                        tokio::time::sleep(wait.min(RECHECK)).await;
                    }
                }
            }
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

    #[test]
    fn the_shares_of_all_replicas_stay_within_the_app_limits() {
        for replicas in 1..=16u16 {
            // The leases split 16 partitions as evenly as they can.
            let held: Vec<u16> = (0..replicas).map(|i| 16 / replicas + u16::from(i < 16 % replicas)).collect();
            assert_eq!(held.iter().sum::<u16>(), 16);
            let second: u32 = held.iter().map(|h| share_of(50, *h, 16)).sum();
            let minute: u32 = held.iter().map(|h| share_of(1000, *h, 16)).sum();
            assert!(second <= 50, "{replicas} replicas: {second}/s");
            assert!(minute <= 1000, "{replicas} replicas: {minute}/min");
        }
        assert_eq!(share_of(50, 8, 16), 25);
        assert_eq!(share_of(50, 16, 16), 50);
        assert_eq!(share_of(50, 0, 16), 3, "holding nothing: one partition's share, for the last sends");
        assert_eq!(share_of(1000, 1, 16), 62);
        assert_eq!(share_of(4, 8, 16), 2);
    }

    #[test]
    fn a_replica_with_half_the_partitions_sends_half_as_fast() {
        use governor::clock::FakeRelativeClock;
        let (second, _) = (share_of(50, 8, 16), share_of(1000, 8, 16));
        let q = at_most(second, SECOND, second / 10);
        let clock = FakeRelativeClock::default();
        let limiter = governor::RateLimiter::direct_with_clock(q, clock.clone());
        let mut sent = 0;
        for _ in 0..1000 {
            if limiter.check().is_ok() {
                sent += 1;
            }
            clock.advance(Duration::from_millis(1));
        }
        assert!(sent <= 25, "{sent} in one second");
    }
}
