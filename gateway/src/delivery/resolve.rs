//! Next-hop resolution: MX (RFC 5321 5.1) with implicit MX and null MX (RFC 7505), or an
//! explicit host list. hickory caches answers by their TTL.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use postern_api::validate::parse_host_port;
use rand::seq::SliceRandom;

use super::Failure;
use crate::store::RouteTarget;

/// One next-hop host with its addresses, in the order to try them.
#[derive(Clone, Debug)]
pub struct Host {
    /// The name to greet and verify the certificate against (or the IP as text).
    pub name: String,
    pub addrs: Vec<SocketAddr>,
}

pub struct Resolver {
    dns: TokioResolver,
    mx_port: u16,
}

/// A resolver config for `nameservers` (UDP and TCP each); `None` means the system's.
pub fn resolver_config(nameservers: &[SocketAddr]) -> Option<ResolverConfig> {
    if nameservers.is_empty() {
        return None;
    }
    let servers = nameservers
        .iter()
        .map(|ns| {
            let mut udp = ConnectionConfig::udp();
            udp.port = ns.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = ns.port();
            NameServerConfig::new(ns.ip(), true, vec![udp, tcp])
        })
        .collect();
    Some(ResolverConfig::from_parts(None, vec![], servers))
}

/// The config and options of every resolver the gateway runs (delivery, blocklists, and
/// mail-auth's for SPF/DKIM/DMARC): `nameservers`, or the system's resolv.conf when empty.
///
/// Answers are cached by their TTL. A blocklist's "not listed" is an NXDOMAIN, the answer to
/// nearly every lookup; servers that send it without an SOA (so without a negative TTL) would
/// otherwise be asked again for every message, so negative answers are kept at least 30 s.
pub fn resolver_setup(nameservers: &[SocketAddr]) -> anyhow::Result<(ResolverConfig, ResolverOpts)> {
    let (config, mut opts) = match resolver_config(nameservers) {
        Some(config) => (config, ResolverOpts::default()),
        None => hickory_resolver::system_conf::read_system_conf()?,
    };
    opts.cache_size = opts.cache_size.max(4096);
    opts.negative_min_ttl = Some(Duration::from_secs(30));
    Ok((config, opts))
}

impl Resolver {
    /// Uses `nameservers` (UDP and TCP), or the system's resolv.conf when empty.
    pub fn new(nameservers: &[SocketAddr], mx_port: u16) -> anyhow::Result<Self> {
        let (config, opts) = resolver_setup(nameservers)?;
        let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = opts;
        Ok(Self { dns: builder.build()?, mx_port })
    }

    /// Whether `name` has an A record (a DNS blocklist listing). Lookup errors count as "not
    /// listed" (a broken blocklist must not stop mail) and are logged.
    pub async fn is_listed(&self, name: &str) -> Option<Vec<std::net::Ipv4Addr>> {
        match self.dns.ipv4_lookup(format!("{}.", name.trim_end_matches('.'))).await {
            Ok(l) => {
                let ips: Vec<_> = l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect();
                (!ips.is_empty()).then_some(ips)
            }
            Err(e) if e.is_no_records_found() => None,
            Err(e) => {
                tracing::warn!(name, error = %e, "DNS blocklist lookup failed; treated as not listed");
                None
            }
        }
    }

    /// The hosts to try for a route, best first.
    pub async fn hosts(&self, target: &RouteTarget) -> Result<Vec<Host>, Failure> {
        match target {
            RouteTarget::Mx(domain) => self.mx_hosts(domain).await,
            RouteTarget::Hosts(list) => {
                let mut out = Vec::new();
                let mut last_err = None;
                for entry in list {
                    let (host, port) = parse_host_port(entry, 25)
                        .map_err(|e| Failure::permanent("5.3.5", format!("bad destination host: {e}")))?;
                    // A configured host that does not resolve is a config or DNS problem on our
                    // side: retry rather than bounce.
                    match self.addresses(&host, port).await {
                        Ok(h) => out.push(h),
                        Err(e) => last_err = Some(Failure::temporary("4.4.3", e.diagnostic)),
                    }
                }
                match (out.is_empty(), last_err) {
                    (true, Some(e)) => Err(e),
                    _ => Ok(out),
                }
            }
        }
    }

    async fn mx_hosts(&self, domain: &str) -> Result<Vec<Host>, Failure> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let lookup = match self.dns.mx_lookup(fqdn.as_str()).await {
            Ok(l) => l,
            Err(e) if e.is_nx_domain() => {
                return Err(Failure::permanent("5.1.2", format!("domain {domain} does not exist")));
            }
            // No MX: the domain itself is the implicit MX (RFC 5321 5.1).
            Err(e) if e.is_no_records_found() => {
                return match self.addresses(domain, self.mx_port).await {
                    Ok(h) => Ok(vec![h]),
                    Err(f) if f.permanent => Err(Failure::permanent(
                        "5.1.2",
                        format!("domain {domain} has no MX and no address records"),
                    )),
                    Err(f) => Err(f),
                };
            }
            Err(e) => {
                return Err(Failure::temporary("4.4.3", format!("DNS lookup of MX {domain} failed: {e}")));
            }
        };
        let mut mxs: Vec<(u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                _ => None,
            })
            .collect();
        if mxs.len() == 1 && (mxs[0].1 == "." || mxs[0].1.is_empty()) {
            return Err(Failure::permanent(
                "5.1.10",
                format!("domain {domain} does not accept mail (null MX)"),
            ));
        }
        mxs.retain(|(_, host)| host != "." && !host.is_empty());
        // Equal preferences share load at random (RFC 5321 5.1).
        mxs.shuffle(&mut rand::rng());
        mxs.sort_by_key(|(pref, _)| *pref);
        let mut hosts = Vec::new();
        let mut last_err = None;
        for (_, exchange) in mxs {
            let name = exchange.trim_end_matches('.').to_string();
            match self.addresses(&name, self.mx_port).await {
                Ok(h) => hosts.push(h),
                Err(e) => last_err = Some(e),
            }
        }
        if hosts.is_empty() {
            return Err(last_err
                .map(|e| Failure::temporary("4.4.3", e.diagnostic))
                .unwrap_or_else(|| Failure::temporary("4.4.3", format!("no usable MX host for {domain}"))));
        }
        Ok(hosts)
    }

    async fn addresses(&self, host: &str, port: u16) -> Result<Host, Failure> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Host { name: host.to_string(), addrs: vec![SocketAddr::new(ip, port)] });
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.dns.lookup_ip(fqdn.as_str()).await {
            Ok(ips) => {
                let addrs: Vec<_> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                if addrs.is_empty() {
                    Err(Failure::permanent("5.4.4", format!("host {host} has no address")))
                } else {
                    Ok(Host { name: host.to_string(), addrs })
                }
            }
            Err(e) if e.is_no_records_found() => {
                Err(Failure::permanent("5.4.4", format!("host {host} not found")))
            }
            Err(e) => Err(Failure::temporary("4.4.3", format!("DNS lookup of {host} failed: {e}"))),
        }
    }
}
