//! The links through which FastGPT fetches a file a user sent: the relay
//! stores the file in the files bucket and gives FastGPT
//! `{ingress.public_url}/files/{object}/{name}?exp={unix seconds}&sig={hex}`;
//! the ingress serves it while the link holds.
//!
//! FastGPT cannot fetch from Lark (Lark wants the bot's tenant token) nor
//! from a loopback address, so the bytes are served by the bridge's one
//! public port. What makes that safe:
//!
//! - **Signed**: `sig` is HMAC-SHA256, under `ingress.files_signing_key`
//!   (held by the relay and the ingress only), over the object name and the
//!   expiry. Without the key no one makes a link, and a link's object or
//!   expiry cannot be changed: another object's signature does not fit.
//! - **Expiring**: `exp` is when the object itself expires (the bucket's
//!   `max_age`); a later link, or one that claims to live longer than an
//!   object can, is refused.
//! - **Checked in constant time**, so the answer's timing tells nothing
//!   about how much of a forged signature was right.
//! - **Nothing from the user in the path**: the object name is a hash the
//!   relay derives (`topology::keys::file_object`), checked for its shape
//!   first; `{name}` is only there for FastGPT, which reads the file's type
//!   from the URL's extension, and must equal the stored file's name.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use url::Url;

use crate::topology::keys::is_file_object;

/// The route of the files, under `ingress.public_url`.
pub const ROUTE_PREFIX: &str = "/files/";

/// The stored object's metadata key of the file name it is served under
/// (written by the relay, read by the ingress).
pub const META_NAME: &str = "filename";
/// The stored object's metadata key of its MIME type.
pub const META_TYPE: &str = "content-type";

/// Clocks of the relay and the ingress may differ by this much.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Signs and checks file links with `ingress.files_signing_key`.
#[derive(Clone)]
pub struct LinkSigner {
    key: SecretString,
    /// How long an object lives: no valid link outlives it.
    max_age: Duration,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner").field("max_age", &self.max_age).finish_non_exhaustive()
    }
}

/// Why a link is refused (the ingress answers 404 whatever the reason; the
/// reason goes to its debug log and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefusal {
    #[error("not an object name the relay makes")]
    BadObject,
    #[error("no expiry, or not a number")]
    BadExpiry,
    #[error("expired")]
    Expired,
    #[error("expires later than any object lives")]
    TooLong,
    #[error("no signature, or not 64 hex digits")]
    BadSignature,
    #[error("the signature does not match")]
    WrongSignature,
}

impl LinkRefusal {
    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::BadObject => "bad_object",
            Self::BadExpiry => "bad_expiry",
            Self::Expired => "expired",
            Self::TooLong => "too_long",
            Self::BadSignature => "bad_signature",
            Self::WrongSignature => "wrong_signature",
        }
    }
}

impl LinkSigner {
    pub fn new(key: SecretString, max_age: Duration) -> Self {
        Self { key, max_age }
    }

    /// How long a link made now lives.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    fn mac(&self, object: &str, expires: u64) -> Hmac<Sha256> {
        // HMAC takes a key of any length; `new_from_slice` cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        // Domain-separated and length-framed: no other message of the bridge
        // signed with this key reads the same.
        mac.update(b"lark-bridge file link v1\n");
        mac.update(object.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The hex signature of `object` until `expires` (Unix seconds).
    pub fn signature(&self, object: &str, expires: u64) -> String {
        hex::encode(self.mac(object, expires).finalize().into_bytes())
    }

    /// The link to `object`, served under the file name `name`, made at
    /// `now` (Unix seconds): it expires with the object.
    pub fn link(&self, public_url: &Url, object: &str, name: &str, now: u64) -> String {
        let expires = now.saturating_add(self.max_age.as_secs());
        let base = public_url.as_str().trim_end_matches('/');
        let name = percent_encoding::utf8_percent_encode(name, NAME_SEGMENT);
        format!("{base}{ROUTE_PREFIX}{object}/{name}?exp={expires}&sig={}", self.signature(object, expires))
    }

    /// Checks a link's parts, as they came in the request, at `now`.
    pub fn verify(&self, object: &str, expires: Option<&str>, sig: Option<&str>, now: u64) -> Result<(), LinkRefusal> {
        if !is_file_object(object) {
            return Err(LinkRefusal::BadObject);
        }
        let expires = expires
            .filter(|e| !e.is_empty() && e.len() <= 20 && e.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|e| e.parse::<u64>().ok())
            .ok_or(LinkRefusal::BadExpiry)?;
        let given = sig.filter(|s| s.len() == 64).and_then(|s| hex::decode(s).ok()).ok_or(LinkRefusal::BadSignature)?;
        let want = self.mac(object, expires).finalize().into_bytes();
        // The signature first, in constant time: an unsigned request learns
        // nothing, not even whether its expiry would have passed.
        if !bool::from(want.as_slice().ct_eq(&given)) {
            return Err(LinkRefusal::WrongSignature);
        }
        if expires <= now {
            return Err(LinkRefusal::Expired);
        }
        if expires > now.saturating_add(self.max_age.as_secs()).saturating_add(CLOCK_SKEW.as_secs()) {
            return Err(LinkRefusal::TooLong);
        }
        Ok(())
    }
}

/// What stays literal in the `{name}` segment: letters, digits and `-._~`
/// (RFC 3986's unreserved); everything else, `/` and `%` included, is
/// percent-encoded, so a name is always one segment.
const NAME_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The current time in Unix seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::keys::file_object;

    const NOW: u64 = 1_800_000_000;

    fn signer(key: &str) -> LinkSigner {
        LinkSigner::new(SecretString::from(key.to_owned()), Duration::from_secs(3600))
    }

    /// The query of a link: `(exp, sig)`.
    fn parts(link: &str) -> (String, String) {
        let url = Url::parse(link).expect("a URL");
        let get = |k: &str| url.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned()).expect(k);
        (get("exp"), get("sig"))
    }

    #[test]
    fn a_link_is_valid_until_its_object_expires() {
        let s = signer("0123456789abcdef0123456789abcdef");
        let object = file_object("support", "om_1", "file_1");
        let base = Url::parse("https://bot.example.com/").expect("url");
        let link = s.link(&base, &object, "report 2024.pdf", NOW);
        assert!(link.starts_with(&format!("https://bot.example.com/files/{object}/report%202024.pdf?exp=")), "{link}");
        let (exp, sig) = parts(&link);
        assert_eq!(exp, (NOW + 3600).to_string());
        assert_eq!(s.verify(&object, Some(&exp), Some(&sig), NOW), Ok(()));
        assert_eq!(s.verify(&object, Some(&exp), Some(&sig), NOW + 3599), Ok(()));
        assert_eq!(s.verify(&object, Some(&exp), Some(&sig), NOW + 3600), Err(LinkRefusal::Expired));
    }

    #[test]
    fn tampered_links_are_refused() {
        let s = signer("0123456789abcdef0123456789abcdef");
        let object = file_object("support", "om_1", "file_1");
        let other = file_object("support", "om_2", "file_2");
        let (exp, sig) = parts(&s.link(&Url::parse("http://h").expect("url"), &object, "a.pdf", NOW));
        let later = (NOW + 3000).to_string();
        assert_eq!(s.verify(&object, Some(&later), Some(&sig), NOW), Err(LinkRefusal::WrongSignature), "expiry moved");
        assert_eq!(s.verify(&other, Some(&exp), Some(&sig), NOW), Err(LinkRefusal::WrongSignature), "other object");
        let mut flipped = sig.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("hex");
        assert_eq!(s.verify(&object, Some(&exp), Some(&flipped), NOW), Err(LinkRefusal::WrongSignature));
        assert_eq!(s.verify(&object, Some(&exp), Some(&sig.to_uppercase()), NOW), Ok(()), "hex in either case");
        let by_other_key = signer("another key, as long as the first");
        assert_eq!(by_other_key.verify(&object, Some(&exp), Some(&sig), NOW), Err(LinkRefusal::WrongSignature));
        assert_eq!(s.verify(&object, Some(&exp), None, NOW), Err(LinkRefusal::BadSignature));
        assert_eq!(s.verify(&object, Some(&exp), Some(&sig[..63]), NOW), Err(LinkRefusal::BadSignature));
        assert_eq!(s.verify(&object, None, Some(&sig), NOW), Err(LinkRefusal::BadExpiry));
        assert_eq!(s.verify(&object, Some("+1"), Some(&sig), NOW), Err(LinkRefusal::BadExpiry));
        assert_eq!(s.verify(&object, Some("99999999999999999999999"), Some(&sig), NOW), Err(LinkRefusal::BadExpiry));
    }

    #[test]
    fn only_derived_object_names_are_looked_at() {
        let s = signer("0123456789abcdef0123456789abcdef");
        for object in ["", "..", "../../etc/passwd", "%2e%2e", "ABCDEF0123456789ABCDEF0123456789", "a/b"] {
            let sig = s.signature(object, NOW + 10);
            let exp = (NOW + 10).to_string();
            assert_eq!(s.verify(object, Some(&exp), Some(&sig), NOW), Err(LinkRefusal::BadObject), "{object}");
        }
    }

    #[test]
    fn a_link_cannot_outlive_the_objects() {
        let s = signer("0123456789abcdef0123456789abcdef");
        let object = file_object("c", "m", "k");
        let far = NOW + 365 * 24 * 3600;
        let sig = s.signature(&object, far);
        assert_eq!(s.verify(&object, Some(&far.to_string()), Some(&sig), NOW), Err(LinkRefusal::TooLong));
    }

    #[test]
    fn a_name_is_one_segment_and_the_key_stays_out_of_debug() {
        let s = signer("0123456789abcdef0123456789abcdef");
        let link =
            s.link(&Url::parse("https://h/base/").expect("url"), &file_object("c", "m", "k"), "../a/b%.txt", NOW);
        assert!(link.contains("/base/files/") && link.contains("/..%2Fa%2Fb%25.txt?"), "{link}");
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
    }
}
