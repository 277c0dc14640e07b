//! Admin HTTP on its own port: health, readiness, Prometheus metrics, queue figures,
//! destination verification, the quarantine; the quarantine console (`console/`) and the
//! public pages (`/confirm`, `/oauth/callback`, `/quarantine/link`). The CLI's side of it is
//! `postern_admin_client::cli`.

mod confirm;
mod console;
mod digest_links;
mod guard;
mod oauth;
mod quarantine;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use postern_api::admin::{AccountState, AccountTest, ApiError, VerificationRetry, VerificationStatus};

use crate::context::Context;

pub fn router(ctx: Arc<Context>) -> Router {
    // Everything under /api/ passes the guard (tokens, Host, cross-origin); probes and
    // metrics stay open.
    let api = Router::new()
        .route("/api/v1/queue", get(queue))
        .route("/api/v1/verifications", get(verifications))
        .route("/api/v1/verifications/{domain}/retry", post(retry_verification))
        .route("/api/v1/accounts", get(accounts))
        .route("/api/v1/accounts/{name}/test", post(test_account))
        .route("/api/v1/accounts/{name}/confirm", post(confirm::code))
        .route("/api/v1/accounts/{name}/confirmation", post(confirm::send_again))
        .route("/api/v1/accounts/{name}/authorize", post(oauth::authorize))
        .route("/api/v1/quarantine", get(quarantine::list))
        .route("/api/v1/quarantine/{id}", get(quarantine::show).delete(quarantine::delete))
        .route("/api/v1/quarantine/{id}/raw", get(quarantine::raw))
        .route("/api/v1/quarantine/{id}/release", post(quarantine::release))
        .route_layer(axum::middleware::from_fn_with_state(ctx.clone(), guard::guard));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Public (an Ingress serves it to the world): the MTA-STS policy of a served domain.
        .route("/.well-known/mta-sts.txt", get(mta_sts))
        // Public: the one-time link of an account address's confirmation mail.
        .route("/confirm", get(confirm::link_page).post(confirm::link_confirm))
        // Public: where the OAuth provider sends the account owner back with the grant.
        .route("/oauth/callback", get(oauth::callback))
        // Public: the one-click release/delete links of quarantine digests.
        .route("/quarantine/link", get(digest_links::show).post(digest_links::act))
        .merge(console::router(ctx.clone()))
        .merge(api)
        .with_state(ctx)
}

/// Ready when the listeners are bound and the store answers.
async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    if !ctx.listening.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: listeners not bound\n").into_response();
    }
    match ctx.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    refresh_queue_gauges(&ctx).await;
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        ctx.metrics.encode(),
    )
        .into_response()
}

/// The MTA-STS policy (RFC 8461 3.3), for a request to `mta-sts.<served domain>`; anything
/// else is 404, so the file says nothing about domains the gateway does not serve.
async fn mta_sts(State(ctx): State<Arc<Context>>, headers: axum::http::HeaderMap) -> Response {
    let cfg = ctx.config();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let host = host
        .rsplit_once(':')
        .map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let domain = host.strip_prefix("mta-sts.").unwrap_or_default();
    let served = cfg.config.domains.iter().any(|d| d.name.eq_ignore_ascii_case(domain));
    match &cfg.config.mta_sts {
        Some(policy) if served => (
            [(header::CONTENT_TYPE, "text/plain"), (header::CACHE_CONTROL, "max-age=300")],
            policy.policy(&cfg.config.hostname),
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "no MTA-STS policy for this host\n").into_response(),
    }
}

/// The sending accounts (no credentials), their last connection test on this pod, and for a
/// Direct account its DKIM record and verification (the operator copies both into the
/// SendingAccount's status and the Gateway's DNSEndpoint).
async fn accounts(State(ctx): State<Arc<Context>>) -> Response {
    let cfg = ctx.config();
    let tests = ctx.account_tests.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut list = Vec::with_capacity(cfg.config.accounts.len());
    for a in &cfg.config.accounts {
        let domain = domain_of_from(&a.from);
        let (mut dkim_record, mut dkim_name, mut verification) = (None, None, None);
        if let Some(d) = &a.direct {
            dkim_record = ctx.signing.record(d, domain).ok();
            dkim_name = Some(format!("{}._domainkey.{domain}", d.selector));
            verification = Some(match crate::accounts::confirmation::needs_confirmation(a) {
                true => ctx.confirmations.verification(&a.from).await,
                false => ctx.signing.verification(&ctx.dns, d, domain, true).await,
            });
        }
        list.push(AccountState {
            name: a.name.clone(),
            from: a.from.clone(),
            server: match (&a.smtp, &a.direct) {
                (Some(s), _) => format!("{}:{} ({:?})", s.host, s.port(), s.security),
                (None, Some(d)) => format!("direct, DKIM selector {} ({:?})", d.selector, d.algorithm),
                (None, None) => String::new(),
            },
            dkim_record,
            dkim_name,
            verification,
            authorization: match a.oauth.is_some() {
                true => Some(ctx.oauth.authorization(a).await),
                false => None,
            },
            tested: tests.get(&a.name).cloned(),
        });
    }
    axum::Json(list).into_response()
}

/// The domain of an account's `from` (`alice@example.com` or `@example.com`).
fn domain_of_from(from: &str) -> &str {
    from.rsplit_once('@').map_or("", |(_, d)| d)
}

/// "Test connection": connect, TLS, login, QUIT, now; the result is kept for `accounts`.
async fn test_account(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    let cfg = ctx.config();
    let Some(account) = cfg.sending_account(&name) else {
        let error = format!("no sending account {:?}", name.escape_debug().to_string());
        return (StatusCode::NOT_FOUND, axum::Json(ApiError { error })).into_response();
    };
    // A Direct account's test: its domain publishes its DKIM key (what lets it send); an
    // OAuth account's: a token refresh.
    let (ok, detail) = match (crate::store::NextHop::account(account), &account.direct) {
        (Some(_), _) if account.oauth.is_some() || account.exchange.is_some() => {
            match ctx.mailbox_api.test(&cfg, account).await {
                Ok(found) => (true, found),
                Err(why) => (false, why),
            }
        }
        (Some(hop), _) => match ctx.outbound.test(&cfg, &hop).await {
            Ok(found) => (true, found),
            Err(f) => (false, f.diagnostic),
        },
        (None, Some(d)) => {
            let v = ctx.signing.verification(&ctx.dns, d, domain_of_from(&account.from), true).await;
            (v.verified, v.detail)
        }
        (None, None) => (false, "the account has nothing to test".into()),
    };
    tracing::info!(account = %name, ok, detail = %detail, "sending account connection tested");
    let result = AccountTest { account: name.clone(), ok, detail, tested_at: crate::util::time::now_ms() };
    ctx.account_tests.lock().unwrap_or_else(|p| p.into_inner()).insert(name, result.clone());
    axum::Json(result).into_response()
}

async fn queue(State(ctx): State<Arc<Context>>) -> Response {
    match ctx.store.stats().await {
        Ok(stats) => axum::Json(stats).into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(ApiError { error: e.to_string() })).into_response()
        }
    }
}

/// Destination verification state of every routing policy that asks for it.
async fn verifications(State(ctx): State<Arc<Context>>) -> Response {
    axum::Json(ctx.verifications.list()).into_response()
}

/// Verify a domain's destination again now.
async fn retry_verification(State(ctx): State<Arc<Context>>, Path(domain): Path<String>) -> Response {
    match ctx.verifications.retrigger(&ctx.config(), &domain).await {
        Ok(true) => (
            StatusCode::ACCEPTED,
            axum::Json(VerificationRetry { domain, status: VerificationStatus::Pending }),
        )
            .into_response(),
        Ok(false) => {
            let error = format!("{domain} has no enabled routing policy with a verificationAddress");
            (StatusCode::NOT_FOUND, axum::Json(ApiError { error })).into_response()
        }
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(ApiError { error })).into_response(),
    }
}

pub async fn refresh_queue_gauges(ctx: &Context) {
    match ctx.store.stats().await {
        Ok(s) => {
            ctx.metrics.queue_jobs.set(s.jobs as i64);
            ctx.metrics.queue_messages.set(s.messages as i64);
            ctx.metrics.quarantine_entries.set(s.quarantined as i64);
            ctx.metrics.store_up.set(1);
        }
        Err(_) => {
            ctx.metrics.store_up.set(0);
        }
    }
}
