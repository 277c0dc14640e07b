//! Kubernetes decides who may use the admin API (`admin.kubernetes`). A caller's bearer token
//! goes to the API server in a TokenReview ("who is this?"); a SubjectAccessReview then asks
//! whether that user may do the request's verb on the request's resource of the
//! `mail.postern.dev` group in the Gateway's namespace, so a Role there is what grants a
//! reviewer the quarantine. Both are the documented `authentication.k8s.io/v1` and
//! `authorization.k8s.io/v1` objects, posted with the gateway's own (projected) token.
//!
//! Answers are remembered for `REMEMBER_FOR`, keyed by the token's SHA-256 (the token itself is
//! never kept or logged): a console page's dozen requests cost one review of each kind, and a
//! revoked token or RoleBinding takes effect within that time.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_api::KubernetesAuth;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::util::secrets::{Digest, digest};

/// How long a review's answer stands.
const REMEMBER_FOR: Duration = Duration::from_secs(10);
/// Remembered answers at most (each kind); beyond it the expired ones go, then all.
const REMEMBER_AT_MOST: usize = 4096;
/// One review's deadline: the API server answers these from memory.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

pub use postern_api::admin::RBAC_GROUP as API_GROUP;

/// What a request does, in RBAC's terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub resource: &'static str,
    pub verb: &'static str,
    /// The object, when the request names one (a quarantined message's id, a domain).
    pub name: Option<String>,
}

/// The user a TokenReview names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    #[serde(default)]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, PartialEq)]
pub enum Decision {
    Allowed(User),
    /// Authenticated, but RBAC says no (the API server's reason, if it gave one).
    Forbidden {
        user: String,
        reason: String,
    },
    /// No token, or one the API server does not accept.
    Unauthenticated,
    /// The API server could not be asked: the request is refused, nobody is let in.
    Unavailable(String),
}

/// Answers with a time to live, at most `REMEMBER_AT_MOST` of them.
struct Remembered<K, V>(Mutex<HashMap<K, (Instant, V)>>);

impl<K: Eq + Hash, V: Clone> Remembered<K, V> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    fn get(&self, key: &K) -> Option<V> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|(at, _)| at.elapsed() < REMEMBER_FOR).map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= REMEMBER_AT_MOST {
            map.retain(|_, (at, _)| at.elapsed() < REMEMBER_FOR);
            if map.len() >= REMEMBER_AT_MOST {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), value));
    }
}

/// The HTTP client for one `admin.kubernetes` setting (its CA bundle).
struct Connection {
    config: KubernetesAuth,
    api_server: String,
    http: reqwest::Client,
}

pub struct Reviewer {
    connection: Mutex<Option<Arc<Connection>>>,
    /// Token digest -> the user it names (None: not authenticated).
    users: Remembered<Digest, Option<User>>,
    /// (token digest, what) -> allowed, and the API server's reason.
    grants: Remembered<(Digest, Attributes), (bool, String)>,
}

impl Default for Reviewer {
    fn default() -> Self {
        Self { connection: Mutex::new(None), users: Remembered::new(), grants: Remembered::new() }
    }
}

/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, an IPv6 host in brackets.
fn in_cluster_api_server() -> Result<String, String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .map_err(|_| "admin.kubernetes.apiServer is not set and KUBERNETES_SERVICE_HOST is not either")?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    Ok(format!("https://{host}:{port}"))
}

fn connect(config: &KubernetesAuth) -> Result<Connection, String> {
    let api_server = match &config.api_server {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => in_cluster_api_server()?,
    };
    let ca = config.ca_file.display();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&config.ca_file).map_err(|e| format!("caFile {ca}: {e}"))? {
        let cert = cert.map_err(|e| format!("caFile {ca}: {e}"))?;
        roots.add(cert).map_err(|e| format!("caFile {ca}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("caFile {ca}: no certificate in it"));
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(REVIEW_TIMEOUT)
        // The API server is reached directly, never through the environment's HTTP proxy.
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Connection { config: config.clone(), api_server, http })
}

/// At most 200 characters of a peer's text, control characters escaped, for an error message.
fn excerpt(text: &str) -> String {
    text.chars().take(200).flat_map(char::escape_debug).collect()
}

impl Connection {
    /// Creates a review object and returns its `status`.
    async fn review(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
        let file = &self.config.token_file;
        let token = std::fs::read_to_string(file)
            .map_err(|e| format!("admin.kubernetes.tokenFile {}: {e}", file.display()))?;
        let answer = self
            .http
            .post(format!("{}{path}", self.api_server))
            .bearer_auth(token.trim())
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.api_server))?;
        let status = answer.status();
        let text = answer.text().await.map_err(|e| format!("{}: {e}", self.api_server))?;
        if !status.is_success() {
            return Err(format!("{path}: {status}: {}", excerpt(&text)));
        }
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{path}: not a review object: {e}"))?;
        Ok(value["status"].take())
    }
}

impl Reviewer {
    fn connection(&self, config: &KubernetesAuth) -> Result<Arc<Connection>, String> {
        let mut current = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = current.as_ref().filter(|c| &c.config == config) {
            return Ok(c.clone());
        }
        let c = Arc::new(connect(config)?);
        *current = Some(c.clone());
        Ok(c)
    }

    /// Who `token` is, and whether they may do `what`.
    pub async fn decide(&self, config: &KubernetesAuth, token: Option<&[u8]>, what: &Attributes) -> Decision {
        let Some(token) = token.and_then(|t| std::str::from_utf8(t).ok()) else {
            return Decision::Unauthenticated;
        };
        let key = digest(token.as_bytes());
        let user = match self.users.get(&key) {
            Some(user) => user,
            None => match self.authenticate(config, token).await {
                Ok(user) => {
                    self.users.put(key, user.clone());
                    user
                }
                Err(e) => return Decision::Unavailable(e),
            },
        };
        let Some(user) = user else { return Decision::Unauthenticated };
        let grant_key = (key, what.clone());
        let (allowed, reason) = match self.grants.get(&grant_key) {
            Some(answer) => answer,
            None => match self.authorize(config, &user, what).await {
                Ok(answer) => {
                    self.grants.put(grant_key, answer.clone());
                    answer
                }
                Err(e) => return Decision::Unavailable(e),
            },
        };
        if allowed { Decision::Allowed(user) } else { Decision::Forbidden { user: user.username, reason } }
    }

    /// A TokenReview: the user, or None when the API server does not accept the token.
    async fn authenticate(&self, config: &KubernetesAuth, token: &str) -> Result<Option<User>, String> {
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token},
        });
        let status =
            self.connection(config)?.review("/apis/authentication.k8s.io/v1/tokenreviews", body).await?;
        if status["authenticated"].as_bool() != Some(true) {
            return Ok(None);
        }
        let user: User = serde_json::from_value(status["user"].clone())
            .map_err(|e| format!("TokenReview status.user: {e}"))?;
        Ok(Some(user).filter(|u| !u.username.is_empty()))
    }

    /// A SubjectAccessReview: allowed, and the API server's reason.
    async fn authorize(
        &self,
        config: &KubernetesAuth,
        user: &User,
        what: &Attributes,
    ) -> Result<(bool, String), String> {
        let mut attributes = json!({
            "namespace": config.namespace, "group": API_GROUP,
            "resource": what.resource, "verb": what.verb,
        });
        if let Some(name) = &what.name {
            attributes["name"] = json!(name);
        }
        let mut spec = serde_json::to_value(user).map_err(|e| e.to_string())?;
        spec["user"] = spec["username"].take();
        spec.as_object_mut().map(|o| o.remove("username"));
        spec["resourceAttributes"] = attributes;
        let body = json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec,
        });
        let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
        let status = self.connection(config)?.review(path, body).await?;
        let allowed = status["allowed"].as_bool() == Some(true) && status["denied"].as_bool() != Some(true);
        let reason = status["reason"].as_str().or(status["evaluationError"].as_str()).unwrap_or_default();
        Ok((allowed, excerpt(reason)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_answers_expire_and_stay_bounded() {
        let r: Remembered<u32, bool> = Remembered::new();
        for i in 0..(REMEMBER_AT_MOST as u32 + 10) {
            r.put(i, true);
        }
        assert!(r.0.lock().unwrap().len() <= REMEMBER_AT_MOST);
        assert_eq!(r.get(&(REMEMBER_AT_MOST as u32 + 9)), Some(true));
        r.0.lock().unwrap().insert(1, (Instant::now() - REMEMBER_FOR, true));
        assert_eq!(r.get(&1), None, "expired");
    }

    #[test]
    fn peer_text_in_errors_is_short_and_escaped() {
        assert_eq!(excerpt("a\r\nb"), "a\\r\\nb");
        assert_eq!(excerpt(&"x".repeat(1000)).len(), 200);
    }
}
