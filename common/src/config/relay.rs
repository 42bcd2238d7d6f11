//! `[relay]`: how much FastGPT work one relay replica takes on, and how long
//! it waits for it.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    pub listen: SocketAddr,
    /// FastGPT calls in flight at once in one replica.
    pub max_in_flight: usize,
    /// Timeout of one FastGPT call; workflows can be slow.
    pub fastgpt_timeout_secs: u64,
    /// Attempts at a question before the user gets an apology; of any event
    /// before it is dead-lettered (`worker::Handler::give_up`).
    pub max_attempts: u32,
    /// After this long without FastGPT's answer, a `Typing` reaction shows the
    /// user that the bot is working.
    pub typing_after_ms: u64,
    /// On SIGTERM, how long questions in flight may still run before they are
    /// handed back to another replica (keep below terminationGracePeriodSeconds).
    pub shutdown_grace_secs: u64,
    /// The most bytes of images and files one message may bring: each
    /// download is checked while it streams and cut off past this, so a
    /// relay never holds more than this per message in memory.
    pub max_file_bytes: u64,
}

impl RelaySettings {
    pub fn fastgpt_timeout(&self) -> Duration {
        Duration::from_secs(self.fastgpt_timeout_secs)
    }
    pub fn typing_after(&self) -> Duration {
        Duration::from_millis(self.typing_after_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}
