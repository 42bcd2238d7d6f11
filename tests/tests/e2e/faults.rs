//! Exactly one answer per Lark message, through crashes and outages
//! (ARCHITECTURE.md, "Delivery guarantees"). Real processes, a
//! 3-node NATS cluster of the test's own with R3 streams (so its nodes can be
//! killed without disturbing anything else; the services get all three URLs),
//! the fakes of Lark and FastGPT. Each test prints its counts: events sent,
//! FastGPT questions, replies shown; and fails on any loss or duplicate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lark_bridge_tests::eventually::{eventually, until, within, within_every};
use lark_bridge_tests::fake_fastgpt::FakeAnswer;
use lark_bridge_tests::ports::free_port;
use lark_bridge_tests::readiness::readyz_becomes;
use serde_json::Value;
use tokio::process::Command;

use crate::cluster::NatsCluster;
use crate::procs::{ProcBridge, Service};

/// The bridge on a fresh 3-node cluster, its streams and buckets with 3 replicas.
async fn bridge_on_a_cluster(env: Vec<(String, String)>) -> (NatsCluster, ProcBridge) {
    let cluster = NatsCluster::start().await;
    let mut env = env;
    env.push(("LARK_BRIDGE__NATS__REPLICAS".into(), "3".into()));
    let b = ProcBridge::start_on(&cluster.url(), env).await;
    let events = common::topology::Topology::new(&b.settings.nats).events_stream();
    assert_eq!(cluster.stream_replicas(&b.js, &events).await.0, 3, "{events} has 3 replicas");
    (cluster, b)
}

/// POSTs like Lark: retries until ingress says 200 (Lark re-pushes an event
/// whose 200 it did not see).
async fn deliver_until_accepted(b: &ProcBridge, event: &Value) {
    let pace = Duration::from_millis(200);
    let accepted =
        within_every(Duration::from_secs(60), pace, || async { (b.deliver(event).await == Some(200)).then_some(()) });
    assert!(accepted.await.is_some(), "ingress never accepted the event");
}

fn message_id(e: &Value) -> String {
    e["event"]["message"]["message_id"].as_str().expect("message id").to_owned()
}

/// Waits up to 30 s for `/readyz` of `s` to answer `want`; panics saying
/// that `s` is not `state`.
async fn readiness_becomes(b: &ProcBridge, s: Service, want: u16, state: &str) {
    let url = format!("http://{}/readyz", b.addr(s));
    let what = format!("{} {state} (/readyz {want})", s.name());
    readyz_becomes(&b.http, &url, want, Duration::from_secs(30), &what).await;
}

/// Visible replies per message id (every id listed, 0 when none).
fn count_replies(b: &ProcBridge, ids: &[String]) -> HashMap<String, usize> {
    let mut per: HashMap<String, usize> = ids.iter().map(|i| (i.clone(), 0)).collect();
    for m in b.lark.visible_messages() {
        if let Some(id) = m.reply_to() {
            *per.entry(id.to_owned()).or_default() += 1;
        }
    }
    per
}

/// Waits until every message has a visible reply (or the time is up) and
/// returns replies per message.
async fn replies_per_message(b: &ProcBridge, ids: &[String], limit: Duration) -> HashMap<String, usize> {
    within(limit, || async { count_replies(b, ids).values().all(|&n| n > 0).then_some(()) }).await;
    // Give late duplicates a chance to show up before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    count_replies(b, ids)
}

const ANSWER_DELAY: Duration = Duration::from_millis(300);
/// How long before a kill a question may have been asked and still be in work.
const IN_WORK: Duration = Duration::from_secs(5);

/// Waits (up to a minute) until FastGPT was asked `n` different questions:
/// the work a kill is meant to interrupt.
async fn wait_asked(b: &ProcBridge, n: usize) {
    until(Duration::from_secs(60), &format!("FastGPT was asked {n} different questions"), || async {
        let asked: std::collections::HashSet<String> = b.fastgpt.requests().into_iter().map(|q| q.content).collect();
        asked.len() >= n
    })
    .await;
}

#[tokio::test]
async fn kill_9_of_any_service_or_of_nats_loses_and_doubles_nothing() {
    let mut env = vec![("RUST_LOG".into(), "info,common::worker=debug,async_nats=warn".into())];
    // `LARK_BRIDGE_FAULTS_STREAMING=1`: the same faults with answers streamed
    // into cards (one card message per question is still one reply).
    let streaming = std::env::var("LARK_BRIDGE_FAULTS_STREAMING").is_ok_and(|v| v == "1");
    if streaming {
        env.push(("LARK_BRIDGE__CHANNELS__SUPPORT__STREAMING".into(), "true".into()));
    }
    let (mut nats, mut b) = bridge_on_a_cluster(env).await;
    let topology = common::topology::Topology::new(&b.settings.nats);
    let events_stream = topology.events_stream();
    let work = [events_stream.clone(), topology.replies_stream()];
    // Every answer takes a while, so there is always work in flight to kill.
    b.fastgpt.push_responses((0..200).map(|_| FakeAnswer::Delay(ANSWER_DELAY, Box::new(FakeAnswer::Echo))).collect());
    let events: Vec<Value> = (0..36)
        .map(|i| b.events().p2p_text(&format!("oc_fault{}", i % 10), &format!("ou_{i}"), &format!("q{i}")))
        .collect();
    let ids: Vec<String> = events.iter().map(message_id).collect();
    // Fault windows: from shortly before a kill (a question asked then may
    // still be in work: asked, its reply being published, its record as
    // answered written, its ack on the way) until the process or node is back.
    let mut windows: Vec<(Instant, Instant)> = Vec::new();
    let before = |k: Instant| k.checked_sub(IN_WORK).unwrap_or(k);

    for e in &events[0..6] {
        deliver_until_accepted(&b, e).await;
    }
    // Each kill waits until the questions before it reached FastGPT, so it
    // hits work in flight (a restarted relay first waits for its partitions).
    wait_asked(&b, 6).await;
    let killed = Instant::now();
    windows.push((before(killed), killed));
    b.kill(Service::Relay).await;
    b.spawn(Service::Relay).await;

    for e in &events[6..12] {
        deliver_until_accepted(&b, e).await;
    }
    wait_asked(&b, 12).await;
    // The answers come back: replies on their way to Lark.
    tokio::time::sleep(ANSWER_DELAY + Duration::from_millis(50)).await;
    b.kill(Service::Responder).await;
    b.spawn(Service::Responder).await;

    for e in &events[12..18] {
        deliver_until_accepted(&b, e).await;
    }
    b.kill(Service::Ingress).await;
    // While ingress is down Lark gets no answer, and will push again.
    assert_eq!(b.deliver(&events[18]).await, None, "nobody answers while ingress is down");
    b.spawn(Service::Ingress).await;
    for e in &events[18..24] {
        deliver_until_accepted(&b, e).await;
    }

    // NATS nodes die while questions flow (FastGPT calls in flight, more
    // events arriving): first the JetStream meta leader, then (once it is
    // back and caught up) the events stream's leader. The services fail over
    // to the other nodes on their own; a restarted node keeps its store.
    nats.wait_current(&b.js, &work).await;
    for e in &events[24..27] {
        deliver_until_accepted(&b, e).await;
    }
    wait_asked(&b, 27).await;
    let meta = nats.meta_leader().await;
    println!("kill -9 of the meta leader {}", nats.name(meta));
    let killed = Instant::now();
    nats.kill(meta).await;
    for e in &events[27..30] {
        deliver_until_accepted(&b, e).await;
    }
    nats.restart(meta).await;
    nats.wait_current(&b.js, &work).await;
    windows.push((before(killed), Instant::now()));
    for e in &events[30..33] {
        deliver_until_accepted(&b, e).await;
    }
    wait_asked(&b, 33).await;
    let leader = nats.stream_leader(&b.js, &events_stream).await;
    println!("kill -9 of the {events_stream} leader {}", nats.name(leader));
    let killed = Instant::now();
    nats.kill(leader).await;
    for e in &events[33..36] {
        deliver_until_accepted(&b, e).await;
    }
    nats.restart(leader).await;
    nats.wait_current(&b.js, &work).await;
    windows.push((before(killed), Instant::now()));

    // Lark's retries: every event pushed twice more.
    for e in &events {
        deliver_until_accepted(&b, e).await;
        deliver_until_accepted(&b, e).await;
    }

    let per = replies_per_message(&b, &ids, Duration::from_secs(90)).await;
    let questions = b.fastgpt.requests();
    // A question whose FastGPT call was in flight when the relay was killed
    // is asked again (the answer died with the process). So is one in work
    // while a NATS node is down: its reply publish fails until the stream
    // has a new leader, or its record as answered did not reach a quorum and
    // its redelivery asks again. FastGPT refuses each such repeat (its
    // `responseChatItemId` is stored) and the relay answers with the stored
    // answer: the workflow runs once per question.
    let runs: Vec<_> = questions.iter().filter(|q| q.ran()).collect();
    let refused = questions.len() - runs.len();
    let mut asked: HashMap<String, usize> = HashMap::new();
    for q in &runs {
        *asked.entry(q.content.clone()).or_default() += 1;
    }
    let mut first_asked: HashMap<String, Instant> = HashMap::new();
    for q in &questions {
        let t = first_asked.entry(q.content.clone()).or_insert(q.received_at);
        *t = (*t).min(q.received_at);
    }
    let re_asked: usize = asked.values().map(|n| n - 1).sum();
    let mut re_asked_outside: Vec<&String> = asked
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(q, _)| q)
        .filter(|q| !windows.iter().any(|(from, to)| (*from..=*to).contains(&first_asked[*q])))
        .collect();
    re_asked_outside.sort();
    let shown: usize = per.values().sum();
    println!(
        "fault suite (3-node NATS cluster, R3 streams): events sent {} (each pushed 3 times), FastGPT calls {} ({refused} refused as asked before, answered from FastGPT's record), questions asked twice: {re_asked}, replies shown {}",
        events.len(),
        questions.len(),
        shown
    );
    let lost: Vec<_> = per.iter().filter(|(_, n)| **n == 0).map(|(id, _)| id).collect();
    if !lost.is_empty() {
        let idx: Vec<usize> = lost.iter().filter_map(|id| ids.iter().position(|i| i == *id)).collect();
        println!("lost events at indexes {idx:?}");
        let t = common::topology::Topology::new(&b.settings.nats);
        for queue in [common::topology::Queue::Events, common::topology::Queue::Replies] {
            let stream = t.work_stream_name(queue);
            if let Ok(mut st) = b.js.get_stream(&stream).await {
                println!("{stream}: {:?}", st.info().await.map(|i| i.state.clone()));
                for p in 0..common::topology::PARTITIONS {
                    let consumer = t.partition_consumer(queue, p);
                    if let Ok(mut c) = st.get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer).await
                    {
                        println!(
                            "{consumer}: {:?}",
                            c.info().await.map(|i| (
                                i.num_pending,
                                i.num_ack_pending,
                                i.num_redelivered,
                                i.num_waiting,
                                i.ack_floor,
                                i.delivered
                            ))
                        );
                    }
                }
                let first = st.info().await.map(|i| i.state.first_sequence).unwrap_or(0);
                if let Ok(m) = st.get_raw_message(first).await {
                    println!("first message {first}: subject {}", m.subject);
                }
            }
        }
        for line in b.raw_logs() {
            if (line.contains("\"WARN\"") || line.contains("\"ERROR\"") || line.contains("worker"))
                && !line.contains("IO error")
            {
                println!("{line}");
            }
        }
    }
    let doubled: Vec<_> = per.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
    assert!(lost.is_empty(), "messages without an answer: {lost:?}");
    assert!(doubled.is_empty(), "messages answered twice: {doubled:?}");
    assert_eq!(shown, events.len());
    assert!(
        re_asked_outside.is_empty(),
        "FastGPT asked again, though not in work at a kill or an outage: {re_asked_outside:?}"
    );
    assert_eq!(re_asked, 0, "no question's workflow ran twice");
    if streaming {
        // Every card shown ended: streaming closed, with the echo of its question.
        for m in b.lark.visible_messages() {
            let id = m.card_id().map(str::to_owned).unwrap_or_else(|| panic!("a card: {m:?}"));
            let card = b.lark.card(&id).expect("the card");
            assert!(!card.streaming && card.text.contains("Echo"), "a finished card: {card:?}");
        }
    }
    b.stop().await;
}

#[tokio::test]
async fn during_a_nats_outage_ingress_answers_503_and_readiness_follows() {
    let (mut nats, b) = bridge_on_a_cluster(vec![]).await;
    for s in Service::ALL {
        readiness_becomes(&b, s, 200, "ready").await;
    }
    nats.kill_all().await;
    for s in Service::ALL {
        readiness_becomes(&b, s, 503, "not ready while NATS is down").await;
    }
    // Ingress never says 200 without NATS, and says so within Lark's window.
    let event = b.events().p2p_text("oc_outage", "ou_o", "during the outage");
    let started = Instant::now();
    let status = b.deliver(&event).await;
    assert_eq!(status, Some(503));
    assert!(started.elapsed() < Duration::from_secs(3), "answered within Lark's 3 s: {:?}", started.elapsed());

    nats.restart_all().await;
    for s in Service::ALL {
        readiness_becomes(&b, s, 200, "ready again after NATS came back, without a restart").await;
    }
    // Lark retries the event; now it goes through, once.
    deliver_until_accepted(&b, &event).await;
    let per = replies_per_message(&b, &[message_id(&event)], Duration::from_secs(30)).await;
    assert_eq!(per.values().sum::<usize>(), 1);
    b.stop().await;
}

#[tokio::test]
async fn sigterm_finishes_work_in_flight_and_a_rolling_restart_loses_nothing() {
    let (_nats, mut b) = bridge_on_a_cluster(vec![]).await;
    b.fastgpt.push_responses(
        (0..20).map(|_| FakeAnswer::Delay(Duration::from_secs(1), Box::new(FakeAnswer::Echo))).collect(),
    );
    let events: Vec<Value> =
        (0..6).map(|i| b.events().p2p_text(&format!("oc_roll{i}"), "ou_r", &format!("r{i}"))).collect();
    for e in &events {
        deliver_until_accepted(&b, e).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A rolling restart: one service after the other, while questions are in flight.
    for s in [Service::Relay, Service::Responder, Service::Ingress] {
        let took = b.terminate(s).await;
        assert!(took < Duration::from_secs(25), "{} exited within its grace period: {took:?}", s.name());
        b.spawn(s).await;
    }
    let ids: Vec<String> = events.iter().map(message_id).collect();
    let per = replies_per_message(&b, &ids, Duration::from_secs(30)).await;
    println!(
        "rolling restart: events sent {}, FastGPT questions {}, replies shown {}",
        events.len(),
        b.fastgpt.requests().len(),
        per.values().sum::<usize>()
    );
    assert!(per.values().all(|&n| n == 1), "{per:?}");
    let ran = b.fastgpt.requests().iter().filter(|r| r.ran()).count();
    assert_eq!(ran, events.len(), "work in flight finished, not asked twice");
    b.stop().await;
}

#[tokio::test]
async fn health_answers_at_once_while_nats_is_not_up_yet() {
    // Three servers of a cluster, none of them up.
    let nats = (0..3).map(|_| format!("nats://127.0.0.1:{}", free_port())).collect::<Vec<_>>().join(",");
    let config = tempfile::NamedTempFile::new().expect("temp file");
    let toml =
        lark_bridge_tests::harness::config_toml(&nats, "early", "http://127.0.0.1:1", "http://127.0.0.1:1/api", true);
    std::fs::write(config.path(), toml).expect("config");
    let http = reqwest::Client::new();
    for (binary, section) in [(env!("CARGO_BIN_EXE_lb-ingress"), "INGRESS"), (env!("CARGO_BIN_EXE_lb-relay"), "RELAY")]
    {
        let port = free_port();
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(config.path())
            .env(format!("LARK_BRIDGE__{section}__LISTEN"), format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starts");
        let get = |path: &str| {
            let (http, url) = (http.clone(), format!("http://127.0.0.1:{port}{path}"));
            async move { http.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
        };
        let alive = format!("{section}: alive while waiting for NATS (Kubernetes must not kill it)");
        eventually(Duration::from_secs(5), &alive, || async { (get("/healthz").await == 200).then_some(()) }).await;
        assert_eq!(get("/readyz").await, 503, "{section}: not ready without NATS");
        let _ = child.kill().await;
    }
}
