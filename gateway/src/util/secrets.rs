//! Secrets the gateway hands out or checks: random 256-bit tokens (base64url, what a link or
//! an OAuth state carries), their SHA-256 digests (all that is kept), and comparison in time
//! independent of where two digests differ.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

pub type Digest = [u8; 32];

/// The length of a `random_token`: 32 bytes in unpadded base64url.
const TOKEN_LEN: usize = 43;

pub fn digest(secret: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret).as_ref());
    out
}

/// Equal digests, in time independent of where they differ.
pub fn same_digest(a: &Digest, b: &Digest) -> bool {
    same_bytes(a, b)
}

/// Equal byte strings (of digests, or their hex), in time independent of where they differ.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A secret's SHA-256 in lower-case hex (as stored where JSON holds it).
pub fn digest_hex(secret: &[u8]) -> String {
    digest(secret).iter().map(|b| format!("{b:02x}")).collect()
}

/// 256 random bits, base64url without padding.
pub fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| "no randomness".to_string())?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `text` has the shape of a `random_token` (checked before anything from outside is
/// looked up by it).
pub fn is_token(text: &str) -> bool {
    text.len() == TOKEN_LEN && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A key the gateway seals and signs with (console sessions, digest links, OAuth tokens): 32
/// bytes, read from a file as base64. Sealing and signing use keys derived from it under
/// different labels, so a signature can never be read as a sealed value or the other way round.
#[derive(Clone)]
pub struct SecretKey {
    seal: [u8; 32],
    sign: ring::hmac::Key,
}

impl SecretKey {
    pub fn new(bytes: &[u8; 32]) -> Self {
        let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes);
        let mut seal = [0u8; 32];
        seal.copy_from_slice(ring::hmac::sign(&root, b"postern seal v1").as_ref());
        let sign = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            ring::hmac::sign(&root, b"postern sign v1").as_ref(),
        );
        Self { seal, sign }
    }

    /// 32 random bytes: what a process uses when no key file is set (its seals and signatures
    /// then mean nothing to another process, or after a restart).
    pub fn random() -> Result<Self, String> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| "no randomness".to_string())?;
        Ok(Self::new(&bytes))
    }

    /// The key in `file` (base64 of 32 bytes); `field` names the setting in errors.
    pub fn from_file(file: &std::path::Path, field: &str) -> Result<Self, String> {
        use base64::engine::general_purpose::STANDARD;
        let text = std::fs::read_to_string(file).map_err(|e| format!("{field} {}: {e}", file.display()))?;
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|e| format!("{field} {}: not base64: {e}", file.display()))?;
        let bytes: [u8; 32] =
            raw.try_into().map_err(|_| format!("{field} {}: not 32 bytes of base64", file.display()))?;
        Ok(Self::new(&bytes))
    }

    /// AES-256-GCM with a random nonce; `context` is authenticated, not sealed (what the value
    /// is for, so a sealed value cannot be replayed as another). base64url: nonce, text, tag.
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Result<String, String> {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.seal).map_err(|_| "bad key")?);
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| "no randomness".to_string())?;
        let mut data = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut data)
            .map_err(|_| "cannot seal".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The plain text of a `seal` under the same key and context; `None` for anything else.
    pub fn open(&self, context: &[u8], sealed: &str) -> Option<Vec<u8>> {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.seal).ok()?);
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let mut data = rest.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = key.open_in_place(nonce, Aad::from(context), &mut data).ok()?;
        Some(plain.to_vec())
    }

    /// HMAC-SHA256 of `message`, base64url.
    pub fn sign(&self, message: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(ring::hmac::sign(&self.sign, message))
    }

    /// Whether `signature` is `sign(message)` (compared in constant time by ring).
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(signature)
            .is_ok_and(|tag| ring::hmac::verify(&self.sign, message, &tag).is_ok())
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = SecretKey::new(&[7; 32]);
        let sealed = key.seal(b"session", b"hello").unwrap();
        assert_eq!(key.open(b"session", &sealed).as_deref(), Some(&b"hello"[..]));
        assert_ne!(sealed, key.seal(b"session", b"hello").unwrap(), "a fresh nonce each time");
        assert_eq!(key.open(b"link", &sealed), None, "another context");
        assert_eq!(SecretKey::new(&[8; 32]).open(b"session", &sealed), None, "another key");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(key.open(b"session", std::str::from_utf8(&tampered).unwrap()), None);
        assert_eq!(key.open(b"session", "short"), None);
        let sig = key.sign(b"release q1");
        assert!(key.verify(b"release q1", &sig));
        assert!(!key.verify(b"release q2", &sig));
        assert!(!SecretKey::new(&[8; 32]).verify(b"release q1", &sig));
        assert!(!key.verify(b"release q1", "not base64!"));
    }

    #[test]
    fn tokens_have_the_shape_they_are_checked_for() {
        let t = random_token().unwrap();
        assert!(is_token(&t), "{t}");
        assert_ne!(t, random_token().unwrap());
        assert!(!is_token(&t[1..]));
        assert!(!is_token(&format!("{}/", &t[1..])), "path characters");
        assert!(!is_token(&format!("{}é", "a".repeat(41))), "43 bytes, not all base64url");
    }

    #[test]
    fn digests_compare_whole() {
        assert!(same_digest(&digest(b"abc"), &digest(b"abc")));
        assert!(!same_digest(&digest(b"abc"), &digest(b"abd")));
    }
}
