//! `/healthz`, `/readyz` and `/metrics`, the same on every service.
//!
//! - `/healthz`: the process answers (liveness).
//! - `/readyz`: NATS is connected and every readiness check the service
//!   registered holds (its consumer is bound, its topology exists); 503 with
//!   the failing checks otherwise, so Kubernetes stops routing to it.
//! - `/metrics`: Prometheus text from the process-wide recorder.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::nats::is_connected;

/// Seconds: from a JetStream publish (about a millisecond) to a slow FastGPT
/// workflow (minutes).
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Histograms (not summaries), so replicas can be aggregated.
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then this
            // handle just renders nothing, which the metrics tests would show.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// One named condition of readiness.
#[derive(Clone)]
pub struct Check {
    name: &'static str,
    ok: Arc<AtomicBool>,
}

impl Check {
    pub fn set(&self, ok: bool) {
        self.ok.store(ok, Ordering::Relaxed);
    }
}

/// What `/readyz` looks at.
#[derive(Clone)]
pub struct Health {
    nats: Option<async_nats::Client>,
    checks: Arc<std::sync::Mutex<Vec<Check>>>,
}

impl Health {
    pub fn new(nats: Option<async_nats::Client>) -> Self {
        metrics_handle();
        Self { nats, checks: Default::default() }
    }

    /// Registers a condition, false until set.
    pub fn check(&self, name: &'static str) -> Check {
        let c = Check { name, ok: Arc::new(AtomicBool::new(false)) };
        if let Ok(mut checks) = self.checks.lock() {
            checks.push(c.clone());
        }
        c
    }

    /// Names of the conditions that do not hold now.
    pub fn failing(&self) -> Vec<&'static str> {
        let mut failing = Vec::new();
        if let Some(client) = &self.nats {
            if !is_connected(client) {
                failing.push("nats_connected");
            }
        }
        if let Ok(checks) = self.checks.lock() {
            failing.extend(checks.iter().filter(|c| !c.ok.load(Ordering::Relaxed)).map(|c| c.name));
        }
        failing
    }

    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(|| async { metrics_handle().render() }))
            .with_state(self.clone())
    }
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    let failing = health.failing();
    let status = if failing.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({ "ready": failing.is_empty(), "failing": failing })))
}
