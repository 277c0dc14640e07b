//! The consent of an OAuth sending account (`outbound::oauth`): the admin API hands out the
//! provider's consent link (`accounts authorize NAME` prints it; whoever owns the mailbox opens
//! it), and the provider sends the browser back to the public `/oauth/callback` with the code,
//! which is exchanged (with the PKCE verifier) for the tokens.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use postern_api::admin::{ApiError, AuthorizeAnswer};

use super::confirm::{escape, page};
use crate::context::Context;

/// `POST /api/v1/accounts/NAME/authorize`: the consent link for the account's mailbox.
pub async fn authorize(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    let cfg = ctx.config();
    let Some(account) = cfg.sending_account(&name).filter(|a| a.oauth.is_some()) else {
        let error = format!("no OAuth sending account {:?}", name.escape_debug().to_string());
        return (StatusCode::NOT_FOUND, axum::Json(ApiError { error })).into_response();
    };
    match ctx.oauth.authorize_url(&cfg, account).await {
        Ok(url) => {
            tracing::info!(account = %name, "sending account consent started");
            axum::Json(AuthorizeAnswer { account: name, authorize_url: url }).into_response()
        }
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(ApiError { error })).into_response(),
    }
}

/// `GET /oauth/callback?code=&state=` (or `?error=&state=`): the provider's answer.
pub async fn callback(State(ctx): State<Arc<Context>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let cfg = ctx.config();
    let Some(state) = q.get("state") else {
        return page(StatusCode::BAD_REQUEST, "Not authorized", "<p>The answer carries no state.</p>");
    };
    let result = ctx
        .oauth
        .callback(&cfg, state, q.get("code").map(String::as_str), q.get("error").map(String::as_str))
        .await;
    match result {
        Ok((account, a)) if a.authorized => page(
            StatusCode::OK,
            "Authorized",
            &format!(
                "<p>The sending account <strong>{}</strong> may now send. You can close this page.</p>",
                escape(&account)
            ),
        ),
        Ok((account, a)) => page(
            StatusCode::OK,
            "Not authorized",
            &format!(
                "<p>The sending account <strong>{}</strong> was not authorized: {}.</p>",
                escape(&account),
                escape(&a.detail)
            ),
        ),
        Err(why) => {
            tracing::warn!(error = %why.escape_debug(), "sending account authorization failed");
            page(StatusCode::BAD_REQUEST, "Not authorized", &format!("<p>{}</p>", escape(&why)))
        }
    }
}
