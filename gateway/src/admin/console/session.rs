//! A console session: the token the reviewer logged in with, sealed (AES-256-GCM under
//! `admin.keyFile`) into a cookie. Nothing is kept on the server, so any pod serves any session;
//! every page asks again whether the token may do what the page does (`guard::authorize`:
//! Kubernetes answers are remembered 10 s), so a revoked token or RoleBinding ends the session's
//! rights, and a session never outlives its 8 hours.
//!
//! The cookie is `__Host-` prefixed (Secure, Path=/, no Domain: no other site or sub-domain can
//! set or read it), HttpOnly and SameSite=Lax. Every form carries a CSRF token, an HMAC of the
//! session's nonce under the same key; a POST without it, or from another origin, is refused.

use axum::http::{HeaderMap, HeaderValue, header};
use serde::{Deserialize, Serialize};

use crate::util::secrets::{SecretKey, random_token, same_bytes};
use crate::util::time::now_ms;

pub const COOKIE: &str = "__Host-postern-console";
/// A session's life from login.
pub const LIFETIME_MS: u64 = 8 * 3600 * 1000;
const SEALED_FOR: &[u8] = b"postern console session v1";
const CSRF_FOR: &[u8] = b"postern console csrf v1\0";
/// Larger cookies are not ours (a Kubernetes token is about 1 KB; browsers keep 4 KB).
const MAX_COOKIE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The bearer token logged in with (`None` when the admin endpoint has no authentication).
    #[serde(rename = "t")]
    pub token: Option<String>,
    /// Who it is, as shown on the pages (the gateway's token or the Kubernetes user).
    #[serde(rename = "u")]
    pub user: String,
    /// ms since the epoch.
    #[serde(rename = "e")]
    pub expires: u64,
    /// What the CSRF token is made from.
    #[serde(rename = "n")]
    pub nonce: String,
}

impl Session {
    pub fn new(token: Option<String>, user: String) -> Result<Self, String> {
        Ok(Self { token, user, expires: now_ms().saturating_add(LIFETIME_MS), nonce: random_token()? })
    }

    /// The session in the request's cookie, if it opens with `key` and has not expired.
    pub fn from_headers(key: &SecretKey, headers: &HeaderMap) -> Option<Session> {
        let sealed = cookie(headers, COOKIE)?;
        if sealed.len() > MAX_COOKIE {
            return None;
        }
        let plain = key.open(SEALED_FOR, sealed)?;
        let session: Session = serde_json::from_slice(&plain).ok()?;
        (now_ms() <= session.expires).then_some(session)
    }

    /// The `Set-Cookie` that starts this session.
    pub fn cookie(&self, key: &SecretKey) -> Result<HeaderValue, String> {
        let sealed = key.seal(SEALED_FOR, &serde_json::to_vec(self).map_err(|e| e.to_string())?)?;
        // Rounded up: a session made a millisecond ago still has its whole 8 hours.
        let max_age = self.expires.saturating_sub(now_ms()).div_ceil(1000);
        HeaderValue::from_str(&format!(
            "{COOKIE}={sealed}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}"
        ))
        .map_err(|e| e.to_string())
    }

    /// The `Set-Cookie` that ends it.
    pub fn end() -> HeaderValue {
        HeaderValue::from_static("__Host-postern-console=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
    }

    /// The token every form of this session carries.
    pub fn csrf(&self, key: &SecretKey) -> String {
        key.sign(&[CSRF_FOR, self.nonce.as_bytes()].concat())
    }

    pub fn csrf_ok(&self, key: &SecretKey, presented: &str) -> bool {
        same_bytes(self.csrf(key).as_bytes(), presented.as_bytes())
    }
}

/// The sign-in form's cookie: a nonce whose HMAC the form carries (double submit), so no
/// other site can sign a browser in with a token of its choosing.
pub const LOGIN_COOKIE: &str = "__Host-postern-login";
const LOGIN_FOR: &[u8] = b"postern console login v1\0";

/// A sign-in form's `Set-Cookie` and the token its form carries.
pub fn login_form(key: &SecretKey) -> Result<(HeaderValue, String), String> {
    let nonce = random_token()?;
    let cookie = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={nonce}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600"
    ))
    .map_err(|e| e.to_string())?;
    Ok((cookie, key.sign(&[LOGIN_FOR, nonce.as_bytes()].concat())))
}

/// Whether a sign-in POST carries the token of the form its browser was given.
pub fn login_csrf_ok(key: &SecretKey, headers: &HeaderMap, presented: &str) -> bool {
    cookie(headers, LOGIN_COOKIE).is_some_and(|nonce| {
        same_bytes(key.sign(&[LOGIN_FOR, nonce.as_bytes()].concat()).as_bytes(), presented.as_bytes())
    })
}

/// The value of the cookie `name`.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, cookie.parse().unwrap());
        h
    }

    #[test]
    fn a_session_opens_from_its_cookie_only_with_its_key() {
        let key = SecretKey::new(&[5; 32]);
        let session = Session::new(Some("tok".into()), "alice".into()).unwrap();
        let set = session.cookie(&key).unwrap();
        let set = set.to_str().unwrap();
        for attribute in ["; Path=/", "; Secure", "; HttpOnly", "; SameSite=Lax", "; Max-Age=28800"] {
            assert!(set.contains(attribute), "{set}");
        }
        let pair = set.split(';').next().unwrap();
        let found = Session::from_headers(&key, &headers(&format!("theme=dark; {pair}"))).unwrap();
        assert_eq!(found, session);
        assert_eq!(Session::from_headers(&SecretKey::new(&[6; 32]), &headers(pair)), None);
        assert_eq!(Session::from_headers(&key, &headers("__Host-postern-console=garbage")), None);
        let mut old = session.clone();
        old.expires = 1;
        let old = old.cookie(&key).unwrap();
        assert_eq!(
            Session::from_headers(&key, &headers(old.to_str().unwrap().split(';').next().unwrap())),
            None
        );
    }

    #[test]
    fn a_sign_in_needs_the_form_its_browser_was_given() {
        let key = SecretKey::new(&[5; 32]);
        let (set, csrf) = login_form(&key).unwrap();
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_string();
        assert!(set.to_str().unwrap().contains("SameSite=Strict"));
        assert!(login_csrf_ok(&key, &headers(&pair), &csrf));
        let (_, other) = login_form(&key).unwrap();
        assert!(!login_csrf_ok(&key, &headers(&pair), &other), "another browser's form");
        assert!(!login_csrf_ok(&key, &HeaderMap::new(), &csrf), "no cookie");
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let key = SecretKey::new(&[5; 32]);
        let a = Session::new(None, "a".into()).unwrap();
        let b = Session::new(None, "a".into()).unwrap();
        assert!(a.csrf_ok(&key, &a.csrf(&key)));
        assert!(!a.csrf_ok(&key, &b.csrf(&key)));
        assert!(!a.csrf_ok(&key, ""));
    }
}
