//! Every JetStream stream, subject, consumer and KV bucket of the bridge: the
//! one place where names and settings live. Whichever service starts first
//! creates them; the others find them (creation is idempotent).
//!
//! ```text
//! {ns}.events.{p}.{channel}.{conversation} ──▶ stream {ns}_events  (WorkQueue) ──▶ consumers {ns}_relay_{p}
//! {ns}.replies.{p}.{channel}.{chat}        ──▶ stream {ns}_replies (WorkQueue) ──▶ consumers {ns}_responder_{p}
//! {ns}.dead.{channel}.{stage}           ──▶ stream {ns}_dead    (Limits, kept nats.dead_max_age_days)
//! {ns}.drafts.{p}.{channel}.{chat}         ──▶ core NATS, to the responder owning replies partition {p}
//! KV {ns}_sessions: conversation generation (Reset)
//! KV {ns}_attempts: failed attempts of a message in work
//! KV {ns}_handled:  events already answered (de-duplicates Lark's re-pushes)
//! KV {ns}_status:   last event, answer and error per channel and service, and each replica's counts of the last hour (GET /status)
//! KV {ns}_leases:   which replica owns which partition ({p}, 0..PARTITIONS), and who is alive
//! Object store {ns}_files: files users sent, served to FastGPT by the ingress (kept nats.files_max_age_secs)
//! ```
//!
//! The partition in a work subject is a stable hash of its conversation
//! (events) or chat (replies): each partition has its own consumer and is
//! pulled by the one replica leasing it, which keeps its conversations in
//! order in memory (`common::worker`). The layout is written and parsed in
//! one place, `topology/subjects.rs` (through [`Topology::parse`]).
//!
//! Only NATS 2.9 features are used: Debian's nats-server is 2.9.
//!
//! Settings follow the configuration: every stream
//! and bucket has a size limit (`nats.*_max_bytes`) with `discard: new`, so a
//! full one refuses a write (the writer retries, Lark gets 503) instead of
//! dropping old work; work streams have no age limit (unhandled work never
//! expires). At start an existing stream whose settings differ is updated in
//! place, or the start fails naming what NATS cannot change ([`diff`]). How
//! full each one is goes to metrics and `--check` ([`usage`]).
//!
//! Here: [`Topology`] and its errors. The names are in `names`, the
//! JetStream settings (and the limits taken from `[nats]`) in `settings`,
//! creating and updating them on NATS in `ensure`, the KV key formats in
//! [`keys`], and what an older version left behind in `legacy`.

mod diff;
mod ensure;
pub mod keys;
mod legacy;
mod names;
mod settings;
mod subjects;
pub mod usage;

use crate::config::NatsSettings;
pub use diff::{describe, diff, Change, Diff};
use settings::Limits;
pub use settings::{
    ACK_WAIT, CARDS_MAX_AGE, DUPLICATE_WINDOW, HANDLED_MAX_AGE, LEASE_TTL, MAX_ACK_PENDING, QUESTIONS_MAX_AGE,
    WORK_MAX_AGE,
};
pub use subjects::{partition_of, Queue, Subject, PARTITIONS};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot create or find JetStream stream {name}: {source} (is JetStream enabled on the server, `nats-server -js`?)")]
    Stream {
        name: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot create or find consumer {name} on stream {stream}: {source}")]
    Consumer {
        name: String,
        stream: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot create or find KV bucket {name}: {source}")]
    Bucket {
        name: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot create or find the object store bucket {name} (the files users send): {source}")]
    ObjectBucket {
        name: String,
        #[source]
        source: async_nats::Error,
    },
    #[error(
        "JetStream stream {name} differs from the configuration in what NATS cannot change on an existing stream: \
         {changes}. To apply it, drain the stream (stop the ingress, wait until `nats stream info {name}` shows 0 \
         messages), delete it (`nats stream rm {name}`) and start a service again, which creates it as configured; \
         or use a new nats.namespace"
    )]
    Mismatch { name: String, changes: String },
    #[error(
        "JetStream stream {name} holds {holds} bytes, more than its configured size limit of {limit} bytes: NATS \
         would drop the oldest messages to apply it. Raise the limit (nats.*_max_bytes) to at least {holds}, or \
         lower it once the stream has drained below it"
    )]
    WouldDrop { name: String, holds: u64, limit: u64 },
    #[error("cannot update JetStream stream {name} to the configuration ({changes}): {source}{hint}")]
    Update {
        name: String,
        changes: String,
        hint: &'static str,
        #[source]
        source: async_nats::Error,
    },
}

impl TopologyError {
    /// True when retrying cannot help: the stream exists with a setting NATS
    /// cannot change in place, and an operator must act (the message says how).
    pub fn is_permanent(&self) -> bool {
        matches!(self, TopologyError::Mismatch { .. } | TopologyError::WouldDrop { .. })
    }
}

/// Names and settings, under one namespace.
#[derive(Debug, Clone)]
pub struct Topology {
    ns: String,
    replicas: usize,
    limits: Limits,
}

impl Topology {
    pub fn new(nats: &NatsSettings) -> Self {
        Self { ns: nats.namespace.clone(), replicas: nats.replicas, limits: Limits::new(nats) }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }
}
