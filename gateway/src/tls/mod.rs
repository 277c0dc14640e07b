//! TLS material: the inbound STARTTLS acceptors (reloaded when their files change) and the
//! outbound client configs (verifying or opportunistic).

pub mod client;
pub mod server;

/// rustls with the ring provider, everywhere (no second crypto stack).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider, for libraries that build their own rustls
/// configs (the Redis client for rediss://). Safe to call more than once.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// "TLSv1.3", "TLSv1.2": the names Received headers and logs use.
pub fn version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS",
    }
}

/// What a finished handshake negotiated, for Received headers and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: &'static str,
    pub cipher: String,
}

impl TlsInfo {
    pub fn of(conn: &rustls::CommonState) -> Self {
        Self {
            version: conn.protocol_version().map_or("TLS", version_name),
            cipher: conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default(),
        }
    }
}
