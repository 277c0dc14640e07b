//! Sending accounts at acceptance (`postern_api::accounts`): which account a submitted
//! message leaves through, its recipients there (everyone the client named, plus the account's
//! BCC), and the display name on a From header that has none. Delivery itself is the outbound
//! client's, over the account's next hop.

pub mod confirmation;

use mail_builder::headers::Header;
use mail_builder::headers::address::Address;
use mail_parser::{HeaderName, MessageParser};
use postern_api::accounts::account_for;
use postern_api::{AccountType, SendingAccount};

use crate::config::ConfigSnapshot;
use crate::dns::Dns;
use crate::routing::RoutedRecipient;
use crate::signing::Signing;
use crate::store::NextHop;

/// The account `sender`'s mail leaves through, with its next hop. Only for clients that may
/// send as anyone they claim within their rights: trusted networks and authenticated users
/// (whose senders `auth.restrictSenders` checked). The null sender never matches.
/// The next hop is the provider's server (Smtp), or `None` for a Direct account: its mail is
/// routed as ours always is (served domains to their destinations, the rest by MX or the
/// outbound gateway), DKIM-signed.
pub fn select<'a>(
    accounts: &'a [SendingAccount],
    sender: &str,
    submitted: bool,
) -> Option<(&'a SendingAccount, Option<NextHop>)> {
    if !submitted {
        return None;
    }
    let account = account_for(accounts, sender)?;
    match account.kind {
        AccountType::Smtp | AccountType::Microsoft365 | AccountType::Gmail | AccountType::Exchange => {
            Some((account, Some(NextHop::account(account)?)))
        }
        AccountType::Direct => Some((account, None)),
    }
}

/// When `account` is Direct and not verified yet (an `@domain` account: its domain does not
/// publish the key; an address: its mailbox has not confirmed): the text of the 550 that
/// refuses the mail (at MAIL FROM, and again at the end of DATA in case the config changed in
/// between).
pub async fn unverified(
    signing: &Signing,
    dns: &Dns,
    confirmations: &confirmation::Confirmations,
    account: &SendingAccount,
    sender: &str,
) -> Option<String> {
    let direct = account.direct.as_ref()?;
    if confirmation::needs_confirmation(account) {
        if confirmations.is_confirmed(&account.from).await {
            return None;
        }
        tracing::info!(account = %account.name, "direct sending account's address not confirmed");
        return Some(format!(
            "5.7.1 Sender not verified: {} must confirm the request mailed to it",
            account.from
        ));
    }
    let domain = crate::address::domain_of(sender).unwrap_or_default();
    let v = signing.verification(dns, direct, &domain, false).await;
    if v.verified {
        return None;
    }
    tracing::info!(account = %account.name, reason = %v.reason, detail = %v.detail, "direct sending account not verified");
    Some(format!(
        "5.7.1 Sender not verified: publish the DKIM key at {}._domainkey.{domain}",
        direct.selector
    ))
}

/// A Direct account's recipients: as routed, plus the BCC copy on the way our own mail to
/// that address goes.
pub fn direct_targets(
    routed: &[RoutedRecipient],
    account: &SendingAccount,
    cfg: &ConfigSnapshot,
) -> Vec<RoutedRecipient> {
    let mut out = routed.to_vec();
    if let Some(bcc) = &account.bcc
        && !out.iter().any(|t| t.address.eq_ignore_ascii_case(bcc))
        && let Some(next_hop) = crate::routing::next_hop_for_own_mail(cfg, bcc)
    {
        out.push(RoutedRecipient { next_hop, address: bcc.clone(), original: bcc.clone(), bounce: true });
    }
    out
}

/// Every recipient through the account's next hop, as the client addressed them (the
/// provider delivers, as it would for the user's own mail client), and the BCC copy, all in
/// one transaction: providers that keep sent mail keep it once. A BCC copy that fails bounces
/// like any recipient (the sender is the organisation's own user or application).
pub fn targets(recipients: &[String], account: &SendingAccount, hop: &NextHop) -> Vec<RoutedRecipient> {
    let to = |address: &str| RoutedRecipient {
        next_hop: hop.clone(),
        address: address.to_string(),
        original: address.to_string(),
        bounce: true,
    };
    let mut out: Vec<RoutedRecipient> = Vec::with_capacity(recipients.len() + 1);
    for r in recipients {
        if !out.iter().any(|t| t.address.eq_ignore_ascii_case(r)) {
            out.push(to(r));
        }
    }
    if let Some(bcc) = &account.bcc
        && !out.iter().any(|t| t.address.eq_ignore_ascii_case(bcc))
    {
        out.push(to(bcc));
    }
    out
}

/// `content` with `name` on its From header, when the message has exactly one From header
/// holding one address and no name; otherwise `None` (left as the sender wrote it). The name
/// is quoted or RFC 2047-encoded by mail-builder.
pub fn with_display_name(content: &[u8], name: &str) -> Option<Vec<u8>> {
    let message = MessageParser::new().parse_headers(content)?;
    let mut froms = message.headers().iter().filter(|h| h.name == HeaderName::From);
    let from = froms.next()?;
    if froms.next().is_some() {
        return None;
    }
    let addresses = from.value().as_address()?;
    let mut list = addresses.iter();
    let only = list.next()?;
    if list.next().is_some() || only.name().is_some_and(|n| !n.trim().is_empty()) {
        return None;
    }
    let address = only.address()?;
    let (start, end) = (from.offset_field() as usize, from.offset_end() as usize);
    let mut out = Vec::with_capacity(content.len() + name.len() + 8);
    out.extend_from_slice(content.get(..start)?);
    out.extend_from_slice(b"From: ");
    Address::new_address(Some(name), address).write_header(&mut out, "From: ".len());
    out.extend_from_slice(content.get(end..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_api::{AccountType, SmtpAccount, SmtpSecurity};

    fn account() -> SendingAccount {
        SendingAccount {
            name: "sales".into(),
            from: "@example.com".into(),
            display_name: Some("Example Sales".into()),
            bcc: Some("archive@example.com".into()),
            kind: AccountType::Smtp,
            smtp: Some(SmtpAccount {
                host: "smtp.provider.example".into(),
                port: None,
                security: SmtpSecurity::StartTls,
                username: Some("sales@example.com".into()),
                password_file: Some("/run/pw".into()),
            }),
            direct: None,
            oauth: None,
            exchange: None,
        }
    }

    #[test]
    fn only_submitted_mail_leaves_through_an_account() {
        let accounts = [account()];
        let (a, hop) = select(&accounts, "alice@example.com", true).unwrap();
        let hop = hop.unwrap();
        assert_eq!(a.name, "sales");
        assert_eq!(hop.key(), "account:sales");
        assert_eq!(hop.tls.mode, postern_api::TlsMode::Required);
        assert!(hop.tls.verify);
        assert!(select(&accounts, "alice@example.com", false).is_none(), "an outside client's mail");
        assert!(select(&accounts, "", true).is_none());
    }

    #[test]
    fn every_recipient_once_and_the_bcc_in_one_transaction() {
        let a = account();
        let hop = NextHop::account(&a).unwrap();
        let rcpts = ["a@x.example".to_string(), "A@x.example".into(), "b@example.com".into()];
        let t = targets(&rcpts, &a, &hop);
        let got: Vec<&str> = t.iter().map(|t| t.address.as_str()).collect();
        assert_eq!(got, ["a@x.example", "b@example.com", "archive@example.com"]);
        assert_eq!(crate::routing::plan(&t).jobs.len(), 1, "one transaction");
    }

    #[test]
    fn a_display_name_goes_on_a_from_without_one() {
        let plain = b"Subject: hi\r\nFrom: alice@example.com\r\nTo: b@x.example\r\n\r\nbody\r\n";
        let named = with_display_name(plain, "Alice \"A\" Example").unwrap();
        assert_eq!(
            String::from_utf8(named).unwrap(),
            "Subject: hi\r\nFrom: \"Alice \\\"A\\\" Example\" <alice@example.com>\r\nTo: b@x.example\r\n\r\nbody\r\n"
        );
        let encoded = String::from_utf8(with_display_name(plain, "Zoë").unwrap()).unwrap();
        assert!(encoded.contains("From: =?utf-8?"), "{encoded}");
        let parsed = MessageParser::new().parse(encoded.as_bytes()).unwrap();
        assert_eq!(parsed.from().unwrap().first().unwrap().name(), Some("Zoë"));
        // A name the sender chose, two addresses, two From headers, or none: left alone.
        assert!(with_display_name(b"From: Al <alice@example.com>\r\n\r\nx", "N").is_none());
        assert!(with_display_name(b"From: a@example.com, b@example.com\r\n\r\nx", "N").is_none());
        assert!(with_display_name(b"From: a@example.com\r\nFrom: b@example.com\r\n\r\nx", "N").is_none());
        assert!(with_display_name(b"Subject: none\r\n\r\nx", "N").is_none());
        // A folded From header is replaced whole.
        let folded = b"From:\r\n alice@example.com\r\nSubject: s\r\n\r\nx";
        let out = String::from_utf8(with_display_name(folded, "Alice").unwrap()).unwrap();
        assert_eq!(out, "From: \"Alice\" <alice@example.com>\r\nSubject: s\r\n\r\nx");
    }
}
