//! Room crypto: the key and the room hash derived from a room secret, and sealing / opening
//! relay messages with AES-256-GCM.
//!
//! Both derivations are PBKDF2-HMAC-SHA512 over the UTF-8 secret with 250,000 iterations and
//! fixed salts, so every member who knows the secret arrives at the same key and hash while the
//! relay only ever sees the hash.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::Sha512;

use crate::packets::{ClientId, RelayMessage, RelayMessageWrapper, RoomHash};

/// PBKDF2 iterations for both the key and the hash.
pub const ITERATIONS: u32 = 250_000;
/// Base64 of the salt for the AES key.
pub const KEY_SALT_B64: &str = "keksmeet/cryptosaltAAA==";
/// Base64 of the salt for the room hash.
pub const HASH_SALT_B64: &str = "keksmeet/roomhashsaltA==";
/// Length of the random IV in front of every ciphertext.
pub const IV_LEN: usize = 12;
/// Length of the GCM tag at the end of every ciphertext.
pub const TAG_LEN: usize = 16;

/// Why a sealed message could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The message is not standard base64 with padding.
    #[error("message is not valid base64")]
    Base64,
    /// The message is shorter than an IV and a tag.
    #[error("message too short: {0} bytes")]
    TooShort(usize),
    /// Authentication failed: another key, or the ciphertext was altered.
    #[error("decryption failed (wrong room key or tampered message)")]
    Decrypt,
    /// The plaintext is not the JSON of a relay message.
    #[error("plaintext is not a relay message: {0}")]
    Json(#[from] serde_json::Error),
    /// The sender inside the ciphertext differs from the one the relay stamped.
    #[error("sender mismatch: relay says {relay}, message says {claimed}")]
    SenderMismatch { relay: ClientId, claimed: ClientId },
}

/// Why a message could not be sealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The operating system's random source failed.
    #[error("no randomness for the IV: {0}")]
    Random(getrandom::Error),
    /// The message could not be serialised (an `Unknown` value).
    #[error("cannot serialise message: {0}")]
    Json(#[from] serde_json::Error),
}

/// The AES-256-GCM key of a room.
#[derive(Clone)]
pub struct RoomKey {
    cipher: Aes256Gcm,
    bytes: [u8; 32],
}

impl std::fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even in debug output.
        f.write_str("RoomKey(..)")
    }
}

impl RoomKey {
    /// Derives the key of the room with this secret (about 0.2 s in an optimised build).
    pub fn derive(secret: &str) -> Self {
        Self::from_bytes(derive(secret, KEY_SALT_B64))
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let cipher = Aes256Gcm::new(&bytes.into());
        RoomKey { cipher, bytes }
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Seals `plaintext` with a fresh random IV: base64 of `iv || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, SealError> {
        let mut iv = [0u8; IV_LEN];
        getrandom::fill(&mut iv).map_err(SealError::Random)?;
        Ok(self.seal_with_iv(iv, plaintext))
    }

    /// Seals with a caller-chosen IV. Only for test vectors: reusing an IV with the same key
    /// breaks GCM.
    pub fn seal_with_iv(&self, iv: [u8; IV_LEN], plaintext: &[u8]) -> String {
        // Encryption into a Vec only fails when the plaintext exceeds GCM's 64 GiB limit,
        // far above any WebSocket message.
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&iv), plaintext)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(IV_LEN + ciphertext.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ciphertext);
        BASE64.encode(out)
    }

    /// Opens a sealed message and returns the plaintext bytes.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let raw = BASE64.decode(sealed).map_err(|_| OpenError::Base64)?;
        if raw.len() < IV_LEN + TAG_LEN {
            return Err(OpenError::TooShort(raw.len()));
        }
        let (iv, ciphertext) = raw.split_at(IV_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(iv), ciphertext)
            .map_err(|_| OpenError::Decrypt)
    }

    /// Seals a relay message from `sender`.
    pub fn seal_message(&self, sender: ClientId, inner: &RelayMessage) -> Result<String, SealError> {
        let json = serde_json::to_vec(&RelayMessageWrapper {
            sender,
            inner: inner.clone(),
        })?;
        self.seal(&json)
    }

    /// Opens a relay message that the relay stamped with `sender`, checking that the sealed
    /// sender agrees.
    pub fn open_message(&self, sender: ClientId, sealed: &str) -> Result<RelayMessage, OpenError> {
        let plain = self.open(sealed)?;
        let wrapper: RelayMessageWrapper = serde_json::from_slice(&plain)?;
        if wrapper.sender != sender {
            return Err(OpenError::SenderMismatch {
                relay: sender,
                claimed: wrapper.sender,
            });
        }
        Ok(wrapper.inner)
    }
}

/// The hash under which the room with this secret is known to the relay.
pub fn room_hash(secret: &str) -> RoomHash {
    RoomHash(derive(secret, HASH_SALT_B64))
}

fn derive(secret: &str, salt_b64: &str) -> [u8; 32] {
    // The salts are constants that decode; a failure would be a typo caught by every test.
    let salt = BASE64.decode(salt_b64).unwrap_or_default();
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(secret.as_bytes(), &salt, ITERATIONS, &mut out);
    let mut first = [0u8; 32];
    first.copy_from_slice(&out[..32]);
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::ChatMessage;

    // Vectors from docs/PROTOCOL.md, computed independently of this code.
    const VECTORS: &[(&str, &str, &str)] = &[
        (
            "hunter2",
            "94dd89ee5f4ea23cede2dcf38612d82c32908e05ce9b7cbf54670a1e06322994",
            "ad1f3cf791d29e682f2d2c12d6238647d6c6fd431935cb6daff51b7a0dcd7aae",
        ),
        (
            "ünïcödé room",
            "befc351981f1ab053236ffcf772e3f2effa9c7c0b294ad29a0791190a9db983b",
            "0094fbf4a952150ba83fe13f3749192ea7aa54118475fe3b61d31880f9185231",
        ),
    ];

    #[test]
    fn derivations_match_protocol_vectors() {
        for (secret, key, hash) in VECTORS {
            assert_eq!(hex::encode(RoomKey::derive(secret).as_bytes()), *key, "key of {secret}");
            assert_eq!(room_hash(secret).to_string(), *hash, "hash of {secret}");
        }
    }

    fn key() -> RoomKey {
        RoomKey::from_bytes([7; 32])
    }

    #[test]
    fn seal_open_round_trip() {
        let k = key();
        let sealed = k.seal(b"hello").expect("seals");
        assert_eq!(k.open(&sealed).expect("opens"), b"hello");
        // A fresh IV each time.
        assert_ne!(sealed, k.seal(b"hello").expect("seals"));
    }

    #[test]
    fn sealed_layout_is_iv_ciphertext_tag() {
        let sealed = key().seal_with_iv([1; 12], b"abc");
        let raw = BASE64.decode(sealed).expect("base64");
        assert_eq!(raw.len(), 12 + 3 + 16);
        assert_eq!(&raw[..12], &[1; 12]);
    }

    #[test]
    fn bad_ciphertexts_are_errors() {
        let k = key();
        let good = k.seal(b"hello").expect("seals");
        let mut raw = BASE64.decode(&good).expect("base64");
        raw[14] ^= 1;
        let tampered = BASE64.encode(&raw);
        assert!(matches!(k.open("!!not base64"), Err(OpenError::Base64)));
        assert!(matches!(k.open("AAAA"), Err(OpenError::TooShort(3))));
        assert!(matches!(k.open(&tampered), Err(OpenError::Decrypt)));
        assert!(matches!(
            RoomKey::from_bytes([8; 32]).open(&good),
            Err(OpenError::Decrypt)
        ));
        let not_json = k.seal(b"{nope").expect("seals");
        assert!(matches!(
            k.open_message(ClientId(1), &not_json),
            Err(OpenError::Json(_))
        ));
    }

    #[test]
    fn message_round_trip_checks_sender() {
        let k = key();
        let msg = RelayMessage::Chat(ChatMessage::Text("hi".into()));
        let sealed = k.seal_message(ClientId(5), &msg).expect("seals");
        assert_eq!(k.open_message(ClientId(5), &sealed).expect("opens"), msg);
        assert!(matches!(
            k.open_message(ClientId(6), &sealed),
            Err(OpenError::SenderMismatch {
                relay: ClientId(6),
                claimed: ClientId(5)
            })
        ));
    }
}
