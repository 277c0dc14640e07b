//! Traces leave over OTLP/HTTP: a receiver on loopback decodes what the exporter sends
//! (protobuf `ExportTraceServiceRequest`, the collector's own message types) and finds the
//! reconcile span with its attributes.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracing_subscriber::layer::SubscriberExt;

const GATEWAY: &str = "apiVersion: mail.postern.dev/v1alpha1\nkind: Gateway\nmetadata: {name: edge, namespace: mail, uid: 00000000-0000-0000-0000-000000000001}\nspec: {hostname: gw.test}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_spans_reach_an_otlp_receiver() {
    let received: Arc<Mutex<Vec<ExportTraceServiceRequest>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(ExportTraceServiceRequest::decode(body).expect("OTLP protobuf"));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let provider = postern_operator::telemetry::provider(&endpoint).unwrap();
    let subscriber = tracing_subscriber::registry().with(postern_operator::telemetry::layer(&provider));
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut objs = postern_operator::manifests::Objects::default();
    objs.add_yaml(GATEWAY, "mail").unwrap();
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<postern_operator::crd::Gateway>()
        .with_resource::<postern_operator::crd::MailDomain>()
        .with_resource::<postern_operator::crd::RoutingPolicy>()
        .with_resource::<postern_operator::crd::SpamPolicy>()
        .with_resource::<postern_operator::crd::SendingAccount>()
        .with_status_subresource::<postern_operator::crd::Gateway>()
        .with_object(objs.gateways[0].clone())
        .build()
        .await
        .unwrap();
    let ctx = Arc::new(postern_operator::controller::Context::new(client));
    postern_operator::controller::reconcile(Arc::new(objs.gateways[0].clone()), ctx).await.unwrap();
    // The batch processor sends from its own thread; flush there until the reconcile span has
    // arrived (one flush was not always enough: seen once in a full run), for at most 10 s.
    let provider = Arc::new(provider);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let requests = loop {
        let p = provider.clone();
        tokio::task::spawn_blocking(move || p.force_flush()).await.unwrap().unwrap();
        let got = received.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let has_reconcile = got
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .any(|ss| ss.spans.iter().any(|s| s.name == "reconcile"));
        if has_reconcile || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let spans: Vec<_> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let span = spans.iter().find(|s| s.name == "reconcile").expect("a reconcile span");
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value))
    };
    assert!(attr("gateway").is_some_and(|v| v.contains("edge")), "{:?}", span.attributes);
    assert!(attr("namespace").is_some_and(|v| v.contains("mail")), "{:?}", span.attributes);
    let service = requests[0].resource_spans[0].resource.as_ref().unwrap();
    assert!(format!("{:?}", service.attributes).contains("postern-operator"));
}
