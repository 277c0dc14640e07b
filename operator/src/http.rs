//! The operator's own HTTP port: liveness, readiness and Prometheus metrics.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::controller::Context;

pub async fn serve(addr: SocketAddr, ctx: Arc<Context>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %addr, "admin listening");
    serve_on(listener, ctx).await
}

pub async fn serve_on(listener: tokio::net::TcpListener, ctx: Arc<Context>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(metrics))
        .with_state(ctx);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    let mut registry = prometheus_client::registry::Registry::default();
    ctx.metrics.register(&mut registry);
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
}
