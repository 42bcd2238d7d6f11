//! `loadgen`: the load generator of lark-bridge's benchmark (`deploy/bench/run`).
//!
//! - `loadgen ingress`: sends unique, encrypted, signed `im.message.receive_v1`
//!   events to a Request URL, at a fixed rate (`--rate`) or as fast as
//!   `--concurrency` connections allow, for `--duration`; reports throughput,
//!   status counts and acknowledgement latency percentiles. The requests are
//!   built (encrypted, signed, serialised to raw HTTP/1.1 bytes) before the
//!   timed run, and sent over plain keep-alive connections, so the generator
//!   spends its time on the socket, not on crypto or JSON.
//! - `loadgen e2e`: starts a fake Lark and a fake FastGPT (instant answers) in
//!   this process, sends events at a rate to an ingress whose channel points at
//!   them, and measures event sent → reply received by the fake Lark.
//! - `loadgen stream`: the same fakes, with FastGPT writing each answer at a
//!   set pace (`--pace 40x100ms`: 40 deltas over 4 s); asks `--in-flight`
//!   questions at once, one per private chat, for `--rounds` rounds, each
//!   round waiting for every answer to be complete. Reports FastGPT's first
//!   delta → the first text the fake Lark shows, the texts each answer showed,
//!   every Lark call made meanwhile (per answer, and those Lark refused as
//!   over a rate limit: the fake enforces CardKit's per-app limits), the
//!   CardKit operations per card per second, and (`--cpu-pid`) the CPU time
//!   processes spent per answer. Run it once with the channel's `streaming = true` and once with
//!   `false` (FastGPT then answers whole after the same time) to compare.
//! - `loadgen long-connection`: acts as Lark's long-connection server (the
//!   fake Lark's endpoint and WebSocket on `--listen`) for an ingress whose
//!   channel has `subscription = "long_connection"` and that `lark_base_url`;
//!   pushes events on its connection with `--window` in flight and measures
//!   push → acknowledgement (stored in JetStream) per event.
//! - `loadgen floor-server`: a bare axum server answering 200 to every POST.
//! - `loadgen jetstream`: raw durable JetStream publish throughput with N in flight.
//! - `loadgen cleanup`: deletes the streams and buckets of a namespace.
//!
//! Every run is bounded in count (`--max-events`) and time (`--duration`, a
//! per-request timeout), and only loopback addresses are accepted as targets.
//!
//! In rate mode a request's latency runs from the moment it was due when all
//! connections were busy (the server held them up: coordinated omission is
//! corrected), and from the moment it was written otherwise (the timer's own
//! millisecond granularity is not charged to the server).

mod cleanup;
mod e2e;
mod events;
mod fakes;
mod floor_server;
mod http;
mod ingress;
mod jetstream;
mod long_connection;
mod loopback;
mod report;
mod stream;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cleanup::CleanupArgs;
use e2e::E2eArgs;
use floor_server::FloorArgs;
use ingress::IngressArgs;
use jetstream::JetstreamArgs;
use long_connection::LongConnectionArgs;
use stream::StreamArgs;

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator of lark-bridge's benchmark (loopback targets only)")]
struct Cli {
    /// Worker threads of the generator's runtime (the floor server uses the default, one per core).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encrypted, signed events to an ingress (or any Request URL), as fast as
    /// possible or at a fixed rate; acknowledgement latency percentiles.
    Ingress(IngressArgs),
    /// Event sent → reply received by an in-process fake Lark, with an
    /// in-process fake FastGPT answering at once; the bridge runs elsewhere.
    E2e(E2eArgs),
    /// Streamed answers through the bridge: FastGPT's first delta → first
    /// visible text, card operations per second, CPU per answer.
    Stream(StreamArgs),
    /// Lark's long-connection server for an ingress: events pushed on its
    /// WebSocket, push → acknowledgement latency and throughput.
    LongConnection(LongConnectionArgs),
    /// A bare axum server that answers 200 to POST: the floor of the HTTP path.
    FloorServer(FloorArgs),
    /// Raw durable JetStream publish throughput with N publishes in flight.
    Jetstream(JetstreamArgs),
    /// Deletes the streams and KV buckets of a namespace (after a benchmark).
    Cleanup(CleanupArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if !matches!(cli.command, Command::FloorServer(_)) {
        runtime.worker_threads(cli.threads.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Ingress(args) => ingress::run(args).await,
            Command::E2e(args) => e2e::run(args).await,
            Command::Stream(args) => stream::run(args).await,
            Command::LongConnection(args) => long_connection::run(args).await,
            Command::FloorServer(args) => floor_server::run(args).await,
            Command::Jetstream(args) => jetstream::run(args).await,
            Command::Cleanup(args) => cleanup::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A duration flag: `10s`, `500ms`, `1m`, or seconds; more than 0, at most an hour.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("not a duration: {s:?} (use 10s, 500ms, 1m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {s:?} (use ms, s or m)")),
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(format!("{s:?} must be more than 0 and at most 1 hour"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("2h").is_err());
    }
}
