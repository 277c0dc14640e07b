//! Outbound TLS: a verifying config (system roots plus an optional CA file) for destinations
//! that ask for verification, and an opportunistic one that encrypts without authenticating,
//! which is what MX delivery without DANE/MTA-STS can honestly offer.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

pub struct ClientTls {
    pub verifying: TlsConnector,
    pub opportunistic: TlsConnector,
}

impl ClientTls {
    pub fn new(ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let provider = super::provider();
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("delivery.caFile: cannot read {}", path.display()))?
            {
                let cert = cert.with_context(|| format!("delivery.caFile: bad PEM in {}", path.display()))?;
                roots.add(cert).with_context(|| {
                    format!("delivery.caFile: unusable certificate in {}", path.display())
                })?;
            }
        }
        let verifying = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let opportunistic = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth();
        Ok(Self {
            verifying: TlsConnector::from(Arc::new(verifying)),
            opportunistic: TlsConnector::from(Arc::new(opportunistic)),
        })
    }
}

/// Encrypts without authenticating the peer: opportunistic TLS (RFC 7435). Signatures are still
/// checked so the handshake itself is sound.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
