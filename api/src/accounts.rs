//! Sending accounts: mail that trusted networks or authenticated users submit leaves *as the
//! user or mailbox it belongs to*, through that account's provider, instead of by MX or the
//! outbound gateway. An account matches on the envelope sender (which wins over the header
//! From: it is what the submitter was allowed to use, `auth.restrictSenders` ties the two
//! together for users), an exact address before an `@domain` account.
//!
//! Built so far: `Smtp` (a provider's submission server: STARTTLS on 587, implicit TLS on 465,
//! or plain on a private network, with AUTH), `Direct` (our own delivery, DKIM-signed, once
//! verified), and `Microsoft365` / `Gmail` (the provider's mail API with an OAuth 2.0 grant
//! the mailbox's owner gave; the mail shows in the mailbox's sent items), and `Exchange` (an
//! on-premises server's EWS with the mailbox's login).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One sending account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendingAccount {
    /// A short name for logs and metrics (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Whose mail: an address (`alice@example.com`) or a whole domain (`@example.com`).
    pub from: String,
    /// The name recipients see, set on the From header when the sender gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// An address that receives a copy of every mail sent through the account (one more
    /// envelope recipient; no header names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bcc: Option<String>,
    /// How the account sends.
    #[serde(rename = "type")]
    pub kind: AccountType,
    /// With `type: Smtp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpAccount>,
    /// With `type: Direct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<DirectAccount>,
    /// With `type: Microsoft365` or `Gmail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthAccount>,
    /// With `type: Exchange`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeAccount>,
}

/// An on-premises Exchange server's EWS endpoint and the mailbox's login there (HTTP Basic
/// over TLS; NTLM and Kerberos are not built). The message is sent with `CreateItem`
/// (`SendAndSaveCopy`, so it shows in the mailbox's Sent Items).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExchangeAccount {
    /// The EWS URL, e.g. `https://mail.example.com/ews/exchange.asmx`.
    pub url: String,
    /// The login in `user@domain` form.
    pub username: String,
    /// File holding the password (a mounted Secret; trailing newline ignored).
    pub password_file: PathBuf,
}

/// The OAuth 2.0 app (client) an account's grant belongs to, and the provider's endpoints.
/// The mailbox's owner grants it once (`accounts authorize NAME`: authorization code with
/// PKCE); the gateways keep the refresh token, encrypted, in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OAuthAccount {
    /// The app's client id (Microsoft Entra "Application (client) ID"; Google "Client ID").
    pub client_id: String,
    /// File holding the client secret (a mounted Secret; trailing newline ignored). Without
    /// it the app is a public client (PKCE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Microsoft365: the directory (tenant) id or domain. Default `organizations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The authorization endpoint (default: the provider's; set for sovereign clouds or tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
    /// The token endpoint (default: the provider's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// The mail API's base URL (default `https://graph.microsoft.com` or
    /// `https://gmail.googleapis.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The scopes asked for (default: Microsoft365 `offline_access
    /// https://graph.microsoft.com/Mail.Send`, or `https://graph.microsoft.com/.default` with
    /// client credentials; Gmail `https://www.googleapis.com/auth/gmail.send`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// `AuthorizationCode` (default: the mailbox's owner consents once) or, Microsoft365 only,
    /// `ClientCredentials` (app-only: the app's own `Mail.Send` application permission, no
    /// consent step; mail goes out as the envelope sender's mailbox through
    /// `/users/{sender}/sendMail`).
    #[serde(default)]
    pub grant: OAuthGrant,
    /// `Api` (default: Graph or the Gmail API) or `Smtp` (the provider's submission server
    /// with SMTP AUTH XOAUTH2 and the same token; the token needs the SMTP scope, e.g.
    /// `https://outlook.office.com/SMTP.Send` or `https://mail.google.com/`).
    #[serde(default)]
    pub send: OAuthSend,
    /// With `send: Smtp`: the server, `host:port` (default `smtp.office365.com:587` or
    /// `smtp.gmail.com:587`), always STARTTLS with a verified certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_host: Option<String>,
    /// With `send: Smtp`: the mailbox XOAUTH2 names (default: the account's `from` address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_username: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OAuthSend {
    #[default]
    Api,
    Smtp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OAuthGrant {
    #[default]
    AuthorizationCode,
    ClientCredentials,
}

impl OAuthAccount {
    /// With `send: Smtp`: the submission server, `host:port`.
    pub fn smtp_server(&self, kind: AccountType) -> String {
        self.smtp_host.clone().unwrap_or_else(|| match kind {
            AccountType::Gmail => "smtp.gmail.com:587".into(),
            _ => "smtp.office365.com:587".into(),
        })
    }

    /// The authorization and token endpoints, the API base and the scopes for `kind`.
    pub fn endpoints(&self, kind: AccountType) -> OAuthEndpoints {
        let tenant = self.tenant.as_deref().unwrap_or("organizations");
        let (authorize, token, api, scopes): (String, String, &str, &[&str]) = match kind {
            AccountType::Gmail => (
                "https://accounts.google.com/o/oauth2/v2/auth".into(),
                "https://oauth2.googleapis.com/token".into(),
                "https://gmail.googleapis.com",
                &["https://www.googleapis.com/auth/gmail.send"],
            ),
            _ => (
                format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"),
                format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
                "https://graph.microsoft.com",
                match self.grant {
                    OAuthGrant::AuthorizationCode => {
                        &["offline_access", "https://graph.microsoft.com/Mail.Send"]
                    }
                    OAuthGrant::ClientCredentials => &["https://graph.microsoft.com/.default"],
                },
            ),
        };
        OAuthEndpoints {
            authorization_url: self.authorization_url.clone().unwrap_or(authorize),
            token_url: self.token_url.clone().unwrap_or(token),
            api_url: self.api_url.clone().unwrap_or_else(|| api.into()).trim_end_matches('/').to_string(),
            scopes: match self.scopes.is_empty() {
                true => scopes.iter().map(|s| s.to_string()).collect(),
                false => self.scopes.clone(),
            },
        }
    }
}

/// Where an OAuth account's grant and mail go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthEndpoints {
    pub authorization_url: String,
    pub token_url: String,
    pub api_url: String,
    pub scopes: Vec<String>,
}

/// Postern delivers the account's mail itself (MX), DKIM-signed (RFC 6376) for the sender's
/// domain. Usable only once verified: the domain publishes the key at
/// `<selector>._domainkey.<domain>` (checked in DNS); until then its mail is refused at
/// submission (550 5.7.1 sender not verified).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DirectAccount {
    /// The DKIM selector (`s=`).
    pub selector: String,
    /// The private key, PEM (PKCS#8, or PKCS#1 for RSA); re-read when it changes.
    pub private_key_file: PathBuf,
    /// RsaSha256 (RSA-2048 or larger) or Ed25519Sha256.
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DkimAlgorithm {
    #[default]
    RsaSha256,
    Ed25519Sha256,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AccountType {
    /// The provider's SMTP submission server, with the account's login.
    #[default]
    Smtp,
    /// Postern delivers itself (MX), DKIM-signed, once the sender's domain is verified.
    Direct,
    /// Microsoft Graph `sendMail` (the MIME message) with an OAuth 2.0 grant.
    Microsoft365,
    /// The Gmail API `users.messages.send` (raw) with an OAuth 2.0 grant.
    Gmail,
    /// An on-premises Exchange server's EWS (`CreateItem`, `SendAndSaveCopy`).
    Exchange,
}

/// A provider's submission server and the account's login there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SmtpAccount {
    /// The server's name (its certificate must name it).
    pub host: String,
    /// Default: 587 with StartTls, 465 with Tls, 25 with None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// StartTls (usually on: without it a test mail may pass while real mail fails), Tls
    /// (implicit TLS from the first byte, port 465) or None (a relay on a private network;
    /// no login is sent without TLS).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The login (often the mailbox address). Without it, no AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the password (a mounted Secret; trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SmtpSecurity {
    #[default]
    StartTls,
    Tls,
    None,
}

impl SmtpAccount {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }
}

impl SendingAccount {
    /// Whether this account sends `sender`'s mail, and how closely: 2 for its exact address,
    /// 1 for its domain, 0 not at all.
    pub fn matches(&self, sender: &str) -> u8 {
        let Some((_, domain)) = sender.rsplit_once('@') else { return 0 };
        match self.from.strip_prefix('@') {
            Some(d) if d.eq_ignore_ascii_case(domain) => 1,
            Some(_) => 0,
            None if self.from.eq_ignore_ascii_case(sender) => 2,
            None => 0,
        }
    }
}

/// The account for `sender`: an exact address first, then the domain's (first listed wins).
pub fn account_for<'a>(accounts: &'a [SendingAccount], sender: &str) -> Option<&'a SendingAccount> {
    // One pass (every submitted message asks): the first account of the best match.
    let mut best: Option<(&SendingAccount, u8)> = None;
    for a in accounts {
        let m = a.matches(sender);
        if m > best.map_or(0, |(_, b)| b) {
            best = Some((a, m));
        }
    }
    best.map(|(a, _)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, from: &str) -> SendingAccount {
        SendingAccount {
            name: name.into(),
            from: from.into(),
            display_name: None,
            bcc: None,
            kind: AccountType::Smtp,
            smtp: None,
            direct: None,
            oauth: None,
            exchange: None,
        }
    }

    #[test]
    fn an_address_wins_over_its_domain_and_case_does_not_matter() {
        let accounts = [account("domain", "@Example.com"), account("alice", "alice@example.com")];
        assert_eq!(account_for(&accounts, "Alice@EXAMPLE.com").unwrap().name, "alice");
        assert_eq!(account_for(&accounts, "bob@example.com").unwrap().name, "domain");
        assert!(account_for(&accounts, "bob@other.example").is_none());
        assert!(account_for(&accounts, "").is_none(), "the null sender (bounces) has no account");
        assert!(account_for(&accounts, "alice@example.com.evil").is_none());
    }
}
