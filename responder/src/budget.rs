//! Lark's per-app rate limits, kept by every responder replica together
//! without a shared counter.
//!
//! Lark limits each API per app, whichever replica calls it: sending
//! messages 50 a second and 1,000 a minute (`responder.app_per_second`,
//! `app_per_minute`), and each CardKit API (create a card, update an
//! element's text, change settings, replace a card) 50 a second and 1,000 a
//! minute ([`common::lark::cardkit::CARDKIT_LIMITS`]). Over a limit Lark
//! answers 429 / 99991400, and a streamed card stalls.
//!
//! **Shares.** Replies (and the drafts of their cards) are partitioned by
//! chat, and each partition is leased by one replica (`common::worker`). A
//! replica may spend `limit × (partitions it holds) / (all partitions)` in
//! any window (rounded down). A partition counts fully only once it has been
//! held for a whole window, ramping up linearly meanwhile: its previous
//! owner may have spent its share just before letting go, and the sends of
//! both must fit in one window. (In the minute window the ramp starts from
//! what the partition may send in a second, so a replica that has just
//! started is not silent for a minute; a hand-over can then add at most one
//! second's share to a minute.) A partition given up stops counting at once
//! (its work has ended before its lease is released), and a replica holding
//! nothing spends nothing. So the shares of all replicas add up to at most
//! the per-second limit at every moment, through rebalances, restarts and
//! crashes (a crashed replica's partitions wait out their lease first).
//!
//! **Windows.** Each limit is a sliding log of the sends in its window (a
//! second, a minute): exact, whatever the bursts, and it survives share
//! changes (no fresh limiter with a fresh burst).
//!
//! **Priorities.** Drafts of streamed answers ([`Class::Draft`]) may use at
//! most [`DRAFT_SHARE`] of an allowance: the rest is kept for answers (card
//! creation, final texts, messages), so a final answer never waits behind
//! drafts. A 99991400 that still happens (another app of the tenant, a clock
//! far off) pauses the API for Lark's `x-ogw-ratelimit-reset` ([`Budget::pause`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::topology::PARTITIONS;
use common::worker::Share;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
/// How often a wait looks again (the share may have grown meanwhile).
const RECHECK: Duration = Duration::from_millis(100);

/// How much longer than its window a send is remembered, as a share of it.
const MARGIN: f64 = 0.05;

/// The share of an allowance drafts may use; the rest is for answers.
pub const DRAFT_SHARE: f64 = 0.8;

/// The Lark APIs the responder paces, each with its own per-app limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Replies and messages into a chat (one limit for both).
    Messages,
    CardCreate,
    /// The text of a card element: drafts and the final text.
    CardContent,
    CardSettings,
    CardUpdate,
}

/// Who asks: an answer (never held back for drafts) or a draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Answer,
    Draft,
}

/// One API's limits: per second, per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_second: u32,
    pub per_minute: u32,
}

/// The partitions this replica holds, and since when.
#[derive(Debug, Clone)]
struct Holdings {
    since: [Option<Instant>; PARTITIONS as usize],
}

impl Holdings {
    fn none() -> Self {
        Self { since: [None; PARTITIONS as usize] }
    }

    /// Partitions held, each weighted by how much of `span` it has been
    /// held (a zero `span`: the partitions held, unweighted).
    fn weight(&self, now: Instant, span: Duration) -> f64 {
        self.since
            .iter()
            .flatten()
            .map(|at| {
                if span.is_zero() {
                    return 1.0;
                }
                (now.saturating_duration_since(*at).as_secs_f64() / span.as_secs_f64()).min(1.0)
            })
            .sum()
    }
}

/// The sends of one window.
#[derive(Debug)]
struct Window {
    span: Duration,
    limit: u32,
    sent: VecDeque<Instant>,
}

impl Window {
    fn new(span: Duration, limit: u32) -> Self {
        Self { span, limit, sent: VecDeque::new() }
    }

    /// Sends are remembered a little longer than the window: a request
    /// that reached Lark late (a busy runtime, the network) must not let
    /// the next one in early in Lark's own window.
    fn remembered(&self) -> Duration {
        self.span.mul_f64(1.0 + MARGIN)
    }

    fn forget_before(&mut self, now: Instant) {
        let kept = self.remembered();
        while self.sent.front().is_some_and(|t| now.saturating_duration_since(*t) >= kept) {
            self.sent.pop_front();
        }
    }

    /// What this replica may send in the window now, for `class`, and at
    /// least `floor` (before the class's cut).
    fn allowance(&self, holdings: &Holdings, now: Instant, class: Class, floor: f64) -> usize {
        let share = f64::from(self.limit) * holdings.weight(now, self.span) / f64::from(PARTITIONS);
        let full = f64::from(self.limit) * holdings.weight(now, Duration::ZERO) / f64::from(PARTITIONS);
        let share = share.max(floor.min(full));
        let share = match class {
            Class::Answer => share,
            Class::Draft => share * DRAFT_SHARE,
        };
        share.floor() as usize
    }

    /// The share of the window's limit now, before the class's cut.
    fn share(&self, holdings: &Holdings, now: Instant) -> f64 {
        f64::from(self.limit) * holdings.weight(now, self.span) / f64::from(PARTITIONS)
    }

    /// `Ok` when one more send fits; else how long until one may.
    fn check(&mut self, holdings: &Holdings, now: Instant, class: Class, floor: f64) -> Result<(), Duration> {
        self.forget_before(now);
        let allowed = self.allowance(holdings, now, class, floor);
        if self.sent.len() < allowed {
            return Ok(());
        }
        // The send whose expiry brings the count under the allowance.
        let wait = match self.sent.len().checked_sub(allowed).and_then(|i| self.sent.get(i)) {
            Some(t) => (*t + self.remembered()).saturating_duration_since(now),
            None => RECHECK,
        };
        Err(wait.clamp(Duration::from_millis(1), RECHECK))
    }
}

#[derive(Debug)]
struct ApiState {
    second: Window,
    minute: Window,
    paused_until: Option<Instant>,
}

struct Inner {
    holdings: Holdings,
    apis: HashMap<(String, Api), ApiState>,
}

/// Every app's budget in this replica; cheap to clone.
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Mutex<Inner>>,
    limits: Arc<HashMap<Api, Limits>>,
}

impl Budget {
    /// A budget with `messages` for [`Api::Messages`] and Lark's CardKit
    /// limits for the rest, holding no partition yet.
    pub fn new(messages: Limits) -> Self {
        let (per_second, per_minute) = common::lark::cardkit::CARDKIT_LIMITS;
        let cardkit = Limits { per_second, per_minute };
        let limits = HashMap::from([
            (Api::Messages, messages),
            (Api::CardCreate, cardkit),
            (Api::CardContent, cardkit),
            (Api::CardSettings, cardkit),
            (Api::CardUpdate, cardkit),
        ]);
        Self {
            inner: Arc::new(Mutex::new(Inner { holdings: Holdings::none(), apis: HashMap::new() })),
            limits: Arc::new(limits),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This replica now holds the partitions of `share`: new ones start
    /// ramping up, given-up ones stop counting at once.
    pub fn set_share(&self, share: Share) {
        self.set_share_at(share, Instant::now());
    }

    fn set_share_at(&self, share: Share, now: Instant) {
        let mut inner = self.lock();
        for (p, since) in inner.holdings.since.iter_mut().enumerate() {
            match (share.holds(p as u16), since.is_some()) {
                (true, false) => *since = Some(now),
                (false, true) => *since = None,
                _ => {}
            }
        }
    }

    /// Takes one send of `api` for `app` if it fits now; else how long to
    /// wait before asking again.
    pub fn try_take(&self, app: &str, api: Api, class: Class) -> Result<(), Duration> {
        self.try_take_at(app, api, class, Instant::now())
    }

    fn try_take_at(&self, app: &str, api: Api, class: Class, now: Instant) -> Result<(), Duration> {
        let limits = self.limits.get(&api).copied().unwrap_or(Limits { per_second: 1, per_minute: 1 });
        let mut inner = self.lock();
        let Inner { holdings, apis } = &mut *inner;
        let state = apis.entry((app.to_owned(), api)).or_insert_with(|| ApiState {
            second: Window::new(SECOND, limits.per_second),
            minute: Window::new(MINUTE, limits.per_minute),
            paused_until: None,
        });
        if let Some(until) = state.paused_until {
            if until > now {
                return Err((until - now).min(RECHECK));
            }
            state.paused_until = None;
        }
        state.second.check(holdings, now, class, 0.0)?;
        // A partition ramps up in the minute window from what it may send in
        // a second: a hand-over can add at most one second's share to a
        // minute, and a replica that starts is not silent for a minute.
        let second_share = state.second.share(holdings, now);
        state.minute.check(holdings, now, class, second_share)?;
        state.second.sent.push_back(now);
        state.minute.sent.push_back(now);
        Ok(())
    }

    /// Waits until one send of `api` for `app` fits, and takes it.
    pub async fn take(&self, app: &str, api: Api, class: Class) {
        while let Err(wait) = self.try_take(app, api, class) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Lark refused a call of `api` for `app` as over its limit: nothing more
    /// goes until `reset` has passed (Lark's `x-ogw-ratelimit-reset`, or a
    /// second when it gave none).
    pub fn pause(&self, app: &str, api: Api, reset: Option<Duration>) {
        let until = Instant::now() + reset.unwrap_or(SECOND).min(MINUTE);
        metrics::counter!(common::metric_names::LARK_RATE_LIMIT_WAITS, "app" => app.to_owned(), "api" => api.label())
            .increment(1);
        if let Some(state) = self.lock().apis.get_mut(&(app.to_owned(), api)) {
            state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
        }
    }

    /// Drafts per second an app may show through this replica, on average
    /// over the minute: what the scheduler spreads over the cards streaming
    /// at once. Every app has the same limits. (Steady: a partition ramping
    /// up counts fully, the wait for the ramp is the budget's own.)
    pub fn draft_rate(&self) -> f64 {
        let limits = self.limits.get(&Api::CardContent).copied().unwrap_or(Limits { per_second: 1, per_minute: 1 });
        let held = self.lock().holdings.weight(Instant::now(), Duration::ZERO) / f64::from(PARTITIONS);
        let per_second = f64::from(limits.per_second) * held;
        let per_minute = f64::from(limits.per_minute) * held / 60.0;
        (per_second.min(per_minute) * DRAFT_SHARE).max(0.1)
    }

    /// Forgets apps' windows that have emptied (keeps memory flat).
    pub fn forget_idle(&self) {
        let now = Instant::now();
        self.lock().apis.retain(|_, s| {
            s.minute.forget_before(now);
            !s.minute.sent.is_empty() || s.paused_until.is_some_and(|u| u > now)
        });
    }
}

impl Api {
    pub fn label(self) -> &'static str {
        match self {
            Api::Messages => "messages",
            Api::CardCreate => "card_create",
            Api::CardContent => "card_content",
            Api::CardSettings => "card_settings",
            Api::CardUpdate => "card_update",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = (1 << PARTITIONS) - 1;

    fn share(set: u64) -> Share {
        Share { held: set.count_ones() as u16, of: PARTITIONS, set }
    }

    fn budget(per_second: u32, per_minute: u32) -> Budget {
        Budget::new(Limits { per_second, per_minute })
    }

    /// Sends as fast as the budget lets through, from `start` for `length`
    /// in steps of 1 ms, and returns the times of the sends.
    fn drain(b: &Budget, class: Class, start: Instant, length: Duration) -> Vec<Instant> {
        let mut sent = Vec::new();
        let mut now = start;
        while now < start + length {
            if b.try_take_at("app", Api::Messages, class, now).is_ok() {
                sent.push(now);
            } else {
                now += Duration::from_millis(1);
            }
        }
        sent
    }

    fn worst(sends: &[Instant], window: Duration) -> usize {
        sends
            .iter()
            .map(|t| sends.iter().filter(|u| **u >= *t && u.duration_since(*t) < window).count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_replica_holding_everything_for_a_while_sends_at_the_limit_and_no_more() {
        let b = budget(5, 1000);
        let t0 = Instant::now();
        b.set_share_at(share(ALL), t0);
        let sends = drain(&b, Class::Answer, t0 + MINUTE, Duration::from_secs(5));
        assert!(worst(&sends, SECOND) <= 5, "{} in a second", worst(&sends, SECOND));
        assert!(sends.len() >= 20, "{} in 5 s", sends.len());
    }

    #[test]
    fn a_replica_holding_nothing_sends_nothing() {
        let b = budget(50, 1000);
        let t0 = Instant::now();
        assert!(drain(&b, Class::Answer, t0, Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn drafts_leave_room_for_answers() {
        let b = budget(50, 1000);
        let t0 = Instant::now();
        b.set_share_at(share(ALL), t0);
        let now = t0 + MINUTE;
        let drafts = (0..100).filter(|_| b.try_take_at("app", Api::Messages, Class::Draft, now).is_ok()).count();
        assert_eq!(drafts, 40, "drafts use 80 % of the second's 50");
        let answers = (0..100).filter(|_| b.try_take_at("app", Api::Messages, Class::Answer, now).is_ok()).count();
        assert_eq!(answers, 10, "answers still have the rest");
    }

    /// Three replicas share 16 partitions; one of them gives its partitions
    /// up to the others (a rebalance) right after spending its share: in no
    /// second do the three together send more than the limit.
    #[test]
    fn the_shares_of_all_replicas_hold_the_limit_through_a_rebalance() {
        for limit in [5u32, 50] {
            let t0 = Instant::now();
            let replicas = [budget(limit, 100_000), budget(limit, 100_000), budget(limit, 100_000)];
            let (a, b_, c) = (0b0000_0000_0011_1111u64, 0b0000_0111_1100_0000u64, 0b1111_1000_0000_0000u64);
            for (r, set) in replicas.iter().zip([a, b_, c]) {
                r.set_share_at(share(set), t0);
            }
            let mut all = Vec::new();
            let steady = t0 + Duration::from_secs(2);
            // Replica 0 spends its share, then hands its partitions to 1 and 2.
            let handover = steady + Duration::from_millis(900);
            let mut now = steady;
            while now < steady + Duration::from_secs(4) {
                if now >= handover {
                    replicas[0].set_share_at(share(0), now);
                    replicas[1].set_share_at(share(b_ | (a & 0b111)), now);
                    replicas[2].set_share_at(share(c | (a & !0b111)), now);
                }
                for r in &replicas {
                    while r.try_take_at("app", Api::Messages, Class::Answer, now).is_ok() {
                        all.push(now);
                    }
                }
                now += Duration::from_millis(1);
            }
            all.sort();
            assert!(worst(&all, SECOND) <= limit as usize, "limit {limit}: {} in one second", worst(&all, SECOND));
        }
    }

    #[test]
    fn a_pause_holds_everything_until_the_reset() {
        let b = budget(50, 1000);
        b.set_share_at(share(ALL), Instant::now() - MINUTE);
        assert!(b.try_take("app", Api::CardContent, Class::Answer).is_ok());
        b.pause("app", Api::CardContent, Some(Duration::from_secs(30)));
        assert!(b.try_take("app", Api::CardContent, Class::Answer).is_err());
        assert!(b.try_take("app", Api::CardCreate, Class::Answer).is_ok(), "other APIs go on");
        assert!(b.try_take("other", Api::CardContent, Class::Answer).is_ok(), "other apps go on");
    }

    #[test]
    fn the_draft_rate_follows_the_minute_limit_and_the_share() {
        let b = budget(50, 1000);
        b.set_share_at(share(ALL), Instant::now() - MINUTE);
        let full = b.draft_rate();
        assert!((full - 1000.0 / 60.0 * DRAFT_SHARE).abs() < 0.01, "{full}");
        b.set_share_at(share(0xFF), Instant::now());
        let half = b.draft_rate();
        assert!((half - full / 2.0).abs() < 0.01, "{half}");
    }
}
