//! The configuration contract: one TOML file for all three
//! services, `LARK_BRIDGE__...` environment overrides, validation that names
//! the key.
//!
//! The file path comes from `--config FILE` or `LARK_BRIDGE_CONFIG`. Any key can
//! be overridden with `LARK_BRIDGE__SECTION__KEY`; a channel's keys with
//! `LARK_BRIDGE__CHANNELS__{ID}__KEY` (the channel id upper-cased, `-` as `_`)
//! or `LARK_BRIDGE__CHANNELS__{INDEX}__KEY`, so Kubernetes can inject the
//! secrets from a Secret without writing them into the ConfigMap.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

pub const CONFIG_ENV: &str = "LARK_BRIDGE_CONFIG";
pub const ENV_PREFIX: &str = "LARK_BRIDGE";

/// A configuration that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no configuration file: pass --config FILE or set {CONFIG_ENV}")]
    NoFile,
    #[error("configuration file {path}: {source}")]
    Load {
        path: PathBuf,
        #[source]
        source: config::ConfigError,
    },
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub nats: NatsSettings,
    #[serde(default)]
    pub ingress: IngressSettings,
    #[serde(default)]
    pub relay: RelaySettings,
    #[serde(default)]
    pub responder: ResponderSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub channels: Vec<ChannelSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    #[serde(default = "defaults::nats_url")]
    pub url: String,
    /// Prefix of every stream, subject, consumer and KV bucket.
    #[serde(default = "defaults::namespace")]
    pub namespace: String,
    /// Stream and bucket replicas: 1 for a single server, 3 on a NATS cluster.
    #[serde(default = "defaults::one")]
    pub replicas: usize,
    /// Optional NATS credentials file (`.creds`), for secured clusters.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Size limit of the events stream: when full, the ingress answers 503
    /// (Lark retries) instead of dropping older events.
    #[serde(default = "defaults::work_max_bytes")]
    pub events_max_bytes: u64,
    /// Size limit of the replies stream: when full, the relay retries.
    #[serde(default = "defaults::work_max_bytes")]
    pub replies_max_bytes: u64,
    /// Size limit of the dead-letter stream: when full, a message stays where
    /// it is (retried) instead of dropping older dead letters.
    #[serde(default = "defaults::dead_max_bytes")]
    pub dead_max_bytes: u64,
    /// How long dead letters are kept for inspection and re-drive.
    #[serde(default = "defaults::dead_max_age_days")]
    pub dead_max_age_days: u64,
    /// Size limit of each KV bucket (sessions, handled, attempts, status...).
    #[serde(default = "defaults::bucket_max_bytes")]
    pub bucket_max_bytes: u64,
    /// Size limit of the object store bucket of the files users send (what
    /// FastGPT fetches through the signed links): when full, a new file is
    /// refused with a notice; nothing stored is dropped before its time.
    #[serde(default = "defaults::files_max_bytes")]
    pub files_max_bytes: u64,
    /// How long a stored file (and its link) lives: FastGPT may read it again
    /// for follow-up questions in the same conversation within this time.
    #[serde(default = "defaults::files_max_age_secs")]
    pub files_max_age_secs: u64,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: defaults::nats_url(),
            namespace: defaults::namespace(),
            replicas: defaults::one(),
            credentials_file: None,
            events_max_bytes: defaults::work_max_bytes(),
            replies_max_bytes: defaults::work_max_bytes(),
            dead_max_bytes: defaults::dead_max_bytes(),
            dead_max_age_days: defaults::dead_max_age_days(),
            bucket_max_bytes: defaults::bucket_max_bytes(),
            files_max_bytes: defaults::files_max_bytes(),
            files_max_age_secs: defaults::files_max_age_secs(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressSettings {
    #[serde(default = "defaults::ingress_listen")]
    pub listen: SocketAddr,
    /// Largest callback body accepted; larger gets 413.
    #[serde(default = "defaults::body_limit")]
    pub body_limit_bytes: usize,
    /// How long to wait for JetStream's acknowledgement before answering 503
    /// (Lark gives the whole callback 3 s).
    #[serde(default = "defaults::publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Signed requests whose timestamp is further than this from now are refused.
    /// Wide enough for Lark's re-pushes (the last one about 7.1 h after the first).
    #[serde(default = "defaults::replay_window_secs")]
    pub replay_window_secs: u64,
    /// The public HTTPS address Lark reaches ingress at (`https://bot.example.com`):
    /// `--check` prints each channel's full Request URL from it. It is also
    /// where FastGPT fetches the files users send (`{public_url}/files/...`):
    /// the relay reads it from this section to build those links.
    #[serde(default)]
    pub public_url: Option<Url>,
    /// The key of the file links' signatures (HMAC-SHA256): the relay signs
    /// each link, the ingress checks it. Files are enabled only with both
    /// this and `public_url` (see [`Settings::files`]). A secret.
    #[serde(default)]
    pub files_signing_key: Option<SecretString>,
    /// Bearer token of `GET /status`; the page is off when none is set.
    #[serde(default)]
    pub admin_token: Option<SecretString>,
    /// A connection must send a request's headers within this, and an idle
    /// keep-alive connection its next request: else it is closed.
    #[serde(default = "defaults::header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// A whole request (body read, event stored, answer written) must finish
    /// within this: a body trickled in is cut off with 408.
    #[serde(default = "defaults::request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Connections served at once; more wait in the kernel's backlog. Also
    /// kept under the process's open-file limit.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// WebSockets each replica opens per `long_connection` channel (1..=50).
    /// Lark gives each event to one of an app's connections and allows 50 per
    /// app: replicas x this must stay under 50.
    #[serde(default = "defaults::long_connections_per_channel")]
    pub long_connections_per_channel: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    #[serde(default = "defaults::relay_listen")]
    pub listen: SocketAddr,
    /// FastGPT calls in flight at once in one replica.
    #[serde(default = "defaults::relay_in_flight")]
    pub max_in_flight: usize,
    /// Timeout of one FastGPT call; workflows can be slow.
    #[serde(default = "defaults::fastgpt_timeout_secs")]
    pub fastgpt_timeout_secs: u64,
    /// Attempts at a question before the user gets an apology; of any event
    /// before it is dead-lettered (`worker::Handler::give_up`).
    #[serde(default = "defaults::attempts")]
    pub max_attempts: u32,
    /// After this long without FastGPT's answer, a `Typing` reaction shows the
    /// user that the bot is working.
    #[serde(default = "defaults::typing_after_ms")]
    pub typing_after_ms: u64,
    /// On SIGTERM, how long questions in flight may still run before they are
    /// handed back to another replica (keep below terminationGracePeriodSeconds).
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// The most bytes of images and files one message may bring: each
    /// download is checked while it streams and cut off past this, so a
    /// relay never holds more than this per message in memory.
    #[serde(default = "defaults::max_file_bytes")]
    pub max_file_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponderSettings {
    #[serde(default = "defaults::responder_listen")]
    pub listen: SocketAddr,
    /// Lark sends in flight at once in one replica.
    #[serde(default = "defaults::responder_in_flight")]
    pub max_in_flight: usize,
    /// Timeout of one Lark API call.
    #[serde(default = "defaults::lark_timeout_secs")]
    pub lark_timeout_secs: u64,
    /// Attempts at a reply before it goes to the dead-letter stream.
    #[serde(default = "defaults::attempts")]
    pub max_attempts: u32,
    /// On SIGTERM, how long sends in flight may still run.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// Messages per second into one chat (Lark: 5, shared by every bot in it).
    #[serde(default = "defaults::per_chat_per_second")]
    pub per_chat_per_second: u32,
    /// Messages per second per app, all replicas together (Lark: 50 per app);
    /// each replica paces to its share of the partitions it holds.
    #[serde(default = "defaults::app_per_second")]
    pub app_per_second: u32,
    /// Messages per minute per app, all replicas together (Lark: 1,000 per app).
    #[serde(default = "defaults::app_per_minute")]
    pub app_per_minute: u32,
    /// The floor of a streaming card's updates: never more often than this
    /// (200..=5000 ms; Lark allows 10 operations per second on one card).
    /// Above it the responder spaces updates out as the answer grows older
    /// and as more cards share the app's CardKit budget.
    #[serde(default = "defaults::stream_update_ms")]
    pub stream_update_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    #[serde(default = "defaults::log_format")]
    pub log_format: LogFormat,
    /// `tracing` filter directives, e.g. `info` or `info,relay=debug`; `RUST_LOG` wins.
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    #[serde(default)]
    pub otlp_endpoint: Option<Url>,
}

/// One publishing channel: a Lark app bound to a FastGPT app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    pub id: String,
    pub app_id: String,
    /// Needed by the relay and the responder (Lark's API), not by a webhook
    /// ingress: see [`crate::secrets`].
    #[serde(default)]
    pub app_secret: Option<SecretString>,
    #[serde(default)]
    pub encrypt_key: Option<SecretString>,
    #[serde(default)]
    pub verification_token: Option<SecretString>,
    #[serde(default = "defaults::lark_base_url")]
    pub lark_base_url: Url,
    pub fastgpt_base_url: Url,
    /// Needed by the relay only.
    #[serde(default)]
    pub fastgpt_api_key: Option<SecretString>,
    /// The FastGPT app's id, sent as `appId`: required with a team (account)
    /// key, which FastGPT refuses without it; optional with an app key.
    #[serde(default)]
    pub fastgpt_app_id: Option<String>,
    /// A webhook channel with neither `encrypt_key` nor `verification_token`
    /// accepts forged events from anyone: the ingress refuses to start with
    /// one unless this says so.
    #[serde(default)]
    pub allow_unverified: bool,
    /// How Lark delivers this channel's events: to the Request URL
    /// (`webhook`), or over WebSockets the ingress opens (`long_connection`:
    /// no public URL; needs app_id and app_secret only).
    #[serde(default)]
    pub subscription: Subscription,
    /// Answers appear as FastGPT writes them, in one card per answer
    /// (CardKit, scope `cardkit:card:write`); `false` sends each answer whole.
    #[serde(default = "defaults::yes")]
    pub streaming: bool,
    /// 👍 and 👎 buttons on each final answer: the asker's click rates the
    /// answer in FastGPT's chat log (`updateUserFeedback`).
    #[serde(default = "defaults::yes")]
    pub feedback: bool,
    /// The Lark API calls this app may make in a calendar month (a free
    /// Feishu tenant has 10,000 for all its custom apps). Counted across
    /// every replica and restart; past 90 % answers go whole instead of
    /// streaming, and `/status` and an alert say so. Unset: counted, no limit.
    #[serde(default)]
    pub lark_calls_per_month: Option<u64>,
}

/// How Lark delivers a channel's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    /// Lark posts each event to `/lark/{id}/events`.
    #[default]
    Webhook,
    /// The ingress connects to Lark and receives events over WebSockets.
    LongConnection,
}

mod defaults {
    use super::*;
    pub fn nats_url() -> String {
        "nats://127.0.0.1:4222".into()
    }
    pub fn namespace() -> String {
        "larkbridge".into()
    }
    pub fn one() -> usize {
        1
    }
    pub fn work_max_bytes() -> u64 {
        512 * 1024 * 1024
    }
    pub fn dead_max_bytes() -> u64 {
        128 * 1024 * 1024
    }
    pub fn dead_max_age_days() -> u64 {
        14
    }
    pub fn bucket_max_bytes() -> u64 {
        128 * 1024 * 1024
    }
    pub fn files_max_bytes() -> u64 {
        1024 * 1024 * 1024
    }
    pub fn files_max_age_secs() -> u64 {
        24 * 3600
    }
    pub fn max_file_bytes() -> u64 {
        20 * 1024 * 1024
    }
    pub fn ingress_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8080))
    }
    pub fn relay_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8081))
    }
    pub fn responder_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8082))
    }
    pub fn header_timeout_secs() -> u64 {
        10
    }
    pub fn request_timeout_secs() -> u64 {
        15
    }
    pub fn max_connections() -> usize {
        1024
    }
    pub fn long_connections_per_channel() -> usize {
        1
    }
    pub fn body_limit() -> usize {
        1024 * 1024
    }
    pub fn publish_timeout_ms() -> u64 {
        2_000
    }
    pub fn replay_window_secs() -> u64 {
        12 * 3600
    }
    pub fn relay_in_flight() -> usize {
        64
    }
    pub fn responder_in_flight() -> usize {
        32
    }
    pub fn fastgpt_timeout_secs() -> u64 {
        120
    }
    pub fn lark_timeout_secs() -> u64 {
        10
    }
    pub fn attempts() -> u32 {
        5
    }
    pub fn typing_after_ms() -> u64 {
        3_000
    }
    pub fn shutdown_grace_secs() -> u64 {
        20
    }
    pub fn per_chat_per_second() -> u32 {
        5
    }
    pub fn app_per_second() -> u32 {
        50
    }
    pub fn app_per_minute() -> u32 {
        1000
    }
    pub fn stream_update_ms() -> u64 {
        300
    }
    pub fn yes() -> bool {
        true
    }
    pub fn log_format() -> LogFormat {
        LogFormat::Json
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn lark_base_url() -> Url {
        Url::parse("https://open.feishu.cn").expect("a literal URL parses")
    }
}

macro_rules! default_section {
    ($t:ty, $listen:expr, { $($f:ident: $d:expr),* $(,)? }) => {
        impl Default for $t {
            fn default() -> Self { Self { listen: $listen, $($f: $d),* } }
        }
    };
}
default_section!(IngressSettings, defaults::ingress_listen(), {
    body_limit_bytes: defaults::body_limit(),
    publish_timeout_ms: defaults::publish_timeout_ms(),
    replay_window_secs: defaults::replay_window_secs(),
    public_url: None,
    files_signing_key: None,
    admin_token: None,
    header_timeout_secs: defaults::header_timeout_secs(),
    request_timeout_secs: defaults::request_timeout_secs(),
    max_connections: defaults::max_connections(),
    long_connections_per_channel: defaults::long_connections_per_channel(),
});
default_section!(RelaySettings, defaults::relay_listen(), {
    max_in_flight: defaults::relay_in_flight(),
    fastgpt_timeout_secs: defaults::fastgpt_timeout_secs(),
    max_attempts: defaults::attempts(),
    typing_after_ms: defaults::typing_after_ms(),
    shutdown_grace_secs: defaults::shutdown_grace_secs(),
    max_file_bytes: defaults::max_file_bytes(),
});
default_section!(ResponderSettings, defaults::responder_listen(), {
    max_in_flight: defaults::responder_in_flight(),
    lark_timeout_secs: defaults::lark_timeout_secs(),
    max_attempts: defaults::attempts(),
    shutdown_grace_secs: defaults::shutdown_grace_secs(),
    per_chat_per_second: defaults::per_chat_per_second(),
    app_per_second: defaults::app_per_second(),
    app_per_minute: defaults::app_per_minute(),
    stream_update_ms: defaults::stream_update_ms(),
});

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self { log_format: defaults::log_format(), log_level: defaults::log_level(), otlp_endpoint: None }
    }
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

impl Settings {
    /// Loads the file named by `path`, or by `LARK_BRIDGE_CONFIG`, with the
    /// process environment's overrides, and validates it.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => env.get(CONFIG_ENV).map(PathBuf::from).ok_or(ConfigError::NoFile)?,
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::Load { path: path.clone(), source: config::ConfigError::Foreign(Box::new(e)) })?;
        Self::from_toml_with_env(&text, &env).map_err(|e| match e {
            ConfigError::Load { source, .. } => ConfigError::Load { path, source },
            other => other,
        })
    }

    /// Parses TOML text with the given environment (a map, so tests need not
    /// touch the process environment).
    pub fn from_toml_with_env(text: &str, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let load_err = |source| ConfigError::Load { path: PathBuf::from("<text>"), source };
        let file = config::File::from_str(text, config::FileFormat::Toml);
        // Channel overrides are applied by index below; the generic source would
        // turn the `channels` array into a table.
        let general: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| {
                k.starts_with(&format!("{ENV_PREFIX}__")) && !k.starts_with(&format!("{ENV_PREFIX}__CHANNELS__"))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(general));

        // Which channel ids sit at which index, to resolve CHANNELS__{ID}__KEY.
        let ids = config::Config::builder()
            .add_source(file.clone())
            .build()
            .map_err(load_err)?
            .get::<Vec<IdOnly>>("channels")
            .unwrap_or_default();

        let mut builder = config::Config::builder().add_source(file).add_source(environment);
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(&format!("{ENV_PREFIX}__CHANNELS__")) else { continue };
            let Some((who, key)) = rest.split_once("__") else {
                return Err(invalid(name.clone(), "expected LARK_BRIDGE__CHANNELS__{ID or INDEX}__{KEY}"));
            };
            let index = match who.parse::<usize>() {
                Ok(i) if i < ids.len() => i,
                _ => ids
                    .iter()
                    .position(|c| env_token(&c.id) == who)
                    .ok_or_else(|| invalid(name.clone(), format!("no channel with id or index {who:?} in the file")))?,
            };
            builder = builder
                .set_override(format!("channels[{index}].{}", key.to_lowercase()), value.clone())
                .map_err(load_err)?;
        }
        let settings: Settings = builder.build().and_then(|c| c.try_deserialize()).map_err(load_err)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !is_token(&self.nats.namespace) {
            return Err(invalid("nats.namespace", "use letters, digits, `-` and `_` only (it prefixes NATS names)"));
        }
        if self.nats.replicas == 0 || self.nats.replicas > 5 {
            return Err(invalid("nats.replicas", "must be between 1 and 5"));
        }
        crate::nats_url::server_addrs(&self.nats.url).map_err(|e| invalid("nats.url", e.to_string()))?;
        for (key, v) in [
            ("nats.events_max_bytes", self.nats.events_max_bytes),
            ("nats.replies_max_bytes", self.nats.replies_max_bytes),
            ("nats.dead_max_bytes", self.nats.dead_max_bytes),
            ("nats.bucket_max_bytes", self.nats.bucket_max_bytes),
            ("nats.files_max_bytes", self.nats.files_max_bytes),
        ] {
            if !(1024..=i64::MAX as u64).contains(&v) {
                return Err(invalid(key, "must be at least 1024 (bytes; every stream has a size limit)"));
            }
        }
        if self.nats.dead_max_age_days == 0 || self.nats.dead_max_age_days > 3650 {
            return Err(invalid("nats.dead_max_age_days", "must be between 1 and 3650"));
        }
        if !(1..=MAX_FILES_AGE_SECS).contains(&self.nats.files_max_age_secs) {
            return Err(invalid(
                "nats.files_max_age_secs",
                format!("must be between 1 and {MAX_FILES_AGE_SECS} (30 days)"),
            ));
        }
        if !(1024..=MAX_FILE_BYTES).contains(&self.relay.max_file_bytes) {
            return Err(invalid(
                "relay.max_file_bytes",
                format!("must be between 1024 and {MAX_FILE_BYTES} (Lark serves no resource larger than 100 MB)"),
            ));
        }
        if self.relay.max_file_bytes > self.nats.files_max_bytes {
            return Err(invalid(
                "relay.max_file_bytes",
                "must not exceed nats.files_max_bytes: a file that size could never be stored",
            ));
        }
        if let Some(url) = &self.ingress.public_url {
            if !matches!(url.scheme(), "http" | "https") || url.query().is_some() || url.fragment().is_some() {
                return Err(invalid(
                    "ingress.public_url",
                    "must be an http:// or https:// address without a query, e.g. https://bot.example.com",
                ));
            }
        }
        if let Some(key) = &self.ingress.files_signing_key {
            if key.expose_secret().len() < MIN_SIGNING_KEY_LEN {
                return Err(invalid(
                    "ingress.files_signing_key",
                    format!(
                        "must be at least {MIN_SIGNING_KEY_LEN} characters (a random secret, e.g. `openssl rand -hex 32`)"
                    ),
                ));
            }
        }
        if self.ingress.body_limit_bytes < 1024 {
            return Err(invalid("ingress.body_limit_bytes", "must be at least 1024"));
        }
        // A partition's new owner waits at most 300 s for its previous owner's
        // messages (`worker::partition`): a FastGPT call must end before.
        if self.relay.fastgpt_timeout_secs > 270 {
            return Err(invalid(
                "relay.fastgpt_timeout_secs",
                "must be at most 270: a question still in work at a replica that lost its partition must end before \
                 the new owner goes on with that conversation (300 s)",
            ));
        }
        if !(100..=2_900).contains(&self.ingress.publish_timeout_ms) {
            return Err(invalid("ingress.publish_timeout_ms", "must be 100..=2900: Lark waits 3 s for the answer"));
        }
        if !(1..=300).contains(&self.ingress.header_timeout_secs) {
            return Err(invalid("ingress.header_timeout_secs", "must be 1..=300"));
        }
        if !(3..=300).contains(&self.ingress.request_timeout_secs) {
            return Err(invalid("ingress.request_timeout_secs", "must be 3..=300: Lark waits 3 s for the answer"));
        }
        if !(16..=1_000_000).contains(&self.ingress.max_connections) {
            return Err(invalid("ingress.max_connections", "must be 16..=1000000"));
        }
        if !(1..=50).contains(&self.ingress.long_connections_per_channel) {
            return Err(invalid(
                "ingress.long_connections_per_channel",
                "must be 1..=50: Lark allows 50 long connections per app, across every replica",
            ));
        }
        if !(200..=5_000).contains(&self.responder.stream_update_ms) {
            return Err(invalid(
                "responder.stream_update_ms",
                "must be 200..=5000: Lark allows 10 operations per second on one card, and the final answer adds two",
            ));
        }
        for (key, v) in [
            ("relay.max_in_flight", self.relay.max_in_flight),
            ("responder.max_in_flight", self.responder.max_in_flight),
            ("relay.max_attempts", self.relay.max_attempts as usize),
            ("responder.max_attempts", self.responder.max_attempts as usize),
            ("relay.fastgpt_timeout_secs", self.relay.fastgpt_timeout_secs as usize),
            ("responder.lark_timeout_secs", self.responder.lark_timeout_secs as usize),
            ("responder.per_chat_per_second", self.responder.per_chat_per_second as usize),
            ("responder.app_per_second", self.responder.app_per_second as usize),
            ("responder.app_per_minute", self.responder.app_per_minute as usize),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let mut seen = HashSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            let key = |k: &str| format!("channels[{i}].{k}");
            if !is_token(&c.id) || c.id.len() > 64 {
                return Err(invalid(
                    key("id"),
                    "use 1 to 64 letters, digits, `-` and `_` (it is part of the Request URL and of NATS subjects)",
                ));
            }
            if c.lark_calls_per_month == Some(0) {
                return Err(invalid(
                    key("lark_calls_per_month"),
                    "must be at least 1 (Lark API calls a month; leave it out for no budget)",
                ));
            }
            if !seen.insert(c.id.as_str()) {
                return Err(invalid(key("id"), format!("channel id {:?} is used twice", c.id)));
            }
            if c.app_id.trim().is_empty() {
                return Err(invalid(
                    key("app_id"),
                    format!("must not be empty for channel {:?} (the App ID from the Lark console, cli_...)", c.id),
                ));
            }
            for (k, url) in [("lark_base_url", &c.lark_base_url), ("fastgpt_base_url", &c.fastgpt_base_url)] {
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid(key(k), format!("must be an http:// or https:// URL (channel {:?})", c.id)));
                }
            }
        }
        Ok(())
    }
}

/// Lark serves no message resource larger than 100 MB (its code 234037).
pub const MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// The longest a stored file may live: 30 days.
pub const MAX_FILES_AGE_SECS: u64 = 30 * 24 * 3600;
/// The shortest `ingress.files_signing_key` accepted: 32 characters.
pub const MIN_SIGNING_KEY_LEN: usize = 32;

/// Whether files (file messages, served to FastGPT through signed links) are
/// on, from the one place that decides it: both `ingress.public_url` (where
/// FastGPT fetches them) and `ingress.files_signing_key` (what signs the
/// links) must be set. Images need neither: they travel inside the question.
#[derive(Debug, Clone, Copy)]
pub enum FilesSetup<'a> {
    Enabled {
        public_url: &'a Url,
        signing_key: &'a SecretString,
    },
    /// `missing` names the keys to set, for the user's notice, the log line
    /// and `--check`.
    Disabled {
        missing: &'static str,
    },
}

impl Settings {
    /// What to set for files to be on: each missing key with its
    /// environment variable and what to put there, for the start-up log and
    /// `--check` (a config with `public_url` alone looks set up, and is not).
    pub fn files_fix(&self) -> String {
        let mut set = Vec::new();
        if self.ingress.public_url.is_none() {
            set.push(format!(
                "ingress.public_url (or {ENV_PREFIX}__INGRESS__PUBLIC_URL), the public address FastGPT fetches files from"
            ));
        }
        if self.ingress.files_signing_key.is_none() {
            set.push(format!(
                "ingress.files_signing_key (or {ENV_PREFIX}__INGRESS__FILES_SIGNING_KEY), a random secret of \
                 {MIN_SIGNING_KEY_LEN} characters or more (e.g. `openssl rand -hex 32`), the same for the ingress and \
                 the relay"
            ));
        }
        format!("set {}", set.join("; and "))
    }

    /// See [`FilesSetup`].
    pub fn files(&self) -> FilesSetup<'_> {
        match (&self.ingress.public_url, &self.ingress.files_signing_key) {
            (Some(public_url), Some(signing_key)) => FilesSetup::Enabled { public_url, signing_key },
            (None, Some(_)) => FilesSetup::Disabled { missing: "ingress.public_url" },
            (Some(_), None) => FilesSetup::Disabled { missing: "ingress.files_signing_key" },
            (None, None) => FilesSetup::Disabled { missing: "ingress.public_url and ingress.files_signing_key" },
        }
    }
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && crate::lark::ids::token_chars(s)
}

/// How a channel id is written in an environment variable name.
pub fn env_token(id: &str) -> String {
    id.to_ascii_uppercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const MINIMAL: &str = r#"
[nats]
namespace = "t1"

[[channels]]
id = "support"
app_id = "cli_a"
app_secret = "s3cret"
encrypt_key = "ek"
fastgpt_base_url = "http://127.0.0.1:3000/api"
fastgpt_api_key = "fastgpt-key"

[[channels]]
id = "sales-eu"
app_id = "cli_b"
app_secret = "other"
lark_base_url = "https://open.larksuite.com"
fastgpt_base_url = "https://cloud.fastgpt.io/api"
fastgpt_api_key = "fastgpt-key2"
"#;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn err(text: &str, e: &[(&str, &str)]) -> String {
        Settings::from_toml_with_env(text, &env(e)).expect_err("must fail").to_string()
    }

    #[test]
    fn loads_with_defaults() {
        let s = Settings::from_toml_with_env(MINIMAL, &env(&[])).expect("valid");
        assert_eq!(s.nats.namespace, "t1");
        assert_eq!(s.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(s.ingress.body_limit_bytes, 1024 * 1024);
        assert_eq!(s.relay.fastgpt_timeout_secs, 120);
        assert_eq!(s.channels.len(), 2);
        assert_eq!(s.channels[0].lark_base_url.as_str(), "https://open.feishu.cn/");
        assert_eq!(s.channels[1].lark_base_url.host_str(), Some("open.larksuite.com"));
        assert!(s.channels[1].encrypt_key.is_none());
    }

    #[test]
    fn the_example_config_in_the_repo_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config.example.toml");
        let text = std::fs::read_to_string(path).expect("deploy/config.example.toml exists");
        Settings::from_toml_with_env(&text, &env(&[])).expect("the example config is valid");
    }

    #[test]
    fn environment_overrides_sections_and_channels() {
        let s = Settings::from_toml_with_env(
            MINIMAL,
            &env(&[
                ("LARK_BRIDGE__NATS__URL", "nats://nats:4222"),
                ("LARK_BRIDGE__INGRESS__BODY_LIMIT_BYTES", "2048"),
                ("LARK_BRIDGE__CHANNELS__SALES_EU__APP_SECRET", "from-env"),
                ("LARK_BRIDGE__CHANNELS__0__FASTGPT_API_KEY", "fastgpt-env"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.nats.url, "nats://nats:4222");
        assert_eq!(s.ingress.body_limit_bytes, 2048);
        let exposed = |s: &Option<SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
        assert_eq!(exposed(&s.channels[1].app_secret).as_deref(), Some("from-env"));
        assert_eq!(exposed(&s.channels[0].fastgpt_api_key).as_deref(), Some("fastgpt-env"));
        assert_eq!(exposed(&s.channels[0].app_secret).as_deref(), Some("s3cret"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = err(&MINIMAL.replace("app_id = \"cli_a\"\n", ""), &[]);
        assert!(e.contains("app_id"), "{e}");
        let e = err(&MINIMAL.replace("namespace = \"t1\"", "namespace = \"a.b\""), &[]);
        assert!(e.contains("nats.namespace"), "{e}");
        let e = err(&MINIMAL.replace("id = \"sales-eu\"", "id = \"support\""), &[]);
        assert!(e.contains("channels[1].id") && e.contains("twice"), "{e}");
        let e = err(&MINIMAL.replace("encrypt_key = ", "encrypt_kye = "), &[]);
        assert!(e.contains("encrypt_kye"), "{e}");
        let e = err(MINIMAL, &[("LARK_BRIDGE__INGRESS__BODY_LIMIT_BYTES", "lots")]);
        assert!(e.contains("body_limit_bytes"), "{e}");
        let e = err(MINIMAL, &[("LARK_BRIDGE__CHANNELS__NOPE__APP_SECRET", "x")]);
        assert!(e.contains("LARK_BRIDGE__CHANNELS__NOPE__APP_SECRET"), "{e}");
        let e = err(&MINIMAL.replace("http://127.0.0.1:3000/api", "not a url"), &[]);
        assert!(e.contains("fastgpt_base_url"), "{e}");
        let e = err(&MINIMAL.replace("[nats]", "[ingress]\nlisten = \"nowhere\"\n[nats]"), &[]);
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn stream_limits_have_defaults_and_errors_name_the_key() {
        let s = Settings::from_toml_with_env(MINIMAL, &env(&[])).expect("valid");
        assert_eq!(s.nats.events_max_bytes, 512 * 1024 * 1024);
        assert_eq!(s.nats.dead_max_age_days, 14);
        let s = Settings::from_toml_with_env(
            &MINIMAL.replace("[nats]", "[nats]\nurl = \"nats://a:4222, nats://b:4222,nats://c:4222\""),
            &env(&[("LARK_BRIDGE__NATS__EVENTS_MAX_BYTES", "2048")]),
        )
        .expect("a list of servers and a small limit are valid");
        assert_eq!(s.nats.events_max_bytes, 2048);
        let e = err(MINIMAL, &[("LARK_BRIDGE__NATS__EVENTS_MAX_BYTES", "10")]);
        assert!(e.contains("nats.events_max_bytes"), "{e}");
        let e = err(MINIMAL, &[("LARK_BRIDGE__NATS__BUCKET_MAX_BYTES", "0")]);
        assert!(e.contains("nats.bucket_max_bytes"), "{e}");
        let e = err(MINIMAL, &[("LARK_BRIDGE__NATS__DEAD_MAX_AGE_DAYS", "0")]);
        assert!(e.contains("nats.dead_max_age_days"), "{e}");
        let e = err(MINIMAL, &[("LARK_BRIDGE__NATS__URL", "nats://a:4222,,")]);
        assert!(e.contains("nats.url"), "{e}");
    }

    #[test]
    fn subscription_and_long_connections() {
        let s = Settings::from_toml_with_env(MINIMAL, &env(&[])).expect("valid");
        assert_eq!(s.channels[0].subscription, Subscription::Webhook, "the default");
        assert_eq!(s.ingress.long_connections_per_channel, 1);
        let lc = MINIMAL.replace("id = \"sales-eu\"", "id = \"sales-eu\"\nsubscription = \"long_connection\"");
        let s = Settings::from_toml_with_env(&lc, &env(&[("LARK_BRIDGE__INGRESS__LONG_CONNECTIONS_PER_CHANNEL", "3")]))
            .expect("valid");
        assert_eq!(s.channels[1].subscription, Subscription::LongConnection);
        assert_eq!(s.ingress.long_connections_per_channel, 3);
        let e = err(MINIMAL, &[("LARK_BRIDGE__INGRESS__LONG_CONNECTIONS_PER_CHANNEL", "51")]);
        assert!(e.contains("ingress.long_connections_per_channel"), "{e}");
        let e = err(&MINIMAL.replace("id = \"sales-eu\"", "id = \"sales-eu\"\nsubscription = \"websocket\""), &[]);
        assert!(e.contains("websocket"), "{e}");
    }

    #[test]
    fn files_need_the_public_url_and_the_signing_key() {
        let s = Settings::from_toml_with_env(MINIMAL, &env(&[])).expect("valid");
        assert_eq!(s.relay.max_file_bytes, 20 * 1024 * 1024);
        assert_eq!(s.nats.files_max_age_secs, 24 * 3600);
        let FilesSetup::Disabled { missing } = s.files() else { panic!("off by default") };
        assert_eq!(missing, "ingress.public_url and ingress.files_signing_key");
        let fix = s.files_fix();
        assert!(fix.contains("LARK_BRIDGE__INGRESS__PUBLIC_URL") && fix.contains("openssl rand"), "{fix}");
        let key = "k".repeat(32);
        let only_key = [("LARK_BRIDGE__INGRESS__FILES_SIGNING_KEY", key.as_str())];
        let s = Settings::from_toml_with_env(MINIMAL, &env(&only_key)).expect("valid");
        assert!(matches!(s.files(), FilesSetup::Disabled { missing: "ingress.public_url" }));
        let both = [only_key[0], ("LARK_BRIDGE__INGRESS__PUBLIC_URL", "https://bot.example.com")];
        let s = Settings::from_toml_with_env(MINIMAL, &env(&both)).expect("valid");
        let FilesSetup::Enabled { public_url, .. } = s.files() else { panic!("on with both") };
        assert_eq!(public_url.as_str(), "https://bot.example.com/");
        assert!(!format!("{s:?}").contains(&key), "the signing key is a secret");

        let e = err(MINIMAL, &[("LARK_BRIDGE__INGRESS__FILES_SIGNING_KEY", "short")]);
        assert!(e.contains("ingress.files_signing_key"), "{e}");
        let e = err(MINIMAL, &[("LARK_BRIDGE__INGRESS__PUBLIC_URL", "ftp://bot.example.com")]);
        assert!(e.contains("ingress.public_url"), "{e}");
        let e = err(MINIMAL, &[("LARK_BRIDGE__RELAY__MAX_FILE_BYTES", "104857601")]);
        assert!(e.contains("relay.max_file_bytes") && e.contains("100 MB"), "{e}");
        let e = err(
            MINIMAL,
            &[("LARK_BRIDGE__NATS__FILES_MAX_BYTES", "4096"), ("LARK_BRIDGE__RELAY__MAX_FILE_BYTES", "8192")],
        );
        assert!(e.contains("relay.max_file_bytes") && e.contains("nats.files_max_bytes"), "{e}");
        let e = err(MINIMAL, &[("LARK_BRIDGE__NATS__FILES_MAX_AGE_SECS", "0")]);
        assert!(e.contains("nats.files_max_age_secs"), "{e}");
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = Settings::from_toml_with_env(MINIMAL, &env(&[])).expect("valid");
        let dbg = format!("{s:?}");
        for secret in ["s3cret", "fastgpt-key", "\"ek\""] {
            assert!(!dbg.contains(secret), "{secret} leaked in {dbg}");
        }
    }
}
