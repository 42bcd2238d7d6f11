//! An answer sent whole, as messages of its own: its parts in order, and
//! the uuids they go under.

use common::answer::Extras;
use common::envelope::ReplyCommand;
use common::question::Question;

use crate::render::{question_card, render, with_extras, Part};

/// The parts of an answer sent whole, in order: the answer (none when
/// FastGPT went straight to its question), its extras (sources, feedback
/// buttons) in the answer's last part, then the question's card.
pub(crate) fn whole_parts(text: &str, question: Option<&Question>, extras: &Extras) -> Vec<Part> {
    let answer = if text.trim().is_empty() && question.is_some() { Vec::new() } else { render(text) };
    let mut parts = with_extras(answer, extras);
    parts.extend(question.map(question_card));
    parts
}

/// The command an answer goes out whole under after its card's message was
/// sent: that message took the first part's uuid, and Lark would take a
/// part under it for the same message again and show nothing.
pub(crate) fn after_card(command: &ReplyCommand) -> ReplyCommand {
    ReplyCommand { source: format!("{}#whole", command.source), ..command.clone() }
}

#[cfg(test)]
mod tests {
    use common::envelope::{ReplyBody, ReplyKind};

    use super::*;
    use crate::fixtures::{extras, has_buttons, long_answer, question};

    #[test]
    fn a_short_plain_answer_is_one_text_message() {
        let parts = whole_parts("Hello there", None, &Extras::default());
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].msg_type, "text");
    }

    #[test]
    fn an_answer_that_is_only_a_question_shows_only_the_question_card() {
        let q = question();
        assert_eq!(whole_parts(" \n", Some(&q), &Extras::default()), vec![question_card(&q)]);
    }

    #[test]
    fn the_extras_go_into_the_answer_and_the_question_card_follows_it() {
        let q = question();
        let parts = whole_parts("Hello there", Some(&q), &extras());
        assert_eq!(parts.len(), 2);
        assert!(has_buttons(&parts[0]), "the plain answer became a card to hold them: {:?}", parts[0]);
        assert!(parts[0].content.contains("Hello there"));
        assert_eq!(parts[1], question_card(&q));
    }

    #[test]
    fn a_long_answer_s_extras_go_into_its_last_part_only() {
        let text = long_answer();
        let plain = render(&text);
        let parts = whole_parts(&text, None, &extras());
        assert!(plain.len() > 2, "{} parts", plain.len());
        assert_eq!(parts.len(), plain.len());
        let (last, before) = parts.split_last().expect("parts");
        assert_eq!(before, &plain[..plain.len() - 1], "the parts before are the answer's alone");
        assert!(has_buttons(last));
    }

    #[test]
    fn the_whole_answer_after_a_card_never_reuses_the_card_message_s_uuids() {
        let command = ReplyCommand {
            channel: "c".into(),
            source: "c:om_1".into(),
            reply_to: "om_1".into(),
            chat_id: "oc_1".into(),
            in_thread: false,
            kind: ReplyKind::Answer,
            body: ReplyBody::markdown("answer"),
        };
        let whole = after_card(&command);
        for i in 0..3 {
            assert_ne!(whole.lark_uuid(i), command.lark_uuid(0), "part {i}");
        }
        assert_eq!(ReplyCommand { source: command.source.clone(), ..whole }, command, "only the source differs");
    }
}
