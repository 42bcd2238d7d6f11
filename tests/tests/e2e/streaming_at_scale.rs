//! Streamed answers under Lark's per-app limits: few calls per answer, many
//! answers at once without a refused update, drafts handled where the chat
//! is owned, every Lark call counted, and the monthly call budget.
//!
//! The fake Lark enforces CardKit's per-app limits (50 a second, 1,000 a
//! minute per API) as Lark does, so a refusal here is one Lark would give.
//! Counts, not timings: a slow machine makes answers slower, not wrong.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use lark_bridge_tests::eventually::{until, within_every};
use lark_bridge_tests::fake_lark::cardkit::CardOpKind;
use lark_bridge_tests::fake_lark::{Endpoint, FakeLark};
use lark_bridge_tests::harness::{Bridge, Options, APP_ID};

use crate::pipeline::WAIT;

fn streaming() -> Options {
    Options { streaming: true, ..Default::default() }
}

/// Waits for a finished card (streaming closed) holding each of `tails`.
async fn finished_cards(lark: &FakeLark, tails: &[String], limit: Duration) {
    let missing = || -> Vec<String> {
        let cards = lark.cards();
        tails.iter().filter(|t| !cards.iter().any(|c| !c.streaming && c.text.contains(t.as_str()))).cloned().collect()
    };
    // Each look copies every card with its texts: at most ten a second.
    let finished =
        within_every(limit, Duration::from_millis(100), || async { missing().is_empty().then_some(()) }).await;
    if finished.is_none() {
        let missing = missing();
        panic!("{} answers did not finish in their card, e.g. {:?}", missing.len(), missing.first());
    }
}

/// A 20-second answer alone: at most 15 Lark calls in all, and it visibly
/// grows (at least 5 texts). With a channel's defaults: its final card
/// carries the 👍 / 👎 buttons, in the same one message.
#[tokio::test]
async fn a_lone_twenty_second_answer_costs_at_most_fifteen_calls_and_grows_in_five_texts_or_more() {
    let b = Bridge::start_with(Options {
        env: vec![("LARK_BRIDGE__CHANNELS__SUPPORT__FEEDBACK", "true".to_owned())],
        ..streaming()
    })
    .await;
    // The fake echoes the question in 200 deltas 100 ms apart: 20 seconds.
    let question = format!("stream:200x100ms {} a lone answer", "words ".repeat(60));
    let event = b.events().message_id("om_lone").p2p_text("oc_lone", "ou_a", &question);
    b.deliver_ok(&event).await;
    finished_cards(&b.lark, &["a lone answer".to_owned()], Duration::from_secs(90)).await;
    let card = b.lark.cards().into_iter().next().expect("one card");
    let texts = card.text_history.len();
    // Every request to Lark for this answer. The bot's info is read once per
    // process and the token once per two hours: neither is per answer.
    let calls: Vec<Endpoint> =
        b.lark.all_attempts().into_iter().map(|a| a.endpoint).filter(|e| *e != Endpoint::BotInfo).collect();
    let mut by_endpoint: HashMap<String, usize> = HashMap::new();
    for e in &calls {
        *by_endpoint.entry(format!("{e:?}")).or_default() += 1;
    }
    println!("lone 20-second answer: {} Lark calls {by_endpoint:?}, {texts} texts", calls.len());
    assert!(calls.len() <= 15, "{} calls: {by_endpoint:?}", calls.len());
    assert!(texts >= 5, "the card grew in {texts} texts: {:?}", card.text_history);
    assert_eq!(b.lark.visible_messages().len(), 1);
    assert!(card.json.to_string().contains("lb_feedback_good"), "the buttons are in the card: {}", card.json);
    b.stop().await;
}

/// Forty answers streaming at once in one app: every card starts, grows and
/// ends with its full answer, and Lark refuses no update.
#[tokio::test]
async fn forty_answers_at_once_all_finish_and_lark_refuses_no_update() {
    let b = Bridge::start_with(Options {
        env: vec![("LARK_BRIDGE__RELAY__MAX_IN_FLIGHT", "64".to_owned())],
        ..streaming()
    })
    .await;
    let tails: Vec<String> = (0..40).map(|i| format!("question {i:02} end")).collect();
    for (i, tail) in tails.iter().enumerate() {
        let event = b.events().message_id(format!("om_forty{i:02}")).p2p_text(
            &format!("oc_forty{i:02}"),
            &format!("ou_{i:02}"),
            &format!("stream:80x100ms {} {tail}", "words ".repeat(30)),
        );
        b.deliver_ok(&event).await;
    }
    finished_cards(&b.lark, &tails, Duration::from_secs(120)).await;
    let ops = b.lark.card_operations();
    let refused: Vec<_> = ops.iter().filter(|o| o.code == 99991400).collect();
    assert!(refused.is_empty(), "{} CardKit requests over Lark's limits: {:?}", refused.len(), refused.first());
    let cards = b.lark.cards();
    assert_eq!(cards.len(), 40, "one card per answer");
    let grew = cards.iter().filter(|c| c.text_history.len() >= 3).count();
    let updates = ops.iter().filter(|o| o.kind == CardOpKind::Content && o.code == 0).count();
    println!("forty at once: {updates} text updates, {grew} of 40 cards grew in 3 texts or more");
    assert!(grew >= 30, "most cards grew while answering: {grew} of 40");
    assert_eq!(b.lark.visible_messages().len(), 40, "one message per answer");
    b.stop().await;
}

/// Lark refuses updates anyway (the fake's limits set far below the app's):
/// the refusals are waited out and counted, and every final answer arrives.
#[tokio::test]
async fn a_rate_limit_that_still_happens_is_waited_out_and_no_final_answer_is_lost() {
    let b = Bridge::start_with(streaming()).await;
    b.lark.set_cardkit_app_limits(Some((3, 1000)));
    let tails: Vec<String> = (0..8).map(|i| format!("limited {i} end")).collect();
    for (i, tail) in tails.iter().enumerate() {
        let event = b.events().message_id(format!("om_lim{i}")).p2p_text(
            &format!("oc_lim{i}"),
            "ou_a",
            &format!("stream:20x100ms {tail}"),
        );
        b.deliver_ok(&event).await;
    }
    finished_cards(&b.lark, &tails, Duration::from_secs(120)).await;
    assert!(b.lark.cardkit_rate_limited() > 0, "the fake refused some requests");
    let metrics = common::health::metrics_handle().render();
    assert!(
        metrics.lines().any(|l| l.starts_with("lark_bridge_lark_api_calls_total")
            && l.contains("outcome=\"rate_limited\"")
            && l.contains(APP_ID)),
        "refusals counted per app, API and outcome"
    );
    assert!(metrics.contains("lark_bridge_lark_rate_limit_waits_total"), "and waited out");
    assert_eq!(b.lark.visible_messages().len(), 8, "every answer shown once");
    b.stop().await;
}

/// Two responders: each card's drafts are shown by the replica owning its
/// chat, from memory; the cards bucket is written a few times per answer,
/// not once per draft.
#[tokio::test]
async fn drafts_are_shown_by_the_chats_owner_without_a_bucket_write_per_draft() {
    let b = Bridge::start_with(Options { responders: 2, ..streaming() }).await;
    let store = b.js.get_key_value(b.topology().cards_bucket()).await.expect("the cards bucket");
    let mut watch = store.watch_all().await.expect("watch");
    let writes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counting = {
        let writes = writes.clone();
        tokio::spawn(async move {
            while let Some(Ok(entry)) = watch.next().await {
                if entry.operation == kv::Operation::Put {
                    *writes.lock().expect("lock").entry(entry.key).or_default() += 1;
                }
            }
        })
    };
    // Let both responders take their partitions first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tails: Vec<String> = (0..6).map(|i| format!("owned {i} end")).collect();
    for (i, tail) in tails.iter().enumerate() {
        let event = b.events().message_id(format!("om_own{i}")).p2p_text(
            &format!("oc_own{i}"),
            "ou_a",
            &format!("stream:60x100ms {tail}"),
        );
        b.deliver_ok(&event).await;
    }
    finished_cards(&b.lark, &tails, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    counting.abort();
    let per_key = writes.lock().expect("lock").clone();
    let cards = b.lark.cards();
    let updates = b.lark.card_operations().iter().filter(|o| o.kind == CardOpKind::Content && o.code == 0).count();
    println!("two responders: {updates} text updates; bucket writes per card {per_key:?}");
    assert!(cards.iter().all(|c| c.text_history.len() >= 4), "every card grew");
    assert_eq!(per_key.len(), 6, "one record per answer: {per_key:?}");
    // Created, shown, taken over by the final answer, its progress, done.
    assert!(per_key.values().all(|n| *n <= 6), "a few writes per answer, none per draft: {per_key:?}");
    b.stop().await;
}

/// `lark_calls_per_month`: the calls are counted durably per app and month,
/// and past 90 % of the budget the answer goes whole instead of streaming.
#[tokio::test]
async fn past_ninety_percent_of_the_monthly_call_budget_answers_go_whole() {
    let b = Bridge::start_with(Options {
        env: vec![
            ("LARK_BRIDGE__CHANNELS__SUPPORT__LARK_CALLS_PER_MONTH", "1000".to_owned()),
            ("LARK_BRIDGE__INGRESS__ADMIN_TOKEN", "budget-test-token".to_owned()),
        ],
        ..streaming()
    })
    .await;
    // The count as another replica left it: 950 of 1000 this month.
    let status = b.js.get_key_value(b.topology().status_bucket()).await.expect("the status bucket");
    let month = common::lark::calls::month_of(std::time::SystemTime::now());
    let key = common::topology::keys::lark_calls(APP_ID, &month);
    status.put(&key, "950".into()).await.expect("put");
    let event = b.events().message_id("om_budget").p2p_text("oc_budget", "ou_a", "stream:20x50ms over budget");
    b.deliver_ok(&event).await;
    let shown = b.lark.wait_for_messages(1, WAIT).await;
    assert_eq!(shown.len(), 1);
    assert!(shown[0].card_id().is_none(), "answered whole, not streamed: {:?}", shown[0]);
    assert!(b.lark.cards().is_empty(), "no card created");
    // This answer's calls join the durable count within a flush.
    until(Duration::from_secs(15), "the answer's calls are added to the month's count (over 950)", || async {
        common::lark::calls::read(&status, APP_ID, &month).await.expect("read") > 950
    })
    .await;
    // The admin page says so.
    let status: serde_json::Value = b
        .http
        .get(b.url("/status.json"))
        .bearer_auth("budget-test-token")
        .send()
        .await
        .expect("status answers")
        .json()
        .await
        .expect("JSON");
    let calls = &status[0]["lark_calls"];
    assert_eq!(calls["budget"], 1000, "{status:#}");
    assert!(calls["calls"].as_u64().is_some_and(|n| n >= 950), "{calls}");
    assert!(calls["state"].as_str().is_some_and(|s| s.contains("whole")), "{calls}");
    b.stop().await;
}
