//! `[telemetry]`: what the logs look like and where traces go.

use serde::Deserialize;
use url::Url;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `tracing` filter directives, e.g. `info` or `info,relay=debug`; `RUST_LOG` wins.
    pub log_level: String,
    pub otlp_endpoint: Option<Url>,
}
