//! Answers of any size reach the user, and no failure is retried without
//! end: an answer over NATS's max payload is cut for the chat with a line
//! saying so (FastGPT asked once), a runaway stream is cut at the relay's
//! answer limit with the relay's memory measured in the real process, a
//! reply that cannot be queued is tried `relay.max_attempts` times, then
//! apologised for and dead-lettered.

use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use common::dead_letter::REASON_HEADER;
use common::envelope::MAX_REPLY_TEXT;
use lark_bridge_tests::eventually::eventually;
use lark_bridge_tests::fake_lark::{FakeLark, SentMessage};
use lark_bridge_tests::harness::{Bridge, Options};
use relay::fastgpt::MAX_ANSWER_BYTES;
use relay::says;

use crate::procs::{ProcBridge, Service};

/// The visible messages once one of them says the answer was cut.
async fn until_cut(lark: &FakeLark, within: Duration) -> Vec<SentMessage> {
    eventually(within, "a message says the answer was cut", || async {
        let shown = lark.visible_messages();
        shown.iter().any(|m| m.text().contains(says::CUT)).then_some(shown)
    })
    .await
}

/// The parts of one answer: replies to `message_id`, in order (each part's
/// Lark uuid), the line saying it was cut last, most of what a chat shows
/// shown, in a bounded number of messages.
fn assert_cut_answer(shown: &[SentMessage], message_id: &str) {
    for (i, m) in shown.iter().enumerate() {
        assert_eq!(m.reply_to(), Some(message_id));
        assert!(m.uuid.as_deref().is_some_and(|u| u.ends_with(&format!("-{i}"))), "part {i} in order: {:?}", m.uuid);
    }
    let last = shown.last().map(SentMessage::text).unwrap_or_default();
    assert!(
        last.trim_end().ends_with(says::CUT),
        "the cut is said at the end: {:?}",
        &last[last.len().saturating_sub(200)..]
    );
    assert_eq!(shown.iter().filter(|m| m.text().contains(says::CUT)).count(), 1, "said once");
    let total: usize = shown.iter().map(|m| m.text().len()).sum();
    assert!(total > MAX_REPLY_TEXT * 3 / 4 && total <= MAX_REPLY_TEXT + 4096, "{total} bytes shown");
    assert!((18..=40).contains(&shown.len()), "a bounded number of messages: {}", shown.len());
}

async fn dead_letter_reason(b: &Bridge) -> Option<String> {
    let stream: Stream = b.js.get_stream(b.topology().dead_stream()).await.ok()?;
    let dead = stream.direct_get_first_for_subject(b.topology().dead_filter()).await.ok()?;
    dead.headers.get(REASON_HEADER).map(|v| v.as_str().to_owned())
}

/// A 1.5 MB answer once failed its publish (`max payload size exceeded`) and
/// was asked again every second, forever.
#[tokio::test]
async fn an_answer_over_nats_max_payload_reaches_the_user_cut_and_is_asked_once() {
    let b = Bridge::start().await;
    b.deliver_ok(&b.events().message_id("om_big").p2p_text("oc_big", "ou_a", "stream-long:1500000 please")).await;
    let shown = until_cut(&b.lark, Duration::from_secs(60)).await;
    assert!(shown[0].text().starts_with("Echo (turn 1)"), "the answer's start comes first");
    assert_cut_answer(&shown, "om_big");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.fastgpt.requests().len(), 1, "FastGPT asked once");
    assert_eq!(b.lark.visible_messages().len(), shown.len(), "nothing more");
    assert_eq!(dead_letter_reason(&b).await, None);
    b.stop().await;
}

#[tokio::test]
async fn a_streamed_answer_over_nats_max_payload_ends_its_card_and_is_asked_once() {
    let b = Bridge::start_with(Options { streaming: true, ..Default::default() }).await;
    b.deliver_ok(&b.events().message_id("om_bigs").p2p_text("oc_bigs", "ou_a", "stream-long:1500000 please")).await;
    let shown = until_cut(&b.lark, Duration::from_secs(60)).await;
    let card = b.lark.card(shown[0].card_id().expect("the streaming card first")).expect("the card");
    assert!(!card.streaming, "the card's streaming is closed");
    assert!(card.text.starts_with("Echo (turn 1)"), "{:?}", &card.text[..40.min(card.text.len())]);
    assert_cut_answer(&shown, "om_bigs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.fastgpt.requests().len(), 1, "FastGPT asked once");
    assert_eq!(b.lark.visible_messages().len(), shown.len(), "nothing more");
    b.stop().await;
}

/// A field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
fn vm(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process runs");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("{field} in {status}"));
    kib * 1024
}

/// A workflow that writes 96 MiB once took the relay from 33 MB to 408 MB.
/// Now the relay keeps at most `MAX_ANSWER_BYTES` of it, stops reading,
/// ends the card with what fits and a line saying it was cut, and does not
/// ask again. Measured on the real relay process: its peak resident memory.
#[tokio::test]
async fn a_runaway_stream_is_cut_at_the_answer_limit_and_the_relay_stays_small() {
    let runaway = 96usize << 20;
    let p = ProcBridge::start(vec![("LARK_BRIDGE__CHANNELS__0__STREAMING".into(), "true".into())]).await;
    let pid = p.pid(Service::Relay).expect("the relay runs");
    let before = vm(pid, "VmRSS");
    let event = p.events().message_id("om_runaway").p2p_text("oc_runaway", "ou_a", &format!("runaway:{runaway}"));
    assert_eq!(p.deliver(&event).await, Some(200));
    let shown = until_cut(&p.lark, Duration::from_secs(120)).await;
    let card = p.lark.card(shown[0].card_id().expect("the streaming card first")).expect("the card");
    assert!(!card.streaming, "the card ended");
    assert_cut_answer(&shown, "om_runaway");

    let peak = vm(pid, "VmHWM");
    let grew = peak.saturating_sub(before);
    eprintln!("relay: {} MiB resident before, peak {} MiB", before >> 20, peak >> 20);
    assert!(grew < 4 * MAX_ANSWER_BYTES, "the relay grew by {} MiB for one runaway answer", grew >> 20);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = p.fastgpt.requests();
    assert_eq!(asked.len(), 1, "not asked again");
    // FastGPT runs the workflow to its end whoever listens; the relay took
    // what fits and went away.
    let read = asked[0].handed_to_client;
    assert!(read < 2 * MAX_ANSWER_BYTES, "the relay stopped reading: {} MiB read", read >> 20);
    p.stop().await;
}

/// A whole answer over the relay's limit cannot be read; asking again would
/// pay for the same runaway answer again.
#[tokio::test]
async fn a_whole_answer_over_the_limit_gets_an_apology_and_is_not_asked_again() {
    let b = Bridge::start().await;
    let question = format!("runaway:{}", MAX_ANSWER_BYTES + (4 << 20));
    b.deliver_ok(&b.events().message_id("om_huge").p2p_text("oc_huge", "ou_a", &question)).await;
    let shown = b.lark.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(shown.len(), 1);
    assert!(shown[0].text().contains("far too long"), "{}", shown[0].text());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.fastgpt.requests().len(), 1, "not asked again");
    b.stop().await;
}

/// The reply command once failed to publish and the event was retried every
/// second whatever `relay.max_attempts` said, asking FastGPT each time. Now
/// the publish is tried `relay.max_attempts` times (3 here, the answer kept
/// meanwhile), then the user gets an apology and the event a dead letter.
#[tokio::test]
async fn a_reply_that_cannot_be_queued_is_tried_max_attempts_times_then_apologised_and_dead_lettered() {
    let env = vec![("LARK_BRIDGE__RELAY__MAX_ATTEMPTS", "3".to_owned())];
    let b = Bridge::start_with(Options { env, ..Default::default() }).await;
    // The replies stream now refuses a message over 4 KB: the answer (about
    // 8 KB) is never stored; the short apology is.
    let mut stream = b.js.get_stream(b.topology().replies_stream()).await.expect("replies stream");
    let mut config = stream.info().await.expect("info").config.clone();
    config.max_message_size = 4096;
    b.js.update_stream(config).await.expect("stream updated");

    b.deliver_ok(&b.events().message_id("om_stuck").p2p_text("oc_stuck", "ou_a", "stream-long:8000 please")).await;
    let shown = b.lark.wait_for_messages(1, Duration::from_secs(60)).await;
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].text(), says::UNDELIVERED);
    let reason = eventually(Duration::from_secs(5), "the event is dead-lettered", || dead_letter_reason(&b)).await;
    assert!(reason.contains("cannot publish the reply command (attempt 3)") && reason.contains("Fix:"), "{reason}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(b.fastgpt.requests().len(), 1, "the answer was kept for the retries: FastGPT asked once");
    assert_eq!(b.lark.visible_messages().len(), 1, "nothing more");
    b.stop().await;
}
