//! 👍 / 👎 on a final answer: the asker's click rates the answer in
//! FastGPT's chat log (`updateUserFeedback`) and is thanked with a toast;
//! the other button switches the rating; another member's click is a toast
//! and nothing else.

use std::time::Duration;

use lark_bridge_tests::eventually::{eventually, until};
use lark_bridge_tests::fake_lark::card_actions::{ButtonRef, FrameType};
use lark_bridge_tests::fake_lark::SentMessage;
use lark_bridge_tests::harness::{Bridge, Options, APP_ID, BOT_OPEN_ID};
use lark_bridge_tests::lark_events::Mention;

use crate::pipeline::WAIT;

const GOOD: &str = "👍";
const BAD: &str = "👎";

fn with_feedback(long_connection: bool) -> Options {
    Options {
        env: vec![("LARK_BRIDGE__CHANNELS__SUPPORT__FEEDBACK", "true".into())],
        long_connection,
        ..Default::default()
    }
}

/// The answer replying to `message_id`, once it shows the feedback buttons.
async fn answer_card(b: &Bridge, message_id: &str) -> SentMessage {
    eventually(WAIT, &format!("an answer to {message_id} with the feedback buttons"), || async {
        b.lark.visible_messages().into_iter().find(|m| {
            m.reply_to() == Some(message_id)
                && b.lark.card_controls(&m.message_id).is_ok_and(|c| c.find(&ButtonRef::Text(GOOD.into())).is_some())
        })
    })
    .await
}

/// Waits until FastGPT got `n` feedback calls; returns them.
async fn feedback_calls(b: &Bridge, n: usize) -> Vec<(String, String, Option<String>, Option<String>)> {
    until(WAIT, &format!("{n} feedback calls"), || async { b.fastgpt.feedback_calls().len() >= n }).await;
    b.fastgpt.feedback_calls()
}

#[tokio::test]
async fn the_asker_rates_an_answer_and_the_other_button_switches_it() {
    let b = Bridge::start_with(with_feedback(false)).await;
    b.deliver_ok(&b.events().message_id("om_fb").p2p_text("oc_fb", "ou_a", "rate me")).await;
    let card = answer_card(&b, "om_fb").await;
    assert!(card.text().contains("Echo (turn 1): rate me"), "{}", card.text());
    let asked = b.fastgpt.requests();
    let (chat_id, data_id) = (asked[0].chat_id.clone().expect("chatId"), asked[0].body["responseChatItemId"].clone());

    let good = b.lark.click(&b.events_url(), b.key.as_ref(), &card.message_id, GOOD, "ou_a").await.expect("answered");
    assert!(good.toast_text().contains("helpful"), "{:?}", good.toast);
    let calls = feedback_calls(&b, 1).await;
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].0.as_str(), Some(calls[0].1.as_str())), (chat_id.as_str(), data_id.as_str()));
    assert!(calls[0].2.is_some() && calls[0].3.is_none(), "👍: {calls:?}");
    let ai = b.fastgpt.items(&chat_id).into_iter().find(|i| i.obj == "AI").expect("the AI item");
    assert!(ai.good_feedback.is_some() && ai.bad_feedback.is_none());

    let bad = b.lark.click(&b.events_url(), b.key.as_ref(), &card.message_id, BAD, "ou_a").await.expect("answered");
    assert!(bad.toast_text().contains("not helpful"), "{:?}", bad.toast);
    let calls = feedback_calls(&b, 2).await;
    assert_eq!(calls.len(), 2);
    let ai = b.fastgpt.items(&chat_id).into_iter().find(|i| i.obj == "AI").expect("the AI item");
    assert!(ai.good_feedback.is_none() && ai.bad_feedback.is_some(), "switched: {ai:?}");
    assert_eq!(b.lark.visible_messages().len(), 1, "a rating says nothing in the chat");
    assert_eq!(b.fastgpt.requests().len(), 1, "and asks FastGPT nothing");
    b.stop().await;
}

#[tokio::test]
async fn in_a_group_another_members_click_is_only_a_toast() {
    let b = Bridge::start_with(with_feedback(false)).await;
    let event = b.events().message_id("om_fb_group").group_text(
        "oc_fb_group",
        "ou_ann",
        "@_user_1 mine",
        &[Mention::bot(BOT_OPEN_ID)],
    );
    b.deliver_ok(&event).await;
    let card = answer_card(&b, "om_fb_group").await;
    let other =
        b.lark.click(&b.events_url(), b.key.as_ref(), &card.message_id, GOOD, "ou_ben").await.expect("answered");
    assert_eq!(other.toast_text(), common::answer::NOT_YOURS);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(b.fastgpt.feedback_calls().is_empty(), "nothing recorded");
    let mine = b.lark.click(&b.events_url(), b.key.as_ref(), &card.message_id, BAD, "ou_ann").await.expect("answered");
    assert!(mine.toast_text().contains("not helpful"), "{:?}", mine.toast);
    assert_eq!(feedback_calls(&b, 1).await.len(), 1);
    b.stop().await;
}

#[tokio::test]
async fn a_rating_over_the_long_connection() {
    let b = Bridge::start_with(with_feedback(true)).await;
    b.lark.long_connection().wait_for_connections(APP_ID, 1, WAIT).await;
    let event = b.events().message_id("om_fb_lc").p2p_text("oc_fb_lc", "ou_a", "over the socket");
    b.lark.push_event(&event, 1).expect("pushed");
    let card = answer_card(&b, "om_fb_lc").await;
    let answer =
        b.lark.click_over_long_connection(&card.message_id, GOOD, "ou_a", FrameType::Card).await.expect("answered");
    assert_eq!(answer.status, 200);
    assert!(answer.toast_text().contains("helpful"), "{:?}", answer.toast);
    let calls = feedback_calls(&b, 1).await;
    assert_eq!(calls.len(), 1);
    assert!(calls[0].2.is_some());
    b.stop().await;
}

/// A resume after a card click is merged by FastGPT into the question's AI
/// item: its answer is rated under the question's dataId.
#[tokio::test]
async fn a_resumed_answer_is_rated_under_its_questions_data_id() {
    let b = Bridge::start_with(with_feedback(false)).await;
    b.deliver_ok(&b.events().message_id("om_fb_sel").p2p_text("oc_fb_sel", "ou_a", "select: which one")).await;
    let question = eventually(WAIT, "the question card with its options", || async {
        b.lark.visible_messages().into_iter().find(|m| {
            b.lark.card_controls(&m.message_id).is_ok_and(|c| c.find(&ButtonRef::Text("Product B".into())).is_some())
        })
    })
    .await;
    b.lark.click(&b.events_url(), b.key.as_ref(), &question.message_id, "Product B", "ou_a").await.expect("answered");
    let card = answer_card(&b, &question.message_id).await;
    assert!(card.text().contains("You chose: Product B"), "{}", card.text());
    b.lark.click(&b.events_url(), b.key.as_ref(), &card.message_id, GOOD, "ou_a").await.expect("answered");
    let calls = feedback_calls(&b, 1).await;
    let first = b.fastgpt.requests()[0].body["responseChatItemId"].clone();
    assert_eq!(Some(calls[0].1.as_str()), first.as_str(), "the question's dataId");
    let chat_id = b.fastgpt.requests()[0].chat_id.clone().expect("chatId");
    let items = b.fastgpt.items(&chat_id);
    assert_eq!(items.len(), 2, "one turn: {items:?}");
    assert!(items[1].text.contains("You chose: Product B") && items[1].good_feedback.is_some(), "{items:?}");
    b.stop().await;
}

/// The quotes FastGPT reports become a Sources panel; inline citation marks
/// become numbers or go, whole and streamed.
async fn sources_are_listed(streaming: bool) {
    let b = Bridge::start_with(Options { streaming, ..with_feedback(false) }).await;
    b.deliver_ok(&b.events().message_id("om_src").p2p_text("oc_src", "ou_a", "leave sources")).await;
    let card = answer_card(&b, "om_src").await;
    // One message: the sources and the buttons are in the answer's card,
    // streamed or not.
    let shown = b.lark.visible_messages();
    assert_eq!(shown.len(), 1, "{shown:#?}");
    let all = match &card.card {
        Some(entity) => entity.json.to_string(),
        None => card.content.to_string(),
    };
    assert!(all.contains("Sources (2)"), "{all}");
    assert!(all.contains("Leave policy.pdf"), "{all}");
    assert!(all.contains("[https://hr.example.com/faq](https://hr.example.com/faq)"), "{all}");
    assert!(!all.contains("(CITE)"), "no raw citation mark: {all}");
    let text = match &card.card {
        Some(entity) => entity.text.clone(),
        None => card.text(),
    };
    assert!(text.contains("10 days of leave[1]. Ask HR first[2]."), "{text}");
    if streaming {
        let entity = card.card.as_ref().expect("a streamed answer shows a card entity");
        assert!(!entity.streaming, "the final card closed streaming");
        let cards = b.lark.cards();
        assert!(cards.iter().all(|c| !c.text.contains("(CITE)")), "no draft showed a raw mark: {cards:#?}");
    }
    b.stop().await;
}

#[tokio::test]
async fn a_whole_answer_lists_its_sources() {
    sources_are_listed(false).await;
}

#[tokio::test]
async fn a_streamed_answer_lists_its_sources() {
    sources_are_listed(true).await;
}
