//! Confirming a Direct account's address (`accounts::confirmation`): the one-time link's page
//! (`/confirm`, public: whoever holds the link is the mailbox's reader) and the admin API's
//! code entry and "send again".
//!
//! The link's GET only shows a Confirm button; the POST confirms. Mail scanners and link
//! previews fetch links before people click them, and must not confirm anything. The pages
//! carry a strict Content-Security-Policy, are never cached, and send no Referer (the token is
//! in the URL).

use std::sync::Arc;

use axum::extract::{Extension, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_api::admin::{ApiError, ConfirmCode, ConfirmationAnswer};
use serde::Deserialize;

use super::guard::{ReviewedUser, cross_site};
use crate::accounts::confirmation::{Outcome, needs_confirmation};
use crate::context::Context;

#[derive(Deserialize)]
pub struct LinkParams {
    #[serde(default)]
    address: String,
    #[serde(default)]
    token: String,
}

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title></head><body><main><h1>{t}</h1>{body_html}</main></body></html>\n",
        t = escape(title)
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// `GET /confirm?address=&token=`: what confirming means, and the button.
pub async fn link_page(State(ctx): State<Arc<Context>>, Query(p): Query<LinkParams>) -> Response {
    let hostname = ctx.config().hostname.clone();
    let address = escape(&p.address);
    page(
        StatusCode::OK,
        &format!("Confirm sending as {}", p.address),
        &format!(
            "<p>The mail gateway {host} will send mail as <strong>{address}</strong> once you confirm \
             that you set this up.</p><form method=\"post\"><input type=\"hidden\" name=\"address\" \
             value=\"{address}\"><input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <button type=\"submit\">Confirm</button></form><p>If you did not expect this, close this \
             page: nothing is sent as {address} until it is confirmed.</p>",
            host = escape(&hostname),
            token = escape(&p.token),
        ),
    )
}

/// `POST /confirm` (the button): confirms once, with the token mailed to the address.
pub async fn link_confirm(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Form(p): Form<LinkParams>,
) -> Response {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if cross_site(&headers, host) {
        return page(StatusCode::FORBIDDEN, "Not confirmed", "<p>Confirm from the page the link opens.</p>");
    }
    let address = escape(&p.address);
    match ctx.confirmations.confirm_token(&ctx.config(), &p.address, &p.token).await {
        Ok(Outcome::Confirmed) => page(
            StatusCode::OK,
            "Confirmed",
            &format!("<p>Mail may now be sent as <strong>{address}</strong>. You can close this page.</p>"),
        ),
        Ok(Outcome::AlreadyConfirmed) => {
            page(StatusCode::OK, "Already confirmed", &format!("<p>{address} was confirmed before.</p>"))
        }
        Ok(Outcome::Wrong) => page(StatusCode::NOT_FOUND, "Link not valid", "<p>This link is not valid.</p>"),
        Ok(Outcome::Expired | Outcome::Spent) => page(
            StatusCode::GONE,
            "Link expired",
            "<p>This link has expired: ask your mail administrator to send a new one.</p>",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "account address confirmation failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "<p>The gateway could not record it now.</p>",
            )
        }
    }
}

fn answer(status: StatusCode, account: &str, ok: bool, detail: impl Into<String>) -> Response {
    (status, axum::Json(ConfirmationAnswer { account: account.into(), ok, detail: detail.into() }))
        .into_response()
}

fn not_an_address_account(name: &str) -> Response {
    let error = format!(
        "no Direct sending account {:?} for a single address (an @domain account is verified by its DKIM key)",
        name.escape_debug().to_string()
    );
    (StatusCode::NOT_FOUND, axum::Json(ApiError { error })).into_response()
}

/// `POST /api/v1/accounts/NAME/confirm` `{code}`: the code from the confirmation mail.
pub async fn code(
    State(ctx): State<Arc<Context>>,
    Path(name): Path<String>,
    reviewed: Option<Extension<ReviewedUser>>,
    axum::Json(body): axum::Json<ConfirmCode>,
) -> Response {
    let cfg = ctx.config();
    let Some(account) = cfg.sending_account(&name).filter(|a| needs_confirmation(a)) else {
        return not_an_address_account(&name);
    };
    let actor = reviewed.map_or_else(|| "an admin token".to_string(), |Extension(ReviewedUser(u))| u);
    match ctx.confirmations.confirm_code(&account.from, &body.code, &actor).await {
        Ok(Outcome::Confirmed) => answer(StatusCode::OK, &name, true, format!("{} confirmed", account.from)),
        Ok(Outcome::AlreadyConfirmed) => {
            answer(StatusCode::OK, &name, true, format!("{} was confirmed before", account.from))
        }
        Ok(Outcome::Wrong) => answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            &name,
            false,
            "not the code of the request sent (or none was sent)",
        ),
        Ok(Outcome::Expired | Outcome::Spent) => answer(
            StatusCode::GONE,
            &name,
            false,
            "the request expired or too many wrong codes were tried: send a new one",
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(ApiError { error: e })).into_response(),
    }
}

/// `POST /api/v1/accounts/NAME/confirmation`: mail a new request (the old link and code stop
/// working), unless the address is confirmed.
pub async fn send_again(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    let cfg = ctx.config();
    let Some(account) = cfg.sending_account(&name).filter(|a| needs_confirmation(a)) else {
        return not_an_address_account(&name);
    };
    match ctx.confirmations.request(&cfg, account, true).await {
        Ok(true) => {
            answer(StatusCode::OK, &name, true, format!("a new request was mailed to {}", account.from))
        }
        Ok(false) => answer(
            StatusCode::CONFLICT,
            &name,
            false,
            format!("not sent: {} is confirmed, or another gateway sent a request this moment", account.from),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(ApiError { error: e })).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_what_could_break_out() {
        assert_eq!(escape(r#"<a href="x">'&'"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;");
    }
}
