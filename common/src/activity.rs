//! Volume and latency for the status page, right with any number of
//! replicas: each replica counts what it did per minute (and how long each
//! answer took, in a small log-scale histogram) for the last hour, and writes
//! that to the status bucket under a key of its own; the page adds the
//! replicas' counts and merges their histograms.
//!
//! The hot path only bumps two integers in a fixed array (no formatting, no
//! allocation after a channel's first event); the flush serialises the
//! minutes still in the window. A replica that stopped leaves a snapshot
//! whose minutes fall out of the window within the hour, and the page
//! removes a snapshot not rewritten for [`STALE_AFTER`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The window the page sums over, in minutes.
pub const WINDOW_MINUTES: u64 = 60;
/// Latency histogram buckets: bucket `i` holds latencies up to
/// `FIRST_BOUND_MS * GROWTH^i` (the last one everything longer), so any
/// quantile is known within 25 %.
pub const LATENCY_BUCKETS: usize = 48;
const FIRST_BOUND_MS: f64 = 10.0;
const GROWTH: f64 = 1.25;
/// A replica's snapshot not rewritten for this long is of a replica gone.
pub const STALE_AFTER: Duration = Duration::from_secs(2 * 3600);

/// `t` in whole minutes since the Unix epoch.
pub fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 60).unwrap_or(0)
}

/// The histogram bucket of a latency.
pub fn bucket_of(latency: Duration) -> usize {
    let ms = latency.as_secs_f64() * 1000.0;
    if ms <= FIRST_BOUND_MS {
        return 0;
    }
    let i = ((ms / FIRST_BOUND_MS).ln() / GROWTH.ln()).ceil();
    (i as usize).min(LATENCY_BUCKETS - 1)
}

/// The upper bound of bucket `i`, in milliseconds.
pub fn bucket_upper_ms(i: usize) -> f64 {
    FIRST_BOUND_MS * GROWTH.powi(i as i32)
}

#[derive(Clone, Copy)]
struct Slot {
    minute: u64,
    count: u32,
    latency: [u32; LATENCY_BUCKETS],
}

const EMPTY: Slot = Slot { minute: 0, count: 0, latency: [0; LATENCY_BUCKETS] };

/// One replica's last hour of one channel and service, a slot per minute.
pub struct Ring {
    slots: [Slot; WINDOW_MINUTES as usize],
}

impl Default for Ring {
    fn default() -> Self {
        Self { slots: [EMPTY; WINDOW_MINUTES as usize] }
    }
}

impl Ring {
    /// One more done at `now`, which took `latency` when known.
    pub fn record(&mut self, now: SystemTime, latency: Option<Duration>) {
        let minute = minute_of(now);
        let slot = &mut self.slots[(minute % WINDOW_MINUTES) as usize];
        if slot.minute != minute {
            *slot = Slot { minute, ..EMPTY };
        }
        slot.count = slot.count.saturating_add(1);
        if let Some(l) = latency {
            let b = &mut slot.latency[bucket_of(l)];
            *b = b.saturating_add(1);
        }
    }

    /// The minutes of the window ending at `now` that saw anything.
    pub fn snapshot(&self, replica: &str, now: SystemTime) -> Snapshot {
        let current = minute_of(now);
        let mut minutes: Vec<MinuteCount> = self
            .slots
            .iter()
            .filter(|s| s.count > 0 && s.minute + WINDOW_MINUTES > current)
            .map(|s| MinuteCount {
                minute: s.minute,
                count: s.count,
                latency: s.latency.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (i as u16, *n)).collect(),
            })
            .collect();
        minutes.sort_by_key(|m| m.minute);
        Snapshot {
            replica: replica.to_owned(),
            written_at: now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            minutes,
        }
    }
}

/// What one replica writes for one channel and service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub replica: String,
    /// Unix seconds.
    pub written_at: u64,
    pub minutes: Vec<MinuteCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteCount {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    pub count: u32,
    /// Non-empty histogram buckets: (bucket, how many).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<(u16, u32)>,
}

impl Snapshot {
    /// True when its replica has not written for [`STALE_AFTER`].
    pub fn is_stale(&self, now: SystemTime) -> bool {
        let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        now.saturating_sub(self.written_at) > STALE_AFTER.as_secs()
    }
}

/// Every replica's figures for the window ending at `now`, added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// How many in the last hour.
    pub count: u64,
    /// The median latency in milliseconds (within 25 %), when any was timed.
    pub p50_ms: Option<u64>,
    /// How many replicas reported anything in the window.
    pub replicas: usize,
}

pub fn merge<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>, now: SystemTime) -> Summary {
    let current = minute_of(now);
    let mut histogram = [0u64; LATENCY_BUCKETS];
    let mut summary = Summary::default();
    for s in snapshots {
        let mut reported = false;
        for m in s.minutes.iter().filter(|m| m.minute + WINDOW_MINUTES > current && m.minute <= current) {
            reported = true;
            summary.count += u64::from(m.count);
            for (b, n) in &m.latency {
                if let Some(slot) = histogram.get_mut(usize::from(*b)) {
                    *slot += u64::from(*n);
                }
            }
        }
        summary.replicas += usize::from(reported);
    }
    summary.p50_ms = quantile(&histogram, 0.5);
    summary
}

/// The `q` quantile of a histogram, as the geometric middle of its bucket.
fn quantile(histogram: &[u64; LATENCY_BUCKETS], q: f64) -> Option<u64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let upper = bucket_upper_ms(i);
            let lower = if i == 0 { 0.0 } else { bucket_upper_ms(i - 1) };
            let middle = if i == 0 { upper / 2.0 } else { (lower * upper).sqrt() };
            return Some(middle.round() as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u64, second: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(minute * 60 + second)
    }

    #[test]
    fn buckets_cover_the_range_in_order() {
        assert_eq!(bucket_of(Duration::from_millis(1)), 0);
        assert_eq!(bucket_of(Duration::from_millis(10)), 0);
        assert_eq!(bucket_of(Duration::from_millis(11)), 1);
        assert_eq!(bucket_of(Duration::from_secs(100_000)), LATENCY_BUCKETS - 1);
        for ms in [15u64, 120, 900, 4_000, 30_000] {
            let b = bucket_of(Duration::from_millis(ms));
            assert!(bucket_upper_ms(b) >= ms as f64 && bucket_upper_ms(b - 1) < ms as f64, "{ms} ms in bucket {b}");
        }
    }

    #[test]
    fn replicas_add_up_and_old_minutes_fall_out() {
        let (mut a, mut b) = (Ring::default(), Ring::default());
        // Replica a: 3 answers of about 1 s, one of them 61 minutes ago.
        a.record(at(1000, 5), Some(Duration::from_millis(1000)));
        a.record(at(1060, 5), Some(Duration::from_millis(1000)));
        a.record(at(1060, 30), Some(Duration::from_millis(1100)));
        // Replica b: 2 answers of about 4 s, and one untimed.
        b.record(at(1059, 0), Some(Duration::from_secs(4)));
        b.record(at(1061, 0), Some(Duration::from_secs(4)));
        b.record(at(1061, 1), None);
        let now = at(1061, 10);
        let snaps = [a.snapshot("a", now), b.snapshot("b", now)];
        assert_eq!(snaps[0].minutes.len(), 1, "the minute 61 minutes ago is out of the window: {:?}", snaps[0]);
        let sum = merge(&snaps, now);
        assert_eq!((sum.count, sum.replicas), (5, 2), "{sum:?}");
        // Timed: 1.0 s, 1.1 s, 4 s, 4 s: the median is about 1.1 s, never 4 s.
        let p50 = sum.p50_ms.expect("timed answers");
        assert!((900..=1400).contains(&p50), "{p50}");
        // An hour later nothing is left, and a snapshot untouched for hours is stale.
        let later = at(1125, 0);
        assert_eq!(merge(&snaps, later), Summary::default());
        assert!(!snaps[0].is_stale(now) && snaps[0].is_stale(at(1061 + 121, 10)));
    }

    #[test]
    fn a_slot_is_reused_for_a_new_minute_and_the_snapshot_round_trips() {
        let mut r = Ring::default();
        r.record(at(10, 0), None);
        r.record(at(70, 0), None);
        let s = r.snapshot("x", at(70, 1));
        assert_eq!(s.minutes, vec![MinuteCount { minute: 70, count: 1, latency: vec![] }]);
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(serde_json::from_str::<Snapshot>(&json).expect("parses"), s);
    }
}
