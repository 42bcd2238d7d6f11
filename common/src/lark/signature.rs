//! `X-Lark-Signature`: where the signature of a callback is checked.
//!
//! Lark signs each event request with
//! `hex(SHA-256(timestamp + nonce + encrypt_key + raw body))` in the headers
//! `X-Lark-Request-Timestamp`, `X-Lark-Request-Nonce` and `X-Lark-Signature`.
//! The comparison is constant-time so the signature cannot be guessed byte by
//! byte from response times. The timestamp is also checked against a replay
//! window wide enough for Lark's own re-pushes (hours later), narrow enough to
//! refuse a request captured a day ago.

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::crypto::EncryptKey;

pub const TIMESTAMP_HEADER: &str = "x-lark-request-timestamp";
pub const NONCE_HEADER: &str = "x-lark-request-nonce";
pub const SIGNATURE_HEADER: &str = "x-lark-signature";

/// Why a signed request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Lark-Signature / X-Lark-Request-Timestamp / X-Lark-Request-Nonce headers on a channel with an encrypt_key")]
    Missing,
    #[error("X-Lark-Signature does not match: check that the channel's encrypt_key is the Encrypt Key shown in the Lark console")]
    Mismatch,
    #[error("X-Lark-Request-Timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("X-Lark-Request-Timestamp is {skew_secs} s away from now, outside the replay window of {window_secs} s")]
    Stale { skew_secs: i64, window_secs: u64 },
}

/// The three signature headers of one request, as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub timestamp: &'a str,
    pub nonce: &'a str,
    pub signature: &'a str,
}

/// The hex signature Lark would send for this request.
pub fn sign(timestamp: &str, nonce: &str, key: &EncryptKey, body: &[u8]) -> String {
    hex::encode(digest(timestamp, nonce, key, body))
}

fn digest(timestamp: &str, nonce: &str, key: &EncryptKey, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(key.raw().expose_secret().as_bytes());
    h.update(body);
    h.finalize().into()
}

/// Checks the signature of a raw request body, in constant time.
pub fn verify(headers: SignedHeaders<'_>, key: &EncryptKey, body: &[u8]) -> Result<(), SignatureError> {
    let mut given = [0u8; 32];
    // A signature that is not 64 hex digits cannot match; decoding it is not secret.
    if hex::decode_to_slice(headers.signature.trim(), &mut given).is_err() {
        return Err(SignatureError::Mismatch);
    }
    let expected = digest(headers.timestamp, headers.nonce, key, body);
    if bool::from(expected.ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Checks `X-Lark-Request-Timestamp` against `now` (Unix seconds).
pub fn check_replay_window(timestamp: &str, now: i64, window_secs: u64) -> Result<(), SignatureError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
    let skew = now.saturating_sub(ts);
    if skew.unsigned_abs() > window_secs {
        return Err(SignatureError::Stale { skew_secs: skew, window_secs });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn key() -> EncryptKey {
        EncryptKey::new(SecretString::from("test key".to_owned()))
    }

    #[test]
    fn a_signature_made_by_sign_verifies() {
        let body = br#"{"encrypt":"abc"}"#;
        let sig = sign("1700000000", "nonce", &key(), body);
        assert_eq!(sig.len(), 64);
        let h = SignedHeaders { timestamp: "1700000000", nonce: "nonce", signature: &sig };
        assert_eq!(verify(h, &key(), body), Ok(()));
        assert_eq!(verify(SignedHeaders { signature: &sig.to_uppercase(), ..h }, &key(), body), Ok(()));
    }

    #[test]
    fn matches_an_independent_sha256_of_the_concatenation() {
        // sha256("1" + "2" + "test key" + "{}") computed the plain way.
        let expected = hex::encode(Sha256::digest(b"12test key{}"));
        assert_eq!(sign("1", "2", &key(), b"{}"), expected);
    }

    #[test]
    fn any_change_breaks_it() {
        let body = b"{}";
        let sig = sign("1", "2", &key(), body);
        let ok = SignedHeaders { timestamp: "1", nonce: "2", signature: &sig };
        assert_eq!(verify(ok, &key(), b"{ }"), Err(SignatureError::Mismatch));
        assert_eq!(verify(SignedHeaders { nonce: "3", ..ok }, &key(), body), Err(SignatureError::Mismatch));
        assert_eq!(verify(SignedHeaders { timestamp: "2", ..ok }, &key(), body), Err(SignatureError::Mismatch));
        assert_eq!(verify(SignedHeaders { signature: "zz", ..ok }, &key(), body), Err(SignatureError::Mismatch));
        let other = EncryptKey::new(SecretString::from("other".to_owned()));
        assert_eq!(verify(ok, &other, body), Err(SignatureError::Mismatch));
    }

    #[test]
    fn replay_window() {
        assert_eq!(check_replay_window("1000", 1000, 60), Ok(()));
        assert_eq!(check_replay_window("940", 1000, 60), Ok(()));
        assert!(matches!(check_replay_window("939", 1000, 60), Err(SignatureError::Stale { .. })));
        assert!(matches!(check_replay_window("1061", 1000, 60), Err(SignatureError::Stale { .. })));
        assert_eq!(check_replay_window("soon", 1000, 60), Err(SignatureError::BadTimestamp));
    }
}
