//! Inbound SMTP: one task per connection. PROXY header (when the listener enables it),
//! connection limits, greeting, the session, and STARTTLS in the middle of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_api::Listener;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub mod data;
pub mod ehlo;
pub mod framing;
pub mod mail;
pub mod proxy;
pub mod rcpt;
pub mod received;
pub mod reply;
pub mod session;

use crate::context::Context;
use crate::metrics::{ListenerLabel, ReasonLabel};
use crate::policy::connections::Refusal;
use crate::tls::TlsInfo;
use session::{Flow, Session};

/// How long a load balancer has to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps the active-session gauge right however a session ends.
struct ActiveGuard<'a>(&'a Context);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.metrics.connections_active.dec();
    }
}

pub async fn handle_connection(
    ctx: Arc<Context>,
    listener: Listener,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let refused = |reason| ctx.metrics.connections_refused.get_or_create(&ReasonLabel { reason }).inc();
    let client = if listener.proxy_protocol {
        match proxy::read_header(&mut stream, PROXY_HEADER_TIMEOUT).await {
            Ok(addr) => addr.unwrap_or(peer),
            Err(e) => {
                refused("proxy_header");
                tracing::warn!(%peer, listener = %listener.name, error = %e, "connection refused: bad PROXY header");
                return;
            }
        }
    } else {
        peer
    };

    let cfg = ctx.config();
    let limits = &cfg.limits;
    let ip = crate::config::canonical_ip(client.ip());
    let _slot = match ctx.connections.try_acquire(ip, cfg.is_trusted(ip), limits) {
        Ok(slot) => slot,
        Err(why) => {
            let (reason, text) = match why {
                Refusal::Total => ("max_connections", "4.7.0 Too many connections, try again later"),
                Refusal::PerIp => ("max_connections_per_ip", "4.7.0 Too many connections from your address"),
            };
            refused(reason);
            tracing::info!(%client, reason, "connection refused");
            let _ = stream.write_all(format!("421 {text}\r\n").as_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    ctx.metrics.connections.get_or_create(&ListenerLabel { listener: listener.name.clone() }).inc();
    ctx.metrics.connections_active.inc();
    let _active = ActiveGuard(&ctx);

    let acceptor = ctx.tls.get(&listener.name);
    let mut session = Session::new(ctx.clone(), &listener.name, client, acceptor.is_some());
    tracing::debug!(%client, listener = %listener.name, "session started");
    session.greeting();
    match session.serve(&mut stream).await {
        Ok(Flow::StartTls) => {
            let Some(acceptor) = acceptor else { return };
            let timeout = cfg.limits.command_timeout.get();
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(mut tls)) => {
                    session.tls_started(TlsInfo::of(tls.get_ref().1));
                    if let Err(e) = session.serve(&mut tls).await {
                        tracing::debug!(%client, error = %e, "session ended with an I/O error");
                    }
                    let _ = tls.shutdown().await;
                }
                Ok(Err(e)) => tracing::info!(%client, error = %e, "TLS handshake failed"),
                Err(_) => tracing::info!(%client, "TLS handshake timed out"),
            }
        }
        Ok(_) => {
            let _ = stream.shutdown().await;
        }
        Err(e) => tracing::debug!(%client, error = %e, "session ended with an I/O error"),
    }
}
