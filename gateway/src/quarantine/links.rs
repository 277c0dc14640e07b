//! The one-click links of quarantine digests: release or delete one held message for one
//! recipient. A link carries what it does, to which entry, for whom and until when, signed with
//! HMAC-SHA256 under `admin.keyFile` (the same key on every pod), so it cannot be changed to act
//! on another message or for another recipient. It acts once: acting takes the recipient out of
//! the entry (`Store::quarantine_take_recipient`), and a second click finds nothing held for
//! them. It expires with the entry.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::util::secrets::SecretKey;

/// What a link does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkAction {
    #[serde(rename = "release")]
    Release,
    #[serde(rename = "delete")]
    Delete,
}

impl LinkAction {
    pub fn verb(self) -> &'static str {
        match self {
            LinkAction::Release => "release",
            LinkAction::Delete => "delete",
        }
    }
}

/// A link's content (in the URL as base64url JSON, then `.` and the signature).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    #[serde(rename = "a")]
    pub action: LinkAction,
    /// The quarantine entry.
    #[serde(rename = "i")]
    pub id: String,
    /// The recipient the link acts for (a group's address in its moderator's digest).
    #[serde(rename = "r")]
    pub recipient: String,
    /// ms since the epoch.
    #[serde(rename = "e")]
    pub expires: u64,
}

/// Why a link is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefused {
    #[error("this link is not one of ours")]
    Malformed,
    #[error("this link was changed or is not signed by this gateway")]
    BadSignature,
    #[error("this link has expired")]
    Expired,
}

/// What the signature covers besides the payload: a version, so a signature made for anything
/// else under the same key is never a link's.
const DOMAIN: &[u8] = b"postern digest link v1\0";
/// A link is at most this long (the payload holds an id and an address).
const MAX_TOKEN: usize = 2048;

fn signed(payload: &str) -> Vec<u8> {
    [DOMAIN, payload.as_bytes()].concat()
}

impl Link {
    /// The token for the URL: `<payload>.<signature>`, both base64url.
    pub fn token(&self, key: &SecretKey) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let signature = key.sign(&signed(&payload));
        format!("{payload}.{signature}")
    }

    /// The link a token carries, if it is signed with `key` and not expired at `now`.
    pub fn open(key: &SecretKey, token: &str, now: u64) -> Result<Link, LinkRefused> {
        if token.len() > MAX_TOKEN {
            return Err(LinkRefused::Malformed);
        }
        let (payload, signature) = token.split_once('.').ok_or(LinkRefused::Malformed)?;
        if !key.verify(&signed(payload), signature) {
            return Err(LinkRefused::BadSignature);
        }
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| LinkRefused::Malformed)?;
        let link: Link = serde_json::from_slice(&json).map_err(|_| LinkRefused::Malformed)?;
        if now > link.expires {
            return Err(LinkRefused::Expired);
        }
        Ok(link)
    }
}

/// The URL of `link` under the admin endpoint's public address.
pub fn url(public_url: &str, key: &SecretKey, link: &Link) -> String {
    format!("{}/quarantine/link?t={}", public_url.trim_end_matches('/'), link.token(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Link {
        Link { action: LinkAction::Release, id: "q1".into(), recipient: "u@x.test".into(), expires: 1_000 }
    }

    #[test]
    fn links_open_signed_unchanged_and_in_time() {
        let key = SecretKey::new(&[1; 32]);
        let token = link().token(&key);
        assert_eq!(Link::open(&key, &token, 999), Ok(link()));
        assert_eq!(Link::open(&key, &token, 1_001), Err(LinkRefused::Expired));
        assert_eq!(Link::open(&SecretKey::new(&[2; 32]), &token, 0), Err(LinkRefused::BadSignature));
        // Another recipient or action, signed by someone without the key: refused.
        let (_, signature) = token.split_once('.').unwrap();
        let mut other = link();
        other.recipient = "mallory@x.test".into();
        let forged =
            format!("{}.{signature}", other.token(&SecretKey::new(&[3; 32])).split_once('.').unwrap().0);
        assert_eq!(Link::open(&key, &forged, 0), Err(LinkRefused::BadSignature));
        assert_eq!(Link::open(&key, "nodot", 0), Err(LinkRefused::Malformed));
        assert_eq!(Link::open(&key, &"a".repeat(5000), 0), Err(LinkRefused::Malformed));
        assert!(url("https://p.example/", &key, &link()).starts_with("https://p.example/quarantine/link?t="));
    }
}
