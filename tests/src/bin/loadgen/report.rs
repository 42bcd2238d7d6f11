//! What a run prints and writes: latency histograms in milliseconds, the
//! lines of the common load report, and the `key=value` report file
//! `deploy/bench/run` reads back (`--report`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use hdrhistogram::Histogram;

use crate::http::{LoadArgs, Stats, Target};

/// A latency histogram in microseconds, 1 µs to 120 s, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("static histogram bounds are valid")
}

/// Records the time from `from` to `to` (at least 1 µs).
pub(crate) fn record(hist: &mut Histogram<u64>, from: Instant, to: Instant) {
    let micros = u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(micros.max(1));
}

/// The `key=value` lines of a run, in order.
pub(crate) struct Report {
    lines: Vec<(String, String)>,
}

impl Report {
    pub(crate) fn new() -> Self {
        Self { lines: Vec::new() }
    }

    pub(crate) fn set(&mut self, key: &str, value: impl ToString) {
        self.lines.push((key.to_owned(), value.to_string()));
    }

    pub(crate) fn latency(&mut self, prefix: &str, hist: &Histogram<u64>) {
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
            self.set(&format!("{prefix}{name}_ms"), ms(hist.value_at_quantile(q)));
        }
        self.set(&format!("{prefix}max_ms"), ms(hist.max()));
    }

    pub(crate) fn write(&self, path: Option<&PathBuf>) -> anyhow::Result<()> {
        let Some(path) = path else { return Ok(()) };
        let text: String = self.lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

fn ms(micros: u64) -> String {
    format!("{:.3}", micros as f64 / 1000.0)
}

pub(crate) fn latency_line(hist: &Histogram<u64>) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {} (ms, {} samples)",
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.9)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.value_at_quantile(0.999)),
        ms(hist.max()),
        hist.len()
    )
}

pub(crate) fn statuses_line(stats: &Stats) -> String {
    let mut s: Vec<String> = stats.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    if stats.errors > 0 {
        let kinds: Vec<String> = stats.error_kinds.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        s.push(format!("errors: {} ({})", stats.errors, kinds.join(", ")));
    }
    list_or_none(&s, ", ")
}

/// `parts` joined with `separator`, or `none`.
pub(crate) fn list_or_none(parts: &[String], separator: &str) -> String {
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(separator)
    }
}

fn mode_line(load: &LoadArgs) -> String {
    match load.rate {
        Some(r) => format!("fixed rate {r}/s over up to {} connections", load.concurrency),
        None => format!("as fast as possible, {} connections", load.concurrency),
    }
}

/// The common report of a load run.
pub(crate) fn report_load(
    report: &mut Report,
    target: &Target,
    load: &LoadArgs,
    stats: &Stats,
    start: Instant,
    built: usize,
) {
    let end = stats.last_answer.unwrap_or(start).max(start);
    let elapsed = end.duration_since(start).as_secs_f64().max(1e-9);
    let ok = stats.ok();
    let non_2xx: u64 = stats.statuses.values().sum::<u64>() - ok;
    let throughput = ok as f64 / elapsed;
    println!("target      {}{}", target.addr, target.path);
    println!("mode        {}, for {:?}", mode_line(load), load.duration);
    let again = if load.repeat { ", sent again in a loop" } else { "" };
    println!("sent        {} (of {built} built{again}), answered {}", stats.sent, stats.statuses.values().sum::<u64>());
    println!("statuses    {}", statuses_line(stats));
    println!("throughput  {throughput:.0} accepted (2xx) per second over {elapsed:.2} s");
    if let Some(h) = &stats.hist {
        println!("ack latency {}", latency_line(h));
    }
    if stats.sent as usize >= built && load.rate.is_none() && !load.repeat {
        println!("note        every pre-built event was sent before the time was up: raise --max-events");
    }
    report.set("target", format!("{}{}", target.addr, target.path));
    report.set("rate", load.rate.map(|r| r.to_string()).unwrap_or_else(|| "max".to_owned()));
    report.set("concurrency", load.concurrency);
    report.set("sent", stats.sent);
    report.set("ok", ok);
    report.set("non_2xx", non_2xx);
    report.set("errors", stats.errors);
    report.set("elapsed_s", format!("{elapsed:.3}"));
    report.set("throughput", format!("{throughput:.0}"));
    if let Some(h) = &stats.hist {
        report.latency("", h);
    }
}
