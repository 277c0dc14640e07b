//! Logs (JSON lines) and, when an OTLP endpoint is configured, traces exported over
//! OTLP/HTTP (protobuf) with tracing-opentelemetry. The standard variable
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (e.g. `http://otel-collector:4318`) turns export on.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A tracer provider exporting in batches to `endpoint` (the collector's base URL).
pub fn provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    // The exporter's HTTP client builds its rustls config from the process default; name ring
    // (the one crypto provider Postern uses) so the choice never depends on feature unification.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("postern-operator").build())
        .build())
}

/// The tracing layer sending spans to `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("postern-operator"))
}

/// Installs the global subscriber: JSON logs filtered by RUST_LOG (default info), plus OTLP
/// traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Keep the returned provider alive and
/// shut it down at exit so the last spans are sent.
pub fn init() -> anyhow::Result<Option<SdkTracerProvider>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt::layer().json();
    match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            let provider = provider(&endpoint)?;
            tracing_subscriber::registry().with(filter).with(logs).with(layer(&provider)).init();
            tracing::info!(%endpoint, "exporting traces over OTLP");
            Ok(Some(provider))
        }
        None => {
            tracing_subscriber::registry().with(filter).with(logs).init();
            Ok(None)
        }
    }
}
