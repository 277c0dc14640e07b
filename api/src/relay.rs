//! Relay control beyond "who may relay": rules that allow, reject or discard by client,
//! HELO, sender and recipient; the external postmaster; automatic-forwarding control; and the
//! sender and connection policies. Part of `GatewayConfig` (`relay`, `senderPolicy`,
//! `connectionPolicy`).

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// Relay control. Mail for a domain the gateway does not serve is accepted only from trusted
/// networks, authenticated users and clients an `Allow` rule names by network.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RelayConfig {
    /// Client networks allowed to relay to any domain, e.g. "10.0.0.0/8".
    #[schemars(with = "Vec<String>")]
    pub trusted_networks: Vec<IpNet>,
    /// Inbound gateways: servers that relay mail in for the served domains (the old MX, an
    /// archiving service). Exempt from client-IP checks; later checks use the original client
    /// IP from the Received header the gateway added.
    #[schemars(with = "Vec<String>")]
    pub inbound_gateways: Vec<IpNet>,
    /// Black and white lists, checked in order for every recipient; the first rule that
    /// matches decides. No rule matching: the usual relay check.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RelayRule>,
    /// Mail to postmaster@, mailer-daemon@ (and abuse@ if asked) of any served domain goes to
    /// this address instead of the domain's mailbox server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_postmaster: Option<ExternalPostmaster>,
    /// Refuse messages that a client forwards automatically (mailbox rules, auto-forwarding:
    /// `Auto-Submitted: auto-forwarded`, `X-MS-Exchange-Inbox-Rules-Loop`, `Resent-*`) to
    /// domains this gateway does not serve: exfiltration control.
    pub block_auto_forwarding: bool,
}

/// What a relay rule does with a recipient it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RelayAction {
    /// Accept; later rules and the sender policy are skipped. Lets the client relay to
    /// outside domains only when the rule names `clientNetworks` (a sender or HELO name alone
    /// can be forged).
    Allow,
    /// Refuse the recipient: 554 5.7.1.
    Reject,
    /// Answer 250 and drop: the recipient never gets the message. Logged and counted
    /// (`postern_messages_total{outcome="discarded"}`), never silent.
    Discard,
}

/// A rule matches a recipient when every criterion it sets matches (within a list, any entry
/// will do). A rule that sets no criterion matches everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RelayRule {
    /// A short name for logs and metrics.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Allow, Reject or Discard what the rule matches.
    pub action: RelayAction,
    /// Client networks, e.g. "192.0.2.0/24" or "2001:db8::/32".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub client_networks: Vec<IpNet>,
    /// HELO/EHLO names: "host.example.com" exactly, or ".example.com" for any name under it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub helo_names: Vec<String>,
    /// Envelope senders: "user@example.com" or "@example.com" for a whole domain; "<>" for the
    /// null sender.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<String>,
    /// Recipients: "user@example.com" or "@example.com".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

/// Where mail to the role addresses of the served domains goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalPostmaster {
    /// e.g. "hostmaster@corp.example".
    pub address: String,
    /// abuse@ too (RFC 2142).
    #[serde(default)]
    pub include_abuse: bool,
}

/// Checks of MAIL FROM. Authenticated users and trusted networks are not checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SenderPolicy {
    /// The sender's domain must be able to receive a reply: an MX or an address record, and no
    /// null MX. Does not exist: 550 5.1.8; DNS trouble: 450 4.1.8.
    pub require_resolvable_domain: bool,
    /// Clients that are not trusted, not authenticated and not inbound gateways may not use a
    /// served domain as the envelope sender (550 5.7.1): such mail only ever comes from us.
    pub reject_served_domain_senders: bool,
}

/// What a connection check does with a client that fails it. (In Kubernetes manifests write
/// `'Off'` quoted: kubectl reads YAML 1.1, where a plain Off is the boolean false.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CheckAction {
    /// No check.
    #[default]
    Off,
    /// Check, log and count, but let the client on.
    Log,
    /// Refuse: 550 5.7.1 at EHLO for the HELO checks; 554 5.7.1 (and hang up) for the others.
    Reject,
}

/// Checks of the client on `smtp` listeners. Trusted networks and inbound gateways are not
/// checked; submission listeners are not either (their clients are people's devices).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ConnectionPolicy {
    /// Forward-confirmed reverse DNS: the client IP's PTR name must resolve back to the IP.
    pub reverse_dns: CheckAction,
    /// The HELO/EHLO name must be a fully qualified domain name (a bare IP must be an address
    /// literal such as "[192.0.2.1]").
    pub helo_fqdn: CheckAction,
    /// The HELO/EHLO name must not claim to be this gateway (its hostname or a served domain).
    pub helo_not_ours: CheckAction,
    /// Before the greeting, wait this long; a client that talks in that time did not wait for
    /// the greeting, as bulk senders do (postscreen's pregreet test). 0: no wait, no check.
    pub greeting_delay: HumanDuration,
    /// What happens to a client that talks before the greeting.
    pub early_talkers: CheckAction,
}
