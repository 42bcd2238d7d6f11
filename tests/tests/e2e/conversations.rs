//! Conversations as Lark users live them: who
//! shares a history, mentions, Reset, message types, FastGPT failures, order.

use std::time::Duration;

use common::conversation::ConversationKey;
use lark_bridge_tests::fake_fastgpt::FakeAnswer;
use lark_bridge_tests::fake_lark::{Endpoint, Failure};
use lark_bridge_tests::harness::{Bridge, Options, BOT_OPEN_ID, CHANNEL};
use lark_bridge_tests::lark_events::{text_run, ChatRef, Mention};
use relay::says;

use crate::pipeline::WAIT;

fn bot() -> Mention {
    Mention::bot(BOT_OPEN_ID)
}

/// Waits a moment for anything that should NOT happen.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn group_members_have_their_own_histories_and_topics_are_shared() {
    let b = Bridge::start().await;
    // Two members of one ordinary group.
    b.deliver_ok(&b.events().group_text("oc_group", "ou_ann", "@_user_1 first", &[bot()])).await;
    b.deliver_ok(&b.events().group_text("oc_group", "ou_ben", "@_user_1 second", &[bot()])).await;
    // Two members of one topic.
    b.deliver_ok(&b.events().topic_text("oc_topics", "omt_1", "ou_ann", "@_user_1 one", &[bot()])).await;
    assert_eq!(b.fastgpt.wait_for_requests(3, WAIT).await.len(), 3);
    b.deliver_ok(&b.events().topic_text("oc_topics", "omt_1", "ou_ben", "@_user_1 two", &[bot()])).await;
    let shown = b.lark.wait_for_messages(4, WAIT).await;
    assert_eq!(shown.len(), 4);

    let asked = b.fastgpt.requests();
    let chat_of = |q: &str| asked.iter().find(|r| r.content == q).and_then(|r| r.chat_id.clone()).expect(q);
    assert_ne!(chat_of("first"), chat_of("second"), "each group member has their own history");
    assert_eq!(chat_of("one"), chat_of("two"), "a topic is shared by everyone in it");
    let member = ConversationKey::Member { chat_id: "oc_group".into(), open_id: "ou_ann".into() };
    assert_eq!(chat_of("first"), member.chat_id(CHANNEL, 0));
    // The fake FastGPT counts turns per chatId: the topic's second question is its turn 2.
    let topic_reply = shown.iter().find(|m| m.text().contains("two")).expect("answer to two");
    assert!(topic_reply.text().contains("turn 2"), "{}", topic_reply.text());
    assert!(topic_reply.reply_in_thread, "a topic's answer goes into the topic");
    b.stop().await;
}

#[tokio::test]
async fn mentions_are_resolved_and_a_bare_mention_gets_a_hint() {
    let b = Bridge::start().await;
    let tom = Mention::user(2, "ou_tom", "Tom");
    b.deliver_ok(&b.events().group_text("oc_g", "ou_ann", "@_user_1 ask @_user_2 about it", &[bot(), tom])).await;
    b.deliver_ok(&b.events().message_id("om_bare").group_text("oc_g", "ou_ben", "@_user_1 ", &[bot()])).await;
    let shown = b.lark.wait_for_messages(2, WAIT).await;
    let asked = b.fastgpt.requests();
    assert_eq!(asked.len(), 1, "a bare mention is not a question");
    assert_eq!(asked[0].content, "ask @Tom about it");
    let hint = shown.iter().find(|m| m.reply_to() == Some("om_bare")).expect("a hint");
    assert_eq!(hint.text(), says::EMPTY);
    b.stop().await;
}

#[tokio::test]
async fn reset_starts_a_new_history_and_lowercase_reset_is_a_question() {
    let b = Bridge::start().await;
    let chat = "oc_reset";
    b.deliver_ok(&b.events().p2p_text(chat, "ou_r", "hello")).await;
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    b.deliver_ok(&b.events().message_id("om_reset").p2p_text(chat, "ou_r", "Reset")).await;
    let shown = b.lark.wait_for_messages(2, WAIT).await;
    assert_eq!(shown[1].reply_to(), Some("om_reset"));
    assert_eq!(shown[1].text(), says::RESET);
    assert_eq!(b.fastgpt.requests().len(), 1, "FastGPT is not called for Reset");

    b.deliver_ok(&b.events().p2p_text(chat, "ou_r", "hello again")).await;
    b.deliver_ok(&b.events().p2p_text(chat, "ou_r", "reset")).await;
    assert_eq!(b.lark.wait_for_messages(4, WAIT).await.len(), 4);
    let asked = b.fastgpt.requests();
    assert_eq!(asked.len(), 3);
    let key = ConversationKey::Chat { chat_id: chat.into() };
    assert_eq!(asked[0].chat_id.as_deref(), Some(key.chat_id(CHANNEL, 0).as_str()));
    assert_eq!(asked[1].chat_id.as_deref(), Some(key.chat_id(CHANNEL, 1).as_str()), "a new chatId after Reset");
    assert_eq!(asked[2].content, "reset", "lowercase reset is an ordinary question");

    // In a group, `@bot Reset` resets that member's history only.
    b.deliver_ok(&b.events().group_text("oc_grp", "ou_x", "@_user_1 Reset", &[bot()])).await;
    assert_eq!(b.lark.wait_for_messages(5, WAIT).await[4].text(), says::RESET);
    assert_eq!(b.fastgpt.requests().len(), 3);
    b.stop().await;
}

#[tokio::test]
async fn non_text_gets_one_short_reply_and_a_post_is_read_whole() {
    let b = Bridge::start().await;
    let chat = ChatRef::P2p { chat_id: "oc_types".into() };
    // Voice messages are not read (images and files are: e2e/files.rs).
    let voice = serde_json::json!({ "file_key": "file_voice_1", "duration": 2000 });
    b.deliver_ok(&b.events().message_id("om_voice").message(&chat, "ou_t", "audio", &voice, &[])).await;
    let post = b.events().message_id("om_post").post(
        &chat,
        "ou_t",
        "",
        vec![vec![text_run("first line")], vec![text_run("second "), text_run("line")]],
        &[],
    );
    b.deliver_ok(&post).await;
    let shown = b.lark.wait_for_messages(2, WAIT).await;
    let voice = shown.iter().find(|m| m.reply_to() == Some("om_voice")).expect("reply to the voice message");
    assert_eq!(voice.text(), relay::attachments::notice::not_readable("audio"));
    let asked = b.fastgpt.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].content, "first line\nsecond line");
    b.stop().await;
}

#[tokio::test]
async fn messages_from_apps_are_ignored() {
    let b = Bridge::start().await;
    b.deliver_ok(&b.events().from_app().p2p_text("oc_bots", "ou_other_bot", "hello bot")).await;
    b.deliver_ok(&b.events().p2p_text("oc_bots", "ou_human", "marker")).await;
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    settle().await;
    assert_eq!(b.lark.visible_messages().len(), 1, "no reply to the app");
    assert_eq!(b.fastgpt.requests().len(), 1);
    assert_eq!(b.fastgpt.requests()[0].content, "marker");
    b.stop().await;
}

#[tokio::test]
async fn fastgpt_500_twice_then_200_is_answered_once() {
    let b = Bridge::start().await;
    let bare_500 = || FakeAnswer::Status { status: 500, body: serde_json::Value::Null };
    b.fastgpt.push_responses(vec![bare_500(), bare_500(), FakeAnswer::Echo]);
    b.deliver_ok(&b.events().p2p_text("oc_flaky", "ou_f", "are you there?")).await;
    let shown = b.lark.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(shown.len(), 1);
    assert!(shown[0].text().contains("are you there?"), "{}", shown[0].text());
    assert_eq!(b.fastgpt.requests().len(), 3, "asked three times");
    settle().await;
    assert_eq!(b.lark.visible_messages().len(), 1, "one answer");
    b.stop().await;
}

#[tokio::test]
async fn fastgpt_refusals_are_not_retried_and_apologise_with_the_cause() {
    let b = Bridge::start().await;
    b.fastgpt.push_responses(vec![
        FakeAnswer::unauth_api_key(),
        FakeAnswer::insufficient_quota(),
        FakeAnswer::WorkflowError,
    ]);
    b.deliver_ok(&b.events().message_id("om_key").p2p_text("oc_k1", "ou_k", "q1")).await;
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    b.deliver_ok(&b.events().message_id("om_quota").p2p_text("oc_k2", "ou_k", "q2")).await;
    assert_eq!(b.lark.wait_for_messages(2, WAIT).await.len(), 2);
    b.deliver_ok(&b.events().message_id("om_flow").p2p_text("oc_k3", "ou_k", "q3")).await;
    let shown = b.lark.wait_for_messages(3, WAIT).await;
    let said = |id: &str| shown.iter().find(|m| m.reply_to() == Some(id)).map(|m| m.text()).expect(id);
    assert!(said("om_key").contains("API key"), "{}", said("om_key"));
    assert!(said("om_quota").contains("quota"), "{}", said("om_quota"));
    assert!(said("om_flow").contains("workflow"), "{}", said("om_flow"));
    settle().await;
    assert_eq!(b.fastgpt.requests().len(), 3, "no retries of a refusal");
    b.stop().await;
}

#[tokio::test]
async fn a_slow_answer_shows_the_typing_reaction() {
    let b = Bridge::start_with(Options {
        env: vec![("LARK_BRIDGE__RELAY__TYPING_AFTER_MS", "200".into())],
        ..Default::default()
    })
    .await;
    b.fastgpt.push_responses(vec![FakeAnswer::Delay(Duration::from_millis(1500), Box::new(FakeAnswer::Echo))]);
    b.deliver_ok(&b.events().message_id("om_slow").p2p_text("oc_slow", "ou_s", "think hard")).await;
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    let reactions = b.lark.reactions();
    assert_eq!(reactions.len(), 1, "{reactions:?}");
    assert_eq!(reactions[0].message_id, "om_slow");
    assert_eq!(reactions[0].emoji_type, "Typing");
    assert!(reactions[0].removed_at.is_some(), "removed once the answer is on its way");
    b.stop().await;
}

#[tokio::test]
async fn two_relays_keep_a_conversation_in_order_and_others_concurrent() {
    let b = Bridge::start_with(Options { relays: 2, ..Default::default() }).await;
    // The first question of conversation A is slow; the others of A must wait
    // for it, while conversation B is answered meanwhile.
    b.fastgpt.push_responses(vec![FakeAnswer::Delay(Duration::from_secs(2), Box::new(FakeAnswer::Echo))]);
    b.deliver_ok(&b.events().p2p_text("oc_A", "ou_a", "A1")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for q in ["A2", "A3", "A4"] {
        b.deliver_ok(&b.events().p2p_text("oc_A", "ou_a", q)).await;
    }
    b.deliver_ok(&b.events().p2p_text("oc_B", "ou_b", "B1")).await;
    let shown = b.lark.wait_for_messages(5, Duration::from_secs(30)).await;
    assert_eq!(shown.len(), 5);
    let asked: Vec<String> = b.fastgpt.requests().iter().map(|r| r.content.clone()).collect();
    let a: Vec<&str> = asked.iter().map(String::as_str).filter(|q| q.starts_with('A')).collect();
    assert_eq!(a, ["A1", "A2", "A3", "A4"], "asked in the order sent");
    let pos = |q: &str| asked.iter().position(|x| x == q).expect(q);
    assert!(pos("B1") < pos("A2"), "B was not held up behind A's slow question: {asked:?}");
    let answered: Vec<String> = shown.iter().map(|m| m.text()).filter(|t| t.contains(": A")).collect();
    assert!(answered[0].contains("A1") && answered[3].contains("A4"), "{answered:?}");
    b.stop().await;
}

#[tokio::test]
async fn other_event_types_are_acknowledged_and_dropped() {
    let b = Bridge::start().await;
    let added = serde_json::json!({
        "schema": "2.0",
        "header": {
            "event_id": "evt_bot_added_1",
            "event_type": "im.chat.member.bot.added_v1",
            "create_time": "1608725989000",
            "token": lark_bridge_tests::harness::VERIFICATION_TOKEN,
            "app_id": lark_bridge_tests::harness::APP_ID,
            "tenant_key": "t"
        },
        "event": { "chat_id": "oc_new", "name": "New group" }
    });
    b.deliver_ok(&added).await;
    b.deliver_ok(&b.events().p2p_text("oc_marker", "ou_m", "marker")).await;
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    settle().await;
    assert_eq!(b.lark.visible_messages().len(), 1);
    assert_eq!(b.stream_len(&b.topology().events_stream()).await, 0, "acknowledged, not left in the queue");
    b.stop().await;
}

/// While Lark cannot tell the bot's own open_id, messages are answered
/// without it, and Lark is not asked again for each of them.
#[tokio::test]
async fn a_failed_bot_info_is_not_asked_again_for_every_message() {
    let b = Bridge::start().await;
    b.lark.fail_next(Endpoint::BotInfo, vec![Failure::Http500; 5]);
    for (chat, user) in [("oc_b1", "ou_b1"), ("oc_b2", "ou_b2"), ("oc_b3", "ou_b3")] {
        b.deliver_ok(&b.events().p2p_text(chat, user, "hello")).await;
    }
    assert_eq!(b.lark.wait_for_messages(3, WAIT).await.len(), 3, "every message answered");
    let asked = b.lark.all_attempts().iter().filter(|a| a.endpoint == Endpoint::BotInfo).count();
    assert_eq!(asked, 1, "one failed bot info call, remembered for the next messages");
    b.stop().await;
}
