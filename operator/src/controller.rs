//! Reconciling one Gateway: read what selects it, render, apply the children (server-side
//! apply, field manager `postern-operator`), and write the conditions of the Gateway and of the
//! MailDomains and policies it serves. A broken reference is a condition, not an error: the
//! reconcile succeeds and the rest of the fleet keeps being served.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use postern_admin_client::AdminClient;
use postern_api::admin::{AccountState, VerificationState, VerificationStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::addons;
use crate::crd::gateway::{GatewayStatus, StoreType};
use crate::crd::sending_account::{DkimRecord, SendingAccountStatus};
use crate::crd::{Gateway, MailDomain, RoutingPolicy, SendingAccount, SpamPolicy, Status};
use crate::generated_secrets;
use crate::manifests::Objects;
use crate::render::{self, Problem, Rendered};
use crate::resources::{self, MANAGER, Workload};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

pub struct Context {
    pub client: Client,
    /// Where to reach a Gateway's admin API; `None`: its Service (`<name>.<namespace>.svc`).
    pub gateway_admin: Option<std::net::SocketAddr>,
    /// The gateway image and the operator's namespace (from its environment).
    pub defaults: resources::Defaults,
    /// Kubernetes Events about what the operator found (`kubectl describe` shows them).
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Where the operator works (every namespace, or the watched ones).
    pub scope: Scope,
    /// The (namespace, Secret) of generated DKIM keys known to exist: generated (or found,
    /// 409) once per operator run, never read back.
    pub generated_secrets: std::sync::Mutex<BTreeSet<(String, String)>>,
}

impl Context {
    pub fn new(client: Client) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: MANAGER.into(), instance: std::env::var("POD_NAME").ok() },
        );
        Self {
            client,
            recorder,
            metrics: Metrics::default(),
            gateway_admin: None,
            defaults: resources::Defaults::from_env(),
            scope: Scope::parse(&std::env::var("POSTERN_WATCH_NAMESPACES").unwrap_or_default()),
            generated_secrets: Default::default(),
        }
    }

    /// A Warning event on `obj`; a failure to record it is logged, never fatal.
    async fn warn<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not record an event");
        }
    }
}

/// Operator counters for /metrics.
#[derive(Default)]
pub struct Metrics {
    pub reconciles: prometheus_client::metrics::counter::Counter,
    pub reconcile_errors: prometheus_client::metrics::counter::Counter,
    pub problems: prometheus_client::metrics::gauge::Gauge,
}

impl Metrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register("postern_operator_reconciles", "Gateway reconciles", self.reconciles.clone());
        registry.register(
            "postern_operator_reconcile_errors",
            "Gateway reconciles that failed",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "postern_operator_problems",
            "Objects left out by the last reconcile (broken references)",
            self.problems.clone(),
        );
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

async fn list<K>(client: &Client, ns: &str) -> Result<Vec<K>, Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Ok(Api::<K>::namespaced(client.clone(), ns).list(&ListParams::default()).await?.items)
}

async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    Ok(api.patch(&obj.name_any(), &apply_params(), &Patch::Apply(obj)).await?)
}

fn condition(kind: &str, ok: bool, reason: &str, message: String, generation: Option<i64>) -> Condition {
    Condition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(now()),
    }
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Keeps a condition's lastTransitionTime when its status did not change.
fn merge(old: Option<&Status>, mut new: Vec<Condition>) -> Vec<Condition> {
    for c in &mut new {
        if let Some(prev) = old.and_then(|s| s.conditions.iter().find(|p| p.type_ == c.type_))
            && prev.status == c.status
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    new
}

async fn set_status<K>(
    client: &Client,
    obj: &K,
    old: Option<&Status>,
    conditions: Vec<Condition>,
) -> Result<(), Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let status = Status { conditions: merge(old, conditions), observed_generation: obj.meta().generation };
    write_status(client, obj, old, status).await
}

/// Writes `status` (server-side apply on the status subresource) unless it equals `old`.
async fn write_status<K, S>(client: &Client, obj: &K, old: Option<&S>, status: S) -> Result<(), Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    // Unchanged (same conditions, transition times kept): no write. A fleet's reconcile then
    // costs API calls only for what changed, not one per MailDomain.
    if old == Some(&status) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "status": status,
    });
    let api = Api::<K>::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    api.patch_status(&obj.name_any(), &apply_params(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Applies `wanted`, or without it deletes the Gateway's child of that kind.
async fn apply_or_delete<K>(client: &Client, ns: &str, gw: &Gateway, wanted: Option<&K>) -> Result<(), Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    match wanted {
        Some(obj) => apply(client, ns, obj).await.map(drop),
        None => delete_owned::<K>(client, ns, gw).await,
    }
}

/// Applies a cluster-scoped object (the pods' review binding).
async fn apply_cluster<K>(client: &Client, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api = Api::<K>::all(client.clone());
    Ok(api.patch(&obj.name_any(), &apply_params(), &Patch::Apply(obj)).await?)
}

/// Deletes the review bindings (cluster-scoped, so the garbage collector cannot tie them to
/// their Gateway) whose Gateway is gone. Runs with every reconcile and every few minutes.
pub async fn sweep_review_bindings(client: &Client, scope: &Scope) -> Result<usize, Error> {
    let bindings = Api::<ClusterRoleBinding>::all(client.clone());
    let selector = format!(
        "app.kubernetes.io/managed-by={MANAGER},app.kubernetes.io/component={}",
        resources::BINDING_COMPONENT
    );
    let mut deleted = 0;
    for binding in bindings.list(&ListParams::default().labels(&selector)).await?.items {
        let Some((ns, name)) = resources::review_binding_owner(&binding) else { continue };
        // A namespaced install reads Gateways only where it works (another install, or a
        // cluster-wide one, looks after the rest).
        if !scope.contains(&ns) {
            continue;
        }
        if Api::<Gateway>::namespaced(client.clone(), &ns).get_opt(&name).await?.is_none() {
            bindings.delete(&binding.name_any(), &kube::api::DeleteParams::background()).await?;
            tracing::info!(binding = %binding.name_any(), gateway = %name, namespace = %ns, "deleted: its Gateway is gone");
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes the Gateway's child of kind `K` (named like the Gateway) if this Gateway controls
/// it: what the spec no longer asks for (an autoscaler turned off, the workload of a store
/// type left behind) must not keep running.
async fn delete_owned<K>(client: &Client, ns: &str, gw: &Gateway) -> Result<(), Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    delete_owned_named::<K>(client, ns, gw, &gw.name_any()).await
}

/// Deletes the Gateway's child of kind `K` called `name`, if the Gateway owns it.
async fn delete_owned_named<K>(client: &Client, ns: &str, gw: &Gateway, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    let Some(child) = api.get_opt(name).await? else { return Ok(()) };
    let ours = child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(&r.uid) == gw.meta().uid.as_ref());
    if ours {
        api.delete(name, &kube::api::DeleteParams::background()).await?;
        tracing::info!(kind = K::kind(&()).as_ref(), %name, "deleted: the Gateway no longer asks for it");
    }
    Ok(())
}

/// `CertificatesReady`: every Certificate the listeners asked for is issued.
fn certificates_condition(applied: Option<&[DynamicObject]>, generation: Option<i64>) -> Condition {
    let Some(applied) = applied else {
        let message =
            format!("a listener asks for a certificate, but {} is not installed", addons::CERTIFICATE.crd);
        return condition("CertificatesReady", false, "CertManagerNotInstalled", message, generation);
    };
    let waiting: Vec<String> = applied
        .iter()
        .filter_map(|c| {
            let (ready, message) = addons::ready(c);
            (!ready).then(|| format!("{}: {message}", c.name_any()))
        })
        .collect();
    if waiting.is_empty() {
        let message = format!("{} issued by cert-manager", applied.len());
        condition("CertificatesReady", true, "Issued", message, generation)
    } else {
        condition("CertificatesReady", false, "NotIssued", waiting.join("; "), generation)
    }
}

/// `DnsPublished`: the DNSEndpoint is in place (external-dns publishes it from there).
fn dns_condition(
    gw: &Gateway,
    endpoint: &serde_json::Value,
    installed: bool,
    observed: &resources::Observed,
    generation: Option<i64>,
) -> Condition {
    if !installed {
        let message = format!("spec.dnsRecords is set, but {} is not installed", addons::DNS_ENDPOINT.crd);
        return condition("DnsPublished", false, "ExternalDnsNotInstalled", message, generation);
    }
    let records = endpoint["spec"]["endpoints"].as_array().map_or(0, Vec::len);
    let mut message = format!("{records} records in DNSEndpoint {}", gw.name_any());
    let wants_address = gw.spec.dns_records.as_ref().is_some_and(|r| r.address);
    if wants_address && observed.load_balancer.is_empty() {
        message.push_str("; the hostname's address waits for the SMTP Service's load balancer");
    }
    condition("DnsPublished", true, "EndpointApplied", message, generation)
}

/// `Ready`: every pod the workload wants is ready (a fleet at 1 of 6 is not).
fn ready_condition((wanted, ready): (i32, i32), generation: Option<i64>) -> Condition {
    let message = format!("{ready} of {wanted} gateway pods ready");
    if wanted == 0 {
        condition("Ready", false, "ScaledToZero", "replicas is 0".into(), generation)
    } else if ready >= wanted {
        condition("Ready", true, "PodsReady", message, generation)
    } else {
        condition("Ready", false, "PodsNotReady", message, generation)
    }
}

/// `StoreExclusive` (Redis stores only): no other Gateway of the namespace uses the same Redis
/// and key prefix. Two that do would lease each other's queued mail and deliver it with their
/// own routing; each needs its own `spec.store.redis.keyPrefix`.
async fn store_exclusive_condition(
    ctx: &Context,
    ns: &str,
    gw: &Gateway,
    gateways: &[Gateway],
    generation: Option<i64>,
) -> Option<Condition> {
    let (_, prefix) = render::redis_queue(gw)?;
    let sharing = render::sharing_queue_with(gw, gateways);
    if sharing.is_empty() {
        let message = format!("no other Gateway in {ns} uses this Redis with keyPrefix {prefix:?}");
        return Some(condition("StoreExclusive", true, "NotShared", message, generation));
    }
    let message = format!(
        "Gateway {} in {ns} uses the same Redis and keyPrefix {prefix:?}: the fleets would lease and deliver each other's mail; give each its own spec.store.redis.keyPrefix",
        sharing.join(", ")
    );
    ctx.warn(gw, "StoreShared", message.clone()).await;
    Some(condition("StoreExclusive", false, "SharedWithGateway", message, generation))
}

/// `Durable`: whether a 250 reply means the mail outlives the pod that gave it.
async fn durable_condition(
    client: &Client,
    ns: &str,
    gw: &Gateway,
    generation: Option<i64>,
) -> Result<Condition, Error> {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    if let (StoreType::Redis, Some(r)) = (gw.spec.store.kind, &gw.spec.store.redis) {
        let replicas = match r.wait_replicas {
            0 => {
                "no Redis replica (store.redis.waitReplicas: 0): as durable as the Redis server's persistence"
                    .into()
            }
            n => format!("{n} Redis replicas"),
        };
        let message = format!("accepted mail is kept in Redis; a 250 waits for {replicas}");
        return Ok(condition("Durable", true, "RedisStore", message, generation));
    }
    let claim = resources::store_claim_name(gw);
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns).get_opt(&claim).await?;
    let phase = pvc.and_then(|p| p.status).and_then(|s| s.phase);
    Ok(match phase.as_deref() {
        Some("Bound") => condition(
            "Durable",
            true,
            "VolumeBound",
            format!("accepted mail is kept on PersistentVolumeClaim {claim}"),
            generation,
        ),
        Some(phase) => condition(
            "Durable",
            false,
            "VolumeNotBound",
            format!(
                "PersistentVolumeClaim {claim} is {phase}: does a StorageClass provision it (store.embedded.storageClassName)? The gateway pod waits for it"
            ),
            generation,
        ),
        None => Condition {
            status: "Unknown".into(),
            ..condition(
                "Durable",
                false,
                "VolumeNotCreated",
                format!("PersistentVolumeClaim {claim} is not created yet"),
                generation,
            )
        },
    })
}

/// One reconcile, traced as span `reconcile` (gateway, namespace).
pub async fn reconcile(gw: Arc<Gateway>, ctx: Arc<Context>) -> Result<Action, Error> {
    use tracing::Instrument;
    let span = tracing::info_span!("reconcile", gateway = %gw.name_any(), namespace = gw.namespace().unwrap_or_default());
    reconcile_inner(gw, ctx).instrument(span).await
}

async fn reconcile_inner(gw: Arc<Gateway>, ctx: Arc<Context>) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = gw.namespace().ok_or_else(|| Error::Invalid("Gateway without a namespace".into()))?;
    let objs = Objects {
        gateways: vec![(*gw).clone()],
        domains: list(client, &ns).await?,
        routing_policies: list(client, &ns).await?,
        spam_policies: list(client, &ns).await?,
        accounts: list(client, &ns).await?,
        config_maps: list(client, &ns).await?,
    };
    let rendered = render::render(&gw, &objs);
    let generation = gw.meta().generation;
    ctx.metrics.reconciles.inc();
    ctx.metrics.problems.set(rendered.problems.len() as i64);

    let mut gw_conditions = Vec::new();
    // The namespace's Gateways, listed once: for the shared-queue check and the status writers.
    let mut gateways: Vec<Gateway> = list(client, &ns).await?;
    gateways.sort_by_key(|g| g.name_any());
    // (pods wanted, pods ready) of the workload.
    let mut pods = (0, 0);
    // What the cluster shows that the children depend on: the load balancer's address.
    let smtp_service = Api::<Service>::namespaced(client.clone(), &ns).get_opt(&gw.name_any()).await?;
    let admin_addr = ctx.gateway_admin.map_or_else(
        || format!("{}.{ns}.svc:{}", resources::admin_service_name(&gw), render::ADMIN_PORT),
        |a| a.to_string(),
    );
    ensure_generated_secrets(&ctx, &ns, &rendered).await?;
    // Direct accounts' DKIM records and verification (as the gateways read the keys), OAuth
    // accounts' grants: what the gateways report.
    let reported = rendered
        .config
        .as_ref()
        .is_some_and(|c| c.accounts.iter().any(|a| a.direct.is_some() || a.oauth.is_some()));
    let account_states = match reported {
        true => Some(
            admin_client(&admin_addr, Duration::from_secs(10)).accounts().await.map_err(|e| e.to_string()),
        ),
        false => None,
    };
    let observed = resources::Observed {
        load_balancer: smtp_service.as_ref().map(resources::load_balancer_addresses).unwrap_or_default(),
        dkim_records: dkim_records(&rendered, &objs.accounts, account_states.as_ref()),
    };
    match resources::Children::new(&gw, &rendered, &ctx.defaults, &observed) {
        Some(children) => {
            apply(client, &ns, &children.service_account).await?;
            apply_cluster(client, &children.review_binding).await?;
            sweep_review_bindings(client, &ctx.scope).await?;
            apply(client, &ns, &children.config_map).await?;
            // One workload kind per store; the other one (after a store change) goes.
            let (wanted, ready) = match &children.workload {
                Workload::StatefulSet(sts) => {
                    let sts: StatefulSet = apply(client, &ns, sts).await?;
                    delete_owned::<Deployment>(client, &ns, &gw).await?;
                    (sts.spec.and_then(|s| s.replicas), sts.status.and_then(|s| s.ready_replicas))
                }
                Workload::Deployment(d) => {
                    let d: Deployment = apply(client, &ns, d).await?;
                    delete_owned::<StatefulSet>(client, &ns, &gw).await?;
                    (d.spec.and_then(|s| s.replicas), d.status.and_then(|s| s.ready_replicas))
                }
            };
            pods = (wanted.unwrap_or(1), ready.unwrap_or(0));
            apply(client, &ns, &children.service).await?;
            apply(client, &ns, &children.admin_service).await?;
            apply_or_delete(client, &ns, &gw, children.network_policy.as_ref()).await?;
            apply_or_delete(client, &ns, &gw, children.mta_sts_ingress.as_ref()).await?;
            match &children.admin_ingress {
                Some(ingress) => drop(apply(client, &ns, ingress).await?),
                None => {
                    delete_owned_named::<Ingress>(client, &ns, &gw, &resources::admin_ingress_name(&gw))
                        .await?
                }
            }
            apply_or_delete(client, &ns, &gw, children.autoscaler.as_ref()).await?;
            apply_or_delete(client, &ns, &gw, children.disruption_budget.as_ref()).await?;
            addons::SERVICE_MONITOR.reconcile(client, &ns, &gw, children.service_monitor.as_slice()).await?;
            let certificates =
                addons::CERTIFICATE.reconcile(client, &ns, &gw, &children.certificates).await?;
            if !children.certificates.is_empty() {
                gw_conditions.push(certificates_condition(certificates.as_deref(), generation));
            }
            let dns =
                addons::DNS_ENDPOINT.reconcile(client, &ns, &gw, children.dns_endpoint.as_slice()).await?;
            if let Some(endpoint) = &children.dns_endpoint {
                gw_conditions.push(dns_condition(&gw, endpoint, dns.is_some(), &observed, generation));
            }
            gw_conditions.push(condition(
                "ConfigValid",
                true,
                "Rendered",
                format!(
                    "{} MailDomains rendered into ConfigMap {}",
                    rendered.served.len(),
                    resources::config_map_name(&gw)
                ),
                generation,
            ));
            gw_conditions.push(ready_condition(pods, generation));
            // A conflict between the policies this Gateway serves (two outbound gateways) is
            // the Gateway's: another Gateway may serve the same policy without one.
            let conflicts: Vec<String> = rendered
                .problems
                .iter()
                .filter(|p| p.kind == "RoutingPolicy")
                .map(|p| p.message.clone())
                .collect();
            gw_conditions.push(match conflicts.is_empty() {
                true => condition("PoliciesApplied", true, "Applied", "no conflict".into(), generation),
                false => condition(
                    "PoliciesApplied",
                    false,
                    "OutboundGatewayConflict",
                    conflicts.join("; "),
                    generation,
                ),
            });
            gw_conditions.push(durable_condition(client, &ns, &gw, generation).await?);
            if let Some(c) = store_exclusive_condition(&ctx, &ns, &gw, &gateways, generation).await {
                gw_conditions.push(c);
            }
        }
        None => {
            // The last good config stays in place: a bad edit does not take mail down.
            let message = rendered.config_errors.join("; ");
            ctx.warn(&*gw, "ConfigInvalid", message.clone()).await;
            gw_conditions.push(condition("ConfigValid", false, "ConfigInvalid", message.clone(), generation));
            gw_conditions.push(condition("Ready", false, "ConfigInvalid", message, generation));
        }
    }
    let old = gw.status.as_ref();
    let status = GatewayStatus {
        base: Status {
            conditions: merge(old.map(|s| &s.base), gw_conditions),
            observed_generation: generation,
        },
        replicas: rendered.yaml().is_some().then_some(pods.0),
        ready_replicas: rendered.yaml().is_some().then_some(pods.1),
    };
    write_status(client, &*gw, old, status).await?;

    // The MailDomains and policies of the namespace: each has one writer, the first Gateway
    // (by name) that serves it, or without one the namespace's first Gateway; what it writes
    // depends on the namespace, not on the writer, so statuses never flip between Gateways.
    let problems: BTreeMap<(&str, &str), &Problem> =
        rendered.problems.iter().map(|p| ((p.kind, p.name.as_str()), p)).collect();
    let me = gw.name_any();
    let first = gateways.first().map(|g| g.name_any()).unwrap_or_else(|| me.clone());
    let serving = |d: &MailDomain| -> Vec<String> {
        gateways
            .iter()
            .filter(|g| render::selects(&g.spec.domain_selector, d.labels()))
            .map(|g| g.name_any())
            .collect()
    };
    let writes = |users: &[String]| users.first().unwrap_or(&first) == &me;
    for d in &objs.domains {
        let by = serving(d);
        if !writes(&by) {
            continue;
        }
        let c = match (by.is_empty(), problems.get(&("MailDomain", d.name_any().as_str()))) {
            (true, _) => condition(
                "Ready",
                false,
                "NotSelected",
                format!("no Gateway in {ns} selects this MailDomain (spec.domainSelector)"),
                d.meta().generation,
            ),
            (false, Some(p)) => {
                ctx.warn(d, p.reason, p.message.clone()).await;
                condition("Ready", false, p.reason, p.message.clone(), d.meta().generation)
            }
            (false, None) => condition(
                "Ready",
                true,
                "Served",
                format!("served by Gateway {}", by.join(", ")),
                d.meta().generation,
            ),
        };
        set_status::<MailDomain>(client, d, d.status.as_ref(), vec![c]).await?;
    }
    // A policy is used by the Gateways serving a MailDomain that refers to it.
    let users_of = |refers: &dyn Fn(&MailDomain) -> bool| -> (Vec<String>, Vec<&MailDomain>) {
        let domains: Vec<&MailDomain> = objs.domains.iter().filter(|d| refers(d)).collect();
        let mut by: Vec<String> = domains.iter().flat_map(|d| serving(d)).collect();
        by.sort();
        by.dedup();
        (by, domains)
    };
    let in_use = |by: &[String], generation| match by {
        [] => condition(
            "InUse",
            false,
            "NotUsed",
            "no MailDomain served by a Gateway refers to it".into(),
            generation,
        ),
        _ => condition("InUse", true, "InUse", format!("used by Gateway {}", by.join(", ")), generation),
    };
    let mut verifications = None;
    let admin = admin_addr.as_str();
    for p in &objs.routing_policies {
        let name = p.name_any();
        let (by, domains) = users_of(&|d| d.spec.routing_policy_ref.as_deref() == Some(name.as_str()));
        if !writes(&by) {
            continue;
        }
        let generation = p.meta().generation;
        let mut conditions =
            vec![condition("Ready", true, "Valid", "accepted".into(), generation), in_use(&by, generation)];
        if p.spec.routing.verification_address.is_some() {
            let states = match &verifications {
                Some(v) => v,
                None => verifications.insert(fetch_verifications(admin).await),
            };
            let served: Vec<String> = domains
                .iter()
                .filter(|d| !serving(d).is_empty())
                .map(|d| d.spec.domain.to_ascii_lowercase())
                .collect();
            conditions.push(destination_verified(states, &served, generation));
        }
        set_status::<RoutingPolicy>(client, p, p.status.as_ref(), conditions).await?;
    }
    for p in &objs.spam_policies {
        let name = p.name_any();
        let (by, _) = users_of(&|d| d.spec.spam_policy_ref.as_deref() == Some(name.as_str()));
        if !writes(&by) {
            continue;
        }
        let generation = p.meta().generation;
        let conditions =
            vec![condition("Ready", true, "Valid", "accepted".into(), generation), in_use(&by, generation)];
        set_status::<SpamPolicy>(client, p, p.status.as_ref(), conditions).await?;
    }
    // A SendingAccount is used by the Gateways whose accountSelector matches it.
    for a in &objs.accounts {
        let mut by: Vec<String> = gateways
            .iter()
            .filter(|g| render::selects(&g.spec.account_selector, a.labels()))
            .map(|g| g.name_any())
            .collect();
        by.sort();
        if !writes(&by) {
            continue;
        }
        let generation = a.meta().generation;
        let c = match (by.is_empty(), problems.get(&("SendingAccount", a.name_any().as_str()))) {
            (true, _) => condition(
                "Ready",
                false,
                "NotSelected",
                format!("no Gateway in {ns} selects this SendingAccount (spec.accountSelector)"),
                generation,
            ),
            (false, Some(p)) => {
                ctx.warn(a, p.reason, p.message.clone()).await;
                condition("Ready", false, p.reason, p.message.clone(), generation)
            }
            (false, None) => {
                condition("Ready", true, "InUse", format!("used by Gateway {}", by.join(", ")), generation)
            }
        };
        let mut conditions = vec![c];
        // Tested once per generation, by the Gateway that writes its status (when it serves it).
        let old_test =
            a.status.iter().flat_map(|s| &s.base.conditions).find(|c| c.type_ == "ConnectionTested");
        let served_here = by.contains(&me)
            && rendered
                .config
                .as_ref()
                .is_some_and(|cfg| cfg.accounts.iter().any(|x| x.name == a.name_any()));
        match old_test {
            Some(t) if t.observed_generation == generation && t.status != "Unknown" => {
                conditions.push(t.clone())
            }
            // Smtp and Exchange: a login; Direct and OAuth accounts say more in Verified and
            // Authorized.
            _ if served_here && a.spec.direct.is_none() && a.spec.oauth.is_none() => {
                conditions.push(connection_tested(admin, &a.name_any(), generation).await);
            }
            _ => {}
        }
        // A Direct account: its DKIM record and whether its domain publishes it.
        let old_dkim = a.status.as_ref().and_then(|s| s.dkim.clone());
        let mut dkim = None;
        if a.spec.direct.is_some() && served_here {
            let reported = account_states
                .as_ref()
                .map(|r| r.as_ref().map(|l| l.iter().find(|s| s.name == a.name_any())));
            dkim = reported_dkim(reported.as_ref().and_then(|r| r.as_ref().ok()).copied().flatten())
                .or(old_dkim);
            conditions.push(verified_condition(reported, generation));
        }
        if a.spec.oauth.is_some() && served_here {
            let reported = account_states
                .as_ref()
                .map(|r| r.as_ref().map(|l| l.iter().find(|s| s.name == a.name_any())));
            conditions.push(authorized_condition(reported, generation));
        }
        let old = a.status.as_ref();
        let status = SendingAccountStatus {
            base: Status {
                conditions: merge(old.map(|s| &s.base), conditions),
                observed_generation: generation,
            },
            dkim,
        };
        write_status(client, a, old, status).await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Generates the keys the user named none of (DKIM keys of Direct accounts, a Gateway's OAuth
/// token key) into their Secrets (create only: an existing Secret is kept), once per operator
/// run.
async fn ensure_generated_secrets(ctx: &Context, ns: &str, rendered: &Rendered) -> Result<(), Error> {
    for key in &rendered.generated_keys {
        let id = (ns.to_string(), key.secret.name.clone());
        if ctx.generated_secrets.lock().unwrap_or_else(|p| p.into_inner()).contains(&id) {
            continue;
        }
        if generated_secrets::create_if_absent(&ctx.client, ns, key).await? {
            tracing::info!(owner = %key.owner.1, secret = %key.secret.name, "key generated into a Secret");
        }
        ctx.generated_secrets.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
    }
    Ok(())
}

/// The DKIM records the Gateway's DNSEndpoint publishes: each Direct account's, as a gateway
/// reports it, else as its status last showed it (a gateway not answering for a moment must
/// not withdraw a published key).
fn dkim_records(
    rendered: &Rendered,
    accounts: &[SendingAccount],
    reported: Option<&Result<Vec<AccountState>, String>>,
) -> Vec<(String, String)> {
    let Some(config) = &rendered.config else { return Vec::new() };
    let mut out: Vec<(String, String)> = Vec::new();
    for a in config.accounts.iter().filter(|a| a.direct.is_some()) {
        let now = reported.and_then(|r| r.as_ref().ok()).and_then(|l| l.iter().find(|s| s.name == a.name));
        let record = reported_dkim(now).or_else(|| {
            accounts.iter().find(|x| x.name_any() == a.name).and_then(|x| x.status.as_ref()?.dkim.clone())
        });
        if let Some(r) = record
            && !out.iter().any(|(name, _)| name.eq_ignore_ascii_case(&r.name))
        {
            out.push((r.name, r.value));
        }
    }
    out
}

/// The record a gateway reports for a Direct account (when it could read the key).
fn reported_dkim(state: Option<&AccountState>) -> Option<DkimRecord> {
    let s = state?;
    Some(DkimRecord { name: s.dkim_name.clone()?, value: s.dkim_record.clone()? })
}

/// `Verified` of a Direct SendingAccount from the gateways' report: True once its domain
/// publishes the key the gateways sign with.
fn verified_condition(
    reported: Option<Result<Option<&AccountState>, &String>>,
    generation: Option<i64>,
) -> Condition {
    let unknown = |reason: &str, message: String| Condition {
        status: "Unknown".into(),
        ..condition("Verified", false, reason, message, generation)
    };
    match reported {
        None => unknown("NotReported", "the gateways were not asked".into()),
        Some(Err(e)) => unknown("NotReported", format!("the gateways' admin API did not answer: {e}")),
        Some(Ok(None)) => unknown("NotReported", "the gateways do not serve this account yet".into()),
        Some(Ok(Some(s))) => match &s.verification {
            Some(v) => condition("Verified", v.verified, &v.reason, v.detail.clone(), generation),
            None => unknown("NotReported", "the gateways report no verification for it".into()),
        },
    }
}

/// `Authorized` of an OAuth SendingAccount from the gateways' report: True while they hold a
/// grant the provider accepts.
fn authorized_condition(
    reported: Option<Result<Option<&AccountState>, &String>>,
    generation: Option<i64>,
) -> Condition {
    let unknown = |message: String| Condition {
        status: "Unknown".into(),
        ..condition("Authorized", false, "NotReported", message, generation)
    };
    match reported {
        None => unknown("the gateways were not asked".into()),
        Some(Err(e)) => unknown(format!("the gateways' admin API did not answer: {e}")),
        Some(Ok(None)) => unknown("the gateways do not serve this account yet".into()),
        Some(Ok(Some(s))) => match &s.authorization {
            Some(a) => condition("Authorized", a.authorized, &a.reason, a.detail.clone(), generation),
            None => unknown("the gateways report no authorization for it".into()),
        },
    }
}

/// The gateways' destination verification states (their admin API, `/api/v1/verifications`).
/// The operator shows its own service-account token: the gateway reviews it, and the chart's
/// ClusterRole grants `list` on `verifications`.
async fn fetch_verifications(addr: &str) -> Result<Vec<VerificationState>, String> {
    admin_client(addr, Duration::from_secs(3)).verifications().await.map_err(|e| e.to_string())
}

/// A client of a Gateway's admin API showing the operator's own service-account token.
fn admin_client(addr: &str, timeout: Duration) -> AdminClient {
    let client = AdminClient::with_timeout(addr, timeout);
    let token_file = std::path::Path::new(postern_api::KUBE_SERVICE_ACCOUNT_DIR).join("token");
    match std::fs::read_to_string(token_file) {
        Ok(token) => client.with_token(token.trim()),
        Err(_) => client,
    }
}

/// `ConnectionTested` of a SendingAccount: a gateway of the Gateway connects, starts TLS, logs
/// in and quits (`POST /api/v1/accounts/NAME/test`); once per generation of the account.
async fn connection_tested(addr: &str, name: &str, generation: Option<i64>) -> Condition {
    match admin_client(addr, Duration::from_secs(60)).test_account(name).await {
        Ok(t) if t.ok => condition("ConnectionTested", true, "Connected", t.detail, generation),
        Ok(t) => condition("ConnectionTested", false, "ConnectionFailed", t.detail, generation),
        Err(e) => Condition {
            status: "Unknown".into(),
            ..condition(
                "ConnectionTested",
                false,
                "NotTested",
                format!("the gateways' admin API did not answer: {e}"),
                generation,
            )
        },
    }
}

/// `DestinationVerified` of a RoutingPolicy from the states of the domains that use it: True
/// when all are verified, False when one failed, Unknown while pending or unreachable.
fn destination_verified(
    states: &Result<Vec<VerificationState>, String>,
    domains: &[String],
    generation: Option<i64>,
) -> Condition {
    let unknown = |reason: &str, message: String| Condition {
        status: "Unknown".into(),
        ..condition("DestinationVerified", false, reason, message, generation)
    };
    let states = match states {
        Ok(s) => s,
        Err(e) => return unknown("NotReported", format!("the gateways' admin API did not answer: {e}")),
    };
    let state_of = |d: &str| states.iter().find(|s| s.domain == d);
    let failed: Vec<String> = domains
        .iter()
        .filter_map(|d| {
            state_of(d)
                .filter(|s| s.status == VerificationStatus::Failed)
                .map(|s| format!("{d}: {}", s.detail))
        })
        .collect();
    if !failed.is_empty() {
        return condition("DestinationVerified", false, "VerificationFailed", failed.join("; "), generation);
    }
    let pending: Vec<&str> = domains
        .iter()
        .filter(|d| state_of(d).is_none_or(|s| s.status != VerificationStatus::Verified))
        .map(String::as_str)
        .collect();
    if !pending.is_empty() || domains.is_empty() {
        return unknown("Pending", format!("not verified yet: {}", pending.join(", ")));
    }
    condition(
        "DestinationVerified",
        true,
        "Verified",
        format!("verified for {}", domains.join(", ")),
        generation,
    )
}

pub fn error_policy(_gw: Arc<Gateway>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_errors.inc();
    tracing::warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

/// Where the operator works: every namespace, or only the listed ones (namespaced install:
/// `POSTERN_WATCH_NAMESPACES`, the chart's `watchNamespaces`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Scope {
    #[default]
    Cluster,
    Namespaces(Vec<String>),
}

impl Scope {
    /// From a comma-separated list; empty: the whole cluster.
    pub fn parse(list: &str) -> Self {
        let namespaces: Vec<String> =
            list.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
        if namespaces.is_empty() { Self::Cluster } else { Self::Namespaces(namespaces) }
    }

    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Self::Cluster => true,
            Self::Namespaces(list) => list.iter().any(|n| n == namespace),
        }
    }
}

/// Runs the controller until the process is stopped, over the whole cluster or one controller
/// per watched namespace (each with its own watches, as namespaced RBAC requires).
pub async fn run(client: Client, ctx: Arc<Context>, scope: Scope) -> anyhow::Result<()> {
    // A Gateway's review binding outlives it until a sweep: every reconcile sweeps, and this
    // covers the last Gateway of the cluster being deleted.
    let sweeper = {
        let client = client.clone();
        let scope = scope.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(300));
            loop {
                every.tick().await;
                if let Err(error) = sweep_review_bindings(&client, &scope).await {
                    tracing::warn!(%error, "sweeping review bindings failed");
                }
            }
        })
    };
    match &scope {
        Scope::Cluster => run_in(client, ctx, None).await,
        Scope::Namespaces(list) => {
            let runs = list.iter().map(|ns| run_in(client.clone(), ctx.clone(), Some(ns.clone())));
            futures::future::join_all(runs).await;
        }
    }
    sweeper.abort();
    Ok(())
}

/// One controller: Gateways, their children, and every MailDomain, policy and ConfigMap (a
/// change to one re-renders the Gateways of its namespace), in `namespace` or everywhere.
async fn run_in(client: Client, ctx: Arc<Context>, namespace: Option<String>) {
    use futures::StreamExt;
    use kube::runtime::{Controller, reflector::ObjectRef, watcher};
    fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let cache = Controller::new(api::<Gateway>(&client, &namespace), watcher::Config::default());
    let store = cache.store();
    let in_namespace = move |ns: Option<String>| {
        store
            .state()
            .into_iter()
            .filter(|g| g.namespace() == ns)
            .map(|g| ObjectRef::from_obj(&*g))
            .collect::<Vec<_>>()
    };
    let (a, b, c, d, e, f) = (
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace,
    );
    let config = watcher::Config::default;
    cache
        .owns(api::<ConfigMap>(&client, &namespace), config())
        .owns(api::<Deployment>(&client, &namespace), config())
        .owns(api::<StatefulSet>(&client, &namespace), config())
        // A load balancer's new address goes into the DNSEndpoint.
        .owns(api::<Service>(&client, &namespace), config())
        .watches(api::<MailDomain>(&client, &namespace), config(), move |o| a(o.namespace()))
        .watches(api::<RoutingPolicy>(&client, &namespace), config(), move |o| b(o.namespace()))
        .watches(api::<SpamPolicy>(&client, &namespace), config(), move |o| c(o.namespace()))
        .watches(api::<SendingAccount>(&client, &namespace), config(), move |o| f(o.namespace()))
        .watches(api::<ConfigMap>(&client, &namespace), config(), move |o| d(o.namespace()))
        // A Gateway's selector decides what its neighbours report as served by whom.
        .watches(api::<Gateway>(&client, &namespace), config(), move |o| e(o.namespace()))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::info!(gateway = %obj.name, namespace = ?obj.namespace, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile error"),
            }
        })
        .await;
}
