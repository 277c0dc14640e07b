//! Admin HTTP on its own port: health, readiness, Prometheus metrics, queue figures.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::context::Gateway;

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/queue", get(queue))
        .with_state(gw)
}

/// Ready when the listeners are bound and the store answers.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if !gw.listening.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: listeners not bound\n").into_response();
    }
    match gw.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    refresh_queue_gauges(&gw).await;
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        gw.metrics.encode(),
    )
        .into_response()
}

async fn queue(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.store.stats().await {
        Ok(stats) => axum::Json(stats).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

pub async fn refresh_queue_gauges(gw: &Gateway) {
    if let Ok(s) = gw.store.stats().await {
        gw.metrics.queue_jobs.set(s.jobs as i64);
        gw.metrics.queue_messages.set(s.messages as i64);
        gw.metrics.quarantine_entries.set(s.quarantined as i64);
    }
}
