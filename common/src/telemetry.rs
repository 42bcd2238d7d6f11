//! Logs: JSON lines for production, text for a terminal, filtered by
//! `RUST_LOG` or `[telemetry] log_level`. Set up once per process; a second
//! call (several services in one test process) keeps the first set-up.
//!
//! Message text is never logged at info level, and secrets never at all: they
//! are `SecretString`s whose `Debug` is redacted.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, TelemetrySettings};

pub fn init(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stdout);
    // `try_init` fails only when a subscriber is already installed: keep it.
    let _ = match settings.log_format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.with_target(true).try_init(),
    };
}
