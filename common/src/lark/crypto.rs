//! Lark's Encrypt Key: AES-256-CBC with key = SHA-256(encrypt_key).
//!
//! Lark sends `{"encrypt": "<base64>"}` when an app has an Encrypt Key
//! (Events & Callbacks > Encryption Strategy). The decoded data is a 16-byte IV
//! followed by the ciphertext, PKCS#7 padded. `encrypt` exists for the tests,
//! the sandbox and the load generator, which must produce what Lark produces.
//!
//! The key is derived once per channel at start-up: the hot path only runs AES.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

const IV_LEN: usize = 16;

/// Why an `encrypt` field could not be turned back into Lark's JSON.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the encrypt field is not valid base64")]
    Base64,
    #[error("the encrypted data is too short or not a whole number of AES blocks")]
    Length,
    #[error("the data does not decrypt with this channel's encrypt_key (wrong key, or corrupted data)")]
    Padding,
}

/// A channel's Encrypt Key, with the AES key derived from it.
///
/// `Debug` never shows the key: it is a secret.
#[derive(Clone)]
pub struct EncryptKey {
    raw: SecretString,
    aes_key: [u8; 32],
}

impl std::fmt::Debug for EncryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptKey([REDACTED])")
    }
}

impl EncryptKey {
    pub fn new(raw: SecretString) -> Self {
        let aes_key: [u8; 32] = Sha256::digest(raw.expose_secret().as_bytes()).into();
        Self { raw, aes_key }
    }

    /// The key as configured; the signature is computed over it.
    pub fn raw(&self) -> &SecretString {
        &self.raw
    }

    /// Decrypts the `encrypt` field of a Lark callback into the plain JSON bytes.
    pub fn decrypt(&self, encrypted_b64: &str) -> Result<Vec<u8>, CryptoError> {
        let mut data = STANDARD.decode(encrypted_b64.trim()).map_err(|_| CryptoError::Base64)?;
        if data.len() < IV_LEN * 2 || data.len() % IV_LEN != 0 {
            return Err(CryptoError::Length);
        }
        let (iv, ciphertext) = data.split_at_mut(IV_LEN);
        let decryptor = Aes256CbcDec::new_from_slices(&self.aes_key, iv).map_err(|_| CryptoError::Length)?;
        // In place, then the plain text moved to the front: one buffer, not two.
        let plain_len = decryptor.decrypt_padded_mut::<Pkcs7>(ciphertext).map_err(|_| CryptoError::Padding)?.len();
        data.copy_within(IV_LEN..IV_LEN + plain_len, 0);
        data.truncate(plain_len);
        Ok(data)
    }

    /// Encrypts as Lark does, with a random IV.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        let iv: [u8; IV_LEN] = rand::random();
        self.encrypt_with_iv(plaintext, iv)
    }

    /// Encrypts with a given IV (deterministic output for tests).
    pub fn encrypt_with_iv(&self, plaintext: &[u8], iv: [u8; IV_LEN]) -> String {
        let encryptor = Aes256CbcEnc::new(&self.aes_key.into(), &iv.into());
        let ciphertext = encryptor.encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        let mut data = Vec::with_capacity(IV_LEN + ciphertext.len());
        data.extend_from_slice(&iv);
        data.extend_from_slice(&ciphertext);
        STANDARD.encode(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> EncryptKey {
        EncryptKey::new(SecretString::from(s.to_owned()))
    }

    /// Lark's published test vector, kept in `testdata/lark-samples/`.
    #[test]
    fn decrypts_larks_published_vector() {
        let vector: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/lark-samples/encrypt_test_vector.json"
        )))
        .expect("the vector is JSON");
        let field = |name: &str| vector[name].as_str().unwrap_or_else(|| panic!("vector has {name}")).to_owned();
        let plain = key(&field("encrypt_key")).decrypt(&field("encrypt")).expect("Lark's vector decrypts");
        assert_eq!(plain, field("plaintext").as_bytes());
    }

    #[test]
    fn round_trips() {
        let k = key("another key");
        let enc = k.encrypt(br#"{"a":1}"#);
        assert_eq!(k.decrypt(&enc).expect("round trip"), br#"{"a":1}"#);
    }

    #[test]
    fn wrong_key_is_a_padding_error_or_garbage_never_a_panic() {
        let enc = key("right").encrypt(b"{\"challenge\":\"x\"}");
        // A wrong key almost always breaks the PKCS#7 padding; when it does not,
        // the caller's JSON parse fails instead.
        if let Ok(bytes) = key("wrong").decrypt(&enc) {
            assert_ne!(bytes, b"{\"challenge\":\"x\"}");
        }
    }

    #[test]
    fn rejects_bad_base64_and_lengths() {
        let k = key("k");
        assert_eq!(k.decrypt("not base64!!"), Err(CryptoError::Base64));
        assert_eq!(k.decrypt("AAAA"), Err(CryptoError::Length));
        assert_eq!(k.decrypt(&STANDARD.encode([0u8; 33])), Err(CryptoError::Length));
    }

    proptest::proptest! {
        #[test]
        fn decrypt_never_panics(s in ".*") {
            let _ = key("k").decrypt(&s);
        }

        #[test]
        fn decrypt_of_random_blocks_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = key("k").decrypt(&STANDARD.encode(&data));
        }

        #[test]
        fn encrypt_decrypt_round_trip(data in proptest::collection::vec(proptest::num::u8::ANY, 0..500)) {
            let k = key("prop");
            proptest::prop_assert_eq!(k.decrypt(&k.encrypt(&data)).expect("round trip"), data);
        }
    }
}
