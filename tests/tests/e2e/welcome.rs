//! The FastGPT app's welcome text, once per chat the bot joins: a group it
//! was added to, or a private chat a user opened.

use std::time::Duration;

use lark_bridge_tests::fake_lark::Via;
use lark_bridge_tests::harness::{Bridge, APP_ID, CHANNEL, VERIFICATION_TOKEN};
use serde_json::{json, Value};

use crate::pipeline::WAIT;

/// A schema 2.0 event of `event_type` with `event` as its body.
fn event(event_id: &str, event_type: &str, event: Value) -> Value {
    json!({
        "schema": "2.0",
        "header": {
            "event_id": event_id,
            "event_type": event_type,
            "create_time": "1733214000000",
            "token": VERIFICATION_TOKEN,
            "app_id": APP_ID,
            "tenant_key": "2ca1d211f64f6438"
        },
        "event": event
    })
}

/// `im.chat.member.bot.added_v1`, shaped as `testdata/real/events/webhook_bot_added_to_chat.json`.
fn bot_added(event_id: &str, chat: &str) -> Value {
    event(
        event_id,
        "im.chat.member.bot.added_v1",
        json!({
            "chat_id": chat,
            "operator_id": { "union_id": "on_8ed6aa67826108097d9ee143816345", "user_id": "e33ggbyz", "open_id": "ou_84aad35d084aa403a838cf73ee18467" },
            "external": false,
            "operator_tenant_key": "2ca1d211f64f6438",
            "name": "测试群",
            "i18n_names": { "zh_cn": "测试群", "en_us": "test group", "ja_jp": "" }
        }),
    )
}

/// `im.chat.access_event.bot_p2p_chat_entered_v1`, with the body fields of
/// Lark's documentation of the event (open.feishu.cn, "用户进入与机器人的会话",
/// server-docs/im-v1/chat-access_event/events/bot_p2p_chat_entered): the
/// chat, the user who opened it, the chat's last message. The same fields as
/// Lark's official Node SDK's type of the event (larksuite/node-sdk,
/// `code-gen/events-template.ts`, "im.chat.access_event.bot_p2p_chat_entered_v1").
fn p2p_entered(event_id: &str, chat: &str, user: &str) -> Value {
    event(
        event_id,
        "im.chat.access_event.bot_p2p_chat_entered_v1",
        json!({
            "chat_id": chat,
            "operator_id": { "union_id": "on_94a1ee5551019f18cd73d9f111898cf2", "user_id": "e33ggbyz", "open_id": user },
            "last_message_id": "om_dc13264520392913993dd051dba21dcf",
            "last_message_create_time": "1609073151345"
        }),
    )
}

fn sent_to(b: &Bridge, chat: &str) -> Vec<String> {
    b.lark
        .visible_messages()
        .into_iter()
        .filter(|m| matches!(&m.via, Via::Chat { receive_id } if receive_id == chat))
        .map(|m| m.text())
        .collect()
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn the_bot_added_to_a_group_sends_the_welcome_once() {
    let b = Bridge::start().await;
    b.fastgpt.set_welcome_text("Hi, I am the **HR assistant**. Ask me about leave.");
    b.deliver_ok(&bot_added("evt_added_1", "oc_welcome_group")).await;
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    // Lark's re-push, and the bot removed and added again: no second welcome.
    b.deliver_ok(&bot_added("evt_added_1", "oc_welcome_group")).await;
    b.deliver_ok(&bot_added("evt_added_2", "oc_welcome_group")).await;
    settle().await;
    let sent = sent_to(&b, "oc_welcome_group");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].contains("HR assistant"), "{sent:?}");
    assert_eq!(b.lark.visible_messages().len(), 1);
    b.stop().await;
}

#[tokio::test]
async fn opening_the_private_chat_sends_the_welcome_once() {
    let b = Bridge::start().await;
    b.fastgpt.set_welcome_text("Welcome! Ask me anything.");
    for i in 0..3 {
        b.deliver_ok(&p2p_entered(&format!("evt_entered_{i}"), "oc_welcome_p2p", "ou_w")).await;
    }
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    settle().await;
    assert_eq!(sent_to(&b, "oc_welcome_p2p"), vec!["Welcome! Ask me anything.".to_owned()]);
    // Another user's private chat is another chat.
    b.deliver_ok(&p2p_entered("evt_entered_other", "oc_welcome_p2p_2", "ou_x")).await;
    assert_eq!(b.lark.wait_for_messages(2, WAIT).await.len(), 2);
    b.stop().await;
}

#[tokio::test]
async fn an_empty_welcome_text_sends_nothing() {
    let b = Bridge::start().await;
    b.fastgpt.set_welcome_text("   ");
    b.deliver_ok(&p2p_entered("evt_empty_1", "oc_no_welcome", "ou_n")).await;
    b.deliver_ok(&bot_added("evt_empty_2", "oc_no_welcome_group")).await;
    b.deliver_ok(&b.events().p2p_text("oc_marker", "ou_m", "marker")).await;
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    settle().await;
    assert_eq!(b.lark.visible_messages().len(), 1, "only the answer to the marker");
    assert_eq!(b.fastgpt.init_calls().len(), 2, "the app's welcome text was read for each chat");
    b.stop().await;
}

/// The sandbox chat's `/welcome`: the bot joins the chat as Lark tells it,
/// and the sandbox user sees the welcome in that chat, once.
#[tokio::test]
async fn the_sandbox_chat_is_welcomed_once() {
    use lark_bridge_tests::lark_events::ChatRef;
    use lark_bridge_tests::sandbox_chat::{LarkUser, Target, Timing};
    let b = Bridge::start().await;
    b.fastgpt.set_welcome_text("Welcome to the sandbox.");
    let target = Target {
        ingress: b.events_url(),
        lark: b.lark.base_url(),
        encrypt_key: Some(lark_bridge_tests::harness::ENCRYPT_KEY.to_owned()),
        verification_token: Some(VERIFICATION_TOKEN.to_owned()),
        app_id: APP_ID.to_owned(),
        bot_open_id: lark_bridge_tests::harness::BOT_OPEN_ID.to_owned(),
    };
    let mut user = LarkUser::connect(target).await.expect("the fake Lark answers");
    let group = ChatRef::Group { chat_id: "oc_sandbox_welcome".into() };
    let timing = Timing { timeout: WAIT, ..Timing::default() };
    let key = user.enter(&group, "ou_sandbox_you").await.expect("sent");
    let replies = user.wait_for_replies(&key, timing).await.expect("replies").replies;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].text.contains("Welcome to the sandbox."), "{replies:?}");
    let key = user.enter(&group, "ou_sandbox_you").await.expect("sent");
    let timing = Timing { timeout: Duration::from_secs(3), ..Timing::default() };
    assert!(user.wait_for_replies(&key, timing).await.expect("replies").replies.is_empty(), "once");
    b.stop().await;
}

/// A relay killed after marking the chat as welcomed and before queueing the
/// welcome: the same event, delivered again, still sends it (the mark names
/// the event that claimed it); another event for that chat sends nothing.
#[tokio::test]
async fn a_welcome_claimed_but_not_sent_goes_out_when_its_event_comes_again() {
    let b = Bridge::start().await;
    b.fastgpt.set_welcome_text("Hello again.");
    let sessions = b.js.get_key_value(b.topology().sessions_bucket()).await.expect("the sessions bucket");
    let key = common::topology::keys::welcomed(CHANNEL, "oc_claimed");
    // What the killed relay left: the mark, claimed by evt_claimed.
    sessions.create(&key, format!("{CHANNEL}:evt:evt_claimed").into()).await.expect("mark");
    b.deliver_ok(&bot_added("evt_claimed", "oc_claimed")).await;
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    b.deliver_ok(&bot_added("evt_other", "oc_claimed")).await;
    settle().await;
    assert_eq!(sent_to(&b, "oc_claimed").len(), 1, "welcomed once");
    b.stop().await;
}
