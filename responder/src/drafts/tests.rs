use common::lark::api::LarkError;
use common::lark::cardkit::{CardFailure, SEQUENCE_TAKEN};

use super::{adoption_block, draft_failed, draft_text, DraftFailed};
use crate::card_state::{CardRecord, Phase, SEQUENCE_BLOCK};
use crate::fixtures::long_answer;
use crate::render::card_chunks;

fn lark(http_status: u16, code: i64) -> LarkError {
    LarkError::Api { http_status, code: Some(code), msg: "refused".into(), retry_after: None }
}

#[test]
fn a_card_taken_over_gets_a_block_above_every_sequence_used_before() {
    let mut s = CardRecord::streaming("card".into(), (1, 0));
    assert_eq!(adoption_block(&mut s), Some((SEQUENCE_BLOCK + 1, 2 * SEQUENCE_BLOCK)));
    assert_eq!(adoption_block(&mut s), Some((2 * SEQUENCE_BLOCK + 1, 3 * SEQUENCE_BLOCK)), "and the next owner's");
}

#[test]
fn a_card_the_final_answer_took_or_an_answer_gone_plain_is_not_taken_over() {
    let taken = CardRecord { phase: Phase::Final, ..CardRecord::streaming("card".into(), (1, 0)) };
    let no_card = CardRecord { phase: Phase::Streaming, ..CardRecord::plain() };
    for mut s in [taken, CardRecord::plain(), no_card] {
        let before = s.clone();
        assert_eq!(adoption_block(&mut s), None);
        assert_eq!(s, before, "no sequence spent");
    }
}

#[test]
fn a_draft_without_words_is_not_sent() {
    assert_eq!(draft_text(""), None);
    assert_eq!(draft_text(" \n "), None);
}

#[test]
fn a_long_draft_shows_its_first_card_s_worth() {
    let text = long_answer();
    assert_eq!(draft_text(&text), card_chunks(&text).into_iter().next());
    assert_eq!(draft_text("So far"), Some("So far".to_owned()));
}

#[test]
fn a_draft_outrun_by_a_later_operation_or_the_window_leaves_the_card_to_the_final_answer() {
    assert_eq!(draft_failed(CardFailure::of(&lark(400, SEQUENCE_TAKEN))), DraftFailed::Superseded);
    assert_eq!(draft_failed(CardFailure::of(&lark(400, 200850))), DraftFailed::Superseded, "streaming closed");
}

#[test]
fn any_other_failure_leaves_the_next_draft_to_try_again() {
    assert_eq!(draft_failed(CardFailure::of(&lark(429, 99991400))), DraftFailed::TryNext);
    assert_eq!(draft_failed(CardFailure::of(&LarkError::Network("reset".into()))), DraftFailed::TryNext);
    assert_eq!(draft_failed(CardFailure::of(&lark(400, 99991672))), DraftFailed::TryNext, "a missing scope");
}
