//! Inbound STARTTLS: one acceptor per listener, built from PEM files and rebuilt when the files
//! change (cert-manager renews a Secret; the kubelet swaps the mounted files).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context;
use postern_api::{Listener, ListenerTls};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

pub fn load_acceptor(tls: &ListenerTls) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .with_context(|| format!("cannot read certificate file {}", tls.cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM in {}", tls.cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", tls.cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .with_context(|| format!("cannot read a private key from {}", tls.key_file.display()))?;
    let config = ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Identity of a file's current content as far as reloading cares.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let md = std::fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

struct Entry {
    tls: ListenerTls,
    stamps: [Option<(SystemTime, u64)>; 2],
    acceptor: Arc<TlsAcceptor>,
}

/// The current acceptor of every listener that offers STARTTLS.
#[derive(Default)]
pub struct TlsAcceptors {
    by_listener: Mutex<HashMap<String, Entry>>,
}

impl TlsAcceptors {
    /// Loads every listener's TLS files; fails (naming the file) if any cannot be used.
    pub fn load(listeners: &[Listener]) -> anyhow::Result<Self> {
        let me = Self::default();
        me.update(listeners)?;
        Ok(me)
    }

    pub fn get(&self, listener: &str) -> Option<Arc<TlsAcceptor>> {
        self.lock().get(listener).map(|e| e.acceptor.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.by_listener.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds acceptors whose config or files changed. On error the old acceptor stays.
    pub fn update(&self, listeners: &[Listener]) -> anyhow::Result<()> {
        let mut first_error = None;
        let mut map = self.lock();
        map.retain(|name, _| listeners.iter().any(|l| &l.name == name && l.tls.is_some()));
        for l in listeners {
            let Some(tls) = &l.tls else { continue };
            let stamps = [stamp(&tls.cert_file), stamp(&tls.key_file)];
            if map.get(&l.name).is_some_and(|e| &e.tls == tls && e.stamps == stamps) {
                continue;
            }
            match load_acceptor(tls) {
                Ok(acceptor) => {
                    if map.contains_key(&l.name) {
                        tracing::info!(listener = %l.name, cert = %tls.cert_file.display(), "TLS certificate reloaded");
                    }
                    map.insert(
                        l.name.clone(),
                        Entry { tls: tls.clone(), stamps, acceptor: Arc::new(acceptor) },
                    );
                }
                Err(e) => {
                    tracing::error!(listener = %l.name, error = %format!("{e:#}"), "TLS files not usable; keeping the previous certificate");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
