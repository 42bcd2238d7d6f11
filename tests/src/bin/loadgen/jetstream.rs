//! `loadgen jetstream`: raw durable JetStream publish throughput, the floor
//! of the ingress's publish before its 200.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use clap::Args;
use lark_bridge_tests::lark_events::random_hex;

use crate::events::{EventArgs, EventFactory};
use crate::http::Stats;
use crate::loopback::nats_loopback;
use crate::parse_duration;
use crate::report::{latency_line, new_histogram, record, Report};

#[derive(Args)]
pub(crate) struct JetstreamArgs {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Publishes in flight at once.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 2_000_000)]
    max_messages: usize,
    /// Payload bytes (0: the size of a plain benchmark event, as ingress publishes it).
    #[arg(long, default_value_t = 0)]
    size: usize,
    /// Prefix of the stream and subjects (a file-backed stream `{ns}_js`, deleted afterwards).
    #[arg(long)]
    namespace: Option<String>,
    #[arg(long)]
    report: Option<PathBuf>,
}

/// JetStream on the NATS server at `url`, which must be on the loopback.
pub(crate) async fn connect(url: &str) -> anyhow::Result<jetstream::Context> {
    nats_loopback(url)?;
    let client = async_nats::connect(url).await.with_context(|| format!("cannot connect to {url}"))?;
    Ok(jetstream::new(client))
}

pub(crate) async fn run(args: JetstreamArgs) -> anyhow::Result<()> {
    let js = connect(&args.nats).await?;
    let ns = args.namespace.clone().unwrap_or_else(|| format!("benchjs{}", random_hex(4)));
    let stream = format!("{ns}_js");
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{ns}.js.>")],
        retention: jetstream::stream::RetentionPolicy::WorkQueue,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot create stream {stream}"))?;
    let result = jetstream_run(&args, &js, &ns).await;
    let deleted = js.delete_stream(&stream).await;
    let (stats, elapsed, size) = result?;
    deleted.with_context(|| format!("cannot delete stream {stream}"))?;
    let hist = stats.hist.unwrap_or_else(new_histogram);
    let throughput = stats.sent as f64 / elapsed;
    println!("target      JetStream {} (file storage, stream {stream}, deleted afterwards)", args.nats);
    println!(
        "mode        {} publishes in flight, {size}-byte payload, Nats-Msg-Id set, for {:?}",
        args.in_flight, args.duration
    );
    println!("acked       {} in {elapsed:.2} s, {} errors", stats.sent, stats.errors);
    println!("throughput  {throughput:.0} acknowledged publishes per second");
    println!("ack latency {}", latency_line(&hist));
    let mut report = Report::new();
    report.set("in_flight", args.in_flight);
    report.set("size", size);
    report.set("ok", stats.sent);
    report.set("errors", stats.errors);
    report.set("elapsed_s", format!("{elapsed:.3}"));
    report.set("throughput", format!("{throughput:.0}"));
    report.latency("", &hist);
    report.write(args.report.as_ref())
}

async fn jetstream_run(args: &JetstreamArgs, js: &jetstream::Context, ns: &str) -> anyhow::Result<(Stats, f64, usize)> {
    let payload = if args.size == 0 {
        let factory = EventFactory::new(
            &EventArgs {
                app_id: "cli_bench".into(),
                encrypt_key: "k".into(),
                verification_token: "t".into(),
                chats: None,
            },
            1000,
        );
        bytes::Bytes::from(factory.event(0).to_string().into_bytes())
    } else {
        bytes::Bytes::from(vec![b'x'; args.size])
    };
    let size = payload.len();
    let counter = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + args.duration;
    let run = random_hex(4);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.in_flight.clamp(1, 4096) {
        let (js, payload, counter, ns, run) =
            (js.clone(), payload.clone(), counter.clone(), ns.to_owned(), run.clone());
        let max = args.max_messages;
        tasks.spawn(async move {
            let mut stats = Stats { hist: Some(new_histogram()), ..Stats::default() };
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if i >= max || now >= deadline {
                    break;
                }
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("bench:{run}:{i}").as_str());
                let subject = format!("{ns}.js.c{}", i % 1000);
                let acked = async {
                    js.publish_with_headers(subject, headers, payload.clone()).await?.await?;
                    Ok::<_, async_nats::Error>(())
                };
                match tokio::time::timeout(Duration::from_secs(5), acked).await {
                    Ok(Ok(())) => {
                        if let Some(h) = stats.hist.as_mut() {
                            record(h, now, Instant::now());
                        }
                        stats.sent += 1;
                        stats.last_answer = Some(Instant::now());
                    }
                    _ => stats.errors += 1,
                }
            }
            stats
        });
    }
    let mut total = Stats::default();
    while let Some(stats) = tasks.join_next().await {
        total.merge(stats.context("a publishing task failed")?);
    }
    let elapsed = total.last_answer.unwrap_or(start).duration_since(start).as_secs_f64().max(1e-9);
    Ok((total, elapsed, size))
}
