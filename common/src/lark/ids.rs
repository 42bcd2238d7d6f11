//! The shape of Lark's ids, checked where they enter (the ingress) and again
//! where they leave (a Lark API path).
//!
//! Lark's ids are short ASCII tokens: `om_…` (message), `oc_…` (chat),
//! `ou_…` (open_id), `omt_…` (topic), `cli_…` (app), 32 hex digits (event
//! id). An id from an event ends up in a URL path (`/messages/{id}/reply`),
//! in NATS headers (`Nats-Msg-Id`) and subjects, and in the chatId: a `/` or
//! `..` would call another endpoint with the bridge's tenant token, a CR/LF
//! would break a header, a 200 KB id would overflow every key it is part of.
//! So an event whose ids are not id-shaped is refused with a 4xx (Lark never
//! sends one; a forgery gets no retry loop out of it), and the API client
//! refuses to put such an id in a path (defence in depth), percent-encoding
//! every segment it builds.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Longer than any id Lark issues (they are 20 to 40 characters), short
/// enough for every key and header an id is part of.
pub const MAX_ID_LEN: usize = 128;

/// Why a value is not a Lark id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} characters long (Lark's ids have at most {MAX_ID_LEN})")]
    TooLong { field: &'static str, len: usize },
    #[error("{field} has a character Lark's ids never have (only letters, digits, '_' and '-')")]
    BadChar { field: &'static str },
}

/// Whether every byte of `s` is an ASCII letter, digit, `_` or `-` (the
/// characters of Lark's ids and of the bridge's own names; true for "").
pub fn token_chars(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks that `value` is shaped like a Lark id: 1 to [`MAX_ID_LEN`] ASCII
/// letters, digits, `_` or `-`.
pub fn check(field: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { field });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { field, len: value.len() });
    }
    if !token_chars(value) {
        return Err(IdError::BadChar { field });
    }
    Ok(())
}

/// An event type (`im.message.receive_v1`): like an id, dots allowed.
pub fn check_event_type(value: &str) -> Result<(), IdError> {
    let field = "header.event_type";
    check(field, &value.replace('.', "_")).map_err(|e| match e {
        IdError::TooLong { len, .. } => IdError::TooLong { field, len },
        other => other,
    })
}

/// Like [`check`], for an optional id.
pub fn check_opt(field: &'static str, value: Option<&str>) -> Result<(), IdError> {
    value.map_or(Ok(()), |v| check(field, v))
}

/// Reads an optional id: `""` and `null` are no id at all.
///
/// Lark writes an absent optional id in three ways: no field, `null` (a
/// `user_id` when the app lacks the user-id scope) and `""` (`root_id` and
/// `parent_id` of a message that replies to nothing, in older events; the
/// `user_id` of a bot in `mentions`). Refusing `""` would refuse every such
/// event, and Lark would give it up after its retries. So `""` becomes
/// `None` where the field is read, and the code after it (the id checks,
/// the conversation, the reply target) never sees an empty id. A required
/// id is a plain `String` and keeps [`check`]'s refusal of `""`.
pub fn empty_as_none<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    Ok(value.filter(|v| !v.is_empty()))
}

/// Everything but letters, digits, `-` and `_` is encoded in a path segment
/// (`.` too, though a checked id has none).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// One path segment for a Lark API URL: the id checked, then percent-encoded.
pub fn path_segment(field: &'static str, value: &str) -> Result<String, IdError> {
    check(field, value)?;
    Ok(utf8_percent_encode(value, SEGMENT).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn larks_ids_pass() {
        for id in [
            "om_dc13264520392913993dd051dba21dcf",
            "oc_5ad11d72b830411d72b836c20",
            "ou_84aad35d084aa403a838cf73ee18467",
            "omt_d4be107c616",
            "cli_9f5343c580712544",
            "5e3702a84e847582be8db7fb73283c02",
            "on_8ed6aa67826108097d9ee143816345",
        ] {
            assert_eq!(check("id", id), Ok(()), "{id}");
        }
    }

    #[test]
    fn hostile_ids_are_refused() {
        assert_eq!(check("message_id", ""), Err(IdError::Empty { field: "message_id" }));
        for bad in ["om_x/../../../../bot/v3/info#", "om_x\r\nX-Evil: 1", "om x", "om_x?a=1", "..", "om_é", "om.x"] {
            assert_eq!(check("message_id", bad), Err(IdError::BadChar { field: "message_id" }), "{bad:?}");
        }
        let long = "o".repeat(200_000);
        assert!(matches!(check("event_id", &long), Err(IdError::TooLong { len: 200_000, .. })));
    }

    #[derive(serde::Deserialize)]
    struct Optional {
        #[serde(default, deserialize_with = "empty_as_none")]
        id: Option<String>,
    }

    #[test]
    fn an_empty_or_null_optional_id_is_absent() {
        let read = |json: &str| serde_json::from_str::<Optional>(json).map(|o| o.id);
        assert_eq!(read(r#"{"id":""}"#).expect("empty"), None);
        assert_eq!(read(r#"{"id":null}"#).expect("null"), None);
        assert_eq!(read(r#"{}"#).expect("missing"), None);
        assert_eq!(read(r#"{"id":"om_1"}"#).expect("an id"), Some("om_1".to_owned()));
        assert_eq!(read(r#"{"id":" "}"#).expect("a blank"), Some(" ".to_owned()), "left for check to refuse");
        assert!(read(r#"{"id":7}"#).is_err(), "not a string");
    }

    proptest! {
        /// Whatever passes the check is its own path segment: nothing a URL
        /// parser would read as a separator, a dot segment or an escape.
        #[test]
        fn a_checked_id_is_a_plain_segment(s in ".{0,140}") {
            if let Ok(seg) = path_segment("id", &s) {
                prop_assert_eq!(&seg, &s);
                prop_assert!(!s.contains(['/', '.', '%', '?', '#', '\r', '\n']));
            }
        }
    }
}
