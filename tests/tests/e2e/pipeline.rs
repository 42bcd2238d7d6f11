//! One private-chat question travels the whole way: Lark callback → ingress →
//! JetStream → relay → FastGPT → JetStream → responder → Lark reply.

use std::time::Duration;

use common::channel::Channels;
use common::conversation::ConversationKey;
use common::envelope::event_headers;
use lark_bridge_tests::eventually::until;
use lark_bridge_tests::harness::{Bridge, CHANNEL, FASTGPT_KEY};

pub const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_private_question_is_answered_in_lark() {
    let b = Bridge::start().await;
    let event = b.events().message_id("om_p2p_1").p2p_text("oc_p2p", "ou_alice", "What is lark-bridge?");
    b.deliver_ok(&event).await;

    let shown = b.lark.wait_for_messages(1, WAIT).await;
    assert_eq!(shown.len(), 1, "one reply shown");
    let reply = &shown[0];
    assert_eq!(reply.reply_to(), Some("om_p2p_1"));
    assert!(reply.text().contains("What is lark-bridge?"), "the echo of the question: {}", reply.text());
    assert!(reply.uuid.as_deref().is_some_and(|u| !u.is_empty() && u.len() <= 50));

    let asked = b.fastgpt.requests();
    assert_eq!(asked.len(), 1);
    let q = &asked[0];
    assert_eq!(q.content, "What is lark-bridge?");
    assert_eq!(q.auth.as_deref(), Some(format!("Bearer {FASTGPT_KEY}").as_str()));
    assert!(!q.stream && q.detail, "whole, with detail: FastGPT says then when it stops to ask the user");
    let want_chat = ConversationKey::Chat { chat_id: "oc_p2p".into() }.chat_id(CHANNEL, 0);
    assert_eq!(q.chat_id.as_deref(), Some(want_chat.as_str()));
    assert_eq!(q.custom_uid.as_deref(), Some("lark:support:ou_alice"));

    // The work queues empty once the answer is shown (each message acknowledged).
    let (events, replies) = (b.topology().events_stream(), b.topology().replies_stream());
    until(WAIT, "the events and replies streams are empty", || async {
        b.stream_len(&events).await == 0 && b.stream_len(&replies).await == 0
    })
    .await;
    b.stop().await;
}

/// Lark pushes a message again past JetStream's duplicate window (10
/// minutes): the ingress publishes it as a new stream message. Published
/// here under a `Nats-Msg-Id` JetStream has not seen, it reaches the relay,
/// which knows the message as answered (its `{ns}_handled` record) and
/// acknowledges it without asking FastGPT or answering again.
#[tokio::test]
async fn a_message_pushed_again_past_the_duplicate_window_reaches_the_relay_and_is_answered_once() {
    let b = Bridge::start().await;
    let event = b.events().message_id("om_again").p2p_text("oc_again", "ou_bob", "once please");
    b.deliver_ok(&event).await;
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);

    let channels = Channels::new(&b.settings.channels);
    let channel = channels.get(CHANNEL).expect("the test channel");
    let plain = serde_json::to_vec(&event).expect("json");
    let verified = ingress::callback::accept_plain(channel, plain).expect("the event is valid");
    let subject = b.topology().event_subject(CHANNEL, &verified.subject_token);
    let headers = event_headers(CHANNEL, &format!("{}:after-the-window", verified.dedup_key));
    let ack =
        b.js.publish_with_headers(subject, headers, verified.plain.clone())
            .await
            .expect("publish")
            .await
            .expect("stored");
    assert!(!ack.duplicate, "a new stream message, as past the duplicate window");

    // The relay took it and acknowledged it: the events stream empties.
    let events = b.topology().events_stream();
    until(WAIT, "the re-pushed event is handled and acknowledged", || async { b.stream_len(&events).await == 0 }).await;
    assert_eq!(b.lark.visible_messages().len(), 1, "no second reply");
    assert_eq!(b.fastgpt.requests().len(), 1, "no second question");
    b.stop().await;
}
