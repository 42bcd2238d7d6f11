//! Scaled out (ARCHITECTURE.md, "Order"): several
//! replicas of relay and responder share the work queues by partition.
//!
//! - Lark's limits hold for all responder replicas together: one chat never
//!   gets more than 5 replies a second, the app never more than its limit.
//! - A question pulled while every slot is busy is not redelivered to
//!   another relay when the ack wait runs out: FastGPT is asked once.
//! - A backlog costs one delivery per message (no nak-and-ask-again loop),
//!   and a conversation keeps its order across two relays and a `kill -9`.
//!
//! No assertion on time: counts of deliveries, of FastGPT calls, of Lark's
//! refusals, and orders.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use common::conversation::ConversationKey;
use common::topology::{partition_of, Topology};
use lark_bridge_tests::eventually::{throughout, until, within_every};
use lark_bridge_tests::fake_fastgpt::{FakeAnswer, FakeFastGpt};
use lark_bridge_tests::fake_lark::{FakeApp, FakeLark};
use lark_bridge_tests::harness::{
    config_toml, delete_namespace, nats_url, prepare_work_queues, Bridge, Options, APP_ID, APP_SECRET, BOT_OPEN_ID,
    CHANNEL, ENCRYPT_KEY, FASTGPT_KEY, VERIFICATION_TOKEN,
};
use lark_bridge_tests::lark_events::{random_hex, EventBuilder, Mention};
use lark_bridge_tests::ports::free_port;
use lark_bridge_tests::readiness::readyz_becomes;
use secrecy::SecretString;
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);

/// Most replies inside any `window`, over `times`.
fn most_within(times: &[std::time::Instant], window: Duration) -> usize {
    let mut times = times.to_vec();
    times.sort();
    (0..times.len())
        .map(|i| times[i..].iter().filter(|u| u.duration_since(times[i]) < window).count())
        .max()
        .unwrap_or(0)
}

/// Waits until the `{service}` partitions are shared out among `replicas`
/// replicas (each holds at least one), so a test starts from a settled state.
async fn wait_for_leases(js: &jetstream::Context, t: &Topology, service: &str, replicas: usize) {
    let kv = js.get_key_value(t.leases_bucket()).await.expect("the lease bucket");
    // Sixteen reads of the bucket a check: ten checks a second at most.
    let shared = within_every(Duration::from_secs(20), Duration::from_millis(100), || async {
        let mut per: HashMap<String, usize> = HashMap::new();
        for p in 0..common::topology::PARTITIONS {
            if let Ok(Some(owner)) = kv.get(common::topology::keys::lease(service, p)).await {
                *per.entry(String::from_utf8_lossy(&owner).into_owned()).or_default() += 1;
            }
        }
        let held: usize = per.values().sum();
        (held == usize::from(common::topology::PARTITIONS) && per.len() == replicas).then_some(())
    })
    .await;
    assert!(shared.is_some(), "the {service} partitions were not shared out among {replicas} replicas");
}

/// Deliveries by every consumer of `stream` (each delivery, first or not,
/// takes one consumer sequence).
async fn deliveries(js: &jetstream::Context, stream: &str) -> u64 {
    use futures::TryStreamExt;
    let s = js.get_stream(stream).await.expect("stream");
    let infos: Vec<_> = s.consumers().try_collect().await.expect("consumers");
    infos.iter().map(|c| c.delivered.consumer_sequence).sum()
}

#[tokio::test]
async fn two_responders_keep_one_chat_within_five_replies_a_second() {
    let b = Bridge::start_with(Options { responders: 2, ..Default::default() }).await;
    wait_for_leases(&b.js, &b.topology(), "responder", 2).await;
    // Sixteen members of one group ask at once: sixteen conversations, one chat.
    for i in 0..16 {
        let q = format!("@_user_1 question {i}");
        b.deliver_ok(&b.events().group_text("oc_busy", &format!("ou_member{i}"), &q, &[Mention::bot(BOT_OPEN_ID)]))
            .await;
    }
    let shown = b.lark.wait_for_messages(16, WAIT).await;
    assert_eq!(shown.len(), 16);
    let throttled = b.lark.all_attempts().into_iter().filter(|a| a.code == 230020).count();
    assert_eq!(throttled, 0, "Lark never had to throttle the chat (230020)");
    let times: Vec<_> = shown.iter().map(|m| m.received_at).collect();
    let most = most_within(&times, Duration::from_secs(1));
    assert!(most <= 5, "{most} replies into one chat within one second");
    b.stop().await;
}

#[tokio::test]
async fn two_responders_share_the_apps_limit() {
    let b = Bridge::start_with(Options {
        responders: 2,
        env: vec![("LARK_BRIDGE__RESPONDER__APP_PER_SECOND", "4".into())],
        ..Default::default()
    })
    .await;
    wait_for_leases(&b.js, &b.topology(), "responder", 2).await;
    // Private chats: only the app's limit paces them.
    for i in 0..24 {
        b.deliver_ok(&b.events().p2p_text(&format!("oc_app{i}"), &format!("ou_app{i}"), "hello")).await;
    }
    let shown = b.lark.wait_for_messages(24, WAIT).await;
    assert_eq!(shown.len(), 24);
    let times: Vec<_> = shown.iter().map(|m| m.received_at).collect();
    // Over three seconds the limit allows 12; the two replicas' shares (2 a
    // second each) at most 12, plus one each for a send the machine delayed
    // into the window. Each replica at the whole limit would send about 24.
    let most = most_within(&times, Duration::from_secs(3));
    assert!(most <= 14, "{most} replies of the app within three seconds, over both responders (limit 4 a second)");
    b.stop().await;
}

#[tokio::test]
async fn with_every_slot_busy_past_the_ack_wait_fastgpt_is_asked_once_per_question() {
    // Two relays with two slots each; every answer takes longer than the ack
    // wait, so what waits for a slot outlives the ack wait many times over.
    let b = Bridge::start_with(Options {
        relays: 2,
        ack_wait: Some(Duration::from_secs(2)),
        env: vec![("LARK_BRIDGE__RELAY__MAX_IN_FLIGHT", "2".into())],
        ..Default::default()
    })
    .await;
    wait_for_leases(&b.js, &b.topology(), "relay", 2).await;
    let slow = Duration::from_secs(3);
    b.fastgpt.push_responses((0..40).map(|_| FakeAnswer::Delay(slow, Box::new(FakeAnswer::Echo))).collect());
    let questions: Vec<String> = (0..12).map(|i| format!("slow question {i}")).collect();
    for (i, q) in questions.iter().enumerate() {
        b.deliver_ok(&b.events().p2p_text(&format!("oc_slow{i}"), &format!("ou_slow{i}"), q)).await;
    }
    let shown = b.lark.wait_for_messages(questions.len(), Duration::from_secs(90)).await;
    assert_eq!(shown.len(), questions.len());
    let mut asked: HashMap<String, usize> = HashMap::new();
    for r in b.fastgpt.requests() {
        *asked.entry(r.content).or_default() += 1;
    }
    for q in &questions {
        assert_eq!(asked.get(q), Some(&1), "{q:?} asked {:?} times: {asked:?}", asked.get(q));
    }
    b.stop().await;
}

#[tokio::test]
async fn a_backlog_costs_one_delivery_per_message() {
    // The backlog is stored while no relay runs.
    let mut b = Bridge::start_with(Options { relays: 0, ..Default::default() }).await;
    let sent: Vec<String> = (0..40).map(|i| format!("backlog {i}")).collect();
    for q in &sent {
        b.deliver_ok(&b.events().p2p_text("oc_backlog", "ou_backlog", q)).await;
    }
    for i in 0..100 {
        b.deliver_ok(&bot_added(&format!("{:032x}", 0xbac0_0000u64 + i))).await;
    }
    let t = b.topology();
    assert_eq!(b.stream_len(&t.events_stream()).await, 140);
    b.spawn_relay().await;
    let shown = b.lark.wait_for_messages(sent.len(), WAIT).await;
    assert_eq!(shown.len(), sent.len());
    let events = t.events_stream();
    until(Duration::from_secs(10), "every event handled", || async { b.stream_len(&events).await == 0 }).await;
    let asked: Vec<String> = b.fastgpt.requests().into_iter().map(|r| r.content).collect();
    assert_eq!(asked, sent, "asked in the order sent");
    let delivered = deliveries(&b.js, &t.events_stream()).await;
    assert_eq!(delivered, 140, "one delivery per event: {} redeliveries", delivered.saturating_sub(140));
    b.stop().await;
}

/// An event that is not a message (the bot added to a group).
fn bot_added(event_id: &str) -> serde_json::Value {
    serde_json::json!({
        "schema": "2.0",
        "header": {
            "event_id": event_id,
            "event_type": "im.chat.member.bot.added_v1",
            "create_time": "1608725989000",
            "token": VERIFICATION_TOKEN,
            "app_id": APP_ID,
            "tenant_key": "t"
        },
        "event": { "chat_id": "oc_new", "name": "New group" }
    })
}

/// The bridge as processes, with two relays: enough to kill one.
struct Procs {
    js: jetstream::Context,
    topology: Topology,
    config: tempfile::NamedTempFile,
    ingress_port: u16,
    relays: Vec<Child>,
    others: Vec<Child>,
}

impl Procs {
    async fn start(lark: &FakeLark, fastgpt: &FakeFastGpt, ack_wait: Duration, lease_ttl: Duration) -> Self {
        let ns = format!("k{}", random_hex(10));
        let toml = config_toml(&nats_url(), &ns, &lark.base_url(), &fastgpt.base_url(), true);
        let settings =
            common::config::Settings::from_toml_with_env(&toml, &Default::default()).expect("valid configuration");
        let topology = Topology::new(&settings.nats);
        let js = jetstream::new(async_nats::connect(nats_url()).await.expect("NATS runs for the tests"));
        prepare_work_queues(&js, &topology, Some(ack_wait), Some(lease_ttl)).await;
        let config = tempfile::NamedTempFile::new().expect("a temp file");
        std::fs::write(config.path(), toml).expect("config written");
        let mut p = Self { js, topology, config, ingress_port: free_port(), relays: Vec::new(), others: Vec::new() };
        let ingress = p.spawn(env!("CARGO_BIN_EXE_lb-ingress"), "INGRESS", p.ingress_port).await;
        p.others.push(ingress);
        let responder = p.spawn(env!("CARGO_BIN_EXE_lb-responder"), "RESPONDER", free_port()).await;
        p.others.push(responder);
        for _ in 0..2 {
            let relay = p.spawn(env!("CARGO_BIN_EXE_lb-relay"), "RELAY", free_port()).await;
            p.relays.push(relay);
        }
        p
    }

    async fn spawn(&self, binary: &str, section: &str, port: u16) -> Child {
        let child = Command::new(binary)
            .arg("--config")
            .arg(self.config.path())
            .env("RUST_LOG", "info,async_nats=warn")
            .env("LARK_BRIDGE__TELEMETRY__LOG_FORMAT", "text")
            .env(format!("LARK_BRIDGE__{section}__LISTEN"), format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let url = format!("http://127.0.0.1:{port}/readyz");
        let what = format!("{binary} becomes ready");
        readyz_becomes(&reqwest::Client::new(), &url, 200, Duration::from_secs(10), &what).await;
        child
    }

    /// `kill -9` of the relay holding `partition` of the events queue.
    async fn kill_relay_owning(&mut self, partition: u16) -> u32 {
        let kv = self.js.get_key_value(self.topology.leases_bucket()).await.expect("lease bucket");
        let owner = kv
            .get(common::topology::keys::lease("relay", partition))
            .await
            .expect("lease")
            .expect("the partition is held");
        let owner = String::from_utf8_lossy(&owner).into_owned();
        let pid: u32 = owner.split('-').next().and_then(|p| p.parse().ok()).expect("the owner id starts with its pid");
        let i = self.relays.iter().position(|c| c.id() == Some(pid)).expect("one of our relays holds it");
        let mut relay = self.relays.remove(i);
        relay.kill().await.expect("kill -9");
        pid
    }

    async fn stop(mut self) {
        for mut c in self.relays.drain(..).chain(self.others.drain(..)) {
            let _ = c.kill().await;
        }
        delete_namespace(&self.js, &self.topology).await;
    }
}

#[tokio::test]
async fn a_conversation_keeps_its_order_across_two_relays_and_a_kill_9() {
    lark_bridge_tests::harness::init_test_logs();
    let lark = FakeLark::start(vec![FakeApp::new(APP_ID, APP_SECRET, BOT_OPEN_ID)]).await;
    let fastgpt = FakeFastGpt::start(FASTGPT_KEY).await;
    let mut p = Procs::start(&lark, &fastgpt, Duration::from_secs(3), Duration::from_secs(3)).await;
    wait_for_leases(&p.js, &p.topology, "relay", 2).await;
    let key = common::lark::crypto::EncryptKey::new(SecretString::from(ENCRYPT_KEY.to_owned()));
    let url = format!("http://127.0.0.1:{}/lark/{CHANNEL}/events", p.ingress_port);
    let events = EventBuilder::new(APP_ID).token(VERIFICATION_TOKEN);

    // Every answer takes a moment, so there is always work in flight to kill.
    fastgpt.push_responses(
        (0..100).map(|_| FakeAnswer::Delay(Duration::from_millis(300), Box::new(FakeAnswer::Echo))).collect(),
    );
    let sent: Vec<String> = (0..12).map(|i| format!("ordered {i:02}")).collect();
    for q in &sent {
        let e = events.p2p_text("oc_ordered", "ou_ordered", q);
        let status = lark.deliver(&url, &e, Some(&key)).await.expect("ingress answers").status();
        assert_eq!(status, 200);
    }
    // Other conversations meanwhile.
    for i in 0..6 {
        let e = events.p2p_text(&format!("oc_other{i}"), "ou_other", &format!("other {i}"));
        assert_eq!(lark.deliver(&url, &e, Some(&key)).await.expect("ingress answers").status(), 200);
    }
    // Kill the relay that owns the conversation while it is half-way through.
    let token = ConversationKey::Chat { chat_id: "oc_ordered".into() }.token();
    let partition = partition_of(CHANNEL, &token);
    until(Duration::from_secs(30), "four questions asked", || async {
        fastgpt.requests().iter().filter(|r| r.content.starts_with("ordered")).count() >= 4
    })
    .await;
    let killed = p.kill_relay_owning(partition).await;

    let shown = lark.wait_for_messages(sent.len() + 6, Duration::from_secs(90)).await;
    throughout(Duration::from_secs(2), "no answer shown twice", || async {
        lark.visible_messages().len() == shown.len()
    })
    .await;
    let asked: Vec<String> =
        fastgpt.requests().into_iter().map(|r| r.content).filter(|c| c.starts_with("ordered")).collect();
    let mut collapsed = asked.clone();
    collapsed.dedup();
    println!("relay {killed} killed; FastGPT asked {asked:?}");
    assert_eq!(collapsed, sent, "asked in the order sent (the question in flight at the kill may be asked again)");
    assert!(asked.len() <= sent.len() + 1, "only the question in flight at the kill is asked again: {asked:?}");
    let answered: Vec<String> = lark
        .visible_messages()
        .iter()
        .map(|m| m.text())
        .filter(|t| t.contains("ordered"))
        .map(|t| t[t.find("ordered").unwrap_or(0)..].trim().to_owned())
        .collect();
    assert_eq!(answered, sent, "answered once each, in order");
    assert_eq!(shown.len(), sent.len() + 6);
    p.stop().await;
}

/// A handler that panics the first time it sees "boom".
#[derive(Default)]
struct Panicky {
    calls: std::sync::Mutex<Vec<String>>,
}

impl common::worker::Handler for Panicky {
    async fn handle(&self, message: &async_nats::jetstream::Message, _attempt: u32) -> common::worker::Outcome {
        let text = String::from_utf8_lossy(&message.payload).into_owned();
        let first = {
            let mut calls = self.calls.lock().expect("calls");
            calls.push(text.clone());
            calls.iter().filter(|c| **c == text).count() == 1
        };
        if text == "boom" && first {
            panic!("a bug in the handler (on purpose)");
        }
        common::worker::Outcome::Done
    }
}

/// The `in_flight` gauge of a worker, as `/metrics` shows it.
fn in_flight_gauge(worker: &str) -> Option<f64> {
    let text = common::health::metrics_handle().render();
    let prefix = format!("lark_bridge_in_flight{{worker=\"{worker}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// One worker over a namespace of its own, in this process, with `handler`:
/// what a test of the pull loop itself starts.
struct Probe {
    t: Topology,
    js: jetstream::Context,
    stop: tokio_util::sync::CancellationToken,
    running: tokio::task::JoinHandle<()>,
}

impl Probe {
    async fn start<H: common::worker::Handler>(
        name: &'static str,
        handler: std::sync::Arc<H>,
        ack_wait: Duration,
    ) -> Self {
        use common::topology::{Queue, LEASE_TTL};
        use common::worker::{Share, Worker};
        lark_bridge_tests::harness::init_test_logs();
        let settings = common::config::NatsSettings { namespace: format!("w{}", random_hex(10)), ..Default::default() };
        let t = Topology::new(&settings);
        let js = jetstream::new(async_nats::connect(nats_url()).await.expect("NATS runs for the tests"));
        t.ensure_streams(&js).await.expect("streams");
        let worker = Worker {
            name,
            consumers: t.partition_consumers(&js, Queue::Events, ack_wait).await.expect("consumers"),
            stream: js.get_stream(t.events_stream()).await.expect("stream"),
            leases: t.leases(&js, LEASE_TTL).await.expect("leases"),
            attempts: t.attempts(&js).await.expect("attempts"),
            handler,
            max_attempts: 5,
            max_in_flight: 4,
            grace: Duration::from_secs(1),
            share: tokio::sync::watch::Sender::new(Share::default()),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let bound = common::health::Health::new(None).check("consumer_bound");
        let running = tokio::spawn(worker.run(stop.clone(), bound));
        Self { t, js, stop, running }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.running.await;
        delete_namespace(&self.js, &self.t).await;
    }
}

#[tokio::test]
async fn a_panicking_handler_frees_its_slot_and_its_conversation_goes_on_in_order() {
    common::health::metrics_handle();
    let handler = std::sync::Arc::new(Panicky::default());
    let probe = Probe::start("panic_probe", handler.clone(), Duration::from_secs(2)).await;
    let (t, js) = (&probe.t, &probe.js);
    let subject = t.event_subject(CHANNEL, "one_conversation");
    for text in ["boom", "next"] {
        js.publish(subject.clone(), text.into()).await.expect("publish").await.expect("stored");
    }
    until(Duration::from_secs(30), "three calls", || async { handler.calls.lock().expect("calls").len() >= 3 }).await;
    let calls = handler.calls.lock().expect("calls").clone();
    assert_eq!(calls, ["boom", "boom", "next"], "handed back after the panic, then in order");
    until(WAIT, "the in-flight gauge came down after the panic", || async {
        in_flight_gauge("panic_probe") == Some(0.0)
    })
    .await;
    probe.stop().await;
}

/// A handler that hands "gone" back for a long while the first time it sees it.
#[derive(Default)]
struct RetriesLate {
    calls: std::sync::Mutex<Vec<String>>,
}

impl common::worker::Handler for RetriesLate {
    async fn handle(&self, message: &async_nats::jetstream::Message, _attempt: u32) -> common::worker::Outcome {
        let text = String::from_utf8_lossy(&message.payload).into_owned();
        self.calls.lock().expect("calls").push(text.clone());
        if text == "gone" {
            return common::worker::Outcome::Retry(Duration::from_secs(600));
        }
        common::worker::Outcome::Done
    }
}

/// A message handed back (`Retry`) and then removed from the stream never
/// comes back: its conversation stops waiting for it at the next recheck
/// instead of blocking until the partition changes hands.
#[tokio::test]
async fn a_conversation_does_not_wait_for_a_handed_back_message_that_was_removed() {
    let handler = std::sync::Arc::new(RetriesLate::default());
    let probe = Probe::start("handed_back_probe", handler.clone(), Duration::from_secs(30)).await;
    let (t, js) = (&probe.t, &probe.js);
    let stream = js.get_stream(t.events_stream()).await.expect("stream");
    let subject = t.event_subject(CHANNEL, "one_conversation");
    let gone = js.publish(subject.clone(), "gone".into()).await.expect("publish").await.expect("stored").sequence;
    js.publish(subject.clone(), "next".into()).await.expect("publish").await.expect("stored");
    until(Duration::from_secs(30), "gone is handled", || async { !handler.calls.lock().expect("calls").is_empty() })
        .await;
    throughout(Duration::from_millis(500), "next waits for gone to come back", || async {
        *handler.calls.lock().expect("calls") == ["gone"]
    })
    .await;
    stream.delete_message(gone).await.expect("removed by hand");
    until(Duration::from_secs(30), "next is handled", || async { handler.calls.lock().expect("calls").len() >= 2 })
        .await;
    let calls = handler.calls.lock().expect("calls").clone();
    assert_eq!(calls, ["gone", "next"], "next ran once gone was found removed, well before its retry or the max wait");
    probe.stop().await;
}

/// A handler that always fails, and whose giving up fails once (its dead
/// letter not stored) before it works.
#[derive(Default)]
struct AlwaysFails {
    handled: std::sync::atomic::AtomicU32,
    given_up: std::sync::atomic::AtomicU32,
}

impl common::worker::Handler for AlwaysFails {
    async fn handle(&self, _message: &async_nats::jetstream::Message, _attempt: u32) -> common::worker::Outcome {
        self.handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        common::worker::Outcome::Retry(Duration::from_millis(50))
    }

    async fn give_up(&self, _message: &async_nats::jetstream::Message, _attempt: u32) -> common::worker::Outcome {
        match self.given_up.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => common::worker::Outcome::Retry(Duration::from_millis(50)),
            _ => common::worker::Outcome::Drop,
        }
    }
}

/// Whatever path of a handler asks for a retry, the pull loop stops at
/// `max_attempts` (5 in the probe): then the message is given up (a dead
/// letter), and only the giving up is tried again, never the work.
#[tokio::test]
async fn a_message_failing_at_max_attempts_is_given_up_not_retried_forever() {
    use std::sync::atomic::Ordering::SeqCst;
    let handler = std::sync::Arc::new(AlwaysFails::default());
    let probe = Probe::start("give_up_probe", handler.clone(), Duration::from_secs(30)).await;
    let (t, js) = (&probe.t, &probe.js);
    let stream = js.get_stream(t.events_stream()).await.expect("stream");
    js.publish(t.event_subject(CHANNEL, "failing"), "fails".into()).await.expect("publish").await.expect("stored");
    until(Duration::from_secs(30), "given up twice", || async { handler.given_up.load(SeqCst) >= 2 }).await;
    // Handled max_attempts times, given up once more after its own failure,
    // then done: nothing more happens.
    throughout(Duration::from_secs(2), "handled 5 times and given up twice, no more", || async {
        handler.handled.load(SeqCst) == 5 && handler.given_up.load(SeqCst) == 2
    })
    .await;
    let stream = &stream;
    until(WAIT, "the message left the queue", || async {
        stream.clone().info().await.is_ok_and(|i| i.state.messages == 0)
    })
    .await;
    probe.stop().await;
}
