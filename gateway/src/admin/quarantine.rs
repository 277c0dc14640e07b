//! The quarantine's admin endpoints (JSON). Who acts is named by `?by=` (the CLI sends the
//! user's login) or an `X-Postern-Actor` header set by an authenticating proxy; it is logged.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_api::admin::{ApiError, Deleted};
use serde::Deserialize;

use crate::context::Context;
use crate::quarantine::{self as q, QuarantineError, Search};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Actor {
    by: Option<String>,
}

fn actor(query: &Actor, headers: &HeaderMap) -> String {
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
    headers: HeaderMap,
) -> Response {
    match q::release(&ctx, &id, &actor(&who, &headers)).await {
        Ok(done) => (StatusCode::ACCEPTED, axum::Json(done)).into_response(),
        Err(e) => error(e),
    }
}

pub async fn delete(
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
    Query(who): Query<Actor>,
    headers: HeaderMap,
) -> Response {
    match q::delete(&ctx, &id, &actor(&who, &headers)).await {
        Ok(()) => axum::Json(Deleted { id, deleted: true }).into_response(),
        Err(e) => error(e),
    }
}
