//! `[nats]`: where NATS is, and the namespace and limits of everything the
//! bridge keeps on it (`crate::topology` turns these into JetStream
//! settings).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    pub url: String,
    /// Prefix of every stream, subject, consumer and KV bucket.
    pub namespace: String,
    /// Stream and bucket replicas: 1 for a single server, 3 on a NATS cluster.
    pub replicas: usize,
    /// Optional NATS credentials file (`.creds`), for secured clusters.
    pub credentials_file: Option<PathBuf>,
    /// Size limit of the events stream: when full, the ingress answers 503
    /// (Lark retries) instead of dropping older events.
    pub events_max_bytes: u64,
    /// Size limit of the replies stream: when full, the relay retries.
    pub replies_max_bytes: u64,
    /// Size limit of the dead-letter stream: when full, a message stays where
    /// it is (retried) instead of dropping older dead letters.
    pub dead_max_bytes: u64,
    /// How long dead letters are kept for inspection and re-drive.
    pub dead_max_age_days: u64,
    /// Size limit of each KV bucket (sessions, handled, attempts, status...).
    pub bucket_max_bytes: u64,
    /// Size limit of the object store bucket of the files users send (what
    /// FastGPT fetches through the signed links): when full, a new file is
    /// refused with a notice; nothing stored is dropped before its time.
    pub files_max_bytes: u64,
    /// How long a stored file (and its link) lives: FastGPT may read it again
    /// for follow-up questions in the same conversation within this time.
    pub files_max_age_secs: u64,
}
