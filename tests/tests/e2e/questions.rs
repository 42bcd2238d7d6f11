//! FastGPT's user-select and form nodes as Lark cards: shown with the
//! answer, answered with a click, the workflow resuming where it stopped.

use std::time::Duration;

use common::conversation::ConversationKey;
use lark_bridge_tests::eventually::eventually;
use lark_bridge_tests::fake_lark::card_actions::{ButtonRef, CardActionBuilder, ClickOutcome, FrameType};
use lark_bridge_tests::fake_lark::SentMessage;
use lark_bridge_tests::harness::{Bridge, Options, APP_ID, BOT_OPEN_ID, CHANNEL, VERIFICATION_TOKEN};
use lark_bridge_tests::lark_events::Mention;
use serde_json::{json, Value};

use crate::pipeline::WAIT;
use crate::procs::{ProcBridge, Service};

/// The visible message that is a question card (it has something to click).
async fn question_card(b: &Bridge) -> SentMessage {
    question_card_in(&b.lark, None).await
}

/// The question card answering message `question` (any, when `None`).
async fn question_card_in(lark: &lark_bridge_tests::fake_lark::FakeLark, question: Option<&str>) -> SentMessage {
    eventually(WAIT, "a question card with a button to click", || async {
        lark.visible_messages().into_iter().find(|m| {
            question.is_none_or(|q| m.reply_to() == Some(q))
                && lark
                    .card_controls(&m.message_id)
                    .is_ok_and(|c| !c.is_empty() && c.buttons.iter().any(|b| !b.disabled))
        })
    })
    .await
}

async fn click(b: &Bridge, card: &SentMessage, button: impl Into<ButtonRef>, who: &str) -> ClickOutcome {
    b.lark.click(&b.events_url(), b.key.as_ref(), &card.message_id, button, who).await.expect("the click is answered")
}

/// The reply to `message_id` whose text satisfies `want`.
async fn reply_to(b: &Bridge, message_id: &str, want: impl Fn(&str) -> bool) -> SentMessage {
    eventually(WAIT, &format!("such a reply to {message_id}"), || async {
        b.lark.visible_messages().into_iter().find(|m| m.reply_to() == Some(message_id) && want(&m.text()))
    })
    .await
}

/// A click on the card's submit button, form values to be set by the test.
fn submit_button(b: &Bridge, card: &SentMessage) -> CardActionBuilder {
    b.lark.card_action_for(&card.message_id, ButtonRef::Name("lb_submit".into()), "ou_a").expect("the submit button")
}

fn bot() -> Mention {
    Mention::bot(BOT_OPEN_ID)
}

#[tokio::test]
async fn a_choice_resumes_the_workflow_with_the_options_exact_value() {
    let b = Bridge::start().await;
    b.deliver_ok(&b.events().message_id("om_sel").p2p_text("oc_sel", "ou_a", "select: which product?")).await;
    let card = question_card(&b).await;
    assert_eq!(card.reply_to(), Some("om_sel"), "the card answers the question");
    let text = card.text();
    assert!(text.contains("Which product?"), "the node's description: {text}");
    let controls = b.lark.card_controls(&card.message_id).expect("controls");
    let labels: Vec<&str> = controls.choices().iter().map(|c| c.text.as_str()).collect();
    assert_eq!(labels, ["Product A", "Product B", "产品 C"]);

    let answer = click(&b, &card, "产品 C", "ou_a").await;
    assert_eq!(answer.status, 200);
    assert!(answer.in_time, "within Lark's 3 s: {:?}", answer.elapsed());
    assert!(answer.toast_text().contains("产品 C"), "{:?}", answer.toast);
    assert!(answer.card_applied, "the card shows the choice");
    let after = b.lark.card_controls(&card.message_id).expect("controls");
    assert!(after.buttons.iter().all(|b| b.disabled), "buttons disabled: {after:?}");

    let resumed = reply_to(&b, &card.message_id, |t| t.contains("You chose: 产品 C")).await;
    assert!(resumed.text().contains("You chose"), "{}", resumed.text());
    let asked = b.fastgpt.requests();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[1].content, "产品 C", "the option's value exactly");
    assert_eq!(asked[1].chat_id, asked[0].chat_id, "the same FastGPT chat");
    let want_chat = ConversationKey::Chat { chat_id: "oc_sel".into() }.chat_id(CHANNEL, 0);
    assert_eq!(asked[1].chat_id.as_deref(), Some(want_chat.as_str()));
    b.stop().await;
}

#[tokio::test]
async fn a_form_resumes_with_json_keyed_by_fastgpts_keys_and_streams() {
    let b = Bridge::start_with(Options { streaming: true, ..Default::default() }).await;
    b.deliver_ok(&b.events().message_id("om_form").p2p_text("oc_form", "ou_a", "form: sign me up")).await;
    let card = question_card(&b).await;
    let controls = b.lark.card_controls(&card.message_id).expect("controls");
    assert_eq!(controls.forms.len(), 1);
    let names: Vec<&str> = controls.forms[0].components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["f0", "f1", "f2", "f3"], "synthetic names");
    // The streamed answer before the question is finished: a card may not be clicked while it streams.
    assert!(b.lark.cards().iter().all(|c| !c.streaming), "streaming closed before the question: {:#?}", b.lark.cards());

    // A required field empty (Lark's client checks it too; a forged callback may not): refused, FastGPT not asked.
    let forged = submit_button(&b, &card).form_values(&[("f2", "30")]).build();
    let missing = b.lark.deliver_card_action(&b.events_url(), b.key.as_ref(), &forged).await.expect("answered");
    assert!(missing.toast_text().contains("fill in"), "{:?}", missing.toast);
    assert_eq!(b.fastgpt.requests().len(), 1);

    let values = [("f0", "Ann"), ("f1", ""), ("f2", "30"), ("f3", "1")];
    let answer =
        b.lark.submit_form(&b.events_url(), b.key.as_ref(), &card.message_id, &values, "ou_a").await.expect("answered");
    assert!(answer.toast_text().starts_with("Got it"), "{:?}", answer.toast);
    let requests = b.fastgpt.wait_for_requests(2, WAIT).await;
    let sent: Value = serde_json::from_str(&requests[1].content).expect("the form as JSON");
    assert_eq!(sent, json!({ "name": "Ann", "年龄": 30, "dept": "rd" }));
    assert!(requests[1].stream, "the resumed answer streams like any answer");
    let resumed = b
        .lark
        .wait_for_card(|c| !c.streaming && c.text.contains("Form received"), WAIT)
        .await
        .expect("the resumed answer's card");
    let shown = b.lark.visible_messages();
    let reply = shown.iter().find(|m| m.card_id() == Some(resumed.card_id.as_str())).expect("shown");
    assert_eq!(reply.reply_to(), Some(card.message_id.as_str()), "a reply to the question card");
    b.stop().await;
}

#[tokio::test]
async fn a_double_click_resumes_once() {
    let b = Bridge::start().await;
    b.deliver_ok(&b.events().message_id("om_dbl").p2p_text("oc_dbl", "ou_a", "select: quick")).await;
    let card = question_card(&b).await;
    // Both clicks leave the user's client before the first answer disables the buttons.
    let first = b.lark.card_action_for(&card.message_id, 0usize, "ou_a").expect("a click").build();
    let second = b.lark.card_action_for(&card.message_id, 1usize, "ou_a").expect("a click").build();
    let url = b.events_url();
    let (first, second) = tokio::join!(
        b.lark.deliver_card_action(&url, b.key.as_ref(), &first),
        b.lark.deliver_card_action(&url, b.key.as_ref(), &second)
    );
    let (first, second) = (first.expect("answered"), second.expect("answered"));
    let toasts = [first.toast_text().to_owned(), second.toast_text().to_owned()];
    assert_eq!(toasts.iter().filter(|t| t.starts_with("Got it")).count(), 1, "one click taken: {toasts:?}");
    assert!(toasts.iter().any(|t| t.contains("already answered")), "{toasts:?}");
    reply_to(&b, &card.message_id, |t| t.contains("You chose")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.fastgpt.requests().len(), 2, "FastGPT resumed once");
    let again = b.lark.card_action_for(&card.message_id, 0usize, "ou_a").map(|c| c.build());
    if let Ok(again) = again {
        let third = b.lark.deliver_card_action(&url, b.key.as_ref(), &again).await.expect("answered");
        assert!(third.toast_text().contains("already answered"), "{:?}", third.toast);
    }
    b.stop().await;
}

#[tokio::test]
async fn in_a_group_only_the_member_who_asked_may_answer() {
    let b = Bridge::start().await;
    b.deliver_ok(&b.events().message_id("om_grp").group_text("oc_grp", "ou_ann", "@_user_1 select: mine", &[bot()]))
        .await;
    let card = question_card(&b).await;
    let other = click(&b, &card, 0usize, "ou_ben").await;
    assert!(other.toast_text().contains("Only the person who asked"), "{:?}", other.toast);
    assert!(!other.card_applied);
    assert_eq!(b.fastgpt.requests().len(), 1, "FastGPT not asked");
    let own = click(&b, &card, 0usize, "ou_ann").await;
    assert!(own.toast_text().starts_with("Got it"), "{:?}", own.toast);
    reply_to(&b, &card.message_id, |t| t.contains("You chose: Product A")).await;
    b.stop().await;
}

#[tokio::test]
async fn a_card_expires_when_its_conversation_moves_on() {
    let b = Bridge::start().await;
    b.deliver_ok(&b.events().message_id("om_exp").p2p_text("oc_exp", "ou_a", "select: old")).await;
    let card = question_card(&b).await;
    // A newer question in the same conversation.
    // FastGPT takes it as the node's answer (it matches no option: every branch is skipped).
    b.deliver_ok(&b.events().message_id("om_exp2").p2p_text("oc_exp", "ou_a", "something else")).await;
    reply_to(&b, "om_exp2", |t| t.contains("did not match")).await;
    let late = click(&b, &card, 0usize, "ou_a").await;
    assert!(late.toast_text().contains("expired"), "{:?}", late.toast);
    // And after a Reset.
    b.deliver_ok(&b.events().message_id("om_exp3").p2p_text("oc_exp", "ou_a", "select: again")).await;
    let card2 = question_card_in(&b.lark, Some("om_exp3")).await;
    b.deliver_ok(&b.events().message_id("om_exp4").p2p_text("oc_exp", "ou_a", "Reset")).await;
    reply_to(&b, "om_exp4", |t| t.contains("New conversation")).await;
    let after_reset = click(&b, &card2, 0usize, "ou_a").await;
    assert!(after_reset.toast_text().contains("expired"), "{:?}", after_reset.toast);
    assert_eq!(b.fastgpt.requests().len(), 3, "no click asked FastGPT");
    b.stop().await;
}

#[tokio::test]
async fn hostile_callbacks_are_refused_and_never_reach_fastgpt() {
    let b = Bridge::start().await;
    b.deliver_ok(&b.events().message_id("om_host").p2p_text("oc_host", "ou_a", "form: hostile")).await;
    let card = question_card(&b).await;
    let url = b.events_url();
    let form = |values: &[(&str, &str)]| submit_button(&b, &card).form_values(values);
    let valid = [("f0", "Ann"), ("f2", "3")];

    // Forged: not signed with the channel's key.
    let forged = b.lark.deliver_card_action(&url, None, &form(&valid).build()).await.expect("answered");
    assert_eq!(forged.status, 401, "{}", forged.raw_body);
    // Another app.
    let other_app = form(&valid).app_id("cli_someone_else").build();
    let refused = b.lark.deliver_card_action(&url, b.key.as_ref(), &other_app).await.expect("answered");
    assert_eq!(refused.status, 403, "{}", refused.raw_body);
    // Unknown component names, an oversized value, a value never offered.
    let unknown =
        b.lark.deliver_card_action(&url, b.key.as_ref(), &form(&[("f0", "a"), ("f2", "1"), ("f9", "x")]).build()).await;
    assert!(unknown.expect("answered").toast_text().contains("does not have"));
    let long = "x".repeat(5_000);
    let oversized =
        b.lark.deliver_card_action(&url, b.key.as_ref(), &form(&[("f0", &long), ("f2", "1")]).build()).await;
    assert!(oversized.expect("answered").toast_text().contains("too long"));
    let never =
        b.lark.deliver_card_action(&url, b.key.as_ref(), &form(&[("f0", "a"), ("f2", "1"), ("f3", "9")]).build()).await;
    assert!(never.expect("answered").toast_text().contains("not one of the choices"));
    let mut value = form(&valid).build()["event"]["action"]["value"].clone();
    value["o"] = json!(7);
    let option = CardActionBuilder::new(APP_ID)
        .token(VERIFICATION_TOKEN)
        .operator("ou_a")
        .value(value)
        .message_id(card.message_id.clone())
        .chat_id("oc_host")
        .build();
    let not_offered = b.lark.deliver_card_action(&url, b.key.as_ref(), &option).await.expect("answered");
    assert!(not_offered.toast_text().contains("not one of the choices"), "{:?}", not_offered.toast);
    // A card that is not one of ours, and a key injection in the value.
    let foreign = form(&valid).value(json!({ "k": "v" })).build();
    let foreign = b.lark.deliver_card_action(&url, b.key.as_ref(), &foreign).await.expect("answered");
    assert!(foreign.toast_text().contains("not one of"), "{:?}", foreign.toast);
    let injected = form(&valid).value(json!({ "lark_bridge": 1, "q": "*", "c": ">" })).build();
    let injected = b.lark.deliver_card_action(&url, b.key.as_ref(), &injected).await.expect("answered");
    assert!(injected.toast_text().contains("not one of"), "{:?}", injected.toast);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.fastgpt.requests().len(), 1, "no hostile click reached FastGPT");
    // The genuine answer still works.
    let ok = b.lark.submit_form(&url, b.key.as_ref(), &card.message_id, &valid, "ou_a").await.expect("answered");
    assert!(ok.toast_text().starts_with("Got it"), "{:?}", ok.toast);
    reply_to(&b, &card.message_id, |t| t.contains("Form received")).await;
    b.stop().await;
}

#[tokio::test]
async fn a_click_over_the_long_connection_resumes_too() {
    let b = Bridge::start_with(Options { long_connection: true, ..Default::default() }).await;
    b.lark.long_connection().wait_for_connections(APP_ID, 1, WAIT).await;
    let event = b.events().message_id("om_lc_sel").p2p_text("oc_lc", "ou_a", "select-nested: over the socket");
    b.lark.push_event(&event, 1).expect("pushed");
    let card = question_card(&b).await;
    let answer = b
        .lark
        .click_over_long_connection(&card.message_id, "Product B", "ou_a", FrameType::Card)
        .await
        .expect("answered");
    assert_eq!(answer.status, 200);
    assert!(answer.toast_text().starts_with("Got it"), "{:?}", answer.toast);
    assert!(answer.card_applied);
    reply_to(&b, &card.message_id, |t| t.contains("You chose: Product B")).await;
    b.stop().await;
}

/// The relay is down when the user clicks: the click is stored, and
/// answered when a relay returns.
#[tokio::test]
async fn a_click_while_the_relay_is_down_is_answered_when_it_returns() {
    let mut b = ProcBridge::start(Vec::new()).await;
    assert_eq!(
        b.deliver(&b.events().message_id("om_down").p2p_text("oc_down", "ou_a", "select: later")).await,
        Some(200)
    );
    let card = question_card_in(&b.lark, None).await;
    b.kill(Service::Relay).await;
    let answer = b.lark.click(&b.events_url(), Some(&b.key), &card.message_id, 0usize, "ou_a").await.expect("answered");
    assert!(answer.toast_text().starts_with("Got it"), "stored while the relay is down: {:?}", answer.toast);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.fastgpt.requests().len(), 1);
    b.spawn(Service::Relay).await;
    let resumed = b.fastgpt.wait_for_requests(2, Duration::from_secs(60)).await;
    assert_eq!(resumed.len(), 2);
    assert_eq!(resumed[1].content, "Product A");
    b.stop().await;
}
