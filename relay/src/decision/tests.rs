use serde_json::{json, Value};

use super::*;
use crate::fastgpt::Refusal;

/// An event of Lark's real shape, from the repository's corpus
/// (`testdata/real/events`, each file's origin in its `SOURCES.md`).
fn real_event(name: &str) -> Value {
    let path = format!("{}/../testdata/real/events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&path).expect("the sample")).expect("JSON")
}

fn envelope(value: Value) -> EventEnvelope {
    serde_json::from_value(value).expect("an envelope")
}

fn choice() -> Interaction {
    Interaction::Select { description: "Which office?".into(), options: vec!["Paris".into(), "Lyon".into()] }
}

fn refused() -> FastGptError {
    FastGptError::Refused { cause: Refusal::Auth, http_status: 403, status_text: String::new(), message: String::new() }
}

#[test]
fn a_users_message_is_a_message() {
    let incoming = classify(&envelope(real_event("webhook_p2p_new_message_id.json")));
    assert!(matches!(incoming, Incoming::Message(ref m) if m.message.chat_id.starts_with("oc_")), "{incoming:?}");
}

#[test]
fn a_message_an_app_sent_is_ignored_so_bots_never_answer_each_other() {
    let mut event = real_event("webhook_p2p_new_message_id.json");
    event["event"]["sender"]["sender_type"] = json!("app");
    assert!(matches!(classify(&envelope(event)), Incoming::Ignored(why) if why.contains("app")));
}

#[test]
fn the_bot_added_to_a_chat_is_a_welcome() {
    assert!(matches!(classify(&envelope(real_event("webhook_bot_added_to_chat.json"))), Incoming::Welcome));
}

#[test]
fn another_event_type_is_ignored() {
    let mut event = real_event("webhook_p2p_new_message_id.json");
    event["header"]["event_type"] = json!("im.message.message_read_v1");
    assert!(matches!(classify(&envelope(event)), Incoming::Ignored(_)));
}

#[test]
fn a_message_event_of_another_shape_is_malformed_and_says_which() {
    let mut event = real_event("webhook_p2p_new_message_id.json");
    event["event"]["message"] = json!("not an object");
    match classify(&envelope(event)) {
        Incoming::Malformed(reason) => assert!(reason.starts_with("im.message.receive_v1 with an unexpected shape")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_card_click_is_a_click_and_a_broken_one_is_malformed() {
    let click = |event: Value| {
        envelope(json!({
            "schema": "2.0",
            "header": { "event_id": "e1", "event_type": "card.action.trigger", "token": "", "app_id": "cli_a" },
            "event": event
        }))
    };
    let good = json!({
        "operator": { "open_id": "ou_1" },
        "action": { "value": { "k": "v" }, "tag": "button" },
        "context": { "open_message_id": "om_1" }
    });
    assert!(matches!(classify(&click(good)), Incoming::Click(_)));
    match classify(&click(json!({ "action": "no" }))) {
        Incoming::Malformed(reason) => assert!(reason.starts_with("card.action.trigger with an unexpected shape")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bare_mention_and_a_sticker_get_notices_and_a_question_goes_on() {
    assert!(matches!(request_of(Asked::Empty), Request::Notice(t) if t == says::EMPTY));
    let sticker = crate::attachments::notice::not_readable("sticker");
    assert!(matches!(request_of(Asked::NotText("sticker".into())), Request::Notice(t) if t == sticker));
    assert!(matches!(request_of(Asked::Ask("hi".into())), Request::Ask(t) if t == "hi"));
    assert!(matches!(request_of(Asked::Reset), Request::Reset), "a reset is done, then noticed");
}

#[test]
fn an_answer_that_asks_is_a_question_card_even_when_its_text_is_empty() {
    assert!(matches!(answered(Ok(String::new()), "", Some(choice()), 1, 3), Answered::Asks(t, _) if t.is_empty()));
    let asks = answered(Ok("Pick one".into()), "", Some(choice()), 1, 3);
    assert!(matches!(asks, Answered::Asks(t, i) if t == "Pick one" && i == choice()));
}

#[test]
fn a_blank_answer_is_empty_and_a_real_one_is_the_answer() {
    assert!(matches!(answered(Ok(" \n".into()), "", None, 1, 3), Answered::Empty));
    assert!(matches!(answered(Ok("42".into()), "", None, 1, 3), Answered::Answer(t) if t == "42"));
}

#[test]
fn fastgpt_unavailable_is_asked_again_until_the_last_attempt_then_apologised_for() {
    for attempt in 1..3 {
        match answered(Err(FastGptError::Transient("HTTP 502".into())), "", None, attempt, 3) {
            Answered::Retry { delay, detail } => {
                assert_eq!(detail, "HTTP 502");
                assert!(delay > Duration::ZERO && delay <= Duration::from_secs(60), "{delay:?}");
            }
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    match answered(Err(FastGptError::Transient("HTTP 502".into())), "", None, 3, 3) {
        Answered::Failed { text, midway: false, .. } => assert!(text.contains("after 3 attempts"), "{text}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_refusal_is_apologised_for_at_once_naming_its_cause() {
    match answered(Err(refused()), "", None, 1, 3) {
        Answered::Failed { text, midway: false, error } => {
            assert!(text.contains("API key"), "{text}");
            assert!(matches!(error, FastGptError::Refused { cause: Refusal::Auth, .. }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_answer_stopped_midway_keeps_what_was_written_and_says_why() {
    let written = "The first half of the answer";
    match answered(Err(FastGptError::Workflow("node failed".into())), written, None, 1, 3) {
        Answered::Failed { text, midway: true, .. } => {
            assert!(text.starts_with(written), "{text}");
            assert!(text.contains(says::INTERRUPTED));
            assert!(text.ends_with(&says::apology(&FastGptError::Workflow(String::new()), 1)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_empty_answer_while_a_card_waits_says_the_message_matched_no_choice_and_closes_the_card() {
    let mut decision = say(ReplyKind::Answer, says::EMPTY_ANSWER);
    assert!(while_a_card_waits(&mut decision, true));
    assert_eq!(decision.text, says::NOT_A_CHOICE);
}

#[test]
fn an_answer_while_a_card_waits_closes_the_card_and_is_left_alone() {
    let mut decision = say(ReplyKind::Answer, "42");
    assert!(while_a_card_waits(&mut decision, true));
    assert_eq!(decision.text, "42");
}

#[test]
fn nothing_changes_when_no_card_waits() {
    let mut decision = say(ReplyKind::Answer, says::EMPTY_ANSWER);
    assert!(!while_a_card_waits(&mut decision, false));
    assert_eq!(decision.text, says::EMPTY_ANSWER);
}

#[test]
fn an_answer_that_asks_again_replaces_the_waiting_card_which_is_not_closed() {
    let question = common::question::Question { id: "q2".into(), conversation: "c".into(), interaction: choice() };
    let pending = Pending {
        question,
        chat_id: "lark:support:c:0".into(),
        custom_uid: "lark:support:ou_1".into(),
        asked_by: None,
        lark_chat_id: "oc_1".into(),
        in_thread: false,
        answered_by: None,
        data_id: None,
    };
    let mut decision = Decision { pending: Some(pending), ..say(ReplyKind::Answer, "Which office?") };
    assert!(!while_a_card_waits(&mut decision, true));
}
