//! What each service last saw per channel, for the status page: the last
//! event received (ingress), question answered (relay), reply sent
//! (responder), and the last error with its fix.
//!
//! The hot path only stores the time in memory (no formatting); a background
//! task writes what changed to the `{ns}_status` KV bucket every two seconds,
//! so every ingress replica can show the same page.
//!
//! Each `ok` is also counted per minute (and timed, inside a worker, from
//! when the event was stored: [`WORK_SINCE`]) for the page's figures of the
//! last hour; each replica writes its own counts ([`crate::activity`]).

use crate::service_name::Service;
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

tokio::task_local! {
    /// When the work a worker handles started: the event's time in JetStream
    /// (for a reply, the time of the event it answers, from its
    /// [`crate::envelope::EVENT_AT_HEADER`]). Set by the worker around each
    /// message, so an `ok` inside it is timed without the handler's help.
    pub static WORK_SINCE: SystemTime;
}

/// When the work being handled started, inside a worker.
pub fn work_since() -> Option<SystemTime> {
    WORK_SINCE.try_with(|t| *t).ok()
}

/// What the hot path writes: the time as it is, formatted only when flushed.
#[derive(Default)]
struct Entry {
    last_ok: Option<SystemTime>,
    last_error: Option<StatusError>,
    dirty: bool,
    /// Boxed: a few KB, allocated at a channel's first `ok`.
    activity: Option<Box<crate::activity::Ring>>,
    activity_dirty: bool,
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
    /// This process's name in the status bucket's activity keys.
    replica: Arc<str>,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl StatusBoard {
    pub fn new(stage: &'static str) -> Self {
        let replica: String = format!("{:016x}", rand::random::<u64>());
        Self { stage, replica: replica.into(), entries: Default::default() }
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

    /// The service did its job for `channel` just now: counted for the
    /// last hour, and timed when inside a worker.
    pub fn ok(&self, channel: &str) {
        let now = SystemTime::now();
        let latency = work_since().and_then(|since| now.duration_since(since).ok());
        self.update(channel, |e| {
            e.last_ok = Some(now);
            e.activity.get_or_insert_with(Default::default).record(now, latency);
            e.activity_dirty = true;
        });
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
        let now = SystemTime::now();
        let (changed, activity) = match self.entries.lock() {
            Ok(mut map) => {
                let mut changed: Vec<(String, StageStatus)> = Vec::new();
                let mut activity: Vec<(String, crate::activity::Snapshot)> = Vec::new();
                for (c, e) in map.iter_mut() {
                    if e.dirty {
                        e.dirty = false;
                        changed.push((c.clone(), e.stored()));
                    }
                    if e.activity_dirty {
                        e.activity_dirty = false;
                        if let Some(ring) = &e.activity {
                            activity.push((c.clone(), ring.snapshot(&self.replica, now)));
                        }
                    }
                }
                (changed, activity)
            }
            Err(_) => return,
        };
        for (channel, snapshot) in activity {
            let Ok(json) = serde_json::to_vec(&snapshot) else { continue };
            let key = crate::topology::keys::activity(&channel, self.stage, &self.replica);
            if let Err(e) = store.put(key, json.into()).await {
                tracing::debug!(error = %e, "cannot write the activity; next time");
                if let Ok(mut map) = self.entries.lock() {
                    if let Some(e) = map.get_mut(&channel) {
                        e.activity_dirty = true;
                    }
                }
            }
        }
        for (channel, status) in changed {
            let Ok(json) = serde_json::to_vec(&status) else { continue };
            if let Err(e) = store.put(crate::topology::keys::status(&channel, self.stage), json.into()).await {
                tracing::debug!(error = %e, "cannot write the status; next time");
                self.update(&channel, |_| {});
            }
        }
    }
}

/// Every replica's activity snapshots, by channel and stage, as stored (one
/// pass over the bucket's keys for the whole page); snapshots of replicas
/// gone for [`crate::activity::STALE_AFTER`] are removed on the way (the
/// bucket keeps a key until it is).
pub async fn read_activity(store: &kv::Store) -> HashMap<(String, String), Vec<crate::activity::Snapshot>> {
    use futures::StreamExt as _;
    let mut out: HashMap<(String, String), Vec<crate::activity::Snapshot>> = HashMap::new();
    let Ok(mut keys) = store.keys().await else { return out };
    let now = SystemTime::now();
    while let Some(Ok(key)) = keys.next().await {
        let Some((channel, stage, _)) = crate::topology::keys::parse_activity(&key) else { continue };
        let Ok(Some(v)) = store.get(&key).await else { continue };
        let Ok(snapshot) = serde_json::from_slice::<crate::activity::Snapshot>(&v) else { continue };
        if snapshot.is_stale(now) {
            let _ = store.purge(&key).await;
            continue;
        }
        out.entry((channel.to_owned(), stage.to_owned())).or_default().push(snapshot);
    }
    out
}

/// Every stage's status of `channel`, as stored.
pub async fn read(store: &kv::Store, channel: &str) -> HashMap<&'static str, StageStatus> {
    let mut out = HashMap::new();
    for stage in Service::ALL.map(Service::name) {
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
