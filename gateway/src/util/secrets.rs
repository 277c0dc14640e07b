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

#[cfg(test)]
mod tests {
    use super::*;

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
