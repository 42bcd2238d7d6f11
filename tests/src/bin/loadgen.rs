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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use clap::{Args, Parser, Subcommand};
use common::config::NatsSettings;
use common::lark::crypto::EncryptKey;
use common::lark::signature::SIGNATURE_HEADER;
use common::topology::Topology;
use hdrhistogram::Histogram;
use lark_bridge_tests::fake_fastgpt::{FakeAnswer, FakeFastGpt};
use lark_bridge_tests::fake_lark::{FakeApp, FakeLark, Via};
use lark_bridge_tests::lark_events::{message_id_of, now_secs, random_hex, EventBuilder, SignedRequest};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// What the events look like, and the channel's secrets.
#[derive(Args, Clone)]
struct EventArgs {
    /// The Lark app the events are for (the channel's `app_id`).
    #[arg(long, default_value = "cli_bench")]
    app_id: String,
    /// The channel's Encrypt Key: events are encrypted and signed with it.
    #[arg(long, default_value = "bench-encrypt-key")]
    encrypt_key: String,
    /// The channel's Verification Token, put in `header.token`.
    #[arg(long, default_value = "bench-verification-token")]
    verification_token: String,
    /// Distinct private chats the events are spread over (0: one chat per
    /// event). Default: 1000 for `ingress`, one per event for `e2e` (Lark's limit
    /// of five messages per second into one chat would pace the replies).
    #[arg(long)]
    chats: Option<usize>,
}

/// How requests are sent.
#[derive(Args, Clone)]
struct LoadArgs {
    /// The Request URL (http, loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080/lark/bench/events")]
    url: String,
    /// Events per second; without it, as fast as the connections allow.
    #[arg(long)]
    rate: Option<f64>,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to send (`10s`, `500ms`, `1m`, or seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// At most this many events in the timed run (they are all built beforehand).
    #[arg(long, default_value_t = 250_000)]
    max_events: usize,
    /// Build at most 100,000 events and send them again in a loop, up to
    /// `--max-events` in all: only for a target that does not de-duplicate
    /// (the floor server), so that a fast one does not run out of events.
    #[arg(long)]
    repeat: bool,
    /// Events sent before the timed run, not measured (connections, caches, JIT).
    #[arg(long, default_value_t = 1000)]
    warmup: usize,
    /// Timeout of one request.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Write the figures as `key=value` lines to this file too.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Args)]
struct IngressArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    events: EventArgs,
    /// Before the run: one valid event must be accepted (2xx), one with a
    /// tampered signature refused (4xx); the run stops otherwise.
    #[arg(long)]
    check: bool,
    /// The target answers each event with a body naming its message_id (the
    /// Node peer does): count the answers that do, proving it decrypted them.
    #[arg(long)]
    echo_check: bool,
}

#[derive(Args)]
struct E2eArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    fakes: FakesArgs,
}

/// The fake Lark and fake FastGPT that `e2e` and `stream` run in-process.
#[derive(Args, Clone)]
struct FakesArgs {
    /// Where the fake Lark Open API listens (the channel's `lark_base_url`).
    #[arg(long, default_value = "127.0.0.1:18285")]
    lark_listen: SocketAddr,
    /// Where the fake FastGPT listens (the channel's `fastgpt_base_url` is `http://ADDR/api`).
    #[arg(long, default_value = "127.0.0.1:18286")]
    fastgpt_listen: SocketAddr,
    #[arg(long, default_value = "bench-app-secret")]
    app_secret: String,
    #[arg(long, default_value = "ou_bench_bot")]
    bot_open_id: String,
    #[arg(long, default_value = "fastgpt-bench-key")]
    fastgpt_key: String,
    /// After the last event, how long to wait for the missing replies.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    reply_timeout: Duration,
    /// URLs that must answer 200 before anything is sent (e.g. each service's /readyz).
    #[arg(long)]
    wait_ready: Vec<String>,
}

#[derive(Args)]
struct StreamArgs {
    /// The channel's Request URL (http, loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080/lark/bench/events")]
    url: String,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    fakes: FakesArgs,
    /// The channel's `streaming` in the bridge's configuration. `true`: each
    /// answer shows in a card as FastGPT writes it. `false`: each answer is
    /// sent whole; the fake FastGPT then answers after the time the streamed
    /// answer takes (`--pace`), in one piece, so both runs keep as many
    /// answers in flight for as long.
    #[arg(long, action = clap::ArgAction::Set)]
    streaming: bool,
    /// Questions asked at once, each in its own private chat (with the
    /// default `--chats`): the answers in flight.
    #[arg(long, default_value_t = 20)]
    in_flight: usize,
    /// Rounds of `--in-flight` questions; a round starts when every answer of
    /// the one before is complete.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// FastGPT's pace, `NxD`: `N` deltas `D` apart, the first `D` after the
    /// headers (the fake's `stream:NxD` hint, put in each question). The
    /// fake echoes the question, one delta per few characters at most: past
    /// 40 deltas each question is padded with filler words to twice `N`
    /// characters, so the echo has enough for `N` deltas.
    #[arg(long, default_value = "40x100ms", value_parser = parse_pace)]
    pace: Pace,
    /// A process whose CPU time (utime + stime of /proc/PID/stat) is read
    /// before and after the timed rounds, as `NAME=PID`; repeat for several.
    /// Names starting with `nats` are not counted in the services' sum.
    #[arg(long = "cpu-pid", value_parser = parse_named_pid)]
    cpu_pids: Vec<(String, u32)>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clock_ticks: u64,
    /// Timeout of one request to the Request URL.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Wait this long after the warm-up before the timed rounds: a bridge
    /// that has run a while (its Lark allowances past the first minute's
    /// ramp, the warm-up's calls out of the minute window), not one that has
    /// just started.
    #[arg(long, value_parser = parse_duration)]
    settle: Option<Duration>,
    /// Write the figures as `key=value` lines to this file too.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Args)]
struct FloorArgs {
    #[arg(long, default_value = "127.0.0.1:18283")]
    listen: SocketAddr,
    /// Stop by itself after this long (bounded, like every benchmark process).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    max_lifetime: Duration,
}

#[derive(Args)]
struct JetstreamArgs {
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

#[derive(Args)]
struct LongConnectionArgs {
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

#[derive(Args)]
struct CleanupArgs {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    #[arg(long)]
    namespace: String,
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
            Command::Ingress(args) => ingress(args).await,
            Command::E2e(args) => e2e(args).await,
            Command::Stream(args) => stream(args).await,
            Command::LongConnection(args) => long_connection(args).await,
            Command::FloorServer(args) => floor_server(args).await,
            Command::Jetstream(args) => jetstream_bench(args).await,
            Command::Cleanup(args) => cleanup(args).await,
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

// ------------------------------------------------------------------ parsing

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

/// The words after each timed question: the pace hint, and past 40 deltas
/// filler words up to twice as many characters as deltas (the fake FastGPT
/// cuts its echo into at most one delta per character).
fn timed_hint(pace: &Pace) -> String {
    let mut hint = format!(" stream:{}", pace.text);
    if pace.deltas > 40 {
        let want = 2 * pace.deltas;
        hint.push_str(" padding:");
        while hint.len() < want {
            hint.push_str(" lorem ipsum dolor");
        }
    }
    hint
}

/// FastGPT's pace in a streamed answer: see [`StreamArgs::pace`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pace {
    deltas: usize,
    every: Duration,
    /// As given (`40x100ms`): the fake FastGPT reads it back from the question.
    text: String,
}

impl Pace {
    /// How long the whole answer takes to write.
    fn total(&self) -> Duration {
        self.every * u32::try_from(self.deltas).unwrap_or(u32::MAX)
    }
}

/// `NxD` with `D` in whole `ms` or `s`, as the fake FastGPT's hint reads it.
fn parse_pace(s: &str) -> Result<Pace, String> {
    let bad = || format!("not a pace: {s:?} (use NxD, e.g. 40x100ms or 10x1s)");
    let (n, every) = s.trim().split_once('x').ok_or_else(bad)?;
    let deltas: usize = n.parse().map_err(|_| bad())?;
    let every = match every.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().map_err(|_| bad())?),
        None => Duration::from_secs(every.strip_suffix('s').ok_or_else(bad)?.parse().map_err(|_| bad())?),
    };
    if !(1..=1000).contains(&deltas) || every > Duration::from_secs(60) {
        return Err(format!("{s:?}: 1 to 1000 deltas, at most 60 s apart"));
    }
    Ok(Pace { deltas, every, text: s.trim().to_owned() })
}

/// `NAME=PID`.
fn parse_named_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or_else(|| format!("not NAME=PID: {s:?}"))?;
    let pid = pid.trim().parse().map_err(|_| format!("not a process id: {pid:?}"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("{name:?}: a name of letters, digits, - and _"));
    }
    Ok((name.to_owned(), pid))
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn require_loopback(addr: &SocketAddr, what: &str) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{what} {addr} is not a loopback address: this load generator only targets this machine");
    }
    Ok(())
}

/// An http:// URL on the loopback: its socket address, `Host` header and path.
#[derive(Clone, Debug)]
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("not a URL: {url}"))?;
        if parsed.scheme() != "http" {
            bail!("{url}: only http:// URLs (the benchmark runs on loopback)");
        }
        let host = parsed.host_str().context("the URL has no host")?.to_owned();
        if !is_loopback_host(&host) {
            bail!("{url}: only loopback targets (127.0.0.1, localhost, [::1]) are allowed");
        }
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {host}"))?
            .find(|a| a.ip().is_loopback())
            .with_context(|| format!("{host} does not resolve to a loopback address"))?;
        let mut path = parsed.path().to_owned();
        if let Some(q) = parsed.query() {
            path.push('?');
            path.push_str(q);
        }
        let host_header = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        Ok(Self { addr, host: host_header, path })
    }
}

// ---------------------------------------------------------------- the events

/// One request, ready to be written to a socket.
struct Prebuilt {
    bytes: Vec<u8>,
    message_id: String,
    chat_id: String,
}

/// The raw HTTP/1.1 request Lark would send for `req`.
fn raw_request(target: &Target, req: &SignedRequest) -> Vec<u8> {
    let mut head = String::with_capacity(320);
    let _ = write!(
        head,
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Go-http-client/1.1\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n",
        target.path,
        target.host,
        req.body.len()
    );
    for (name, value) in &req.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&req.body);
    bytes
}

struct EventFactory {
    builder: EventBuilder,
    key: EncryptKey,
    chats: usize,
    /// Distinguishes the chats of one run from those of another.
    run: String,
    /// Words after the question (the fake FastGPT's hints, e.g. ` stream:40x100ms`).
    hint: String,
}

impl EventFactory {
    fn new(args: &EventArgs, default_chats: usize) -> Self {
        Self {
            builder: EventBuilder::new(&args.app_id).token(&args.verification_token),
            key: EncryptKey::new(SecretString::from(args.encrypt_key.clone())),
            chats: args.chats.unwrap_or(default_chats),
            run: random_hex(4),
            hint: String::new(),
        }
    }

    /// The same events with `hint` after each question.
    fn with_hint(mut self, hint: &str) -> Self {
        self.hint = hint.to_owned();
        self
    }

    /// Events in the chats of `other` (same run).
    fn in_chats_of(mut self, other: &EventFactory) -> Self {
        self.run.clone_from(&other.run);
        self
    }

    fn chat_id(&self, i: usize) -> String {
        let chat = if self.chats == 0 { i } else { i % self.chats };
        format!("oc_bench_{}_{chat:06}", self.run)
    }

    /// The `i`-th event of a run: a private-chat text message, in its chat.
    fn event(&self, i: usize) -> serde_json::Value {
        let chat_id = self.chat_id(i);
        let user = chat_id.replacen("oc_", "ou_", 1);
        let text = format!("How do I reset my password? {}{}", question_tag(i), self.hint);
        self.builder.p2p_text(&chat_id, &user, &text)
    }

    fn signed(&self, event: &serde_json::Value) -> SignedRequest {
        SignedRequest::new(event, Some(&self.key), now_secs())
    }

    /// `n` requests numbered from `first`, built on every core.
    fn build(self: &Arc<Self>, target: &Target, first: usize, n: usize) -> Vec<Prebuilt> {
        let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1).clamp(1, 8);
        let per = n.div_ceil(threads).max(1);
        let mut parts: Vec<Vec<Prebuilt>> = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .step_by(per)
                .map(|start| {
                    let end = (start + per).min(n);
                    s.spawn(move || {
                        (start..end)
                            .map(|j| {
                                let event = self.event(first + j);
                                let message_id = message_id_of(&event).unwrap_or_default().to_owned();
                                let bytes = raw_request(target, &self.signed(&event));
                                Prebuilt { bytes, message_id, chat_id: self.chat_id(first + j) }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                parts.push(h.join().unwrap_or_default());
            }
        });
        parts.into_iter().flatten().collect()
    }
}

/// The part of the `i`-th question that names it, found again in what
/// FastGPT was asked and in the answer.
fn question_tag(i: usize) -> String {
    format!("(benchmark question {i})")
}

// ------------------------------------------------------- a minimal HTTP client

struct Response {
    status: u16,
    body: Vec<u8>,
}

/// One keep-alive HTTP/1.1 connection with one request in flight.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    open: bool,
}

fn bad_response(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

impl Conn {
    async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buf: Vec::with_capacity(8192), open: true })
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        Ok(())
    }

    async fn take(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return String::from_utf8(line[..pos].to_vec()).map_err(|_| bad_response("a chunk line is not UTF-8"));
            }
            self.fill().await?;
        }
    }

    async fn send(&mut self, request: &[u8]) -> std::io::Result<Response> {
        self.stream.write_all(request).await?;
        let head_len = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_len]).map_err(|_| bad_response("the head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad_response("no status line"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        self.buf.drain(..head_len);
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line = self.line().await?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| bad_response("bad chunk size"))?;
                if size == 0 {
                    while !self.line().await?.is_empty() {}
                    break body;
                }
                body.extend(self.take(size + 2).await?.into_iter().take(size));
            }
        } else if let Some(n) = length {
            self.take(n).await?
        } else {
            close = true;
            loop {
                match self.fill().await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break std::mem::take(&mut self.buf),
                    Err(e) => return Err(e),
                }
            }
        };
        if close {
            self.open = false;
        }
        Ok(Response { status, body })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ------------------------------------------------------------ the load loop

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("static histogram bounds are valid")
}

/// One phase of sending: a warm-up or the timed run.
struct Phase {
    requests: Arc<Vec<Prebuilt>>,
    /// How many requests to send: more than `requests` when they repeat.
    limit: usize,
    next: AtomicUsize,
    start: Instant,
    deadline: Instant,
    rate: Option<f64>,
    /// Keep the send time of each request (end to end needs it).
    track: bool,
    echo_check: bool,
}

#[derive(Default)]
struct Stats {
    hist: Option<Histogram<u64>>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    echo_ok: u64,
    sent: u64,
    /// Index, send time and status of each request (when tracked).
    sends: Vec<(usize, Instant, u16)>,
    last_answer: Option<Instant>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        match (&mut self.hist, other.hist) {
            (Some(h), Some(o)) => {
                let _ = h.add(&o);
            }
            (None, Some(o)) => self.hist = Some(o),
            _ => {}
        }
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.error_kinds {
            *self.error_kinds.entry(k).or_default() += v;
        }
        self.errors += other.errors;
        self.echo_ok += other.echo_ok;
        self.sent += other.sent;
        self.sends.extend(other.sends);
        self.last_answer = self.last_answer.max(other.last_answer);
    }

    fn ok(&self) -> u64 {
        self.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum()
    }
}

async fn run_phase(phase: &Phase, conn: &mut Option<Conn>, addr: SocketAddr, timeout: Duration) -> Stats {
    let mut stats = Stats { hist: Some(new_histogram()), ..Stats::default() };
    loop {
        let i = phase.next.fetch_add(1, Ordering::Relaxed);
        if i >= phase.limit || phase.requests.is_empty() {
            break;
        }
        let Some(req) = phase.requests.get(i % phase.requests.len()) else { break };
        let picked = Instant::now();
        if picked >= phase.deadline {
            break;
        }
        let from = match phase.rate {
            Some(rate) => {
                let due = phase.start + Duration::from_secs_f64(i as f64 / rate);
                if due >= phase.deadline {
                    break;
                }
                if picked < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                }
            }
            None => picked,
        };
        if conn.as_ref().is_none_or(|c| !c.open) {
            match tokio::time::timeout(timeout, Conn::connect(addr)).await {
                Ok(Ok(c)) => *conn = Some(c),
                Ok(Err(e)) => {
                    stats.errors += 1;
                    *stats.error_kinds.entry(format!("connect: {e}")).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(_) => {
                    stats.errors += 1;
                    *stats.error_kinds.entry("connect: timeout".to_owned()).or_default() += 1;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let sent_at = Instant::now();
        stats.sent += 1;
        match tokio::time::timeout(timeout, c.send(&req.bytes)).await {
            Ok(Ok(resp)) => {
                let done = Instant::now();
                let micros = u64::try_from(done.duration_since(from).as_micros()).unwrap_or(u64::MAX);
                if let Some(h) = stats.hist.as_mut() {
                    h.saturating_record(micros.max(1));
                }
                *stats.statuses.entry(resp.status).or_default() += 1;
                if phase.echo_check && find(&resp.body, req.message_id.as_bytes()).is_some() {
                    stats.echo_ok += 1;
                }
                if phase.track {
                    stats.sends.push((i, sent_at, resp.status));
                }
                stats.last_answer = Some(done);
            }
            Ok(Err(e)) => {
                stats.errors += 1;
                *stats.error_kinds.entry(format!("request: {}", e.kind())).or_default() += 1;
                *conn = None;
            }
            Err(_) => {
                stats.errors += 1;
                *stats.error_kinds.entry("request: timeout".to_owned()).or_default() += 1;
                *conn = None;
            }
        }
    }
    stats
}

/// Runs a warm-up phase then the timed phase over `concurrency` connections.
/// Returns the timed phase's stats and its start.
async fn drive(
    target: &Target,
    load: &LoadArgs,
    warmup: Vec<Prebuilt>,
    timed: Vec<Prebuilt>,
    track: bool,
    echo_check: bool,
) -> anyhow::Result<(Stats, Instant)> {
    let concurrency = load.concurrency.clamp(1, 4096);
    let make_phase = |requests: Vec<Prebuilt>, limit: usize, duration: Duration, track: bool| {
        let start = Instant::now() + Duration::from_millis(5);
        Arc::new(Phase {
            limit: limit.max(requests.len()),
            requests: Arc::new(requests),
            next: AtomicUsize::new(0),
            start,
            deadline: start + duration,
            rate: load.rate,
            track,
            echo_check,
        })
    };
    let mut conns: Vec<Option<Conn>> = (0..concurrency).map(|_| None).collect();
    let mut result = Stats::default();
    let mut timed_start = Instant::now();
    let limit = if load.repeat { load.max_events } else { timed.len() };
    let phases = [(warmup, 0, load.duration + Duration::from_secs(30), false), (timed, limit, load.duration, track)];
    for (n, (requests, limit, duration, track)) in phases.into_iter().enumerate() {
        let recorded = n == 1;
        if requests.is_empty() {
            continue;
        }
        let phase = make_phase(requests, limit, duration, track);
        if recorded {
            timed_start = phase.start;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for mut conn in conns.drain(..) {
            let phase = phase.clone();
            let (addr, timeout) = (target.addr, load.request_timeout);
            tasks.spawn(async move {
                let stats = run_phase(&phase, &mut conn, addr, timeout).await;
                (conn, stats)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (conn, stats) = joined.context("a sending task failed")?;
            conns.push(conn);
            if recorded {
                result.merge(stats);
            } else if stats.ok() == 0 && stats.errors > 0 {
                let kinds: Vec<_> = stats.error_kinds.keys().cloned().collect();
                bail!("the warm-up got no answer from {}: {}", target.addr, kinds.join(", "));
            }
        }
    }
    Ok((result, timed_start))
}

// ------------------------------------------------------------------ reports

struct Report {
    lines: Vec<(String, String)>,
}

impl Report {
    fn new() -> Self {
        Self { lines: Vec::new() }
    }

    fn set(&mut self, key: &str, value: impl ToString) {
        self.lines.push((key.to_owned(), value.to_string()));
    }

    fn latency(&mut self, prefix: &str, hist: &Histogram<u64>) {
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
            self.set(&format!("{prefix}{name}_ms"), ms(hist.value_at_quantile(q)));
        }
        self.set(&format!("{prefix}max_ms"), ms(hist.max()));
    }

    fn write(&self, path: Option<&PathBuf>) -> anyhow::Result<()> {
        let Some(path) = path else { return Ok(()) };
        let text: String = self.lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

fn ms(micros: u64) -> String {
    format!("{:.3}", micros as f64 / 1000.0)
}

fn latency_line(hist: &Histogram<u64>) -> String {
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

fn statuses_line(stats: &Stats) -> String {
    let mut s: Vec<String> = stats.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    if stats.errors > 0 {
        let kinds: Vec<String> = stats.error_kinds.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        s.push(format!("errors: {} ({})", stats.errors, kinds.join(", ")));
    }
    if s.is_empty() {
        "none".to_owned()
    } else {
        s.join(", ")
    }
}

fn mode_line(load: &LoadArgs) -> String {
    match load.rate {
        Some(r) => format!("fixed rate {r}/s over up to {} connections", load.concurrency),
        None => format!("as fast as possible, {} connections", load.concurrency),
    }
}

fn timed_count(load: &LoadArgs) -> usize {
    let n = match load.rate {
        Some(rate) => (rate * load.duration.as_secs_f64()).ceil() as usize,
        None if load.repeat => 100_000,
        None => load.max_events,
    };
    n.min(load.max_events).max(1)
}

/// The common report of a load run.
fn report_load(report: &mut Report, target: &Target, load: &LoadArgs, stats: &Stats, start: Instant, built: usize) {
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

// ------------------------------------------------------------------ ingress

async fn ingress(args: IngressArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.load.url)?;
    let factory = Arc::new(EventFactory::new(&args.events, 1000));
    if args.check {
        check_target(&target, &factory, args.echo_check).await?;
    }
    let n = timed_count(&args.load);
    let built_at = Instant::now();
    let (warmup, timed) = {
        let (f, t, w) = (factory.clone(), target.clone(), args.load.warmup);
        tokio::task::spawn_blocking(move || (f.build(&t, 0, w), f.build(&t, w, n))).await?
    };
    eprintln!("loadgen: built {} events in {:.1} s", warmup.len() + timed.len(), built_at.elapsed().as_secs_f64());
    let (stats, start) = drive(&target, &args.load, warmup, timed, false, args.echo_check).await?;
    let mut report = Report::new();
    report_load(&mut report, &target, &args.load, &stats, start, n);
    if args.echo_check {
        println!("decrypted   {} answers named their event's message_id", stats.echo_ok);
        report.set("echo_ok", stats.echo_ok);
    }
    report.write(args.load.report.as_ref())
}

/// One valid event must be accepted, one with a tampered signature refused.
async fn check_target(target: &Target, factory: &EventFactory, echo: bool) -> anyhow::Result<()> {
    let mut conn = Conn::connect(target.addr).await.with_context(|| format!("cannot connect to {}", target.addr))?;
    let event = factory.event(usize::MAX / 2);
    let message_id = message_id_of(&event).unwrap_or_default().to_owned();
    let good = conn.send(&raw_request(target, &factory.signed(&event))).await?;
    let body = String::from_utf8_lossy(&good.body).into_owned();
    if !(200..300).contains(&good.status) {
        bail!("check: a valid signed event was answered {} {body}", good.status);
    }
    if echo && !body.contains(&message_id) {
        bail!("check: the answer to a valid event does not name its message_id {message_id}: {body:?}");
    }
    let mut tampered = factory.signed(&factory.event(usize::MAX / 2 + 1));
    for (name, value) in tampered.headers.iter_mut() {
        if name == SIGNATURE_HEADER {
            let flipped = if value.ends_with('0') { '1' } else { '0' };
            value.pop();
            value.push(flipped);
        }
    }
    if !conn.open {
        conn = Conn::connect(target.addr).await?;
    }
    let bad = conn.send(&raw_request(target, &tampered)).await?;
    if !(400..500).contains(&bad.status) {
        bail!(
            "check: an event with a tampered signature was answered {} {}: the target does not verify signatures",
            bad.status,
            String::from_utf8_lossy(&bad.body)
        );
    }
    println!(
        "check       valid event: {}{}; tampered signature: {}",
        good.status,
        if echo { " naming its message_id (decrypted)" } else { "" },
        bad.status
    );
    Ok(())
}

// --------------------------------------------------------------- end to end

/// Starts the fake Lark (one app) and the fake FastGPT on their loopback addresses.
async fn start_fakes(fakes: &FakesArgs, app_id: &str) -> anyhow::Result<(FakeLark, FakeFastGpt)> {
    require_loopback(&fakes.lark_listen, "--lark-listen")?;
    require_loopback(&fakes.fastgpt_listen, "--fastgpt-listen")?;
    let app = FakeApp::new(app_id, &fakes.app_secret, &fakes.bot_open_id);
    let lark = FakeLark::start_on(fakes.lark_listen, vec![app])
        .await
        .with_context(|| format!("cannot listen on {} for the fake Lark", fakes.lark_listen))?;
    let fastgpt = FakeFastGpt::start_on(fakes.fastgpt_listen, &fakes.fastgpt_key)
        .await
        .with_context(|| format!("cannot listen on {} for the fake FastGPT", fakes.fastgpt_listen))?;
    eprintln!("loadgen: fake Lark on {}, fake FastGPT on {}", lark.base_url(), fastgpt.base_url());
    Ok((lark, fastgpt))
}

async fn e2e(args: E2eArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.load.url)?;
    let (lark, fastgpt) = start_fakes(&args.fakes, &args.events.app_id).await?;
    let result = e2e_run(&args, &target, &lark).await;
    lark.shutdown().await;
    fastgpt.shutdown().await;
    result
}

async fn wait_ready(urls: &[String]) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for url in urls {
        Target::parse(url)?;
        loop {
            if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() >= deadline {
                bail!("{url} did not answer 200 within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Message ids of the replies the fake Lark received, with the first arrival of each.
fn replies(lark: &FakeLark) -> HashMap<String, Instant> {
    let mut out: HashMap<String, Instant> = HashMap::new();
    for m in lark.visible_messages() {
        if let Via::Reply { message_id } = m.via {
            let at = out.entry(message_id).or_insert(m.received_at);
            *at = (*at).min(m.received_at);
        }
    }
    out
}

async fn wait_for_replies(lark: &FakeLark, ids: &[&str], timeout: Duration) -> HashMap<String, Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = replies(lark);
        if ids.iter().all(|id| got.contains_key(*id)) || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn e2e_run(args: &E2eArgs, target: &Target, lark: &FakeLark) -> anyhow::Result<()> {
    wait_ready(&args.fakes.wait_ready).await?;
    let factory = Arc::new(EventFactory::new(&args.events, 0));
    let warmup_n = args.load.warmup.min(200);
    let n = timed_count(&args.load);
    let (warmup, timed) = {
        let (f, t) = (factory.clone(), target.clone());
        tokio::task::spawn_blocking(move || (f.build(&t, 0, warmup_n), f.build(&t, warmup_n, n))).await?
    };
    for p in warmup.iter().chain(timed.iter()) {
        lark.register_message(&p.message_id, &p.chat_id, None);
    }
    // The warm-up goes through the whole bridge (first token, bot info,
    // connections), one event at a time, and must come back.
    let warm_ids: Vec<String> = warmup.iter().map(|p| p.message_id.clone()).collect();
    let warm_load = LoadArgs { rate: None, concurrency: 1, warmup: 0, repeat: false, ..args.load.clone() };
    let (warm_stats, _) = drive(target, &warm_load, Vec::new(), warmup, false, false).await?;
    if warm_stats.ok() < warm_ids.len() as u64 {
        bail!("the warm-up events were not all accepted: {}", statuses_line(&warm_stats));
    }
    let ids: Vec<&str> = warm_ids.iter().map(String::as_str).collect();
    let got = wait_for_replies(lark, &ids, args.fakes.reply_timeout).await;
    let missing = ids.iter().filter(|id| !got.contains_key(**id)).count();
    if missing > 0 {
        bail!("{missing} of {} warm-up events got no reply within {:?}: is the bridge configured with fake Lark {} and fake FastGPT {}?", ids.len(), args.fakes.reply_timeout, args.fakes.lark_listen, args.fakes.fastgpt_listen);
    }

    let ids: Vec<String> = timed.iter().map(|p| p.message_id.clone()).collect();
    let load = LoadArgs { warmup: 0, repeat: false, ..args.load.clone() };
    let (stats, start) = drive(target, &load, Vec::new(), timed, true, false).await?;
    let accepted: Vec<&(usize, Instant, u16)> = stats.sends.iter().filter(|(_, _, s)| (200..300).contains(s)).collect();
    let wanted: Vec<&str> = accepted.iter().map(|(i, _, _)| ids[*i].as_str()).collect();
    let got = wait_for_replies(lark, &wanted, args.fakes.reply_timeout).await;
    let mut e2e_hist = new_histogram();
    let mut missing = 0u64;
    for (i, sent_at, _) in &accepted {
        match got.get(&ids[*i]) {
            Some(at) => {
                let micros = u64::try_from(at.saturating_duration_since(*sent_at).as_micros()).unwrap_or(u64::MAX);
                e2e_hist.saturating_record(micros.max(1));
            }
            None => missing += 1,
        }
    }
    let mut report = Report::new();
    report_load(&mut report, target, &load, &stats, start, n);
    println!("replies     {} of {} accepted events answered, {missing} missing", e2e_hist.len(), accepted.len());
    if !e2e_hist.is_empty() {
        println!("end to end  {}", latency_line(&e2e_hist));
    }
    report.set("replies", e2e_hist.len());
    report.set("missing", missing);
    if !e2e_hist.is_empty() {
        report.latency("e2e_", &e2e_hist);
    }
    report.write(args.load.report.as_ref())
}

// ---------------------------------------------------------- streamed answers

async fn stream(args: StreamArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.url)?;
    if args.in_flight == 0 || args.in_flight > 1000 || args.rounds == 0 || args.rounds > 1000 {
        bail!("--in-flight and --rounds must be from 1 to 1000");
    }
    let (lark, fastgpt) = start_fakes(&args.fakes, &args.events.app_id).await?;
    let result = stream_run(&args, &target, &lark, &fastgpt).await;
    lark.shutdown().await;
    fastgpt.shutdown().await;
    result
}

/// A question of the timed rounds that the ingress accepted.
struct Asked {
    /// Its number: [`question_tag`].
    number: usize,
    message_id: String,
    sent_at: Instant,
}

/// CPU time of a process so far (utime + stime), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces): state is
    // field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The replies to each message, in arrival order.
fn replies_by_message(lark: &FakeLark) -> HashMap<String, Vec<lark_bridge_tests::fake_lark::SentMessage>> {
    let mut out: HashMap<String, Vec<_>> = HashMap::new();
    for m in lark.visible_messages() {
        if let Some(to) = m.reply_to() {
            out.entry(to.to_owned()).or_default().push(m);
        }
    }
    out
}

/// Waits until every question in `ids` has a complete answer: a reply, and
/// no card among its replies still streaming. How many are not, at the end.
async fn wait_for_answers(lark: &FakeLark, ids: &[String], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let replies = replies_by_message(lark);
        let open = ids
            .iter()
            .filter(|id| {
                replies.get(*id).is_none_or(|ms| ms.iter().any(|m| m.card.as_ref().is_some_and(|c| c.streaming)))
            })
            .count();
        if open == 0 || Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `batch` at once over as many connections: the accepted questions,
/// and how many were not (other statuses, errors).
async fn ask_round(
    target: &Target,
    args: &StreamArgs,
    batch: Vec<Prebuilt>,
    first_number: usize,
) -> anyhow::Result<(Vec<Asked>, u64)> {
    let ids: Vec<String> = batch.iter().map(|p| p.message_id.clone()).collect();
    let load = LoadArgs {
        url: args.url.clone(),
        rate: None,
        concurrency: batch.len().max(1),
        duration: Duration::from_secs(120),
        max_events: batch.len(),
        repeat: false,
        warmup: 0,
        request_timeout: args.request_timeout,
        report: None,
    };
    let (stats, _) = drive(target, &load, Vec::new(), batch, true, false).await?;
    let asked: Vec<Asked> = stats
        .sends
        .iter()
        .filter(|(_, _, status)| (200..300).contains(status))
        .map(|(i, sent_at, _)| Asked { number: first_number + i, message_id: ids[*i].clone(), sent_at: *sent_at })
        .collect();
    let refused = ids.len() as u64 - asked.len() as u64;
    Ok((asked, refused))
}

/// The CardKit operations on the cards of a run.
#[derive(Default)]
struct CardOps {
    cards: usize,
    ops: usize,
    by_kind: BTreeMap<String, usize>,
    /// The most operations on one card within any one second.
    max_per_second: usize,
    /// Operations ÷ seconds from each card's first operation to its last
    /// (at least 1 s), over all cards.
    mean_per_second: f64,
    rate_limited: usize,
    other_errors: usize,
    /// Lark's code of each refused operation (HTTP 429 included), and how many.
    error_codes: BTreeMap<i64, usize>,
}

impl CardOps {
    fn codes_line(&self) -> String {
        let codes: Vec<String> = self.error_codes.iter().map(|(code, n)| format!("{code}:{n}")).collect();
        if codes.is_empty() {
            "none".to_owned()
        } else {
            codes.join(",")
        }
    }
}

/// The most of `sorted` (instants, in order) within any one second.
fn busiest_second(sorted: &[Instant]) -> usize {
    let mut start = 0;
    let mut most = 0;
    for (end, at) in sorted.iter().enumerate() {
        while at.duration_since(sorted[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

fn card_ops(lark: &FakeLark, card_ids: &std::collections::HashSet<String>) -> CardOps {
    let mut times: HashMap<&str, Vec<Instant>> = HashMap::new();
    let all = lark.card_operations();
    let mut out = CardOps { cards: card_ids.len(), ..CardOps::default() };
    for op in all.iter().filter(|op| card_ids.contains(&op.card_id)) {
        times.entry(op.card_id.as_str()).or_default().push(op.at);
        *out.by_kind.entry(format!("{:?}", op.kind).to_lowercase()).or_default() += 1;
        out.ops += 1;
        if op.http_status == 429 {
            out.rate_limited += 1;
        } else if op.code != 0 {
            out.other_errors += 1;
        }
        if op.http_status == 429 || op.code != 0 {
            *out.error_codes.entry(op.code).or_default() += 1;
        }
    }
    let mut seconds = 0.0;
    for t in times.values_mut() {
        t.sort();
        out.max_per_second = out.max_per_second.max(busiest_second(t));
        if let (Some(first), Some(last)) = (t.first(), t.last()) {
            seconds += last.duration_since(*first).as_secs_f64().max(1.0);
        }
    }
    if seconds > 0.0 {
        out.mean_per_second = out.ops as f64 / seconds;
    }
    out
}

/// The distinct texts an answer's message showed, in order (a text shown
/// again right after itself counts once; an empty one not at all).
fn distinct_texts(history: &[(Instant, String)]) -> usize {
    let mut last: Option<&str> = None;
    let mut n = 0;
    for (_, text) in history {
        let text = text.trim();
        if !text.is_empty() && last != Some(text) {
            n += 1;
            last = Some(text);
        }
    }
    n
}

/// Every request the fake Lark received in a time window, whatever the
/// endpoint (messages, reactions, CardKit, tokens, bot info).
#[derive(Default)]
struct LarkCalls {
    total: usize,
    by_api: BTreeMap<String, usize>,
    /// Refused as over a rate limit (HTTP 429 or code 99991400).
    rate_limited: usize,
    /// Of those, CardKit's.
    cardkit_rate_limited: usize,
}

impl LarkCalls {
    fn by_api_line(&self) -> String {
        let parts: Vec<String> = self.by_api.iter().map(|(api, n)| format!("{api}:{n}")).collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(",")
        }
    }
}

fn lark_calls(lark: &FakeLark, from: Instant, to: Instant) -> LarkCalls {
    use lark_bridge_tests::fake_lark::Endpoint;
    let mut out = LarkCalls::default();
    for a in lark.all_attempts().iter().filter(|a| a.received_at >= from && a.received_at <= to) {
        out.total += 1;
        *out.by_api.entry(format!("{:?}", a.endpoint)).or_default() += 1;
        if a.http_status == 429 || a.code == 99991400 {
            out.rate_limited += 1;
            if matches!(
                a.endpoint,
                Endpoint::CardCreate | Endpoint::CardContent | Endpoint::CardSettings | Endpoint::CardUpdate
            ) {
                out.cardkit_rate_limited += 1;
            }
        }
    }
    out
}

fn record(hist: &mut Histogram<u64>, from: Instant, to: Instant) {
    let micros = u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(micros.max(1));
}

async fn stream_run(args: &StreamArgs, target: &Target, lark: &FakeLark, fastgpt: &FakeFastGpt) -> anyhow::Result<()> {
    wait_ready(&args.fakes.wait_ready).await?;
    let k = args.in_flight;
    let timed_factory = Arc::new(EventFactory::new(&args.events, k).with_hint(&timed_hint(&args.pace)));
    // The warm-up asks in the same chats, quickly (first token, bot info,
    // connections, each chat's conversation): not measured.
    let warm_hint = if args.streaming { " stream:4x25ms" } else { "" };
    let warm_factory = Arc::new(EventFactory::new(&args.events, k).with_hint(warm_hint).in_chats_of(&timed_factory));
    let n = k * args.rounds;
    let (warmup, timed) = {
        let (w, f, t) = (warm_factory.clone(), timed_factory.clone(), target.clone());
        tokio::task::spawn_blocking(move || (w.build(&t, 0, k), f.build(&t, k, n))).await?
    };
    for p in warmup.iter().chain(timed.iter()) {
        lark.register_message(&p.message_id, &p.chat_id, None);
    }
    let (warm, refused) = ask_round(target, args, warmup, 0).await?;
    if refused > 0 {
        bail!("{refused} of {k} warm-up events were not accepted by {}", target.addr);
    }
    let warm_ids: Vec<String> = warm.iter().map(|a| a.message_id.clone()).collect();
    let open = wait_for_answers(lark, &warm_ids, args.fakes.reply_timeout).await;
    if open > 0 {
        bail!(
            "{open} of {k} warm-up questions got no complete answer within {:?}: is the bridge configured with fake Lark {} and fake FastGPT {}?",
            args.fakes.reply_timeout,
            args.fakes.lark_listen,
            args.fakes.fastgpt_listen
        );
    }

    if let Some(settle) = args.settle {
        println!("settle      waiting {settle:?} before the timed rounds");
        tokio::time::sleep(settle).await;
    }
    let cpu_before: Vec<Option<u64>> = args.cpu_pids.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
    let started = Instant::now();
    let mut asked: Vec<Asked> = Vec::with_capacity(n);
    let mut refused = 0;
    let mut timed = timed.into_iter();
    for round in 0..args.rounds {
        let batch: Vec<Prebuilt> = timed.by_ref().take(k).collect();
        if !args.streaming {
            // Whole answers take as long as the streamed ones.
            let late = FakeAnswer::Delay(args.pace.total(), Box::new(FakeAnswer::Echo));
            fastgpt.push_responses(vec![late; batch.len()]);
        }
        let (round_asked, round_refused) = ask_round(target, args, batch, k + round * k).await?;
        refused += round_refused;
        let ids: Vec<String> = round_asked.iter().map(|a| a.message_id.clone()).collect();
        let open = wait_for_answers(lark, &ids, args.fakes.reply_timeout).await;
        if open > 0 {
            eprintln!(
                "loadgen: round {}: {open} answers not complete within {:?}",
                round + 1,
                args.fakes.reply_timeout
            );
        }
        asked.extend(round_asked);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // What the services still do for the last answers (acknowledgements,
    // the typing reaction's removal) belongs to them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_after: Vec<Option<u64>> = args.cpu_pids.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
    let calls = lark_calls(lark, started, Instant::now());

    let replies = replies_by_message(lark);
    let requests = fastgpt.requests();
    let (mut first_text, mut sent_text, mut complete) = (new_histogram(), new_histogram(), new_histogram());
    let (mut answered, mut missing, mut exact, mut extra, mut streamed) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut card_ids = std::collections::HashSet::new();
    let mut texts: Vec<usize> = Vec::with_capacity(asked.len());
    for q in &asked {
        let tag = question_tag(q.number);
        let request = requests.iter().find(|r| r.content.contains(&tag));
        let Some(reply) = replies.get(&q.message_id).and_then(|ms| ms.first()) else {
            missing += 1;
            continue;
        };
        answered += 1;
        extra += replies.get(&q.message_id).map_or(0, |ms| ms.len() - 1);
        if let Some(card_id) = reply.card_id() {
            card_ids.insert(card_id.to_owned());
        }
        let history = lark.visible_text_history(&reply.message_id);
        texts.push(distinct_texts(&history));
        let shown = history.iter().find(|(_, text)| !text.trim().is_empty()).map(|(at, _)| *at);
        if let Some(shown) = shown {
            record(&mut sent_text, q.sent_at, shown);
            if let Some(first_delta) = request.and_then(|r| r.first_delta_at()) {
                record(&mut first_text, first_delta, shown);
            }
        }
        if let Some((at, text)) = history.last() {
            record(&mut complete, q.sent_at, *at);
            if request.and_then(|r| r.answer.as_deref()) == Some(text.as_str()) {
                exact += 1;
            }
        }
        if request.is_some_and(|r| r.streamed) {
            streamed += 1;
        }
    }
    let ops = card_ops(lark, &card_ids);
    if args.streaming && streamed < answered {
        eprintln!(
            "loadgen: only {streamed} of {answered} answers were asked of FastGPT as a stream: \
             is the channel's streaming really on (LARK_BRIDGE__CHANNELS__{{ID}}__STREAMING overrides the file)?"
        );
    } else if !args.streaming && streamed > 0 {
        eprintln!(
            "loadgen: {streamed} answers were asked of FastGPT as a stream: is the channel's streaming really off?"
        );
    }

    let mode = if args.streaming { "streamed in cards (streaming = true)" } else { "whole (streaming = false)" };
    println!("target      {}{}: answers {mode}", target.addr, target.path);
    println!(
        "load        {k} questions at once in {} chats, {} rounds; FastGPT writes each answer in {} deltas {:?} apart ({:.1} s){}",
        args.events.chats.unwrap_or(k),
        args.rounds,
        args.pace.deltas,
        args.pace.every,
        args.pace.total().as_secs_f64(),
        if args.streaming { "" } else { ", sent whole at the end" }
    );
    println!(
        "answers     {answered} of {} accepted questions ({refused} not accepted), {missing} missing, {extra} extra messages; \
         final text exactly FastGPT's: {exact}; FastGPT streamed {streamed}; {elapsed:.1} s",
        asked.len()
    );
    if !first_text.is_empty() {
        println!("first text  FastGPT's first delta → first visible text: {}", latency_line(&first_text));
        println!("            goal: p50 ≤ 300 ms, p99 ≤ 800 ms (a figure, not a test)");
    }
    if !sent_text.is_empty() {
        println!("sent→text   event sent → first visible text:          {}", latency_line(&sent_text));
    }
    if !complete.is_empty() {
        println!("sent→whole  event sent → complete answer visible:      {}", latency_line(&complete));
    }
    texts.sort_unstable();
    let texts_mean = if texts.is_empty() { 0.0 } else { texts.iter().sum::<usize>() as f64 / texts.len() as f64 };
    let (texts_min, texts_max) = (texts.first().copied().unwrap_or(0), texts.last().copied().unwrap_or(0));
    if !texts.is_empty() {
        println!(
            "texts       per answer, distinct texts shown: mean {texts_mean:.1}, min {texts_min}, max {texts_max}"
        );
    }
    let per_answer = |n: usize| if answered > 0 { n as f64 / answered as f64 } else { 0.0 };
    println!(
        "lark calls  {} in all ({:.1} per answer: {}); refused as over a rate limit: {} (CardKit {})",
        calls.total,
        per_answer(calls.total),
        calls.by_api_line(),
        calls.rate_limited,
        calls.cardkit_rate_limited
    );
    let kinds: Vec<String> = ops.by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if ops.cards > 0 {
        println!(
            "card ops    {} cards, {} operations ({}), {:.1} per card; busiest second of a card {} (Lark's limit 10), \
             mean {:.2} per second per card; refused: {} rate-limited, {} other errors (Lark's code:count {})",
            ops.cards,
            ops.ops,
            kinds.join(", "),
            ops.ops as f64 / ops.cards as f64,
            ops.max_per_second,
            ops.mean_per_second,
            ops.rate_limited,
            ops.other_errors,
            ops.codes_line()
        );
    } else {
        println!("card ops    no cards");
    }

    let mut report = Report::new();
    report.set("streaming", args.streaming);
    report.set("in_flight", k);
    report.set("rounds", args.rounds);
    report.set("pace", &args.pace.text);
    report.set("asked", asked.len());
    report.set("refused", refused);
    report.set("answered", answered);
    report.set("missing", missing);
    report.set("extra_messages", extra);
    report.set("exact", exact);
    report.set("fastgpt_streamed", streamed);
    report.set("elapsed_s", format!("{elapsed:.3}"));
    if !first_text.is_empty() {
        report.latency("first_text_", &first_text);
    }
    if !sent_text.is_empty() {
        report.latency("sent_text_", &sent_text);
    }
    if !complete.is_empty() {
        report.latency("complete_", &complete);
    }
    report.set("cards", ops.cards);
    report.set("card_ops", ops.ops);
    report.set(
        "card_ops_per_card",
        format!("{:.1}", if ops.cards > 0 { ops.ops as f64 / ops.cards as f64 } else { 0.0 }),
    );
    report.set("card_ops_max_1s", ops.max_per_second);
    report.set("card_ops_mean_per_s", format!("{:.2}", ops.mean_per_second));
    report.set("card_ops_rate_limited", ops.rate_limited);
    report.set("card_ops_errors", ops.other_errors);
    report.set("card_ops_error_codes", ops.codes_line());
    report.set("texts_mean", format!("{texts_mean:.1}"));
    report.set("texts_min", texts_min);
    report.set("texts_max", texts_max);
    report.set("lark_calls", calls.total);
    report.set("lark_calls_per_answer", format!("{:.1}", per_answer(calls.total)));
    report.set("lark_calls_by_api", calls.by_api_line());
    report.set("lark_rate_limited", calls.rate_limited);
    report.set("lark_cardkit_rate_limited", calls.cardkit_rate_limited);

    let mut cpu_line = Vec::new();
    let mut services_us = Some(0.0);
    for (((name, pid), before), after) in args.cpu_pids.iter().zip(&cpu_before).zip(&cpu_after) {
        let key = name.replace('-', "_");
        let per_answer = match (before, after) {
            (Some(b), Some(a)) if answered > 0 && args.clock_ticks > 0 => {
                let total_us = a.saturating_sub(*b) as f64 * 1e6 / args.clock_ticks as f64;
                report.set(&format!("cpu_{key}_ms"), format!("{:.0}", total_us / 1000.0));
                Some(total_us / answered as f64)
            }
            _ => {
                eprintln!("loadgen: cannot read the CPU time of {name} (pid {pid}) before and after the run");
                None
            }
        };
        if !name.starts_with("nats") {
            services_us = services_us.zip(per_answer).map(|(s, p)| s + p);
        }
        let shown = per_answer.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.0}"));
        report.set(&format!("cpu_{key}_us"), &shown);
        cpu_line.push(format!("{name} {shown}"));
    }
    if !args.cpu_pids.is_empty() {
        let services = services_us.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.0}"));
        report.set("cpu_services_us", &services);
        println!("cpu         per answer (µs, utime + stime): {}; services {services}", cpu_line.join(", "));
    }
    report.write(args.report.as_ref())
}

// ------------------------------------------------------------- floor server

// ---------------------------------------------------------- long connection

async fn long_connection(args: LongConnectionArgs) -> anyhow::Result<()> {
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

async fn floor_server(args: FloorArgs) -> anyhow::Result<()> {
    use axum::routing::post;
    require_loopback(&args.listen, "--listen")?;
    async fn ok(_body: bytes::Bytes) -> ([(&'static str, &'static str); 1], &'static str) {
        ([("content-type", "application/json")], "{}")
    }
    let router = axum::Router::new().route("/{*path}", post(ok)).route("/", post(ok));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("loadgen: floor server on http://{}", args.listen);
    let lifetime = args.max_lifetime;
    let stop = async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return tokio::time::sleep(lifetime).await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            () = tokio::time::sleep(lifetime) => {}
        }
    };
    axum::serve(listener, router).with_graceful_shutdown(stop).await?;
    Ok(())
}

// ---------------------------------------------------------------- jetstream

fn nats_loopback(url: &str) -> anyhow::Result<()> {
    let host = url.rsplit("://").next().unwrap_or(url);
    let host = host.rsplit('@').next().unwrap_or(host);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    if !is_loopback_host(host) {
        bail!("{url}: only a NATS server on the loopback is allowed");
    }
    Ok(())
}

async fn jetstream_bench(args: JetstreamArgs) -> anyhow::Result<()> {
    nats_loopback(&args.nats)?;
    let ns = args.namespace.clone().unwrap_or_else(|| format!("benchjs{}", random_hex(4)));
    let client = async_nats::connect(&args.nats).await.with_context(|| format!("cannot connect to {}", args.nats))?;
    let js = jetstream::new(client);
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
                        let micros = u64::try_from(now.elapsed().as_micros()).unwrap_or(u64::MAX);
                        if let Some(h) = stats.hist.as_mut() {
                            h.saturating_record(micros.max(1));
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

// ------------------------------------------------------------------ cleanup

async fn cleanup(args: CleanupArgs) -> anyhow::Result<()> {
    nats_loopback(&args.nats)?;
    let settings = NatsSettings { url: args.nats.clone(), namespace: args.namespace.clone(), ..Default::default() };
    let client = async_nats::connect(&args.nats).await.with_context(|| format!("cannot connect to {}", args.nats))?;
    let js = jetstream::new(client);
    let t = Topology::new(&settings);
    let mut deleted = Vec::new();
    // Every stream, and every bucket as its stream (`KV_...`).
    for cfg in t.all_configs() {
        if js.delete_stream(&cfg.name).await.is_ok() {
            deleted.push(cfg.name);
        }
    }
    println!(
        "cleanup     namespace {}: deleted {}",
        args.namespace,
        if deleted.is_empty() { "nothing".to_owned() } else { deleted.join(", ") }
    );
    Ok(())
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

    #[test]
    fn paces_process_ids_and_cpu_time() {
        let pace = parse_pace("40x100ms").expect("pace");
        assert_eq!((pace.deltas, pace.every, pace.text.as_str()), (40, Duration::from_millis(100), "40x100ms"));
        assert_eq!(pace.total(), Duration::from_secs(4));
        assert_eq!(parse_pace("3x2s").map(|p| p.total()), Ok(Duration::from_secs(6)));
        for bad in ["40", "x100ms", "40x", "40x1.5s", "0x100ms", "40x100", "40x2m"] {
            assert!(parse_pace(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_named_pid("nats-server=42"), Ok(("nats-server".to_owned(), 42)));
        assert!(parse_named_pid("relay").is_err());
        assert!(parse_named_pid("a b=1").is_err());
        assert!(parse_named_pid("relay=x").is_err());
        assert!(cpu_ticks(std::process::id()).is_some());
        assert_eq!(cpu_ticks(u32::MAX), None);
    }

    #[test]
    fn the_busiest_second() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(busiest_second(&[]), 0);
        assert_eq!(busiest_second(&[at(0)]), 1);
        assert_eq!(busiest_second(&[at(0), at(999), at(1000), at(1001)]), 3);
        let steady: Vec<Instant> = (0..40).map(|i| at(i * 300)).collect();
        assert_eq!(busiest_second(&steady), 4);
    }

    #[test]
    fn only_loopback_targets() {
        assert!(Target::parse("http://127.0.0.1:8080/lark/x/events").is_ok());
        assert!(Target::parse("http://localhost:8080/").is_ok());
        assert!(Target::parse("http://[::1]:8080/").is_ok());
        assert!(Target::parse("http://10.0.0.1:8080/").is_err());
        assert!(Target::parse("https://127.0.0.1/").is_err());
        assert!(nats_loopback("nats://127.0.0.1:4222").is_ok());
        assert!(nats_loopback("nats://user:pw@localhost:4222").is_ok());
        assert!(nats_loopback("nats://192.168.1.2:4222").is_err());
    }

    #[tokio::test]
    async fn the_client_reads_length_chunked_and_close_delimited_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let answers: [&[u8]; 3] = [
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
                b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbye",
            ];
            let mut buf = [0u8; 4096];
            for answer in answers {
                let _ = s.read(&mut buf).await.expect("read");
                s.write_all(answer).await.expect("write");
            }
        });
        let mut c = Conn::connect(addr).await.expect("connect");
        let r = c.send(b"POST / HTTP/1.1\r\n\r\n").await.expect("first");
        assert_eq!((r.status, r.body.as_slice()), (200, b"{}".as_slice()));
        let r = c.send(b"POST / HTTP/1.1\r\n\r\n").await.expect("second");
        assert_eq!((r.status, r.body.as_slice()), (401, b"abcde".as_slice()));
        let r = c.send(b"POST / HTTP/1.1\r\n\r\n").await.expect("third");
        assert_eq!((r.status, r.body.as_slice(), c.open), (200, b"bye".as_slice(), false));
    }

    #[test]
    fn requests_are_unique_signed_and_decryptable() {
        let target = Target::parse("http://127.0.0.1:1/lark/bench/events").expect("target");
        let args =
            EventArgs { app_id: "cli".into(), encrypt_key: "k".into(), verification_token: "t".into(), chats: Some(3) };
        let factory = Arc::new(EventFactory::new(&args, 1000));
        let built = factory.build(&target, 0, 10);
        assert_eq!(built.len(), 10);
        let ids: std::collections::HashSet<_> = built.iter().map(|p| p.message_id.clone()).collect();
        assert_eq!(ids.len(), 10);
        let text = String::from_utf8(built[0].bytes.clone()).expect("utf-8");
        assert!(text.starts_with("POST /lark/bench/events HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"), "{text}");
        assert!(text.contains("x-lark-signature: "), "{text}");
        let body = text.split("\r\n\r\n").nth(1).expect("body");
        let wrapper: serde_json::Value = serde_json::from_str(body).expect("json");
        let plain = factory.key.decrypt(wrapper["encrypt"].as_str().expect("encrypt")).expect("decrypts");
        let event: serde_json::Value = serde_json::from_slice(&plain).expect("event");
        assert_eq!(message_id_of(&event), Some(built[0].message_id.as_str()));
        assert_eq!(event["header"]["token"], "t");
    }
}
