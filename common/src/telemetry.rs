//! Logs and traces, set up once per process.
//!
//! - **Logs**: JSON lines (or text for a terminal), filtered by `RUST_LOG` or
//!   `[telemetry] log_level`. Each line of a message's handling carries its
//!   `trace_id`, recorded on the root span of the handling (`ingress.callback`,
//!   `relay.event`, `responder.reply`) and shown in the line's span list.
//! - **Traces**: an OpenTelemetry tracer behind `tracing`, so every service
//!   has trace ids even with no exporter. Spans are exported with OTLP/HTTP
//!   when `[telemetry] otlp_endpoint` is set (`/v1/traces` is appended) or the
//!   standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//!   variables are; `OTEL_SERVICE_NAME` overrides the service name. The
//!   exporter speaks plain HTTP (a collector beside the bridge).
//! - **Propagation**: W3C `traceparent` goes into NATS headers on publish and
//!   comes out of them in the next service; outgoing HTTP calls carry it too.
//!
//! Message text is never logged at info level, and secrets never at all: they
//! are `SecretString`s whose `Debug` is redacted.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogFormat, TelemetrySettings};

/// W3C trace context, the one format the three services speak. Used directly
/// rather than through OpenTelemetry's global (which takes a lock on every
/// message); the global is set too, for libraries that look there.
static PROPAGATOR: std::sync::LazyLock<TraceContextPropagator> = std::sync::LazyLock::new(TraceContextPropagator::new);

/// Flushes the exporter when the service stops.
#[must_use = "keep the guard until the service stops, then call shutdown()"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Sends the spans still buffered.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing traces at shutdown failed");
        }
    }
}

fn exporter_wanted(settings: &TelemetrySettings) -> bool {
    settings.otlp_endpoint.is_some()
        || ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
}

fn exporter(settings: &TelemetrySettings) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::WithExportConfig;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(url) = &settings.otlp_endpoint {
        let base = url.as_str().trim_end_matches('/');
        let endpoint = if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") };
        builder = builder.with_endpoint(endpoint);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Installs logging and tracing for `service`. A second call in one process
/// (several services in one test) keeps the first subscriber.
pub fn init(service: &'static str, settings: &TelemetrySettings) -> TelemetryGuard {
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| format!("lark-bridge-{service}"));
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(name).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let mut exporter_error = None;
    let mut exporting = false;
    if exporter_wanted(settings) {
        match exporter(settings) {
            Ok(e) => {
                builder = builder.with_batch_exporter(e);
                exporting = true;
            }
            Err(e) => exporter_error = Some(e),
        }
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // tungstenite logs the whole handshake request at trace level, and with
    // it the secret ticket of Lark's long-connection URL: when some trace
    // level is on, that target is held at debug (never raised above it).
    let trace_on = filter.max_level_hint().is_none_or(|l| l == tracing::level_filters::LevelFilter::TRACE);
    let filter = match "tungstenite::handshake::client=debug".parse() {
        Ok(directive) if trace_on => filter.add_directive(directive),
        _ => filter,
    };
    let logs = match settings.log_format {
        LogFormat::Json => fmt::layer().json().with_current_span(false).with_span_list(true).boxed(),
        LogFormat::Text => fmt::layer().with_target(true).boxed(),
    };
    let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    let traces = if exporting {
        traces.boxed()
    } else {
        // Nothing leaves the process: the layer is there for trace ids (logs
        // and propagation), so skip what nobody would read: location, thread
        // and target attributes, busy/idle timings, and span events (log lines
        // copied into the span). Spans' own fields still become attributes.
        traces
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.is_span()))
            .boxed()
    };
    // `try_init` fails only when a subscriber is already installed: keep it.
    let _ = tracing_subscriber::registry().with(filter).with(logs).with(traces).try_init();
    if let Some(e) = exporter_error {
        tracing::error!(error = %e, "cannot set up the OTLP exporter ([telemetry] otlp_endpoint); running without it");
    }
    TelemetryGuard { provider }
}

/// Makes `span` a child of the trace in `headers` (if any) and records its
/// `trace_id` for the log lines.
pub fn continue_trace(span: &Span, headers: Option<&async_nats::HeaderMap>) {
    if let Some(h) = headers {
        let cx = PROPAGATOR.extract(&NatsHeaders(h));
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
    record_trace_id(span);
}

/// Writes the span's trace id into its `trace_id` field (declared `Empty`).
pub fn record_trace_id(span: &Span) {
    let id = span.context().span().span_context().trace_id();
    if id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(id));
    }
}

/// Puts the current span's `traceparent` into NATS headers.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    let cx = Span::current().context();
    PROPAGATOR.inject_context(&cx, &mut NatsHeadersMut(headers));
}

/// The current span's W3C headers, for an outgoing HTTP request.
pub fn http_headers() -> Vec<(String, String)> {
    let cx = Span::current().context();
    let mut map: HashMap<String, String> = HashMap::new();
    PROPAGATOR.inject_context(&cx, &mut map);
    map.into_iter().collect()
}

struct NatsHeaders<'a>(&'a async_nats::HeaderMap);
impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

struct NatsHeadersMut<'a>(&'a mut async_nats::HeaderMap);
impl Injector for NatsHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}
