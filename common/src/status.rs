//! What each service last saw per channel, for the status page: the last
//! event received (ingress), question answered (relay), reply sent
//! (responder), and the last error with its fix.
//!
//! The hot path only stores the time in memory (no formatting); a background
//! task writes what changed to the `{ns}_status` KV bucket every two seconds,
//! so every ingress replica can show the same page.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// One service's view of one channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStatus {
    /// When it last did its job for this channel (RFC 3339).
    pub last_ok_at: Option<String>,
    pub last_error: Option<StatusError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusError {
    pub at: String,
    pub what: String,
    pub fix: String,
}

/// The longest error or fix text kept in a status entry, in bytes.
pub const MAX_TEXT: usize = 1024;

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// `t` as RFC 3339 (empty if it cannot be formatted).
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// What the hot path writes: the time as it is, formatted only when flushed.
#[derive(Default)]
struct Entry {
    last_ok: Option<SystemTime>,
    last_error: Option<StatusError>,
    dirty: bool,
}

impl Entry {
    fn stored(&self) -> StageStatus {
        StageStatus { last_ok_at: self.last_ok.map(rfc3339), last_error: self.last_error.clone() }
    }
}

/// The in-memory status of one service, flushed to KV.
#[derive(Clone)]
pub struct StatusBoard {
    stage: &'static str,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl StatusBoard {
    pub fn new(stage: &'static str) -> Self {
        Self { stage, entries: Default::default() }
    }

    fn update(&self, channel: &str, f: impl FnOnce(&mut Entry)) {
        if let Ok(mut map) = self.entries.lock() {
            // The common case, a known channel, allocates nothing.
            let entry = match map.get_mut(channel) {
                Some(e) => e,
                None => map.entry(channel.to_owned()).or_default(),
            };
            f(entry);
            entry.dirty = true;
        }
    }

    /// The service did its job for `channel` just now.
    pub fn ok(&self, channel: &str) {
        let now = SystemTime::now();
        self.update(channel, |e| e.last_ok = Some(now));
    }

    /// Something went wrong for `channel`; `fix` says what to do. Both are
    /// cut to [`MAX_TEXT`]: an error text can echo what a sender chose (a 1 MB
    /// body), and an entry over NATS's max payload would freeze the status.
    pub fn error(&self, channel: &str, what: impl Into<String>, fix: impl Into<String>) {
        let e = StatusError {
            at: rfc3339(SystemTime::now()),
            what: truncate(what.into(), MAX_TEXT),
            fix: truncate(fix.into(), MAX_TEXT),
        };
        self.update(channel, |s| s.last_error = Some(e));
    }

    /// Writes what changed to KV every two seconds, and once more at shutdown.
    pub fn spawn_flusher(&self, store: kv::Store, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let board = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = every.tick() => board.flush(&store).await,
                    _ = shutdown.cancelled() => {
                        board.flush(&store).await;
                        return;
                    }
                }
            }
        })
    }

    async fn flush(&self, store: &kv::Store) {
        let changed: Vec<(String, StageStatus)> = match self.entries.lock() {
            Ok(mut map) => map
                .iter_mut()
                .filter(|(_, e)| e.dirty)
                .map(|(c, e)| {
                    e.dirty = false;
                    (c.clone(), e.stored())
                })
                .collect(),
            Err(_) => return,
        };
        for (channel, status) in changed {
            let Ok(json) = serde_json::to_vec(&status) else { continue };
            if let Err(e) = store.put(crate::topology::keys::status(&channel, self.stage), json.into()).await {
                tracing::debug!(error = %e, "cannot write the status; next time");
                self.update(&channel, |_| {});
            }
        }
    }
}

/// Every stage's status of `channel`, as stored.
pub async fn read(store: &kv::Store, channel: &str) -> HashMap<&'static str, StageStatus> {
    let mut out = HashMap::new();
    for stage in ["ingress", "relay", "responder"] {
        if let Ok(Some(v)) = store.get(crate::topology::keys::status(channel, stage)).await {
            if let Ok(s) = serde_json::from_slice(&v) {
                out.insert(stage, s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("é".repeat(2_000), MAX_TEXT);
        assert!(cut.len() <= MAX_TEXT, "{}", cut.len());
        assert!(cut.ends_with('…'));
        let board = StatusBoard::new("ingress");
        board.error("c", "x".repeat(1_000_000), "fix");
        let map = board.entries.lock().expect("lock");
        let stored = map["c"].stored();
        assert!(serde_json::to_vec(&stored).expect("json").len() < 2 * MAX_TEXT);
    }
}
