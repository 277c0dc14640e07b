//! `ConfigSnapshot`: a loaded `GatewayConfig` plus the indexes built from it once, so the per-command
//! hot path does hash lookups instead of walking lists. Swapped whole on hot reload; a session
//! keeps the snapshot it started with.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use postern_api::validate::qualify;
use postern_api::{GatewayConfig, MailDomainConfig, SpamPolicyConfig};

/// A spam policy with its name, looked up once per transaction and shared by its sessions.
#[derive(Debug, PartialEq)]
pub struct NamedSpamPolicy {
    pub name: String,
    pub config: SpamPolicyConfig,
}

/// A served domain with its directory indexed.
pub struct ServedDomain {
    pub config: MailDomainConfig,
    /// The spam policy its `spamPolicy` names (validation makes sure it exists).
    pub spam_policy: Option<Arc<NamedSpamPolicy>>,
    /// Accounts and aliases, lower case, whole addresses.
    known: HashSet<String>,
    /// Group address -> members (whole addresses, lower case).
    groups: HashMap<String, Vec<String>>,
}

impl ServedDomain {
    fn new(config: MailDomainConfig, policies: &HashMap<String, Arc<NamedSpamPolicy>>) -> Self {
        let spam_policy = config.spam_policy.as_ref().and_then(|name| policies.get(name)).cloned();
        let d = &config.name;
        let known = config
            .accounts
            .iter()
            .flat_map(|a| std::iter::once(&a.address).chain(&a.aliases))
            .map(|a| qualify(a, d))
            .collect();
        let groups = config
            .groups
            .iter()
            .map(|g| (qualify(&g.address, d), g.members.iter().map(|m| qualify(m, d)).collect()))
            .collect();
        Self { config, spam_policy, known, groups }
    }

    /// Whether the directory lists anything (or asks the primary): without one, every address
    /// of the domain is taken as known and the mailbox server decides.
    pub fn has_directory(&self) -> bool {
        !self.known.is_empty() || !self.groups.is_empty() || self.config.recipient_verification.is_some()
    }

    /// Listed as an account, alias or group. `address` must be lower case.
    pub fn lists(&self, address: &str) -> bool {
        self.known.contains(address) || self.groups.contains_key(address)
    }

    pub fn group_members(&self, address: &str) -> Option<&[String]> {
        self.groups.get(address).map(Vec::as_slice)
    }

    /// For a group address (lower case): `Some` with its moderator, if it has one.
    pub fn group_moderator(&self, address: &str) -> Option<Option<String>> {
        let d = &self.config.name;
        let group = self.config.groups.iter().find(|g| qualify(&g.address, d) == address)?;
        Some(group.moderator.as_ref().map(|m| qualify(m, d)))
    }
}

/// Reads as the `GatewayConfig` it holds (`cfg.limits`, `cfg.hostname`), with the indexes for
/// lookups beside it.
pub struct ConfigSnapshot {
    pub config: GatewayConfig,
    /// Served domains by lower-case name.
    domains: HashMap<String, ServedDomain>,
    trusted: Vec<IpNet>,
    inbound_gateways: Vec<IpNet>,
    /// Sending accounts by name -> their index in `config.accounts` (each delivery through an
    /// account asks).
    accounts: HashMap<String, usize>,
}

impl ConfigSnapshot {
    pub fn new(config: GatewayConfig) -> Self {
        let policies: HashMap<String, Arc<NamedSpamPolicy>> = config
            .spam_policies
            .iter()
            .map(|(name, p)| {
                (name.clone(), Arc::new(NamedSpamPolicy { name: name.clone(), config: p.clone() }))
            })
            .collect();
        let domains = config
            .domains
            .iter()
            .map(|d| (d.name.to_ascii_lowercase(), ServedDomain::new(d.clone(), &policies)))
            .collect();
        let trusted = config.relay.trusted_networks.clone();
        let inbound_gateways = config.relay.inbound_gateways.clone();
        let accounts = config.accounts.iter().enumerate().map(|(i, a)| (a.name.clone(), i)).collect();
        Self { config, domains, trusted, inbound_gateways, accounts }
    }

    /// The sending account called `name`.
    pub fn sending_account(&self, name: &str) -> Option<&postern_api::SendingAccount> {
        self.accounts.get(name).and_then(|&i| self.config.accounts.get(i))
    }

    /// The served domain an address belongs to, if any. `domain` must be lower case.
    pub fn served_domain(&self, domain: &str) -> Option<&ServedDomain> {
        self.domains.get(domain.trim_end_matches('.'))
    }

    pub fn served_domains(&self) -> impl Iterator<Item = &ServedDomain> {
        self.domains.values()
    }

    /// Where mail to the bare `postmaster` goes: the configured address, else the external
    /// postmaster, else postmaster@ the first served domain; `None` for a gateway that serves no
    /// domain.
    pub fn postmaster(&self) -> Option<String> {
        let external = self.config.relay.external_postmaster.as_ref().map(|e| e.address.clone());
        self.config.postmaster.clone().or(external).or_else(|| {
            self.config.domains.first().map(|d| format!("postmaster@{}", d.name.to_ascii_lowercase()))
        })
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    pub fn is_inbound_gateway(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.inbound_gateways.iter().any(|net| net.contains(&ip))
    }
}

impl std::ops::Deref for ConfigSnapshot {
    type Target = GatewayConfig;

    fn deref(&self) -> &GatewayConfig {
        &self.config
    }
}

/// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as plain IPv4, so v4 rules match it.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
