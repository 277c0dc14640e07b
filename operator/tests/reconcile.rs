//! Reconciling against kube-fake-client: an in-memory API behind a real `kube::Client`, with
//! server-side apply and status subresources. It has no watch, so the tests call `reconcile`
//! directly, as the controller would after an event.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use kube_fake_client::ClientBuilder;
use postern_operator::controller::{Context, reconcile};
use postern_operator::crd::{Gateway, MailDomain, RoutingPolicy, SendingAccount, SpamPolicy};
use postern_operator::manifests::Objects;

const NS: &str = "mail";

/// The Prometheus Operator's kind, known to the fake API server as a cluster that has it
/// installed would know it (whether its CRD exists is what the operator checks).
#[derive(
    kube::CustomResource, Clone, Debug, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "ServiceMonitor",
    namespaced,
    derive = "Default"
)]
struct ServiceMonitorSpec {
    selector: serde_json::Value,
    endpoints: Vec<serde_json::Value>,
}

/// cert-manager's and external-dns's kinds, likewise.
#[derive(
    kube::CustomResource, Clone, Debug, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[kube(group = "cert-manager.io", version = "v1", kind = "Certificate", namespaced, derive = "Default")]
struct CertificateSpec {
    #[serde(flatten)]
    fields: serde_json::Map<String, serde_json::Value>,
}

#[derive(
    kube::CustomResource, Clone, Debug, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[kube(
    group = "externaldns.k8s.io",
    version = "v1alpha1",
    kind = "DNSEndpoint",
    namespaced,
    derive = "Default"
)]
struct DnsEndpointSpec {
    endpoints: Vec<serde_json::Value>,
}

async fn cluster(manifests: &str) -> kube::Client {
    cluster_with(manifests, Vec::new()).await
}

/// The manifests (plus `extra` raw objects) in a fake API server.
async fn cluster_with(manifests: &str, extra: Vec<serde_json::Value>) -> kube::Client {
    builder(manifests, extra).build().await.unwrap()
}

fn builder(manifests: &str, extra: Vec<serde_json::Value>) -> ClientBuilder {
    let mut objs = Objects::default();
    objs.add_yaml(manifests, NS).unwrap();
    let with_uid = |mut o: serde_json::Value, i: usize| {
        o["metadata"]["uid"] = format!("00000000-0000-0000-0000-{i:012}").into();
        o["metadata"]["generation"] = 1.into();
        o
    };
    let mut values = Vec::new();
    let mut i = 0;
    let mut push = |v: serde_json::Value| {
        i += 1;
        values.push(with_uid(v, i));
    };
    objs.gateways.iter().for_each(|o| push(serde_json::to_value(o).unwrap()));
    objs.domains.iter().for_each(|o| push(serde_json::to_value(o).unwrap()));
    objs.routing_policies.iter().for_each(|o| push(serde_json::to_value(o).unwrap()));
    objs.spam_policies.iter().for_each(|o| push(serde_json::to_value(o).unwrap()));
    objs.accounts.iter().for_each(|o| push(serde_json::to_value(o).unwrap()));
    objs.config_maps.iter().for_each(|o| push(serde_json::to_value(o).unwrap()));
    extra.into_iter().for_each(push);
    ClientBuilder::new()
        .with_resource::<ServiceMonitor>()
        .with_resource::<Certificate>()
        .with_resource::<DNSEndpoint>()
        .with_resource::<Gateway>()
        .with_resource::<MailDomain>()
        .with_resource::<RoutingPolicy>()
        .with_resource::<SpamPolicy>()
        .with_resource::<SendingAccount>()
        .with_status_subresource::<Gateway>()
        .with_status_subresource::<MailDomain>()
        .with_status_subresource::<RoutingPolicy>()
        .with_status_subresource::<SpamPolicy>()
        .with_status_subresource::<SendingAccount>()
        .with_runtime_objects(values)
}

async fn reconcile_gateway(client: &kube::Client, name: &str) {
    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get(name).await.unwrap();
    reconcile(Arc::new(gw), Arc::new(Context::new(client.clone()))).await.unwrap();
}

fn condition<'a>(
    status: Option<&'a postern_operator::crd::Status>,
    kind: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == kind))
        .unwrap_or_else(|| panic!("no {kind} condition"))
}

fn manifests() -> String {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/k8s"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[tokio::test]
async fn a_gateway_gets_its_config_workload_and_conditions() {
    let broken = "apiVersion: mail.postern.dev/v1alpha1\nkind: MailDomain\nmetadata: {name: broken, namespace: mail, labels: {postern.dev/gateway: edge}}\nspec: {domain: broken.example, primary: {mx: broken.example}, spamPolicyRef: missing}\n";
    let client = cluster(&format!("{}\n---\n{broken}", manifests())).await;
    reconcile_gateway(&client, "edge").await;

    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    let owner_uid = gw.uid().unwrap();
    let owned = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.owner_references.iter().flatten().any(|o| o.uid == owner_uid && o.controller == Some(true))
    };

    // The config: what render gives, in the ConfigMap the pods mount; Secrets only by path.
    let cm = Api::<ConfigMap>::namespaced(client.clone(), NS).get("edge-config").await.unwrap();
    assert!(owned(&cm.metadata), "deleting the Gateway cleans up");
    let yaml = &cm.data.as_ref().unwrap()["gateway.yaml"];
    let config = postern_api::load_gateway_config(yaml).expect("a valid GatewayConfig");
    assert_eq!(
        config.domains.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["example.com", "example.org"]
    );
    assert!(yaml.contains("passwordFile: /etc/postern/secrets/postern-redis/password"));
    assert!(config.admin.hosts.contains(&"edge-admin.mail.svc".to_string()), "the operator's Host passes");
    assert!(
        cm.managed_fields().iter().any(|m| m.manager.as_deref() == Some("postern-operator")),
        "server-side apply"
    );

    // The workload.
    let dep = Api::<Deployment>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    assert!(owned(&dep.metadata));
    let spec = dep.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, None, "the autoscaler owns replicas");
    let pod = spec.template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("ghcr.io/postern/postern:0.1.0"));
    // Unprivileged container ports behind the Service's 25/587/465; nothing privileged asked.
    let container_ports: Vec<i32> = container.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(container_ports, [10025, 10587, 10465, 8025]);
    assert!(yaml.contains("address: 0.0.0.0:10025"), "{yaml}");
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.capabilities.as_ref().unwrap().add, None);
    assert_eq!(pod.automount_service_account_token, Some(false));
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    let mounts: Vec<&str> = container.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
    assert!(mounts.contains(&"/etc/postern/secrets/postern-redis"), "{mounts:?}");
    assert!(mounts.contains(&"/etc/postern/tls/mx-example-com-tls"), "{mounts:?}");
    assert!(mounts.contains(&"/etc/postern/secrets/postern-users"), "the users file: {mounts:?}");
    // The SMTP Service faces the world as the spec says; the admin port has its own ClusterIP.
    let services = Api::<Service>::namespaced(client.clone(), NS);
    let svc = services.get("edge").await.unwrap().spec.unwrap();
    let ports: Vec<i32> = svc.ports.as_ref().unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, [25, 587, 465], "smtp, submission, submissions; no admin port");
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(svc.external_traffic_policy.as_deref(), Some("Local"), "the client address survives");
    let admin = services.get("edge-admin").await.unwrap();
    assert_eq!(admin.spec.as_ref().unwrap().type_.as_deref(), Some("ClusterIP"));
    let admin_ports: Vec<i32> = admin.spec.unwrap().ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(admin_ports, [8025]);
    // The NetworkPolicy: SMTP container ports from anywhere, admin from the operator and
    // the configured peers only.
    let np = Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(client.clone(), NS)
        .get("edge")
        .await
        .unwrap();
    let np = serde_json::to_value(np.spec.unwrap()).unwrap();
    assert_eq!(np["ingress"][0]["from"], serde_json::Value::Null, "SMTP: any source");
    assert_eq!(np["ingress"][0]["ports"].as_array().unwrap().len(), 3);
    assert_eq!(np["ingress"][1]["ports"][0]["port"], 8025);
    let peers = np["ingress"][1]["from"].as_array().unwrap();
    assert_eq!(peers[0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "postern-operator");
    assert_eq!(peers[1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "monitoring");
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    assert_eq!(hpa.spec.as_ref().map(|s| (s.min_replicas, s.max_replicas)), Some((Some(2), 6)));
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    assert!(owned(&pdb.metadata));

    // Conditions: the Gateway's config is valid (pods not up in a fake cluster), the broken
    // domain says why it is not served, the others are served.
    let status = gw.status.as_ref().unwrap();
    assert_eq!(condition(Some(&status.base), "ConfigValid").status, "True");
    let ready = condition(Some(&status.base), "Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "PodsNotReady"));
    assert_eq!(ready.message, "0 of 1 gateway pods ready");
    assert_eq!((status.replicas, status.ready_replicas), (Some(1), Some(0)));
    let durable = condition(Some(&status.base), "Durable");
    assert_eq!((durable.status.as_str(), durable.reason.as_str()), ("True", "RedisStore"));
    assert_eq!(status.base.observed_generation, gw.meta().generation);
    let domains = Api::<MailDomain>::namespaced(client.clone(), NS);
    let broken = domains.get("broken").await.unwrap();
    let c = condition(broken.status.as_ref(), "Ready");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "SpamPolicyNotFound"));
    assert_eq!(c.message, "SpamPolicy missing does not exist in mail");
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        events.items.iter().any(|e| e.reason.as_deref() == Some("SpamPolicyNotFound")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
            && e.type_.as_deref() == Some("Warning")),
        "a Warning event on the broken MailDomain: {:?}",
        events.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );
    let served = domains.get("example-com").await.unwrap();
    assert_eq!(condition(served.status.as_ref(), "Ready").status, "True");
    let rp = Api::<RoutingPolicy>::namespaced(client.clone(), NS).get("migrate-to-legacy").await.unwrap();
    assert_eq!(condition(rp.status.as_ref(), "DestinationVerified").status, "Unknown");
}

#[tokio::test]
async fn an_invalid_config_keeps_the_last_good_one_and_says_why() {
    let client = cluster(&manifests()).await;
    reconcile_gateway(&client, "edge").await;
    let before = Api::<ConfigMap>::namespaced(client.clone(), NS).get("edge-config").await.unwrap();

    // A served domain whose block list names its own TLD: the gateway would refuse the config.
    let policies = Api::<SpamPolicy>::namespaced(client.clone(), NS);
    let mut sp = policies.get("standard").await.unwrap();
    sp.spec.policy.block_list.tlds = vec!["com".into()];
    policies.replace("standard", &Default::default(), &sp).await.unwrap();
    reconcile_gateway(&client, "edge").await;

    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    let c = condition(gw.status.as_ref().map(|s| &s.base), "ConfigValid");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ConfigInvalid"));
    assert!(c.message.contains("spamPolicies.standard.blockList.tlds[0]"), "{}", c.message);
    let after = Api::<ConfigMap>::namespaced(client.clone(), NS).get("edge-config").await.unwrap();
    assert_eq!(before.data, after.data, "mail keeps flowing on the last good config");
}

#[tokio::test]
async fn the_admin_port_serves_health_and_reconcile_metrics() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let client = cluster(&manifests()).await;
    let ctx = Arc::new(Context::new(client.clone()));
    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    reconcile(Arc::new(gw), ctx.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(postern_operator::http::serve_on(listener, ctx));
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
    let metrics = get("/metrics").await;
    assert!(metrics.contains("postern_operator_reconciles_total 1"), "{metrics}");
    assert!(metrics.contains("postern_operator_problems 0"), "{metrics}");
}

#[tokio::test]
async fn a_service_monitor_only_where_prometheus_operator_is_installed() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    );
    // Without its CRD: nothing is applied, and the reconcile still succeeds.
    let client = cluster(&manifests()).await;
    reconcile_gateway(&client, "edge").await;
    let monitors = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &ar);
    assert!(monitors.get_opt("edge").await.unwrap().is_none());

    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: servicemonitors.monitoring.coreos.com}\nspec:\n  group: monitoring.coreos.com\n  names: {kind: ServiceMonitor, plural: servicemonitors}\n  scope: Namespaced\n  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]\n";
    let client = cluster_with(&manifests(), vec![serde_yaml::from_str(crd).unwrap()]).await;
    reconcile_gateway(&client, "edge").await;
    let monitors = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &ar);
    let sm = monitors.get("edge").await.expect("a ServiceMonitor once the CRD exists");
    assert_eq!(sm.data["spec"]["endpoints"][0]["port"], "admin");
}

/// The exact writes: every one is a server-side apply by our field manager, with force (the
/// operator owns its fields); nothing is created, replaced or deleted behind SSA's back.
#[tokio::test]
async fn every_write_is_a_server_side_apply_by_the_operator() {
    use kube_fake_client::{PatchType, interceptor::Funcs};
    use std::sync::Mutex;
    let recorded: Arc<Mutex<Vec<String>>> = Arc::default();
    let (w1, w2, w3, w4, w5) =
        (recorded.clone(), recorded.clone(), recorded.clone(), recorded.clone(), recorded.clone());
    let record = |kind: &str, name: &str, manager: Option<&str>, force: bool, apply: bool| {
        format!("{kind} {name} manager={} force={force} apply={apply}", manager.unwrap_or("-"))
    };
    let funcs = Funcs::new()
        .patch(move |c| {
            let apply = matches!(c.patch_type, PatchType::ApplyPatch);
            w1.lock().unwrap().push(record(
                "patch",
                c.name,
                c.params.field_manager.as_deref(),
                c.params.force,
                apply,
            ));
            Ok(None)
        })
        .patch_status(move |c| {
            let apply = matches!(c.patch_type, PatchType::ApplyPatch);
            w2.lock().unwrap().push(record(
                "status",
                c.name,
                c.params.field_manager.as_deref(),
                c.params.force,
                apply,
            ));
            Ok(None)
        })
        .create(move |c| {
            w3.lock().unwrap().push(format!("create {}", c.object["metadata"]["name"]));
            Ok(None)
        })
        .update(move |_| {
            w4.lock().unwrap().push("update".into());
            Ok(None)
        })
        .delete(move |c| {
            w5.lock().unwrap().push(format!("delete {}", c.name));
            Ok(None)
        });
    let client = builder(&manifests(), Vec::new()).with_interceptor_funcs(funcs).build().await.unwrap();
    reconcile_gateway(&client, "edge").await;
    let writes = recorded.lock().unwrap().clone();
    assert!(writes.len() >= 9, "config, workload, statuses: {writes:?}");
    for w in &writes {
        // The creates: generated keys' Secrets (a DKIM key, the Gateway's admin key), created
        // only if absent (never applied: the operator must not overwrite a key in use).
        if w == "create \"notifications-dkim\"" || w == "create \"edge-admin-key\"" {
            continue;
        }
        assert!(w.ends_with("manager=postern-operator force=true apply=true"), "{w} (all: {writes:?})");
    }
    for object in ["edge-config", "edge"] {
        assert!(writes.iter().any(|w| w.starts_with(&format!("patch {object} "))), "{object}: {writes:?}");
    }
    assert!(writes.iter().any(|w| w.starts_with("status example-com ")), "{writes:?}");
    drop(writes);

    // A second reconcile with nothing changed writes no status again.
    let before = recorded.lock().unwrap().len();
    reconcile_gateway(&client, "edge").await;
    let again: Vec<String> = recorded.lock().unwrap()[before..].to_vec();
    assert!(again.iter().all(|w| !w.starts_with("status ")), "{again:?}");
}

async fn patch_spec(client: &kube::Client, name: &str, spec: serde_json::Value) {
    let api = Api::<Gateway>::namespaced(client.clone(), NS);
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": spec})),
    )
    .await
    .unwrap();
}

fn gateway_condition(gw: &Gateway, kind: &str) -> (String, String, String) {
    let c = condition(gw.status.as_ref().map(|s| &s.base), kind);
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn an_embedded_store_runs_as_a_stateful_set_on_a_kept_claim() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let client = cluster(&manifests()).await;
    reconcile_gateway(&client, "relay").await;
    let sts = Api::<StatefulSet>::namespaced(client.clone(), NS).get("relay").await.unwrap();
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("store"));
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(claim_spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    let size = &claim_spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"];
    assert_eq!(size.0, "5Gi");
    let retention = spec.persistent_volume_claim_retention_policy.as_ref().unwrap();
    assert_eq!(
        (retention.when_deleted.as_deref(), retention.when_scaled.as_deref()),
        (Some("Retain"), Some("Retain"))
    );
    let pod = spec.template.spec.as_ref().unwrap();
    let mount = pod.containers[0].volume_mounts.iter().flatten().find(|m| m.name == "store").unwrap();
    assert_eq!(mount.mount_path, "/var/lib/postern");
    assert!(
        pod.volumes.iter().flatten().all(|v| v.empty_dir.is_none()),
        "no emptyDir: the store is the claim"
    );
    assert!(Api::<Deployment>::namespaced(client.clone(), NS).get_opt("relay").await.unwrap().is_none());

    // Durable follows the claim: not there yet, Pending (no StorageClass provisions it), Bound.
    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("relay").await.unwrap();
    let (status, reason, _) = gateway_condition(&gw, "Durable");
    assert_eq!((status.as_str(), reason.as_str()), ("Unknown", "VolumeNotCreated"));
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS);
    let pvc = |phase: &str| -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "store-relay-0", "namespace": NS},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}},
            "status": {"phase": phase},
        }))
        .unwrap()
    };
    claims.create(&Default::default(), &pvc("Pending")).await.unwrap();
    reconcile_gateway(&client, "relay").await;
    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("relay").await.unwrap();
    let (status, reason, message) = gateway_condition(&gw, "Durable");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "VolumeNotBound"));
    assert!(
        message.contains("store-relay-0 is Pending") && message.contains("storageClassName"),
        "{message}"
    );
    let mut bound = claims.get("store-relay-0").await.unwrap();
    bound.status = pvc("Bound").status;
    claims.replace_status("store-relay-0", &Default::default(), &bound).await.unwrap();
    reconcile_gateway(&client, "relay").await;
    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("relay").await.unwrap();
    let (status, reason, _) = gateway_condition(&gw, "Durable");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "VolumeBound"));
}

#[tokio::test]
async fn children_the_spec_no_longer_asks_for_are_deleted() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    // An autoscaler named like the Gateway but made by someone else is not the operator's.
    let foreign = serde_json::json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "relay", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "other"}, "maxReplicas": 2},
    });
    let client = cluster_with(&manifests(), vec![foreign]).await;
    reconcile_gateway(&client, "edge").await;
    reconcile_gateway(&client, "relay").await;
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), NS);
    let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), NS);
    assert!(hpas.get_opt("edge").await.unwrap().is_some() && pdbs.get_opt("edge").await.unwrap().is_some());

    // Autoscaling off, one replica: the autoscaler and the disruption budget go.
    patch_spec(&client, "edge", serde_json::json!({"autoscaling": null, "replicas": 1})).await;
    reconcile_gateway(&client, "edge").await;
    assert!(hpas.get_opt("edge").await.unwrap().is_none(), "autoscaler deleted");
    assert!(pdbs.get_opt("edge").await.unwrap().is_none(), "disruption budget deleted");
    let dep = Api::<Deployment>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    assert_eq!(dep.spec.unwrap().replicas, Some(1));

    // Redis -> embedded: the Deployment goes, a StatefulSet takes its place.
    patch_spec(&client, "edge", serde_json::json!({"store": {"type": "Embedded", "redis": null}})).await;
    reconcile_gateway(&client, "edge").await;
    assert!(Api::<Deployment>::namespaced(client.clone(), NS).get_opt("edge").await.unwrap().is_none());
    assert!(Api::<StatefulSet>::namespaced(client.clone(), NS).get_opt("edge").await.unwrap().is_some());

    // The foreign autoscaler named "relay" stays: the relay Gateway never owned it.
    assert!(hpas.get_opt("relay").await.unwrap().is_some());
}

#[tokio::test]
async fn ready_means_every_wanted_pod_is_ready() {
    let client = cluster(&manifests()).await;
    patch_spec(&client, "edge", serde_json::json!({"autoscaling": null, "replicas": 6})).await;
    reconcile_gateway(&client, "edge").await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
    let set_ready = |n: i32| {
        let deployments = deployments.clone();
        async move {
            let status =
                serde_json::json!({"status": {"replicas": 6, "readyReplicas": n, "availableReplicas": n}});
            deployments
                .patch_status("edge", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(status))
                .await
                .unwrap();
        }
    };
    set_ready(1).await;
    reconcile_gateway(&client, "edge").await;
    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    assert_eq!(
        gateway_condition(&gw, "Ready"),
        ("False".into(), "PodsNotReady".into(), "1 of 6 gateway pods ready".into())
    );
    set_ready(6).await;
    reconcile_gateway(&client, "edge").await;
    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    assert_eq!(gateway_condition(&gw, "Ready").0, "True");
    let status = gw.status.unwrap();
    assert_eq!((status.replicas, status.ready_replicas), (Some(6), Some(6)));
}

#[tokio::test]
async fn gateways_run_the_operators_image_unless_they_name_one() {
    let client = cluster(&manifests()).await;
    let mut ctx = Context::new(client.clone());
    ctx.defaults.image = "registry.example/postern:2.0.0".into();
    let ctx = Arc::new(ctx);
    let gateways = Api::<Gateway>::namespaced(client.clone(), NS);
    reconcile(Arc::new(gateways.get("edge").await.unwrap()), ctx.clone()).await.unwrap();
    let image = |d: Deployment| d.spec.unwrap().template.spec.unwrap().containers[0].image.clone();
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
    assert_eq!(
        image(deployments.get("edge").await.unwrap()).as_deref(),
        Some("registry.example/postern:2.0.0")
    );
    // A Gateway that names an image keeps it (a canary, a mirror).
    patch_spec(&client, "edge", serde_json::json!({"image": "mirror.example/postern:1.9.0"})).await;
    reconcile(Arc::new(gateways.get("edge").await.unwrap()), ctx).await.unwrap();
    assert_eq!(
        image(deployments.get("edge").await.unwrap()).as_deref(),
        Some("mirror.example/postern:1.9.0")
    );
}

#[tokio::test]
async fn pod_settings_reach_the_pods_and_a_fleet_spreads_over_zones() {
    let client = cluster(&manifests()).await;
    reconcile_gateway(&client, "relay").await;
    let sts = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), NS)
        .get("relay")
        .await
        .unwrap();
    let pod = sts.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.topology_spread_constraints, None, "one pod: nothing to spread");

    patch_spec(
        &client,
        "edge",
        serde_json::json!({"pod": {
            "labels": {"team": "mail", "app.kubernetes.io/name": "not-ours"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mail", "effect": "NoSchedule"}],
            "priorityClassName": "mail-critical",
            "imagePullSecrets": [{"name": "registry"}],
        }}),
    )
    .await;
    reconcile_gateway(&client, "edge").await;
    let dep = Api::<Deployment>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    let template = dep.spec.unwrap().template;
    let labels = template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["team"], "mail");
    assert_eq!(labels["app.kubernetes.io/name"], "postern-gateway", "the selector's labels win");
    let pod = template.spec.unwrap();
    assert_eq!(pod.priority_class_name.as_deref(), Some("mail-critical"));
    assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("dedicated"));
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry");
    let spread: Vec<String> =
        pod.topology_spread_constraints.unwrap().into_iter().map(|c| c.topology_key).collect();
    assert_eq!(spread, ["topology.kubernetes.io/zone", "kubernetes.io/hostname"], "autoscaling: a fleet");

    // An explicit empty list turns the default spread off. (Checked on what the operator
    // applies: the fake API's server-side apply keeps a field an apply leaves out, where a real
    // API server removes it from the manager's fields.)
    patch_spec(&client, "edge", serde_json::json!({"pod": {"topologySpreadConstraints": []}})).await;
    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    let defaults = postern_operator::resources::Defaults::from_env();
    let rendered = postern_operator::render::render(&gw, &Objects::default());
    let children =
        postern_operator::resources::Children::new(&gw, &rendered, &defaults, &Default::default()).unwrap();
    let postern_operator::resources::Workload::Deployment(dep) = children.workload else {
        panic!("Redis: a Deployment")
    };
    assert_eq!(dep.spec.unwrap().template.spec.unwrap().topology_spread_constraints, None);
}

/// Argo CD's view of an object through `examples/argocd/health.lua`, run by a real Lua
/// interpreter (PyPI's lupa, which scripts/install-test-deps.sh installs).
fn argo_health(obj: &impl serde::Serialize) -> (String, String) {
    let script = r#"
import json, sys, lupa
lua = lupa.LuaRuntime(unpack_returned_tuples=True)
obj = json.loads(sys.argv[2])
def to_lua(v):
    if isinstance(v, dict):
        return lua.table_from({k: to_lua(x) for k, x in v.items()})
    if isinstance(v, list):
        return lua.table_from([to_lua(x) for x in v])
    return v
lua.globals().obj = to_lua(obj)
hs = lua.execute(open(sys.argv[1]).read())
print(json.dumps([hs["status"], hs["message"]]))
"#;
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/argocd/health.lua");
    let json = serde_json::to_string(obj).unwrap();
    let out = std::process::Command::new("python3").args(["-c", script, file, &json]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_argo_cd_health_check_reads_the_conditions_the_operator_writes() {
    let broken = "apiVersion: mail.postern.dev/v1alpha1\nkind: MailDomain\nmetadata: {name: broken, namespace: mail, labels: {postern.dev/gateway: edge}}\nspec: {domain: broken.example, primary: {mx: broken.example}, spamPolicyRef: missing}\n";
    let client = cluster(&format!("{}\n---\n{broken}", manifests())).await;
    let gateways = Api::<Gateway>::namespaced(client.clone(), NS);
    let domains = Api::<MailDomain>::namespaced(client.clone(), NS);
    assert_eq!(argo_health(&gateways.get("edge").await.unwrap()).0, "Progressing", "no status yet");
    reconcile_gateway(&client, "edge").await;
    // The example asks cert-manager for its certificate, and this cluster has none.
    let (status, message) = argo_health(&gateways.get("edge").await.unwrap());
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("CertManagerNotInstalled: "), "{message}");
    let listeners = serde_json::json!([{"name": "smtp", "port": 25, "tlsSecretName": "mx-example-com-tls"}]);
    patch_spec(
        &client,
        "edge",
        serde_json::json!({"listeners": listeners, "auth": null, "dnsRecords": null}),
    )
    .await;
    reconcile_gateway(&client, "edge").await;
    let (status, message) = argo_health(&gateways.get("edge").await.unwrap());
    assert_eq!((status.as_str(), message.as_str()), ("Progressing", "0 of 1 gateway pods ready"));
    assert_eq!(argo_health(&domains.get("example-com").await.unwrap()).0, "Healthy");
    let (status, message) = argo_health(&domains.get("broken").await.unwrap());
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("SpamPolicyNotFound: "), "{message}");
    // The embedded relay waits for its volume (Pending): Progressing, saying why.
    let pending = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "store-relay-0", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}},
        "status": {"phase": "Pending"},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(client.clone(), NS)
        .create(&Default::default(), &pending)
        .await
        .unwrap();
    reconcile_gateway(&client, "relay").await;
    let (status, message) = argo_health(&gateways.get("relay").await.unwrap());
    assert_eq!(status, "Progressing");
    assert!(message.starts_with("VolumeNotBound: "), "{message}");
    // Scaled to zero on purpose: Suspended.
    patch_spec(&client, "edge", serde_json::json!({"autoscaling": null, "replicas": 0})).await;
    reconcile_gateway(&client, "edge").await;
    assert_eq!(argo_health(&gateways.get("edge").await.unwrap()).0, "Suspended");
}

#[tokio::test]
async fn each_object_has_one_status_writer_and_unserved_objects_say_so() {
    // A second Gateway serving example-com too, a MailDomain nobody selects, and a SpamPolicy
    // nobody refers to.
    let extra = r#"
apiVersion: mail.postern.dev/v1alpha1
kind: Gateway
metadata: {name: backup, namespace: mail}
spec:
  domainSelector: {matchLabels: {postern.dev/gateway: edge}}
---
apiVersion: mail.postern.dev/v1alpha1
kind: MailDomain
metadata: {name: orphan, namespace: mail, labels: {postern.dev/gateway: nobody}}
spec: {domain: orphan.example, primary: {mx: orphan.example}}
---
apiVersion: mail.postern.dev/v1alpha1
kind: SpamPolicy
metadata: {name: unused, namespace: mail}
spec: {}
"#;
    let client = cluster(&format!("{}\n---\n{extra}", manifests())).await;
    let domains = Api::<MailDomain>::namespaced(client.clone(), NS);
    // "backup" sorts before "edge": it writes the shared objects; edge and relay do not.
    reconcile_gateway(&client, "edge").await;
    reconcile_gateway(&client, "relay").await;
    assert!(domains.get("example-com").await.unwrap().status.is_none(), "only the writer writes");
    reconcile_gateway(&client, "backup").await;
    let served = domains.get("example-com").await.unwrap();
    let c = condition(served.status.as_ref(), "Ready");
    assert_eq!((c.status.as_str(), c.message.as_str()), ("True", "served by Gateway backup, edge"));
    let orphan = domains.get("orphan").await.unwrap();
    let c = condition(orphan.status.as_ref(), "Ready");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "NotSelected"));
    let rp = Api::<RoutingPolicy>::namespaced(client.clone(), NS).get("migrate-to-legacy").await.unwrap();
    let c = condition(rp.status.as_ref(), "InUse");
    assert_eq!((c.status.as_str(), c.message.as_str()), ("True", "used by Gateway backup, edge"));
    let unused = Api::<SpamPolicy>::namespaced(client.clone(), NS).get("unused").await.unwrap();
    let c = condition(unused.status.as_ref(), "InUse");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "NotUsed"));
    // Reconciling again in any order changes nothing (no flip between Gateways).
    let before = serde_json::to_value(domains.get("example-com").await.unwrap().status).unwrap();
    reconcile_gateway(&client, "edge").await;
    reconcile_gateway(&client, "backup").await;
    assert_eq!(serde_json::to_value(domains.get("example-com").await.unwrap().status).unwrap(), before);
}

/// The admin API asks the API server who a caller is: each Gateway's pods get a ServiceAccount
/// (its token projected, not automounted) bound to system:auth-delegator, and the binding of a
/// Gateway that is gone is swept (cluster-scoped, it cannot be owned by the Gateway).
#[tokio::test]
async fn gateway_pods_may_review_tokens_and_stale_bindings_are_swept() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    // A binding left by a Gateway deleted while the operator was away, and one of somebody else.
    let stale = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "postern-gateway:mail:gone", "labels": {
            "app.kubernetes.io/managed-by": "postern-operator", "app.kubernetes.io/component": "token-review",
            "postern.dev/gateway-namespace": NS, "postern.dev/gateway": "gone"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "gone-gateway", "namespace": NS}],
    });
    let foreign = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "someone-elses", "labels": {"postern.dev/gateway": "gone"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "name": "everyone", "apiGroup": "rbac.authorization.k8s.io"}],
    });
    let client = cluster_with(&manifests(), vec![stale, foreign]).await;
    reconcile_gateway(&client, "edge").await;

    let sa = Api::<ServiceAccount>::namespaced(client.clone(), NS).get("edge-gateway").await.unwrap();
    assert_eq!(sa.automount_service_account_token, Some(false));
    assert_eq!(sa.owner_references()[0].name, "edge", "deleted with its Gateway");
    let bindings = Api::<ClusterRoleBinding>::all(client.clone());
    let binding = bindings.get("postern-gateway:mail:edge").await.unwrap();
    assert_eq!(binding.role_ref.name, "system:auth-delegator");
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str(), subject.namespace.as_deref()),
        ("ServiceAccount", "edge-gateway", Some(NS))
    );
    assert!(bindings.get_opt("postern-gateway:mail:gone").await.unwrap().is_none(), "swept");
    assert!(bindings.get_opt("someone-elses").await.unwrap().is_some(), "not the operator's");

    // A namespaced install sweeps only the bindings of its namespaces (it may not read
    // Gateways elsewhere); the cluster-wide one sweeps all.
    use postern_operator::controller::{Scope, sweep_review_bindings};
    let mut elsewhere: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "postern-gateway:other:gone", "labels": {
            "app.kubernetes.io/managed-by": "postern-operator", "app.kubernetes.io/component": "token-review",
            "postern.dev/gateway-namespace": "other", "postern.dev/gateway": "gone"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
    }))
    .unwrap();
    elsewhere = bindings.create(&Default::default(), &elsewhere).await.unwrap();
    let scope = Scope::parse("mail, tenants");
    assert_eq!(scope, Scope::Namespaces(vec!["mail".into(), "tenants".into()]));
    assert_eq!(sweep_review_bindings(&client, &scope).await.unwrap(), 0);
    assert!(bindings.get_opt(&elsewhere.name_any()).await.unwrap().is_some(), "not this install's namespace");
    assert_eq!(Scope::parse(" "), Scope::Cluster);
    assert_eq!(sweep_review_bindings(&client, &Scope::Cluster).await.unwrap(), 1);
    assert!(bindings.get_opt("postern-gateway:mail:edge").await.unwrap().is_some(), "its Gateway exists");

    // The pods run as that account, with the token projected for the reviews only, and the
    // config tells the admin API where to find it and which namespace's RBAC decides.
    let dep = Api::<Deployment>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    let pod = serde_json::to_value(dep.spec.unwrap().template.spec.unwrap()).unwrap();
    assert_eq!(pod["serviceAccountName"], "edge-gateway");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let projected = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "kubernetes").unwrap();
    assert_eq!(projected["projected"]["sources"][0]["serviceAccountToken"]["path"], "token");
    let cm = Api::<ConfigMap>::namespaced(client.clone(), NS).get("edge-config").await.unwrap();
    let config: postern_api::GatewayConfig = serde_yaml::from_str(&cm.data.unwrap()["gateway.yaml"]).unwrap();
    let kube = config.admin.kubernetes.expect("admin.kubernetes");
    assert_eq!(kube.namespace, NS);
    assert_eq!(kube.token_file, std::path::Path::new("/var/run/secrets/postern/kubernetes/token"));
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "kubernetes")
        .unwrap();
    assert_eq!(mount["mountPath"], "/var/run/secrets/postern/kubernetes");
}

/// A CRD as a cluster with that project installed has it (schema-less: the fake API server
/// only needs to know the kind).
fn crd(group: &str, version: &str, kind: &str, plural: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "names": {"kind": kind, "plural": plural}, "scope": "Namespaced",
                 "versions": [{"name": version, "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
    })
}

fn dynamic(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<kube::api::DynamicObject> {
    use kube::api::{ApiResource, GroupVersionKind};
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), NS, &ar)
}

/// cert-manager, external-dns and the Prometheus Operator, when installed: a Certificate for
/// the listener's Secret, a DNSEndpoint with the records mail needs, a labelled ServiceMonitor;
/// the conditions say what is missing where they are not; switched off, they are deleted.
#[tokio::test]
async fn certificates_dns_records_and_monitors_follow_the_spec_where_installed() {
    // Nothing installed: the reconcile succeeds, and the conditions say what is missing.
    let client = cluster(&manifests()).await;
    reconcile_gateway(&client, "edge").await;
    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    let (status, reason, _) = gateway_condition(&gw, "CertificatesReady");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "CertManagerNotInstalled"));
    let (status, reason, _) = gateway_condition(&gw, "DnsPublished");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ExternalDnsNotInstalled"));

    // Installed, and the load balancer has an address.
    let lb_service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "edge", "namespace": NS},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 25}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.25"}, {"ip": "2001:db8::25"}]}},
    });
    let client = cluster_with(
        &manifests(),
        vec![
            crd("cert-manager.io", "v1", "Certificate", "certificates"),
            crd("externaldns.k8s.io", "v1alpha1", "DNSEndpoint", "dnsendpoints"),
            crd("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"),
            lb_service,
        ],
    )
    .await;
    reconcile_gateway(&client, "edge").await;
    let certs = dynamic(&client, "cert-manager.io", "v1", "Certificate", "certificates");
    let cert = certs.get("mx-example-com-tls").await.expect("one Certificate for the shared Secret");
    assert_eq!(cert.data["spec"]["secretName"], "mx-example-com-tls");
    assert_eq!(cert.data["spec"]["dnsNames"], serde_json::json!(["mx.example.com"]));
    assert_eq!(
        cert.data["spec"]["issuerRef"],
        serde_json::json!({"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    let (status, reason, message) = gateway_condition(&gw, "CertificatesReady");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NotIssued"), "{message}");

    let endpoints = dynamic(&client, "externaldns.k8s.io", "v1alpha1", "DNSEndpoint", "dnsendpoints");
    let records = endpoints.get("edge").await.unwrap().data["spec"]["endpoints"].clone();
    let has = |name: &str, kind: &str, target: &str| {
        records.as_array().unwrap().iter().any(|r| {
            r["dnsName"] == name
                && r["recordType"] == kind
                && r["targets"].as_array().unwrap().iter().any(|t| t == target)
        })
    };
    assert!(has("mx.example.com", "A", "203.0.113.25"), "{records}");
    assert!(has("mx.example.com", "AAAA", "2001:db8::25"), "{records}");
    assert!(has("example.com", "MX", "10 mx.example.com"), "{records}");
    assert!(has("example.com", "TXT", "v=spf1 mx -all"), "{records}");
    assert!(
        has("_dmarc.example.com", "TXT", "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@example.com"),
        "{records}"
    );
    assert!(
        has("_smtp._tls.example.com", "TXT", "v=TLSRPTv1; rua=mailto:tls-reports@example.com"),
        "{records}"
    );
    // MTA-STS: the TXT record names the id of the very policy the gateways serve, and an
    // Ingress publishes it from the admin Service.
    let cm = Api::<ConfigMap>::namespaced(client.clone(), NS).get("edge-config").await.unwrap();
    let config: postern_api::GatewayConfig = serde_yaml::from_str(&cm.data.unwrap()["gateway.yaml"]).unwrap();
    let policy = config.mta_sts.clone().expect("mtaSts in the gateways' config");
    assert_eq!(policy.mode, postern_api::MtaStsMode::Testing);
    let txt = policy.txt_record(&config.hostname);
    assert!(has("_mta-sts.example.com", "TXT", &txt), "{txt} in {records}");
    let ingress = Api::<k8s_openapi::api::networking::v1::Ingress>::namespaced(client.clone(), NS)
        .get("edge")
        .await
        .unwrap();
    let ingress = serde_json::to_value(&ingress).unwrap();
    assert_eq!(ingress["spec"]["rules"][0]["host"], "mta-sts.example.com");
    let path = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(
        (path["path"].as_str(), path["pathType"].as_str()),
        (Some("/.well-known/mta-sts.txt"), Some("Exact"))
    );
    assert_eq!(path["backend"]["service"]["name"], "edge-admin");
    assert_eq!(ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"], "letsencrypt");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "edge-mta-sts");
    let (status, reason, _) = gateway_condition(&gw, "DnsPublished");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "EndpointApplied"));

    let monitors = dynamic(&client, "monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors");
    let sm = monitors.get("edge").await.unwrap();
    assert_eq!(sm.metadata.labels.as_ref().unwrap()["release"], "prometheus");
    assert_eq!(sm.data["spec"]["endpoints"][0]["interval"], "30s");

    // Switched off: the Certificate, the DNSEndpoint and the ServiceMonitor go.
    patch_spec(
        &client,
        "edge",
        serde_json::json!({"dnsRecords": null, "mtaSts": null, "monitoring": {"serviceMonitor": {"enabled": false}},
            "listeners": [{"name": "smtp", "port": 25, "proxyProtocol": true, "trustedProxies": ["10.0.0.0/16"],
                           "tlsSecretName": "mx-example-com-tls"}]}),
    )
    .await;
    reconcile_gateway(&client, "edge").await;
    assert!(certs.get_opt("mx-example-com-tls").await.unwrap().is_none());
    assert!(endpoints.get_opt("edge").await.unwrap().is_none());
    assert!(monitors.get_opt("edge").await.unwrap().is_none());
    let ingresses = Api::<k8s_openapi::api::networking::v1::Ingress>::namespaced(client.clone(), NS);
    assert!(ingresses.get_opt("edge").await.unwrap().is_none(), "MTA-STS off: its Ingress goes");
}

/// SendingAccounts reach the config of the Gateways that select them, with their passwords as
/// files of mounted Secrets; two accounts for one sender: the first by name is used, the other
/// says why it is not.
#[tokio::test]
async fn sending_accounts_reach_the_config_and_conflicts_are_reported() {
    let dup = "apiVersion: mail.postern.dev/v1alpha1\nkind: SendingAccount\nmetadata: {name: sales-dup, namespace: mail}\nspec: {from: '@EXAMPLE.com', type: Smtp, smtp: {host: other.example}}\n";
    let client = cluster(&format!("{}\n---\n{dup}", manifests())).await;
    reconcile_gateway(&client, "edge").await;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), NS).get("edge-config").await.unwrap();
    let config: postern_api::GatewayConfig = serde_yaml::from_str(&cm.data.unwrap()["gateway.yaml"]).unwrap();
    let names: Vec<&str> = config.accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["alice", "notifications", "sales"]);
    let sales = config.accounts.iter().find(|a| a.name == "sales").unwrap();
    assert_eq!(sales.bcc.as_deref(), Some("archive@example.com"));
    let smtp = sales.smtp.as_ref().unwrap();
    assert_eq!(
        smtp.password_file.as_deref(),
        Some(std::path::Path::new("/etc/postern/secrets/sales-smtp/password"))
    );
    let dep = Api::<Deployment>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    let pod = serde_json::to_value(dep.spec.unwrap().template.spec.unwrap()).unwrap();
    assert!(
        pod["volumes"].as_array().unwrap().iter().any(|v| v["secret"]["secretName"] == "sales-smtp"),
        "the password Secret is mounted"
    );
    let accounts = Api::<SendingAccount>::namespaced(client.clone(), NS);
    let ready = |a: &SendingAccount| {
        let c =
            a.status.as_ref().unwrap().base.conditions.iter().find(|c| c.type_ == "Ready").unwrap().clone();
        (c.status, c.reason, c.message)
    };
    let (status, reason, message) = ready(&accounts.get("sales").await.unwrap());
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InUse"), "{message}");
    let (status, reason, message) = ready(&accounts.get("sales-dup").await.unwrap());
    assert_eq!((status.as_str(), reason.as_str()), ("False", "FromConflict"));
    assert!(message.contains("SendingAccount sales already sends for @example.com"), "{message}");
}

/// A Direct SendingAccount without a key: the operator generates one into a new Secret (create
/// only; an existing one is kept), the gateways mount it and sign with it, and the Gateway's
/// DNSEndpoint publishes its record (here as the account's status last showed it: no gateway
/// answers in this test), split into DNS character-strings.
#[tokio::test]
async fn direct_accounts_get_a_generated_key_and_their_record_published() {
    use k8s_openapi::api::core::v1::Secret;
    let client = cluster_with(
        &manifests(),
        vec![crd("externaldns.k8s.io", "v1alpha1", "DNSEndpoint", "dnsendpoints")],
    )
    .await;
    // The record a gateway reported before (status.dkim), longer than one DNS string.
    let value = format!("v=DKIM1; k=rsa; p={}", "A".repeat(392));
    let accounts = Api::<SendingAccount>::namespaced(client.clone(), NS);
    let status = serde_json::json!({
        "apiVersion": "mail.postern.dev/v1alpha1", "kind": "SendingAccount",
        "status": {"dkim": {"name": "postern2026._domainkey.notify.example.com", "value": value}},
    });
    accounts
        .patch_status(
            "notifications",
            &kube::api::PatchParams::apply("test"),
            &kube::api::Patch::Apply(&status),
        )
        .await
        .unwrap();
    reconcile_gateway(&client, "edge").await;

    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let secret = secrets.get("notifications-dkim").await.expect("a key Secret is generated");
    assert_eq!(secret.labels()["mail.postern.dev/sending-account"], "notifications");
    assert!(
        secret.owner_references().is_empty(),
        "the key outlives the account (its record may be published)"
    );
    let pem = String::from_utf8(secret.data.as_ref().unwrap()["dkim.pem"].0.clone()).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");

    let cm = Api::<ConfigMap>::namespaced(client.clone(), NS).get("edge-config").await.unwrap();
    let config: postern_api::GatewayConfig = serde_yaml::from_str(&cm.data.unwrap()["gateway.yaml"]).unwrap();
    let direct = config.accounts.iter().find(|a| a.name == "notifications").unwrap().direct.clone().unwrap();
    assert_eq!(direct.selector, "postern2026");
    assert_eq!(
        direct.private_key_file,
        std::path::Path::new("/etc/postern/secrets/notifications-dkim/dkim.pem")
    );
    assert_eq!(direct.algorithm, postern_api::DkimAlgorithm::RsaSha256);
    let dep = Api::<Deployment>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    let pod = serde_json::to_value(dep.spec.unwrap().template.spec.unwrap()).unwrap();
    assert!(
        pod["volumes"].as_array().unwrap().iter().any(|v| v["secret"]["secretName"] == "notifications-dkim"),
        "the key Secret is mounted: {pod}"
    );

    let endpoints = dynamic(&client, "externaldns.k8s.io", "v1alpha1", "DNSEndpoint", "dnsendpoints");
    let records = endpoints.get("edge").await.unwrap().data["spec"]["endpoints"].clone();
    let dkim = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dnsName"] == "postern2026._domainkey.notify.example.com")
        .unwrap_or_else(|| panic!("the DKIM record is published: {records}"));
    assert_eq!(dkim["recordType"], "TXT");
    let target = dkim["targets"][0].as_str().unwrap();
    let strings: Vec<&str> = target.split("\" \"").map(|s| s.trim_matches('"')).collect();
    assert_eq!(strings.len(), 2, "{target}");
    assert!(strings.iter().all(|s| s.len() <= 255), "{target}");
    assert_eq!(strings.concat(), value);
    // Not reported by a gateway (none answers here): Verified is Unknown, and says why.
    let a = accounts.get("notifications").await.unwrap();
    let verified = a.status.as_ref().unwrap().base.conditions.iter().find(|c| c.type_ == "Verified").unwrap();
    assert_eq!((verified.status.as_str(), verified.reason.as_str()), ("Unknown", "NotReported"));
    assert_eq!(a.status.unwrap().dkim.unwrap().value, value, "the last record stays");

    // A Secret of that name is never replaced: the next operator run keeps the key.
    reconcile_gateway(&client, "edge").await;
    let again = secrets.get("notifications-dkim").await.unwrap();
    assert_eq!(again.data.unwrap()["dkim.pem"].0, pem.as_bytes());
}

/// Microsoft365 and Exchange SendingAccounts reach the config with their Secrets as mounted
/// files; the Gateway's OAuth token key is generated into a Secret when it names none; until a
/// gateway reports, `Authorized` is Unknown and says why.
#[tokio::test]
async fn oauth_and_exchange_accounts_reach_the_config_with_a_generated_token_key() {
    use k8s_openapi::api::core::v1::Secret;
    let extra = "apiVersion: mail.postern.dev/v1alpha1\nkind: SendingAccount\nmetadata: {name: support, namespace: mail}\nspec:\n  from: support@example.com\n  type: Microsoft365\n  oauth: {clientId: app-1, clientSecretSecretRef: {name: entra-app, key: secret}, tenant: example.onmicrosoft.com}\n---\napiVersion: mail.postern.dev/v1alpha1\nkind: SendingAccount\nmetadata: {name: onprem, namespace: mail}\nspec:\n  from: '@onprem.example.com'\n  type: Exchange\n  exchange: {url: 'https://mail.onprem.example.com/ews/exchange.asmx', username: svc@onprem.example.com, passwordSecretRef: {name: ews, key: password}}\n";
    let client = cluster(&format!("{}\n---\n{extra}", manifests())).await;
    patch_spec(&client, "edge", serde_json::json!({"adminPublicUrl": "https://postern.example.com"})).await;
    reconcile_gateway(&client, "edge").await;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), NS).get("edge-config").await.unwrap();
    let config: postern_api::GatewayConfig = serde_yaml::from_str(&cm.data.unwrap()["gateway.yaml"]).unwrap();
    let support = config.accounts.iter().find(|a| a.name == "support").expect("rendered");
    let oauth = support.oauth.as_ref().unwrap();
    assert_eq!(
        oauth.client_secret_file.as_deref(),
        Some(std::path::Path::new("/etc/postern/secrets/entra-app/secret"))
    );
    assert_eq!(oauth.tenant.as_deref(), Some("example.onmicrosoft.com"));
    let onprem = config.accounts.iter().find(|a| a.name == "onprem").unwrap().exchange.clone().unwrap();
    assert_eq!(onprem.password_file, std::path::Path::new("/etc/postern/secrets/ews/password"));
    assert_eq!(config.admin.public_url.as_deref(), Some("https://postern.example.com"));
    assert_eq!(
        config.oauth.token_key_file.as_deref(),
        Some(std::path::Path::new("/etc/postern/secrets/edge-oauth-token-key/key"))
    );
    let key = Api::<Secret>::namespaced(client.clone(), NS).get("edge-oauth-token-key").await.unwrap();
    assert_eq!(key.labels()["mail.postern.dev/gateway"], "edge");
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(&key.data.unwrap()["key"].0).unwrap();
    assert_eq!(raw.len(), 32, "an AES-256 key");
    let dep = Api::<Deployment>::namespaced(client.clone(), NS).get("edge").await.unwrap();
    let pod = serde_json::to_value(dep.spec.unwrap().template.spec.unwrap()).unwrap();
    for secret in ["entra-app", "ews", "edge-oauth-token-key"] {
        assert!(
            pod["volumes"].as_array().unwrap().iter().any(|v| v["secret"]["secretName"] == secret),
            "{secret} is mounted"
        );
    }
    let a = Api::<SendingAccount>::namespaced(client.clone(), NS).get("support").await.unwrap();
    let c = a.status.unwrap().base.conditions.into_iter().find(|c| c.type_ == "Authorized").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", "NotReported"));

    // adminIngress: the public paths (never the API) at adminPublicUrl's host; off: gone.
    patch_spec(
        &client,
        "edge",
        serde_json::json!({"adminIngress": {"className": "nginx", "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"}}}),
    )
    .await;
    reconcile_gateway(&client, "edge").await;
    let ingresses = Api::<k8s_openapi::api::networking::v1::Ingress>::namespaced(client.clone(), NS);
    let ingress = serde_json::to_value(ingresses.get("edge-admin-public").await.unwrap()).unwrap();
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"], "postern.example.com");
    let paths: Vec<&str> =
        rule["http"]["paths"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/confirm", "/oauth/callback", "/quarantine/link"]);
    assert!(
        rule["http"]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["pathType"] == "Exact" && p["backend"]["service"]["name"] == "edge-admin")
    );
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "edge-admin-public");
    // With the console: /console as a prefix too, still never /api/.
    patch_spec(&client, "edge", serde_json::json!({"adminIngress": {"className": "nginx", "console": true}}))
        .await;
    reconcile_gateway(&client, "edge").await;
    let ingress = serde_json::to_value(ingresses.get("edge-admin-public").await.unwrap()).unwrap();
    let paths: Vec<(&str, &str)> = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["pathType"].as_str().unwrap()))
        .collect();
    assert_eq!(paths.last(), Some(&("/console", "Prefix")), "{paths:?}");
    assert!(paths.iter().all(|(p, _)| !p.starts_with("/api")), "{paths:?}");
    patch_spec(&client, "edge", serde_json::json!({"adminIngress": null})).await;
    reconcile_gateway(&client, "edge").await;
    assert!(ingresses.get_opt("edge-admin-public").await.unwrap().is_none());
}

#[tokio::test]
async fn gateways_on_one_redis_with_one_key_prefix_are_told_they_share_a_queue() {
    let client = cluster(&manifests()).await;
    let exclusive = async |client: &kube::Client| {
        reconcile_gateway(client, "edge").await;
        let gw = Api::<Gateway>::namespaced(client.clone(), NS).get("edge").await.unwrap();
        gateway_condition(&gw, "StoreExclusive")
    };
    let (status, reason, _) = exclusive(&client).await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "NotShared"));

    // The other Gateway of the namespace moves to the same Redis, default prefix.
    let redis = serde_json::json!({"type": "Redis", "redis": {"url": "redis://redis.mail.svc:6379/"}});
    patch_spec(&client, "relay", serde_json::json!({"store": redis})).await;
    let (status, reason, message) = exclusive(&client).await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "SharedWithGateway"), "{message}");
    assert!(message.contains("Gateway relay") && message.contains("keyPrefix"), "{message}");

    // A prefix of its own separates the two queues.
    let redis = serde_json::json!({"type": "Redis", "redis": {"url": "redis://redis.mail.svc:6379/", "keyPrefix": "relay"}});
    patch_spec(&client, "relay", serde_json::json!({"store": redis})).await;
    let (status, _, _) = exclusive(&client).await;
    assert_eq!(status, "True");
}
