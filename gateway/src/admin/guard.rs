//! Who may use the admin API's `/api/` endpoints (the quarantine's senders, subjects and
//! bodies; release and delete; the queue; verification retries):
//! - with `admin.tokenFile`, a request must carry `Authorization: Bearer <token>` with one of
//!   the file's tokens (`auth::tokens`: re-read when it changes, compared in constant time);
//! - with `admin.kubernetes`, any other bearer token is reviewed by the API server
//!   (`auth::kubernetes`), and the request is allowed if RBAC grants its verb on its resource
//!   (`attributes`) in the Gateway's namespace; every allowed change is logged with its actor;
//! - the `Host` must be an IP address, `localhost` or one of `admin.hosts`: a browser tricked
//!   by DNS rebinding sends the attacker's name;
//! - a browser's cross-origin request that changes something (an `Origin` not naming this
//!   host, or `Sec-Fetch-Site: cross-site`) is refused, so a web page cannot release or delete
//!   through a reviewer's browser.
//!
//! `/healthz`, `/readyz` and `/metrics` stay open (probes and Prometheus).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use postern_api::admin::ApiError;

use crate::auth::kubernetes::{API_GROUP, Attributes, Decision};
use crate::context::Context;
use crate::metrics::ReasonLabel;

fn refuse(status: StatusCode, error: &str) -> Response {
    let mut r = (status, axum::Json(ApiError { error: error.into() })).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    r
}

/// The host part of a Host or Origin authority (`[::1]:8025` -> `::1`, `a.b:80` -> `a.b`).
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { authority })
}

fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim_end_matches('.');
    host.parse::<std::net::IpAddr>().is_ok()
        || host.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.trim_end_matches('.').eq_ignore_ascii_case(host))
}

/// A browser's request from another site. Browsers that send Fetch Metadata say it:
/// `Sec-Fetch-Site` other than `same-origin` or `none` (typed in, a bookmark) is another
/// site (`same-site` too: a sibling sub-domain may be someone else's). Without it, an `Origin`
/// whose authority is not the Host. (Under `Referrer-Policy: no-referrer` a browser sends
/// `Origin: null` even for its own page's form; Fetch Metadata is what tells those apart.)
pub fn cross_site(headers: &HeaderMap, host: &str) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return !(site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none"));
    }
    match text("origin") {
        None => false,
        Some(origin) => {
            let authority = origin.split_once("://").map_or("", |(_, a)| a);
            !authority.eq_ignore_ascii_case(host)
        }
    }
}

/// The header `kubectl postern` carries the user's token in: the Kubernetes API server's
/// service proxy checks the user's right to reach the admin Service, then drops
/// `Authorization` before it forwards the request, so the token travels beside it.
pub const TOKEN_HEADER: &str = "x-postern-token";

/// The caller's token: `Authorization: Bearer`, else `X-Postern-Token`.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let from_authorization = headers.get(header::AUTHORIZATION).and_then(|v| {
        let (scheme, token) = v.as_bytes().split_at_checked(7)?;
        scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
    });
    from_authorization.or_else(|| headers.get(TOKEN_HEADER).map(|v| v.as_bytes())).filter(|t| !t.is_empty())
}

/// What an `/api/` request does, in RBAC's terms (resources of the `mail.postern.dev` group).
/// A request not listed here is refused when Kubernetes decides.
pub fn attributes(method: &Method, path: &str) -> Option<Attributes> {
    let parts: Vec<&str> = path.strip_prefix("/api/v1/")?.split('/').collect();
    let what =
        |resource, verb, name: Option<&str>| Some(Attributes { resource, verb, name: name.map(Into::into) });
    match (method.as_str(), parts.as_slice()) {
        ("GET" | "HEAD", ["queue"]) => what("queue", "get", None),
        ("GET" | "HEAD", ["verifications"]) => what("verifications", "list", None),
        ("POST", ["verifications", domain, "retry"]) => what("verifications", "update", Some(domain)),
        ("GET" | "HEAD", ["accounts"]) => what("accounts", "list", None),
        ("POST", ["accounts", name, "test"]) => what("accounts", "test", Some(name)),
        ("POST", ["accounts", name, "confirm" | "confirmation"]) => what("accounts", "confirm", Some(name)),
        ("POST", ["accounts", name, "authorize"]) => what("accounts", "authorize", Some(name)),
        ("GET" | "HEAD", ["quarantine"]) => what("quarantine", "list", None),
        ("GET" | "HEAD", ["quarantine", id] | ["quarantine", id, "raw"]) => {
            what("quarantine", "get", Some(id))
        }
        ("DELETE", ["quarantine", id]) => what("quarantine", "delete", Some(id)),
        ("POST", ["quarantine", id, "release"]) => what("quarantine", "release", Some(id)),
        _ => None,
    }
}

/// The user Kubernetes vouched for, put on the request for the handlers: it names who acted,
/// whatever the request itself claims (`?by=`).
#[derive(Clone, Debug)]
pub struct ReviewedUser(pub String);

/// Why a request is refused: the status, the metric's reason and the text for the caller.
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
    pub error: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, error: impl Into<String>) -> Self {
        Self { status, reason, error: error.into() }
    }
}

/// Who is let in.
pub enum Access {
    /// A token of `admin.tokenFile`, or no authentication configured: full access.
    Gateway,
    /// A Kubernetes user RBAC allowed.
    Reviewed(String),
}

/// Whether the bearer of `token` may do `what` (`None`: a request RBAC grants nothing); `changes`
/// says whether it changes something (allowed changes are logged with the actor). The admin
/// API and the console both ask here. Refusals are counted.
pub async fn authorize(
    ctx: &Context,
    token: Option<&[u8]>,
    what: Option<&Attributes>,
    changes: bool,
) -> Result<Access, Refusal> {
    let cfg = ctx.config();
    let refused = |r: Refusal| {
        ctx.metrics.admin_refused.get_or_create(&ReasonLabel { reason: r.reason }).inc();
        r
    };
    let Some(kube) = &cfg.config.admin.kubernetes else {
        return match ctx.admin_tokens.check(token) {
            None | Some(true) => Ok(Access::Gateway),
            Some(false) => Err(refused(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a bearer token from admin.tokenFile is required",
            ))),
        };
    };
    // A token of the file is the gateway's own (full access); any other is Kubernetes's.
    if ctx.admin_tokens.check(token) == Some(true) {
        return Ok(Access::Gateway);
    }
    let Some(what) = what else {
        return Err(refused(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this request is granted by no RBAC verb",
        )));
    };
    match ctx.admin_reviews.decide(kube, token, what).await {
        Decision::Allowed(user) => {
            if changes {
                tracing::info!(
                    actor = %user.username.escape_debug(), verb = what.verb, resource = what.resource,
                    name = %what.name.as_deref().unwrap_or_default().escape_debug(),
                    "admin request by a Kubernetes user"
                );
            }
            Ok(Access::Reviewed(user.username))
        }
        Decision::Unauthenticated => Err(refused(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a bearer token the Kubernetes API server accepts is required",
        ))),
        Decision::Forbidden { user, reason } => {
            tracing::info!(actor = %user.escape_debug(), verb = what.verb, resource = what.resource, "admin request forbidden by RBAC");
            let error = format!(
                "{user} may not {} {}.{API_GROUP} in namespace {}{}{reason}",
                what.verb,
                what.resource,
                kube.namespace,
                if reason.is_empty() { "" } else { ": " },
            );
            Err(refused(Refusal::new(StatusCode::FORBIDDEN, "forbidden", error)))
        }
        Decision::Unavailable(e) => {
            tracing::warn!(error = %e, "admin request refused: the Kubernetes API server could not review it");
            Err(refused(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "review_failed",
                "the Kubernetes API server could not review this request",
            )))
        }
    }
}

/// The checks every browser-reachable admin page shares, before any token: the Host (DNS
/// rebinding) and, for a request that changes something, where it comes from.
pub fn check_origin(ctx: &Context, headers: &HeaderMap, changes: bool) -> Result<(), Refusal> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let refused = |r: Refusal| {
        ctx.metrics.admin_refused.get_or_create(&ReasonLabel { reason: r.reason }).inc();
        r
    };
    if !host_allowed(host_of(host), &ctx.config().config.admin.hosts) {
        return Err(refused(Refusal::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host",
            "this Host is not the admin API's (admin.hosts)",
        )));
    }
    if changes && cross_site(headers, host) {
        return Err(refused(Refusal::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "cross-origin requests may not change anything",
        )));
    }
    Ok(())
}

/// The middleware on `/api/`.
pub async fn guard(State(ctx): State<Arc<Context>>, mut request: Request, next: Next) -> Response {
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let Err(r) = check_origin(&ctx, request.headers(), changes) {
        return refuse(r.status, &r.error);
    }
    let what = attributes(request.method(), request.uri().path());
    match authorize(&ctx, bearer(request.headers()), what.as_ref(), changes).await {
        Ok(Access::Gateway) => next.run(request).await,
        Ok(Access::Reviewed(user)) => {
            request.extensions_mut().insert(ReviewedUser(user));
            next.run(request).await
        }
        Err(r) => refuse(r.status, &r.error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_literals_localhost_or_listed() {
        let allowed = vec!["gw-admin.mail.svc".to_string()];
        for ok in ["127.0.0.1:8025", "[::1]:8025", "localhost:8025", "10.1.2.3", "GW-ADMIN.mail.svc.:8025"] {
            assert!(host_allowed(host_of(ok), &allowed), "{ok}");
        }
        for bad in ["evil.example:8025", "", "127.0.0.1.evil.example", "gw-admin.mail.svc.evil"] {
            assert!(!host_allowed(host_of(bad), &allowed), "{bad}");
        }
    }

    #[test]
    fn every_api_route_has_its_rbac_verb() {
        let rbac = |m: Method, p: &str| attributes(&m, p).map(|a| (a.resource, a.verb, a.name));
        assert_eq!(rbac(Method::GET, "/api/v1/quarantine"), Some(("quarantine", "list", None)));
        assert_eq!(
            rbac(Method::GET, "/api/v1/quarantine/ab12/raw"),
            Some(("quarantine", "get", Some("ab12".into())))
        );
        assert_eq!(
            rbac(Method::POST, "/api/v1/quarantine/ab12/release"),
            Some(("quarantine", "release", Some("ab12".into())))
        );
        assert_eq!(
            rbac(Method::DELETE, "/api/v1/quarantine/ab12"),
            Some(("quarantine", "delete", Some("ab12".into())))
        );
        assert_eq!(rbac(Method::GET, "/api/v1/queue"), Some(("queue", "get", None)));
        assert_eq!(
            rbac(Method::POST, "/api/v1/verifications/a.example/retry"),
            Some(("verifications", "update", Some("a.example".into())))
        );
        // Every verb checked is one the documented rules (and the chart's role) know.
        let routes = [
            (Method::GET, "/api/v1/quarantine"),
            (Method::GET, "/api/v1/quarantine/x"),
            (Method::POST, "/api/v1/quarantine/x/release"),
            (Method::DELETE, "/api/v1/quarantine/x"),
            (Method::GET, "/api/v1/queue"),
            (Method::GET, "/api/v1/verifications"),
            (Method::POST, "/api/v1/verifications/d/retry"),
            (Method::GET, "/api/v1/accounts"),
            (Method::POST, "/api/v1/accounts/a/test"),
            (Method::POST, "/api/v1/accounts/a/confirm"),
            (Method::POST, "/api/v1/accounts/a/confirmation"),
            (Method::POST, "/api/v1/accounts/a/authorize"),
        ];
        let mut checked: Vec<(&str, &str)> =
            routes.iter().map(|(m, p)| attributes(m, p).map(|a| (a.resource, a.verb)).unwrap()).collect();
        let mut documented: Vec<(&str, &str)> = postern_api::admin::RBAC_RULES
            .iter()
            .flat_map(|(r, verbs)| verbs.iter().map(move |v| (*r, *v)))
            .collect();
        checked.sort();
        checked.dedup();
        documented.sort();
        assert_eq!(checked, documented);
        // Unknown shapes are granted by no verb.
        assert_eq!(rbac(Method::POST, "/api/v1/quarantine"), None);
        assert_eq!(rbac(Method::GET, "/api/v1/quarantine/a/b/c"), None);
        assert_eq!(rbac(Method::GET, "/api/v2/queue"), None);
    }

    #[test]
    fn the_token_comes_from_authorization_or_beside_a_proxy() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(TOKEN_HEADER, "proxied".parse().unwrap());
        assert_eq!(bearer(&h), Some(&b"proxied"[..]));
        h.insert(header::AUTHORIZATION, "Bearer direct".parse().unwrap());
        assert_eq!(bearer(&h), Some(&b"direct"[..]));
        h.insert(header::AUTHORIZATION, "Basic eDp5".parse().unwrap());
        assert_eq!(bearer(&h), Some(&b"proxied"[..]));
    }

    #[test]
    fn cross_site_is_an_other_origin_or_the_fetch_metadata() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        assert!(!cross_site(&h(&[]), "127.0.0.1:8025"), "curl, the CLI, the operator");
        assert!(!cross_site(&h(&[("origin", "http://127.0.0.1:8025")]), "127.0.0.1:8025"));
        assert!(cross_site(&h(&[("origin", "https://evil.example")]), "127.0.0.1:8025"));
        assert!(cross_site(&h(&[("origin", "null")]), "127.0.0.1:8025"));
        assert!(cross_site(&h(&[("sec-fetch-site", "cross-site")]), "127.0.0.1:8025"));
        assert!(cross_site(&h(&[("sec-fetch-site", "same-site")]), "127.0.0.1:8025"), "a sibling sub-domain");
        // A form of our own page under no-referrer: Origin null, but Fetch Metadata says so.
        let own_form = h(&[("origin", "null"), ("sec-fetch-site", "same-origin")]);
        assert!(!cross_site(&own_form, "127.0.0.1:8025"));
    }
}
