use common::answer::Extras;

use super::{final_content, lay_out, summary_of, take_for_final, FinalContent, FINAL_OPERATIONS, STREAMING_WINDOW_MS};
use crate::card_state::{CardRecord, Phase, SEQUENCE_BLOCK};
use crate::fixtures::{extras, has_buttons, long_answer, question};
use crate::render::{card_chunks, question_card};

#[test]
fn the_summary_is_the_first_words() {
    assert_eq!(summary_of("\n## Title\nbody"), "Title");
    assert_eq!(summary_of(&"x".repeat(100)).chars().count(), 61);
    assert_eq!(summary_of(""), "…");
}

#[test]
fn the_final_answer_takes_the_card_above_every_sequence_the_drafts_had() {
    let mut s = CardRecord::streaming("card".into(), (1, 0));
    let drafts_last = s.reserve_block().1;
    assert!(take_for_final(&mut s));
    assert_eq!(s.phase, Phase::Final, "no draft writes from now on");
    assert_eq!(s.sequence + 1 - FINAL_OPERATIONS, drafts_last + 1, "its first operation follows the drafts' block");
}

#[test]
fn a_final_answer_tried_again_takes_its_card_again_with_sequences_of_its_own() {
    let mut s = CardRecord::streaming("card".into(), (1, 0));
    assert!(take_for_final(&mut s));
    assert!(take_for_final(&mut s));
    assert_eq!(s.sequence, SEQUENCE_BLOCK + 2 * FINAL_OPERATIONS);
}

#[test]
fn a_card_done_or_an_answer_gone_plain_is_not_taken() {
    let done = CardRecord { phase: Phase::Done, ..CardRecord::streaming("card".into(), (1, 0)) };
    for mut s in [done, CardRecord::plain()] {
        let before = s.clone();
        assert!(!take_for_final(&mut s));
        assert_eq!(s, before);
    }
}

#[test]
fn within_the_streaming_window_the_text_is_set_and_streaming_closed() {
    let opened = 1_000_000;
    assert_eq!(final_content(&Extras::default(), opened, opened + 60_000), FinalContent::SetTextAndClose);
    assert_eq!(
        final_content(&Extras::default(), opened, opened - 5_000),
        FinalContent::SetTextAndClose,
        "clocks apart"
    );
}

#[test]
fn near_the_end_of_the_window_the_whole_card_is_replaced() {
    let opened = 1_000_000;
    assert_eq!(final_content(&Extras::default(), opened, opened + STREAMING_WINDOW_MS), FinalContent::Replace);
    assert_eq!(final_content(&Extras::default(), opened, opened + 3_600_000), FinalContent::Replace);
}

#[test]
fn an_answer_with_extras_replaces_the_card_at_once() {
    assert_eq!(final_content(&extras(), 1_000_000, 1_000_001), FinalContent::Replace);
}

#[test]
fn a_short_answer_is_all_in_its_card_with_its_extras() {
    let extras = extras();
    let layout = lay_out("## Leave\nTwenty days a year.", &extras, None);
    assert_eq!(layout.text, "## Leave\nTwenty days a year.");
    assert_eq!(layout.summary, "Leave");
    assert_eq!(layout.extras, &extras);
    assert!(layout.rest.is_empty());
}

#[test]
fn a_long_answer_s_extras_go_into_its_last_card() {
    let (text, extras) = (long_answer(), extras());
    let chunks = card_chunks(&text);
    let layout = lay_out(&text, &extras, None);
    assert!(chunks.len() > 2, "{} chunks", chunks.len());
    assert_eq!(layout.text, chunks[0]);
    assert!(layout.extras.is_empty(), "none in the first card");
    assert_eq!(layout.rest.len(), chunks.len() - 1);
    let (last, before) = layout.rest.split_last().expect("more cards");
    assert!(has_buttons(last));
    assert!(!before.iter().any(has_buttons));
}

#[test]
fn the_question_follows_the_whole_answer() {
    let (q, extras) = (question(), extras());
    let short = lay_out("Which plan?", &extras, Some(&q));
    assert_eq!(short.rest, vec![question_card(&q)]);
    let long = lay_out(&long_answer(), &extras, Some(&q));
    let (asked, answer) = long.rest.split_last().expect("parts");
    assert_eq!(asked, &question_card(&q));
    assert!(answer.last().is_some_and(has_buttons), "the extras stay with the answer");
}

#[test]
fn an_answer_that_is_only_a_question_shows_an_ellipsis_then_the_question() {
    let (q, no_extras) = (question(), Extras::default());
    let layout = lay_out("  ", &no_extras, Some(&q));
    assert_eq!((layout.text.as_str(), layout.summary.as_str()), ("…", "…"));
    assert_eq!(layout.rest, vec![question_card(&q)]);
}
