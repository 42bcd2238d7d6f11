//! Replies that always arrive, once, and look right:
//! the token's life, idempotent retries, Lark's errors, Markdown, long
//! answers, pacing, dead letters.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use common::dead_letter::REASON_HEADER;
use lark_bridge_tests::eventually::{eventually, throughout, until};
use lark_bridge_tests::fake_fastgpt::FakeAnswer;
use lark_bridge_tests::fake_lark::{Endpoint, Failure};
use lark_bridge_tests::harness::{Bridge, APP_ID, BOT_OPEN_ID};
use lark_bridge_tests::lark_events::Mention;

use crate::pipeline::WAIT;

async fn dead_letter_reason(b: &Bridge) -> Option<String> {
    let stream: Stream = b.js.get_stream(b.topology().dead_stream()).await.ok()?;
    let dead = stream.direct_get_first_for_subject(b.topology().dead_filter()).await.ok()?;
    dead.headers.get(REASON_HEADER).map(|v| v.as_str().to_owned())
}

async fn wait_for_dead_letter(b: &Bridge) -> String {
    eventually(Duration::from_secs(10), "a dead letter", || dead_letter_reason(b)).await
}

#[tokio::test]
async fn the_token_is_cached_and_fetched_again_when_lark_says_it_expired() {
    let b = Bridge::start().await;
    for i in 0..5 {
        b.deliver_ok(&b.events().p2p_text(&format!("oc_tok{i}"), "ou_t", "q")).await;
    }
    assert_eq!(b.lark.wait_for_messages(5, WAIT).await.len(), 5);
    // One fetch by the relay (bot info), one by the responder: not one per reply.
    assert_eq!(b.lark.token_fetches(), 2);
    b.lark.expire_tokens();
    b.deliver_ok(&b.events().p2p_text("oc_tok_after", "ou_t", "after expiry")).await;
    let shown = b.lark.wait_for_messages(6, WAIT).await;
    assert_eq!(shown.len(), 6, "the reply went through with a fresh token");
    assert_eq!(b.lark.token_fetches(), 3, "fetched again once, at once");
    b.stop().await;
}

#[tokio::test]
async fn rate_limited_twice_then_shown_once_with_one_uuid() {
    let b = Bridge::start().await;
    b.lark.fail_next(Endpoint::Reply, vec![Failure::rate_limited(1), Failure::rate_limited(1)]);
    b.deliver_ok(&b.events().p2p_text("oc_429", "ou_r", "busy?")).await;
    let shown = b.lark.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(shown.len(), 1);
    let attempts: Vec<_> = b.lark.all_attempts().into_iter().filter(|a| a.endpoint == Endpoint::Reply).collect();
    assert_eq!(attempts.len(), 3, "two 429s, then the send");
    assert_eq!(attempts[0].code, 99991400);
    let uuids: HashSet<_> = attempts.iter().filter_map(|a| a.message.as_ref().and_then(|m| m.uuid.clone())).collect();
    assert_eq!(uuids.len(), 1, "the same uuid on every attempt: {uuids:?}");
    b.stop().await;
}

#[tokio::test]
async fn a_lost_response_and_a_500_do_not_show_the_reply_twice() {
    let b = Bridge::start().await;
    b.lark.fail_next(Endpoint::Reply, vec![Failure::AcceptButDropResponse, Failure::Http500]);
    b.deliver_ok(&b.events().p2p_text("oc_lost", "ou_l", "once")).await;
    let replies = || b.lark.all_attempts().into_iter().filter(|a| a.endpoint == Endpoint::Reply).count();
    until(WAIT, "retried after the lost response and the 500", || async { replies() >= 3 }).await;
    // Lark shows it once (the same uuid on every attempt), and nothing more comes.
    throughout(Duration::from_secs(1), "Lark shows the reply once", || async { b.lark.visible_messages().len() == 1 })
        .await;
    b.stop().await;
}

#[tokio::test]
async fn a_permission_error_is_not_retried_and_is_dead_lettered_with_the_fix() {
    let b = Bridge::start().await;
    b.lark.fail_next(Endpoint::Reply, vec![Failure::no_permission()]);
    b.deliver_ok(&b.events().p2p_text("oc_perm", "ou_p", "hello")).await;
    let reason = wait_for_dead_letter(&b).await;
    assert!(reason.contains("230027"), "{reason}");
    assert!(reason.contains("im:message:send_as_bot"), "the fix is named: {reason}");
    throughout(Duration::from_millis(1500), "not retried, nothing shown", || async {
        b.lark.all_attempts().into_iter().filter(|a| a.endpoint == Endpoint::Reply).count() == 1
            && b.lark.visible_messages().is_empty()
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn a_wrong_app_secret_is_a_clear_dead_letter() {
    let b = Bridge::start().await;
    b.lark.reject_secret(APP_ID, true);
    b.deliver_ok(&b.events().p2p_text("oc_secret", "ou_s", "hello")).await;
    let reason = wait_for_dead_letter(&b).await;
    assert!(reason.contains("app_secret"), "{reason}");
    b.stop().await;
}

#[tokio::test]
async fn a_withdrawn_message_gets_its_answer_in_the_chat() {
    let b = Bridge::start().await;
    b.lark.fail_next(Endpoint::Reply, vec![Failure::message_withdrawn()]);
    b.deliver_ok(&b.events().p2p_text("oc_gone", "ou_g", "never mind")).await;
    let shown = b.lark.wait_for_messages(1, WAIT).await;
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].reply_to(), None, "sent into the chat, not as a reply");
    assert_eq!(shown[0].chat_id.as_deref(), Some("oc_gone"));
    b.stop().await;
}

#[tokio::test]
async fn markdown_arrives_as_a_card() {
    let b = Bridge::start().await;
    b.deliver_ok(&b.events().p2p_text("oc_md", "ou_m", "show me markdown")).await;
    let shown = b.lark.wait_for_messages(1, WAIT).await;
    assert_eq!(shown[0].msg_type, "interactive");
    assert_eq!(shown[0].content["schema"], "2.0");
    let md = shown[0].content["body"]["elements"][0]["content"].as_str().expect("markdown element");
    assert!(md.contains("**Bold answer**") && md.contains("```rust"), "{md}");
    b.stop().await;
}

#[tokio::test]
async fn a_120_kb_answer_arrives_complete_in_order() {
    let b = Bridge::start().await;
    let FakeAnswer::Markdown(long) = FakeAnswer::long_markdown(120 * 1024) else { unreachable!() };
    b.fastgpt.push_responses(vec![FakeAnswer::Markdown(long.clone())]);
    b.deliver_ok(&b.events().p2p_text("oc_long", "ou_l", "tell me everything")).await;
    let shown = wait_until_parts_stop(&b).await;
    assert!(shown.len() >= 5, "{} parts", shown.len());
    let rejected = b.lark.all_attempts().into_iter().filter(|a| a.code == 230025).count();
    assert_eq!(rejected, 0, "no part over Lark's limit");
    let parts: Vec<String> =
        shown.iter().map(|m| m.content["body"]["elements"][0]["content"].as_str().expect("card").to_owned()).collect();
    for p in &parts {
        assert!(p.len() <= 30 * 1024);
    }
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    assert!(squash(&parts.join("\n")) == squash(&long), "complete and in order");
    b.stop().await;
}

/// The messages shown once no new part has arrived for half a second.
async fn wait_until_parts_stop(b: &Bridge) -> Vec<lark_bridge_tests::fake_lark::SentMessage> {
    let mut shown = Vec::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = b.lark.visible_messages();
        if !now.is_empty() && now.len() == shown.len() {
            break;
        }
        shown = now;
    }
    shown
}

/// Rate-limited on its second part, a long answer is retried from that part:
/// the part already shown is not sent again.
#[tokio::test]
async fn a_retried_long_answer_resumes_after_the_parts_already_shown() {
    let b = Bridge::start().await;
    let FakeAnswer::Markdown(long) = FakeAnswer::long_markdown(70 * 1024) else { unreachable!() };
    let parts = responder::render::render(&long).len();
    assert!(parts >= 3, "{parts} parts");
    b.fastgpt.push_responses(vec![FakeAnswer::Markdown(long)]);
    b.lark.fail_next(Endpoint::Reply, vec![Failure::Delay(Duration::ZERO), Failure::rate_limited(1)]);
    b.deliver_ok(&b.events().p2p_text("oc_resume", "ou_r", "tell me a lot")).await;
    assert_eq!(b.lark.wait_for_messages(parts, Duration::from_secs(30)).await.len(), parts);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sends: Vec<_> = b.lark.all_attempts().into_iter().filter(|a| a.endpoint == Endpoint::Reply).collect();
    assert_eq!(sends.len(), parts + 1, "each part sent once, and the rate-limited one once more");
    assert_eq!(sends[1].code, 99991400, "the second part was the one refused");
    assert!(sends.iter().all(|a| !a.duplicate), "no part sent again after it was shown");
    b.stop().await;
}

#[tokio::test]
async fn a_burst_into_one_chat_is_paced_without_tripping_lark() {
    let b = Bridge::start().await;
    // Twelve members of one group ask at once: twelve conversations, one chat.
    for i in 0..12 {
        let q = format!("@_user_1 question {i}");
        b.deliver_ok(&b.events().group_text("oc_busy", &format!("ou_member{i}"), &q, &[Mention::bot(BOT_OPEN_ID)]))
            .await;
    }
    let shown = b.lark.wait_for_messages(12, Duration::from_secs(30)).await;
    assert_eq!(shown.len(), 12);
    let throttled = b.lark.all_attempts().into_iter().filter(|a| a.code == 230020).count();
    assert_eq!(throttled, 0, "Lark never had to throttle the chat");
    // At most five replies inside any one second.
    let times: Vec<_> = shown.iter().map(|m| m.received_at).collect();
    for (i, t) in times.iter().enumerate() {
        let within = times[i..].iter().filter(|u| u.duration_since(*t) < Duration::from_millis(1000)).count();
        assert!(within <= 5, "{within} replies within one second");
    }
    b.stop().await;
}

#[tokio::test]
async fn dead_letters_are_listed_and_redriven_once_the_cause_is_fixed() {
    let b = Bridge::start().await;
    // The bot lacks the permission to send: the reply dies.
    b.lark.remove_scope(APP_ID, "im:message:send_as_bot");
    b.deliver_ok(&b.events().message_id("om_redrive").p2p_text("oc_redrive", "ou_r", "hello")).await;
    let reason = wait_for_dead_letter(&b).await;
    assert!(reason.contains("99991672"), "{reason}");
    let topology = b.topology();
    let listed = common::dead_letter::list(&b.js, &topology, None).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].channel, "support");
    assert_eq!(listed[0].stage, "responder");
    assert!(common::dead_letter::list(&b.js, &topology, Some("other")).await.expect("list").is_empty());

    // The operator grants the permission and re-drives.
    b.lark.grant_scope(APP_ID, "im:message:send_as_bot");
    assert_eq!(common::dead_letter::redrive(&b.js, &topology, None).await.expect("redrive"), 1);
    let shown = b.lark.wait_for_messages(1, WAIT).await;
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].reply_to(), Some("om_redrive"));
    assert!(
        common::dead_letter::list(&b.js, &topology, None).await.expect("list").is_empty(),
        "re-driven letters leave"
    );
    assert_eq!(b.fastgpt.requests().len(), 1, "FastGPT is not asked again");
    b.stop().await;
}
