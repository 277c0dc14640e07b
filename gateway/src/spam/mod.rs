//! Spam control: the checks of a `SpamPolicy` and the verdict they add up to.
//!
//! Envelope checks (trusted domains, block and allow lists, SPF, DNSBL, RHSBL) run at the first
//! RCPT of a transaction, when the recipient's domain names the policy; SPF and the blocklist
//! lookups run concurrently. Content checks (DKIM, DMARC) run at the end of DATA. Mail from an
//! inbound gateway skips the connection-time checks and is checked at the end of DATA against
//! the original client IP from the gateway's Received header.
//!
//! Precedence: a trusted sender domain is not checked at all; a block-listed sender is spam
//! even when SPF passes; an allow-listed sender is not spam unless SPF fails.

pub mod content;
pub mod headers;

use std::borrow::Cow;
use std::net::IpAddr;

use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator, SpfOutput,
    SpfResult, dmarc::Policy, dmarc::verify::DmarcParameters, spf::verify::SpfParameters,
};
use postern_api::{Action, SpamPolicyConfig};

use crate::dns::Dns;

/// The outcome of the checks: the most severe action and every reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub reasons: Vec<String>,
}

impl Default for Verdict {
    fn default() -> Self {
        Self { action: Action::Allow, reasons: Vec::new() }
    }
}

impl Verdict {
    pub fn add(&mut self, action: Action, reason: impl Into<String>) {
        self.action = self.action.max(action);
        self.reasons.push(reason.into());
    }

    pub fn reasons_text(&self) -> String {
        self.reasons.join("; ")
    }
}

/// What the envelope checks found, kept for the end of DATA.
#[derive(Clone, Debug)]
pub struct EnvelopeResult {
    pub verdict: Verdict,
    /// The sender domain is trusted: no checks at all.
    pub trusted: bool,
    /// The sender is allow-listed and SPF did not fail: no further checks.
    pub allowed: bool,
    pub spf: Option<SpfOutput>,
}

/// What the end-of-DATA checks decided about a message, and how it is to be stored.
pub struct ContentVerdict<'c> {
    pub verdict: Verdict,
    /// Header lines (each with its CRLF) to put above the client's content: our
    /// Authentication-Results, the policy's spam header, sender warnings.
    pub added_headers: String,
    /// The content as it is to be stored: forged Authentication-Results removed, the Subject
    /// prefixed for a sender warning.
    pub content: Cow<'c, [u8]>,
    /// (method, result) of each SPF, DKIM signature and DMARC check, for metrics.
    pub results: Vec<(&'static str, &'static str)>,
}

/// What the end-of-DATA checks found.
struct ContentOutcome {
    pub verdict: Verdict,
    /// Our Authentication-Results header (RFC 8601), with its CRLF.
    pub auth_results: Option<String>,
    /// SPF failed (fail or softfail) or every DKIM signature failed.
    pub unauthenticated: bool,
    /// (method, result) of each SPF, DKIM signature and DMARC check, for metrics.
    pub results: Vec<(&'static str, &'static str)>,
}

fn spf_name(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_name(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_name(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

/// The checks' shared part: DNS (blocklists, and mail-auth on the same resolver).
pub struct SpamEngine {
    dns: std::sync::Arc<Dns>,
}

/// The client as the checks see it.
pub struct Client<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    pub sender: &'a str,
    /// Our host name (for SPF's %{r} and Authentication-Results).
    pub hostname: &'a str,
}

fn in_list(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v.trim_start_matches('.').eq_ignore_ascii_case(value))
}

impl SpamEngine {
    pub fn new(dns: std::sync::Arc<Dns>) -> Self {
        Self { dns }
    }

    fn auth(&self) -> &MessageAuthenticator {
        self.dns.authenticator()
    }

    /// The envelope checks of `policy` for a client (run once per transaction).
    pub async fn check_envelope(&self, policy: &SpamPolicyConfig, c: &Client<'_>) -> EnvelopeResult {
        let sender_domain = crate::address::domain_of(c.sender).unwrap_or_default();
        let mut verdict = Verdict::default();
        if !sender_domain.is_empty() && in_list(&policy.trusted_domains, &sender_domain) {
            return EnvelopeResult { verdict, trusted: true, allowed: false, spf: None };
        }
        let (spf, listed) = tokio::join!(self.spf(c), dnsbl(policy, &self.dns, c.ip, &sender_domain));

        match spf.result() {
            SpfResult::Fail => verdict.add(policy.spf.fail, format!("spf=fail ({sender_domain})")),
            SpfResult::SoftFail => {
                verdict.add(policy.spf.soft_fail, format!("spf=softfail ({sender_domain})"))
            }
            _ => {}
        }
        let tld = sender_domain.rsplit('.').next().unwrap_or_default();
        let blocked = if in_list(&policy.block_list.addresses, c.sender) {
            Some(format!("block-list: sender {}", c.sender))
        } else if in_list(&policy.block_list.domains, &sender_domain) {
            Some(format!("block-list: domain {sender_domain}"))
        } else if !tld.is_empty() && in_list(&policy.block_list.tlds, tld) {
            Some(format!("block-list: TLD .{tld}"))
        } else {
            None
        };
        if let Some(why) = blocked {
            verdict.add(policy.block_list.action, why);
            return EnvelopeResult { verdict, trusted: false, allowed: false, spf: Some(spf) };
        }
        let allow_listed = in_list(&policy.allow_list.addresses, c.sender)
            || (!sender_domain.is_empty() && in_list(&policy.allow_list.domains, &sender_domain));
        if allow_listed && spf.result() != SpfResult::Fail {
            // Allow-listed and not forged: not spam, whatever a blocklist says.
            return EnvelopeResult {
                verdict: Verdict::default(),
                trusted: false,
                allowed: true,
                spf: Some(spf),
            };
        }
        for hit in listed {
            verdict.add(policy.dnsbl.action, hit);
        }
        EnvelopeResult { verdict, trusted: false, allowed: false, spf: Some(spf) }
    }

    async fn spf(&self, c: &Client<'_>) -> SpfOutput {
        let helo = if c.helo.is_empty() { "unknown" } else { c.helo };
        let params = SpfParameters::verify(c.ip, helo, c.hostname, c.sender);
        self.auth().verify_spf(self.dns.auth_params(params)).await
    }

    /// The end-of-DATA judgement of a message (`content` as the client sent it, line endings
    /// normalised) under `policy`: the envelope checks' result (run now when `envelope` is
    /// `None`: mail relayed by an inbound gateway, judged on its original client), then DKIM,
    /// DMARC and the content rules; and the message as it is to be stored. Without a policy
    /// nothing is checked, but forged Authentication-Results are removed all the same: nobody
    /// else may speak for our authserv-id (RFC 8601 section 5).
    pub async fn check_content<'c>(
        &self,
        policy: Option<&SpamPolicyConfig>,
        envelope: Option<&EnvelopeResult>,
        c: &Client<'_>,
        sender_is_external: bool,
        content: &'c [u8],
    ) -> ContentVerdict<'c> {
        let content = headers::remove_forged_auth_results(content, c.hostname);
        let mut judged = ContentVerdict {
            verdict: Verdict::default(),
            added_headers: String::new(),
            content,
            results: vec![],
        };
        let Some(policy) = policy else { return judged };
        let envelope = match envelope {
            Some(e) => e.clone(),
            None => self.check_envelope(policy, c).await,
        };
        let outcome = self.authenticate_content(policy, &envelope, c, &judged.content).await;
        judged.verdict = outcome.verdict;
        judged.results = outcome.results;
        if let Some(ar) = outcome.auth_results {
            judged.added_headers.push_str(&ar);
        }
        if judged.verdict.action == Action::MarkSpam && !policy.spam_header.is_empty() {
            judged.added_headers.push_str(&policy.spam_header);
            judged.added_headers.push_str("\r\n");
        }
        let warnings = &policy.sender_warnings;
        let applicable =
            [(outcome.unauthenticated, &warnings.unauthenticated), (sender_is_external, &warnings.external)];
        let warnings: Vec<_> =
            applicable.into_iter().filter_map(|(on, w)| w.as_ref().filter(|_| on)).collect();
        for w in &warnings {
            judged.added_headers.push_str(&w.header);
            judged.added_headers.push_str("\r\n");
        }
        // Prefixed last to first, so the subject reads in the order above ("[UNVERIFIED] [EXT]").
        for w in warnings.iter().rev() {
            if let Some(prefix) = &w.subject_prefix {
                judged.content = Cow::Owned(headers::prefix_subject(&judged.content, prefix).into_owned());
            }
        }
        judged
    }

    /// The content checks (DKIM, DMARC, content rules) of the message `data` (as the client
    /// sent it), added to the envelope's verdict.
    async fn authenticate_content(
        &self,
        policy: &SpamPolicyConfig,
        envelope: &EnvelopeResult,
        c: &Client<'_>,
        data: &[u8],
    ) -> ContentOutcome {
        let mut out = ContentOutcome {
            verdict: envelope.verdict.clone(),
            auth_results: None,
            unauthenticated: false,
            results: Vec::new(),
        };
        if envelope.trusted {
            return out;
        }
        let spf_failed = envelope
            .spf
            .as_ref()
            .is_some_and(|s| matches!(s.result(), SpfResult::Fail | SpfResult::SoftFail));
        let Some(message) = AuthenticatedMessage::parse(data) else {
            out.unauthenticated = spf_failed;
            return out;
        };
        let dkim = self.auth().verify_dkim(self.dns.auth_params(&message)).await;
        let spf = match &envelope.spf {
            Some(s) => s.clone(),
            None => self.spf(c).await,
        };
        let sender_domain = crate::address::domain_of(c.sender);
        let mail_from_domain = sender_domain.as_deref().unwrap_or(c.helo);
        let dmarc = DmarcParameters::new(&message, &dkim, mail_from_domain, &spf);
        let dmarc = self.auth().verify_dmarc(self.dns.auth_params(dmarc)).await;
        out.auth_results = Some(format!(
            "Authentication-Results: {}\r\n",
            AuthenticationResults::new(c.hostname)
                .with_dkim_results(&dkim, message.from())
                .with_spf_mailfrom_result(&spf, c.ip, c.sender, c.helo)
                .with_dmarc_result(&dmarc)
        ));
        out.results.push(("spf", spf_name(spf.result())));
        out.results.extend(dkim.iter().map(|d| ("dkim", dkim_name(d.result()))));
        out.results.push(("dmarc", dmarc_name(&dmarc.result())));
        let dkim_failed = !dkim.is_empty() && !dkim.iter().any(|d| d.result() == &DkimResult::Pass);
        out.unauthenticated = spf_failed || dkim_failed;
        if envelope.allowed {
            return out;
        }
        let verdict = &mut out.verdict;
        if dkim_failed {
            let why = dkim.iter().map(|d| format!("{:?}", d.result())).collect::<Vec<_>>().join(", ");
            verdict.add(policy.dkim.fail, format!("dkim=fail ({why})"));
        }
        // DMARC fails when the From domain publishes a policy and neither SPF nor DKIM passes
        // aligned (a temporary DNS error is neither pass nor fail: RFC 7489 section 6.6.2).
        let neither = |r: &DmarcResult| !matches!(r, DmarcResult::Pass | DmarcResult::TempError(_));
        if neither(dmarc.dkim_result()) && neither(dmarc.spf_result()) {
            match dmarc.policy() {
                Policy::Reject => {
                    verdict.add(policy.dmarc.reject, format!("dmarc=fail p=reject ({})", dmarc.domain()))
                }
                Policy::Quarantine => verdict
                    .add(policy.dmarc.quarantine, format!("dmarc=fail p=quarantine ({})", dmarc.domain())),
                Policy::None | Policy::Unspecified => {}
            }
        }
        for (action, why) in content::check(&policy.content, data) {
            verdict.add(action, why);
        }
        out
    }
}

/// DNSBL for the client IP and RHSBL for the sender domain; each hit as a reason.
async fn dnsbl(policy: &SpamPolicyConfig, dns: &Dns, ip: IpAddr, sender_domain: &str) -> Vec<String> {
    let reversed = reverse_ip(ip);
    let mut names: Vec<(String, String)> = policy
        .dnsbl
        .zones
        .iter()
        .map(|z| (format!("{reversed}.{z}"), format!("dnsbl: {ip} listed in {z}")))
        .collect();
    if !sender_domain.is_empty() {
        names.extend(
            policy
                .dnsbl
                .rhsbl_zones
                .iter()
                .map(|z| (format!("{sender_domain}.{z}"), format!("rhsbl: {sender_domain} listed in {z}"))),
        );
    }
    let lookups = names.iter().map(|(name, _)| dns.is_listed(name));
    let answers = futures::future::join_all(lookups).await;
    names
        .into_iter()
        .zip(answers)
        .filter_map(|((_, why), hit)| hit.map(|codes| format!("{why} ({codes:?})")))
        .collect()
}

/// 192.0.2.1 -> "1.2.0.192"; IPv6 as reversed nibbles (RFC 5782).
pub fn reverse_ip(ip: IpAddr) -> String {
    match crate::config::canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let hex: String = v6.octets().iter().map(|b| format!("{b:02x}")).collect();
            hex.chars().rev().map(|c| c.to_string()).collect::<Vec<_>>().join(".")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversed_addresses_for_dnsbl() {
        assert_eq!(reverse_ip("192.0.2.1".parse().unwrap()), "1.2.0.192");
        assert!(reverse_ip("2001:db8::1".parse().unwrap()).starts_with("1.0.0.0."));
        assert!(reverse_ip("2001:db8::1".parse().unwrap()).ends_with(".8.b.d.0.1.0.0.2"));
    }

    #[test]
    fn the_most_severe_action_wins_and_every_reason_stays() {
        let mut v = Verdict::default();
        v.add(Action::MarkSpam, "a");
        v.add(Action::Reject, "b");
        v.add(Action::Quarantine, "c");
        assert_eq!(v.action, Action::Reject);
        assert_eq!(v.reasons_text(), "a; b; c");
    }
}
