//! `[ingress]`: how the ingress serves Lark's callbacks, the file links and
//! `/status`, within Lark's 3 s for an answer.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngressSettings {
    pub listen: SocketAddr,
    /// Largest callback body accepted; larger gets 413.
    pub body_limit_bytes: usize,
    /// How long to wait for JetStream's acknowledgement before answering 503
    /// (Lark gives the whole callback 3 s).
    pub publish_timeout_ms: u64,
    /// Signed requests whose timestamp is further than this from now are refused.
    /// Wide enough for Lark's re-pushes (the last one about 7.1 h after the first).
    pub replay_window_secs: u64,
    /// The public HTTPS address Lark reaches ingress at (`https://bot.example.com`):
    /// `--check` prints each channel's full Request URL from it. It is also
    /// where FastGPT fetches the files users send (`{public_url}/files/...`):
    /// the relay reads it from this section to build those links.
    pub public_url: Option<Url>,
    /// The key of the file links' signatures (HMAC-SHA256): the relay signs
    /// each link, the ingress checks it. Files are enabled only with both
    /// this and `public_url` (see [`Settings::files`](super::Settings::files)). A secret.
    pub files_signing_key: Option<SecretString>,
    /// Bearer token of `GET /status`; the page is off when none is set.
    pub admin_token: Option<SecretString>,
    /// A connection must send a request's headers within this, and an idle
    /// keep-alive connection its next request: else it is closed.
    pub header_timeout_secs: u64,
    /// A whole request (body read, event stored, answer written) must finish
    /// within this: a body trickled in is cut off with 408.
    pub request_timeout_secs: u64,
    /// Connections served at once; more wait in the kernel's backlog. Also
    /// kept under the process's open-file limit.
    pub max_connections: usize,
    /// WebSockets each replica opens per `long_connection` channel (1..=50).
    /// Lark gives each event to one of an app's connections and allows 50 per
    /// app: replicas x this must stay under 50.
    pub long_connections_per_channel: usize,
}

impl IngressSettings {
    pub fn http_limits(&self) -> crate::http_server::Limits {
        crate::http_server::Limits {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_connections: self.max_connections,
        }
    }
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
}
