//! OAuth 2.0 grants of the Microsoft365 and Gmail sending accounts (RFC 6749, PKCE RFC 7636):
//! the consent link (authorization code with S256), the code's exchange at the callback, and
//! access tokens for the mail APIs, refreshed before they expire.
//!
//! Everything lives in the store, shared by every gateway: `oauth/pending/<state>` (the
//! account and PKCE verifier of a consent in progress, single use), `oauth/grant/<account>`
//! (the tokens, sealed with AES-256-GCM under `oauth.tokenKeyFile`, the account's name as
//! associated data, beside a plain status: authorized, or why not), `oauth/refresh/<account>`
//! (a 30-second lock: one gateway refreshes at a time; the others wait for its result). Each
//! gateway keeps the current access token in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use postern_api::admin::AccountAuthorization;
use postern_api::{OAuthGrant, SendingAccount};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::config::ConfigSnapshot;
use crate::store::Store;
use crate::util::secrets::{is_token, random_token};
use crate::util::time::{now_ms, rfc5322};

/// A consent link works this long.
const PENDING_FOR_MS: u64 = 15 * 60 * 1000;
/// How long one gateway may hold the refresh lock.
const REFRESH_LOCK_MS: u64 = 30_000;
/// Token endpoint calls give up after this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why no access token could be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// No grant yet, or it was revoked or expired: someone must authorize again.
    NotAuthorized(String),
    /// The provider or the store could not be asked now.
    Temporary(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::NotAuthorized(s) | TokenError::Temporary(s) => f.write_str(s),
        }
    }
}

/// A consent in progress.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    account: String,
    verifier: String,
    created_at: u64,
    used: bool,
}

/// The tokens, sealed in the store.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tokens {
    /// None for app-only (client credentials) tokens, which are never refreshed.
    #[serde(default)]
    refresh_token: Option<String>,
    access_token: String,
    /// ms since the epoch.
    expires_at: u64,
    /// How long the provider made the last access token valid (ms).
    lifetime: u64,
}

/// What the store keeps per account: the sealed tokens and a plain status.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Grant {
    authorized: bool,
    /// A condition reason: `Authorized`, `GrantRevoked`, `ConsentDenied`.
    reason: String,
    detail: String,
    at: u64,
    /// base64 of nonce || ciphertext; empty when there are no tokens.
    #[serde(default)]
    sealed: String,
}

/// The token endpoint's answer (RFC 6749 5.1) or error (5.2).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
    error: Option<String>,
    error_description: Option<String>,
}

/// RFC 7636 4.2: BASE64URL(SHA256(verifier)).
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()))
}

/// The callback's address at the admin port.
pub fn redirect_uri(cfg: &ConfigSnapshot) -> Option<String> {
    cfg.config.admin.public_url.as_deref().map(|u| format!("{}/oauth/callback", u.trim_end_matches('/')))
}

fn read_key(cfg: &ConfigSnapshot) -> Result<LessSafeKey, String> {
    let file = cfg.config.oauth.token_key_file.as_ref().ok_or("oauth.tokenKeyFile is not set")?;
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("oauth.tokenKeyFile {}: {e}", file.display()))?;
    let key = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("oauth.tokenKeyFile {}: not base64: {e}", file.display()))?;
    let key = UnboundKey::new(&AES_256_GCM, &key)
        .map_err(|_| format!("oauth.tokenKeyFile {}: not 32 bytes", file.display()))?;
    Ok(LessSafeKey::new(key))
}

fn seal(cfg: &ConfigSnapshot, account: &str, tokens: &Tokens) -> Result<String, String> {
    let key = read_key(cfg)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| "no randomness".to_string())?;
    let mut data = serde_json::to_vec(tokens).map_err(|e| e.to_string())?;
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(account.as_bytes()),
        &mut data,
    )
    .map_err(|_| "cannot seal the tokens".to_string())?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Ok(STANDARD.encode(out))
}

fn open(cfg: &ConfigSnapshot, account: &str, sealed: &str) -> Result<Tokens, String> {
    let key = read_key(cfg)?;
    let raw = STANDARD.decode(sealed).map_err(|e| e.to_string())?;
    if raw.len() < NONCE_LEN {
        return Err("sealed tokens too short".into());
    }
    let (nonce, rest) = raw.split_at(NONCE_LEN);
    let mut data = rest.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
    let plain = key
        .open_in_place(nonce, Aad::from(account.as_bytes()), &mut data)
        .map_err(|_| "the tokens do not open with oauth.tokenKeyFile (another key?)".to_string())?;
    serde_json::from_slice(plain).map_err(|e| e.to_string())
}

/// The grants of every OAuth account. Needs the store and HTTPS to the token endpoints.
pub struct OAuthTokens {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    /// account -> (access token, ms it stops being used).
    cache: Mutex<HashMap<String, (String, u64)>>,
    /// One refresh at a time in this gateway (the store's lock covers the others).
    refreshing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// App-only (client credentials) accounts: how this gateway's last token request went.
    app_status: Mutex<HashMap<String, AccountAuthorization>>,
}

impl OAuthTokens {
    pub fn new(store: Arc<dyn Store>, tls: rustls::ClientConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            store,
            http,
            cache: Mutex::default(),
            refreshing: Mutex::default(),
            app_status: Mutex::default(),
        })
    }

    /// The HTTPS client (the mail APIs use it too).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn grant_key(account: &str) -> String {
        format!("oauth/grant/{account}")
    }

    async fn load_grant(&self, account: &str) -> Result<Option<(Vec<u8>, Grant)>, String> {
        let raw = self.store.state_get(&Self::grant_key(account)).await.map_err(|e| e.to_string())?;
        Ok(raw.and_then(|r| serde_json::from_slice(&r).ok().map(|g| (r, g))))
    }

    async fn save_grant(&self, account: &str, old: Option<Vec<u8>>, grant: &Grant) -> Result<bool, String> {
        let raw = serde_json::to_vec(grant).map_err(|e| e.to_string())?;
        self.store.state_swap(&Self::grant_key(account), old, raw).await.map_err(|e| e.to_string())
    }

    /// Starts a consent: the provider's authorization URL for `account` (PKCE S256, a state
    /// of 256 random bits kept 15 minutes, single use).
    pub async fn authorize_url(
        &self,
        cfg: &ConfigSnapshot,
        account: &SendingAccount,
    ) -> Result<String, String> {
        let oauth = account.oauth.as_ref().ok_or("not an OAuth account")?;
        let e = oauth.endpoints(account.kind);
        let redirect = redirect_uri(cfg).ok_or("admin.publicUrl is not set")?;
        let state = random_token()?;
        let verifier = random_token()?;
        let pending = Pending {
            account: account.name.clone(),
            verifier: verifier.clone(),
            created_at: now_ms(),
            used: false,
        };
        let raw = serde_json::to_vec(&pending).map_err(|e| e.to_string())?;
        self.store.state_put(&format!("oauth/pending/{state}"), raw).await.map_err(|e| e.to_string())?;
        let mut url = url::Url::parse(&e.authorization_url).map_err(|e| format!("authorizationUrl: {e}"))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &oauth.client_id)
            .append_pair("redirect_uri", &redirect)
            .append_pair("scope", &e.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("code_challenge", &s256(&verifier))
            .append_pair("code_challenge_method", "S256")
            // A refresh token every time (Google gives one only with consent and offline).
            .append_pair("prompt", "consent");
        if account.kind == postern_api::AccountType::Gmail {
            url.query_pairs_mut().append_pair("access_type", "offline");
        }
        Ok(url.to_string())
    }

    /// The callback: the provider sent the person back with `code` (or `error`) for `state`.
    /// Returns the account's name and what happened.
    pub async fn callback(
        &self,
        cfg: &ConfigSnapshot,
        state: &str,
        code: Option<&str>,
        error: Option<&str>,
    ) -> Result<(String, AccountAuthorization), String> {
        // All three come from a browser: a state of another shape is no consent of ours, and
        // a code or error is bounded before it goes anywhere.
        if !is_token(state) {
            return Err("unknown or used consent".into());
        }
        if code.is_some_and(|c| c.len() > 4096) {
            return Err("the provider's code is too long".into());
        }
        let error = error.map(|e| e.chars().take(200).collect::<String>());
        let key = format!("oauth/pending/{state}");
        let old =
            self.store.state_get(&key).await.map_err(|e| e.to_string())?.ok_or("unknown or used consent")?;
        let mut pending: Pending = serde_json::from_slice(&old).map_err(|e| e.to_string())?;
        if pending.used || now_ms().saturating_sub(pending.created_at) > PENDING_FOR_MS {
            return Err("this consent was used or has expired: start again".into());
        }
        pending.used = true;
        let used = serde_json::to_vec(&pending).map_err(|e| e.to_string())?;
        if !self.store.state_swap(&key, Some(old), used).await.map_err(|e| e.to_string())? {
            return Err("this consent was used: start again".into());
        }
        let account = cfg
            .sending_account(&pending.account)
            .filter(|a| a.oauth.is_some())
            .ok_or_else(|| format!("account {} is gone", pending.account))?;
        let name = account.name.clone();
        let grant = match (code, error.as_deref()) {
            (Some(code), None) => {
                let redirect = redirect_uri(cfg).ok_or("admin.publicUrl is not set")?;
                let form = vec![
                    ("grant_type", "authorization_code".to_string()),
                    ("code", code.to_string()),
                    ("redirect_uri", redirect),
                    ("code_verifier", pending.verifier.clone()),
                ];
                let tokens = self.token_call(account, form).await.map_err(|e| e.to_string())?;
                if tokens.refresh_token.is_none() {
                    return Err("the provider issued no refresh token (was offline access granted?)".into());
                }
                Grant {
                    authorized: true,
                    reason: "Authorized".into(),
                    detail: format!("authorized {}", rfc5322(now_ms())),
                    at: now_ms(),
                    sealed: seal(cfg, &name, &tokens)?,
                }
            }
            (_, e) => Grant {
                authorized: false,
                reason: "ConsentDenied".into(),
                detail: format!("the provider answered {}", e.unwrap_or("without a code").escape_debug()),
                at: now_ms(),
                sealed: String::new(),
            },
        };
        let old = self.load_grant(&name).await?.map(|(raw, _)| raw);
        self.save_grant(&name, old, &grant).await?;
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
        tracing::info!(account = %name, authorized = grant.authorized, reason = %grant.reason, "sending account authorization");
        Ok((
            name,
            AccountAuthorization { authorized: grant.authorized, reason: grant.reason, detail: grant.detail },
        ))
    }

    /// Calls the token endpoint with `form` (plus the client's credentials).
    async fn token_call(
        &self,
        account: &SendingAccount,
        mut form: Vec<(&str, String)>,
    ) -> Result<Tokens, TokenError> {
        let oauth =
            account.oauth.as_ref().ok_or_else(|| TokenError::NotAuthorized("not an OAuth account".into()))?;
        form.push(("client_id", oauth.client_id.clone()));
        if let Some(file) = &oauth.client_secret_file {
            let secret = std::fs::read_to_string(file)
                .map_err(|e| TokenError::Temporary(format!("clientSecretFile {}: {e}", file.display())))?;
            form.push(("client_secret", secret.trim_end_matches(['\r', '\n']).to_string()));
        }
        let url = oauth.endpoints(account.kind).token_url;
        let response = self
            .http
            .post(&url)
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::Temporary(format!("token endpoint {url}: {e}")))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| TokenError::Temporary(e.to_string()))?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            TokenError::Temporary(format!("token endpoint {url}: HTTP {status}, not a token answer"))
        })?;
        if let Some(error) = answer.error {
            let text = format!(
                "token endpoint: {}{}",
                error.escape_debug(),
                answer.error_description.map(|d| format!(" ({})", d.escape_debug())).unwrap_or_default()
            );
            // RFC 6749 5.2: the grant is bad (revoked, expired) or the client is.
            return Err(match error.as_str() {
                "invalid_grant" | "invalid_client" | "unauthorized_client" => TokenError::NotAuthorized(text),
                _ => TokenError::Temporary(text),
            });
        }
        let Some(access_token) = answer.access_token.filter(|_| status.is_success()) else {
            return Err(TokenError::Temporary(format!("token endpoint {url}: HTTP {status}")));
        };
        let lifetime = answer.expires_in.unwrap_or(3600).saturating_mul(1000);
        Ok(Tokens {
            refresh_token: answer.refresh_token,
            access_token,
            expires_at: now_ms().saturating_add(lifetime),
            lifetime,
        })
    }

    /// The moment a token of `t` is refreshed: five minutes before it expires, or at four
    /// fifths of its life when that is shorter.
    fn refresh_at(t: &Tokens) -> u64 {
        t.expires_at.saturating_sub((t.lifetime / 5).min(300_000))
    }

    /// An access token for `account`: this gateway's, the store's, or a fresh one.
    pub async fn access_token(
        &self,
        cfg: &ConfigSnapshot,
        account: &SendingAccount,
    ) -> Result<String, TokenError> {
        if let Some((token, until)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&account.name)
            && *until > now_ms()
        {
            return Ok(token.clone());
        }
        self.refresh(cfg, account, false).await
    }

    /// Forgets this gateway's access token of `account` (the API refused it).
    pub fn forget(&self, account: &str) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(account);
    }

    /// Reads the grant and refreshes its access token when due (or `force`), one gateway at a
    /// time; returns the current access token.
    pub async fn refresh(
        &self,
        cfg: &ConfigSnapshot,
        account: &SendingAccount,
        force: bool,
    ) -> Result<String, TokenError> {
        let name = &account.name;
        // One refresh of this account at a time in this gateway (the store's lock covers the
        // others); other accounts are not held up.
        let lock = self
            .refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.clone())
            .or_default()
            .clone();
        let _one = lock.lock().await;
        if account.oauth.as_ref().is_some_and(|o| o.grant == OAuthGrant::ClientCredentials) {
            return self.app_token(account).await;
        }
        let temp = |e: String| TokenError::Temporary(e);
        for _ in 0..100 {
            let Some((raw, grant)) = self.load_grant(name).await.map_err(temp)? else {
                return Err(TokenError::NotAuthorized(format!(
                    "account {name} is not authorized yet: run `postern-gateway accounts authorize {name}`"
                )));
            };
            if !grant.authorized {
                return Err(TokenError::NotAuthorized(format!(
                    "account {name}: {} ({}): authorize it again",
                    grant.detail, grant.reason
                )));
            }
            let tokens = open(cfg, name, &grant.sealed).map_err(temp)?;
            let now = now_ms();
            if !force && Self::refresh_at(&tokens) > now {
                self.remember(name, &tokens);
                return Ok(tokens.access_token);
            }
            if !self.lock(name, now).await.map_err(temp)? {
                // Another gateway refreshes: its result will be in the store shortly.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let Some(refresh_token) = tokens.refresh_token.clone() else {
                self.unlock(name).await;
                return Err(TokenError::NotAuthorized(format!(
                    "account {name}: no refresh token: authorize it again"
                )));
            };
            let form =
                vec![("grant_type", "refresh_token".to_string()), ("refresh_token", refresh_token.clone())];
            let result = self.token_call(account, form).await;
            let outcome = match result {
                Ok(mut new) => {
                    // A provider that does not rotate refresh tokens sends none: keep ours.
                    new.refresh_token = new.refresh_token.or(Some(refresh_token));
                    let grant = Grant { sealed: seal(cfg, name, &new).map_err(temp)?, at: now_ms(), ..grant };
                    self.save_grant(name, Some(raw), &grant).await.map_err(temp)?;
                    self.remember(name, &new);
                    tracing::info!(account = %name, valid_until = %rfc5322(new.expires_at), "sending account token refreshed");
                    Ok(new.access_token)
                }
                Err(TokenError::NotAuthorized(why)) => {
                    let grant = Grant {
                        authorized: false,
                        reason: "GrantRevoked".into(),
                        detail: format!("{why} at {}", rfc5322(now_ms())),
                        at: now_ms(),
                        sealed: String::new(),
                    };
                    self.save_grant(name, Some(raw), &grant).await.map_err(temp)?;
                    self.forget(name);
                    tracing::warn!(account = %name, error = %why, "sending account grant revoked or expired: authorize it again");
                    Err(TokenError::NotAuthorized(format!("account {name}: {why}: authorize it again")))
                }
                Err(e) => Err(e),
            };
            self.unlock(name).await;
            return outcome;
        }
        Err(TokenError::Temporary(format!("account {name}: another gateway's token refresh did not finish")))
    }

    /// An app-only token (client credentials, RFC 6749 4.4): each gateway asks for its own; no
    /// refresh token, no store.
    async fn app_token(&self, account: &SendingAccount) -> Result<String, TokenError> {
        let scopes =
            account.oauth.as_ref().map(|o| o.endpoints(account.kind).scopes.join(" ")).unwrap_or_default();
        let form = vec![("grant_type", "client_credentials".to_string()), ("scope", scopes)];
        let result = self.token_call(account, form).await;
        let status = match &result {
            Ok(t) => {
                self.remember(&account.name, t);
                AccountAuthorization {
                    authorized: true,
                    reason: "Authorized".into(),
                    detail: format!(
                        "app-only token (client credentials) valid until {}",
                        rfc5322(t.expires_at)
                    ),
                }
            }
            Err(TokenError::NotAuthorized(why)) => {
                AccountAuthorization { authorized: false, reason: "GrantRevoked".into(), detail: why.clone() }
            }
            Err(TokenError::Temporary(why)) => {
                AccountAuthorization { authorized: false, reason: "NotReported".into(), detail: why.clone() }
            }
        };
        self.app_status.lock().unwrap_or_else(|p| p.into_inner()).insert(account.name.clone(), status);
        result.map(|t| t.access_token)
    }

    fn remember(&self, account: &str, t: &Tokens) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.into(), (t.access_token.clone(), Self::refresh_at(t)));
    }

    /// Takes the store's refresh lock of `account` unless another gateway holds it.
    async fn lock(&self, account: &str, now: u64) -> Result<bool, String> {
        let key = format!("oauth/refresh/{account}");
        let old = self.store.state_get(&key).await.map_err(|e| e.to_string())?;
        let held_until =
            old.as_deref().and_then(|r| std::str::from_utf8(r).ok()?.parse::<u64>().ok()).unwrap_or(0);
        if held_until > now {
            return Ok(false);
        }
        let until = now.saturating_add(REFRESH_LOCK_MS).to_string().into_bytes();
        self.store.state_swap(&key, old, until).await.map_err(|e| e.to_string())
    }

    async fn unlock(&self, account: &str) {
        let _ = self.store.state_put(&format!("oauth/refresh/{account}"), b"0".to_vec()).await;
    }

    /// Where `account`'s grant stands, for the admin API and the operator's `Authorized`.
    pub async fn authorization(&self, a: &SendingAccount) -> AccountAuthorization {
        let account = a.name.as_str();
        if a.oauth.as_ref().is_some_and(|o| o.grant == OAuthGrant::ClientCredentials) {
            let known = self.app_status.lock().unwrap_or_else(|p| p.into_inner()).get(account).cloned();
            return known.unwrap_or_else(|| AccountAuthorization {
                authorized: false,
                reason: "NotAuthorized".into(),
                detail: "app-only (client credentials): no token requested yet on this gateway; `accounts test` asks for one".into(),
            });
        }
        match self.load_grant(account).await {
            Ok(Some((_, g))) => {
                AccountAuthorization { authorized: g.authorized, reason: g.reason, detail: g.detail }
            }
            Ok(None) => AccountAuthorization {
                authorized: false,
                reason: "NotAuthorized".into(),
                detail: format!("no grant yet: run `postern-gateway accounts authorize {account}`"),
            },
            Err(e) => AccountAuthorization {
                authorized: false,
                reason: "NotReported".into(),
                detail: format!("the store cannot be read: {e}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_rfc_7636s() {
        // RFC 7636 Appendix B.
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn tokens_are_refreshed_before_they_expire() {
        let t = |lifetime| Tokens {
            refresh_token: None,
            access_token: String::new(),
            expires_at: 10_000_000,
            lifetime,
        };
        assert_eq!(
            OAuthTokens::refresh_at(&t(3_600_000)),
            10_000_000 - 300_000,
            "an hour: five minutes before"
        );
        assert_eq!(OAuthTokens::refresh_at(&t(5_000)), 10_000_000 - 1_000, "five seconds: one before");
    }
}
