//! One workflow run per question: the relay sends a `responseChatItemId`
//! derived from the Lark message, and when FastGPT (4.15+) refuses it as
//! already stored, it answers with the stored answer instead of asking again.

use std::time::Duration;

use lark_bridge_tests::fake_fastgpt::FakeAnswer;
use lark_bridge_tests::harness::{Bridge, Options};

use crate::pipeline::WAIT;

/// The relay gives up on FastGPT after 1 s; the fake's run takes 2.5 s and
/// finishes anyway, as FastGPT does when its client went away.
fn impatient(streaming: bool) -> Options {
    Options { env: vec![("LARK_BRIDGE__RELAY__FASTGPT_TIMEOUT_SECS", "1".into())], streaming, ..Default::default() }
}

async fn a_retry_reads_the_stored_answer(streaming: bool) {
    // Streamed or not, the retry is the same.
    let b = Bridge::start_with(impatient(streaming)).await;
    b.fastgpt.push_responses(vec![FakeAnswer::Delay(Duration::from_millis(2500), Box::new(FakeAnswer::Echo))]);
    b.deliver_ok(&b.events().message_id("om_once").p2p_text("oc_once", "ou_once", "only once please")).await;
    let shown = b.lark.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(shown.len(), 1, "one answer");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let shown = b.lark.visible_messages();
    assert_eq!(shown.len(), 1, "still one answer: {shown:?}");
    // The stored answer comes whole: a card only if the first attempt streamed one.
    let text = match shown[0].card_id() {
        Some(id) => b.lark.card(id).expect("the card").text,
        None => shown[0].text(),
    };
    assert!(text.contains("Echo (turn 1): only once please"), "the stored answer: {text}");
    let requests = b.fastgpt.requests();
    assert!(requests.len() >= 2, "asked again after the timeout: {requests:?}");
    assert_eq!(requests.iter().filter(|r| r.ran()).count(), 1, "the workflow ran once");
    let data_ids: Vec<_> = requests.iter().map(|r| r.body["responseChatItemId"].clone()).collect();
    assert!(data_ids.iter().all(|d| d.is_string() && *d == data_ids[0]), "the same dataId every time: {data_ids:?}");
    assert!(
        requests.iter().any(|r| r.refused.as_deref().is_some_and(|m| m.starts_with("Chat dataId already exists"))),
        "refused as a duplicate: {:?}",
        requests.iter().map(|r| &r.refused).collect::<Vec<_>>()
    );
    let chat_id = requests[0].chat_id.clone().expect("a chatId");
    assert_eq!(b.fastgpt.items(&chat_id).len(), 2, "one human and one AI item");
    b.stop().await;
}

#[tokio::test]
async fn a_question_asked_again_is_answered_from_fastgpts_record() {
    a_retry_reads_the_stored_answer(false).await;
}

#[tokio::test]
async fn a_streamed_question_asked_again_is_answered_from_fastgpts_record() {
    a_retry_reads_the_stored_answer(true).await;
}

/// FastGPT before 4.15 ignores `responseChatItemId`: the question runs
/// again, and the user still sees one answer.
#[tokio::test]
async fn an_older_fastgpt_runs_the_question_again() {
    let b = Bridge::start_with(impatient(false)).await;
    b.fastgpt.set_check_data_id(false);
    b.fastgpt.push_responses(vec![FakeAnswer::Delay(Duration::from_millis(1500), Box::new(FakeAnswer::Echo))]);
    b.deliver_ok(&b.events().message_id("om_old").p2p_text("oc_old", "ou_old", "old fastgpt")).await;
    let shown = b.lark.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(shown.len(), 1);
    assert!(shown[0].text().contains("old fastgpt"), "{}", shown[0].text());
    let ran = b.fastgpt.requests().iter().filter(|r| r.ran()).count();
    assert_eq!(ran, 2, "asked twice, as before");
    b.stop().await;
}

/// Two different messages are two turns, each with its own dataId.
#[tokio::test]
async fn each_message_has_its_own_data_id() {
    let b = Bridge::start().await;
    for (id, q) in [("om_a1", "first"), ("om_a2", "second")] {
        b.deliver_ok(&b.events().message_id(id).p2p_text("oc_two", "ou_two", q)).await;
    }
    assert_eq!(b.lark.wait_for_messages(2, WAIT).await.len(), 2);
    let requests = b.fastgpt.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.ran()));
    assert_ne!(requests[0].body["responseChatItemId"], requests[1].body["responseChatItemId"]);
    assert!(b.lark.visible_messages().iter().any(|m| m.text().contains("Echo (turn 2): second")));
    b.stop().await;
}

/// A team (account) key: FastGPT refuses it without `appId`, so the channel
/// names its app with `fastgpt_app_id`; the records are read with it too.
#[tokio::test]
async fn a_team_key_needs_fastgpt_app_id() {
    let team_key = |app_id: Option<&str>| {
        let mut env = vec![("LARK_BRIDGE__CHANNELS__SUPPORT__FASTGPT_API_KEY", "fastgpt-team-key".to_owned())];
        env.extend(app_id.map(|a| ("LARK_BRIDGE__CHANNELS__SUPPORT__FASTGPT_APP_ID", a.to_owned())));
        env.push(("LARK_BRIDGE__RELAY__FASTGPT_TIMEOUT_SECS", "1".into()));
        Options { env, ..Default::default() }
    };
    let b = Bridge::start_with(team_key(None)).await;
    b.fastgpt.set_team_key("fastgpt-team-key");
    b.deliver_ok(&b.events().p2p_text("oc_team", "ou_team", "hello team")).await;
    let shown = b.lark.wait_for_messages(1, WAIT).await;
    assert!(shown[0].text().contains("refused this bot's API key"), "{}", shown[0].text());
    assert!(b.fastgpt.requests()[0].body.get("appId").is_none());
    b.stop().await;

    let app_id = lark_bridge_tests::fake_fastgpt::chats::APP_ID;
    let b = Bridge::start_with(team_key(Some(app_id))).await;
    b.fastgpt.set_team_key("fastgpt-team-key");
    b.fastgpt.push_responses(vec![FakeAnswer::Delay(Duration::from_millis(2500), Box::new(FakeAnswer::Echo))]);
    b.deliver_ok(&b.events().p2p_text("oc_team", "ou_team", "hello team")).await;
    let shown = b.lark.wait_for_messages(1, Duration::from_secs(30)).await;
    assert!(shown[0].text().contains("Echo (turn 1): hello team"), "{}", shown[0].text());
    let requests = b.fastgpt.requests();
    assert!(requests.iter().all(|r| r.body["appId"] == app_id), "appId in every ask");
    assert_eq!(requests.iter().filter(|r| r.ran()).count(), 1, "the stored answer read with the team key");
    assert!(b.fastgpt.init_calls().is_empty(), "no need to learn the app id");
    b.stop().await;
}
