//! One private-chat question travels the whole way: Lark callback → ingress →
//! JetStream → relay → FastGPT → JetStream → responder → Lark reply.

use std::time::Duration;

use common::conversation::ConversationKey;
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

    // The work queues are empty once the answer is shown.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.stream_len(&b.topology().events_stream()).await, 0);
    assert_eq!(b.stream_len(&b.topology().replies_stream()).await, 0);
    b.stop().await;
}

#[tokio::test]
async fn a_message_pushed_again_later_is_answered_once() {
    let b = Bridge::start().await;
    let event = b.events().message_id("om_again").p2p_text("oc_again", "ou_bob", "once please");
    b.deliver_ok(&event).await;
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    // Past JetStream's duplicate window Lark's re-push is a new stream message;
    // simulate that by deleting the dedup state: purge nothing, publish under a new event id.
    let repush = b.events().message_id("om_again").p2p_text("oc_again", "ou_bob", "once please");
    b.deliver_ok(&repush).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.lark.visible_messages().len(), 1, "no second reply");
    assert_eq!(b.fastgpt.requests().len(), 1, "no second question");
    b.stop().await;
}
