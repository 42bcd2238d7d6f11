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

use axum::http::{HeaderMap, StatusCode};
use common::channel::Channel;
use common::conversation::ConversationKey;
use common::envelope::dedup_key;
use common::lark::crypto::CryptoError;
use common::lark::event::{Callback, EncryptedBody, EventEnvelope, MessageEvent, ParseError};
use common::lark::signature::{self, SignatureError, SignedHeaders};

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
    pub plain: Vec<u8>,
    pub envelope: EventEnvelope,
    /// De-duplication key: channel + message_id (or + event_id).
    pub dedup_key: String,
    /// Subject token: the conversation for messages, `other` for the rest.
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
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed(_) | Self::Undecryptable(_) | Self::NoEncryptKey | Self::Unsupported(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Signature(_) | Self::Token => StatusCode::UNAUTHORIZED,
            Self::WrongApp { .. } => StatusCode::FORBIDDEN,
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
    if let (Some(key), Some(h)) = (&channel.encrypt_key, signed) {
        signature::verify(h, key, body)?;
    }

    // `{"encrypt": ...}` or a plain body.
    let plain: Vec<u8> = match serde_json::from_slice::<EncryptedBody>(body) {
        Ok(enc) => match &channel.encrypt_key {
            Some(key) => key.decrypt(&enc.encrypt)?,
            None => return Err(Rejection::NoEncryptKey),
        },
        Err(e) if e.is_data() => body.to_vec(),
        Err(e) => return Err(Rejection::Malformed(e.to_string())),
    };

    let callback = Callback::parse(&plain).map_err(|e| match e {
        ParseError::Json(e) => Rejection::Malformed(e.to_string()),
        ParseError::Shape(s) => Rejection::Unsupported(s),
    })?;

    match callback {
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
            if envelope.header.app_id != channel.app_id {
                return Err(Rejection::WrongApp { got: envelope.header.app_id.clone(), want: channel.app_id.clone() });
            }
            let message: Option<MessageEvent> = match envelope.message_event() {
                Some(Ok(m)) => Some(m),
                Some(Err(e)) => {
                    return Err(Rejection::Unsupported(format!(
                        "im.message.receive_v1 without the expected fields: {e}"
                    )))
                }
                None => None,
            };
            let dedup_key = dedup_key(&channel.id, &envelope, message.as_ref());
            let subject_token =
                message.as_ref().map(|m| ConversationKey::of(m).token()).unwrap_or_else(|| "other".to_owned());
            Ok(Verified::Event(Box::new(VerifiedEvent { plain, envelope, dedup_key, subject_token })))
        }
    }
}
