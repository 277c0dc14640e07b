//! Sending accounts: mail that trusted networks or authenticated users submit leaves *as the
//! user or mailbox it belongs to*, through that account's provider, instead of by MX or the
//! outbound gateway. An account matches on the envelope sender (which wins over the header
//! From: it is what the submitter was allowed to use, `auth.restrictSenders` ties the two
//! together for users), an exact address before an `@domain` account.
//!
//! Built so far: `Smtp` (a provider's submission server: STARTTLS on 587, implicit TLS on 465,
//! or plain on a private network, with AUTH) and `Direct` (our own delivery, DKIM-signed, once
//! the domain's key is in DNS). Microsoft365, Gmail and Exchange are not built yet.

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
