//! `[responder]`: how fast the responder may send, within Lark's limits per
//! chat, per app and per card.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponderSettings {
    pub listen: SocketAddr,
    /// Lark sends in flight at once in one replica.
    pub max_in_flight: usize,
    /// Timeout of one Lark API call, in every service (the relay's downloads
    /// and reactions, the ingress's long-connection endpoint, the responder's sends).
    pub lark_timeout_secs: u64,
    /// Attempts at a reply before it goes to the dead-letter stream.
    pub max_attempts: u32,
    /// On SIGTERM, how long sends in flight may still run.
    pub shutdown_grace_secs: u64,
    /// Messages per second into one chat (Lark: 5, shared by every bot in it).
    pub per_chat_per_second: u32,
    /// Messages per second per app, all replicas together (Lark: 50 per app);
    /// each replica paces to its share of the partitions it holds.
    pub app_per_second: u32,
    /// Messages per minute per app, all replicas together (Lark: 1,000 per app).
    pub app_per_minute: u32,
    /// The floor of a streaming card's updates: never more often than this
    /// (200..=5000 ms; Lark allows 10 operations per second on one card).
    /// Above it the responder spaces updates out as the answer grows older
    /// and as more cards share the app's CardKit budget.
    pub stream_update_ms: u64,
}

impl ResponderSettings {
    pub fn lark_timeout(&self) -> Duration {
        Duration::from_secs(self.lark_timeout_secs)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
    pub fn stream_update(&self) -> Duration {
        Duration::from_millis(self.stream_update_ms)
    }
}
