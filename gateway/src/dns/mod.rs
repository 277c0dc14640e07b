//! DNS for every feature: one resolver (one cache) built from the config, shared by delivery
//! (MX with implicit and null MX, RFC 5321 5.1 and RFC 7505), the spam checks (DNSBL and
//! RHSBL lookups, and mail-auth's SPF/DKIM/DMARC on the same resolver) and routing.
//!
//! Unit tests that need answers use `Dns::from_zones` (zones written as text, `zones.rs`);
//! end-to-end tests run a real DNS server and point `delivery.nameservers` at it.

pub mod records;
pub mod zones;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use mail_auth::MessageAuthenticator;
use rand::seq::SliceRandom;

/// One mail host with its addresses, in the order to try them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The name to greet and verify the certificate against (or the IP as text).
    pub name: String,
    pub addrs: Vec<SocketAddr>,
}

/// Why a lookup gave no usable answer. Each variant says whether waiting can help, which is
/// what callers decide on (bounce now or retry later).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN for a mail domain: it does not exist, so it never takes mail.
    #[error("domain {0} does not exist")]
    NoSuchDomain(String),
    /// The domain publishes a null MX (RFC 7505): it takes no mail at all.
    #[error("domain {0} does not accept mail (null MX)")]
    NullMx(String),
    /// No MX and no A/AAAA: there is nowhere to deliver.
    #[error("domain {0} has no MX and no address records")]
    NoMailHost(String),
    /// The host name has no address records.
    #[error("host {0} not found")]
    HostNotFound(String),
    /// A timeout, SERVFAIL or an unreachable server: the answer may come later.
    #[error("{0}")]
    Temporary(String),
}

impl DnsError {
    /// True when asking again later cannot change the answer.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::Temporary(_))
    }
}

/// What one raw query gave, before the mail rules are applied.
enum Raw<T> {
    Records(Vec<T>),
    NxDomain,
    NoRecords,
    Failed(String),
}

// One per process: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Hickory(TokioResolver),
    Zones(zones::Zones),
}

pub struct Dns {
    backend: Backend,
    /// SPF, DKIM and DMARC (mail-auth) on the same resolver and cache.
    auth: MessageAuthenticator,
    /// The records mail-auth parsed, until their TTL ends.
    auth_records: records::AuthRecords,
}

/// Names each of mail-auth's record caches holds (sender domains, DKIM selectors).
const AUTH_RECORDS: u64 = 10_000;

/// A resolver config for `nameservers` (UDP and TCP each); `None` means the system's.
fn resolver_config(nameservers: &[SocketAddr]) -> Option<ResolverConfig> {
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

/// `nameservers`, or the system's resolv.conf when empty.
///
/// Answers are cached by their TTL. A blocklist's "not listed" is an NXDOMAIN, the answer to
/// nearly every lookup; servers that send it without an SOA (so without a negative TTL) would
/// otherwise be asked again for every message, so negative answers are kept at least 30 s.
fn build_resolver(nameservers: &[SocketAddr]) -> anyhow::Result<TokioResolver> {
    let (config, mut opts) = match resolver_config(nameservers) {
        Some(config) => (config, ResolverOpts::default()),
        None => hickory_resolver::system_conf::read_system_conf()?,
    };
    opts.cache_size = opts.cache_size.max(4096);
    opts.negative_min_ttl = Some(Duration::from_secs(30));
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    *builder.options_mut() = opts;
    Ok(builder.build()?)
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

impl Dns {
    /// The gateway's resolver: `nameservers` (UDP and TCP), or the system's when empty.
    pub fn new(nameservers: &[SocketAddr]) -> anyhow::Result<Self> {
        let resolver = build_resolver(nameservers)?;
        Ok(Self {
            auth: MessageAuthenticator(resolver.clone()),
            auth_records: records::AuthRecords::new(AUTH_RECORDS),
            backend: Backend::Hickory(resolver),
        })
    }

    /// A resolver that answers from zone text (see `zones.rs`), for unit tests. mail-auth's
    /// checks are not served from the zones: they would time out against a closed port.
    pub fn from_zones(text: &str) -> anyhow::Result<Self> {
        let zones = zones::Zones::parse(text)?;
        let unreachable = build_resolver(&[SocketAddr::from(([127, 0, 0, 1], 9))])?;
        Ok(Self {
            auth: MessageAuthenticator(unreachable),
            auth_records: records::AuthRecords::new(AUTH_RECORDS),
            backend: Backend::Zones(zones),
        })
    }

    /// SPF, DKIM and DMARC checks (mail-auth), sharing this resolver's cache.
    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.auth
    }

    /// `params` for a mail-auth check, with the parsed-record caches attached.
    pub fn auth_params<P>(&self, params: P) -> records::Cached<'_, P> {
        self.auth_records.with(params)
    }

    /// Whether `name` has an A record (a DNS blocklist listing), with the codes listed. Lookup
    /// errors count as "not listed" (a broken blocklist must not stop mail) and are logged.
    pub async fn is_listed(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        match self.ipv4(&fqdn(name)).await {
            Raw::Records(ips) => (!ips.is_empty()).then_some(ips),
            Raw::NxDomain | Raw::NoRecords => None,
            Raw::Failed(e) => {
                tracing::warn!(name, error = %e, "DNS blocklist lookup failed; treated as not listed");
                None
            }
        }
    }

    /// The mail hosts of `domain`, best first: its MX hosts by preference (equal preferences in
    /// random order, RFC 5321 5.1), or the domain itself when it has no MX (implicit MX).
    pub async fn mail_hosts(&self, domain: &str, port: u16) -> Result<Vec<Host>, DnsError> {
        let mut mxs = match self.mx(&fqdn(domain)).await {
            Raw::Records(mxs) => mxs,
            Raw::NxDomain => return Err(DnsError::NoSuchDomain(domain.to_string())),
            // No MX: the domain itself is the implicit MX (RFC 5321 5.1).
            Raw::NoRecords => {
                return match self.host(domain, port).await {
                    Ok(h) => Ok(vec![h]),
                    Err(e) if e.is_permanent() => Err(DnsError::NoMailHost(domain.to_string())),
                    Err(e) => Err(e),
                };
            }
            Raw::Failed(e) => {
                return Err(DnsError::Temporary(format!("DNS lookup of MX {domain} failed: {e}")));
            }
        };
        if mxs.len() == 1 && (mxs[0].1 == "." || mxs[0].1.is_empty()) {
            return Err(DnsError::NullMx(domain.to_string()));
        }
        mxs.retain(|(_, host)| host != "." && !host.is_empty());
        mxs.shuffle(&mut rand::rng());
        mxs.sort_by_key(|(pref, _)| *pref);
        let mut hosts = Vec::new();
        let mut last_err = None;
        for (_, exchange) in mxs {
            match self.host(exchange.trim_end_matches('.'), port).await {
                Ok(h) => hosts.push(h),
                Err(e) => last_err = Some(e),
            }
        }
        if hosts.is_empty() {
            // An MX host that does not resolve is the domain's problem, and may be fixed.
            let why = last_err.map_or_else(|| format!("no usable MX host for {domain}"), |e| e.to_string());
            return Err(DnsError::Temporary(why));
        }
        Ok(hosts)
    }

    /// Whether `domain` could receive a reply (a sender domain check): an MX that is not null,
    /// or, without MX, an address record. Cheaper than `mail_hosts`: the MX hosts themselves
    /// are not resolved.
    pub async fn accepts_mail(&self, domain: &str) -> Result<(), DnsError> {
        match self.mx(&fqdn(domain)).await {
            Raw::Records(mxs) if mxs.len() == 1 && (mxs[0].1 == "." || mxs[0].1.is_empty()) => {
                Err(DnsError::NullMx(domain.to_string()))
            }
            Raw::Records(mxs) if !mxs.is_empty() => Ok(()),
            Raw::NxDomain => Err(DnsError::NoSuchDomain(domain.to_string())),
            Raw::Records(_) | Raw::NoRecords => match self.host(domain, 25).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => Err(DnsError::NoMailHost(domain.to_string())),
                Err(e) => Err(e),
            },
            Raw::Failed(e) => Err(DnsError::Temporary(format!("DNS lookup of MX {domain} failed: {e}"))),
        }
    }

    /// The forward-confirmed reverse DNS name of `ip` (FCrDNS): a name its PTR records give
    /// whose own addresses include `ip`. `Ok(None)`: no PTR, or none of (the first five of) its
    /// names leads back. `Err`: DNS could not say.
    pub async fn confirmed_name(&self, ip: IpAddr) -> Result<Option<String>, DnsError> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let names = match self.ptr(ip).await {
            Raw::Records(names) => names,
            Raw::NxDomain | Raw::NoRecords => return Ok(None),
            Raw::Failed(e) => return Err(DnsError::Temporary(format!("PTR lookup of {ip} failed: {e}"))),
        };
        let mut trouble = None;
        for name in names.iter().take(5) {
            match self.ips(&fqdn(name)).await {
                Raw::Records(ips) if ips.contains(&ip) => {
                    return Ok(Some(name.trim_end_matches('.').to_string()));
                }
                Raw::Failed(e) => {
                    trouble = Some(DnsError::Temporary(format!("lookup of {name} failed: {e}")))
                }
                _ => {}
            }
        }
        trouble.map_or(Ok(None), Err)
    }

    /// A host's addresses (a literal IP is its own answer).
    pub async fn host(&self, host: &str, port: u16) -> Result<Host, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Host { name: host.to_string(), addrs: vec![SocketAddr::new(ip, port)] });
        }
        match self.ips(&fqdn(host)).await {
            Raw::Records(ips) if !ips.is_empty() => Ok(Host {
                name: host.to_string(),
                addrs: ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(),
            }),
            Raw::Records(_) | Raw::NxDomain | Raw::NoRecords => Err(DnsError::HostNotFound(host.to_string())),
            Raw::Failed(e) => Err(DnsError::Temporary(format!("DNS lookup of {host} failed: {e}"))),
        }
    }

    async fn mx(&self, name: &str) -> Raw<(u16, String)> {
        match &self.backend {
            Backend::Zones(z) => z.mx(name),
            Backend::Hickory(r) => match r.mx_lookup(name).await {
                Ok(l) => Raw::Records(
                    l.answers()
                        .iter()
                        .filter_map(|r| match &r.data {
                            RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                            _ => None,
                        })
                        .collect(),
                ),
                Err(e) => raw_error(&e),
            },
        }
    }

    async fn ptr(&self, ip: IpAddr) -> Raw<String> {
        match &self.backend {
            Backend::Zones(z) => z.ptr(&reverse_name(ip)),
            Backend::Hickory(r) => match r.reverse_lookup(ip).await {
                Ok(l) => Raw::Records(
                    l.answers()
                        .iter()
                        .filter_map(|r| match &r.data {
                            RData::PTR(ptr) => Some(ptr.0.to_ascii()),
                            _ => None,
                        })
                        .collect(),
                ),
                Err(e) => raw_error(&e),
            },
        }
    }

    async fn ips(&self, name: &str) -> Raw<IpAddr> {
        match &self.backend {
            Backend::Zones(z) => z.ips(name),
            Backend::Hickory(r) => match r.lookup_ip(name).await {
                Ok(ips) => Raw::Records(ips.iter().collect()),
                Err(e) => raw_error(&e),
            },
        }
    }

    async fn ipv4(&self, name: &str) -> Raw<Ipv4Addr> {
        match &self.backend {
            Backend::Zones(z) => z.ipv4(name),
            Backend::Hickory(r) => match r.ipv4_lookup(name).await {
                Ok(l) => Raw::Records(
                    l.answers()
                        .iter()
                        .filter_map(|r| match &r.data {
                            RData::A(a) => Some(a.0),
                            _ => None,
                        })
                        .collect(),
                ),
                Err(e) => raw_error(&e),
            },
        }
    }
}

fn raw_error<T>(e: &hickory_resolver::net::NetError) -> Raw<T> {
    if e.is_nx_domain() {
        Raw::NxDomain
    } else if e.is_no_records_found() {
        Raw::NoRecords
    } else {
        Raw::Failed(e.to_string())
    }
}

/// The in-addr.arpa / ip6.arpa name of `ip`, as PTR records are published under.
fn reverse_name(ip: IpAddr) -> String {
    hickory_resolver::proto::rr::Name::from(ip).to_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONES: &str = "
        ; two MX at 10 share load, the one at 20 is the backup
        multi.test.      MX 20 backup.multi.test.
        multi.test.      MX 10 a.multi.test.
        multi.test.      MX 10 b.multi.test.
        a.multi.test.    A 192.0.2.1
        b.multi.test.    A 192.0.2.2
        backup.multi.test. AAAA 2001:db8::20
        implicit.test.   A 192.0.2.9
        nomail.test.     MX 0 .
        broken.test.     MX 10 nowhere.broken.test.
        textonly.test.   TXT v=spf1 -all
        1.2.0.192.bl.test. A 127.0.0.2
        ; reverse DNS: 192.0.2.1 confirms; 192.0.2.2's name points elsewhere
        1.2.0.192.in-addr.arpa. PTR a.multi.test.
        2.2.0.192.in-addr.arpa. PTR liar.test.
        liar.test. A 198.51.100.1
    ";

    fn names(hosts: &[Host]) -> Vec<&str> {
        hosts.iter().map(|h| h.name.as_str()).collect()
    }

    #[tokio::test]
    async fn mx_hosts_by_preference_with_addresses() {
        let dns = Dns::from_zones(ZONES).unwrap();
        let hosts = dns.mail_hosts("multi.test", 25).await.unwrap();
        let n = names(&hosts);
        assert_eq!(n.len(), 3);
        assert!(n[..2].contains(&"a.multi.test") && n[..2].contains(&"b.multi.test"), "{n:?}");
        assert_eq!(hosts[2].addrs, ["[2001:db8::20]:25".parse().unwrap()]);
    }

    #[tokio::test]
    async fn a_sender_domain_accepts_mail_with_an_mx_or_an_address() {
        let dns = Dns::from_zones(ZONES).unwrap();
        for ok in ["multi.test", "implicit.test", "broken.test"] {
            assert_eq!(dns.accepts_mail(ok).await, Ok(()), "{ok}");
        }
        assert_eq!(dns.accepts_mail("nomail.test").await, Err(DnsError::NullMx("nomail.test".into())));
        assert_eq!(dns.accepts_mail("gone.test").await, Err(DnsError::NoSuchDomain("gone.test".into())));
        assert_eq!(
            dns.accepts_mail("textonly.test").await,
            Err(DnsError::NoMailHost("textonly.test".into()))
        );
    }

    #[tokio::test]
    async fn reverse_dns_counts_only_when_it_leads_back() {
        let dns = Dns::from_zones(ZONES).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(dns.confirmed_name(ip("192.0.2.1")).await, Ok(Some("a.multi.test".into())));
        assert_eq!(dns.confirmed_name(ip("::ffff:192.0.2.1")).await, Ok(Some("a.multi.test".into())));
        assert_eq!(dns.confirmed_name(ip("192.0.2.2")).await, Ok(None));
        assert_eq!(dns.confirmed_name(ip("192.0.2.3")).await, Ok(None));
    }

    #[tokio::test]
    async fn implicit_null_and_missing_mx() {
        let dns = Dns::from_zones(ZONES).unwrap();
        let implicit = dns.mail_hosts("implicit.test", 2525).await.unwrap();
        assert_eq!(implicit[0].addrs, ["192.0.2.9:2525".parse().unwrap()]);
        assert_eq!(dns.mail_hosts("nomail.test", 25).await, Err(DnsError::NullMx("nomail.test".into())));
        assert_eq!(dns.mail_hosts("gone.test", 25).await, Err(DnsError::NoSuchDomain("gone.test".into())));
        assert_eq!(
            dns.mail_hosts("textonly.test", 25).await,
            Err(DnsError::NoMailHost("textonly.test".into()))
        );
        // An MX pointing nowhere may be fixed by its owner: temporary.
        let broken = dns.mail_hosts("broken.test", 25).await.unwrap_err();
        assert!(!broken.is_permanent(), "{broken}");
    }

    #[tokio::test]
    async fn blocklist_listings() {
        let dns = Dns::from_zones(ZONES).unwrap();
        assert_eq!(dns.is_listed("1.2.0.192.bl.test").await, Some(vec![Ipv4Addr::new(127, 0, 0, 2)]));
        assert_eq!(dns.is_listed("2.2.0.192.bl.test").await, None);
        assert_eq!(dns.host("192.0.2.7", 25).await.unwrap().addrs, ["192.0.2.7:25".parse().unwrap()]);
    }
}
