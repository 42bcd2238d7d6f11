//! How full each stream and bucket is against its size limit, and whether its
//! settings still match the configuration: read from stream info, for the
//! `lark_bridge_stream_*` gauges (and the alerts on them) and for `--check`.
//! A limit refuses writes rather than dropping old messages, so a full stream
//! shows as a stalled writer; these numbers say which stream and why.

use std::time::Duration;

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

use super::{describe, diff, Change, Topology};

/// From this share of its limit on, a stream is reported as nearly full.
pub const NEARLY_FULL: f64 = 0.8;
/// How often the services sample the streams for the gauges.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// One stream (or bucket) as sampled.
#[derive(Debug, Clone)]
pub struct Usage {
    pub stream: String,
    pub bytes: u64,
    pub messages: u64,
    /// The stream's own size limit (None: unlimited).
    pub max_bytes: Option<u64>,
    /// Settings that differ from the configuration.
    pub differs: Vec<Change>,
}

impl Usage {
    /// The share of its size limit in use (0.0 without a limit).
    pub fn fill(&self) -> f64 {
        match self.max_bytes {
            Some(max) if max > 0 => self.bytes as f64 / max as f64,
            _ => 0.0,
        }
    }

    pub fn nearly_full(&self) -> bool {
        self.fill() >= NEARLY_FULL
    }

    /// Whether it is at its limit: less room left than two messages of its
    /// average size (a message that does not fit whole is refused).
    pub fn full(&self) -> bool {
        match self.max_bytes {
            Some(max) => {
                let average = self.bytes.checked_div(self.messages).unwrap_or(0);
                max.saturating_sub(self.bytes) < average.saturating_mul(2).max(1)
            }
            None => false,
        }
    }

    /// `ns_events: 410 MiB of 512 MiB (80 %), 1200 messages`.
    pub fn describe(&self) -> String {
        let mut s = match self.max_bytes {
            Some(max) => format!(
                "{}: {} of {} ({:.0} %), {} messages",
                self.stream,
                human(self.bytes),
                human(max),
                self.fill() * 100.0,
                self.messages
            ),
            None => format!("{}: {}, {} messages, NO size limit", self.stream, human(self.bytes), self.messages),
        };
        if !self.differs.is_empty() {
            s.push_str(&format!("; differs from the configuration: {}", describe(&self.differs)));
        }
        s
    }
}

fn human(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} B")
    }
}

/// Samples every stream and bucket of the topology that exists; a stream
/// that cannot be read is left out (NATS being away shows elsewhere).
pub async fn sample(js: &jetstream::Context, topology: &Topology) -> Vec<Usage> {
    let mut out = Vec::new();
    for want in topology.all_configs() {
        let Ok(stream) = js.get_stream(&want.name).await else { continue };
        let info = stream.cached_info();
        out.push(Usage {
            stream: want.name.clone(),
            bytes: info.state.bytes,
            messages: info.state.messages,
            max_bytes: u64::try_from(info.config.max_bytes).ok().filter(|b| *b > 0),
            differs: {
                let d = diff(&info.config, &want);
                d.in_place.into_iter().chain(d.fixed).collect()
            },
        });
    }
    out
}

/// Sets the gauges from a sample.
pub fn record(usages: &[Usage]) {
    for u in usages {
        let stream = u.stream.clone();
        metrics::gauge!(crate::metric_names::STREAM_BYTES, "stream" => stream.clone()).set(u.bytes as f64);
        metrics::gauge!(crate::metric_names::STREAM_MESSAGES, "stream" => stream.clone()).set(u.messages as f64);
        metrics::gauge!(crate::metric_names::STREAM_LIMIT_BYTES, "stream" => stream.clone())
            .set(u.max_bytes.map_or(0.0, |m| m as f64));
        metrics::gauge!(crate::metric_names::STREAM_SETTINGS_DIFFER, "stream" => stream).set(u.differs.len() as f64);
    }
}

/// Samples every [`SAMPLE_EVERY`] into the gauges until `shutdown`, and logs
/// a warning when a stream is nearly full.
pub fn spawn_sampler(
    js: jetstream::Context,
    topology: Topology,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let usages = sample(&js, &topology).await;
            record(&usages);
            for u in usages.iter().filter(|u| u.nearly_full()) {
                tracing::warn!(usage = %u.describe(), "JetStream stream nearly full: writes are refused when full");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_description() {
        let u = Usage {
            stream: "ns_events".into(),
            bytes: 850 * 1024 * 1024,
            messages: 12,
            max_bytes: Some(1024 * 1024 * 1024),
            differs: Vec::new(),
        };
        assert!(u.nearly_full() && !u.full());
        let at_limit = Usage { bytes: 1000, messages: 10, max_bytes: Some(1150), ..u.clone() };
        assert!(at_limit.full(), "less room than two 100-byte messages");
        assert!(!Usage { max_bytes: Some(1250), ..at_limit.clone() }.full());
        assert_eq!(u.describe(), "ns_events: 850.0 MiB of 1024.0 MiB (83 %), 12 messages");
        let unlimited = Usage { max_bytes: None, bytes: 10, ..u };
        assert!(!unlimited.nearly_full() && !unlimited.full());
        assert!(unlimited.describe().contains("NO size limit"));
    }
}
