use std::time::Duration;

use common::lark::api::LarkError;
use common::lark::cardkit::{CardFailure, CARD_CONTENT_FAILED};

use super::{card_to_show, mark_plain, refused_for_the_chat, start_again, start_verdict, StartVerdict};
use crate::card_state::{CardRecord, Phase};

const MAX: u32 = 5;

fn lark(http_status: u16, code: i64) -> LarkError {
    LarkError::Api { http_status, code: Some(code), msg: "refused".into(), retry_after: None }
}

fn card(phase: Phase, sent: bool) -> CardRecord {
    CardRecord { phase, sent, ..CardRecord::streaming("card".into(), (1, 0)) }
}

#[test]
fn a_new_card_is_shown() {
    assert_eq!(card_to_show(&card(Phase::Streaming, false)), Some("card"));
}

#[test]
fn a_card_already_shown_is_not_shown_again() {
    assert_eq!(card_to_show(&card(Phase::Streaming, true)), None);
}

#[test]
fn a_card_the_final_answer_took_or_an_answer_gone_plain_shows_no_card() {
    assert_eq!(card_to_show(&card(Phase::Final, false)), None);
    assert_eq!(card_to_show(&card(Phase::Done, false)), None);
    assert_eq!(card_to_show(&CardRecord::plain()), None);
}

#[test]
fn a_refusal_about_the_chat_is_left_to_the_final_answer() {
    assert!(refused_for_the_chat(&lark(400, 230002)), "the bot is not in the chat");
    assert!(!refused_for_the_chat(&lark(400, CARD_CONTENT_FAILED)), "the card's own error");
    assert!(!refused_for_the_chat(&lark(503, 0)), "a transient failure");
    assert!(!refused_for_the_chat(&LarkError::Network("reset".into())));
}

#[test]
fn a_card_start_that_may_still_work_is_retried_after_a_backoff_of_ten_seconds_at_most() {
    for _ in 0..100 {
        let StartVerdict::Retry(first) = start_verdict(CardFailure::Transient, 1, MAX) else { panic!("no retry") };
        assert!(first >= Duration::from_millis(750) && first <= Duration::from_millis(1250), "{first:?}");
        let StartVerdict::Retry(late) = start_verdict(CardFailure::Transient, 9, 10) else { panic!("no retry") };
        assert!(
            late >= Duration::from_millis(7500) && late <= Duration::from_millis(12500),
            "10 s and its jitter: {late:?}"
        );
    }
}

#[test]
fn a_card_start_failing_on_the_last_attempt_leaves_the_card_to_the_final_answer() {
    assert_eq!(start_verdict(CardFailure::Transient, MAX, MAX), StartVerdict::LeaveToFinalAnswer);
}

#[test]
fn cardkit_refusing_the_card_sends_the_answer_whole_at_any_attempt() {
    for e in [lark(400, 99991672), lark(400, CARD_CONTENT_FAILED)] {
        for attempt in [1, MAX] {
            assert_eq!(start_verdict(CardFailure::of(&e), attempt, MAX), StartVerdict::Refused, "{e}");
        }
    }
}

#[test]
fn recording_the_card_is_tried_again_each_second_until_the_last_attempt() {
    assert_eq!(start_again(1, MAX), Some(Duration::from_secs(1)));
    assert_eq!(start_again(MAX - 1, MAX), Some(Duration::from_secs(1)));
    assert_eq!(start_again(MAX, MAX), None, "the answer comes whole");
}

#[test]
fn a_refused_card_nobody_saw_is_marked_plain() {
    let mut s = card(Phase::Streaming, false);
    assert!(mark_plain(&mut s));
    assert_eq!(s.phase, Phase::Plain);
}

#[test]
fn a_card_already_shown_stays_for_its_final_answer() {
    for mut s in [card(Phase::Streaming, true), card(Phase::Final, false), card(Phase::Done, true), CardRecord::plain()]
    {
        let before = s.clone();
        assert!(!mark_plain(&mut s));
        assert_eq!(s, before);
    }
}
