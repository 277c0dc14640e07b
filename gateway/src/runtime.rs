//! `Runtime`: a loaded `GatewayConfig` plus the indexes built from it once, so the per-command
//! hot path does hash lookups instead of walking lists. Swapped whole on hot reload; a session
//! keeps the snapshot it started with.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use postern_api::{GatewayConfig, MailDomainConfig};

pub struct Runtime {
    pub config: GatewayConfig,
    /// Served domains by lower-case name.
    domains: HashMap<String, MailDomainConfig>,
    trusted: Vec<IpNet>,
}

impl Runtime {
    pub fn new(config: GatewayConfig) -> Self {
        let domains = config.domains.iter().map(|d| (d.name.to_ascii_lowercase(), d.clone())).collect();
        let trusted = config.relay.trusted_networks.clone();
        Self { config, domains, trusted }
    }

    /// The served domain an address belongs to, if any. `domain` must be lower case.
    pub fn served_domain(&self, domain: &str) -> Option<&MailDomainConfig> {
        self.domains.get(domain.trim_end_matches('.'))
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as plain IPv4, so v4 rules match it.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
