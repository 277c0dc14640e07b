//! The outbound SMTP client: everything that talks SMTP to other servers (next-hop hosts
//! from DNS, TLS by policy, connection reuse). Used by the delivery engine, recipient probes
//! and destination verification alike. Beside it: the OAuth sending accounts' grants
//! (`oauth`) and mail APIs (`mailbox_api`).

pub mod connection;
pub mod error;
pub mod ews;
pub mod mailbox_api;
pub mod oauth;
pub mod pool;

use std::sync::Arc;
use std::time::Duration;

use postern_api::validate::parse_host_port;

pub use connection::{Credentials, Envelope, dot_stuff};
pub use error::OutboundError;

use crate::config::ConfigSnapshot;
use crate::dns::{Dns, DnsError, Host};
use crate::store::{NextHop, Via};
use crate::tls::client::ClientTls;
use connection::{Connection, Timeouts};
use pool::Pool;

pub struct OutboundClient {
    dns: Arc<Dns>,
    tls: ClientTls,
    pool: Pool,
    /// Access tokens for the OAuth accounts that send by SMTP (XOAUTH2).
    oauth: Option<Arc<oauth::OAuthTokens>>,
}

impl OutboundClient {
    pub fn new(cfg: &ConfigSnapshot, dns: Arc<Dns>) -> anyhow::Result<Self> {
        let d = &cfg.delivery;
        Ok(Self { dns, tls: ClientTls::new(d.ca_file.as_deref())?, pool: Pool::default(), oauth: None })
    }

    /// Logs in with XOAUTH2 for the OAuth accounts that send by SMTP, with these tokens.
    pub fn with_oauth(mut self, tokens: Arc<oauth::OAuthTokens>) -> Self {
        self.oauth = Some(tokens);
        self
    }

    /// The login a next hop needs: a smarthost's or Smtp account's password (read per
    /// connection, so a rotated Secret is used without a restart), or an OAuth account's token.
    async fn credentials(
        &self,
        cfg: &ConfigSnapshot,
        next_hop: &NextHop,
    ) -> Result<Option<Credentials>, OutboundError> {
        if let Some(auth) = &next_hop.auth {
            let password = read_password(&auth.password_file)?;
            return Ok(Some(Credentials::Plain { user: auth.username.clone(), password }));
        }
        let account = next_hop
            .account
            .as_ref()
            .and_then(|name| cfg.sending_account(name))
            .filter(|a| a.oauth.is_some());
        let (Some(account), Some(tokens)) = (account, &self.oauth) else { return Ok(None) };
        let user = account
            .oauth
            .as_ref()
            .and_then(|o| o.smtp_username.clone())
            .unwrap_or_else(|| account.from.clone());
        let token = tokens.access_token(cfg, account).await.map_err(|e| match e {
            oauth::TokenError::NotAuthorized(why) => OutboundError::temporary("4.7.0", why),
            oauth::TokenError::Temporary(why) => OutboundError::temporary("4.4.1", why),
        })?;
        Ok(Some(Credentials::XOAuth2 { user, token }))
    }

    /// The hosts to try for a next_hop, best first.
    async fn hosts(&self, cfg: &ConfigSnapshot, target: &Via) -> Result<Vec<Host>, OutboundError> {
        match target {
            Via::Mx(domain) => self.dns.mail_hosts(domain, cfg.delivery.mx_port).await.map_err(|e| {
                let status = match &e {
                    DnsError::NullMx(_) => "5.1.10",
                    DnsError::NoSuchDomain(_) | DnsError::NoMailHost(_) => "5.1.2",
                    DnsError::HostNotFound(_) => "5.4.4",
                    DnsError::Temporary(_) => "4.4.3",
                };
                if e.is_permanent() {
                    OutboundError::permanent(status, e.to_string())
                } else {
                    OutboundError::temporary(status, e.to_string())
                }
            }),
            Via::MailboxApi(account) => Err(OutboundError::permanent(
                "5.3.5",
                format!("account {account} sends through its mail API, not SMTP"),
            )),
            Via::Hosts(list) => {
                let mut out = Vec::new();
                let mut last_err = None;
                for entry in list {
                    let (host, port) = parse_host_port(entry, 25).map_err(|e| {
                        OutboundError::permanent("5.3.5", format!("bad destination host: {e}"))
                    })?;
                    // A configured host that does not resolve is a config or DNS problem on our
                    // side: retry rather than bounce.
                    match self.dns.host(&host, port).await {
                        Ok(h) => out.push(h),
                        Err(e) => last_err = Some(OutboundError::temporary("4.4.3", e.to_string())),
                    }
                }
                match (out.is_empty(), last_err) {
                    (true, Some(e)) => Err(e),
                    _ => Ok(out),
                }
            }
        }
    }

    fn timeouts(cfg: &ConfigSnapshot) -> Timeouts {
        let d = &cfg.delivery;
        Timeouts { connect: d.connect_timeout.get(), command: d.command_timeout.get() }
    }

    /// Closes pooled connections idle for too long.
    pub fn reap(&self, idle_timeout: Duration) {
        self.pool.reap(idle_timeout);
    }

    /// Sends one message over `next_hop`: a pooled connection first, then every host of the
    /// next_hop in turn until one gives an answer. One result per recipient, in order.
    pub async fn send(
        &self,
        cfg: &ConfigSnapshot,
        next_hop: &NextHop,
        env: &Envelope<'_>,
        body: &[u8],
    ) -> Vec<Result<(), OutboundError>> {
        let n = env.recipients.len();
        let key = next_hop.key();
        if let Some(mut conn) = self.pool.take(&key, cfg.delivery.idle_timeout.get())
            && let Ok(results) = conn.send(env, body).await
        {
            self.pool.put(&key, conn);
            return results;
        }
        let mut last = OutboundError::temporary("4.4.1", format!("no host of {key} could be reached"));
        let conns = match self.connections(cfg, next_hop).await {
            Ok(c) => c,
            Err(f) => return vec![Err(f); n],
        };
        for candidate in conns {
            let mut conn = match candidate.await {
                Ok(c) => c,
                Err(f) => {
                    tracing::debug!(next_hop = %key, error = %f.diagnostic, "host failed");
                    last = f;
                    continue;
                }
            };
            match conn.send(env, body).await {
                Ok(results) => {
                    self.pool.put(&key, conn);
                    return results;
                }
                Err(f) => last = f,
            }
        }
        // No host gave an answer: retry later, whatever the last host said at connect (a
        // 554 greeting from one MX does not make the recipient bad; RFC 5321 3.1).
        if last.permanent {
            last.permanent = false;
            last.status = format!("4{}", &last.status[1..]);
        }
        vec![Err(last); n]
    }

    /// "Test connection": connects to the next hop's first answering host, with its TLS and
    /// login, then QUIT. What it found (the host, TLS version, whether it logged in), or why not.
    pub async fn test(&self, cfg: &ConfigSnapshot, next_hop: &NextHop) -> Result<String, OutboundError> {
        let mut last =
            OutboundError::temporary("4.4.1", format!("no host of {} could be reached", next_hop.key()));
        for candidate in self.connections(cfg, next_hop).await? {
            match candidate.await {
                Ok(conn) => {
                    let tls = conn.tls.as_ref().map_or("no TLS", |t| t.version);
                    let login = if next_hop.auth.is_some() { ", logged in" } else { "" };
                    let found = format!("{} ({}): {tls}{login}", conn.host, conn.addr);
                    conn.quit().await;
                    return Ok(found);
                }
                Err(f) => last = f,
            }
        }
        Err(last)
    }

    /// Asks the next_hop's first answering host whether `rcpt` exists (MAIL FROM:<> + RCPT).
    pub async fn probe(
        &self,
        cfg: &ConfigSnapshot,
        next_hop: &NextHop,
        rcpt: &str,
    ) -> Result<bool, OutboundError> {
        let mut last =
            OutboundError::temporary("4.4.1", format!("no host of {} could be reached", next_hop.key()));
        for candidate in self.connections(cfg, next_hop).await? {
            let mut conn = match candidate.await {
                Ok(c) => c,
                Err(f) => {
                    last = f;
                    continue;
                }
            };
            let answer = conn.probe(rcpt).await;
            conn.quit().await;
            return answer;
        }
        Err(last)
    }

    /// Connection attempts for every address of every host of the next_hop, best first; each
    /// is made only when awaited.
    async fn connections<'a>(
        &'a self,
        cfg: &'a ConfigSnapshot,
        next_hop: &'a NextHop,
    ) -> Result<Vec<impl Future<Output = Result<Connection, OutboundError>> + 'a>, OutboundError> {
        let hosts = self.hosts(cfg, &next_hop.via).await?;
        let credentials = self.credentials(cfg, next_hop).await?;
        let timeouts = Self::timeouts(cfg);
        let mut out = Vec::new();
        for host in hosts {
            for addr in host.addrs.clone() {
                let name = host.name.clone();
                let credentials = credentials.clone();
                out.push(async move {
                    Connection::open(
                        &name,
                        addr,
                        &cfg.hostname,
                        &next_hop.tls,
                        &self.tls,
                        timeouts,
                        credentials.as_ref(),
                    )
                    .await
                });
            }
        }
        Ok(out)
    }
}

/// The password of a smarthost account, from its file (a mounted Secret); read per
/// connection so a rotated Secret is used without a restart.
fn read_password(path: &std::path::Path) -> Result<String, OutboundError> {
    std::fs::read_to_string(path).map(|s| s.trim_end_matches(['\r', '\n']).to_string()).map_err(|e| {
        OutboundError::temporary(
            "4.7.0",
            format!("cannot read SMTP AUTH password file {}: {e}", path.display()),
        )
    })
}
