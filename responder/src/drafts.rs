//! Drafts of streamed answers into their cards, at the replica that owns
//! the chat.
//!
//! A draft's subject carries its chat's replies partition, and this replica
//! subscribes to the drafts of exactly the partitions it holds (following
//! the worker's leases), so a card's drafts, its card start and its final
//! answer all reach one replica. The cards live in memory there
//! ([`crate::live_cards`]): one task per replica decides which card changes
//! next, within the app's budget for element updates ([`crate::budget`],
//! class `Draft`: the final answers keep the rest), and calls Lark without
//! waiting for the answer. Each draft carries the whole text so far, so a
//! draft dropped (too early, outdated, or refused) loses nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::envelope::{header, Draft, TRACEPARENT_HEADER};
use common::lark::api::LarkClients;
use common::lark::cardkit::CardFailure;
use common::metric_names::STREAMING_CARDS;
use common::topology::{keys, Topology, PARTITIONS};
use common::worker::Share;
use futures::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::budget::{Api, Budget, Class};
use crate::card_finish::STREAMING_WINDOW_MS;
use crate::card_start::count_card_op;
use crate::card_state::{now_ms, CardRecord, Cards, Phase, StoreError};
use crate::live_cards::{partition_of_chat, LiveCard, LiveCards, Offered, Update};
use crate::render::{card_chunks, ANSWER_ELEMENT};

/// Drafts received but not yet looked at, at most (more are dropped: the
/// next one carries the whole text).
const INBOX: usize = 4096;

/// The cards this replica updates, shared by the card start, the final
/// answer and the drafts task.
#[derive(Clone)]
pub struct Streams {
    pub cards: Arc<Mutex<LiveCards>>,
    /// Wakes the drafts task: a card arrived or an update ended.
    pub changed: Arc<Notify>,
}

impl Default for Streams {
    fn default() -> Self {
        Self { cards: Arc::new(Mutex::new(LiveCards::default())), changed: Arc::new(Notify::new()) }
    }
}

impl Streams {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, LiveCards> {
        self.cards.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts updating a card at this replica.
    pub fn start(&self, key: String, card: LiveCard) {
        self.lock().insert(key, card);
        self.changed.notify_one();
    }

    /// The card no longer takes drafts here (its final answer has it).
    pub fn settle(&self, key: &str) {
        self.lock().settle(key, Instant::now());
    }

    /// Takes over the card recorded under `key`, which another replica (or
    /// an earlier life of this one) was updating: a new block of sequences
    /// above any used before.
    pub async fn adopt(&self, cards: &Cards, key: &str, chat: &Chat<'_>) -> Result<Adopted, StoreError> {
        let mut block = (0, 0);
        let taken = cards
            .modify(key, |s| match adoption_block(s) {
                Some(reserved) => {
                    block = reserved;
                    true
                }
                None => false,
            })
            .await?;
        let Some((state, _)) = taken else {
            return Ok(match cards.read(key).await? {
                None => Adopted::NotStarted,
                Some(_) => Adopted::NotStreaming,
            });
        };
        let Some(card_id) = state.card_id else { return Ok(Adopted::NotStreaming) };
        let ids = (chat.channel.to_owned(), chat.app_id.to_owned(), card_id);
        let partition = partition_of_chat(chat.channel, chat.chat_id);
        self.start(key.to_owned(), LiveCard::new(ids, partition, state.opened_at, state.version, block));
        Ok(Adopted::Yes)
    }
}

/// Whose card: its channel, app and chat.
pub struct Chat<'a> {
    pub channel: &'a str,
    pub app_id: &'a str,
    pub chat_id: &'a str,
}

/// What [`Streams::adopt`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Adopted {
    /// The card streams here now.
    Yes,
    /// No card yet: its card start is on its way.
    NotStarted,
    /// The card is the final answer's, or the answer went out whole.
    NotStreaming,
}

pub struct Drafts {
    pub lark: LarkClients,
    pub cards: Cards,
    pub streams: Streams,
    pub budget: Budget,
    /// The shortest time between two updates of one card.
    pub floor: Duration,
}

impl Drafts {
    /// Receives and shows drafts until `shutdown`, subscribed to the
    /// partitions `share` says this replica holds.
    pub async fn run(
        self: Arc<Self>,
        client: async_nats::Client,
        topology: Topology,
        mut share: watch::Receiver<Share>,
        shutdown: CancellationToken,
    ) {
        let (tx, mut inbox) = mpsc::channel::<(Draft, Option<String>)>(INBOX);
        let mut subscriptions: HashMap<u16, JoinHandle<()>> = HashMap::new();
        let held = *share.borrow_and_update();
        follow(&client, &topology, held, &mut subscriptions, &tx);
        let mut janitor = tokio::time::interval(Duration::from_secs(5));
        let mut wake: Option<Instant> = None;
        loop {
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = share.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let held = *share.borrow_and_update();
                    follow(&client, &topology, held, &mut subscriptions, &tx);
                    self.streams.lock().keep_partitions(|p| held.holds(p));
                }
                Some((draft, traceparent)) = inbox.recv() => self.offer(draft, traceparent),
                _ = self.streams.changed.notified() => {}
                _ = janitor.tick() => self.tidy(),
                _ = sleep => {}
            }
            wake = self.show_due();
        }
        for (_, s) in subscriptions {
            s.abort();
        }
    }

    /// Keeps a draft for its card; a card this replica has not seen is
    /// looked up in the bucket (a new owner after a crash or rebalance).
    fn offer(self: &Arc<Self>, draft: Draft, traceparent: Option<String>) {
        let key = keys::card(&draft.channel, &draft.source);
        let offered = self.streams.lock().offer(&key, draft.clone(), Instant::now());
        if offered == Offered::Adopt {
            let span = tracing::info_span!("responder.adopt_card", card = %key, trace_id = tracing::field::Empty);
            if let Some(tp) = traceparent {
                let mut h = async_nats::HeaderMap::new();
                h.insert(TRACEPARENT_HEADER, tp.as_str());
                common::telemetry::continue_trace(&span, Some(&h));
            }
            let me = self.clone();
            tokio::spawn(async move { me.adopt(key, draft).await }.instrument(span));
        }
    }

    /// Takes over a card another replica was updating. Nothing when the
    /// card has not started yet (its card start will bring it) or no longer
    /// streams.
    async fn adopt(self: Arc<Self>, key: String, draft: Draft) {
        let Some(lark) = self.lark.get(&draft.channel) else { return };
        let chat = Chat { channel: &draft.channel, app_id: &lark.channel().app_id, chat_id: &draft.chat_id };
        match self.streams.adopt(&self.cards, &key, &chat).await {
            Ok(Adopted::Yes) => tracing::info!("carrying on a streaming card another replica started"),
            Ok(Adopted::NotStarted) => {}
            Ok(Adopted::NotStreaming) => self.streams.settle(&key),
            Err(e) => tracing::debug!(error = %e, "cannot take the card over; a later draft tries again"),
        }
    }

    /// Starts the updates that are due and fit the budget; when to look again.
    fn show_due(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        let (updates, wake) = self.streams.lock().due(
            now,
            self.floor,
            |_| self.budget.draft_rate(),
            |app| self.budget.try_take(app, Api::CardContent, Class::Draft),
        );
        for update in updates {
            let me = self.clone();
            let span = tracing::info_span!("responder.draft", card = %update.key, sequence = update.sequence);
            tokio::spawn(async move { me.show(update).await }.instrument(span));
        }
        wake
    }

    /// One update of a card's text.
    async fn show(self: Arc<Self>, u: Update) {
        let Some(lark) = self.lark.get(&u.channel) else { return };
        let result = match draft_text(&u.draft.text) {
            Some(text) => lark.set_card_text(&u.card_id, ANSWER_ELEMENT, &text, u.sequence).await,
            None => Ok(()),
        };
        count_card_op(&u.channel, "draft", &result);
        let shown = match &result {
            Ok(()) => true,
            Err(e) => match draft_failed(CardFailure::of(e)) {
                DraftFailed::Superseded => {
                    tracing::debug!(error = %e, "draft not shown; the card is the final answer's now");
                    self.streams.settle(&u.key);
                    return;
                }
                DraftFailed::TryNext => {
                    if e.is_rate_limited() {
                        self.budget.pause(&u.app_id, Api::CardContent, e.retry_after());
                    }
                    tracing::warn!(error = %e, "cannot update the streaming card; the next draft tries again");
                    false
                }
            },
        };
        self.streams.lock().updated(&u.key, u.draft, shown, Instant::now());
        self.streams.changed.notify_one();
    }

    /// Drops what waited too long and cards whose window closed; reports
    /// the cards streaming.
    fn tidy(&self) {
        let mut cards = self.streams.lock();
        cards.expire(Instant::now(), now_ms(), STREAMING_WINDOW_MS);
        metrics::gauge!(STREAMING_CARDS).set(cards.len() as f64);
        drop(cards);
        self.budget.forget_idle();
    }
}

/// The block of sequences a replica taking a card over reserves: none when
/// the card no longer streams (the final answer has it, or the answer went
/// out whole) or has no card yet.
fn adoption_block(s: &mut CardRecord) -> Option<(u64, u64)> {
    if s.phase != Phase::Streaming || s.card_id.is_none() {
        return None;
    }
    Some(s.reserve_block())
}

/// What a draft shows in its card: its first card's worth (the rest of a
/// long answer comes with the final answer). None when it has no words
/// yet: Lark refuses an empty text, and the next draft has words.
fn draft_text(text: &str) -> Option<String> {
    card_chunks(text).into_iter().next().filter(|t| !t.is_empty())
}

/// What a draft Lark did not show means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DraftFailed {
    /// A later operation went first (the final answer, or a new owner), or
    /// the streaming window closed: the card takes no more drafts here, and
    /// the final answer covers it.
    Superseded,
    /// Anything else: the next draft tries again (each carries the whole
    /// text so far).
    TryNext,
}

fn draft_failed(failure: CardFailure) -> DraftFailed {
    match failure {
        CardFailure::SequenceTaken | CardFailure::StreamingClosed => DraftFailed::Superseded,
        CardFailure::Transient | CardFailure::Refused => DraftFailed::TryNext,
    }
}

/// Subscribes to the drafts of the partitions `held` holds and of no other.
fn follow(
    client: &async_nats::Client,
    topology: &Topology,
    held: Share,
    subscriptions: &mut HashMap<u16, JoinHandle<()>>,
    tx: &mpsc::Sender<(Draft, Option<String>)>,
) {
    subscriptions.retain(|p, task| {
        let keep = held.holds(*p);
        if !keep {
            task.abort();
        }
        keep
    });
    for p in (0..PARTITIONS).filter(|p| held.holds(*p)) {
        if subscriptions.contains_key(&p) {
            continue;
        }
        let (client, subject, tx) = (client.clone(), topology.drafts_filter(p), tx.clone());
        subscriptions.insert(p, tokio::spawn(forward(client, subject, tx)));
    }
}

/// Forwards one partition's drafts to the drafts task until aborted.
async fn forward(client: async_nats::Client, subject: String, tx: mpsc::Sender<(Draft, Option<String>)>) {
    let mut subscription = loop {
        match client.subscribe(subject.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, %subject, "cannot subscribe to drafts; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    while let Some(message) = subscription.next().await {
        match serde_json::from_slice::<Draft>(&message.payload) {
            Ok(draft) => {
                let traceparent = header(message.headers.as_ref(), TRACEPARENT_HEADER).map(str::to_owned);
                // Full: this draft is dropped, the next one carries the whole text.
                let _ = tx.try_send((draft, traceparent));
            }
            Err(e) => tracing::warn!(error = %e, subject = %message.subject, "not a draft; ignored"),
        }
    }
}

#[cfg(test)]
mod tests;
