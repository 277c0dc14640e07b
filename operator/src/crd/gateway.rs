//! `Gateway`: a fleet of gateway pods (Deployment, Service, autoscaler, disruption budget)
//! serving the MailDomains its `domainSelector` matches.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SecretKeyRef, Status};

/// A Gateway's status: its conditions (`ConfigValid`, `Ready`, `Durable`) and its pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    #[serde(flatten)]
    pub base: Status,
    /// Pods the workload wants (with autoscaling, the autoscaler's current choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods ready to take mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
}

/// The image the operator runs when a Gateway names none and `POSTERN_GATEWAY_IMAGE` is not set
/// (built by the repository's Dockerfile; both binaries are in it, so it is the operator's own).
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/postern/postern:", env!("CARGO_PKG_VERSION"));

/// Gateway pods: how many, which image, where they listen, where they keep their queue, and
/// which MailDomains they serve.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mail.postern.dev",
    version = "v1alpha1",
    kind = "Gateway",
    namespaced,
    derive = "Default",
    doc = "Gateway pods serving the MailDomains their domainSelector matches: replicas or autoscaling, image, SMTP listeners, queue store (embedded or Redis), resources and DNS resolvers.",
    status = "GatewayStatus",
    shortname = "gw",
    category = "postern",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Ready Pods", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Store", type_ = "string", json_path = ".spec.store.type"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.store.type == 'Redis' || (self.replicas == 1 && !has(self.autoscaling))",
     "message": "the embedded store serves one replica: use store.type Redis for more replicas or autoscaling"},
    {"rule": "self.store.type != 'Redis' || has(self.store.redis)",
     "message": "store.type Redis needs store.redis"},
    {"rule": "!has(self.autoscaling) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
     "message": "autoscaling.minReplicas must not exceed maxReplicas"},
    {"rule": "has(self.auth) || !self.listeners.exists(l, (has(l.auth) && l.auth) || (!has(l.auth) && has(l.role) && l.role != 'smtp'))",
     "message": "a listener offers AUTH (role submission or submissions, or auth: true): set auth.usersSecretRef"},
    {"rule": "!self.listeners.exists(l, has(l.certificate) && !has(l.certificate.dnsNames)) || has(self.hostname)",
     "message": "a listener's certificate names no dnsNames: set hostname (its default) or certificate.dnsNames"},
    {"rule": "!has(self.dnsRecords) || has(self.hostname)",
     "message": "dnsRecords point MX and the address at hostname: set hostname"},
    {"rule": "!has(self.mtaSts) || has(self.hostname) || (has(self.mtaSts.policy.mx) && size(self.mtaSts.policy.mx) > 0)",
     "message": "mtaSts lists the MX hosts: set hostname (the default) or mtaSts.policy.mx"},
    {"rule": "!has(self.adminIngress) || (has(self.adminPublicUrl) && self.adminPublicUrl.matches('^https://[^/]+/?$'))",
     "message": "adminIngress publishes adminPublicUrl: set it to https://<host> (no path: the gateways serve /confirm and /oauth/callback at the root)"}
]))]
pub struct GatewaySpec {
    /// Pods when autoscaling is off.
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// A HorizontalPodAutoscaler on CPU (needs the Redis store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// The gateway image. Unset (recommended): the operator's own image, so upgrading the
    /// operator moves its gateways along and no gateway runs an older build than the config
    /// it is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Public SMTP hostname (greeting, Received, Authentication-Results); defaults to the
    /// Gateway's name and namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// SMTP listeners, each a Service port.
    #[serde(default = "default_listeners")]
    #[schemars(length(min = 1))]
    pub listeners: Vec<GatewayListener>,
    /// Where accepted mail waits: on the pod's disk (one replica) or in Redis (any number).
    #[serde(default)]
    pub store: GatewayStore,
    /// CPU and memory for each gateway pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// DNS resolvers ("ip:port") for MX, SPF, DKIM, DMARC and blocklists; empty: the pod's own.
    #[serde(default)]
    pub dns: GatewayDns,
    /// The MailDomains (same namespace) this gateway serves, by label; empty matches all.
    #[serde(default)]
    pub domain_selector: LabelSelector,
    /// The SendingAccounts (same namespace) this gateway sends through, by label; empty
    /// matches all.
    #[serde(default)]
    pub account_selector: LabelSelector,
    /// SMTP AUTH for listeners that offer it: the users (a Secret holding an htpasswd-style
    /// file) and what failed logins cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<GatewayAuth>,
    /// Who may relay: trusted networks, relay rules (Allow, Reject, Discard), the external
    /// postmaster, automatic-forwarding control. Inbound gateways named by RoutingPolicies are
    /// added to `relay.inboundGateways`.
    #[serde(default)]
    pub relay: postern_api::RelayConfig,
    /// Checks of the envelope sender (resolvable domain, served domains only from us).
    #[serde(default)]
    pub sender_policy: postern_api::SenderPolicy,
    /// Checks of clients on smtp listeners (reverse DNS, HELO name, early talkers).
    #[serde(default)]
    pub connection_policy: postern_api::ConnectionPolicy,
    /// Rate limits per client IP, user or sender domain; with the Redis store every pod of
    /// this Gateway shares each count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<postern_api::RateLimit>,
    /// The SMTP Service: how mail reaches the pods from outside the cluster.
    #[serde(default)]
    pub service: GatewayService,
    /// A NetworkPolicy for the gateway pods: SMTP from anywhere, the admin port (quarantine
    /// API, metrics) only from the operator and `adminFrom`.
    #[serde(default)]
    pub network_policy: GatewayNetworkPolicy,
    /// Scheduling and metadata of the gateway pods.
    #[serde(default)]
    pub pod: GatewayPod,
    /// Prometheus Operator objects for the gateway pods' metrics.
    #[serde(default)]
    pub monitoring: GatewayMonitoring,
    /// Publish the DNS records mail needs as an external-dns `DNSEndpoint` (external-dns with
    /// its `crd` source must be running): MX of every served MailDomain, the hostname's
    /// address from the LoadBalancer, and SPF and DMARC when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_records: Option<DnsRecords>,
    /// MTA-STS (RFC 8461) for every served domain: the gateways serve the policy, an Ingress
    /// publishes it at `https://mta-sts.<domain>/.well-known/mta-sts.txt`, and with
    /// `dnsRecords` the `_mta-sts` TXT record goes into the DNSEndpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mta_sts: Option<GatewayMtaSts>,
    /// Where people's browsers reach the gateways' admin port (e.g. an Ingress to the
    /// `<gateway>-admin` Service forwarding `/confirm`): the base of the one-time links that
    /// confirm a Direct SendingAccount's address. Without it the confirmation mail carries only
    /// a code (`postern-gateway accounts confirm NAME CODE` through the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^/?#\s]+(/[^?#\s]*)?$"))]
    pub admin_public_url: Option<String>,
    /// The key that encrypts the OAuth sending accounts' tokens in the store (32 bytes,
    /// base64). Without it the operator generates one into `<gateway>-oauth-token-key` when
    /// the Gateway sends for an OAuth account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_token_key_secret_ref: Option<SecretKeyRef>,
    /// The key that seals the quarantine console's sessions and signs the one-click links in
    /// quarantine digests (32 bytes, base64), the same for every pod. Without it the operator
    /// generates one into `<gateway>-admin-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key_secret_ref: Option<SecretKeyRef>,
    /// An Ingress publishing `/confirm`, `/oauth/callback` and `/quarantine/link` (only these
    /// paths; with `console: true` also `/console`) of the admin Service at `adminPublicUrl`'s
    /// host, so the links in confirmation mails and digests and the OAuth providers' redirects
    /// reach the gateways. Its controller must reach the admin port: add its namespace to
    /// `networkPolicy.adminFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_ingress: Option<AdminIngress>,
}

/// The Ingress of the admin port's public pages.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminIngress {
    #[serde(flatten)]
    pub ingress: PublicIngress,
    /// Also publish the quarantine console (`/console`): reviewers sign in with their
    /// Kubernetes token; the admin API (`/api/`) stays unpublished.
    #[serde(default)]
    pub console: bool,
}

/// MTA-STS: the policy, and the Ingress that serves it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayMtaSts {
    /// The policy every served domain publishes.
    pub policy: postern_api::MtaSts,
    /// The Ingress (HTTPS, so it needs a certificate for every `mta-sts.<domain>`, e.g.
    /// through cert-manager's `cert-manager.io/cluster-issuer` annotation). Its controller must
    /// reach the admin port: add its namespace to `networkPolicy.adminFrom`.
    #[serde(default)]
    pub ingress: PublicIngress,
}

/// An Ingress of the gateways' public pages: the MTA-STS policy (named like the Gateway; TLS
/// Secret `<gateway>-mta-sts`), or the address-confirmation and OAuth-callback pages
/// (`<gateway>-admin-public`, TLS Secret likewise).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicIngress {
    /// The IngressClass; unset: the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Annotations, e.g. `cert-manager.io/cluster-issuer: letsencrypt`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How Prometheus finds the gateway pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayMonitoring {
    /// The gateways' ServiceMonitor.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSettings,
}

/// A ServiceMonitor for the admin Service's `/metrics` (applied where its CRD is installed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSettings {
    /// Apply it (where the Prometheus Operator's CRD is installed).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Labels on the ServiceMonitor: what the Prometheus's `serviceMonitorSelector` looks for
    /// (e.g. `release: prometheus`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Scrape interval, e.g. `30s`; default: the Prometheus's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub interval: Option<String>,
}

impl Default for ServiceMonitorSettings {
    fn default() -> Self {
        Self { enabled: true, labels: BTreeMap::new(), interval: None }
    }
}

/// The records of a DNSEndpoint. Every record is for a served MailDomain or the hostname.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsRecords {
    /// `MX <preference> <hostname>` for every MailDomain this Gateway serves.
    #[serde(default = "yes")]
    pub mx: bool,
    /// The MX records' preference (lower is tried first).
    #[serde(default = "ten")]
    #[schemars(range(min = 0, max = 65535))]
    pub mx_preference: i32,
    /// The hostname's A/AAAA (or CNAME) from the SMTP Service's LoadBalancer address, once it
    /// has one.
    #[serde(default = "yes")]
    pub address: bool,
    /// The SPF TXT record of every served domain, e.g. `v=spf1 mx -all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^v=spf1( .*)?$"))]
    pub spf: Option<String>,
    /// The DMARC TXT record (`_dmarc.<domain>`) of every served domain, e.g.
    /// `v=DMARC1; p=quarantine; rua=mailto:dmarc@example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^v=DMARC1;.*$"))]
    pub dmarc: Option<String>,
    /// The records' TTL in seconds.
    #[serde(default = "hour")]
    #[schemars(range(min = 60, max = 604800))]
    pub ttl: i64,
    /// Where senders send TLS reports (RFC 8460): the `rua` of `_smtp._tls.<domain>`, e.g.
    /// `mailto:tls-reports@example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(mailto:|https:)\S+$"))]
    pub tls_rpt: Option<String>,
    /// The DKIM key record (`<selector>._domainkey.<domain>`) of every Direct SendingAccount
    /// the Gateway sends for, as its gateways read the key.
    #[serde(default = "yes")]
    pub dkim: bool,
}

fn ten() -> i32 {
    10
}

fn hour() -> i64 {
    3600
}

/// A cert-manager Certificate for a listener's TLS Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerCertificate {
    /// The Issuer or ClusterIssuer that signs it.
    pub issuer_ref: IssuerRef,
    /// Names in the certificate. Default: the Gateway's hostname.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
}

/// The cert-manager issuer (as a Certificate's `issuerRef`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// The issuer's name.
    pub name: String,
    /// Issuer (in the Gateway's namespace) or ClusterIssuer.
    #[serde(default)]
    pub kind: IssuerKind,
    /// The issuer's API group (cert-manager.io; external issuers have their own).
    #[serde(default = "cert_manager_group")]
    pub group: String,
}

fn cert_manager_group() -> String {
    "cert-manager.io".into()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

/// Where and how the gateway pods are scheduled, and what they carry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPod {
    /// Extra pod labels (the operator's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Nodes the pods may run on, by label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Node and pod affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Taints the pods tolerate (e.g. nodes dedicated to mail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Unset: with more than one replica (or autoscaling), pods spread over zones and nodes
    /// (maxSkew 1, ScheduleAnyway), so one zone's outage leaves mail flowing. An empty list
    /// turns that off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// The pods' PriorityClass (mail pods evicted last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Secrets for pulling the gateway image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

/// The Service in front of the SMTP listeners (the admin port has its own ClusterIP Service,
/// `<gateway>-admin`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type == 'LoadBalancer' || (!has(self.loadBalancerClass) && !has(self.loadBalancerSourceRanges))",
     "message": "loadBalancerClass and loadBalancerSourceRanges need type LoadBalancer"}
]))]
pub struct GatewayService {
    /// ClusterIP (inside the cluster only), LoadBalancer or NodePort.
    #[serde(default, rename = "type")]
    pub kind: ServiceKind,
    /// For LoadBalancer and NodePort: Local (default) keeps the client's IP address, which
    /// SPF, blocklists, relay rules and rate limits all depend on; Cluster spreads load over
    /// nodes but shows the node's address instead (then use PROXY protocol).
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    /// Annotations for the Service (cloud load balancer settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The load balancer implementation (type LoadBalancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
    /// Client networks the load balancer admits (type LoadBalancer), e.g. a partner's relays
    /// for a submission-only Gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<String>,
}

impl Default for GatewayService {
    fn default() -> Self {
        Self {
            kind: ServiceKind::ClusterIP,
            external_traffic_policy: TrafficPolicy::Local,
            annotations: Default::default(),
            load_balancer_class: None,
            load_balancer_source_ranges: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceKind {
    #[default]
    ClusterIP,
    LoadBalancer,
    NodePort,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TrafficPolicy {
    #[default]
    Local,
    Cluster,
}

/// The gateway pods' NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayNetworkPolicy {
    /// Apply it (the cluster's network plugin must enforce NetworkPolicies).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Who else may reach the admin port, e.g. Prometheus's namespace:
    /// `{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_from: Vec<NetworkPolicyPeer>,
}

impl Default for GatewayNetworkPolicy {
    fn default() -> Self {
        Self { enabled: true, admin_from: Vec::new() }
    }
}

/// SMTP AUTH's users and failed-login handling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAuth {
    /// The Secret key holding the users file: `name:hash[:addresses,@domains]` lines
    /// (argon2id, bcrypt, SHA-crypt). Mounted into the pods and re-read when it changes.
    pub users_secret_ref: SecretKeyRef,
    /// Authenticated users may send only as their own addresses (MAIL FROM and From).
    #[serde(default = "yes")]
    pub restrict_senders: bool,
    /// Delays and lockouts after failed logins (counted across pods with the Redis store).
    #[serde(default)]
    pub failed_logins: postern_api::FailedLogins,
}

fn yes() -> bool {
    true
}

fn one() -> i32 {
    1
}

fn default_listeners() -> Vec<GatewayListener> {
    vec![GatewayListener {
        name: "smtp".into(),
        port: 25,
        proxy_protocol: false,
        trusted_proxies: Vec::new(),
        tls_secret_name: None,
        certificate: None,
        role: postern_api::ListenerRole::Smtp,
        auth: None,
    }]
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// Fewest pods.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of requests) the autoscaler aims for.
    #[serde(default = "default_cpu_target", rename = "targetCPUUtilizationPercentage")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_cpu_target() -> i32 {
    70
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.role) || self.role == 'smtp' || has(self.tlsSecretName)",
     "message": "roles submission and submissions need tlsSecretName"},
    {"rule": "!has(self.auth) || !self.auth || has(self.tlsSecretName)",
     "message": "AUTH is offered only under TLS: set tlsSecretName"},
    {"rule": "!has(self.proxyProtocol) || !self.proxyProtocol || (has(self.trustedProxies) && size(self.trustedProxies) > 0)",
     "message": "proxyProtocol needs trustedProxies: the load balancers' networks (0.0.0.0/0 trusts every peer)"},
    {"rule": "!has(self.trustedProxies) || (has(self.proxyProtocol) && self.proxyProtocol)",
     "message": "trustedProxies is set only with proxyProtocol: true"},
    {"rule": "!has(self.certificate) || has(self.tlsSecretName)",
     "message": "certificate needs tlsSecretName: the Secret cert-manager writes"}
]))]
pub struct GatewayListener {
    /// A DNS label, also the Service port's name.
    #[schemars(regex(pattern = r"^[a-z]([-a-z0-9]{0,13}[a-z0-9])?$"))]
    pub name: String,
    /// The Service port. Inside the pod the gateway listens on the same port when it is 1024
    /// or above, and on 10000 + port below that (25 -> 10025, 587 -> 10587, 465 -> 10465): the
    /// pods run as a non-root user, which many runtimes do not let bind privileged ports.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Expect a PROXY protocol header (behind a load balancer that sends one).
    #[serde(default)]
    pub proxy_protocol: bool,
    /// With proxyProtocol: the load balancers' networks (CIDRs). Connections from anywhere else
    /// are refused, since a PROXY header may claim any client address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A kubernetes.io/tls Secret offering STARTTLS on this listener (implicit TLS for
    /// `submissions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Have cert-manager issue (and renew) `tlsSecretName`: the operator creates a Certificate
    /// `<gateway>-<listener>` for it. The gateway re-reads the renewed files by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<ListenerCertificate>,
    /// smtp (MX traffic, port 25), submission (587: STARTTLS, then AUTH) or submissions (465:
    /// implicit TLS, then AUTH).
    #[serde(default)]
    pub role: postern_api::ListenerRole,
    /// Offer SMTP AUTH (only after TLS). Default: on for the submission roles, off for smtp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<bool>,
}

impl GatewayListener {
    /// The port the gateway binds inside the pod (see `port`).
    pub fn container_port(&self) -> i32 {
        if self.port < 1024 { 10_000 + self.port } else { self.port }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StoreType {
    /// redb on a PersistentVolumeClaim (a StatefulSet of one pod): one replica.
    #[default]
    Embedded,
    /// Redis shared by every replica.
    Redis,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStore {
    /// Embedded (one replica) or Redis (any number).
    #[serde(default, rename = "type")]
    pub kind: StoreType,
    /// The Redis server or cluster (with `type: Redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// The embedded store's volume (with `type: Embedded`): a PersistentVolumeClaim that
    /// outlives the pod, so accepted mail survives restarts, rollouts and node drains.
    #[serde(default)]
    pub embedded: EmbeddedSpec,
}

/// The PersistentVolumeClaim of an embedded store. Fixed once created (a StatefulSet's claim
/// template cannot change): to grow it, resize the claim itself where the StorageClass allows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self == oldSelf",
     "message": "store.embedded cannot change once created: resize the PersistentVolumeClaim itself"}
]))]
pub struct EmbeddedSpec {
    /// The volume's size.
    #[serde(default = "default_store_size")]
    pub size: Quantity,
    /// The StorageClass; unset: the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for EmbeddedSpec {
    fn default() -> Self {
        Self { size: default_store_size(), storage_class_name: None }
    }
}

fn default_store_size() -> Quantity {
    Quantity("1Gi".into())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// redis:// or rediss:// (TLS); with `cluster`, a seed node.
    #[schemars(regex(pattern = r"^rediss?://"))]
    pub url: String,
    /// Redis Cluster (keys are hash-tagged so every script runs on one slot).
    #[serde(default)]
    pub cluster: bool,
    /// ACL user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The ACL password, mounted from this Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Answer 250 only once this many replicas have the write (Redis WAIT).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub wait_replicas: u32,
    /// Spread the queue and quarantine over this many partitions (hash tags), so a Redis
    /// Cluster carries them on several primaries; best a multiple of the primaries. Only
    /// grows: lowering it keeps the most the fleet has had (nothing queued is stranded).
    #[serde(default = "one_partition")]
    #[schemars(range(min = 1, max = 256))]
    pub partitions: u16,
    /// Prefix of every key (default `postern`). Gateways whose pods use one Redis need
    /// different prefixes, or they share one queue and deliver each other's mail with their
    /// own routing (condition `StoreExclusive`). Changing it leaves what the old prefix holds
    /// behind: drain first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[^{}]+$"))]
    pub key_prefix: Option<String>,
}

fn one_partition() -> u16 {
    1
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayDns {
    /// Resolvers as "ip:port", e.g. "10.96.0.10:53".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        Self {
            replicas: one(),
            autoscaling: None,
            image: None,
            hostname: None,
            listeners: default_listeners(),
            store: GatewayStore::default(),
            resources: None,
            dns: GatewayDns::default(),
            domain_selector: LabelSelector::default(),
            account_selector: LabelSelector::default(),
            auth: None,
            relay: postern_api::RelayConfig::default(),
            sender_policy: postern_api::SenderPolicy::default(),
            connection_policy: postern_api::ConnectionPolicy::default(),
            rate_limits: Vec::new(),
            service: GatewayService::default(),
            network_policy: GatewayNetworkPolicy::default(),
            pod: GatewayPod::default(),
            monitoring: GatewayMonitoring::default(),
            dns_records: None,
            mta_sts: None,
            admin_public_url: None,
            oauth_token_key_secret_ref: None,
            admin_key_secret_ref: None,
            admin_ingress: None,
        }
    }
}
