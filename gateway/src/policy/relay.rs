//! Relay control: never an open relay. For each recipient, the relay rules (black and white
//! lists) are read in order and the first that matches decides; with none matching, a recipient
//! in a served domain is acceptable from anyone, any other only from a trusted network or an
//! authenticated user. Also: the external postmaster (role addresses of served domains go to
//! one configured address).

use std::net::IpAddr;

use postern_api::{RelayAction, RelayRule};

use crate::config::ConfigSnapshot;

/// The client may not send to this recipient through us (answered 554 5.7.1).
#[derive(Debug, PartialEq, Eq)]
pub struct RelayDenied;

/// Who is sending, as far as relay rules look.
pub struct Client<'a> {
    pub ip: IpAddr,
    pub authenticated: bool,
    /// The HELO/EHLO name ("" before one).
    pub helo: &'a str,
    /// MAIL FROM ("" for the null sender).
    pub sender: &'a str,
}

/// What happens to one recipient.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayDecision<'c> {
    /// Accept it (and route it). `allowed_by`: an `Allow` rule matched, which also exempts the
    /// message from the sender policy.
    Accept { allowed_by: Option<&'c RelayRule> },
    /// Accept it with 250 and never deliver it.
    Discard(&'c RelayRule),
    /// Refuse it by a rule.
    Reject(&'c RelayRule),
    /// Refuse it: the domain is not ours and the client may not relay.
    Denied(RelayDenied),
}

/// The decision for `recipient` (whose domain, lower case, is `domain`).
pub fn decide<'c>(
    cfg: &'c ConfigSnapshot,
    client: &Client<'_>,
    recipient: &str,
    domain: &str,
) -> RelayDecision<'c> {
    let rule = cfg.relay.rules.iter().find(|r| matches(r, client, recipient, domain));
    match rule {
        Some(r) if r.action == RelayAction::Reject => return RelayDecision::Reject(r),
        Some(r) if r.action == RelayAction::Discard => return RelayDecision::Discard(r),
        _ => {}
    }
    // An Allow rule lets a client relay only when it names the client's network: a HELO name
    // or a sender address alone can be forged by anyone.
    let allowed_to_relay = rule.is_some_and(|r| !r.client_networks.is_empty());
    let ours = cfg.served_domain(domain).is_some();
    if ours || allowed_to_relay || client.authenticated || cfg.is_trusted(client.ip) {
        RelayDecision::Accept { allowed_by: rule }
    } else {
        RelayDecision::Denied(RelayDenied)
    }
}

/// An `Allow` rule that names no recipients matches the client: it is exempt from the sender
/// policy, which runs at MAIL FROM, before any recipient is known.
pub fn allows_sender(cfg: &ConfigSnapshot, client: &Client<'_>) -> bool {
    cfg.relay
        .rules
        .iter()
        .any(|r| r.action == RelayAction::Allow && r.recipients.is_empty() && matches(r, client, "", ""))
}

fn matches(rule: &RelayRule, client: &Client<'_>, recipient: &str, domain: &str) -> bool {
    let ip = crate::config::canonical_ip(client.ip);
    let network = rule.client_networks.is_empty() || rule.client_networks.iter().any(|n| n.contains(&ip));
    let helo = rule.helo_names.is_empty() || rule.helo_names.iter().any(|h| helo_matches(h, client.helo));
    let sender = rule.senders.is_empty() || rule.senders.iter().any(|s| sender_matches(s, client.sender));
    let rcpt =
        rule.recipients.is_empty() || rule.recipients.iter().any(|p| address_matches(p, recipient, domain));
    network && helo && sender && rcpt
}

/// "host.example.com" exactly, or ".example.com" for any name under it (case-insensitive).
fn helo_matches(pattern: &str, helo: &str) -> bool {
    let helo = helo.trim_end_matches('.');
    match pattern.strip_prefix('.') {
        Some(suffix) => helo.to_ascii_lowercase().ends_with(&format!(".{}", suffix.to_ascii_lowercase())),
        None => helo.eq_ignore_ascii_case(pattern),
    }
}

fn sender_matches(pattern: &str, sender: &str) -> bool {
    if pattern == "<>" {
        return sender.is_empty();
    }
    let domain = crate::address::domain_of(sender).unwrap_or_default();
    !sender.is_empty() && address_matches(pattern, sender, &domain)
}

/// "user@example.com" (case-insensitive) or "@example.com" (`domain` is lower case).
fn address_matches(pattern: &str, address: &str, domain: &str) -> bool {
    match pattern.strip_prefix('@') {
        Some(d) => d.eq_ignore_ascii_case(domain),
        None => pattern.eq_ignore_ascii_case(address),
    }
}

/// With `relay.externalPostmaster`, where mail to a role address of a served domain
/// (postmaster@, mailer-daemon@, and abuse@ when asked) goes instead; `None` for any other
/// address.
pub fn role_address_target(cfg: &ConfigSnapshot, address: &str) -> Option<String> {
    let external = cfg.relay.external_postmaster.as_ref()?;
    let (local, domain) = address.rsplit_once('@')?;
    let role = local.eq_ignore_ascii_case("postmaster")
        || local.eq_ignore_ascii_case("mailer-daemon")
        || (external.include_abuse && local.eq_ignore_ascii_case("abuse"));
    (role && cfg.served_domain(&domain.to_ascii_lowercase()).is_some()).then(|| external.address.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> ConfigSnapshot {
        let text = format!(
            "hostname: gw.test\nlisteners:\n  - address: 127.0.0.1:2525\ndomains:\n  - name: served.test\n    primary: {{hosts: ['127.0.0.1:25']}}\nrelay:\n  trustedNetworks: ['10.0.0.0/8']\n{extra}"
        );
        ConfigSnapshot::new(postern_api::load_gateway_config(&text).unwrap())
    }

    fn client<'a>(ip: &str, helo: &'a str, sender: &'a str) -> Client<'a> {
        Client { ip: ip.parse().unwrap(), authenticated: false, helo, sender }
    }

    fn action(d: &RelayDecision<'_>) -> &'static str {
        match d {
            RelayDecision::Accept { allowed_by: Some(_) } => "allowed",
            RelayDecision::Accept { allowed_by: None } => "accept",
            RelayDecision::Discard(_) => "discard",
            RelayDecision::Reject(_) => "reject",
            RelayDecision::Denied(_) => "denied",
        }
    }

    #[test]
    fn without_rules_only_served_domains_trusted_networks_and_users_pass() {
        let cfg = cfg("");
        let outside = client("192.0.2.1", "mx.example", "a@example.org");
        assert_eq!(action(&decide(&cfg, &outside, "x@served.test", "served.test")), "accept");
        assert_eq!(action(&decide(&cfg, &outside, "x@else.test", "else.test")), "denied");
        let trusted = client("10.1.2.3", "app", "a@served.test");
        assert_eq!(action(&decide(&cfg, &trusted, "x@else.test", "else.test")), "accept");
        let user = Client { authenticated: true, ..outside };
        assert_eq!(action(&decide(&cfg, &user, "x@else.test", "else.test")), "accept");
    }

    #[test]
    fn the_first_matching_rule_decides_and_every_criterion_must_match() {
        let cfg = cfg("  rules:
    - {action: Allow, senders: ['ceo@partner.test']}
    - {action: Reject, senders: ['@partner.test']}
    - {action: Discard, recipients: ['@served.test'], heloNames: ['.spam.test']}
    - {action: Allow, clientNetworks: ['198.51.100.0/24'], recipients: ['@else.test']}
    - {action: Reject, senders: ['<>'], recipients: ['noreply@served.test']}
");
        let from = |sender, helo| client("192.0.2.1", helo, sender);
        let served = |c: &Client<'_>| action(&decide(&cfg, c, "x@served.test", "served.test"));
        assert_eq!(served(&from("ceo@partner.test", "mx")), "allowed");
        assert_eq!(served(&from("cfo@PARTNER.test", "mx")), "reject");
        assert_eq!(served(&from("a@b.test", "box.SPAM.test")), "discard");
        assert_eq!(served(&from("a@b.test", "spam.test")), "accept", "suffix needs a label before it");
        // Allow by sender cannot open relaying; Allow by network can, for what it names.
        let ceo = from("ceo@partner.test", "mx");
        assert_eq!(action(&decide(&cfg, &ceo, "x@else.test", "else.test")), "denied");
        let partner_net = client("198.51.100.7", "mx", "a@b.test");
        assert_eq!(action(&decide(&cfg, &partner_net, "x@else.test", "else.test")), "allowed");
        assert_eq!(action(&decide(&cfg, &partner_net, "x@other.test", "other.test")), "denied");
        let bounce = from("", "mx");
        assert_eq!(action(&decide(&cfg, &bounce, "noreply@served.test", "served.test")), "reject");
        assert_eq!(action(&decide(&cfg, &bounce, "x@served.test", "served.test")), "accept");
    }

    #[test]
    fn role_addresses_of_served_domains_go_to_the_external_postmaster() {
        let cfg = cfg("  externalPostmaster: {address: hostmaster@corp.test, includeAbuse: true}\n");
        let to = |a| role_address_target(&cfg, a);
        assert_eq!(to("postmaster@served.test").as_deref(), Some("hostmaster@corp.test"));
        assert_eq!(to("Mailer-Daemon@SERVED.test").as_deref(), Some("hostmaster@corp.test"));
        assert_eq!(to("abuse@served.test").as_deref(), Some("hostmaster@corp.test"));
        assert_eq!(to("postmaster@else.test"), None);
        assert_eq!(to("alice@served.test"), None);
        let without_abuse = self::cfg("  externalPostmaster: {address: hostmaster@corp.test}\n");
        assert_eq!(role_address_target(&without_abuse, "abuse@served.test"), None);
        assert_eq!(role_address_target(&self::cfg(""), "postmaster@served.test"), None);
    }
}
