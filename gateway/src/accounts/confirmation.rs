//! Confirming a Direct account's single address (`from: alice@example.com`): before Postern
//! sends as that address, a mail to it carries a one-time link (the admin port's `/confirm`,
//! under `admin.publicUrl`) and a code (`postern-gateway accounts confirm NAME CODE`).
//! Whoever reads that mailbox confirms; until then the address's mail is refused (550 5.7.1).
//! (An `@domain` account is verified by its DKIM key in DNS instead: `signing`.)
//!
//! The state lives in the store under `account-confirmation/<address>`, shared by every pod:
//! the link token and the code only as SHA-256, when the mail was sent and when it expires,
//! how many wrong codes were tried, and when and by whom it was confirmed. One pod sends: the
//! one whose compare-and-swap writes the pending state. A confirmed address stays confirmed;
//! an expired request is sent again only when asked (`POST /api/v1/accounts/NAME/confirmation`).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use postern_api::SendingAccount;
use postern_api::admin::AccountVerification;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::config::ConfigSnapshot;
use crate::generated::notice;
use crate::routing;
use crate::store::{DeliveryPlan, Message, NewMessage, Recipient, Store};
use crate::util::secrets::{digest_hex, is_token, random_token, same_bytes};
use crate::util::time::{now_ms, rfc5322};

/// How long a link and its code stay valid.
const VALID_FOR_MS: u64 = 24 * 3600 * 1000;
/// Wrong codes tried before a request is spent (a new one must be sent).
const MAX_WRONG_CODES: u32 = 5;
/// How often the sender looks for addresses that have no request yet.
const TICK: Duration = Duration::from_secs(5);

fn key(address: &str) -> String {
    format!("account-confirmation/{}", address.to_ascii_lowercase())
}

/// A stored hex digest against a presented secret, in constant time.
fn matches(stored_hex: &str, secret: &str) -> bool {
    same_bytes(stored_hex.as_bytes(), digest_hex(secret.as_bytes()).as_bytes())
}

/// What the store keeps for one address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    address: String,
    account: String,
    token_sha256: String,
    code_sha256: String,
    sent_at: u64,
    expires_at: u64,
    #[serde(default)]
    wrong_codes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    confirmed_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    confirmed_by: Option<String>,
}

/// The answer to a confirmation attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    AlreadyConfirmed,
    /// No request was sent, or the token/code is not the one sent.
    Wrong,
    Expired,
    /// Too many wrong codes: a new request must be sent.
    Spent,
}

/// A new request: the secrets to mail, and what the store keeps of them.
struct Request {
    token: String,
    code: String,
    stored: Stored,
}

fn new_request(account: &str, address: &str, now: u64) -> Result<Request, String> {
    use ring::rand::SecureRandom;
    let token = random_token()?;
    let mut code = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut code).map_err(|_| "no randomness".to_string())?;
    let n = u64::from_le_bytes(code) % 100_000_000;
    let code = format!("{:04}-{:04}", n / 10_000, n % 10_000);
    let stored = Stored {
        address: address.to_ascii_lowercase(),
        account: account.into(),
        token_sha256: digest_hex(token.as_bytes()),
        code_sha256: digest_hex(normalize_code(&code).as_bytes()),
        sent_at: now,
        expires_at: now.saturating_add(VALID_FOR_MS),
        wrong_codes: 0,
        confirmed_at: None,
        confirmed_by: None,
    };
    Ok(Request { token, code, stored })
}

/// A code as typed: digits only (`1234-5678`, `1234 5678` and `12345678` are the same).
fn normalize_code(code: &str) -> String {
    code.chars().filter(char::is_ascii_digit).collect()
}

/// The confirmation states (a copy of the confirmed addresses for the MAIL FROM path) and the
/// task that sends requests. Needs only the store.
pub struct Confirmations {
    store: Arc<dyn Store>,
    /// The delivery loop's wake-up, for the request just queued.
    queued: Arc<Notify>,
    confirmed: RwLock<HashSet<String>>,
    wake: Notify,
}

impl Confirmations {
    pub fn new(store: Arc<dyn Store>, queued: Arc<Notify>) -> Self {
        Self { store, queued, confirmed: RwLock::default(), wake: Notify::new() }
    }

    async fn load(&self, address: &str) -> Result<Option<Stored>, String> {
        match self.store.state_get(&key(address)).await.map_err(|e| e.to_string())? {
            Some(raw) => Ok(serde_json::from_slice(&raw).ok()),
            None => Ok(None),
        }
    }

    /// Writes `new` if the stored state is still `old` (another pod may have moved it).
    async fn swap(&self, old: Option<&Stored>, new: &Stored) -> Result<bool, String> {
        let old = old.map(serde_json::to_vec).transpose().map_err(|e| e.to_string())?;
        let new_raw = serde_json::to_vec(new).map_err(|e| e.to_string())?;
        self.store.state_swap(&key(&new.address), old, new_raw).await.map_err(|e| e.to_string())
    }

    fn remember_confirmed(&self, address: &str) {
        self.confirmed.write().unwrap_or_else(|p| p.into_inner()).insert(address.to_ascii_lowercase());
    }

    /// Whether `address` is confirmed: from memory once it was (a confirmation is never
    /// withdrawn), else from the store.
    pub async fn is_confirmed(&self, address: &str) -> bool {
        if self.confirmed.read().unwrap_or_else(|p| p.into_inner()).contains(&address.to_ascii_lowercase()) {
            return true;
        }
        match self.load(address).await {
            Ok(Some(s)) if s.confirmed_at.is_some() => {
                self.remember_confirmed(address);
                true
            }
            _ => false,
        }
    }

    /// Where `address` stands, for the admin API and the operator's `Verified`.
    pub async fn verification(&self, address: &str) -> AccountVerification {
        let answer = |verified: bool, reason: &str, detail: String| AccountVerification {
            verified,
            reason: reason.into(),
            detail,
        };
        match self.load(address).await {
            Err(e) => answer(false, "NotReported", format!("the store cannot be read: {e}")),
            Ok(None) => {
                answer(false, "ConfirmationNotSent", format!("no confirmation request sent to {address} yet"))
            }
            Ok(Some(s)) => {
                match (s.confirmed_at, s.expires_at < now_ms(), s.wrong_codes >= MAX_WRONG_CODES) {
                    (Some(at), _, _) => answer(
                        true,
                        "AddressConfirmed",
                        format!(
                            "{address} confirmed {} by {}",
                            rfc5322(at),
                            s.confirmed_by.as_deref().unwrap_or("its mailbox")
                        ),
                    ),
                    (None, true, _) | (None, _, true) => answer(
                        false,
                        "ConfirmationExpired",
                        format!(
                            "the request sent to {address} {} expired or was spent: send a new one",
                            rfc5322(s.sent_at)
                        ),
                    ),
                    (None, false, false) => answer(
                        false,
                        "AwaitingConfirmation",
                        format!(
                            "a link and a code were mailed to {address} {}, valid until {}",
                            rfc5322(s.sent_at),
                            rfc5322(s.expires_at)
                        ),
                    ),
                }
            }
        }
    }

    /// Sends a request to `account`'s address unless one is pending (or, `again`, unless it
    /// is confirmed): true when this pod sent it.
    pub async fn request(
        &self,
        cfg: &ConfigSnapshot,
        account: &SendingAccount,
        again: bool,
    ) -> Result<bool, String> {
        let address = account.from.to_ascii_lowercase();
        let old = self.load(&address).await?;
        match &old {
            Some(s) if s.confirmed_at.is_some() => return Ok(false),
            Some(_) if !again => return Ok(false),
            _ => {}
        }
        let now = now_ms();
        let request = new_request(&account.name, &address, now)?;
        let message = self.message(cfg, account, &request)?;
        // Written first (only one pod wins), then queued: a crash in between leaves a request
        // that was never mailed, which `accounts confirmation NAME` sends again.
        if !self.swap(old.as_ref(), &request.stored).await? {
            return Ok(false);
        }
        self.store.enqueue(message).await.map_err(|e| e.to_string())?;
        self.queued.notify_one();
        tracing::info!(account = %account.name, address = %address.escape_debug(), "account address confirmation sent");
        Ok(true)
    }

    fn message(
        &self,
        cfg: &ConfigSnapshot,
        account: &SendingAccount,
        r: &Request,
    ) -> Result<NewMessage, String> {
        let address = &r.stored.address;
        let from = format!("postmaster@{}", cfg.hostname);
        let link = cfg.config.admin.public_url.as_deref().map(|base| {
            let mut url = url::Url::parse(base).expect("validated");
            url.set_path(&format!("{}/confirm", url.path().trim_end_matches('/')));
            url.query_pairs_mut().append_pair("address", address).append_pair("token", &r.token);
            url.to_string()
        });
        let mut text = format!(
            "The mail gateway {} was set up to send mail as {address} (sending account \"{}\").\r\n\r\n",
            cfg.hostname, account.name
        );
        if let Some(link) = &link {
            text.push_str(&format!(
                "If you set this up, open this link and press Confirm:\r\n\r\n  {link}\r\n\r\nor "
            ));
        } else {
            text.push_str("If you set this up, ");
        }
        text.push_str(&format!(
            "give your mail administrator this code:\r\n\r\n  {}\r\n\r\n(postern-gateway accounts confirm {} {})\r\n\r\nThe {} valid until {}. If you did not expect this message, ignore it:\r\nnothing is sent as {address} until it is confirmed.\r\n",
            r.code,
            account.name,
            r.code,
            if link.is_some() { "link and the code are" } else { "code is" },
            rfc5322(r.stored.expires_at),
        ));
        let subject = format!("Confirm that mail may be sent as {address}");
        let body = notice(&cfg.hostname, &from, address, subject, text);
        let next_hop = routing::next_hop_for_own_mail(cfg, address)
            .ok_or_else(|| format!("no route to {address} for its confirmation request"))?;
        let mut plan = DeliveryPlan::default();
        // Never bounced: a DSN about a notification helps nobody.
        plan.add(&next_hop, false, Recipient { address: address.clone(), original: address.clone() });
        let lifetime = cfg.delivery.lifetime.get().as_millis() as u64;
        Ok(NewMessage::new(Message::generated(from, body), plan, lifetime))
    }

    /// The link's answer: the token mailed to `address`, once, before it expires. Both come
    /// from a browser: only an address of `cfg`'s Direct accounts and a token of the right
    /// shape reach the store.
    pub async fn confirm_token(
        &self,
        cfg: &ConfigSnapshot,
        address: &str,
        token: &str,
    ) -> Result<Outcome, String> {
        let known =
            cfg.config.accounts.iter().any(|a| needs_confirmation(a) && a.from.eq_ignore_ascii_case(address));
        if !known || !is_token(token) {
            return Ok(Outcome::Wrong);
        }
        self.confirm(address, "its mailbox (link)", |s| matches(&s.token_sha256, token)).await
    }

    /// The code's answer (at most `MAX_WRONG_CODES` wrong ones per request), by `actor`.
    pub async fn confirm_code(&self, address: &str, code: &str, actor: &str) -> Result<Outcome, String> {
        // A code is 8 digits, however typed; anything much longer is not one (and still counts
        // as a wrong try).
        let code = if code.len() <= 32 { normalize_code(code) } else { String::new() };
        self.confirm(address, actor, |s| matches(&s.code_sha256, &code)).await
    }

    async fn confirm(
        &self,
        address: &str,
        by: &str,
        matches: impl Fn(&Stored) -> bool,
    ) -> Result<Outcome, String> {
        // A compare-and-swap loop: two pods confirming at once, or a wrong code counted while
        // the right one is confirmed, each see the other's write.
        for _ in 0..8 {
            let Some(old) = self.load(address).await? else { return Ok(Outcome::Wrong) };
            if old.confirmed_at.is_some() {
                self.remember_confirmed(address);
                return Ok(Outcome::AlreadyConfirmed);
            }
            if old.wrong_codes >= MAX_WRONG_CODES {
                return Ok(Outcome::Spent);
            }
            if old.expires_at < now_ms() {
                return Ok(Outcome::Expired);
            }
            let ok = matches(&old);
            let mut new = old.clone();
            if ok {
                new.confirmed_at = Some(now_ms());
                new.confirmed_by = Some(by.into());
            } else {
                new.wrong_codes += 1;
            }
            if self.swap(Some(&old), &new).await? {
                if !ok {
                    return Ok(Outcome::Wrong);
                }
                self.remember_confirmed(address);
                tracing::info!(address = %address.escape_debug(), by = %by.escape_debug(), account = %old.account, "account address confirmed");
                return Ok(Outcome::Confirmed);
            }
        }
        Err("the confirmation state kept changing; try again".into())
    }

    /// Looks for addresses without a request now (after a config change).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The sender task: every Direct account for a single address gets one request (the pod
    /// that writes it first sends it), under the config `current` returns, until `stop`.
    pub async fn run(
        self: Arc<Self>,
        current: impl Fn() -> Arc<ConfigSnapshot>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let cfg = current();
            for account in cfg.config.accounts.iter().filter(|a| needs_confirmation(a)) {
                if let Err(e) = self.request(&cfg, account, false).await {
                    tracing::warn!(account = %account.name, error = %e, "cannot send the account address confirmation");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// A Direct account for one address (not `@domain`) is confirmed by its mailbox.
pub fn needs_confirmation(account: &SendingAccount) -> bool {
    account.direct.is_some() && !account.from.starts_with('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_eight_digits_and_typed_forms_are_the_same() {
        let r = new_request("a", "Alice@Example.com", 1000).unwrap();
        assert_eq!(r.code.len(), 9, "{}", r.code);
        assert_eq!(normalize_code(&r.code).len(), 8);
        assert_eq!(r.stored.address, "alice@example.com");
        assert_eq!(r.stored.code_sha256, digest_hex(normalize_code(&r.code.replace('-', " ")).as_bytes()));
        assert_eq!(r.token.len(), 43, "256 bits, base64url");
        assert!(!serde_json::to_string(&r.stored).unwrap().contains(&r.token), "only the digest is kept");
        assert_eq!(r.stored.expires_at, 1000 + VALID_FOR_MS);
    }

    /// What a browser sends is checked before the store is asked: an address no account has,
    /// a token of another shape, a code far too long; the right request still confirms once.
    #[tokio::test]
    async fn hostile_answers_are_refused_before_the_store() {
        let text = "hostname: gw.test\nlisteners: [{address: '127.0.0.1:2525'}]\nrelay: {trustedNetworks: [127.0.0.1/32]}\ndomains: [{name: remote.test, primary: {hosts: ['h:25']}}]\naccounts:\n  - {name: app, from: app@remote.test, type: Direct, direct: {selector: s, privateKeyFile: /nonexistent}}\n";
        let cfg = ConfigSnapshot::new(postern_api::load_gateway_config(text).unwrap());
        let store = Arc::new(crate::store::memory::MemoryStore::default());
        let c = Confirmations::new(store.clone(), Arc::new(Notify::new()));
        assert!(c.request(&cfg, &cfg.config.accounts[0], false).await.unwrap(), "one request mailed");
        let raw = store.state_get(&key("app@remote.test")).await.unwrap().unwrap();
        let stored: Stored = serde_json::from_slice(&raw).unwrap();
        let long = "9".repeat(100_000);
        for (address, token) in [
            ("other@remote.test", random_token().unwrap()),
            ("app@remote.test", "../../x".to_string()),
            ("app@remote.test", long.clone()),
            (long.as_str(), random_token().unwrap()),
        ] {
            assert_eq!(c.confirm_token(&cfg, address, &token).await.unwrap(), Outcome::Wrong);
        }
        assert_eq!(c.confirm_code("app@remote.test", &long, "t").await.unwrap(), Outcome::Wrong);
        let after: Stored =
            serde_json::from_slice(&store.state_get(&key("app@remote.test")).await.unwrap().unwrap())
                .unwrap();
        assert_eq!(after.wrong_codes, 1, "the long code counts as one wrong try");
        assert_eq!(after.token_sha256, stored.token_sha256);
        assert!(!c.is_confirmed("app@remote.test").await);
    }

    #[test]
    fn digests_compare_whole() {
        let hex = digest_hex(b"12345678");
        assert!(matches(&hex, "12345678"));
        assert!(!matches(&hex, "12345679"));
        assert!(!matches(&hex[1..], "12345678"));
    }
}
