//! A typed client for the gateway's admin API (`postern_api::admin` holds the wire types),
//! shared by the gateway's CLI, the operator (which reads verification states into
//! RoutingPolicy conditions), the `kubectl postern` plugin and the end-to-end tests. Plain
//! HTTP to the admin port (served on loopback, a pod network or a port-forward, never to the
//! internet), or a transport the caller brings (the plugin's: the Kubernetes API server's
//! service proxy). `cli.rs` (feature `cli`) is the command line both CLIs share.

#[cfg(feature = "cli")]
pub mod cli;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use postern_api::admin::{
    AccountState, AccountTest, ApiError, AuthorizeAnswer, ConfirmCode, ConfirmationAnswer, Deleted,
    HeldMessage, HeldMessageDetail, QuarantineSearch, QueueStats, Released, VerificationRetry,
    VerificationState,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

const NO_QUERY: &[(&str, &str)] = &[];

/// What can go wrong asking the admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No answer: connection refused, timed out, or cut.
    #[error("cannot reach the admin API at {base}: {reason}")]
    Unreachable { base: String, reason: String },
    /// The API answered with an error status; `message` is its `error` text (or the body).
    #[error("{method} {path}: HTTP {status}: {message}")]
    Status { method: Method, path: String, status: u16, message: String },
    /// A 2xx answer that is not what this client expects (a different gateway version?).
    #[error("unexpected answer from {path}: {source}")]
    Decode { path: String, source: serde_json::Error },
}

impl AdminError {
    /// The HTTP status of an error answer (404 for an unknown quarantine entry, ...).
    pub fn status(&self) -> Option<u16> {
        match self {
            AdminError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A raw answer: status and body, for endpoints that are not JSON (health, metrics, raw mail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request as a transport carries it: the admin API's path and query, and a JSON body.
pub struct Call {
    pub method: Method,
    pub path_and_query: String,
    pub json: Option<Vec<u8>>,
}

/// A transport of the caller's: sends a `Call`, answers with any status; `Err` (a text) only
/// when there is no answer.
pub type Send = Arc<
    dyn Fn(Call) -> Pin<Box<dyn Future<Output = Result<RawAnswer, String>> + std::marker::Send>>
        + std::marker::Send
        + Sync,
>;

#[derive(Clone)]
enum Transport {
    Http {
        http: reqwest::Client,
        /// Sent as `Authorization: Bearer` (the gateway's `admin.tokenFile`).
        token: Option<String>,
    },
    Custom(Send),
}

#[derive(Clone)]
pub struct AdminClient {
    /// What errors name: `http://host:port`, or the transport's description.
    base: String,
    transport: Transport,
}

impl AdminClient {
    /// A client for the admin API at `authority` (`host:port`), with a 30 s timeout per request.
    pub fn new(authority: &str) -> Self {
        Self::with_timeout(authority, Duration::from_secs(30))
    }

    pub fn with_timeout(authority: &str, timeout: Duration) -> Self {
        // Plain HTTP, but reqwest builds a TLS config whenever another crate of the build turned
        // its rustls on, and that needs a process-wide provider: ring, as everywhere in Postern.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // The admin API is never behind a proxy of the environment (HTTP_PROXY in a pod
            // would send cluster-internal requests out).
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self { base: format!("http://{authority}"), transport: Transport::Http { http, token: None } }
    }

    /// A client whose requests go through `send`; `describe` names where they go, in errors.
    pub fn with_transport(describe: impl Into<String>, send: Send) -> Self {
        Self { base: describe.into(), transport: Transport::Custom(send) }
    }

    /// Sends `token` as a bearer token with every request (plain HTTP only: a custom transport
    /// carries its own credentials).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        if let Transport::Http { token: t, .. } = &mut self.transport {
            *t = Some(token.into());
        }
        self
    }

    async fn send(&self, call: Call) -> Result<RawAnswer, AdminError> {
        let unreachable = |reason: String| AdminError::Unreachable { base: self.base.clone(), reason };
        match &self.transport {
            Transport::Custom(send) => send(call).await.map_err(unreachable),
            Transport::Http { http, token } => {
                let mut request = http.request(call.method, format!("{}{}", self.base, call.path_and_query));
                if let Some(t) = token {
                    request = request.bearer_auth(t);
                }
                if let Some(json) = call.json {
                    request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(json);
                }
                let resp = request.send().await.map_err(|e| unreachable(e.to_string()))?;
                let status = resp.status().as_u16();
                let body = resp.bytes().await.map_err(|e| unreachable(e.to_string()))?.to_vec();
                Ok(RawAnswer { status, body })
            }
        }
    }

    /// Any request, answered as it came (any status). Errors only when there is no answer.
    pub async fn raw(&self, method: Method, path_and_query: &str) -> Result<RawAnswer, AdminError> {
        self.send(Call { method, path_and_query: path_and_query.into(), json: None }).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &(impl serde::Serialize + ?Sized),
    ) -> Result<T, AdminError> {
        self.call_with(method, path, query, None::<&()>).await
    }

    /// `call` with a JSON body.
    async fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &(impl serde::Serialize + ?Sized),
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, AdminError> {
        let query = serde_urlencoded::to_string(query).map_err(|e| AdminError::Unreachable {
            base: self.base.clone(),
            reason: format!("cannot encode the query: {e}"),
        })?;
        let path_and_query = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
        let json = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|source| AdminError::Decode { path: path.into(), source })?;
        let answer = self.send(Call { method: method.clone(), path_and_query, json }).await?;
        if !StatusCode::from_u16(answer.status).is_ok_and(|s| s.is_success()) {
            let message = error_text(&answer.body);
            return Err(AdminError::Status {
                method,
                path: path.to_string(),
                status: answer.status,
                message,
            });
        }
        serde_json::from_slice(&answer.body)
            .map_err(|source| AdminError::Decode { path: path.to_string(), source })
    }

    pub async fn queue(&self) -> Result<QueueStats, AdminError> {
        self.call(Method::GET, "/api/v1/queue", NO_QUERY).await
    }

    pub async fn verifications(&self) -> Result<Vec<VerificationState>, AdminError> {
        self.call(Method::GET, "/api/v1/verifications", NO_QUERY).await
    }

    /// Verify `domain`'s destination again now.
    pub async fn retry_verification(&self, domain: &str) -> Result<VerificationRetry, AdminError> {
        self.call(Method::POST, &format!("/api/v1/verifications/{}/retry", segment(domain)), NO_QUERY).await
    }

    /// The sending accounts and their last connection test.
    pub async fn accounts(&self) -> Result<Vec<AccountState>, AdminError> {
        self.call(Method::GET, "/api/v1/accounts", NO_QUERY).await
    }

    /// Tests an account's connection now (connect, TLS, login, QUIT).
    pub async fn test_account(&self, name: &str) -> Result<AccountTest, AdminError> {
        self.call(Method::POST, &format!("/api/v1/accounts/{}/test", segment(name)), NO_QUERY).await
    }

    /// Confirms a Direct account's address with the code its confirmation mail carried.
    pub async fn confirm_account(&self, name: &str, code: &str) -> Result<ConfirmationAnswer, AdminError> {
        let path = format!("/api/v1/accounts/{}/confirm", segment(name));
        self.call_with(Method::POST, &path, NO_QUERY, Some(&ConfirmCode { code: code.into() })).await
    }

    /// The consent link of an OAuth account (Microsoft365, Gmail).
    pub async fn authorize_account(&self, name: &str) -> Result<AuthorizeAnswer, AdminError> {
        self.call(Method::POST, &format!("/api/v1/accounts/{}/authorize", segment(name)), NO_QUERY).await
    }

    /// Mails a new confirmation request to a Direct account's address.
    pub async fn send_confirmation(&self, name: &str) -> Result<ConfirmationAnswer, AdminError> {
        self.call(Method::POST, &format!("/api/v1/accounts/{}/confirmation", segment(name)), NO_QUERY).await
    }

    pub async fn quarantine_search(&self, search: &QuarantineSearch) -> Result<Vec<HeldMessage>, AdminError> {
        self.call(Method::GET, "/api/v1/quarantine", search).await
    }

    pub async fn quarantine_show(&self, id: &str) -> Result<HeldMessageDetail, AdminError> {
        self.call(Method::GET, &format!("/api/v1/quarantine/{}", segment(id)), NO_QUERY).await
    }

    /// The held message as stored.
    pub async fn quarantine_raw(&self, id: &str) -> Result<Vec<u8>, AdminError> {
        let path = format!("/api/v1/quarantine/{}/raw", segment(id));
        let answer = self.raw(Method::GET, &path).await?;
        if StatusCode::from_u16(answer.status).is_ok_and(|s| s.is_success()) {
            return Ok(answer.body);
        }
        let message = error_text(&answer.body);
        Err(AdminError::Status { method: Method::GET, path, status: answer.status, message })
    }

    /// Delivers a held message to its recipients; `by` (who asked) is logged.
    pub async fn quarantine_release(&self, id: &str, by: &str) -> Result<Released, AdminError> {
        self.call(Method::POST, &format!("/api/v1/quarantine/{}/release", segment(id)), &[("by", by)]).await
    }

    pub async fn quarantine_delete(&self, id: &str, by: &str) -> Result<Deleted, AdminError> {
        self.call(Method::DELETE, &format!("/api/v1/quarantine/{}", segment(id)), &[("by", by)]).await
    }
}

/// The `error` text of an error answer (the gateway's, or the `message` of a Kubernetes
/// `Status` when the API server in between refused), or its body as text when it is neither.
fn error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct KubernetesStatus {
        kind: String,
        message: String,
    }
    serde_json::from_slice::<ApiError>(body)
        .map(|e| e.error)
        .or_else(|_| serde_json::from_slice::<ConfirmationAnswer>(body).map(|a| a.detail))
        .or_else(|_| {
            serde_json::from_slice::<KubernetesStatus>(body).map_err(|_| ()).and_then(|s| {
                if s.kind == "Status" { Ok(format!("Kubernetes API server: {}", s.message)) } else { Err(()) }
            })
        })
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string())
}

/// A value as one path segment: anything but unreserved characters percent-encoded, so an id
/// or a domain cannot reach another endpoint.
fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(segment("0193abc"), "0193abc");
        assert_eq!(segment("../queue?x=1"), "..%2Fqueue%3Fx%3D1");
        assert_eq!(segment("bücher.test"), "b%C3%BCcher.test");
    }

    /// Against a real HTTP server that answers like the gateway: the JSON error text comes back
    /// in the error, and the query carries the search fields in camelCase.
    #[tokio::test]
    async fn errors_carry_the_api_text_and_searches_their_fields() {
        use axum::extract::RawQuery;
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/api/v1/quarantine/{id}",
                get(|| async {
                    (
                        axum::http::StatusCode::NOT_FOUND,
                        axum::Json(serde_json::json!({"error": "no quarantine entry x"})),
                    )
                }),
            )
            .route(
                "/api/v1/quarantine",
                get(|RawQuery(q): RawQuery| async move {
                    assert_eq!(q.as_deref(), Some("q=a+b&attachmentText=inv&limit=5"));
                    axum::Json(serde_json::json!([]))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = AdminClient::new(&addr.to_string());
        let e = client.quarantine_show("x").await.unwrap_err();
        assert_eq!(e.status(), Some(404));
        assert!(e.to_string().contains("no quarantine entry x"), "{e}");
        let search = QuarantineSearch {
            q: Some("a b".into()),
            attachment_text: Some("inv".into()),
            limit: Some(5),
            ..Default::default()
        };
        assert!(client.quarantine_search(&search).await.unwrap().is_empty());
    }
}
