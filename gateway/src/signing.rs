//! DKIM for Direct sending accounts (RFC 6376): signing with mail-auth's signer on ring
//! (RSA-SHA256 or Ed25519-SHA256, relaxed/relaxed over the headers a reply or a list changes
//! least), keys read once per file version; and the account's verification: its domain
//! publishes this very key at `<selector>._domainkey.<domain>`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use postern_api::admin::AccountVerification;
use postern_api::{DirectAccount, DkimAlgorithm};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::auth::{Stamp, stamp};
use crate::dns::Dns;

/// The headers signed, when present.
const SIGNED: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// How long a domain's DNS verification stands: found, five minutes; not found, one (the
/// admin who just published the record should not wait long).
const VERIFIED_FOR: Duration = Duration::from_secs(300);
const UNVERIFIED_FOR: Duration = Duration::from_secs(60);

/// A signer for one domain and selector (mail-auth's signer owns its key).
enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

struct Loaded {
    stamp: Option<Stamp>,
    signer: Arc<Signer>,
    /// RSA: the PKCS#1 RSAPublicKey; Ed25519: the 32 raw bytes (as `p=` carries them).
    public: Arc<Vec<u8>>,
}

/// (key file, algorithm, domain, selector): one signer each.
type SignerId = (PathBuf, DkimAlgorithm, String, String);

#[derive(Default)]
pub struct Signing {
    signers: Mutex<HashMap<SignerId, Loaded>>,
    verified: Mutex<HashMap<(String, String), (Instant, AccountVerification)>>,
}

fn read_key(d: &DirectAccount) -> Result<(Key, Vec<u8>), String> {
    let file = d.private_key_file.display();
    let der =
        PrivateKeyDer::from_pem_file(&d.private_key_file).map_err(|e| format!("DKIM key {file}: {e}"))?;
    let bad = |e: mail_auth::Error| format!("DKIM key {file}: {e}");
    Ok(match d.algorithm {
        DkimAlgorithm::RsaSha256 => {
            let key = RsaKey::<Sha256>::from_key_der(der).map_err(bad)?;
            let public = key.public_key();
            (Key::Rsa(key), public)
        }
        DkimAlgorithm::Ed25519Sha256 => {
            let PrivateKeyDer::Pkcs8(pkcs8) = der else {
                return Err(format!("DKIM key {file}: an Ed25519 key is PKCS#8"));
            };
            let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der()).map_err(bad)?;
            let public = key.public_key();
            (Key::Ed25519(key), public)
        }
    })
}

/// A DER length.
fn der_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7f => vec![n as u8],
        0x80..=0xff => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

/// An RSAPublicKey (PKCS#1) inside a SubjectPublicKeyInfo, the form DKIM key records carry
/// (what `openssl rsa -pubout` prints).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier: rsaEncryption (1.2.840.113549.1.1.1), NULL parameters.
    const ALGORITHM: &[u8] =
        &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut bits = vec![0x03];
    bits.extend(der_len(pkcs1.len() + 1));
    bits.push(0x00);
    bits.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    out.extend(der_len(ALGORITHM.len() + bits.len()));
    out.extend_from_slice(ALGORITHM);
    out.extend(bits);
    out
}

/// The `p=` tag of a DKIM key record, decoded.
fn record_key(record: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let p = record.split(';').find_map(|tag| tag.trim().strip_prefix("p="))?;
    let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(p).ok()
}

/// Whether a published `p=` is this public key: Ed25519 raw bytes, or RSA as the bare
/// RSAPublicKey or wrapped in a SubjectPublicKeyInfo (which ends with it).
fn same_key(published: &[u8], public: &[u8]) -> bool {
    !public.is_empty() && published.ends_with(public)
}

impl Signing {
    fn signer(&self, d: &DirectAccount, domain: &str) -> Result<(Arc<Signer>, Arc<Vec<u8>>), String> {
        let now = stamp(&d.private_key_file);
        let id = (d.private_key_file.clone(), d.algorithm, domain.to_ascii_lowercase(), d.selector.clone());
        let mut signers = self.signers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = signers.get(&id).filter(|l| l.stamp.is_some() && l.stamp == now) {
            return Ok((l.signer.clone(), l.public.clone()));
        }
        let (key, public) = read_key(d)?;
        let signer = match key {
            Key::Rsa(k) => Signer::Rsa(
                DkimSigner::from_key(k).domain(domain).selector(&d.selector).headers(SIGNED.iter().copied()),
            ),
            Key::Ed25519(k) => Signer::Ed25519(
                DkimSigner::from_key(k).domain(domain).selector(&d.selector).headers(SIGNED.iter().copied()),
            ),
        };
        let loaded = Loaded { stamp: now, signer: Arc::new(signer), public: Arc::new(public) };
        let out = (loaded.signer.clone(), loaded.public.clone());
        signers.insert(id, loaded);
        Ok(out)
    }

    /// The DKIM-Signature header (with CRLF) of `message` for `domain`.
    pub fn sign(&self, d: &DirectAccount, domain: &str, message: &[u8]) -> Result<String, String> {
        let (signer, _) = self.signer(d, domain)?;
        let signature = match &*signer {
            Signer::Rsa(s) => s.sign(message),
            Signer::Ed25519(s) => s.sign(message),
        };
        signature.map(|s| s.to_header()).map_err(|e| format!("DKIM signing for {domain}: {e}"))
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>` for the account's key.
    pub fn record(&self, d: &DirectAccount, domain: &str) -> Result<String, String> {
        use base64::Engine;
        let (_, public) = self.signer(d, domain)?;
        let (kind, key) = match d.algorithm {
            DkimAlgorithm::RsaSha256 => ("rsa", rsa_spki(&public)),
            DkimAlgorithm::Ed25519Sha256 => ("ed25519", public.to_vec()),
        };
        Ok(format!("v=DKIM1; k={kind}; p={}", base64::engine::general_purpose::STANDARD.encode(key)))
    }

    /// Whether `domain` publishes the account's key at `<selector>._domainkey.<domain>`
    /// (remembered a while, see `VERIFIED_FOR`; `fresh` asks DNS now, as an admin's listing
    /// does, and what it finds counts for acceptance too). A key that cannot be read is never
    /// verified.
    pub async fn verification(
        &self,
        dns: &Dns,
        d: &DirectAccount,
        domain: &str,
        fresh: bool,
    ) -> AccountVerification {
        let id = (domain.to_ascii_lowercase(), d.selector.clone());
        if !fresh
            && let Some((at, v)) = self.verified.lock().unwrap_or_else(|p| p.into_inner()).get(&id)
            && at.elapsed() < if v.verified { VERIFIED_FOR } else { UNVERIFIED_FOR }
        {
            return v.clone();
        }
        let name = format!("{}._domainkey.{domain}", d.selector);
        let answer = |verified: bool, reason: &str, detail: String| AccountVerification {
            verified,
            reason: reason.into(),
            detail,
        };
        let public = match self.signer(d, domain) {
            Ok((_, public)) => public,
            Err(e) => return answer(false, "KeyUnreadable", e),
        };
        let v = match dns.authenticator().txt_raw_lookup(format!("{name}.").as_str()).await {
            Ok(txt) => match record_key(&String::from_utf8_lossy(&txt)) {
                Some(p) if same_key(&p, &public) => {
                    answer(true, "KeyPublished", format!("{name} publishes the account's DKIM key"))
                }
                Some(_) => answer(
                    false,
                    "KeyNotPublished",
                    format!("{name} publishes another key than the account's: publish the account's record"),
                ),
                None => {
                    answer(false, "KeyNotPublished", format!("{name} has no DKIM key record: publish it"))
                }
            },
            Err(e) => answer(false, "KeyNotPublished", format!("{name}: no DKIM key record found ({e})")),
        };
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (Instant::now(), v.clone()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_key_matches_bare_or_wrapped() {
        let public = vec![1, 2, 3, 4];
        assert!(same_key(&[1, 2, 3, 4], &public));
        assert!(same_key(&[9, 9, 1, 2, 3, 4], &public), "SubjectPublicKeyInfo around it");
        assert!(!same_key(&[1, 2, 3], &public));
        assert!(!same_key(&[], &[]));
        assert_eq!(record_key("v=DKIM1; k=rsa; p=AQID BA=="), Some(vec![1, 2, 3, 4]));
        assert_eq!(record_key("v=DKIM1; k=rsa"), None);
    }

    #[test]
    fn an_rsa_key_is_published_as_a_subject_public_key_info() {
        // The tests' key: its SubjectPublicKeyInfo as openssl printed it (tests/fixtures).
        use base64::Engine;
        let spki = base64::engine::general_purpose::STANDARD
            .decode(include_str!("../../tests/fixtures/dkim-test-key.pub.b64").trim())
            .unwrap();
        let d = DirectAccount {
            selector: "s".into(),
            private_key_file: concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/dkim-test-key.pem")
                .into(),
            algorithm: DkimAlgorithm::RsaSha256,
        };
        let (key, public) = read_key(&d).unwrap();
        assert!(matches!(key, Key::Rsa(_)));
        assert_eq!(rsa_spki(&public), spki);
        assert!(same_key(&spki, &public));
        assert_eq!(der_len(5), [5]);
        assert_eq!(der_len(200), [0x81, 200]);
        assert_eq!(der_len(270), [0x82, 1, 14]);
    }
}
