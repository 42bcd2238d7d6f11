//! The streaming card of one answer, as recorded in the `{ns}_cards` bucket
//! (key `common::topology::keys::card`): what a responder replica needs to
//! carry an answer's card on after another replica crashed or gave the
//! chat's partition up.
//!
//! Every change is a compare-and-set on the key's revision, so replicas agree
//! on one card per answer. Sequences (which Lark requires to rise strictly
//! across every operation on a card) are reserved here in blocks
//! ([`SEQUENCE_BLOCK`]): the replica updating the card spends its block in
//! memory (`crate::live_cards`), and whoever comes next (a new owner, or the
//! final answer) reserves above it. The phase is what keeps a late draft
//! from overwriting the final answer: once the final answer has taken the
//! card, no replica adopts it for drafts again.

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

/// Where an answer's card stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Drafts update the card.
    Streaming,
    /// The final answer has taken over the card; drafts are ignored.
    Final,
    /// Everything of the answer is shown.
    Done,
    /// No card: the answer goes (or went) out whole, as a non-streamed reply
    /// (CardKit refused, or the final answer came before any draft).
    Plain,
}

/// A streamed answer's card, as recorded in `{ns}_cards`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRecord {
    pub phase: Phase,
    #[serde(default)]
    pub card_id: Option<String>,
    /// The last sequence reserved on the card.
    #[serde(default)]
    pub sequence: u64,
    /// The last draft shown ([`common::envelope::Draft::version`]).
    #[serde(default)]
    pub version: (u64, u64),
    /// The message showing the card has been sent.
    #[serde(default)]
    pub sent: bool,
    /// When streaming mode was turned on (Unix ms): it closes 10 minutes later.
    #[serde(default)]
    pub opened_at: u64,
    /// Parts of the final answer shown: the card, then further messages.
    #[serde(default)]
    pub parts_shown: usize,
}

impl CardRecord {
    pub fn plain() -> Self {
        Self {
            phase: Phase::Plain,
            card_id: None,
            sequence: 0,
            version: (0, 0),
            sent: false,
            opened_at: 0,
            parts_shown: 0,
        }
    }

    /// A new card's record: the first block of sequences is the creator's.
    pub fn streaming(card_id: String, version: (u64, u64)) -> Self {
        let now = now_ms();
        Self {
            phase: Phase::Streaming,
            card_id: Some(card_id),
            sequence: SEQUENCE_BLOCK,
            version,
            sent: false,
            opened_at: now,
            parts_shown: 0,
        }
    }

    /// Reserves the next block of sequences for the replica that will
    /// update the card: (first, last).
    pub fn reserve_block(&mut self) -> (u64, u64) {
        let first = self.reserve(SEQUENCE_BLOCK);
        (first, self.sequence)
    }

    /// Reserves the next `n` sequences; returns the first.
    pub fn reserve(&mut self, n: u64) -> u64 {
        let first = self.sequence + 1;
        self.sequence += n;
        first
    }
}

/// Sequences a replica reserves at once for the drafts of one card: more
/// than a card can take in its 10-minute streaming window at the per-card
/// limit's pace of the drafts (an update every 300 ms at the most).
pub const SEQUENCE_BLOCK: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
#[error("the streaming-cards bucket: {0}")]
pub struct StoreError(String);

/// The bucket, with compare-and-set helpers.
#[derive(Clone)]
pub struct Cards {
    kv: kv::Store,
}

/// A record read at a revision.
pub type Read = Option<(CardRecord, u64)>;

impl Cards {
    pub fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    pub async fn read(&self, key: &str) -> Result<Read, StoreError> {
        let entry = self.kv.entry(key).await.map_err(|e| StoreError(e.to_string()))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else { return Ok(None) };
        let state = serde_json::from_slice(&entry.value)
            .map_err(|e| StoreError(format!("key {key} holds no card state: {e}")))?;
        Ok(Some((state, entry.revision)))
    }

    /// Writes a first record: its revision, or `None` when another replica
    /// wrote one first.
    pub async fn create(&self, key: &str, state: &CardRecord) -> Result<Option<u64>, StoreError> {
        match self.kv.create(key, to_bytes(state)?).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(StoreError(e.to_string())),
        }
    }

    /// Replaces the record read at `revision`: the new revision, or `None`
    /// when it changed since.
    pub async fn update(&self, key: &str, state: &CardRecord, revision: u64) -> Result<Option<u64>, StoreError> {
        match self.kv.update(key, to_bytes(state)?, revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(StoreError(e.to_string())),
        }
    }

    /// Applies `change` to the current record until a compare-and-set wins
    /// (a few tries): the record written and its revision, or `None` when
    /// there is no record or `change` declines (returns `false`).
    pub async fn modify(
        &self,
        key: &str,
        mut change: impl FnMut(&mut CardRecord) -> bool,
    ) -> Result<Option<(CardRecord, u64)>, StoreError> {
        for _ in 0..5 {
            let Some((mut state, revision)) = self.read(key).await? else { return Ok(None) };
            if !change(&mut state) {
                return Ok(None);
            }
            if let Some(revision) = self.update(key, &state, revision).await? {
                return Ok(Some((state, revision)));
            }
        }
        Err(StoreError(format!("key {key} keeps changing under this replica")))
    }
}

fn to_bytes(state: &CardRecord) -> Result<bytes::Bytes, StoreError> {
    serde_json::to_vec(state).map(Into::into).map_err(|e| StoreError(e.to_string()))
}

pub use common::envelope::unix_ms as now_ms;

/// Channels whose card CardKit refused lately: their answers go out whole
/// without asking CardKit again until [`REFUSAL_MEMORY`] has passed (then
/// one answer tries again, so a scope granted meanwhile is picked up).
#[derive(Default)]
pub struct CardkitRefusals(std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>);

/// How long a CardKit refusal is remembered.
pub const REFUSAL_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);

impl CardkitRefusals {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::time::Instant>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn record(&self, channel: &str) {
        self.lock().insert(channel.to_owned(), std::time::Instant::now());
    }

    pub fn recently(&self, channel: &str) -> bool {
        self.lock().get(channel).is_some_and(|at| at.elapsed() < REFUSAL_MEMORY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_rise_above_every_block_reserved_before() {
        let mut s = CardRecord::streaming("c".into(), (1, 1));
        assert_eq!(s.sequence, SEQUENCE_BLOCK, "the creator's block: 1..=SEQUENCE_BLOCK");
        assert_eq!(s.reserve_block(), (SEQUENCE_BLOCK + 1, 2 * SEQUENCE_BLOCK), "a new owner's block");
        assert_eq!(s.reserve(3), 2 * SEQUENCE_BLOCK + 1, "the final answer's operations");
        assert_eq!(s.sequence, 2 * SEQUENCE_BLOCK + 3);
    }

    #[test]
    fn state_round_trips() {
        let s = CardRecord::streaming("7355".into(), (9, 2));
        let back: CardRecord = serde_json::from_slice(&to_bytes(&s).expect("bytes")).expect("parses");
        assert_eq!(back, s);
    }
}
