//! From raw request to verified callback: where the signature is checked, the
//! body decrypted, the token and app_id compared. Pure functions, so every
//! rejection is unit-tested and the whole path is fuzzed.
//!
//! Order matters for cost and for safety:
//! 1. signature headers present → verify them first, before any decryption;
//! 2. decrypt (when the body is `{"encrypt": ...}`), parse;
//! 3. a url_verification challenge is answered (Lark does not sign it; only
//!    a party holding the Encrypt Key could read an encrypted one anyway);
//! 4. an event on a channel with an Encrypt Key must have been signed, within
//!    the replay window; its token and app_id must be the channel's.
//!
//! From step 4 on, the path is shared with the long connection
//! ([`accept_plain`]): Lark authenticated that connection, so its plain
//! schema 2.0 JSON skips signature and token and goes straight to the
//! app_id and id checks, the de-duplication key and the conversation.
//!
//! An unsigned body on a channel with an Encrypt Key can only be the
//! challenge. Every other outcome for it (bad base64, bad padding, good
//! padding but bad JSON, an event) is the one [`Rejection::Unsigned`]: were
//! they told apart, the answers would be a padding oracle that decrypts a
//! captured callback without the key.

use axum::http::{HeaderMap, StatusCode};
use common::channel::Channel;
use common::conversation::{short_hash, ConversationKey};
use common::envelope::{click_dedup_key, dedup_key};
use common::lark::card_action::CardAction;
use common::lark::crypto::CryptoError;
use common::lark::event::{Callback, EncryptedBody, EventEnvelope, MessageEvent, ParseError};
use common::lark::ids::IdError;
use common::lark::signature::{self, SignatureError, SignedHeaders};
use common::question::Click;

/// A callback that passed every check.
#[derive(Debug)]
pub enum Verified {
    Challenge(String),
    Event(Box<VerifiedEvent>),
}

/// An event to publish.
#[derive(Debug)]
pub struct VerifiedEvent {
    /// The plain JSON, as Lark sent it: the payload of the NATS message.
    pub plain: bytes::Bytes,
    pub envelope: EventEnvelope,
    /// De-duplication key: channel + message_id (or + event_id).
    pub dedup_key: String,
    /// Subject token: the conversation for messages, a hash of the
    /// de-duplication key for any other event.
    pub subject_token: String,
}

/// Why a callback was refused. Each maps to one HTTP status and one metric label.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("the body is not JSON: {0}")]
    Malformed(String),
    #[error("the encrypted body cannot be decrypted: {0}")]
    Undecryptable(#[from] CryptoError),
    #[error("Lark sent an encrypted body but this channel has no encrypt_key: set channels[].encrypt_key to the Encrypt Key of the Lark console")]
    NoEncryptKey,
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("the verification token does not match: set channels[].verification_token to the Verification Token of the Lark console")]
    Token,
    #[error("the event is for app {got}, but this channel is bound to app {want}: check the Request URL in that app's console")]
    WrongApp { got: String, want: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("the event carries an id that is not a Lark id: {0}")]
    BadId(#[from] IdError),
    #[error("the request is not signed: with an Encrypt Key, Lark signs every event (X-Lark-Signature) and only the url_verification challenge is answered unsigned")]
    Unsigned,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed(_)
            | Self::Undecryptable(_)
            | Self::NoEncryptKey
            | Self::Unsupported(_)
            | Self::BadId(_) => StatusCode::BAD_REQUEST,
            Self::Signature(_) | Self::Token | Self::Unsigned => StatusCode::UNAUTHORIZED,
            Self::WrongApp { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// What an operator does about it.
    pub fn fix(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::Unsupported(_) | Self::BadId(_) => {
                "make sure only Lark posts to this URL, with schema 2.0 events"
            }
            Self::Undecryptable(_) | Self::NoEncryptKey => {
                "set encrypt_key to the Encrypt Key of the Lark console (Events & Callbacks > Encryption Strategy)"
            }
            Self::Signature(SignatureError::Stale { .. }) => {
                "check the clock of this host (NTP); a replayed request is refused on purpose"
            }
            Self::Signature(_) | Self::Unsigned => {
                "set encrypt_key to the Encrypt Key of the Lark console; requests not from Lark are refused on purpose"
            }
            Self::Token => "set verification_token to the Verification Token of the Lark console",
            Self::WrongApp { .. } => "each Lark app needs its own channel and Request URL",
        }
    }

    /// Short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Undecryptable(_) => "undecryptable",
            Self::NoEncryptKey => "no_encrypt_key",
            Self::Signature(SignatureError::Stale { .. }) => "stale",
            Self::Signature(_) => "signature",
            Self::Token => "token",
            Self::WrongApp { .. } => "wrong_app",
            Self::Unsupported(_) => "unsupported",
            Self::Unsigned => "unsigned",
            Self::BadId(_) => "bad_id",
        }
    }
}

fn signed_headers(headers: &HeaderMap) -> Option<SignedHeaders<'_>> {
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    Some(SignedHeaders {
        timestamp: get(signature::TIMESTAMP_HEADER)?,
        nonce: get(signature::NONCE_HEADER)?,
        signature: get(signature::SIGNATURE_HEADER)?,
    })
}

/// Verifies one callback for `channel`. `now` is Unix seconds.
pub fn verify(
    channel: &Channel,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    replay_window_secs: u64,
) -> Result<Verified, Rejection> {
    let signed = signed_headers(headers);
    let verified = verify_body(channel, signed, body, now, replay_window_secs);
    if channel.encrypt_key.is_some() && signed.is_none() {
        // One answer for every unsigned failure: no padding oracle.
        return match verified {
            Ok(Verified::Challenge(challenge)) => Ok(Verified::Challenge(challenge)),
            _ => Err(Rejection::Unsigned),
        };
    }
    verified
}

fn verify_body(
    channel: &Channel,
    signed: Option<SignedHeaders<'_>>,
    body: &[u8],
    now: i64,
    replay_window_secs: u64,
) -> Result<Verified, Rejection> {
    if let (Some(key), Some(h)) = (&channel.encrypt_key, signed) {
        signature::verify(h, key, body)?;
    }

    // `{"encrypt": ...}` or a plain body.
    let plain: Vec<u8> = match serde_json::from_slice::<EncryptedBody<'_>>(body) {
        Ok(enc) => match &channel.encrypt_key {
            Some(key) => key.decrypt(&enc.encrypt)?,
            None => return Err(Rejection::NoEncryptKey),
        },
        Err(e) if e.is_data() => body.to_vec(),
        Err(e) => return Err(Rejection::Malformed(e.to_string())),
    };

    match parse(&plain)? {
        Callback::Challenge { challenge, token } => {
            if !channel.token_matches(token.as_deref()) {
                return Err(Rejection::Token);
            }
            Ok(Verified::Challenge(challenge))
        }
        Callback::Event(envelope) => {
            if channel.encrypt_key.is_some() {
                // The signature itself was verified above, when present.
                let h = signed.ok_or(SignatureError::Missing)?;
                signature::check_replay_window(h.timestamp, now, replay_window_secs)?;
            }
            if !channel.token_matches(envelope.header.token.as_deref()) {
                return Err(Rejection::Token);
            }
            accept_event(channel, plain, envelope).map(|e| Verified::Event(Box::new(e)))
        }
    }
}

fn parse(plain: &[u8]) -> Result<Callback, Rejection> {
    Callback::parse(plain).map_err(|e| match e {
        ParseError::Json(e) => Rejection::Malformed(e.to_string()),
        ParseError::Shape(s) => Rejection::Unsupported(s),
    })
}

/// The long connection's path: the payload of a data frame, plain schema 2.0
/// JSON with no signature or token to check (Lark authenticated the
/// connection with the App Secret). A url_verification challenge never comes
/// this way and is refused like any other shape.
pub fn accept_plain(channel: &Channel, plain: Vec<u8>) -> Result<VerifiedEvent, Rejection> {
    match parse(&plain)? {
        Callback::Event(envelope) => accept_event(channel, plain, envelope),
        Callback::Challenge { .. } => {
            Err(Rejection::Unsupported("a url_verification challenge over the long connection".into()))
        }
    }
}

/// What both paths check once the event is authentic: its ids are Lark's,
/// it is the channel's app; then its de-duplication key and conversation.
fn accept_event(channel: &Channel, plain: Vec<u8>, envelope: EventEnvelope) -> Result<VerifiedEvent, Rejection> {
    envelope.check_ids()?;
    if envelope.header.app_id != channel.app_id {
        return Err(Rejection::WrongApp { got: envelope.header.app_id.clone(), want: channel.app_id.clone() });
    }
    let message: Option<MessageEvent> = match envelope.message_event() {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            return Err(Rejection::Unsupported(format!("im.message.receive_v1 without the expected fields: {e}")))
        }
        None => None,
    };
    if let Some(m) = &message {
        m.check_ids()?;
    }
    // A click on one of our question cards goes under its conversation (it
    // resumes that conversation's workflow, in order), once per question.
    let mut feedback = None;
    let click = match CardAction::of(&envelope) {
        Some(Ok(action)) => {
            action.check_ids()?;
            feedback = common::answer::FeedbackClick::read(&action.action.value);
            Click::read(&action.action.value, action.action.form_value.as_ref())
        }
        Some(Err(e)) => {
            return Err(Rejection::Unsupported(format!("card.action.trigger without the expected fields: {e}")))
        }
        None => None,
    };
    if let Some(click) = click {
        let dedup_key = click_dedup_key(&channel.id, &click.question);
        return Ok(VerifiedEvent { plain: plain.into(), envelope, dedup_key, subject_token: click.conversation });
    }
    let dedup_key = dedup_key(&channel.id, &envelope, message.as_ref());
    // A message goes under its conversation (handled in order); any other
    // event under a token of its own (nothing needs their order, so none
    // waits for another; they spread over every partition).
    // The ratings of one answer are taken in order (the last click counts).
    let subject_token = match (&message, &feedback) {
        (Some(m), _) => ConversationKey::of(m).token(),
        (None, Some(f)) => short_hash(&[f.target.chat_id.as_bytes(), f.target.data_id.as_bytes()]),
        (None, None) => short_hash(&[dedup_key.as_bytes()]),
    };
    Ok(VerifiedEvent { plain: plain.into(), envelope, dedup_key, subject_token })
}

#[cfg(test)]
mod tests {
    //! Hostile input: whatever arrives, `verify` answers with a 4xx reason or
    //! accepts a genuine request; it never panics and never accepts a forgery.

    use super::*;
    use common::config::ChannelSettings;
    use common::lark::crypto::EncryptKey;
    use proptest::prelude::*;
    use secrecy::SecretString;

    const NOW: i64 = 1_700_000_000;

    fn channel(encrypted: bool) -> Channel {
        Channel::new(&ChannelSettings {
            id: "c".into(),
            app_id: "cli_app".into(),
            app_secret: None,
            encrypt_key: encrypted.then(|| SecretString::from("fuzz key".to_owned())),
            verification_token: Some(SecretString::from("tok".to_owned())),
            lark_base_url: "https://open.feishu.cn".parse().expect("url"),
            fastgpt_base_url: "https://x.io/api".parse().expect("url"),
            fastgpt_api_key: None,
            fastgpt_app_id: None,
            allow_unverified: false,
            subscription: Default::default(),
            streaming: true,
            feedback: true,
            lark_calls_per_month: None,
        })
    }

    fn event_json() -> Vec<u8> {
        serde_json::json!({
            "schema": "2.0",
            "header": { "event_id": "e1", "event_type": "im.message.receive_v1", "token": "tok", "app_id": "cli_app" },
            "event": {
                "sender": { "sender_id": { "open_id": "ou_1" }, "sender_type": "user" },
                "message": { "message_id": "om_1", "chat_id": "oc_1", "chat_type": "p2p", "message_type": "text", "content": "{\"text\":\"hi\"}" }
            }
        })
        .to_string()
        .into_bytes()
    }

    fn key() -> EncryptKey {
        EncryptKey::new(SecretString::from("fuzz key".to_owned()))
    }

    /// Lark's signature headers for `body`, signed at `NOW`.
    fn signed(body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(signature::TIMESTAMP_HEADER, NOW.to_string().parse().expect("header"));
        h.insert(signature::NONCE_HEADER, "n".parse().expect("header"));
        h.insert(
            signature::SIGNATURE_HEADER,
            signature::sign(&NOW.to_string(), "n", &key(), body).parse().expect("header"),
        );
        h
    }

    /// A genuine encrypted, signed request.
    fn genuine() -> (HeaderMap, Vec<u8>) {
        let body = serde_json::json!({ "encrypt": key().encrypt(&event_json()) }).to_string().into_bytes();
        (signed(&body), body)
    }

    #[test]
    fn a_genuine_request_is_accepted_with_its_keys() {
        let (h, body) = genuine();
        let Ok(Verified::Event(e)) = verify(&channel(true), &h, &body, NOW, 3600) else { panic!("not accepted") };
        assert_eq!(e.dedup_key, "c:msg:om_1");
        assert_eq!(e.plain, event_json());
    }

    /// The `encrypt` field is borrowed from the body when it can be; a sender
    /// that escapes `/` as `\/` (valid JSON) is decoded all the same.
    #[test]
    fn an_encrypt_field_with_escaped_slashes_is_accepted() {
        let encrypted = (0..64)
            .map(|_| key().encrypt(&event_json()))
            .find(|e| e.contains('/'))
            .expect("one of 64 random IVs gives a '/' in the base64");
        let body = format!(r#"{{"encrypt":"{}"}}"#, encrypted.replace('/', "\\/")).into_bytes();
        let Ok(Verified::Event(e)) = verify(&channel(true), &signed(&body), &body, NOW, 3600) else {
            panic!("not accepted")
        };
        assert_eq!(e.plain, event_json());
    }

    /// The padding oracle: unsigned encrypted bodies that fail in different
    /// ways (base64, padding, JSON, shape, an event) get one answer.
    #[test]
    fn unsigned_failures_on_an_encrypted_channel_are_indistinguishable() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let wrap = |encrypt: String| serde_json::json!({ "encrypt": encrypt }).to_string().into_bytes();
        let bodies = [
            wrap("%%% not base64".into()),
            wrap(b64.encode([7u8; 48])),                 // bad padding (almost surely)
            wrap(key().encrypt(b"not json")),            // good padding, not JSON
            wrap(key().encrypt(br#"{"schema":"1.0"}"#)), // JSON, not a callback
            wrap(key().encrypt(&event_json())),          // a real event, unsigned
            b"not json at all".to_vec(),
            event_json(),
        ];
        let answers: Vec<_> = bodies
            .iter()
            .map(|body| {
                let r = verify(&channel(true), &HeaderMap::new(), body, NOW, 3600).expect_err("refused");
                (r.status(), r.reason(), r.to_string())
            })
            .collect();
        assert!(answers.iter().all(|a| a == &answers[0]), "{answers:#?}");
        assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED);
        // The challenge still works unsigned.
        let challenge = serde_json::json!({ "type": "url_verification", "challenge": "c1", "token": "tok" });
        let body = wrap(key().encrypt(challenge.to_string().as_bytes()));
        assert!(
            matches!(verify(&channel(true), &HeaderMap::new(), &body, NOW, 3600), Ok(Verified::Challenge(c)) if c == "c1")
        );
    }

    /// The long connection's path: no token, no signature; the app_id and
    /// the ids are checked as on the Request URL.
    #[test]
    fn accept_plain_checks_the_app_and_the_ids_only() {
        let e = accept_plain(&channel(true), event_json()).expect("accepted without signature or token");
        assert_eq!(e.dedup_key, "c:msg:om_1");
        let no_token = event_json().to_vec();
        let mut v: serde_json::Value = serde_json::from_slice(&no_token).expect("json");
        v["header"]["token"] = "".into();
        accept_plain(&channel(true), v.to_string().into_bytes()).expect("a token is not checked");
        v["header"]["app_id"] = "cli_other".into();
        let r = accept_plain(&channel(true), v.to_string().into_bytes()).expect_err("another app");
        assert_eq!(r.reason(), "wrong_app");
        assert_eq!(accept_plain(&channel(true), b"not json".to_vec()).expect_err("refused").reason(), "malformed");
        let v1 = br#"{"uuid":"u","event":{"type":"message"}}"#.to_vec();
        assert_eq!(accept_plain(&channel(true), v1).expect_err("refused").reason(), "unsupported");
        let challenge = br#"{"type":"url_verification","challenge":"c","token":"tok"}"#.to_vec();
        assert_eq!(accept_plain(&channel(true), challenge).expect_err("refused").reason(), "unsupported");
    }

    #[test]
    fn deep_nesting_is_a_clear_400_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let r = verify(&channel(false), &HeaderMap::new(), deep.as_bytes(), NOW, 3600);
        assert_eq!(r.expect_err("refused").status(), StatusCode::BAD_REQUEST);
        let deep_obj = format!("{}{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
        let r = verify(&channel(false), &HeaderMap::new(), deep_obj.as_bytes(), NOW, 3600);
        assert!(r.expect_err("refused").status().is_client_error());
    }

    #[test]
    fn non_utf8_is_a_400() {
        let r = verify(&channel(false), &HeaderMap::new(), &[0xff, 0xfe, b'{', 0x80], NOW, 3600);
        assert_eq!(r.expect_err("refused").status(), StatusCode::BAD_REQUEST);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bodies_are_always_a_4xx(body in proptest::collection::vec(any::<u8>(), 0..2048), encrypted in any::<bool>()) {
            if let Err(r) = verify(&channel(encrypted), &HeaderMap::new(), &body, NOW, 3600) {
                prop_assert!(r.status().is_client_error());
            } else {
                // Only a plain channel can accept an unsigned body, and only a real callback.
                prop_assert!(!encrypted);
            }
        }

        #[test]
        fn random_signature_headers_never_pass(ts in ".{0,30}", nonce in ".{0,30}", sig in "[0-9a-fA-Fz]{0,80}") {
            let (_, body) = genuine();
            let mut h = HeaderMap::new();
            for (name, value) in [(signature::TIMESTAMP_HEADER, ts), (signature::NONCE_HEADER, nonce), (signature::SIGNATURE_HEADER, sig)] {
                if let Ok(v) = value.parse() {
                    h.insert(name, v);
                }
            }
            let r = verify(&channel(true), &h, &body, NOW, 3600);
            prop_assert!(r.expect_err("a forgery").status().is_client_error());
        }

        #[test]
        fn any_flipped_byte_of_a_genuine_request_is_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (h, mut body) = genuine();
            let i = pos.index(body.len());
            body[i] ^= 1 << bit;
            let r = verify(&channel(true), &h, &body, NOW, 3600);
            prop_assert!(r.expect_err("tampered").status() == StatusCode::UNAUTHORIZED);
        }

        #[test]
        fn valid_json_of_any_shape_is_a_4xx(v in arb_json()) {
            let body = v.to_string().into_bytes();
            if let Err(r) = verify(&channel(false), &HeaderMap::new(), &body, NOW, 3600) {
                prop_assert!(r.status().is_client_error());
            }
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from("2.0")),
            Just(serde_json::Value::from("url_verification")),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("schema".to_owned()),
                        Just("type".to_owned()),
                        Just("header".to_owned()),
                        Just("encrypt".to_owned()),
                        Just("challenge".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
