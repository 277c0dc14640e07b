//! Loading and checking a `GatewayConfig`. Every error names the field it is about, as a path
//! such as `domains[1].primary.hosts[0]`, so that `check-config` and the operator's
//! `ConfigValid` condition can say exactly what is wrong.

use std::collections::HashSet;
use std::fmt;

use crate::config::{Destination, GatewayConfig};

/// One problem found in a config, with the path of the field it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Why a config could not be used: it did not parse, or it parsed and has problems.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(FieldError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// Every problem, one per entry.
    pub fn problems(&self) -> Vec<FieldError> {
        match self {
            Self::Parse(e) => vec![e.clone()],
            Self::Invalid(v) => v.clone(),
        }
    }
}

/// Parses YAML text into a config and checks it.
pub fn load_gateway_config(text: &str) -> Result<GatewayConfig, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let config: GatewayConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = yaml_path(e.path());
        let mut message = e.inner().to_string();
        // serde_yaml starts its message with the path too; say it once. Its " at line L
        // column C" stays: it helps a person find the spot.
        // (it names the field, or for custom errors its parent).
        if let Some((head, rest)) = message.split_once(": ")
            && !head.is_empty()
            && field.starts_with(head)
        {
            message = rest.to_string();
        }
        ConfigError::Parse(FieldError { field, message })
    })?;
    validate(&config).map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// serde_path_to_error prints `a.b[0].c`; the root is "." which we show as empty.
fn yaml_path(path: &serde_path_to_error::Path) -> String {
    let p = path.to_string();
    if p == "." { String::new() } else { p }
}

/// Checks what the types alone cannot: non-empty lists, unique names, sane ranges.
pub fn validate(c: &GatewayConfig) -> Result<(), Vec<FieldError>> {
    let mut errs = Errors::default();

    if !is_domain_name(&c.hostname) {
        errs.add("hostname", format!("{:?} is not a valid host name", c.hostname));
    }
    if c.listeners.is_empty() {
        errs.add("listeners", "at least one listener is required");
    }
    if let Some(m) = &c.mta_sts {
        if m.max_age.get().is_zero() {
            errs.add("mtaSts.maxAge", "must be more than 0 (senders cache the policy this long)");
        }
        for (i, host) in m.mx.iter().enumerate() {
            if !is_domain_name(host.strip_prefix("*.").unwrap_or(host)) {
                errs.add(format!("mtaSts.mx[{i}]"), "a host name or *.domain pattern");
            }
        }
    }
    if let Some(k) = &c.admin.kubernetes {
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !label(&k.namespace) {
            errs.add("admin.kubernetes.namespace", "a Kubernetes namespace name (a DNS label)");
        }
        if k.api_server.as_deref().is_some_and(|u| !u.starts_with("https://")) {
            errs.add("admin.kubernetes.apiServer", "an https:// URL (tokens are sent to it)");
        }
    }
    if let Some(u) = &c.admin.public_url {
        let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://")).unwrap_or_default();
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty()
            || u.contains(['?', '#'])
            || u.chars().any(|ch| ch.is_whitespace() || ch.is_control())
        {
            errs.add("admin.publicUrl", "an https:// (or http://) URL without query or fragment");
        }
    }
    let mut addrs = HashSet::new();
    let mut names = HashSet::new();
    for (i, l) in c.listeners.iter().enumerate() {
        // Port 0 asks the OS for a free port, so it can never clash.
        if l.address.port() != 0 && !addrs.insert(l.address) {
            errs.add(format!("listeners[{i}].address"), format!("{} is used twice", l.address));
        }
        if !names.insert(l.name.as_str()) {
            errs.add(format!("listeners[{i}].name"), format!("{:?} is used twice", l.name));
        }
        if l.proxy_protocol && l.trusted_proxies.is_empty() {
            errs.add(
                format!("listeners[{i}].trustedProxies"),
                "proxyProtocol needs the load balancers' networks (0.0.0.0/0 and ::/0 trust every peer)",
            );
        }
        if !l.proxy_protocol && !l.trusted_proxies.is_empty() {
            errs.add(format!("listeners[{i}].trustedProxies"), "set only with proxyProtocol: true");
        }
        if l.address.port() != 0 && l.address == c.admin.address {
            errs.add(format!("listeners[{i}].address"), "same address as admin.address");
        }
        if l.tls.is_none() {
            if l.role.is_submission() {
                errs.add(format!("listeners[{i}].tls"), format!("role {:?} needs tls", l.role));
            } else if l.offers_auth() {
                errs.add(format!("listeners[{i}].auth"), "AUTH is offered only under TLS: set tls too");
            }
        }
    }
    if let Some(i) = c.listeners.iter().position(|l| l.offers_auth())
        && c.auth.users_file.is_none()
    {
        errs.add("auth.usersFile", format!("listeners[{i}] offers AUTH, but no users file is set"));
    }
    check_submission(&mut errs, c);
    check_relay(&mut errs, c);

    if c.store.embedded.is_some() && c.store.redis.is_some() {
        errs.add("store", "set either embedded or redis, not both");
    }
    if let Some(r) = &c.store.redis {
        for (i, url) in std::iter::once(&r.url).chain(&r.urls).enumerate() {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                let field = if i == 0 {
                    "store.redis.url".to_string()
                } else {
                    format!("store.redis.urls[{}]", i - 1)
                };
                errs.add(field, format!("{url:?} must start with redis:// or rediss://"));
            }
        }
        if !r.urls.is_empty() && !r.cluster {
            errs.add("store.redis.urls", "more than one URL needs cluster: true");
        }
        if r.key_prefix.is_empty() || r.key_prefix.contains(['{', '}']) {
            errs.add("store.redis.keyPrefix", "must be non-empty and without braces");
        }
        if !(1..=256).contains(&r.partitions) {
            errs.add("store.redis.partitions", format!("{} is not between 1 and 256", r.partitions));
        }
    }

    if let Some(pm) = &c.postmaster {
        let ok = pm.rsplit_once('@').is_some_and(|(l, d)| !l.is_empty() && is_domain_name(d));
        if !ok || pm.chars().any(|ch| ch.is_control() || ch == ' ') {
            errs.add("postmaster", format!("{pm:?} is not an address (user@domain)"));
        }
    }

    let lim = &c.limits;
    for (field, value) in [
        ("limits.maxMessageSize", lim.max_message_size),
        ("limits.maxRecipients", u64::from(lim.max_recipients)),
        ("limits.maxConnections", u64::from(lim.max_connections)),
        ("limits.maxConnectionsPerIp", u64::from(lim.max_connections_per_ip)),
        ("limits.maxErrors", u64::from(lim.max_errors)),
        ("limits.maxMessagesPerSession", u64::from(lim.max_messages_per_session)),
    ] {
        if value == 0 {
            errs.add(field, "must be greater than 0");
        }
    }
    if lim.max_connections_per_ip > lim.max_connections {
        errs.add("limits.maxConnectionsPerIp", "must not exceed limits.maxConnections");
    }
    if lim.reserved_trusted_connections >= lim.max_connections {
        errs.add(
            "limits.reservedTrustedConnections",
            "must be less than limits.maxConnections (untrusted clients need a slot too)",
        );
    }
    for (field, d) in [
        ("limits.commandTimeout", lim.command_timeout),
        ("limits.dataTimeout", lim.data_timeout),
        ("limits.envelopeCheckTimeout", lim.envelope_check_timeout),
        ("limits.contentCheckTimeout", lim.content_check_timeout),
    ] {
        if d.get().is_zero() {
            errs.add(field, "must be longer than 0s");
        }
    }

    let mut domains = HashSet::new();
    for (i, d) in c.domains.iter().enumerate() {
        let name = d.name.to_ascii_lowercase();
        if !is_domain_name(&name) {
            errs.add(format!("domains[{i}].name"), format!("{:?} is not a valid domain name", d.name));
        }
        if !domains.insert(name) {
            errs.add(format!("domains[{i}].name"), format!("{:?} is listed twice", d.name));
        }
        let field = format!("domains[{i}]");
        check_destination(&mut errs, &format!("{field}.primary"), &d.primary);
        check_directory(&mut errs, &field, d);
        if let Some(policy) = &d.routing {
            check_destination(&mut errs, &format!("{field}.routing.destination"), &policy.destination);
            if policy.destination == d.primary {
                errs.add(format!("{field}.routing.destination"), "must differ from the primary destination");
            }
            if let Some(addr) = &policy.verification_address
                && !addr.contains('@')
            {
                errs.add(
                    format!("{field}.routing.verificationAddress"),
                    format!("{addr:?} is not an address"),
                );
            }
        }
    }
    for (i, d) in c.domains.iter().enumerate() {
        let Some(name) = &d.spam_policy else { continue };
        let Some(policy) = c.spam_policies.get(name) else {
            errs.add(
                format!("domains[{i}].spamPolicy"),
                format!("no spam policy named {name:?} in spamPolicies"),
            );
            continue;
        };
        // Block-listing the TLD of a served domain would refuse the domain's own mail.
        let tld = d.name.rsplit('.').next().unwrap_or_default().to_ascii_lowercase();
        if let Some(k) =
            policy.block_list.tlds.iter().position(|t| t.trim_start_matches('.').eq_ignore_ascii_case(&tld))
        {
            errs.add(
                format!("spamPolicies.{name}.blockList.tlds[{k}]"),
                format!("{tld:?} is the top-level domain of served domain {}", d.name),
            );
        }
    }
    for (name, policy) in &c.spam_policies {
        let field = format!("spamPolicies.{name}");
        if !policy.spam_header.is_empty() && !is_header_line(&policy.spam_header) {
            errs.add(format!("{field}.spamHeader"), "must be \"Name: value\"");
        }
        let warnings = &policy.sender_warnings;
        for (which, w) in [("unauthenticated", &warnings.unauthenticated), ("external", &warnings.external)] {
            if let Some(w) = w
                && !is_header_line(&w.header)
            {
                errs.add(format!("{field}.senderWarnings.{which}.header"), "must be \"Name: value\"");
            }
        }
        let n = &policy.notifications;
        for (which, addr) in [("admin", &n.admin), ("from", &n.from)] {
            if let Some(a) = addr
                && !a.contains('@')
            {
                errs.add(format!("{field}.notifications.{which}"), format!("{a:?} is not an address"));
            }
        }
        if n.enabled && n.interval.get() < std::time::Duration::from_secs(1) {
            errs.add(format!("{field}.notifications.interval"), "must be at least 1s");
        }
    }
    if let Some(gw) = &c.delivery.outbound_gateway
        && let Err(e) = parse_host_port(&gw.host, 25)
    {
        errs.add("delivery.outboundGateway.host", e);
    }

    let del = &c.delivery;
    if del.concurrency == 0 {
        errs.add("delivery.concurrency", "must be greater than 0");
    }
    if del.concurrency_per_destination == 0 {
        errs.add("delivery.concurrencyPerDestination", "must be greater than 0");
    }
    if del.mx_port == 0 {
        errs.add("delivery.mxPort", "must be a port number from 1 to 65535");
    }
    if del.retry_initial.get().is_zero() {
        errs.add("delivery.retryInitial", "must be longer than 0s");
    }
    if del.retry_initial > del.retry_max {
        errs.add("delivery.retryMax", "must not be shorter than delivery.retryInitial");
    }
    if del.lifetime.get().is_zero() {
        errs.add("delivery.lifetime", "must be longer than 0s");
    }
    if del.lease_timeout.get().as_secs() < 10 {
        errs.add("delivery.leaseTimeout", "must be at least 10s");
    }

    check_accounts(&mut errs, c);
    errs.finish()
}

/// `local@domain` with a non-empty local part and a DNS domain.
fn is_address(a: &str) -> bool {
    a.rsplit_once('@').is_some_and(|(l, d)| !l.is_empty() && is_domain_name(d))
}

/// An https:// URL, or http:// to a loopback address (a test's stand-in): tokens and mail
/// travel on it.
fn is_secure_url(url: &str) -> bool {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    if let Some(rest) = url.strip_prefix("https://") {
        return !rest.is_empty() && !rest.starts_with('/');
    }
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Accounts have unique names and senders, real addresses, and what their type needs; no
/// password goes over a connection without TLS.
fn check_accounts(errs: &mut Errors, c: &GatewayConfig) {
    use crate::accounts::{AccountType, SmtpSecurity};
    let mut names = HashSet::new();
    let mut senders = HashSet::new();
    for (i, a) in c.accounts.iter().enumerate() {
        let f = |field: &str| format!("accounts[{i}].{field}");
        let name_ok = !a.name.is_empty()
            && a.name.len() <= 63
            && a.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            errs.add(f("name"), "1-63 letters, digits, '-', '_' or '.'");
        } else if !names.insert(a.name.as_str()) {
            errs.add(f("name"), format!("{:?} is used twice", a.name));
        }
        let from_ok = match a.from.strip_prefix('@') {
            Some(d) => is_domain_name(d),
            None => is_address(&a.from),
        };
        if !from_ok {
            errs.add(f("from"), "an address (alice@example.com) or a domain (@example.com)");
        } else if !senders.insert(a.from.to_ascii_lowercase()) {
            errs.add(f("from"), format!("{} has another account already", a.from));
        }
        if a.bcc.as_deref().is_some_and(|b| !is_address(b)) {
            errs.add(f("bcc"), "an address");
        }
        if a.display_name.as_deref().is_some_and(|n| n.trim().is_empty() || n.chars().any(char::is_control)) {
            errs.add(f("displayName"), "a name without line breaks or control characters");
        }
        match (a.kind, &a.smtp) {
            (AccountType::Direct, _) => match &a.direct {
                None => errs.add(f("direct"), "type Direct needs the direct block"),
                Some(d) => {
                    let label = !d.selector.is_empty()
                        && d.selector.split('.').all(|l| !l.is_empty() && l.len() <= 63)
                        && is_domain_name(&d.selector);
                    if !label {
                        errs.add(f("direct.selector"), "a DNS label (or dotted labels)");
                    }
                }
            },
            (AccountType::Microsoft365 | AccountType::Gmail, _) => match &a.oauth {
                None => errs.add(f("oauth"), "types Microsoft365 and Gmail need the oauth block"),
                Some(o) => {
                    if o.client_id.trim().is_empty() {
                        errs.add(f("oauth.clientId"), "the app's client id");
                    }
                    if o.grant == crate::accounts::OAuthGrant::ClientCredentials {
                        if a.kind != AccountType::Microsoft365 {
                            errs.add(f("oauth.grant"), "ClientCredentials is for Microsoft365 only");
                        }
                        if o.client_secret_file.is_none() {
                            errs.add(
                                f("oauth.clientSecretFile"),
                                "ClientCredentials needs the client secret",
                            );
                        }
                    }
                    let e = o.endpoints(a.kind);
                    for (field, url) in [
                        ("oauth.authorizationUrl", &e.authorization_url),
                        ("oauth.tokenUrl", &e.token_url),
                        ("oauth.apiUrl", &e.api_url),
                    ] {
                        if !is_secure_url(url) {
                            errs.add(f(field), "an https:// URL (http:// only to a loopback address)");
                        }
                    }
                    if o.send == crate::accounts::OAuthSend::Smtp {
                        if o.grant == crate::accounts::OAuthGrant::ClientCredentials {
                            errs.add(
                                f("oauth.send"),
                                "SMTP XOAUTH2 needs a user's grant (AuthorizationCode)",
                            );
                        }
                        if o.smtp_username.as_deref().map_or(a.from.starts_with('@'), |u| !is_address(u)) {
                            errs.add(
                                f("oauth.smtpUsername"),
                                "the mailbox's address (an @domain account has none of its own)",
                            );
                        }
                        if o.smtp_host.as_deref().is_some_and(|h| parse_host_port(h, 587).is_err()) {
                            errs.add(f("oauth.smtpHost"), "host:port");
                        }
                    }
                    let consent = o.grant == crate::accounts::OAuthGrant::AuthorizationCode;
                    if consent && c.oauth.token_key_file.is_none() {
                        errs.add(
                            "oauth.tokenKeyFile",
                            "OAuth accounts need the key that encrypts their tokens",
                        );
                    }
                    if consent && c.admin.public_url.is_none() {
                        errs.add(
                            "admin.publicUrl",
                            "OAuth accounts need it: the provider sends the grant back to <publicUrl>/oauth/callback",
                        );
                    }
                }
            },
            (AccountType::Exchange, _) => match &a.exchange {
                None => errs.add(f("exchange"), "type Exchange needs the exchange block"),
                Some(x) => {
                    if !is_secure_url(&x.url) {
                        errs.add(f("exchange.url"), "an https:// URL (http:// only to a loopback address)");
                    }
                    if !is_address(&x.username) {
                        errs.add(f("exchange.username"), "the login in user@domain form");
                    }
                }
            },
            (AccountType::Smtp, None) => errs.add(f("smtp"), "type Smtp needs the smtp block"),
            (AccountType::Smtp, Some(s)) => {
                let host = s.host.trim_matches(['[', ']']);
                if !is_domain_name(host) && host.parse::<std::net::IpAddr>().is_err() {
                    errs.add(f("smtp.host"), "a host name or IP address");
                }
                if s.port == Some(0) {
                    errs.add(f("smtp.port"), "must be greater than 0");
                }
                match (&s.username, &s.password_file) {
                    (Some(_), None) => errs.add(f("smtp.passwordFile"), "a username needs its password"),
                    (None, Some(_)) => errs.add(f("smtp.username"), "a password needs its username"),
                    (Some(_), Some(_)) if s.security == SmtpSecurity::None => {
                        errs.add(f("smtp.security"), "a login is never sent without TLS: use StartTls or Tls")
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Relay rules name real addresses, domains and HELO names; the external postmaster is an
/// address; an early-talker check has a delay to talk in.
fn check_relay(errs: &mut Errors, c: &GatewayConfig) {
    let is_address_or_domain = |a: &str| match a.strip_prefix('@') {
        Some(d) => is_domain_name(d),
        None => is_address(a),
    };
    for (i, r) in c.relay.rules.iter().enumerate() {
        for (k, h) in r.helo_names.iter().enumerate() {
            if !is_domain_name(h.strip_prefix('.').unwrap_or(h)) {
                errs.add(
                    format!("relay.rules[{i}].heloNames[{k}]"),
                    format!("{h:?} is not a host name or .domain"),
                );
            }
        }
        for (k, a) in r.senders.iter().enumerate() {
            if a != "<>" && !is_address_or_domain(a) {
                errs.add(
                    format!("relay.rules[{i}].senders[{k}]"),
                    format!("{a:?} is not an address, @domain or <>"),
                );
            }
        }
        for (k, a) in r.recipients.iter().enumerate() {
            if !is_address_or_domain(a) {
                errs.add(
                    format!("relay.rules[{i}].recipients[{k}]"),
                    format!("{a:?} is not an address or @domain"),
                );
            }
        }
    }
    if let Some(pm) = &c.relay.external_postmaster
        && !is_address(&pm.address)
    {
        errs.add("relay.externalPostmaster.address", format!("{:?} is not an address", pm.address));
    }
    let cp = &c.connection_policy;
    if cp.early_talkers != crate::relay::CheckAction::Off && cp.greeting_delay.get().is_zero() {
        errs.add("connectionPolicy.greetingDelay", "must be longer than 0s to catch early talkers");
    }
    if cp.greeting_delay.get() > std::time::Duration::from_secs(30) {
        errs.add(
            "connectionPolicy.greetingDelay",
            "must be at most 30s (clients give up on a slow greeting)",
        );
    }
}

/// Failed-login handling and rate limits: sane numbers, and counts that fit their key.
fn check_submission(errs: &mut Errors, c: &GatewayConfig) {
    use crate::submission::{RateCount, RateKey};
    let failed = &c.auth.failed_logins;
    if failed.max == 0 {
        errs.add("auth.failedLogins.max", "must be greater than 0");
    }
    for (field, d) in
        [("auth.failedLogins.window", failed.window), ("auth.failedLogins.lockout", failed.lockout)]
    {
        if d.get().is_zero() {
            errs.add(field, "must be longer than 0s");
        }
    }
    if failed.delay > failed.max_delay {
        errs.add("auth.failedLogins.maxDelay", "must not be shorter than auth.failedLogins.delay");
    }
    for (i, r) in c.rate_limits.iter().enumerate() {
        if r.limit == 0 {
            errs.add(format!("rateLimits[{i}].limit"), "must be greater than 0");
        }
        if r.per.get().as_millis() < 1000 {
            errs.add(format!("rateLimits[{i}].per"), "must be at least 1s");
        }
        if r.count == RateCount::Connections && r.key != RateKey::ClientIp {
            errs.add(format!("rateLimits[{i}].key"), "connections are counted per clientIp only");
        }
    }
}

/// Every account, alias and group address is in the domain and listed once. Group members may
/// be anything: members in other domains are relayed.
fn check_directory(errs: &mut Errors, field: &str, d: &crate::config::MailDomainConfig) {
    let mut seen = HashSet::new();
    let mut check = |errs: &mut Errors, path: String, addr: &str| {
        let full = qualify(addr, &d.name);
        if full.is_empty() || full.starts_with('@') || full.ends_with('@') {
            errs.add(path, format!("{addr:?} is not an address or local part"));
        } else if !full.ends_with(&format!("@{}", d.name.to_ascii_lowercase())) {
            errs.add(path, format!("{addr:?} is not in domain {}", d.name));
        } else if !seen.insert(full) {
            errs.add(path, format!("{addr:?} is listed twice"));
        }
    };
    for (a, acct) in d.accounts.iter().enumerate() {
        check(errs, format!("{field}.accounts[{a}].address"), &acct.address);
        for (k, alias) in acct.aliases.iter().enumerate() {
            check(errs, format!("{field}.accounts[{a}].aliases[{k}]"), alias);
        }
    }
    for (g, group) in d.groups.iter().enumerate() {
        check(errs, format!("{field}.groups[{g}].address"), &group.address);
        if group.members.is_empty() {
            errs.add(format!("{field}.groups[{g}].members"), "a group needs at least one member");
        }
    }
}

/// "alice" -> "alice@domain"; "alice@Other.Test" -> "alice@other.test" (lower case).
pub fn qualify(address: &str, domain: &str) -> String {
    let a = address.trim();
    if a.contains('@') { a.to_ascii_lowercase() } else { format!("{}@{}", a, domain).to_ascii_lowercase() }
}

fn check_destination(errs: &mut Errors, field: &str, d: &Destination) {
    match (&d.mx, d.hosts.is_empty()) {
        (Some(_), false) => errs.add(field, "set either mx or hosts, not both"),
        (None, true) => errs.add(field, "set mx (a domain) or hosts (a list)"),
        (Some(mx), true) if !is_domain_name(mx) => {
            errs.add(format!("{field}.mx"), format!("{mx:?} is not a valid domain name"))
        }
        _ => {}
    }
    for (i, h) in d.hosts.iter().enumerate() {
        if let Err(e) = parse_host_port(h, 25) {
            errs.add(format!("{field}.hosts[{i}]"), e);
        }
    }
}

/// Splits "host", "host:port", "[v6]:port", "[v6]" or a bare IP into (host, port).
pub fn parse_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad_port = |p: &str| format!("{p:?} in {s:?} is not a port number");
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("{s:?}: missing ']'"))?;
        host.parse::<std::net::IpAddr>().map_err(|_| format!("{host:?} in {s:?} is not an IP address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok().filter(|&p: &u16| p != 0).ok_or_else(|| bad_port(p))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("{s:?}: unexpected {after:?} after ']'")),
        };
        return Ok((host.to_string(), port));
    }
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok((s.to_string(), default_port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok().filter(|&p: &u16| p != 0).ok_or_else(|| bad_port(p))?),
        None => (s, default_port),
    };
    if host.parse::<std::net::Ipv4Addr>().is_err() && !is_domain_name(host) {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok((host.to_string(), port))
}

/// A DNS name: dot-separated labels of letters, digits and hyphens (not at a label's ends),
/// at most 253 characters. An optional trailing dot is allowed.
/// "Name: value" with a valid field name (RFC 5322 ftext) and no line breaks.
fn is_header_line(line: &str) -> bool {
    let Some((name, _)) = line.split_once(':') else { return false };
    !name.is_empty()
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
        && !line.contains(['\r', '\n'])
}

pub fn is_domain_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }

    fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "hostname: mx.example.test\nlisteners:\n  - address: 127.0.0.1:2525\n";

    #[test]
    fn a_minimal_file_is_a_whole_config() {
        let c = load_gateway_config(MINIMAL).unwrap();
        assert_eq!(c.listeners[0].name, "smtp");
        assert_eq!(c.limits.max_recipients, 100);
        assert_eq!(c.delivery.lifetime.get().as_secs(), 5 * 86400);
    }

    #[test]
    fn a_type_error_names_the_field() {
        let text = format!("{MINIMAL}limits:\n  maxRecipients: lots\n");
        let err = load_gateway_config(&text).unwrap_err();
        assert!(err.to_string().starts_with("limits.maxRecipients: invalid type"), "{err}");
    }

    #[test]
    fn the_admin_public_url_is_a_plain_http_url() {
        for (url, ok) in [
            ("https://postern.example.com", true),
            ("https://postern.example.com/mail-admin/", true),
            ("ftp://postern.example.com", false),
            ("https://", false),
            ("https://postern.example.com/?a=b", false),
            ("https://postern.example.com/a b", false),
        ] {
            let text = format!("{MINIMAL}admin: {{publicUrl: '{url}'}}\n");
            match (load_gateway_config(&text), ok) {
                (Ok(_), true) => {}
                (Err(e), false) => assert!(e.to_string().contains("admin.publicUrl"), "{url}: {e}"),
                (result, _) => panic!("{url}: {result:?}"),
            }
        }
    }

    #[test]
    fn an_unknown_field_is_named() {
        let text = format!("{MINIMAL}limits:\n  maxRecipient: 5\n");
        let err = load_gateway_config(&text).unwrap_err().to_string();
        assert!(err.contains("maxRecipient"), "{err}");
    }

    #[test]
    fn submission_needs_tls_and_a_users_file() {
        let text = "hostname: mx.example.test\nlisteners:\n  - {name: sub, address: 127.0.0.1:2587, role: submission}\n  - {name: mx, address: 127.0.0.1:2525, auth: true}\n  - name: tls\n    address: 127.0.0.1:2465\n    role: submissions\n    tls: {certFile: c, keyFile: k}\nauth: {failedLogins: {max: 0}}\nrateLimits:\n  - {key: user, count: connections, limit: 0, per: 1h}\n";
        let problems = load_gateway_config(text).unwrap_err().problems();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "listeners[0].tls",
                "listeners[1].auth",
                "auth.usersFile",
                "auth.failedLogins.max",
                "rateLimits[0].limit",
                "rateLimits[0].key"
            ]
        );
    }

    #[test]
    fn proxy_protocol_needs_trusted_proxies_and_only_it_takes_them() {
        let text = "hostname: mx.example.test\nlisteners:\n  - {name: lb, address: 127.0.0.1:2525, proxyProtocol: true}\n  - {name: mx, address: 127.0.0.1:2526, trustedProxies: [10.0.0.0/8]}\n  - {name: ok, address: 127.0.0.1:2527, proxyProtocol: true, trustedProxies: [10.0.0.0/8, 'fd00::/8']}\n";
        let problems = load_gateway_config(text).unwrap_err().problems();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["listeners[0].trustedProxies", "listeners[1].trustedProxies"]);
    }

    #[test]
    fn relay_rules_and_policies_name_their_bad_fields() {
        let text = format!(
            "{MINIMAL}relay:\n  rules:\n    - {{action: Reject, heloNames: [bad..name], senders: ['<>', nobody], recipients: ['@ok.example', 'x@']}}\n  externalPostmaster: {{address: postmaster}}\nconnectionPolicy: {{earlyTalkers: Reject}}\n"
        );
        let problems = load_gateway_config(&text).unwrap_err().problems();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "relay.rules[0].heloNames[0]",
                "relay.rules[0].senders[1]",
                "relay.rules[0].recipients[1]",
                "relay.externalPostmaster.address",
                "connectionPolicy.greetingDelay"
            ]
        );
    }

    #[test]
    fn semantic_errors_name_their_fields() {
        let text = format!(
            "{MINIMAL}domains:\n  - name: example.com\n    primary: {{}}\n  - name: example.com\n    primary:\n      hosts: ['mail:0']\n"
        );
        let problems = load_gateway_config(&text).unwrap_err().problems();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["domains[0].primary", "domains[1].name", "domains[1].primary.hosts[0]"]);
    }

    #[test]
    fn redis_store_errors_name_their_fields() {
        let text = format!(
            "{MINIMAL}store:\n  redis: {{url: 'http://r:6379', urls: ['redis://s:6379'], keyPrefix: 'a{{b}}', partitions: 0}}\n"
        );
        let problems = load_gateway_config(&text).unwrap_err().problems();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["store.redis.url", "store.redis.urls", "store.redis.keyPrefix", "store.redis.partitions"]
        );
        let text =
            format!("{MINIMAL}store:\n  redis: {{url: 'redis://r:6379', cluster: true, partitions: 256}}\n");
        assert!(load_gateway_config(&text).is_ok());
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(parse_host_port("mail.example.com", 25).unwrap(), ("mail.example.com".into(), 25));
        assert_eq!(parse_host_port("127.0.0.1:2525", 25).unwrap(), ("127.0.0.1".into(), 2525));
        assert_eq!(parse_host_port("[::1]:26", 25).unwrap(), ("::1".into(), 26));
        assert_eq!(parse_host_port("::1", 25).unwrap(), ("::1".into(), 25));
        assert!(parse_host_port("bad host", 25).is_err());
        assert!(parse_host_port("host:99999", 25).is_err());
    }

    #[test]
    fn accounts_are_named_once_send_for_real_addresses_and_never_log_in_without_tls() {
        let text = format!(
            "{MINIMAL}accounts:\n  - {{name: a, from: '@example.com', type: Smtp, smtp: {{host: smtp.example.com, username: u, passwordFile: /p}}}}\n  - {{name: a, from: 'not an address', type: Smtp}}\n  - {{name: 'b c', from: '@EXAMPLE.com', bcc: nobody, type: Smtp, smtp: {{host: 'bad host', security: None, username: u, passwordFile: /p}}}}\n  - {{name: d, from: d@example.com, type: Smtp, smtp: {{host: 192.0.2.1, port: 0, username: u}}}}\nmtaSts: {{mode: Enforce, maxAge: 0s, mx: ['*.example.com', 'bad host']}}\n"
        );
        let problems = load_gateway_config(&text).unwrap_err().problems();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "mtaSts.maxAge",
                "mtaSts.mx[1]",
                "accounts[1].name",
                "accounts[1].from",
                "accounts[1].smtp",
                "accounts[2].name",
                "accounts[2].from",
                "accounts[2].bcc",
                "accounts[2].smtp.host",
                "accounts[2].smtp.security",
                "accounts[3].smtp.port",
                "accounts[3].smtp.passwordFile"
            ]
        );
    }
}
