//! `loadgen long-connection`: the fake Lark's long-connection server for an
//! ingress that receives its events there; push → acknowledgement per event.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use hdrhistogram::Histogram;
use lark_bridge_tests::fake_lark::{FakeApp, FakeLark};
use lark_bridge_tests::lark_events::EventBuilder;

use crate::loopback::require_loopback;
use crate::parse_duration;
use crate::report::{latency_line, new_histogram};

#[derive(Args)]
pub(crate) struct LongConnectionArgs {
    /// Where the fake Lark listens (endpoint; the WebSocket gets a port of its
    /// own): the channel's `lark_base_url` is `http://` this.
    #[arg(long, default_value = "127.0.0.1:18180")]
    listen: SocketAddr,
    /// The channel's `app_id` and `app_secret`.
    #[arg(long, default_value = "cli_bench")]
    app_id: String,
    #[arg(long, default_value = "bench-app-secret")]
    app_secret: String,
    /// Events pushed in the timed run (after 1,000 of warm-up).
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Events pushed and not yet acknowledged, at most.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// How long to wait for the ingress to connect.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    connect_timeout: Duration,
    /// The run stops after this long, whatever is left.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    duration: Duration,
}

pub(crate) async fn run(args: LongConnectionArgs) -> anyhow::Result<()> {
    require_loopback(&args.listen, "--listen")?;
    let app = FakeApp::new(&args.app_id, &args.app_secret, "ou_bench_bot");
    let lark = FakeLark::start_on(args.listen, vec![app]).await.context("cannot listen")?;
    let lc = lark.long_connection().clone();
    eprintln!(
        "fake Lark on http://{} (app {}): start the ingress with a long-connection channel whose lark_base_url is that",
        args.listen, args.app_id
    );
    let deadline = Instant::now() + args.connect_timeout;
    while lc.connections(&args.app_id) == 0 {
        if Instant::now() >= deadline {
            bail!("no long connection from the ingress within {:?}", args.connect_timeout);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let factory = EventBuilder::new(&args.app_id);
    let build = |n: usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let chat = format!("oc_lcbench{}", i % 64);
                let user = format!("ou_lcbench{}", i % 1024);
                factory
                    .p2p_text(&chat, &user, &format!("long-connection benchmark question {i}"))
                    .to_string()
                    .into_bytes()
            })
            .collect()
    };
    let warmup = lc_push_all(&lc, &args, build(1_000)).await?;
    eprintln!("warm-up: {} acknowledged", warmup.acked);
    let events = build(args.events);
    let started = Instant::now();
    let run = lc_push_all(&lc, &args, events).await?;
    let elapsed = started.elapsed().as_secs_f64();
    println!("long connection, one connection, window {}: {} events in {:.2} s", args.window, run.acked, elapsed);
    println!("  throughput {:.0} events/s (acknowledged with code 200 after the store)", run.ok as f64 / elapsed);
    println!("  acks by code: {:?}", run.codes);
    println!("  push → ack  {}", latency_line(&run.hist));
    Ok(())
}

struct LcRun {
    acked: usize,
    ok: usize,
    codes: BTreeMap<i64, usize>,
    hist: Histogram<u64>,
}

/// Pushes `events` keeping at most `--window` unacknowledged; returns once
/// every one is acknowledged (or the duration is over).
async fn lc_push_all(
    lc: &lark_bridge_tests::fake_lark::long_connection::LongConnection,
    args: &LongConnectionArgs,
    events: Vec<Vec<u8>>,
) -> anyhow::Result<LcRun> {
    let mut acks = lc.subscribe_acks();
    let deadline = Instant::now() + args.duration;
    let total = events.len();
    let mut events = events.into_iter();
    let mut pushed: HashMap<String, Instant> = HashMap::new();
    let mut run = LcRun { acked: 0, ok: 0, codes: BTreeMap::new(), hist: new_histogram() };
    loop {
        while pushed.len() < args.window.max(1) {
            let Some(e) = events.next() else { break };
            let at = Instant::now();
            let id = lc.push(&args.app_id, e, "event", 1).context("the ingress has no connection any more")?;
            pushed.insert(id, at);
        }
        if pushed.is_empty() || run.acked >= total {
            return Ok(run);
        }
        let Ok(Some(ack)) = tokio::time::timeout_at(deadline.into(), acks.recv()).await else {
            bail!("the run did not finish within {:?}: {} of {total} acknowledged", args.duration, run.acked);
        };
        let Some(at) = pushed.remove(&ack.message_id) else { continue };
        run.acked += 1;
        let code = ack.code.unwrap_or(-1);
        *run.codes.entry(code).or_default() += 1;
        if code == 200 {
            run.ok += 1;
        }
        let _ = run.hist.record(ack.at.saturating_duration_since(at).as_micros().max(1) as u64);
    }
}
