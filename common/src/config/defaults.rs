//! Every default value, in one place: what a key left out of the file means.
//! A section's `Default` is also what serde fills its missing keys from, so
//! each value is written once; a section left out entirely is its default.

use std::net::SocketAddr;

use url::Url;

use super::{IngressSettings, LogFormat, NatsSettings, RelaySettings, ResponderSettings, TelemetrySettings};

const MB: u64 = 1024 * 1024;
/// Attempts at a message, in the relay and the responder alike.
const ATTEMPTS: u32 = 5;
/// What SIGTERM leaves work in flight, in the relay and the responder alike.
const SHUTDOWN_GRACE_SECS: u64 = 20;

fn listen(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            namespace: "larkbridge".into(),
            replicas: 1,
            credentials_file: None,
            events_max_bytes: 512 * MB,
            replies_max_bytes: 512 * MB,
            dead_max_bytes: 128 * MB,
            dead_max_age_days: 14,
            bucket_max_bytes: 128 * MB,
            files_max_bytes: 1024 * MB,
            files_max_age_secs: 24 * 3600,
        }
    }
}

impl Default for IngressSettings {
    fn default() -> Self {
        Self {
            listen: listen(8080),
            body_limit_bytes: 1024 * 1024,
            publish_timeout_ms: 2_000,
            replay_window_secs: 12 * 3600,
            public_url: None,
            files_signing_key: None,
            admin_token: None,
            header_timeout_secs: 10,
            request_timeout_secs: 15,
            max_connections: 1024,
            long_connections_per_channel: 1,
        }
    }
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            listen: listen(8081),
            max_in_flight: 64,
            fastgpt_timeout_secs: 120,
            max_attempts: ATTEMPTS,
            typing_after_ms: 3_000,
            shutdown_grace_secs: SHUTDOWN_GRACE_SECS,
            max_file_bytes: 20 * MB,
        }
    }
}

impl Default for ResponderSettings {
    fn default() -> Self {
        Self {
            listen: listen(8082),
            max_in_flight: 32,
            lark_timeout_secs: 10,
            max_attempts: ATTEMPTS,
            shutdown_grace_secs: SHUTDOWN_GRACE_SECS,
            per_chat_per_second: 5,
            app_per_second: 50,
            app_per_minute: 1000,
            stream_update_ms: 300,
        }
    }
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self { log_format: LogFormat::Json, log_level: "info".into(), otlp_endpoint: None }
    }
}

/// `channels[].lark_base_url`: Feishu (Lark's international API is
/// `https://open.larksuite.com`).
pub(super) fn lark_base_url() -> Url {
    Url::parse("https://open.feishu.cn").expect("a literal URL parses")
}

/// `channels[].streaming` and `channels[].feedback`: on.
pub(super) fn yes() -> bool {
    true
}
