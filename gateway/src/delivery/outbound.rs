//! Everything that talks SMTP to other servers: next-hop resolution, TLS, connection reuse.
//! Used by the delivery engine, recipient probes and destination verification alike.

use std::time::Duration;

use super::Failure;
use super::client::{Connection, Envelope, Timeouts};
use super::pool::Pool;
use super::resolve::Resolver;
use crate::runtime::Runtime;
use crate::store::Route;
use crate::tls::client::ClientTls;

pub struct Outbound {
    resolver: Resolver,
    tls: ClientTls,
    pool: Pool,
}

impl Outbound {
    pub fn new(rt: &Runtime) -> anyhow::Result<Self> {
        let d = &rt.config.delivery;
        Ok(Self {
            resolver: Resolver::new(&d.nameservers, d.mx_port)?,
            tls: ClientTls::new(d.ca_file.as_deref())?,
            pool: Pool::default(),
        })
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    fn timeouts(rt: &Runtime) -> Timeouts {
        let d = &rt.config.delivery;
        Timeouts { connect: d.connect_timeout.get(), command: d.command_timeout.get() }
    }

    /// Closes pooled connections idle for too long.
    pub fn reap(&self, idle_timeout: Duration) {
        self.pool.reap(idle_timeout);
    }

    /// Sends one message over `route`: a pooled connection first, then every host of the
    /// route in turn until one gives an answer. One result per recipient, in order.
    pub async fn send(
        &self,
        rt: &Runtime,
        route: &Route,
        env: &Envelope<'_>,
        body: &[u8],
    ) -> Vec<Result<(), Failure>> {
        let n = env.recipients.len();
        let key = route.key();
        if let Some(mut conn) = self.pool.take(&key, rt.config.delivery.idle_timeout.get())
            && let Ok(results) = conn.send(env, body).await
        {
            self.pool.put(&key, conn);
            return results;
        }
        let mut last = Failure::temporary("4.4.1", format!("no host of {key} could be reached"));
        let conns = match self.connections(rt, route).await {
            Ok(c) => c,
            Err(f) => return vec![Err(f); n],
        };
        for candidate in conns {
            let mut conn = match candidate.await {
                Ok(c) => c,
                Err(f) => {
                    tracing::debug!(route = %key, error = %f.diagnostic, "host failed");
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

    /// Asks the route's first answering host whether `rcpt` exists (MAIL FROM:<> + RCPT).
    pub async fn probe(&self, rt: &Runtime, route: &Route, rcpt: &str) -> Result<bool, Failure> {
        let mut last = Failure::temporary("4.4.1", format!("no host of {} could be reached", route.key()));
        for candidate in self.connections(rt, route).await? {
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

    /// Connection attempts for every address of every host of the route, best first; each
    /// is made only when awaited.
    async fn connections<'a>(
        &'a self,
        rt: &'a Runtime,
        route: &'a Route,
    ) -> Result<Vec<impl Future<Output = Result<Connection, Failure>> + 'a>, Failure> {
        let hosts = self.resolver.hosts(&route.target).await?;
        let password = match &route.auth {
            Some(auth) => Some(read_password(&auth.password_file)?),
            None => None,
        };
        let timeouts = Self::timeouts(rt);
        let mut out = Vec::new();
        for host in hosts {
            for addr in host.addrs.clone() {
                let name = host.name.clone();
                let credentials =
                    route.auth.as_ref().zip(password.clone()).map(|(a, p)| (a.username.clone(), p));
                out.push(async move {
                    Connection::open(
                        &name,
                        addr,
                        &rt.config.hostname,
                        &route.tls,
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
fn read_password(path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map(|s| s.trim_end_matches(['\r', '\n']).to_string()).map_err(|e| {
        Failure::temporary("4.7.0", format!("cannot read SMTP AUTH password file {}: {e}", path.display()))
    })
}
