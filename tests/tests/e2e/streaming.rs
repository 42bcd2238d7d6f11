//! Streamed answers: one CardKit card per question, growing as FastGPT
//! writes, ending as exactly FastGPT's full answer, whatever crashes, retries
//! or late messages happen.

use std::time::{Duration, Instant};

use common::envelope::{Draft, ReplyBody, ReplyCommand, ReplyKind};
use common::topology::keys;
use lark_bridge_tests::fake_fastgpt::FakeAnswer;
use lark_bridge_tests::fake_lark::cardkit::{Card, CardOpKind, CardOperation};
use lark_bridge_tests::fake_lark::FakeLark;
use lark_bridge_tests::harness::{nats_url, Bridge, Options, APP_ID, CHANNEL};
use serde_json::json;

use crate::pipeline::WAIT;
use crate::procs::{ProcBridge, Service};

fn streaming() -> Options {
    Options { streaming: true, ..Default::default() }
}

fn words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("word{i} ")).collect()
}

/// The finished card whose text is `want` (trimmed, as the card shows it).
async fn finished_card(lark: &FakeLark, want: &str, within: Duration) -> Card {
    let want = want.trim().to_owned();
    match lark.wait_for_card(|c| !c.streaming && c.text.trim() == want, within).await {
        Some(c) => c,
        None => panic!("no finished card with the full answer; cards: {:#?}", lark.cards()),
    }
}

fn ops_of(lark: &FakeLark, card_id: &str) -> Vec<CardOperation> {
    lark.card_operations().into_iter().filter(|o| o.card_id == card_id).collect()
}

/// Lark's rules on one card: sequences rise, at most 10 operations a second.
fn assert_within_cardkit_rules(ops: &[CardOperation]) {
    let accepted: Vec<&CardOperation> = ops.iter().filter(|o| o.code == 0 && o.kind != CardOpKind::Create).collect();
    for pair in accepted.windows(2) {
        assert!(pair[1].sequence > pair[0].sequence, "sequences rise: {:?} then {:?}", pair[0], pair[1]);
    }
    for (i, op) in ops.iter().enumerate() {
        let in_second = ops[i..].iter().take_while(|o| o.at.duration_since(op.at) < Duration::from_secs(1)).count();
        assert!(in_second <= 10, "{in_second} operations within one second on one card");
    }
    assert!(ops.iter().all(|o| o.code != 300317 || o.kind == CardOpKind::Content), "only a draft may lose a race");
}

#[tokio::test]
async fn an_answer_grows_in_one_card_and_ends_as_fastgpts_full_text() {
    let b = Bridge::start_with(streaming()).await;
    let deltas = words(20);
    let full: String = deltas.concat();
    b.fastgpt.push_responses(vec![FakeAnswer::stream(deltas, Duration::from_millis(100))]);
    let event = b.events().message_id("om_s1").p2p_text("oc_s1", "ou_a", "tell me");
    b.deliver_ok(&event).await;

    let card = finished_card(&b.lark, &full, WAIT).await;
    // It grew: several texts, each longer than the one before.
    let texts: Vec<&String> = card.text_history.iter().map(|(_, t)| t).collect();
    assert!(texts.len() >= 3, "the card grew in steps: {texts:?}");
    for pair in texts.windows(2) {
        assert!(pair[1].len() >= pair[0].len(), "the text only grows: {pair:?}");
    }
    // One message, the card, replying to the question.
    let shown = b.lark.visible_messages();
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert_eq!(shown[0].card_id(), Some(card.card_id.as_str()));
    assert_eq!(shown[0].reply_to(), Some("om_s1"));
    assert_eq!(b.lark.cards().len(), 1, "one card created");
    assert_within_cardkit_rules(&ops_of(&b.lark, &card.card_id));
    let asked = b.fastgpt.requests();
    assert_eq!(asked.len(), 1);
    assert!(asked[0].stream && asked[0].detail, "asked with stream and detail");
    // The card replaced the Typing reaction: none left behind.
    assert!(b.lark.reactions().iter().all(|r| r.removed_at.is_some()), "{:?}", b.lark.reactions());
    b.stop().await;
}

#[tokio::test]
async fn an_answer_longer_than_a_card_goes_on_in_further_messages_in_order() {
    let b = Bridge::start_with(streaming()).await;
    let event = b.events().message_id("om_long").p2p_text("oc_long", "ou_a", "stream-long:70000 please");
    b.deliver_ok(&event).await;
    b.lark.wait_for_messages(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shown = b.lark.visible_messages();
    assert!(shown.len() >= 3, "a 70 KB answer needs at least three cards: {}", shown.len());
    assert!(shown[0].card_id().is_some(), "the streaming card comes first");
    let first = b.lark.card(shown[0].card_id().unwrap_or_default()).expect("the card");
    assert!(!first.streaming, "streaming closed");
    for (i, m) in shown.iter().enumerate() {
        assert_eq!(m.reply_to(), Some("om_long"));
        assert!(m.uuid.as_deref().is_some_and(|u| u.ends_with(&format!("-{i}"))), "part {i} in order: {:?}", m.uuid);
        assert!(!m.text().trim().is_empty(), "part {i} is not empty");
    }
    let total: usize = shown.iter().map(|m| m.text().len()).sum();
    assert!(total >= 68_000, "nothing cut: {total} bytes shown");
    b.stop().await;
}

#[tokio::test]
async fn an_error_mid_stream_says_the_answer_was_interrupted() {
    let b = Bridge::start_with(streaming()).await;
    b.fastgpt.push_responses(vec![FakeAnswer::StreamThenError {
        deltas: vec!["Half ".into(), "an answer".into()],
        every: Duration::from_millis(100),
        error: json!({ "message": "node failed" }),
    }]);
    let event = b.events().message_id("om_err").p2p_text("oc_err", "ou_a", "fail midway");
    b.deliver_ok(&event).await;
    let card = b
        .lark
        .wait_for_card(|c| !c.streaming && c.text.contains("interrupted"), WAIT)
        .await
        .unwrap_or_else(|| panic!("no interrupted card: {:#?}", b.lark.cards()));
    assert!(card.text.contains("Half an answer"), "what was written stays: {}", card.text);
    assert!(card.text.contains("workflow failed"), "and why it stopped: {}", card.text);
    assert_eq!(b.lark.visible_messages().len(), 1);
    assert_eq!(b.fastgpt.requests().len(), 1, "a workflow error is not retried");
    b.stop().await;
}

#[tokio::test]
async fn without_the_cardkit_scope_the_answer_goes_out_whole_once() {
    let b = Bridge::start_with(streaming()).await;
    b.lark.remove_scope(APP_ID, "cardkit:card:write");
    let deltas = words(8);
    let full: String = deltas.concat();
    b.fastgpt.push_responses(vec![FakeAnswer::stream(deltas, Duration::from_millis(50))]);
    let event = b.events().message_id("om_noscope").p2p_text("oc_noscope", "ou_a", "no cards");
    b.deliver_ok(&event).await;
    b.lark.wait_for_messages(1, WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shown = b.lark.visible_messages();
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert_eq!(shown[0].text().trim(), full.trim());
    assert!(shown[0].card_id().is_none(), "not a card");
    assert!(b.lark.cards().is_empty());
    let refused = b.lark.card_operations();
    assert!(refused.iter().all(|o| o.code == 99991672), "{refused:?}");
    // The refusal is remembered a while: the next answer does not try again.
    b.deliver_ok(&b.events().message_id("om_noscope2").p2p_text("oc_noscope", "ou_a", "again")).await;
    b.lark.wait_for_messages(2, WAIT).await;
    assert_eq!(b.lark.visible_messages().len(), 2);
    assert_eq!(b.lark.card_operations().len(), refused.len(), "CardKit not asked again at once");
    b.stop().await;
}

#[tokio::test]
async fn past_the_streaming_window_the_card_is_finished_with_a_full_update() {
    let b = Bridge::start_with(streaming()).await;
    b.lark.set_streaming_window(Duration::from_millis(700));
    let deltas = words(20);
    let full: String = deltas.concat();
    b.fastgpt.push_responses(vec![FakeAnswer::stream(deltas, Duration::from_millis(100))]);
    let event = b.events().message_id("om_window").p2p_text("oc_window", "ou_a", "slow one");
    b.deliver_ok(&event).await;
    let card = finished_card(&b.lark, &full, WAIT).await;
    let ops = ops_of(&b.lark, &card.card_id);
    assert!(ops.iter().any(|o| o.kind == CardOpKind::Update && o.code == 0), "a full update finished it: {ops:#?}");
    assert_eq!(b.lark.visible_messages().len(), 1);
    b.stop().await;
}

#[tokio::test]
async fn after_the_final_answer_neither_a_late_draft_nor_a_redelivered_reply_changes_anything() {
    let b = Bridge::start_with(streaming()).await;
    let deltas = words(5);
    let full: String = deltas.concat();
    b.fastgpt.push_responses(vec![FakeAnswer::stream(deltas, Duration::from_millis(50))]);
    let event = b.events().message_id("om_late").p2p_text("oc_late", "ou_a", "then late ones");
    b.deliver_ok(&event).await;
    let card = finished_card(&b.lark, &full, WAIT).await;
    let ops_before = ops_of(&b.lark, &card.card_id).len();

    let source = format!("{CHANNEL}:msg:om_late");
    let target = ReplyCommand {
        channel: CHANNEL.into(),
        source: source.clone(),
        reply_to: "om_late".into(),
        chat_id: "oc_late".into(),
        in_thread: false,
        kind: ReplyKind::Answer,
        body: ReplyBody::markdown("A DIFFERENT ANSWER"),
    };
    // A draft of a later attempt, after the final answer.
    let late: Draft = target.draft((u64::MAX, 1), 1, "STALE DRAFT");
    let client = async_nats::connect(nats_url()).await.expect("NATS");
    let topology = b.topology();
    let chat = common::conversation::short_hash(&[b"oc_late".as_slice()]);
    client
        .publish(topology.draft_subject(CHANNEL, &chat), serde_json::to_vec(&late).expect("json").into())
        .await
        .expect("published");
    client.flush().await.expect("flushed");
    // The final reply again, as a redelivery past the duplicate window would bring it.
    let mut headers = target.headers();
    headers.insert(common::envelope::MSG_ID_HEADER, "a-redelivery");
    b.js.publish_with_headers(
        topology.reply_subject(CHANNEL, &chat),
        headers,
        serde_json::to_vec(&target).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let now = b.lark.card(&card.card_id).expect("the card");
    assert_eq!(now.text.trim(), full.trim(), "the final answer stays");
    assert_eq!(ops_of(&b.lark, &card.card_id).len(), ops_before, "no operation on the card");
    assert_eq!(b.lark.visible_messages().len(), 1, "no second message");
    assert!(keys::card(CHANNEL, &source).starts_with(CHANNEL));
    b.stop().await;
}

/// kill -9 of the relay mid-stream (the question is asked again, FastGPT
/// refuses its dataId as stored, and the same card ends with the answer of
/// the one run, which FastGPT finished without its client), then of the responder mid-stream (another
/// start goes on with the card from its shared state).
#[tokio::test]
async fn kill_9_mid_stream_still_ends_in_one_card_with_the_full_answer() {
    let env = vec![("LARK_BRIDGE__CHANNELS__SUPPORT__STREAMING".to_owned(), "true".to_owned())];
    let mut b = ProcBridge::start(env).await;

    // 1. The relay dies while FastGPT streams.
    let q1 = b.events().message_id("om_kill_relay").p2p_text("oc_kill_relay", "ou_a", "stream:30x150ms relay dies");
    assert_eq!(b.deliver(&q1).await, Some(200));
    b.lark.wait_for_card(|c| c.streaming && !c.text.is_empty(), WAIT).await.expect("a streaming card");
    b.kill(Service::Relay).await;
    let killed_at = Instant::now();
    b.spawn(Service::Relay).await;
    let requests = b.fastgpt.wait_for_requests(2, Duration::from_secs(90)).await;
    assert_eq!(requests.len(), 2, "asked again after the kill");
    let card = b
        .lark
        .wait_for_card(
            |c| !c.streaming && c.text.contains("relay dies") && c.text.contains("turn 1"),
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|| panic!("the card ends with the second answer: {:#?}", b.lark.cards()));
    let shown: Vec<_> =
        b.lark.visible_messages().into_iter().filter(|m| m.reply_to() == Some("om_kill_relay")).collect();
    assert_eq!(shown.len(), 1, "one message for the question: {shown:#?}");
    assert_eq!(shown[0].card_id(), Some(card.card_id.as_str()));
    let ran = b.fastgpt.requests().iter().filter(|r| r.ran()).count();
    assert_eq!(ran, 1, "the workflow ran once: {:#?}", b.fastgpt.requests());
    tracing::info!(after = ?killed_at.elapsed(), "relay kill recovered");

    // 2. The responder dies while FastGPT streams.
    let q2 = b.events().message_id("om_kill_resp").p2p_text("oc_kill_resp", "ou_b", "stream:30x150ms responder dies");
    assert_eq!(b.deliver(&q2).await, Some(200));
    b.lark
        .wait_for_card(|c| c.streaming && c.card_id != card.card_id && !c.text.is_empty(), WAIT)
        .await
        .expect("a second streaming card");
    b.kill(Service::Responder).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.spawn(Service::Responder).await;
    let card2 = b
        .lark
        .wait_for_card(|c| !c.streaming && c.text.contains("responder dies"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("the second card ends: {:#?}", b.lark.cards()));
    let ran = b.fastgpt.requests().iter().filter(|r| r.ran()).count();
    assert_eq!(ran, 2, "the responder's death does not ask FastGPT again");
    let shown: Vec<_> =
        b.lark.visible_messages().into_iter().filter(|m| m.reply_to() == Some("om_kill_resp")).collect();
    assert_eq!(shown.len(), 1, "one message for the second question: {shown:#?}");
    assert_eq!(shown[0].card_id(), Some(card2.card_id.as_str()));
    assert!(card2.text.trim_end().ends_with("responder dies"), "the full answer: {}", card2.text);

    let metrics = b.metrics(Service::Responder).await;
    assert!(metrics.contains("lark_bridge_card_operations_total"), "card operations are counted");
    b.stop().await;
}
