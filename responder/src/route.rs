//! Where a final answer goes, given its card's record: into the card its
//! drafts were updating, nowhere (the card already shows it), or out whole
//! as messages of its own. Only the decision: the handler reads the record
//! and acts on it.

use crate::card_state::{CardRecord, Phase};

/// What a final answer becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// A streamed answer ends in its card.
    FinishCard,
    /// The card already shows this answer: a redelivery.
    AlreadyShown,
    /// Sent whole, as messages. `after_card`: a card's message went out
    /// before the answer went plain, and took the first part's uuid.
    Whole { after_card: bool },
}

/// The route of a final answer whose card record is `card` (none: the
/// answer was never streamed). Whatever this replica's `streaming` setting
/// says: the relay has decided, and the record says what happened.
pub(crate) fn route(card: Option<&CardRecord>) -> Route {
    let Some(card) = card else { return Route::Whole { after_card: false } };
    match card.phase {
        Phase::Streaming | Phase::Final => Route::FinishCard,
        Phase::Done => Route::AlreadyShown,
        Phase::Plain => Route::Whole { after_card: card.sent },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(phase: Phase, sent: bool) -> CardRecord {
        CardRecord { phase, sent, ..CardRecord::streaming("card".into(), (1, 0)) }
    }

    #[test]
    fn an_answer_never_streamed_goes_out_whole() {
        assert_eq!(route(None), Route::Whole { after_card: false });
    }

    #[test]
    fn a_streamed_answer_ends_in_its_card_shown_or_not() {
        for sent in [false, true] {
            assert_eq!(route(Some(&record(Phase::Streaming, sent))), Route::FinishCard);
        }
    }

    #[test]
    fn a_final_answer_tried_again_finishes_the_card_it_took() {
        assert_eq!(route(Some(&record(Phase::Final, true))), Route::FinishCard);
    }

    #[test]
    fn a_card_already_done_is_not_sent_again() {
        assert_eq!(route(Some(&record(Phase::Done, true))), Route::AlreadyShown);
    }

    #[test]
    fn a_plain_answer_goes_out_whole() {
        assert_eq!(route(Some(&CardRecord::plain())), Route::Whole { after_card: false });
    }

    #[test]
    fn a_plain_answer_after_its_card_was_shown_goes_out_whole_under_uuids_of_its_own() {
        assert_eq!(route(Some(&record(Phase::Plain, true))), Route::Whole { after_card: true });
    }
}
