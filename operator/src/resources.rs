//! The Kubernetes objects a Gateway owns, built from its spec and its rendered config: the
//! config ConfigMap, the workload (a StatefulSet with a PersistentVolumeClaim for the embedded
//! store, a Deployment for Redis), the SMTP and admin Services, the NetworkPolicy, the pods'
//! ServiceAccount and its ClusterRoleBinding to `system:auth-delegator` (the admin API's token
//! and access reviews), and when asked for, a HorizontalPodAutoscaler and a
//! PodDisruptionBudget. Pure functions: the controller applies them (server-side apply), the
//! tests look at them.
//!
//! Config changes reach running pods without a restart (the gateway re-reads its mounted file);
//! only what needs a restart (listeners, store, Secrets mounted) changes the pod template, via
//! the `postern.dev/restart-hash` annotation.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::crd::Gateway;
use crate::crd::gateway::{ServiceKind, StoreType};
pub use crate::render::admin_service_name;
use crate::render::{ADMIN_PORT, KUBE_API_DIR, Rendered, STORE_PATH};

pub const MANAGER: &str = "postern-operator";
const CONFIG_KEY: &str = "gateway.yaml";
const CONFIG_DIR: &str = "/etc/postern/config";
/// The embedded store's volume (and claim template) name.
const STORE_VOLUME: &str = "store";

/// Names of the children: `<gateway>` for the workload, `<gateway>-config` for the ConfigMap.
pub fn config_map_name(gw: &Gateway) -> String {
    format!("{}-config", gw.name_any())
}

/// The Gateway as controlling owner; `None` for a Gateway read from a file (no uid yet), which
/// `postern-operator render --objects` shows without owner references.
fn owner(gw: &Gateway) -> Option<OwnerReference> {
    gw.controller_owner_ref(&())
}

fn labels(gw: &Gateway) -> Value {
    json!({
        "app.kubernetes.io/name": "postern-gateway",
        "app.kubernetes.io/instance": gw.name_any(),
        "app.kubernetes.io/managed-by": MANAGER,
    })
}

fn selector(gw: &Gateway) -> Value {
    json!({"app.kubernetes.io/name": "postern-gateway", "app.kubernetes.io/instance": gw.name_any()})
}

fn meta(gw: &Gateway, name: String) -> Value {
    let mut meta = json!({"name": name, "namespace": gw.namespace(), "labels": labels(gw)});
    if let Some(owner) = owner(gw) {
        meta["ownerReferences"] = json!([owner]);
    }
    meta
}

/// The pods of a Gateway: a StatefulSet (embedded store) or a Deployment (Redis).
pub enum Workload {
    StatefulSet(StatefulSet),
    Deployment(Deployment),
}

/// Everything the operator applies for one Gateway with a valid rendered config. What is
/// `None` is not wanted and is deleted if the Gateway owns one. The controller applies these
/// and `postern-operator render --objects` prints them: one code path.
pub struct Children {
    pub config_map: ConfigMap,
    pub workload: Workload,
    pub service: Service,
    pub admin_service: Service,
    pub network_policy: Option<NetworkPolicy>,
    /// Publishes the MTA-STS policy (`spec.mtaSts`).
    pub mta_sts_ingress: Option<Ingress>,
    /// `<gateway>-admin-public`: `/confirm`, `/oauth/callback`, `/quarantine/link` (and
    /// `/console`) at `adminPublicUrl`.
    pub admin_ingress: Option<Ingress>,
    pub service_account: ServiceAccount,
    /// Cluster-scoped, so it cannot be owned by the Gateway: the controller removes the
    /// bindings of Gateways that are gone (`review_binding_owner`).
    pub review_binding: ClusterRoleBinding,
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    pub disruption_budget: Option<PodDisruptionBudget>,
    /// Objects of other projects' kinds, applied only where their CRD is installed
    /// (`addons.rs`): a ServiceMonitor (Prometheus Operator), cert-manager Certificates, an
    /// external-dns DNSEndpoint.
    pub service_monitor: Option<Value>,
    pub certificates: Vec<Value>,
    pub dns_endpoint: Option<Value>,
}

/// What the operator saw of the cluster that shapes the children (nothing offline).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The SMTP Service's load balancer addresses.
    pub load_balancer: Vec<String>,
    /// (name, TXT value) of the Direct sending accounts' DKIM keys, as the gateways report
    /// them (none offline: `render --objects` cannot read keys).
    pub dkim_records: Vec<(String, String)>,
}

/// What the operator knows about itself that shapes its children.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// The gateway image for Gateways that name none: `POSTERN_GATEWAY_IMAGE` (the chart sets it
    /// to the image it installs), else the image of this build.
    pub image: String,
    /// The operator's namespace (`POD_NAMESPACE`), for the NetworkPolicy that lets it reach the
    /// gateways' admin port; unknown: its pods in any namespace.
    pub operator_namespace: Option<String>,
}

impl Defaults {
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Self {
            image: var("POSTERN_GATEWAY_IMAGE").unwrap_or_else(|| crate::crd::gateway::DEFAULT_IMAGE.into()),
            operator_namespace: var("POD_NAMESPACE"),
        }
    }
}

impl Children {
    /// The children for a Gateway whose config rendered; `None` when it did not (the last
    /// good children stay).
    pub fn new(gw: &Gateway, rendered: &Rendered, defaults: &Defaults, observed: &Observed) -> Option<Self> {
        let config = rendered.config.as_ref()?;
        let config_yaml = &rendered.yaml()?;
        let secrets = &rendered.secrets;
        let domains: Vec<String> = config.domains.iter().map(|d| d.name.clone()).collect();
        Some(Self {
            config_map: config_map(gw, config_yaml),
            workload: match gw.spec.store.kind {
                StoreType::Embedded => Workload::StatefulSet(stateful_set(gw, secrets, defaults)),
                StoreType::Redis => Workload::Deployment(deployment(gw, secrets, defaults)),
            },
            service: service(gw),
            admin_service: admin_service(gw),
            network_policy: network_policy(gw, defaults.operator_namespace.as_deref()),
            mta_sts_ingress: mta_sts_ingress(gw, &domains),
            admin_ingress: admin_ingress(gw),
            service_account: service_account(gw),
            review_binding: review_binding(gw),
            autoscaler: autoscaler(gw),
            disruption_budget: disruption_budget(gw),
            service_monitor: service_monitor(gw),
            certificates: certificates(gw),
            dns_endpoint: dns_endpoint(gw, &domains, observed),
        })
    }

    /// Every object as JSON (k8s-openapi writes apiVersion and kind), in apply order.
    pub fn to_values(&self) -> Vec<Value> {
        fn value<T: serde::Serialize>(o: &T) -> Value {
            serde_json::to_value(o).expect("Kubernetes objects serialize")
        }
        let mut out =
            vec![value(&self.service_account), value(&self.review_binding), value(&self.config_map)];
        match &self.workload {
            Workload::StatefulSet(s) => out.push(value(s)),
            Workload::Deployment(d) => out.push(value(d)),
        }
        out.push(value(&self.service));
        out.push(value(&self.admin_service));
        out.extend(self.network_policy.iter().map(value));
        out.extend(self.mta_sts_ingress.iter().map(value));
        out.extend(self.admin_ingress.iter().map(value));
        out.extend(self.autoscaler.iter().map(value));
        out.extend(self.disruption_budget.iter().map(value));
        out.extend(self.service_monitor.iter().cloned());
        out.extend(self.certificates.iter().cloned());
        out.extend(self.dns_endpoint.iter().cloned());
        out
    }
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("operator-built objects match their types")
}

pub fn config_map(gw: &Gateway, config_yaml: &str) -> ConfigMap {
    typed(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta(gw, config_map_name(gw)),
        "data": {CONFIG_KEY: config_yaml},
    }))
}

/// What only a restart applies: listeners, store and the mounted Secrets.
fn restart_hash(gw: &Gateway, secrets: &BTreeSet<String>) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&gw.spec.listeners).unwrap_or_default().hash(&mut h);
    serde_json::to_string(&gw.spec.store).unwrap_or_default().hash(&mut h);
    secrets.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The gateway pods' own identity: only for the admin API's reviews (its token is projected
/// into the pods, not automounted).
pub fn service_account_name(gw: &Gateway) -> String {
    format!("{}-gateway", gw.name_any())
}

pub fn service_account(gw: &Gateway) -> ServiceAccount {
    typed(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": meta(gw, service_account_name(gw)),
        "automountServiceAccountToken": false,
    }))
}

/// Labels of the review bindings: which Gateway a cluster-scoped binding belongs to.
pub const BINDING_NAMESPACE_LABEL: &str = "postern.dev/gateway-namespace";
pub const BINDING_GATEWAY_LABEL: &str = "postern.dev/gateway";
pub const BINDING_COMPONENT: &str = "token-review";

/// Lets the gateway pods create TokenReviews and SubjectAccessReviews (the built-in
/// `system:auth-delegator` role, as aggregated API servers use), so the admin API asks the API
/// server who a caller is and what RBAC grants them.
pub fn review_binding(gw: &Gateway) -> ClusterRoleBinding {
    let ns = gw.namespace().unwrap_or_default();
    let mut labels = labels(gw);
    labels["app.kubernetes.io/component"] = json!(BINDING_COMPONENT);
    labels[BINDING_NAMESPACE_LABEL] = json!(ns);
    labels[BINDING_GATEWAY_LABEL] = json!(gw.name_any());
    typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("postern-gateway:{ns}:{}", gw.name_any()), "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": service_account_name(gw), "namespace": ns}],
    }))
}

/// The Gateway (namespace, name) a review binding was made for.
pub fn review_binding_owner(binding: &ClusterRoleBinding) -> Option<(String, String)> {
    let labels = binding.metadata.labels.as_ref()?;
    Some((labels.get(BINDING_NAMESPACE_LABEL)?.clone(), labels.get(BINDING_GATEWAY_LABEL)?.clone()))
}

/// The pod template of the gateway pods. `secrets` are the Secrets the rendered config refers
/// to (TLS certificates under /etc/postern/tls, passwords under /etc/postern/secrets), mounted,
/// never copied. The embedded store's volume comes from the StatefulSet's claim template.
fn pod_template(gw: &Gateway, secrets: &BTreeSet<String>, defaults: &Defaults) -> Value {
    let spec = &gw.spec;
    let tls_secrets: BTreeSet<&String> =
        spec.listeners.iter().filter_map(|l| l.tls_secret_name.as_ref()).collect();
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": config_map_name(gw)}}),
        // The admin API's reviews: a short-lived token the kubelet rotates, and the cluster CA.
        json!({"name": "kubernetes", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        ]}}),
    ];
    let mut mounts = vec![
        json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}),
        json!({"name": "kubernetes", "mountPath": KUBE_API_DIR, "readOnly": true}),
    ];
    if spec.store.kind == StoreType::Embedded {
        mounts.push(json!({"name": STORE_VOLUME, "mountPath": STORE_PATH}));
    }
    for (i, s) in secrets.iter().enumerate() {
        let vol = format!("secret-{i}");
        let dir = if tls_secrets.contains(s) { "tls" } else { "secrets" };
        volumes.push(json!({"name": vol, "secret": {"secretName": s}}));
        mounts.push(json!({"name": vol, "mountPath": format!("/etc/postern/{dir}/{s}"), "readOnly": true}));
    }
    let mut ports: Vec<Value> = spec
        .listeners
        .iter()
        .map(|l| json!({"name": l.name, "containerPort": l.container_port(), "protocol": "TCP"}))
        .collect();
    ports.push(json!({"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}));
    let probe = |path: &str| json!({"httpGet": {"path": path, "port": "admin"}, "periodSeconds": 5});
    let mut container = json!({
        "name": "gateway",
        "image": spec.image.as_deref().unwrap_or(&defaults.image),
        "args": ["run", "--config", format!("{CONFIG_DIR}/{CONFIG_KEY}")],
        "ports": ports,
        "volumeMounts": mounts,
        "readinessProbe": probe("/readyz"),
        "livenessProbe": probe("/healthz"),
        // Unprivileged ports only (see GatewayListener::container_port): no capability needed.
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}},
    });
    if let Some(r) = &spec.resources {
        container["resources"] = json!(r);
    }
    let pod = &spec.pod;
    let mut pod_labels = json!(pod.labels);
    merge_into(&mut pod_labels, labels(gw));
    let mut annotations = json!(pod.annotations);
    merge_into(
        &mut annotations,
        json!({
            "postern.dev/restart-hash": restart_hash(gw, secrets),
            "prometheus.io/scrape": "true", "prometheus.io/port": ADMIN_PORT.to_string(),
        }),
    );
    let mut template = json!({
        "metadata": {"labels": pod_labels, "annotations": annotations},
        "spec": {
            // SIGTERM drains: open sessions finish, queued mail stays in the store.
            "terminationGracePeriodSeconds": 60,
            // The token is projected (above) for the admin API's reviews only; the automounted
            // one (a long-lived path every library picks up) stays out.
            "serviceAccountName": service_account_name(gw),
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            // The Pod Security Standard "restricted" profile.
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001,
                                "fsGroup": 10001, "fsGroupChangePolicy": "OnRootMismatch",
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": volumes,
        },
    });
    let spread = pod.topology_spread_constraints.clone().map(|c| json!(c)).unwrap_or_else(|| {
        let many = spec.autoscaling.is_some() || spec.replicas > 1;
        let across = |key: &str| {
            json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
                   "labelSelector": {"matchLabels": selector(gw)}})
        };
        if many {
            json!([across("topology.kubernetes.io/zone"), across("kubernetes.io/hostname")])
        } else {
            json!([])
        }
    });
    let t = &mut template["spec"];
    let optional = [
        ("topologySpreadConstraints", spread),
        ("nodeSelector", json!(pod.node_selector)),
        ("affinity", json!(pod.affinity)),
        ("tolerations", json!(pod.tolerations)),
        ("priorityClassName", json!(pod.priority_class_name)),
        ("imagePullSecrets", json!(pod.image_pull_secrets)),
    ];
    for (key, value) in optional {
        let empty = value.is_null()
            || value.as_array().is_some_and(Vec::is_empty)
            || value.as_object().is_some_and(|o| o.is_empty());
        if !empty {
            t[key] = value;
        }
    }
    template
}

/// Copies `from`'s keys into the object `into` (overwriting).
fn merge_into(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// The gateway pods of a Redis-store Gateway: any number, rolled one new pod at a time.
pub fn deployment(gw: &Gateway, secrets: &BTreeSet<String>, defaults: &Defaults) -> Deployment {
    let mut deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(gw, gw.name_any()),
        "spec": {
            "selector": {"matchLabels": selector(gw)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": pod_template(gw, secrets, defaults),
        },
    });
    // With an autoscaler, it owns the replica count (the field is left out of the apply).
    if gw.spec.autoscaling.is_none() {
        deployment["spec"]["replicas"] = json!(gw.spec.replicas);
    }
    typed(deployment)
}

/// The gateway pod of an embedded-store Gateway: one pod whose store is a PersistentVolumeClaim
/// (`store-<gateway>-0`) that outlives it, so a restart, rollout or drain loses no accepted
/// mail. The claim is kept when the Gateway is deleted (the mail in it is not the operator's
/// to throw away).
pub fn stateful_set(gw: &Gateway, secrets: &BTreeSet<String>, defaults: &Defaults) -> StatefulSet {
    let embedded = &gw.spec.store.embedded;
    let mut claim = json!({
        "metadata": {"name": STORE_VOLUME, "labels": labels(gw)},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": embedded.size}}},
    });
    if let Some(class) = &embedded.storage_class_name {
        claim["spec"]["storageClassName"] = json!(class);
    }
    typed(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": meta(gw, gw.name_any()),
        "spec": {
            "replicas": gw.spec.replicas.min(1),
            "serviceName": gw.name_any(),
            "selector": {"matchLabels": selector(gw)},
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "volumeClaimTemplates": [claim],
            "template": pod_template(gw, secrets, defaults),
        },
    }))
}

/// The claim a StatefulSet makes for its first pod.
pub fn store_claim_name(gw: &Gateway) -> String {
    format!("{STORE_VOLUME}-{}-0", gw.name_any())
}

/// The SMTP Service, shaped by `spec.service` (ClusterIP, or LoadBalancer/NodePort keeping the
/// client's address with externalTrafficPolicy Local by default).
pub fn service(gw: &Gateway) -> Service {
    let svc = &gw.spec.service;
    let ports: Vec<Value> = gw
        .spec
        .listeners
        .iter()
        .map(|l| json!({"name": l.name, "port": l.port, "targetPort": l.name, "protocol": "TCP"}))
        .collect();
    let mut metadata = meta(gw, gw.name_any());
    if !svc.annotations.is_empty() {
        metadata["annotations"] = json!(svc.annotations);
    }
    let mut spec = json!({"type": svc.kind, "selector": selector(gw), "ports": ports});
    if svc.kind != ServiceKind::ClusterIP {
        spec["externalTrafficPolicy"] = json!(svc.external_traffic_policy);
    }
    if svc.kind == ServiceKind::LoadBalancer {
        if let Some(class) = &svc.load_balancer_class {
            spec["loadBalancerClass"] = json!(class);
        }
        if !svc.load_balancer_source_ranges.is_empty() {
            spec["loadBalancerSourceRanges"] = json!(svc.load_balancer_source_ranges);
        }
    }
    typed(json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}))
}

/// The admin port (quarantine API, health, metrics) on a ClusterIP Service of its own, never
/// on the SMTP Service a load balancer exposes.
pub fn admin_service(gw: &Gateway) -> Service {
    let mut metadata = meta(gw, admin_service_name(gw));
    metadata["labels"]["app.kubernetes.io/component"] = json!("admin");
    typed(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata,
        "spec": {"type": "ClusterIP", "selector": selector(gw),
                 "ports": [{"name": "admin", "port": ADMIN_PORT, "targetPort": "admin", "protocol": "TCP"}]},
    }))
}

/// SMTP from anywhere; the admin port only from the operator (its pods, in `operator_namespace`
/// when known) and `networkPolicy.adminFrom`. Egress stays open: delivery goes anywhere.
pub fn network_policy(gw: &Gateway, operator_namespace: Option<&str>) -> Option<NetworkPolicy> {
    let np = &gw.spec.network_policy;
    if !np.enabled {
        return None;
    }
    let smtp: Vec<Value> =
        gw.spec.listeners.iter().map(|l| json!({"port": l.container_port(), "protocol": "TCP"})).collect();
    let namespaces = match operator_namespace {
        Some(ns) => json!({"matchLabels": {"kubernetes.io/metadata.name": ns}}),
        None => json!({}),
    };
    let mut admin_from = vec![json!({
        "namespaceSelector": namespaces,
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "postern-operator"}},
    })];
    admin_from.extend(np.admin_from.iter().map(|p| json!(p)));
    Some(typed(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": meta(gw, gw.name_any()),
        "spec": {
            "podSelector": {"matchLabels": selector(gw)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": smtp},
                {"from": admin_from, "ports": [{"port": ADMIN_PORT, "protocol": "TCP"}]},
            ],
        },
    })))
}

pub fn autoscaler(gw: &Gateway) -> Option<HorizontalPodAutoscaler> {
    let a = gw.spec.autoscaling.as_ref()?;
    Some(typed(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": meta(gw, gw.name_any()),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": gw.name_any()},
            "minReplicas": a.min_replicas, "maxReplicas": a.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization_percentage}}}],
        },
    })))
}

/// Keeps all but one pod up during voluntary disruptions (node drains), when there is more
/// than one.
pub fn disruption_budget(gw: &Gateway) -> Option<PodDisruptionBudget> {
    let many = gw.spec.autoscaling.is_some() || gw.spec.replicas > 1;
    many.then(|| {
        typed(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta(gw, gw.name_any()),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(gw)}},
        }))
    })
}

/// A Prometheus Operator ServiceMonitor, with the labels the Prometheus selects
/// (`monitoring.serviceMonitor`).
pub fn service_monitor(gw: &Gateway) -> Option<Value> {
    let settings = &gw.spec.monitoring.service_monitor;
    if !settings.enabled {
        return None;
    }
    let mut metadata = meta(gw, gw.name_any());
    merge_into(&mut metadata["labels"], json!(settings.labels));
    let mut endpoint = json!({"port": "admin", "path": "/metrics"});
    if let Some(interval) = &settings.interval {
        endpoint["interval"] = json!(interval);
    }
    Some(json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/component": "admin",
                                         "app.kubernetes.io/name": "postern-gateway",
                                         "app.kubernetes.io/instance": gw.name_any()}},
            "endpoints": [endpoint],
        },
    }))
}

/// cert-manager Certificates for the listeners that ask for one: one per TLS Secret (named
/// like it, as cert-manager's own ingress support does), with the names of every listener
/// sharing it.
pub fn certificates(gw: &Gateway) -> Vec<Value> {
    let mut by_secret: std::collections::BTreeMap<
        &str,
        (&crate::crd::gateway::ListenerCertificate, BTreeSet<String>),
    > = Default::default();
    for l in &gw.spec.listeners {
        let (Some(cert), Some(secret)) = (&l.certificate, &l.tls_secret_name) else { continue };
        let names: Vec<String> = match (cert.dns_names.is_empty(), &gw.spec.hostname) {
            (false, _) => cert.dns_names.clone(),
            (true, Some(h)) => vec![h.clone()],
            (true, None) => Vec::new(),
        };
        by_secret.entry(secret).or_insert((cert, BTreeSet::new())).1.extend(names);
    }
    by_secret
        .into_iter()
        .map(|(secret, (cert, names))| {
            json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": meta(gw, secret.to_string()),
                "spec": {
                    "secretName": secret,
                    "dnsNames": names,
                    "issuerRef": cert.issuer_ref,
                    "usages": ["digital signature", "key encipherment", "server auth"],
                    "privateKey": {"rotationPolicy": "Always"},
                },
            })
        })
        .collect()
}

/// The Ingress that publishes the MTA-STS policy of every served domain at
/// `https://mta-sts.<domain>/.well-known/mta-sts.txt` (the gateways' admin port serves it).
pub fn mta_sts_ingress(gw: &Gateway, domains: &[String]) -> Option<Ingress> {
    let mta_sts = gw.spec.mta_sts.as_ref()?;
    if domains.is_empty() {
        return None;
    }
    let hosts: Vec<String> = domains.iter().map(|d| format!("mta-sts.{d}")).collect();
    let backend = json!({"service": {"name": admin_service_name(gw), "port": {"name": "admin"}}});
    let rules: Vec<Value> = hosts
        .iter()
        .map(|h| {
            json!({"host": h, "http": {"paths": [
                {"path": "/.well-known/mta-sts.txt", "pathType": "Exact", "backend": backend},
            ]}})
        })
        .collect();
    let mut metadata = meta(gw, gw.name_any());
    if !mta_sts.ingress.annotations.is_empty() {
        metadata["annotations"] = json!(mta_sts.ingress.annotations);
    }
    let mut spec = json!({
        "tls": [{"hosts": hosts, "secretName": format!("{}-mta-sts", gw.name_any())}],
        "rules": rules,
    });
    if let Some(class) = &mta_sts.ingress.class_name {
        spec["ingressClassName"] = json!(class);
    }
    Some(typed(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}),
    ))
}

/// The name of the Ingress of the admin port's public pages.
pub fn admin_ingress_name(gw: &Gateway) -> String {
    format!("{}-admin-public", gw.name_any())
}

/// The Ingress of the admin port's public pages (`spec.adminIngress`): only the paths meant
/// for the world, `/confirm`, `/oauth/callback`, `/quarantine/link` (and the console when
/// asked), on `adminPublicUrl`'s host, never the API.
pub fn admin_ingress(gw: &Gateway) -> Option<Ingress> {
    let settings = gw.spec.admin_ingress.as_ref()?;
    let url = gw.spec.admin_public_url.as_deref()?;
    let host = url.strip_prefix("https://")?.trim_end_matches('/');
    let backend = json!({"service": {"name": admin_service_name(gw), "port": {"name": "admin"}}});
    let mut paths: Vec<Value> = ["/confirm", "/oauth/callback", "/quarantine/link"]
        .iter()
        .map(|p| json!({"path": p, "pathType": "Exact", "backend": backend}))
        .collect();
    if settings.console {
        paths.push(json!({"path": "/console", "pathType": "Prefix", "backend": backend}));
    }
    let settings = &settings.ingress;
    let name = admin_ingress_name(gw);
    let mut metadata = meta(gw, name.clone());
    if !settings.annotations.is_empty() {
        metadata["annotations"] = json!(settings.annotations);
    }
    let mut spec = json!({
        "tls": [{"hosts": [host], "secretName": name}],
        "rules": [{"host": host, "http": {"paths": paths}}],
    });
    if let Some(class) = &settings.class_name {
        spec["ingressClassName"] = json!(class);
    }
    Some(typed(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}),
    ))
}

/// A TXT value longer than one DNS character-string (255 bytes, RFC 1035 3.3; an RSA-2048
/// DKIM key is about 400) as the zone-file form of several quoted strings, which resolvers
/// join: what Route 53, Cloud DNS and RFC 2136 take (external-dns passes it through).
fn txt_strings(value: &str) -> String {
    if value.len() <= 255 {
        return value.to_string();
    }
    let chunks: Vec<String> =
        value.as_bytes().chunks(255).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
    chunks.join(" ")
}

/// What a LoadBalancer Service was given: an IP address or a host name.
pub fn load_balancer_addresses(service: &Service) -> Vec<String> {
    let ingress =
        service.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
    ingress.into_iter().flatten().filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone())).collect()
}

/// An external-dns DNSEndpoint with the records mail needs (`spec.dnsRecords`): MX (and SPF,
/// DMARC when given) for every served domain, the hostname's address from the load balancer
/// (empty until it has one), and the DKIM keys of the Direct sending accounts.
pub fn dns_endpoint(gw: &Gateway, domains: &[String], observed: &Observed) -> Option<Value> {
    let addresses = &observed.load_balancer;
    let records = gw.spec.dns_records.as_ref()?;
    let hostname = gw.spec.hostname.as_deref()?;
    let record = |name: &str, kind: &str, targets: Vec<String>| json!({"dnsName": name, "recordType": kind, "recordTTL": records.ttl, "targets": targets});
    let mut endpoints = Vec::new();
    if records.address && !addresses.is_empty() {
        let ips = |v6: bool| -> Vec<String> {
            addresses
                .iter()
                .filter(|a| a.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_ipv6() == v6))
                .cloned()
                .collect()
        };
        let (v4, v6) = (ips(false), ips(true));
        let names: Vec<String> =
            addresses.iter().filter(|a| a.parse::<std::net::IpAddr>().is_err()).cloned().collect();
        if v4.is_empty() && v6.is_empty() && !names.is_empty() {
            endpoints.push(record(hostname, "CNAME", names[..1].to_vec()));
        }
        if !v4.is_empty() {
            endpoints.push(record(hostname, "A", v4));
        }
        if !v6.is_empty() {
            endpoints.push(record(hostname, "AAAA", v6));
        }
    }
    for domain in domains {
        if records.mx {
            endpoints.push(record(domain, "MX", vec![format!("{} {hostname}", records.mx_preference)]));
        }
        if let Some(spf) = &records.spf {
            endpoints.push(record(domain, "TXT", vec![spf.clone()]));
        }
        if let Some(dmarc) = &records.dmarc {
            endpoints.push(record(&format!("_dmarc.{domain}"), "TXT", vec![dmarc.clone()]));
        }
        if let Some(mta_sts) = &gw.spec.mta_sts {
            endpoints.push(record(
                &format!("_mta-sts.{domain}"),
                "TXT",
                vec![mta_sts.policy.txt_record(hostname)],
            ));
        }
        if let Some(rua) = &records.tls_rpt {
            endpoints.push(record(
                &format!("_smtp._tls.{domain}"),
                "TXT",
                vec![format!("v=TLSRPTv1; rua={rua}")],
            ));
        }
    }
    if records.dkim {
        for (name, value) in &observed.dkim_records {
            endpoints.push(record(name, "TXT", vec![txt_strings(value)]));
        }
    }
    Some(json!({
        "apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint",
        "metadata": meta(gw, gw.name_any()),
        "spec": {"endpoints": endpoints},
    }))
}
