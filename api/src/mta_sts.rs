//! MTA-STS (RFC 8461): the policy a domain publishes so that sending servers insist on TLS, with
//! a valid certificate, to its MX hosts. The gateway serves the policy file
//! (`https://mta-sts.<domain>/.well-known/mta-sts.txt`, through an Ingress in Kubernetes); the
//! operator publishes the `_mta-sts.<domain>` TXT record. Both take the text from here, so the
//! record's `id` changes exactly when the served policy does (senders refetch on a new id).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::HumanDuration;

/// RFC 8461 3.2: max_age is at most 31557600 seconds (a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// The MTA-STS policy of every served domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MtaSts {
    /// Testing: senders deliver anyway and report failures (TLSRPT); Enforce: they deliver only
    /// over TLS to a listed MX host with a valid certificate; None: withdraws a policy.
    #[serde(default)]
    pub mode: MtaStsMode,
    /// How long senders may cache the policy (at most a year; keep it short while testing).
    #[serde(default = "default_max_age")]
    #[schemars(with = "String")]
    pub max_age: HumanDuration,
    /// MX host names or patterns (`*.example.com`) senders may deliver to. Default: the
    /// gateway's hostname.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MtaStsMode {
    #[default]
    Testing,
    Enforce,
    None,
}

fn default_max_age() -> HumanDuration {
    HumanDuration::from_secs(7 * 24 * 3600)
}

impl MtaSts {
    /// The policy file (RFC 8461 3.2), lines ended by CRLF.
    pub fn policy(&self, hostname: &str) -> String {
        let mode = match self.mode {
            MtaStsMode::Testing => "testing",
            MtaStsMode::Enforce => "enforce",
            MtaStsMode::None => "none",
        };
        let mut text = format!("version: STSv1\r\nmode: {mode}\r\n");
        let default_mx = [hostname.to_string()];
        let mx = if self.mx.is_empty() { &default_mx[..] } else { &self.mx[..] };
        for host in mx {
            text.push_str(&format!("mx: {}\r\n", host.trim_end_matches('.')));
        }
        text.push_str(&format!("max_age: {}\r\n", self.max_age.get().as_secs().min(MAX_AGE_LIMIT)));
        text
    }

    /// The policy's `id` for the TXT record (`v=STSv1; id=...`): 16 hex digits of an FNV-1a
    /// hash of the policy text (a change marker, not a secret).
    pub fn policy_id(&self, hostname: &str) -> String {
        let hash = self
            .policy(hostname)
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        format!("{hash:016x}")
    }

    /// The TXT record at `_mta-sts.<domain>`.
    pub fn txt_record(&self, hostname: &str) -> String {
        format!("v=STSv1; id={}", self.policy_id(hostname))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_rfc_8461_text_and_its_id_follows_it() {
        let mut p =
            MtaSts { mode: MtaStsMode::Enforce, max_age: HumanDuration::from_secs(86400), mx: vec![] };
        assert_eq!(
            p.policy("mx.example.com"),
            "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"
        );
        let id = p.policy_id("mx.example.com");
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "RFC 8461 3.1: id is 1-32 alphanumerics");
        assert_eq!(p.txt_record("mx.example.com"), format!("v=STSv1; id={id}"));
        p.mx = vec!["mx1.example.com.".into(), "*.mx.example.com".into()];
        assert_eq!(
            p.policy("ignored"),
            "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.mx.example.com\r\nmax_age: 86400\r\n"
        );
        assert_ne!(p.policy_id("mx.example.com"), id, "a new policy, a new id");
        p.max_age = HumanDuration::from_secs(10 * MAX_AGE_LIMIT);
        assert!(p.policy("h").ends_with("max_age: 31557600\r\n"));
    }
}
