//! Who may use the admin API's `/api/` endpoints (the quarantine's senders, subjects and
//! bodies; release and delete; the queue; verification retries):
//! - with `admin.tokenFile`, a request must carry `Authorization: Bearer <token>` with one of
//!   the file's tokens (`auth::tokens`: re-read when it changes, compared in constant time);
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

use crate::context::Context;

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

/// A browser's request from another site: an `Origin` whose authority is not the Host, or
/// `Sec-Fetch-Site: cross-site`.
fn cross_site(headers: &HeaderMap, host: &str) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if text("sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return true;
    }
    match text("origin") {
        None => false,
        Some(origin) => {
            let authority = origin.split_once("://").map_or("", |(_, a)| a);
            !authority.eq_ignore_ascii_case(host)
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token).filter(|t| !t.is_empty())
}

/// The middleware on `/api/`.
pub async fn guard(State(ctx): State<Arc<Context>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let cfg = ctx.config();
    if !host_allowed(host_of(&host), &cfg.config.admin.hosts) {
        return refuse(StatusCode::MISDIRECTED_REQUEST, "this Host is not the admin API's (admin.hosts)");
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes && cross_site(headers, &host) {
        return refuse(StatusCode::FORBIDDEN, "cross-origin requests may not change anything");
    }
    match ctx.admin_tokens.check(bearer(headers)) {
        None | Some(true) => next.run(request).await,
        Some(false) => {
            ctx.metrics.admin_unauthorized.inc();
            refuse(StatusCode::UNAUTHORIZED, "a bearer token from admin.tokenFile is required")
        }
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
    }
}
