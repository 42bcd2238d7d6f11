//! Sending pre-built requests over plain keep-alive HTTP/1.1 connections,
//! one request in flight on each: the target, a minimal client that only
//! reads status and body, and the load loop (warm-up, then the timed run at
//! a fixed rate or as fast as the connections allow).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::events::Prebuilt;
use crate::loopback::is_loopback_host;
use crate::parse_duration;
use crate::report::{new_histogram, record};

/// How requests are sent.
#[derive(Args, Clone)]
pub(crate) struct LoadArgs {
    /// The Request URL (http, loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080/lark/bench/events")]
    pub(crate) url: String,
    /// Events per second; without it, as fast as the connections allow.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// How long to send (`10s`, `500ms`, `1m`, or seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// At most this many events in the timed run (they are all built beforehand).
    #[arg(long, default_value_t = 250_000)]
    pub(crate) max_events: usize,
    /// Build at most 100,000 events and send them again in a loop, up to
    /// `--max-events` in all: only for a target that does not de-duplicate
    /// (the floor server), so that a fast one does not run out of events.
    #[arg(long)]
    pub(crate) repeat: bool,
    /// Events sent before the timed run, not measured (connections, caches, JIT).
    #[arg(long, default_value_t = 1000)]
    pub(crate) warmup: usize,
    /// Timeout of one request.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) request_timeout: Duration,
    /// Write the figures as `key=value` lines to this file too.
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
}

/// How many events the timed run may send, so how many to build.
pub(crate) fn timed_count(load: &LoadArgs) -> usize {
    let n = match load.rate {
        Some(rate) => (rate * load.duration.as_secs_f64()).ceil() as usize,
        None if load.repeat => 100_000,
        None => load.max_events,
    };
    n.min(load.max_events).max(1)
}

/// An http:// URL on the loopback: its socket address, `Host` header and path.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) path: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
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

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// One keep-alive HTTP/1.1 connection with one request in flight.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pub(crate) open: bool,
}

fn bad_response(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

impl Conn {
    pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
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

    pub(crate) async fn send(&mut self, request: &[u8]) -> std::io::Result<Response> {
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

/// What the sending tasks counted (merged over the connections).
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) hist: Option<Histogram<u64>>,
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) errors: u64,
    pub(crate) error_kinds: BTreeMap<String, u64>,
    pub(crate) echo_ok: u64,
    pub(crate) sent: u64,
    /// Index, send time and status of each request (when tracked).
    pub(crate) sends: Vec<(usize, Instant, u16)>,
    pub(crate) last_answer: Option<Instant>,
}

impl Stats {
    pub(crate) fn merge(&mut self, other: Stats) {
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

    pub(crate) fn ok(&self) -> u64 {
        self.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum()
    }

    /// Counts one request that got no answer, by what went wrong.
    fn failed(&mut self, kind: String) {
        self.errors += 1;
        *self.error_kinds.entry(kind).or_default() += 1;
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
                    stats.failed(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(_) => {
                    stats.failed("connect: timeout".to_owned());
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
                if let Some(h) = stats.hist.as_mut() {
                    record(h, from, done);
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
                stats.failed(format!("request: {}", e.kind()));
                *conn = None;
            }
            Err(_) => {
                stats.failed("request: timeout".to_owned());
                *conn = None;
            }
        }
    }
    stats
}

/// Runs a warm-up phase then the timed phase over `concurrency` connections.
/// Returns the timed phase's stats and its start.
pub(crate) async fn drive(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
