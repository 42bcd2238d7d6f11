//! Drafts of streamed answers into their cards.
//!
//! Drafts arrive on core NATS in a queue group, so each reaches one replica,
//! whichever. Each replica keeps, per card, only the newest draft it has not
//! shown yet, and one task per card shows it when the card may change again:
//! at most every `responder.stream_update_ms` for the card across every
//! replica (the time of the card's last operation is in its shared state, and
//! each operation reserves its sequence there by compare-and-set). A draft
//! older than the one shown, or arriving once the final answer has the card,
//! is dropped: each carries the whole text so far, so nothing is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::envelope::{header, Draft, TRACEPARENT_HEADER};
use common::lark::api::LarkClients;
use common::lark::cardkit::CardFailure;
use common::topology::{keys, Topology};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::card_finish::STREAMING_WINDOW_MS;
use crate::card_start::count_card_op;
use crate::card_state::{now_ms, Cards, Phase};
use crate::render::{card_chunks, ANSWER_ELEMENT};

pub struct Drafts {
    pub lark: LarkClients,
    pub cards: Cards,
    /// At most one card operation this often per card.
    pub every: Duration,
    /// Per card key: the newest draft not shown yet. A key is present while
    /// its task runs.
    pending: Mutex<HashMap<String, Option<Draft>>>,
}

/// What became of one draft.
enum Shown {
    /// Shown, dropped as outdated, or failed (the next draft tries again).
    Settled,
    /// The card changed too recently: try again after this.
    Later(Duration),
}

impl Drafts {
    pub fn new(lark: LarkClients, cards: Cards, every: Duration) -> Arc<Self> {
        Arc::new(Self { lark, cards, every, pending: Mutex::new(HashMap::new()) })
    }

    /// Receives drafts until `shutdown`.
    pub async fn run(self: Arc<Self>, client: async_nats::Client, topology: Topology, shutdown: CancellationToken) {
        let mut subscription = loop {
            match client.queue_subscribe(topology.drafts_filter(), topology.drafts_queue_group()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to drafts; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        };
        loop {
            let message = tokio::select! {
                m = subscription.next() => m,
                _ = shutdown.cancelled() => break,
            };
            let Some(message) = message else { break };
            match serde_json::from_slice::<Draft>(&message.payload) {
                Ok(draft) => {
                    let traceparent = header(message.headers.as_ref(), TRACEPARENT_HEADER).map(str::to_owned);
                    self.offer(draft, traceparent);
                }
                Err(e) => tracing::warn!(error = %e, subject = %message.subject, "not a draft; ignored"),
            }
        }
        let _ = subscription.unsubscribe().await;
    }

    /// Keeps `draft` as its card's newest; starts the card's task if none runs.
    fn offer(self: &Arc<Self>, draft: Draft, traceparent: Option<String>) {
        let key = keys::card(&draft.channel, &draft.source);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = pending.get_mut(&key) {
            if slot.as_ref().is_none_or(|d| d.version() < draft.version()) {
                *slot = Some(draft);
            }
            return;
        }
        pending.insert(key.clone(), Some(draft));
        drop(pending);
        let span = tracing::info_span!("responder.drafts", card = %key, trace_id = tracing::field::Empty);
        if let Some(tp) = traceparent {
            let mut h = async_nats::HeaderMap::new();
            h.insert(TRACEPARENT_HEADER, tp.as_str());
            common::telemetry::continue_trace(&span, Some(&h));
        }
        let me = self.clone();
        tokio::spawn(async move { me.show_card(key).await }.instrument(span));
    }

    /// The card's task: shows its newest draft whenever the card may change,
    /// until no draft waits.
    async fn show_card(self: Arc<Self>, key: String) {
        loop {
            let next = {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                match pending.get_mut(&key).and_then(Option::take) {
                    Some(d) => d,
                    None => {
                        pending.remove(&key);
                        return;
                    }
                }
            };
            match self.show(&key, &next).await {
                Shown::Settled => tokio::time::sleep(self.every).await,
                Shown::Later(wait) => {
                    {
                        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(slot @ None) = pending.get_mut(&key) {
                            *slot = Some(next);
                        }
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn show(&self, key: &str, draft: &Draft) -> Shown {
        let Some(lark) = self.lark.get(&draft.channel) else { return Shown::Settled };
        let text = card_chunks(&draft.text).swap_remove(0);
        if text.is_empty() {
            return Shown::Settled; // Lark refuses an empty text
        }
        let every_ms = self.every.as_millis() as u64;
        let mut sequence = 0;
        let mut outdated = false;
        let mut wait = None;
        let reserved = self
            .cards
            .modify(key, |s| {
                (outdated, wait) = (false, None);
                // Not started yet (its card start is on its way), or no longer streaming.
                if s.phase != Phase::Streaming || s.card_id.is_none() || s.version >= draft.version() {
                    outdated = true;
                    return false;
                }
                let now = now_ms();
                if now.saturating_sub(s.opened_at) >= STREAMING_WINDOW_MS {
                    outdated = true; // the final answer replaces the card
                    return false;
                }
                let since = now.saturating_sub(s.last_op_at);
                if since < every_ms {
                    wait = Some(Duration::from_millis(every_ms - since));
                    return false;
                }
                sequence = s.reserve(1);
                s.version = draft.version();
                true
            })
            .await;
        let state = match reserved {
            Ok(Some((state, _))) => state,
            Ok(None) => {
                return match wait {
                    Some(w) if !outdated => Shown::Later(w),
                    _ => Shown::Settled,
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot reserve a card update; the next draft tries again");
                return Shown::Settled;
            }
        };
        let Some(card_id) = state.card_id.as_deref() else { return Shown::Settled };
        let result = lark.set_card_text(card_id, ANSWER_ELEMENT, &text, sequence).await;
        count_card_op(&draft.channel, "draft", &result);
        if let Err(e) = result {
            match CardFailure::of(&e) {
                // A later operation went first, or the window closed: the final answer covers it.
                CardFailure::SequenceTaken | CardFailure::StreamingClosed => {
                    tracing::debug!(error = %e, "draft not shown")
                }
                _ => tracing::warn!(error = %e, "cannot update the streaming card; the next draft tries again"),
            }
        }
        Shown::Settled
    }
}
