//! What the unit tests of the responder's decisions share: a question, an
//! answer's extras, an answer too long for one card.

use common::answer::{Extras, FeedbackTarget, Source};
use common::question::{Interaction, Question};

use crate::render::Part;

pub fn question() -> Question {
    Question {
        id: "q1".into(),
        conversation: "conv".into(),
        interaction: Interaction::Select { description: "Which one?".into(), options: vec!["A".into(), "B".into()] },
    }
}

/// Sources and the 👍 / 👎 buttons.
pub fn extras() -> Extras {
    Extras {
        sources: vec![Source { name: "Leave policy".into(), url: None }],
        feedback: Some(Box::new(FeedbackTarget {
            chat_id: "lb-abc".into(),
            data_id: "lb-01".into(),
            asked_by: None,
            lark_chat_id: "oc_1".into(),
        })),
    }
}

/// An answer of three cards' worth, in paragraphs.
pub fn long_answer() -> String {
    let paragraph = format!("**{}**", "word ".repeat(200));
    vec![paragraph; 80].join("\n\n")
}

/// The part is a card holding the feedback buttons.
pub fn has_buttons(part: &Part) -> bool {
    part.msg_type == "interactive" && part.content.contains(r#""element_id":"feedback""#)
}
