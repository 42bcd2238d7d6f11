//! The streaming cards this replica is updating, in memory, and when each
//! may change next.
//!
//! A card lives here at the replica that owns its chat's replies partition:
//! the card start registers it, drafts (which reach the same replica) wait
//! in it, and the final answer takes it out. Nothing is written per draft:
//! the `{ns}_cards` record (`crate::card_state`) holds the card's id, phase
//! and a block of reserved sequences, enough for a new owner to carry on
//! after a crash or a rebalance with sequences above any this one used.
//!
//! **When a card changes.** The first text goes out with the card itself.
//! After that a card is updated less often as its answer grows older (Lark
//! types appended text out by itself, so fewer, larger updates look as
//! smooth), and less often when many cards share the app's budget
//! ([`interval`]); among the cards that are due, the most overdue goes first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::envelope::Draft;

/// At most this many cards streaming at once in one replica; drafts of more
/// are not shown (their final answers still are).
pub const MAX_LIVE: usize = 10_000;
/// Drafts waiting for their card start, at most.
pub const MAX_WAITING: usize = 10_000;
/// A draft whose card never started is dropped after this.
const WAITING_FOR: Duration = Duration::from_secs(60);
/// How often a draft of a card this replica has not seen asks the bucket.
const ADOPT_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two updates of one card when the budget allows.
pub const MAX_INTERVAL: Duration = Duration::from_secs(6);
/// An update waits this share of the answer's age: at 0.75, a 20-second
/// answer updates about 8 times.
const AGE_FACTOR: f64 = 0.75;

/// How long after its last update a card may change again: at least
/// `floor` (`responder.stream_update_ms`), then three quarters of the
/// answer's age up to [`MAX_INTERVAL`]; and never more often than the
/// app's draft budget spread over the `streaming` cards sharing it.
pub fn interval(age: Duration, floor: Duration, streaming: usize, draft_rate: f64) -> Duration {
    let by_age = age.mul_f64(AGE_FACTOR).clamp(floor, MAX_INTERVAL.max(floor));
    let by_budget = Duration::from_secs_f64(streaming as f64 / draft_rate.max(0.01));
    by_age.max(by_budget)
}

/// One card streaming at this replica.
#[derive(Debug)]
pub struct LiveCard {
    pub channel: String,
    pub app_id: String,
    pub card_id: String,
    pub partition: u16,
    /// When streaming mode was turned on (Unix ms): Lark closes it 10 minutes later.
    pub opened_at: u64,
    /// When the card showed its first text: the answer's age counts from it.
    started: Instant,
    /// The next sequence of the block reserved for this replica, and the last.
    next_sequence: u64,
    last_sequence: u64,
    /// The draft shown last ([`Draft::version`]).
    shown: (u64, u64),
    shown_at: Instant,
    /// The newest draft not shown yet.
    pending: Option<Draft>,
    /// An update is on its way to Lark.
    in_flight: bool,
}

impl LiveCard {
    pub fn new(
        (channel, app_id, card_id): (String, String, String),
        partition: u16,
        opened_at: u64,
        shown: (u64, u64),
        sequences: (u64, u64),
    ) -> Self {
        let now = Instant::now();
        Self {
            channel,
            app_id,
            card_id,
            partition,
            opened_at,
            started: now,
            next_sequence: sequences.0,
            last_sequence: sequences.1,
            shown,
            shown_at: now,
            pending: None,
            in_flight: false,
        }
    }
}

/// An update to make now: the card's newest draft, with its sequence.
#[derive(Debug)]
pub struct Update {
    pub key: String,
    pub channel: String,
    pub app_id: String,
    pub card_id: String,
    pub sequence: u64,
    pub draft: Draft,
}

/// What [`LiveCards::offer`] did with a draft.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// Kept for its card.
    Kept,
    /// Its card is not here: ask the bucket whether it is streaming.
    Adopt,
    /// Dropped (older than the one shown, or too many cards).
    Dropped,
}

/// The cards, and the drafts of cards not here yet.
#[derive(Default)]
pub struct LiveCards {
    cards: HashMap<String, LiveCard>,
    /// Per card key: its newest draft, when it came, and when the bucket was
    /// last asked about it.
    waiting: HashMap<String, (Draft, Instant, Option<Instant>)>,
    /// Cards known not to stream any more (plain, final, done), and since when.
    settled: HashMap<String, Instant>,
}

impl LiveCards {
    pub fn len(&self) -> usize {
        self.cards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.cards.contains_key(key)
    }

    /// Starts updating `card` (from its card start, or adopted from the
    /// bucket); a draft that waited for it is kept.
    pub fn insert(&mut self, key: String, mut card: LiveCard) {
        if self.cards.len() >= MAX_LIVE && !self.cards.contains_key(&key) {
            tracing::warn!(
                cards = self.cards.len(),
                "too many cards streaming at once; this one shows its final answer only"
            );
            return;
        }
        if let Some((draft, _, _)) = self.waiting.remove(&key) {
            if draft.version() > card.shown {
                card.pending = Some(draft);
            }
        }
        self.settled.remove(&key);
        self.cards.insert(key, card);
    }

    /// Keeps `draft` as its card's newest.
    pub fn offer(&mut self, key: &str, draft: Draft, now: Instant) -> Offered {
        if let Some(card) = self.cards.get_mut(key) {
            let newer =
                draft.version() > card.shown && card.pending.as_ref().is_none_or(|p| p.version() < draft.version());
            if !newer {
                return Offered::Dropped;
            }
            card.pending = Some(draft);
            return Offered::Kept;
        }
        if self.settled.get(key).is_some_and(|at| now.duration_since(*at) < WAITING_FOR * 10) {
            return Offered::Dropped;
        }
        let full = self.waiting.len() >= MAX_WAITING;
        match self.waiting.get_mut(key) {
            Some((kept, at, asked)) => {
                if kept.version() < draft.version() {
                    (*kept, *at) = (draft, now);
                }
                if asked.is_none_or(|a| now.duration_since(a) >= ADOPT_EVERY) {
                    *asked = Some(now);
                    return Offered::Adopt;
                }
                Offered::Kept
            }
            None if full => Offered::Dropped,
            None => {
                self.waiting.insert(key.to_owned(), (draft, now, Some(now)));
                Offered::Adopt
            }
        }
    }

    /// The card will not stream here any more (the final answer took it, or
    /// the bucket says it is not streaming): its drafts are dropped.
    pub fn settle(&mut self, key: &str, now: Instant) -> Option<LiveCard> {
        self.waiting.remove(key);
        self.settled.insert(key.to_owned(), now);
        self.cards.remove(key)
    }

    /// Forgets every card and draft of partitions this replica gave up.
    pub fn keep_partitions(&mut self, holds: impl Fn(u16) -> bool) {
        self.cards.retain(|_, c| holds(c.partition));
        self.waiting.retain(|_, (d, _, _)| holds(partition_of_chat(&d.channel, &d.chat_id)));
    }

    /// Forgets drafts that waited too long, cards whose streaming window has
    /// closed (their final answer replaces the whole card), old settled keys.
    pub fn expire(&mut self, now: Instant, now_ms: u64, window_ms: u64) {
        self.waiting.retain(|_, (_, at, _)| now.duration_since(*at) < WAITING_FOR);
        self.cards.retain(|_, c| now_ms.saturating_sub(c.opened_at) < window_ms);
        self.settled.retain(|_, at| now.duration_since(*at) < WAITING_FOR * 10);
    }

    /// Streaming cards with a draft to show, per app.
    fn streaming_per_app(&self) -> HashMap<&str, usize> {
        let mut n: HashMap<&str, usize> = HashMap::new();
        for c in self.cards.values() {
            *n.entry(c.app_id.as_str()).or_default() += 1;
        }
        n
    }

    /// The cards due for an update now, most overdue first, each given its
    /// next sequence; `take` says whether the app's budget has room (and
    /// when it stops, the rest of that app waits). Also returns when to
    /// look again.
    pub fn due(
        &mut self,
        now: Instant,
        floor: Duration,
        draft_rate: impl Fn(&str) -> f64,
        mut take: impl FnMut(&str) -> Result<(), Duration>,
    ) -> (Vec<Update>, Option<Instant>) {
        let streaming: HashMap<String, usize> =
            self.streaming_per_app().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let mut due: Vec<(Instant, String)> = Vec::new();
        let mut wake: Option<Instant> = None;
        for (key, c) in &self.cards {
            if c.in_flight || c.pending.is_none() {
                continue;
            }
            let n = streaming.get(&c.app_id).copied().unwrap_or(1);
            // The age when it last changed: the intervals grow geometrically.
            let age = c.shown_at.saturating_duration_since(c.started);
            let at = c.shown_at + interval(age, floor, n, draft_rate(&c.app_id));
            if at <= now {
                due.push((at, key.clone()));
            } else {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        due.sort();
        let mut updates = Vec::new();
        let mut exhausted: Vec<String> = Vec::new();
        for (_, key) in due {
            let Some(c) = self.cards.get_mut(&key) else { continue };
            if exhausted.contains(&c.app_id) {
                continue;
            }
            if c.next_sequence > c.last_sequence {
                // The block is used up (a very long answer): the final answer
                // reserves its own above it.
                continue;
            }
            if let Err(wait) = take(&c.app_id) {
                let at = now + wait;
                wake = Some(wake.map_or(at, |w| w.min(at)));
                exhausted.push(c.app_id.clone());
                continue;
            }
            let Some(draft) = c.pending.take() else { continue };
            c.in_flight = true;
            let sequence = c.next_sequence;
            c.next_sequence += 1;
            updates.push(Update {
                key,
                channel: c.channel.clone(),
                app_id: c.app_id.clone(),
                card_id: c.card_id.clone(),
                sequence,
                draft,
            });
        }
        (updates, wake)
    }

    /// An update ended. Shown: the card may change again after its interval.
    /// Not shown: its draft is offered again unless a newer one came.
    pub fn updated(&mut self, key: &str, draft: Draft, shown: bool, now: Instant) {
        let Some(c) = self.cards.get_mut(key) else { return };
        c.in_flight = false;
        c.shown_at = now;
        if shown {
            c.shown = c.shown.max(draft.version());
        } else if c.pending.as_ref().is_none_or(|p| p.version() < draft.version()) {
            c.pending = Some(draft);
        }
        if c.pending.as_ref().is_some_and(|p| p.version() <= c.shown) {
            c.pending = None;
        }
    }
}

/// The replies partition of a chat: where its replies, card starts and
/// drafts go.
pub fn partition_of_chat(channel: &str, chat_id: &str) -> u16 {
    common::topology::partition_of(channel, &common::conversation::short_hash(&[chat_id.as_bytes()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: Duration = Duration::from_millis(300);

    fn draft(n: u64, text: &str) -> Draft {
        Draft {
            channel: "c".into(),
            source: "s".into(),
            reply_to: "om_1".into(),
            chat_id: "oc_1".into(),
            in_thread: false,
            run: 1,
            n,
            first_text_at: 0,
            text: text.into(),
        }
    }

    fn card() -> LiveCard {
        LiveCard::new(("c".into(), "app".into(), "card".into()), 0, common::envelope::unix_ms(), (1, 0), (1, 1000))
    }

    /// A lone answer of `secs` seconds with a draft every 100 ms: how many
    /// updates the schedule makes.
    fn updates_of_a_lone_answer(secs: u64) -> usize {
        let mut cards = LiveCards::default();
        let t0 = Instant::now();
        let mut c = card();
        (c.started, c.shown_at) = (t0, t0);
        cards.insert("k".into(), c);
        let mut shown = 0;
        for step in 1..=(secs * 10) {
            let now = t0 + Duration::from_millis(100 * step);
            cards.offer("k", draft(step, "text"), now);
            let (updates, _) = cards.due(now, FLOOR, |_| 13.3, |_| Ok(()));
            for u in updates {
                shown += 1;
                cards.updated(&u.key, u.draft, true, now);
            }
        }
        shown
    }

    #[test]
    fn a_lone_twenty_second_answer_grows_in_few_updates() {
        let n = updates_of_a_lone_answer(20);
        // Card, message, final text and close add 4: at most 15 calls in all,
        // and at least 5 texts (the first comes with the card).
        assert!((4..=9).contains(&n), "{n} updates");
    }

    #[test]
    fn a_long_answer_still_grows_every_few_seconds() {
        let n = updates_of_a_lone_answer(120);
        assert!(n >= 120 / 6, "{n} updates in two minutes");
    }

    #[test]
    fn the_interval_grows_with_age_and_with_the_cards_sharing_the_budget() {
        assert_eq!(interval(Duration::ZERO, FLOOR, 1, 13.3), FLOOR);
        assert_eq!(interval(Duration::from_secs(4), FLOOR, 1, 13.3), Duration::from_secs(3));
        assert_eq!(interval(Duration::from_secs(100), FLOOR, 1, 13.3), MAX_INTERVAL);
        let forty = interval(Duration::ZERO, FLOOR, 40, 13.3);
        assert!(forty >= Duration::from_secs(3), "{forty:?}");
    }

    #[test]
    fn the_most_overdue_card_goes_first_and_the_budget_stops_the_rest() {
        let mut cards = LiveCards::default();
        let t0 = Instant::now();
        for (i, late) in [(0u64, 100u64), (1, 900), (2, 500)] {
            let mut c = card();
            (c.started, c.shown_at) = (t0, t0 - Duration::from_millis(late));
            cards.insert(format!("k{i}"), c);
            cards.offer(&format!("k{i}"), draft(2, "t"), t0);
        }
        let mut budget = 2;
        let (updates, wake) = cards.due(
            t0,
            Duration::from_millis(50),
            |_| 100.0,
            |_| {
                if budget == 0 {
                    return Err(Duration::from_millis(40));
                }
                budget -= 1;
                Ok(())
            },
        );
        let keys: Vec<&str> = updates.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert_eq!(wake, Some(t0 + Duration::from_millis(40)));
        assert_eq!(updates[0].sequence, 1);
    }

    #[test]
    fn an_older_draft_never_replaces_a_newer_one_and_a_failed_update_is_offered_again() {
        let mut cards = LiveCards::default();
        let now = Instant::now();
        cards.insert("k".into(), card());
        assert_eq!(cards.offer("k", draft(5, "five"), now), Offered::Kept);
        assert_eq!(cards.offer("k", draft(3, "three"), now), Offered::Dropped);
        let (updates, _) = cards.due(now + Duration::from_secs(1), FLOOR, |_| 100.0, |_| Ok(()));
        let u = updates.into_iter().next().expect("due");
        assert_eq!(u.draft.n, 5);
        cards.updated("k", u.draft, false, now);
        let (again, _) = cards.due(now + Duration::from_secs(2), FLOOR, |_| 100.0, |_| Ok(()));
        assert_eq!(again.first().map(|u| (u.draft.n, u.sequence)), Some((5, 2)), "same text, next sequence");
    }

    #[test]
    fn drafts_of_an_unknown_card_wait_for_it_and_ask_the_bucket_at_most_every_second() {
        let mut cards = LiveCards::default();
        let now = Instant::now();
        assert_eq!(cards.offer("k", draft(2, "two"), now), Offered::Adopt);
        assert_eq!(cards.offer("k", draft(3, "three"), now + Duration::from_millis(100)), Offered::Kept);
        assert_eq!(cards.offer("k", draft(4, "four"), now + Duration::from_millis(1100)), Offered::Adopt);
        cards.insert("k".into(), card());
        let (updates, _) = cards.due(now + Duration::from_secs(2), FLOOR, |_| 100.0, |_| Ok(()));
        assert_eq!(updates.first().map(|u| u.draft.n), Some(4), "the card took the waiting draft");
        cards.settle("k", now);
        assert_eq!(cards.offer("k", draft(9, "nine"), now), Offered::Dropped, "settled: no bucket read per draft");
    }

    #[test]
    fn giving_a_partition_up_forgets_its_cards() {
        let mut cards = LiveCards::default();
        cards.insert("k".into(), card());
        cards.keep_partitions(|p| p != 0);
        assert!(!cards.contains("k"));
    }
}
