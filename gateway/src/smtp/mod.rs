//! Inbound SMTP: one task per connection. PROXY header (when the listener enables it),
//! connection limits, greeting, the session, and STARTTLS in the middle of it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use postern_api::{CheckAction, Listener, ListenerRole};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

pub mod auth;
pub mod data;
pub mod ehlo;
pub mod framing;
pub mod mail;
pub mod proxy;
pub mod rcpt;
pub mod received;
pub mod reply;
pub mod session;

use crate::config::ConfigSnapshot;
use crate::context::Context;
use crate::metrics::{LimitLabels, ListenerLabel, ReasonLabel};
use crate::policy::connections::Refusal;
use crate::policy::{limits, screening};
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
        let from = peer.ip().to_canonical();
        if !listener.trusted_proxies.iter().any(|n| n.contains(&from)) {
            refused("proxy_untrusted");
            tracing::warn!(%peer, listener = %listener.name, "connection refused: not from a trusted proxy (listeners[].trustedProxies)");
            return;
        }
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
    if !rate_limit_connection(&ctx, &cfg, ip, &mut stream).await {
        return;
    }
    ctx.metrics.connections.get_or_create(&ListenerLabel { listener: listener.name.clone() }).inc();
    ctx.metrics.connections_active.inc();
    let _active = ActiveGuard(&ctx);

    if listener.role == ListenerRole::Smtp && !screen(&ctx, &cfg, ip, &mut stream).await {
        return;
    }
    let acceptor = ctx.tls.get(&listener.name);
    let implicit_tls = listener.role == ListenerRole::Submissions;
    let mut session = Session::new(ctx.clone(), &listener, client, acceptor.is_some() && !implicit_tls);
    tracing::debug!(%client, listener = %listener.name, "session started");
    let handshake_timeout = cfg.limits.command_timeout.get();
    if implicit_tls {
        // Validation makes `tls` mandatory for this role; a listener whose files failed to load
        // has no acceptor and can only hang up.
        let Some(acceptor) = acceptor else { return };
        if let Some(mut tls) = handshake(&acceptor, stream, handshake_timeout, client).await {
            session.tls_started(TlsInfo::of(tls.get_ref().1));
            converse(&mut session, &mut tls).await;
            let _ = tls.shutdown().await;
        }
        return;
    }
    match converse(&mut session, &mut stream).await {
        Some(Flow::StartTls) => {
            let Some(acceptor) = acceptor else { return };
            if let Some(mut tls) = handshake(&acceptor, stream, handshake_timeout, client).await {
                session.tls_started(TlsInfo::of(tls.get_ref().1));
                if let Err(e) = session.serve(&mut tls).await {
                    tracing::debug!(%client, error = %e, "session ended with an I/O error");
                }
                let _ = tls.shutdown().await;
            }
        }
        Some(_) => {
            let _ = stream.shutdown().await;
        }
        None => {}
    }
}

/// The connection policy's checks before the greeting: a client that talks within
/// `greetingDelay` is an early talker; the reverse DNS of its IP must lead back to it. Both run
/// at once, so the delay hides the lookup. `false` (after a 554 or 421): refused.
async fn screen(ctx: &Context, cfg: &ConfigSnapshot, ip: IpAddr, stream: &mut TcpStream) -> bool {
    let policy = &cfg.connection_policy;
    let early = policy.early_talkers != CheckAction::Off && !policy.greeting_delay.get().is_zero();
    let reverse = policy.reverse_dns != CheckAction::Off;
    if !(early || reverse) || !screening::applies(cfg, ip) {
        return true;
    }
    let talked = async {
        if !early {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(
            tokio::time::timeout(policy.greeting_delay.get(), stream.peek(&mut probe)).await,
            Ok(Ok(1..))
        )
    };
    let name = async { if reverse { Some(ctx.dns.confirmed_name(ip).await) } else { None } };
    let (talked, name) = tokio::join!(talked, name);
    let mut refusal = None;
    if talked {
        let reject = policy.early_talkers == CheckAction::Reject;
        ctx.metrics.connection_check("early_talker", reject);
        tracing::info!(client = %ip, rejected = reject, "client talked before the greeting");
        if reject {
            refusal = Some("554 5.7.1 Protocol error: you talked before the greeting".to_string());
        }
    }
    let reject_reverse = policy.reverse_dns == CheckAction::Reject;
    match name {
        Some(Ok(None)) => {
            ctx.metrics.connection_check("reverse_dns", reject_reverse);
            tracing::info!(client = %ip, rejected = reject_reverse, "client has no forward-confirmed reverse DNS name");
            if reject_reverse {
                refusal.get_or_insert(format!(
                    "554 5.7.25 Client host rejected: cannot find your hostname, [{ip}]"
                ));
            }
        }
        Some(Err(e)) => {
            tracing::info!(client = %ip, error = %e, "reverse DNS of the client not known now");
            if reject_reverse {
                refusal.get_or_insert(format!(
                    "421 4.7.25 Client host rejected: cannot find your hostname now, [{ip}], try again later"
                ));
            }
        }
        Some(Ok(Some(_))) | None => {}
    }
    let Some(text) = refusal else { return true };
    let _ = stream.write_all(format!("{text}\r\n").as_bytes()).await;
    let _ = stream.shutdown().await;
    false
}

/// Counts the connection against the `connections` rate limits; `false` (after a 421) when the
/// client is over one. A store that cannot answer lets the connection in (the other limits
/// still hold) rather than turning every client away.
async fn rate_limit_connection(
    ctx: &Context,
    cfg: &ConfigSnapshot,
    ip: IpAddr,
    stream: &mut TcpStream,
) -> bool {
    let subject = limits::Subject { ip, trusted: cfg.is_trusted(ip), user: None, sender_domain: None };
    match limits::connection(&*ctx.store, cfg, &subject).await {
        Ok(None) => true,
        Ok(Some(limited)) => {
            let (key, count) = limited.labels();
            ctx.metrics.rate_limited.get_or_create(&LimitLabels { key, count }).inc();
            tracing::info!(client = %ip, key, count, retry_after = ?limited.retry_after, "connection refused: rate limit");
            let _ = stream.write_all(format!("421 {}\r\n", limited.reply_text()).as_bytes()).await;
            let _ = stream.shutdown().await;
            false
        }
        Err(e) => {
            tracing::warn!(client = %ip, error = %e, "connection rate limit not checked: store unavailable");
            true
        }
    }
}

/// The greeting (or, on a listener with AUTH, 421 for a client locked out after failed logins)
/// and the session up to its end or STARTTLS; `None` after an I/O error.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(session: &mut Session, stream: &mut S) -> Option<Flow> {
    if session.offers_auth()
        && let Some(flow) = session.refuse_if_locked_out().await
    {
        let _ = session.flush(stream).await;
        return Some(flow);
    }
    session.greeting();
    match session.serve(stream).await {
        Ok(flow) => Some(flow),
        Err(e) => {
            tracing::debug!(client = %session.client(), error = %e, "session ended with an I/O error");
            None
        }
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
    client: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::info!(%client, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%client, "TLS handshake timed out");
            None
        }
    }
}
