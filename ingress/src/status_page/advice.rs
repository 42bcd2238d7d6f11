//! What a channel's row means, in two forms: the badge at its top
//! ([`health`]: working, needs attention, down, waiting for traffic) and the
//! "Next:" line under it ([`advice`]: the one thing to look at next, from
//! which of event, question and answer has happened yet). Both read only the
//! gathered status, so they are tested without NATS.

use std::fmt::Write as _;

use super::time::sortable;
use super::ChannelStatus;

/// True when the channel's last error came after its last answer sent.
fn error_after_last_answer(c: &ChannelStatus) -> bool {
    match (c.last_error.as_ref().map(|(_, e)| &e.at), &c.last_answer_sent) {
        (Some(error), Some(answer)) => sortable(error) > sortable(answer),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// What to look at next for one channel, from what its row shows.
pub fn advice(c: &ChannelStatus) -> String {
    let mut out = match (&c.last_event_received, &c.last_question_answered, &c.last_answer_sent) {
        (None, _, _) if c.long_connection.as_ref().is_some_and(|l| l.up == 0) => {
            "No long connection to Lark is up in this replica: see its last problem, and `ingress --check`.".to_owned()
        }
        (None, _, _) if c.long_connection.is_some() => "No event received yet: in the Lark console, check that \
                         Events & Callbacks uses the persistent connection mode with im.message.receive_v1, and that \
                         the app's version is published."
            .to_owned(),
        (None, _, _) => "No event received yet: check the Request URL and the event subscription \
                         (im.message.receive_v1) in the Lark console, and that the app's version is published. \
                         In the sandbox, send a message with `sandbox chat`."
            .to_owned(),
        (Some(_), None, _) => "Events arrive but no question was answered yet: see the last error, \
                               and the relay's log (FastGPT's root URL and API key: `relay --check`)."
            .to_owned(),
        (Some(_), Some(_), None) => "FastGPT answers but no answer reached Lark yet: usually a missing \
                                     permission (im:message:send_as_bot) or a version not published; \
                                     see the last error and `responder --check`."
            .to_owned(),
        (Some(_), Some(_), Some(_)) if error_after_last_answer(c) => {
            "Working, but the last error is newer than the last answer sent: see its fix.".to_owned()
        }
        (Some(_), Some(_), Some(_)) => "Working: events received, questions answered, answers sent.".to_owned(),
    };
    if c.dead_letters_waiting > 0 {
        let _ = write!(
            out,
            " {} dead letter(s) waiting: their reasons are listed below (and by `responder --dead-letters`); \
             fix the cause, then re-drive them with the button (or `responder --redrive`).",
            c.dead_letters_waiting
        );
    }
    out
}

/// How a channel looks at a glance: its badge's text and class.
pub(super) fn health(c: &ChannelStatus) -> (&'static str, &'static str) {
    if c.long_connection.as_ref().is_some_and(|l| l.up == 0) {
        ("down", "bad")
    } else if c.dead_letters_waiting > 0 || error_after_last_answer(c) {
        ("needs attention", "warn")
    } else if c.last_answer_sent.is_some() {
        ("working", "good")
    } else {
        ("waiting for traffic", "idle")
    }
}

#[cfg(test)]
mod tests {
    use super::super::gather::status;
    use super::*;

    fn error_at(at: &str) -> Option<(String, common::status::StatusError)> {
        let e = common::status::StatusError { at: at.into(), what: "w".into(), fix: "f".into() };
        Some(("responder".into(), e))
    }

    #[test]
    fn the_advice_follows_what_the_row_shows() {
        let mut c = status();
        assert!(advice(&c).starts_with("No event received yet"), "{}", advice(&c));

        c.last_event_received = Some("2026-01-01T10:00:00Z".into());
        assert!(advice(&c).starts_with("Events arrive but no question"), "{}", advice(&c));
        assert!(!advice(&c).contains("No event received"));

        c.last_question_answered = Some("2026-01-01T10:00:01Z".into());
        assert!(advice(&c).contains("im:message:send_as_bot"), "{}", advice(&c));

        c.last_answer_sent = Some("2026-01-01T10:00:02Z".into());
        assert!(advice(&c).starts_with("Working: "), "{}", advice(&c));
        c.last_error = error_at("2026-01-01T09:00:00Z");
        assert!(advice(&c).starts_with("Working: "), "an older error: {}", advice(&c));
        c.last_error = error_at("2026-01-01T11:00:00Z");
        assert!(advice(&c).contains("last error is newer"), "{}", advice(&c));

        c.last_error = error_at("2026-01-01T10:00:02.5Z");
        c.last_answer_sent = Some("2026-01-01T10:00:02.50000001Z".into());
        assert!(advice(&c).starts_with("Working: "), "fractions of a second compare as numbers: {}", advice(&c));
        assert_eq!(sortable("2026-01-01T10:00:02Z"), "2026-01-01T10:00:02.000000000Z");

        c.dead_letters_waiting = 2;
        assert!(advice(&c).contains("2 dead letter(s) waiting") && advice(&c).contains("--redrive"), "{}", advice(&c));
        assert!(advice(&c).contains("button"), "{}", advice(&c));
    }

    #[test]
    fn the_badge_says_working_only_when_answers_go_out_and_nothing_newer_failed() {
        let mut c = status();
        assert_eq!(health(&c).0, "waiting for traffic");
        c.last_event_received = Some("2026-01-01T10:00:00Z".into());
        c.last_error = error_at("2026-01-01T10:00:01Z");
        assert_eq!(health(&c).0, "needs attention", "events, an error, no answer");
        c.last_answer_sent = Some("2026-01-01T10:00:02Z".into());
        assert_eq!(health(&c).0, "working");
        c.dead_letters_waiting = 1;
        assert_eq!(health(&c).0, "needs attention");
        c.long_connection = Some(crate::long_connection::board::ChannelConnections { wanted: 1, ..Default::default() });
        assert_eq!(health(&c).0, "down");
    }

    #[test]
    fn a_long_connection_channel_gets_its_own_advice() {
        let mut c = status();
        c.long_connection = Some(crate::long_connection::board::ChannelConnections { wanted: 1, ..Default::default() });
        assert!(advice(&c).contains("No long connection to Lark is up"), "{}", advice(&c));
        c.long_connection =
            Some(crate::long_connection::board::ChannelConnections { wanted: 1, up: 1, ..Default::default() });
        assert!(advice(&c).contains("persistent connection mode"), "{}", advice(&c));
    }
}
