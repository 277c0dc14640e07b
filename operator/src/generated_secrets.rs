//! Keys the operator generates into Secrets when the user names none: the DKIM key of a
//! Direct SendingAccount (`<account>-dkim`, key `dkim.pem`, PKCS#8 PEM) and the key that
//! encrypts a Gateway's OAuth tokens in its store (`<gateway>-oauth-token-key`, key `key`, 32
//! random bytes in base64), and a Gateway's admin key that seals console sessions and signs
//! digest links (`<gateway>-admin-key`, same form). The gateway pods mount them. The operator may only *create*
//! Secrets: it never reads a key back (the gateways report a DKIM key's public record), and an
//! existing Secret of that name is left as it is (409), so a key is generated once and kept
//! until someone deletes the Secret.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use postern_api::DkimAlgorithm;

use crate::crd::SecretKeyRef;
use crate::resources::MANAGER;

/// The Secret key holding a generated DKIM private key.
pub const KEY: &str = "dkim.pem";

/// What is generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Dkim(DkimAlgorithm),
    /// AES-256 for the OAuth tokens in the store.
    TokenKey,
}

/// A key the operator generates: its kind, whose it is (a label), and where its Secret goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedKey {
    pub kind: KeyKind,
    /// (label, value): `mail.postern.dev/sending-account` or `mail.postern.dev/gateway`.
    pub owner: (&'static str, String),
    pub secret: SecretKeyRef,
}

/// Where a generated DKIM key of `account` lives.
pub fn generated_ref(account: &str) -> SecretKeyRef {
    SecretKeyRef { name: format!("{account}-dkim"), key: KEY.into() }
}

/// A Direct account's DKIM key to generate.
pub fn dkim(account: &str, algorithm: DkimAlgorithm) -> GeneratedKey {
    GeneratedKey {
        kind: KeyKind::Dkim(algorithm),
        owner: ("mail.postern.dev/sending-account", account.into()),
        secret: generated_ref(account),
    }
}

/// A Gateway's OAuth token key to generate.
pub fn token_key(gateway: &str) -> GeneratedKey {
    GeneratedKey {
        kind: KeyKind::TokenKey,
        owner: ("mail.postern.dev/gateway", gateway.into()),
        secret: SecretKeyRef { name: format!("{gateway}-oauth-token-key"), key: "key".into() },
    }
}

/// A Gateway's admin key (console sessions, digest links) to generate: same format as the
/// OAuth token key.
pub fn admin_key(gateway: &str) -> GeneratedKey {
    GeneratedKey {
        kind: KeyKind::TokenKey,
        owner: ("mail.postern.dev/gateway", gateway.into()),
        secret: SecretKeyRef { name: format!("{gateway}-admin-key"), key: "key".into() },
    }
}

/// The Secret's content for `kind`.
pub fn generate_kind(kind: KeyKind) -> Result<String, String> {
    match kind {
        KeyKind::Dkim(algorithm) => generate(algorithm),
        KeyKind::TokenKey => {
            use base64::Engine;
            use ring::rand::SecureRandom;
            let mut key = [0u8; 32];
            ring::rand::SystemRandom::new().fill(&mut key).map_err(|e| e.to_string())?;
            Ok(base64::engine::general_purpose::STANDARD.encode(key))
        }
    }
}

/// `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }`
/// up to the 32 bytes of the seed.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// A new private key, PKCS#8 PEM: RSA-2048 (what RFC 8301 asks signers for, and what every
/// verifier takes) or Ed25519.
pub fn generate(algorithm: DkimAlgorithm) -> Result<String, String> {
    use rsa::pkcs8::der::pem::LineEnding;
    use rsa::pkcs8::{EncodePrivateKey, der::pem};
    match algorithm {
        DkimAlgorithm::RsaSha256 => {
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).map_err(|e| e.to_string())?;
            Ok(key.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?.to_string())
        }
        DkimAlgorithm::Ed25519Sha256 => {
            // RFC 8410's PKCS#8 v1 (the seed alone), as openssl writes it: ring's own
            // generate_pkcs8 writes v2 (with the public key), which openssl 3 does not read.
            use ring::rand::SecureRandom;
            let mut der = ED25519_PKCS8_V1_PREFIX.to_vec();
            let mut seed = [0u8; 32];
            ring::rand::SystemRandom::new().fill(&mut seed).map_err(|e| e.to_string())?;
            der.extend_from_slice(&seed);
            pem::encode_string("PRIVATE KEY", LineEnding::LF, &der).map_err(|e| e.to_string())
        }
    }
}

/// The Secret holding `pem` for `key` (not owned: deleting an account must not rotate a key
/// whose record is still published, nor deleting a Gateway lose the key of a store's tokens).
pub fn secret(ns: &str, key: &GeneratedKey, pem: String) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(key.secret.name.clone()),
            namespace: Some(ns.into()),
            labels: Some(
                [
                    ("app.kubernetes.io/managed-by".to_string(), MANAGER.to_string()),
                    (key.owner.0.to_string(), key.owner.1.clone()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some([(key.secret.key.clone(), ByteString(pem.into_bytes()))].into()),
        ..Default::default()
    }
}

/// Creates the key's Secret unless one of that name exists. True when it was created now.
pub async fn create_if_absent(client: &Client, ns: &str, key: &GeneratedKey) -> Result<bool, kube::Error> {
    let kind = key.kind;
    // RSA key generation takes a while: off the async workers.
    let pem = tokio::task::spawn_blocking(move || generate_kind(kind))
        .await
        .map_err(|e| kube::Error::Service(e.into()))?
        .map_err(|e| kube::Error::Service(e.into()))?;
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    match api
        .create(
            &PostParams { field_manager: Some(MANAGER.into()), ..Default::default() },
            &secret(ns, key, pem),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_pkcs8_of_the_asked_algorithm() {
        use rsa::pkcs8::DecodePrivateKey;
        let pem = generate(DkimAlgorithm::Ed25519Sha256).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let (_, der) = rsa::pkcs8::der::pem::decode_vec(pem.as_bytes()).unwrap();
        ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).expect("ring reads it back");

        let pem = generate(DkimAlgorithm::RsaSha256).unwrap();
        let key = rsa::PrivateKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(rsa::traits::PublicKeyParts::n(&key).bit_width(), 2048);
    }
}
