//! `postern-gateway run`: wires the store, listeners, delivery, admin HTTP and config reload
//! together, and shuts them down in order on SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use postern_api::{GatewayConfig, LogFormat, StoreBackend};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ConfigSnapshot;
use crate::context::Context;
use crate::delivery::Delivery;
use crate::metrics::ResultLabel;
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::tls::server::TlsAcceptors;

/// How often the config file and TLS files are checked for changes. Polling (not inotify)
/// because Kubernetes updates mounted ConfigMaps and Secrets by swapping symlinks.
const RELOAD_POLL: Duration = Duration::from_secs(2);
/// How long shutdown waits for open sessions to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = crate::config::load_file(config_path)?;
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(config_path.to_path_buf(), config))
}

fn init_logging(config: &GatewayConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.logging.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    let _ = match config.logging.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.fmt_fields(crate::util::log_fields::EscapedFields).try_init(),
    };
}

async fn open_store(config: &GatewayConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config.store.backend() {
        StoreBackend::Redis(r) => Arc::new(
            crate::store::redis::RedisStore::connect(r)
                .await
                .with_context(|| format!("store.redis.url {}", r.url))?,
        ),
        StoreBackend::Embedded(e) => Arc::new(
            EmbeddedStore::open_with_cache(&e.path, e.cache_bytes)
                .with_context(|| format!("store.embedded.path {}", e.path.display()))?,
        ),
    })
}

async fn serve(config_path: PathBuf, config: GatewayConfig) -> anyhow::Result<()> {
    crate::tls::install_default_provider();
    let store = open_store(&config).await?;
    let tls = TlsAcceptors::load(&config.listeners)?;
    let ctx = Arc::new(Context::new(config.clone(), store, tls)?);
    let (stop_tx, stop_rx) = watch::channel(false);

    let admin = TcpListener::bind(config.admin.address)
        .await
        .with_context(|| format!("admin.address: cannot bind {}", config.admin.address))?;
    tracing::info!(listener = "admin", address = %admin.local_addr()?, "listening");
    let router = crate::admin::router(ctx.clone());
    let mut admin_stop = stop_rx.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(admin, router).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });

    let mut bound = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let sock = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("listeners[{i}].address: cannot bind {}", l.address))?;
        tracing::info!(listener = %l.name, address = %sock.local_addr()?, role = ?l.role, proxy_protocol = l.proxy_protocol, tls = l.tls.is_some(), auth = l.offers_auth(), "listening");
        bound.push((l.clone(), sock));
    }

    let delivery_task = tokio::spawn(Delivery::new(ctx.clone()).run(stop_rx.clone()));
    let shared = ctx.clone();
    tokio::spawn(ctx.verifications.clone().run(move || shared.config(), stop_rx.clone()));
    let shared = ctx.clone();
    tokio::spawn(ctx.confirmations.clone().run(move || shared.config(), stop_rx.clone()));
    let mut accept_tasks = Vec::new();
    for (listener, sock) in bound {
        accept_tasks.push(tokio::spawn(accept_loop(ctx.clone(), listener, sock, stop_rx.clone())));
    }
    tokio::spawn(watch_files(ctx.clone(), config_path, stop_rx.clone()));
    tokio::spawn(housekeeping(ctx.clone(), stop_rx.clone()));
    tokio::spawn(digests(ctx.clone(), stop_rx.clone()));
    ctx.listening.store(true, Ordering::Release);
    tracing::info!(hostname = %config.hostname, version = env!("CARGO_PKG_VERSION"), "postern-gateway started");

    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; waiting for open sessions");
    ctx.listening.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    for t in accept_tasks {
        let _ = t.await;
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while ctx.metrics.connections_active.get() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = ctx.metrics.connections_active.get(),
            "sessions still open after the drain timeout"
        );
    }
    let _ = delivery_task.await;
    ctx.store.flush().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn accept_loop(
    ctx: Arc<Context>,
    listener: postern_api::Listener,
    sock: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = sock.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(crate::smtp::handle_connection(ctx.clone(), listener.clone(), stream, peer));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %listener.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Hot reload: the config file and the TLS files, polled.
async fn watch_files(ctx: Arc<Context>, path: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let current = std::fs::read(&path).ok();
        if current.is_some() && current != last {
            last = current;
            reload(&ctx, &path);
        }
        let cfg = ctx.config();
        let _ = ctx.tls.update(&cfg.listeners);
        if let Err(e) = ctx.admin_tokens.reload(&cfg.admin) {
            tracing::error!(error = %format!("{e:#}"), "admin token file not usable; keeping the tokens in force");
        }
        if let Err(e) = ctx.users.reload(&cfg.auth) {
            tracing::error!(error = %format!("{e:#}"), "users file not usable; keeping the users in force");
        }
    }
}

fn reload(ctx: &Context, path: &Path) {
    let new = match crate::config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            ctx.metrics.config_reloads.get_or_create(&ResultLabel { result: "invalid" }).inc();
            tracing::error!(error = %format!("{e:#}"), "config change rejected; keeping the running config");
            return;
        }
    };
    let old = ctx.config();
    let needs_restart: Vec<&str> = [
        (
            "listeners",
            old.config
                .listeners
                .iter()
                .map(|l| (l.address, l.proxy_protocol, &l.trusted_proxies, l.role, l.offers_auth()))
                .ne(new
                    .listeners
                    .iter()
                    .map(|l| (l.address, l.proxy_protocol, &l.trusted_proxies, l.role, l.offers_auth()))),
        ),
        ("admin.address", old.config.admin.address != new.admin.address),
        ("store", old.config.store != new.store),
        ("delivery.nameservers", old.config.delivery.nameservers != new.delivery.nameservers),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect();
    if !needs_restart.is_empty() {
        tracing::warn!(fields = ?needs_restart, "these changes take effect after a restart");
    }
    if let Err(e) = ctx.tls.update(&new.listeners) {
        tracing::error!(error = %format!("{e:#}"), "new TLS settings not usable");
    }
    ctx.config.store(Arc::new(ConfigSnapshot::new(new)));
    ctx.verifications.wake();
    ctx.confirmations.wake();
    ctx.metrics.config_reloads.get_or_create(&ResultLabel { result: "ok" }).inc();
    tracing::info!("config reloaded; new sessions use it");
}

/// Periodic upkeep: queue gauges, quarantine expiry, and forgetting rate-limit times that passed.
async fn housekeeping(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        crate::admin::refresh_queue_gauges(&ctx).await;
        match ctx.store.quarantine_expire(crate::util::time::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "quarantine entries past retention removed"),
            Err(e) => tracing::warn!(error = %e, "quarantine expiry failed"),
        }
        // A minute's margin: the Redis store counts on Redis's clock, and this pod's may differ.
        if let Err(e) = ctx.store.rate_limits_expire(crate::util::time::now_ms().saturating_sub(60_000)).await
        {
            tracing::warn!(error = %e, "rate-limit expiry failed");
        }
    }
}

/// Quarantine digests: checked every second (a store read per policy with digests on).
async fn digests(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = crate::quarantine::digest::run_due(&ctx).await {
            tracing::warn!(error = %e, "quarantine digests failed; retrying");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
