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
//!
//! Each section (`[nats]`, `[ingress]`, `[relay]`, `[responder]`,
//! `[telemetry]`, `[[channels]]`) has a file saying what its keys mean.
//! `load` reads the file and the environment, `defaults` holds every
//! default value, `validate` what each section accepts, and `files` whether
//! files are on.

mod channels;
mod defaults;
mod files;
mod ingress;
mod load;
mod nats;
mod relay;
mod responder;
mod telemetry;
mod validate;

use serde::Deserialize;

pub use channels::{ChannelSettings, Subscription};
pub use files::FilesSetup;
pub use ingress::IngressSettings;
pub use load::{env_token, CONFIG_ENV, ENV_PREFIX};
pub use nats::NatsSettings;
pub use relay::RelaySettings;
pub use responder::ResponderSettings;
pub use telemetry::{LogFormat, TelemetrySettings};
pub use validate::{MAX_FILES_AGE_SECS, MAX_FILE_BYTES, MIN_SIGNING_KEY_LEN};

/// A configuration that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no configuration file: pass --config FILE or set {CONFIG_ENV}")]
    NoFile,
    #[error("configuration file {path}: {source}")]
    Load {
        path: std::path::PathBuf,
        #[source]
        source: ::config::ConfigError,
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

#[cfg(test)]
mod tests;
