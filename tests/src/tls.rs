//! Test certificates: a private CA and leaf certificates it signs, written as PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

pub struct LeafFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Postern Test CA");
        Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let p = dir.join("ca.pem");
        std::fs::write(&p, self.issuer.pem()).unwrap();
        p
    }

    /// A leaf for `names`, written as `<stem>.crt` and `<stem>.key` in `dir`.
    pub fn leaf(&self, dir: &Path, stem: &str, names: &[&str]) -> LeafFiles {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = LeafFiles { cert: dir.join(format!("{stem}.crt")), key: dir.join(format!("{stem}.key")) };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A rustls server config from PEM files (for the test sinks' STARTTLS).
pub fn server_config(files: &LeafFiles) -> Arc<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&files.cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

/// A server session cache that counts the sessions it hands back: each is a resumed
/// handshake (TLS 1.3 PSK or TLS 1.2 session id; the test servers issue no stateless tickets).
#[derive(Debug)]
pub struct CountingSessions {
    inner: Arc<dyn rustls::server::StoresServerSessions>,
    pub resumed: std::sync::atomic::AtomicUsize,
}

impl rustls::server::StoresServerSessions for CountingSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let found = self.inner.get(key);
        if found.is_some() {
            self.resumed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        found
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let found = self.inner.take(key);
        if found.is_some() {
            self.resumed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        found
    }
    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// `server_config`, with its session cache counting resumptions.
pub fn server_config_counting_resumptions(
    files: &LeafFiles,
) -> (Arc<rustls::ServerConfig>, Arc<CountingSessions>) {
    let mut config = Arc::unwrap_or_clone(server_config(files));
    let sessions = Arc::new(CountingSessions {
        inner: rustls::server::ServerSessionMemoryCache::new(256),
        resumed: Default::default(),
    });
    config.session_storage = sessions.clone();
    (Arc::new(config), sessions)
}

/// A rustls client config trusting the test CA (for test clients doing STARTTLS).
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
