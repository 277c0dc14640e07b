//! The connection policy (`connectionPolicy`): checks of a client on an `smtp` listener before
//! it sends mail, as postscreen and smtpd's client restrictions do: its reverse DNS, the name
//! it gives in HELO/EHLO, and whether it waited for the greeting. Each check has an action
//! (`Off`, `Log`, `Reject`); trusted networks and inbound gateways are not checked.

use std::net::IpAddr;

use postern_api::CheckAction;

use crate::config::ConfigSnapshot;

/// A failed check: its name (for logs and metrics), its action and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Failed {
    pub check: &'static str,
    pub action: CheckAction,
    pub why: String,
}

/// Whether the connection policy looks at this client at all.
pub fn applies(cfg: &ConfigSnapshot, ip: IpAddr) -> bool {
    !cfg.is_trusted(ip) && !cfg.is_inbound_gateway(ip)
}

/// The first HELO/EHLO check with an action that `helo` fails.
pub fn check_helo(cfg: &ConfigSnapshot, helo: &str) -> Option<Failed> {
    let policy = &cfg.connection_policy;
    let name = helo.trim().trim_end_matches('.');
    if policy.helo_fqdn != CheckAction::Off {
        let why = if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
            ip.parse::<IpAddr>().is_err().then(|| "not a valid address literal".to_string())
        } else if name.parse::<IpAddr>().is_ok() {
            Some("a bare IP address (write it as [address])".into())
        } else if !name.contains('.') || !postern_api::validate::is_domain_name(name) {
            Some("not a fully qualified domain name".into())
        } else {
            None
        };
        if let Some(why) = why {
            return Some(Failed { check: "helo_fqdn", action: policy.helo_fqdn, why });
        }
    }
    if policy.helo_not_ours != CheckAction::Off {
        let lower = name.to_ascii_lowercase();
        if lower.eq_ignore_ascii_case(&cfg.hostname) || cfg.served_domain(&lower).is_some() {
            let why = "claims to be this gateway or a domain it serves".to_string();
            return Some(Failed { check: "helo_not_ours", action: policy.helo_not_ours, why });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(policy: &str) -> ConfigSnapshot {
        let text = format!(
            "hostname: mx.served.test\nlisteners:\n  - address: 127.0.0.1:2525\ndomains:\n  - name: served.test\n    primary: {{hosts: ['127.0.0.1:25']}}\nconnectionPolicy: {policy}\n"
        );
        ConfigSnapshot::new(postern_api::load_gateway_config(&text).unwrap())
    }

    #[test]
    fn helo_names_that_are_not_fqdns_or_claim_to_be_us_fail() {
        let cfg = cfg("{heloFqdn: Reject, heloNotOurs: Log}");
        let check = |h| check_helo(&cfg, h).map(|f| (f.check, f.action));
        for ok in ["mail.example.org", "mail.example.org.", "[192.0.2.1]", "[IPv6:2001:db8::1]"] {
            assert_eq!(check(ok), None, "{ok}");
        }
        for bad in ["localhost", "192.0.2.1", "[not-an-ip]", "bad..name", "under_score"] {
            assert_eq!(check(bad), Some(("helo_fqdn", CheckAction::Reject)), "{bad}");
        }
        for ours in ["MX.served.test", "served.test"] {
            assert_eq!(check(ours), Some(("helo_not_ours", CheckAction::Log)), "{ours}");
        }
        let off = self::cfg("{}");
        assert_eq!(check_helo(&off, "localhost"), None);
    }
}
