//! The sender policy (`senderPolicy`): MAIL FROM's domain must be able to take a reply, and
//! outside clients may not use a served domain. Authenticated users, trusted networks and
//! inbound gateways are not checked (the caller decides who is exempt).

use crate::config::ConfigSnapshot;
use crate::dns::{Dns, DnsError};

/// Why a sender was refused, with the reply code and enhanced status it earns.
#[derive(Debug, PartialEq, Eq)]
pub enum SenderRefused {
    /// An outside client used a served domain (550 5.7.1).
    ServedDomain(String),
    /// The domain does not exist or takes no mail (550 5.1.8).
    Unresolvable(DnsError),
    /// DNS could not say (450 4.1.8).
    DnsTrouble(DnsError),
}

impl SenderRefused {
    pub fn reply(&self) -> (u16, String) {
        match self {
            Self::ServedDomain(d) => {
                (550, format!("5.7.1 Sender address rejected: {d} is ours and you are not sending for us"))
            }
            Self::Unresolvable(e) => (550, format!("5.1.8 Sender address rejected: {e}")),
            Self::DnsTrouble(_) => {
                (450, "4.1.8 Sender address rejected: domain not resolvable now, try again later".into())
            }
        }
    }

    /// The reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ServedDomain(_) => "sender_spoofs_served_domain",
            Self::Unresolvable(_) => "sender_domain_unresolvable",
            Self::DnsTrouble(_) => "sender_domain_dns_trouble",
        }
    }
}

/// Checks `sender` (not the null sender) of a client the policy applies to.
pub async fn check(cfg: &ConfigSnapshot, dns: &Dns, sender: &str) -> Result<(), SenderRefused> {
    let policy = &cfg.sender_policy;
    let Some(domain) = crate::address::domain_of(sender) else { return Ok(()) };
    if policy.reject_served_domain_senders && cfg.served_domain(&domain).is_some() {
        return Err(SenderRefused::ServedDomain(domain));
    }
    if policy.require_resolvable_domain {
        match dns.accepts_mail(&domain).await {
            Ok(()) => {}
            Err(e) if e.is_permanent() => return Err(SenderRefused::Unresolvable(e)),
            Err(e) => return Err(SenderRefused::DnsTrouble(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn served_domains_and_unresolvable_domains_are_refused() {
        let text = "hostname: gw.test\nlisteners:\n  - address: 127.0.0.1:2525\ndomains:\n  - name: served.test\n    primary: {hosts: ['127.0.0.1:25']}\nsenderPolicy: {requireResolvableDomain: true, rejectServedDomainSenders: true}\n";
        let cfg = ConfigSnapshot::new(postern_api::load_gateway_config(text).unwrap());
        let dns = Dns::from_zones("real.test. MX 10 mx.real.test.\nnull.test. MX 0 .\n").unwrap();
        assert_eq!(check(&cfg, &dns, "a@real.test").await, Ok(()));
        let spoof = check(&cfg, &dns, "ceo@Served.test").await.unwrap_err();
        assert_eq!(spoof.reply().0, 550);
        assert!(spoof.reply().1.starts_with("5.7.1"));
        let gone = check(&cfg, &dns, "a@gone.test").await.unwrap_err();
        assert_eq!(
            gone.reply(),
            (550, "5.1.8 Sender address rejected: domain gone.test does not exist".into())
        );
        let null = check(&cfg, &dns, "a@null.test").await.unwrap_err();
        assert_eq!(null.reason(), "sender_domain_unresolvable");
        // DNS that cannot answer now is a temporary refusal, never a permanent one.
        let trouble = SenderRefused::DnsTrouble(DnsError::Temporary("timeout".into()));
        assert_eq!(trouble.reply().0, 450);
        assert!(trouble.reply().1.starts_with("4.1.8"));
        // With the policy off, nothing is looked up or refused.
        let off = ConfigSnapshot::new(
            postern_api::load_gateway_config(text.split("senderPolicy").next().unwrap()).unwrap(),
        );
        assert_eq!(check(&off, &dns, "ceo@served.test").await, Ok(()));
        assert_eq!(check(&off, &dns, "a@gone.test").await, Ok(()));
    }
}
