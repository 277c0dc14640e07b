//! The quarantine's admin endpoints (JSON). Who acts is the Kubernetes user the guard
//! reviewed; otherwise it is named by `?by=` (the CLI sends the user's login) or an
//! `X-Postern-Actor` header set by an authenticating proxy. It is logged.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_api::admin::{ApiError, Deleted};
use serde::Deserialize;

use super::guard::ReviewedUser;
use crate::context::Context;
use crate::quarantine::{self as q, QuarantineError, Search};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Actor {
    by: Option<String>,
}

fn actor(query: &Actor, headers: &HeaderMap, reviewed: Option<Extension<ReviewedUser>>) -> String {
    if let Some(Extension(ReviewedUser(user))) = reviewed {
        return user;
    }
    query
        .by
        .clone()
        .or_else(|| headers.get("x-postern-actor").and_then(|v| v.to_str().ok()).map(str::to_string))
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "anonymous".into())
}

fn error(e: QuarantineError) -> Response {
    let status = match &e {
        QuarantineError::BadRequest(_) => StatusCode::BAD_REQUEST,
        QuarantineError::NotFound(_) => StatusCode::NOT_FOUND,
        QuarantineError::Conflict(_) => StatusCode::CONFLICT,
        QuarantineError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, axum::Json(ApiError { error: e.to_string() })).into_response()
}

pub async fn list(State(ctx): State<Arc<Context>>, Query(search): Query<Search>) -> Response {
    match q::search(&ctx, &search).await {
        Ok(found) => axum::Json(found).into_response(),
        Err(e) => error(e),
    }
}

pub async fn show(State(ctx): State<Arc<Context>>, Path(id): Path<String>) -> Response {
    match q::show(&ctx, &id).await {
        Ok((shown, _)) => axum::Json(shown).into_response(),
        Err(e) => error(e),
    }
}

/// The held message as stored, for a mail client or a closer look.
pub async fn raw(State(ctx): State<Arc<Context>>, Path(id): Path<String>) -> Response {
    match q::show(&ctx, &id).await {
        Ok((_, body)) => ([(header::CONTENT_TYPE, "message/rfc822")], body).into_response(),
        Err(e) => error(e),
    }
}

pub async fn release(
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
    Query(who): Query<Actor>,
    reviewed: Option<Extension<ReviewedUser>>,
    headers: HeaderMap,
) -> Response {
    match q::release(&ctx, &id, &actor(&who, &headers, reviewed)).await {
        Ok(done) => (StatusCode::ACCEPTED, axum::Json(done)).into_response(),
        Err(e) => error(e),
    }
}

pub async fn delete(
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
    Query(who): Query<Actor>,
    reviewed: Option<Extension<ReviewedUser>>,
    headers: HeaderMap,
) -> Response {
    match q::delete(&ctx, &id, &actor(&who, &headers, reviewed)).await {
        Ok(()) => axum::Json(Deleted { id, deleted: true }).into_response(),
        Err(e) => error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reviewed_user_is_the_actor_whatever_the_request_claims() {
        let mut headers = HeaderMap::new();
        headers.insert("x-postern-actor", "proxy-user".parse().unwrap());
        let claims = Actor { by: Some("mallory".into()) };
        let reviewed = Some(Extension(ReviewedUser("alice@example.com".into())));
        assert_eq!(actor(&claims, &headers, reviewed), "alice@example.com");
        assert_eq!(actor(&claims, &headers, None), "mallory");
        assert_eq!(actor(&Actor::default(), &headers, None), "proxy-user");
        assert_eq!(actor(&Actor::default(), &HeaderMap::new(), None), "anonymous");
    }
}
