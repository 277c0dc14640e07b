//! `GatewayConfig`: the one YAML file a gateway pod runs from. The operator renders this same
//! format into a ConfigMap; a person writes it by hand for the single-node quickstart.
//!
//! Every field has a default where a sane one exists, so a small file is a whole config.

use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// The whole configuration of one gateway process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayConfig {
    /// The name this gateway gives itself in its greeting, EHLO and Received headers.
    pub hostname: String,
    /// SMTP listeners. At least one.
    pub listeners: Vec<Listener>,
    /// The admin HTTP endpoint: /healthz, /readyz, /metrics and the admin API.
    #[serde(default)]
    pub admin: Admin,
    /// Where accepted messages are kept until delivered.
    #[serde(default)]
    pub store: StoreConfig,
    /// Limits applied to every inbound SMTP session.
    #[serde(default)]
    pub limits: Limits,
    /// Who may relay to domains this gateway does not serve, relay rules (allow, reject,
    /// discard), the external postmaster, automatic-forwarding control.
    #[serde(default)]
    pub relay: crate::relay::RelayConfig,
    /// Checks of the envelope sender: its domain must exist, outside clients may not use a
    /// served domain.
    #[serde(default)]
    pub sender_policy: crate::relay::SenderPolicy,
    /// Checks of the connecting client on `smtp` listeners: reverse DNS, HELO name, early talkers.
    #[serde(default)]
    pub connection_policy: crate::relay::ConnectionPolicy,
    /// SMTP AUTH: the users, what they may send as, failed-login handling.
    #[serde(default)]
    pub auth: crate::submission::AuthConfig,
    /// Rate limits per client IP, authenticated user or sender domain; shared by every pod with
    /// the Redis store, per process with the embedded store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<crate::submission::RateLimit>,
    /// Where mail to the bare `postmaster` (no domain; RFC 5321 4.5.1 requires it) goes, e.g.
    /// "hostmaster@example.com". Default: postmaster@ the first served domain. Mail to
    /// `postmaster@<served domain>` is always accepted and goes to that domain's primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmaster: Option<String>,
    /// The domains this gateway accepts mail for from anyone and passes on to their mailbox
    /// server (`primary`): the relay domains of other products.
    #[serde(default)]
    pub domains: Vec<MailDomainConfig>,
    /// Sending accounts: mail from trusted networks or authenticated users whose envelope
    /// sender matches an account's `from` leaves through that account (see `accounts.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<crate::accounts::SendingAccount>,
    /// What OAuth sending accounts (Microsoft365, Gmail) need beyond their own blocks.
    #[serde(default, skip_serializing_if = "OAuthSettings::is_default")]
    pub oauth: OAuthSettings,
    /// The MTA-STS policy of the served domains (RFC 8461), served on the admin port at
    /// `/.well-known/mta-sts.txt` to requests for `mta-sts.<served domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mta_sts: Option<crate::MtaSts>,
    /// Outbound delivery: DNS, retries, concurrency, TLS.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Spam policies by name; a served domain names its policy in `spamPolicy`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub spam_policies: std::collections::BTreeMap<String, crate::spam::SpamPolicyConfig>,
    /// Log format and level.
    #[serde(default)]
    pub logging: Logging,
}

/// One SMTP listening socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Listener {
    /// A short name used in logs and metrics, e.g. "smtp" or "submission".
    #[serde(default = "default_listener_name")]
    pub name: String,
    /// Address and port to bind, e.g. "0.0.0.0:25" or "[::]:25".
    pub address: SocketAddr,
    /// Expect a PROXY protocol (v1 or v2) header before SMTP, as sent by a load balancer.
    /// A connection without one is refused; a PROXY header on a listener without this is refused.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// With `proxyProtocol`: the load balancers' networks (required). A connection from
    /// anywhere else is refused before its header is read: a PROXY header names the client, so
    /// whoever may send one may claim any address (and the trust and limits that go with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Certificate and key for STARTTLS (or, for `submissions`, implicit TLS). Without it
    /// STARTTLS is not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// smtp (MX traffic, port 25), submission (587: STARTTLS and AUTH required) or
    /// submissions (465: implicit TLS, AUTH required).
    #[serde(default)]
    pub role: crate::submission::ListenerRole,
    /// Offer SMTP AUTH (only after TLS). Default: on for the submission roles, off for smtp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<bool>,
}

impl Listener {
    /// A plain `smtp` listener on `address`, named `name`: no PROXY protocol, no TLS, no AUTH.
    pub fn new(name: &str, address: SocketAddr) -> Self {
        Self {
            name: name.to_string(),
            address,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            tls: None,
            role: crate::submission::ListenerRole::Smtp,
            auth: None,
        }
    }

    /// Whether this listener offers AUTH (after TLS).
    pub fn offers_auth(&self) -> bool {
        self.auth.unwrap_or(self.role.is_submission())
    }
}

fn default_listener_name() -> String {
    "smtp".into()
}

/// PEM files for a listener's STARTTLS. They are re-read when they change on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The admin HTTP endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Admin {
    /// Address and port of the admin HTTP server.
    #[serde(default = "default_admin_address")]
    pub address: SocketAddr,
    /// A file of bearer tokens (one per line, `#` comments): with it, every `/api/` request
    /// (the quarantine, the queue, verifications) needs `Authorization: Bearer <token>`;
    /// `/healthz`, `/readyz` and `/metrics` stay open. Re-read when it changes. Without it the
    /// API answers anyone who reaches the address (keep it on loopback, or behind a
    /// NetworkPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
    /// Host names the admin API answers to, besides IP addresses and `localhost`: a request
    /// to `/api/` naming any other Host is refused (DNS rebinding: a web page's own name
    /// resolving to this address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Kubernetes authentication and authorisation: a bearer token that is not one of
    /// `tokenFile`'s is checked by the API server (TokenReview), and each request is then
    /// authorised by a SubjectAccessReview for a verb on a resource of the `mail.postern.dev`
    /// group in `namespace` (`quarantine`: list, get, release, delete; `queue`: get;
    /// `verifications`: list, update). The operator sets it for every Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesAuth>,
    /// Where people reach this admin port from their browser (`https://postern.example.com`,
    /// e.g. through an Ingress): the base of the one-time links in the confirmation mails of
    /// Direct accounts for single addresses (`<publicUrl>/confirm?...`). Without it those
    /// mails carry only a code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// A file holding 32 random bytes as base64 (`openssl rand -base64 32`), the same on every
    /// pod: it seals the quarantine console's sessions and signs the release/delete links in
    /// quarantine digests. Without it each process makes up its own key: console sessions
    /// then last until a restart and hold on one pod only, and digests carry no links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            address: default_admin_address(),
            token_file: None,
            hosts: Vec::new(),
            kubernetes: None,
            public_url: None,
            key_file: None,
        }
    }
}

/// How the admin API asks Kubernetes who a caller is and what they may do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesAuth {
    /// The namespace whose RBAC decides (a Role there grants verbs on `quarantine`).
    pub namespace: String,
    /// The API server's URL. Default: the in-cluster one (`https://$KUBERNETES_SERVICE_HOST:
    /// $KUBERNETES_SERVICE_PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// The gateway's own token for the API server (needs create on `tokenreviews` and
    /// `subjectaccessreviews`, e.g. the `system:auth-delegator` ClusterRole). Re-read on every
    /// review, so a rotated projected token is picked up.
    #[serde(default = "default_kube_token_file")]
    pub token_file: PathBuf,
    /// The CA bundle (PEM) that signed the API server's certificate.
    #[serde(default = "default_kube_ca_file")]
    pub ca_file: PathBuf,
}

pub const KUBE_SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn default_kube_token_file() -> PathBuf {
    PathBuf::from(KUBE_SERVICE_ACCOUNT_DIR).join("token")
}

fn default_kube_ca_file() -> PathBuf {
    PathBuf::from(KUBE_SERVICE_ACCOUNT_DIR).join("ca.crt")
}

fn default_admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8025))
}

/// The message store. Set one backend; with none, the embedded store is used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreConfig {
    /// An on-disk store inside this process: one node, no external service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedStoreConfig>,
    /// Redis, shared by every gateway pod: any pod may die without losing mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStoreConfig>,
}

/// The Redis store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedisStoreConfig {
    /// `redis://host:port/db` or `rediss://...` (TLS). With `cluster: true`, one or more
    /// nodes of a Redis Cluster (comma-separated or as `urls`).
    pub url: String,
    /// More seed nodes of a Redis Cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Talk to a Redis Cluster instead of a single server.
    #[serde(default)]
    pub cluster: bool,
    /// ACL user name (Redis 6+). Overrides one in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the password (a mounted Secret; trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// After each accepted message, wait until this many replicas have the write (Redis WAIT)
    /// before answering 250. 0: the primary's acknowledgement is enough.
    #[serde(default)]
    pub wait_replicas: u32,
    /// How long to wait for those replicas; if they do not confirm in time the client gets 451.
    #[serde(default = "default_wait_timeout")]
    pub wait_timeout: HumanDuration,
    /// Prefix of every key (several gateways fleets can share one Redis).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Spread the queue and quarantine over this many partitions (hash tags), so a Redis
    /// Cluster carries them on several primaries: one primary carries about 15 000 msgs/s.
    /// Best a multiple of the cluster's primaries. Only grows: a fleet keeps the most it has
    /// had, so nothing queued is stranded. Pointless on a single server.
    #[serde(default = "one_partition")]
    pub partitions: u16,
}

impl RedisStoreConfig {
    /// One Redis server at `url` (no cluster, no ACL user or password file, no WAIT), with the
    /// file format's defaults.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            urls: Vec::new(),
            cluster: false,
            username: None,
            password_file: None,
            wait_replicas: 0,
            wait_timeout: default_wait_timeout(),
            key_prefix: default_key_prefix(),
            partitions: one_partition(),
        }
    }
}

fn default_wait_timeout() -> HumanDuration {
    HumanDuration::from_secs(2)
}

fn one_partition() -> u16 {
    1
}

/// The key prefix of a Redis store that names none.
pub const DEFAULT_KEY_PREFIX: &str = "postern";

fn default_key_prefix() -> String {
    DEFAULT_KEY_PREFIX.into()
}

/// The backend a `StoreConfig` selects.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreBackend<'a> {
    Embedded(std::borrow::Cow<'a, EmbeddedStoreConfig>),
    Redis(&'a RedisStoreConfig),
}

impl StoreConfig {
    /// The selected backend (validation ensures at most one is set).
    pub fn backend(&self) -> StoreBackend<'_> {
        match (&self.redis, &self.embedded) {
            (Some(r), _) => StoreBackend::Redis(r),
            (None, Some(e)) => StoreBackend::Embedded(std::borrow::Cow::Borrowed(e)),
            (None, None) => StoreBackend::Embedded(std::borrow::Cow::Owned(EmbeddedStoreConfig::default())),
        }
    }
}

/// The embedded on-disk store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmbeddedStoreConfig {
    /// Directory that holds the queue database. Created if missing.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Memory for the database's page cache, in bytes (default 64 MiB). The cache keeps pages
    /// the gateway wrote, so without a bound a deep queue (a destination down) would fill
    /// memory with message bodies: redb's own default is 1 GiB.
    #[serde(default = "default_store_cache_bytes")]
    pub cache_bytes: u64,
}

impl Default for EmbeddedStoreConfig {
    fn default() -> Self {
        Self { path: default_store_path(), cache_bytes: default_store_cache_bytes() }
    }
}

fn default_store_cache_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_store_path() -> PathBuf {
    PathBuf::from("var/postern")
}

/// Limits for inbound SMTP sessions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Limits {
    /// Largest message accepted, in bytes (advertised with SIZE, enforced at MAIL and in DATA).
    pub max_message_size: u64,
    /// Most recipients in one transaction; more get 452 4.5.3.
    pub max_recipients: u32,
    /// How long the gateway waits for a command.
    pub command_timeout: HumanDuration,
    /// How long the gateway waits for the next block of message data.
    pub data_timeout: HumanDuration,
    /// Errors a client may make in one session before it is disconnected with 421.
    pub max_errors: u32,
    /// Open SMTP connections in total; one more gets 421 4.7.0.
    pub max_connections: u32,
    /// Open SMTP connections from one client IP; one more gets 421 4.7.0.
    pub max_connections_per_ip: u32,
    /// Transactions (messages) in one session.
    pub max_messages_per_session: u32,
    /// Of `maxConnections`, how many only clients in `relay.trustedNetworks` may take, so a
    /// flood from untrusted addresses cannot lock out the networks that send outbound mail.
    pub reserved_trusted_connections: u32,
    /// Commands that move no mail (RSET, NOOP, VRFY, HELP) a session may send since its last
    /// accepted message; one more gets 421 4.7.0 and the connection is closed.
    pub max_junk_commands: u32,
    /// Time budget for the spam checks at RCPT (SPF, DNSBL, RHSBL lookups together). Past it the
    /// recipient gets 451 4.4.3 (try again later) instead of waiting on a slow DNS server.
    pub envelope_check_timeout: HumanDuration,
    /// Time budget for the spam checks at the end of DATA (DKIM, DMARC and content rules). Past
    /// it the message gets 451 4.4.3.
    pub content_check_timeout: HumanDuration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            command_timeout: HumanDuration::from_secs(300),
            data_timeout: HumanDuration::from_secs(180),
            max_errors: 10,
            max_connections: 1000,
            max_connections_per_ip: 50,
            max_messages_per_session: 1000,
            reserved_trusted_connections: 50,
            max_junk_commands: 100,
            envelope_check_timeout: HumanDuration::from_secs(5),
            content_check_timeout: HumanDuration::from_secs(30),
        }
    }
}

/// A domain the gateway accepts mail for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MailDomainConfig {
    /// The domain name, e.g. "example.com".
    pub name: String,
    /// Where mail for this domain goes: its mailbox servers.
    pub primary: Destination,
    /// Known accounts: local parts ("alice") or whole addresses ("alice@example.com"), each
    /// with optional aliases. An empty directory with recipient verification off accepts every
    /// address (the mailbox server decides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<Account>,
    /// Group addresses and their members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
    /// Ask the primary server whether an address exists (an RCPT probe, cached), for
    /// directories too large to list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_verification: Option<RecipientVerification>,
    /// How mail for this domain is split between the primary and another destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingPolicyConfig>,
    /// The name of the spam policy (in `spamPolicies`) for mail to this domain. None: no checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam_policy: Option<String>,
}

impl MailDomainConfig {
    /// A domain delivered to `primary`: no directory (every address is taken, the mailbox
    /// server decides), no routing policy, no spam policy.
    pub fn new(name: &str, primary: Destination) -> Self {
        Self {
            name: name.to_string(),
            primary,
            accounts: Vec::new(),
            groups: Vec::new(),
            recipient_verification: None,
            routing: None,
            spam_policy: None,
        }
    }
}

/// An account: its address and the other addresses that reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Account {
    /// Local part or whole address.
    pub address: String,
    /// More local parts or addresses delivered to this account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A group address (a distribution list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Group {
    /// Local part or whole address of the group.
    pub address: String,
    /// Members: local parts (this domain) or whole addresses (any domain, other groups too).
    #[serde(default)]
    pub members: Vec<String>,
    /// Who moderates the group (receives its quarantine digests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderator: Option<String>,
}

/// RCPT probes to the primary server for addresses not listed in `accounts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RecipientVerification {
    /// How long an answer (exists / does not exist) is remembered.
    #[serde(default = "default_verification_ttl")]
    pub cache_ttl: HumanDuration,
}

fn default_verification_ttl() -> HumanDuration {
    HumanDuration::from_secs(600)
}

/// How a domain's recipients are routed between its primary and another destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoutingPolicyConfig {
    /// Split, Dual or RouteAll. (No policy, or a disabled one, is Direct.)
    pub mode: RoutingMode,
    /// The other server: a domain whose MX is used, or explicit hosts.
    pub destination: Destination,
    /// Off: the domain behaves as Direct.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// When the destination is a domain, send `user@served` as `user@destination` in RCPT TO
    /// (headers untouched).
    #[serde(default)]
    pub rewrite_envelope: bool,
    /// A forwarded delivery that fails permanently or expires sends a DSN to the sender; when
    /// off it is dropped (logged and counted).
    #[serde(default = "yes")]
    pub bounce_on_failure: bool,
    /// Before the policy goes live, a verification message is sent to this address through the
    /// destination; the policy is live once the destination accepted it. Unset: live at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_address: Option<String>,
    /// Expand group addresses to their members, each routed on its own.
    #[serde(default)]
    pub expand_groups: bool,
}

fn yes() -> bool {
    true
}

/// Routing modes. For each recipient of the domain:
/// Direct: known -> primary, unknown -> 550. Split: known -> primary, unknown -> destination.
/// Dual: known -> primary and destination, unknown -> 550. RouteAll: known -> destination and
/// primary, unknown -> destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RoutingMode {
    Direct,
    Split,
    Dual,
    RouteAll,
}

/// A next hop: "the MX of a domain" or an explicit host list, with its TLS policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Destination {
    /// Deliver to the MX hosts of this domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx: Option<String>,
    /// Deliver to these hosts, tried in order: "host", "host:port", "[ip]:port".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// TLS towards this destination.
    #[serde(default)]
    pub tls: TlsPolicy,
}

impl Destination {
    /// These hosts ("host", "host:port", "[ip]:port"), tried in order, with `tls`.
    pub fn hosts(hosts: &[&str], tls: TlsPolicy) -> Self {
        Self { mx: None, hosts: hosts.iter().map(|h| h.to_string()).collect(), tls }
    }
}

/// TLS towards a next hop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsPolicy {
    /// none: never STARTTLS; opportunistic: STARTTLS when offered; required: fail (and retry)
    /// when the peer does not offer STARTTLS; implicit: TLS from the first byte (SMTPS, port
    /// 465), before the greeting.
    #[serde(default)]
    pub mode: TlsMode,
    /// Verify the peer's certificate and name (against the system roots or `caFile`).
    #[serde(default)]
    pub verify: bool,
}

impl TlsPolicy {
    /// Never STARTTLS (a peer known to speak plain SMTP only).
    pub const NONE: Self = Self { mode: TlsMode::None, verify: false };
}

/// When to use STARTTLS towards a next hop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TlsMode {
    None,
    #[default]
    Opportunistic,
    Required,
    Implicit,
}

/// Outbound delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DeliveryConfig {
    /// DNS servers used for MX and address lookups, as "ip:port". Empty: the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Port used for hosts found through MX (25 on the Internet; tests use their own).
    pub mx_port: u16,
    /// First retry delay after a temporary failure; doubles each attempt.
    pub retry_initial: HumanDuration,
    /// Longest delay between two attempts.
    pub retry_max: HumanDuration,
    /// How long a message is retried before it is bounced.
    pub lifetime: HumanDuration,
    /// Delivery attempts running at once, in total.
    pub concurrency: u32,
    /// Delivery attempts running at once towards one destination.
    pub concurrency_per_destination: u32,
    /// TCP connect timeout.
    pub connect_timeout: HumanDuration,
    /// Timeout for each reply of a remote server.
    pub command_timeout: HumanDuration,
    /// How long an idle outbound connection is kept for reuse.
    pub idle_timeout: HumanDuration,
    /// TLS policy for mail delivered through MX lookup of the recipient's domain.
    pub tls: TlsPolicy,
    /// Extra PEM CA certificates trusted when verifying peers (besides the system roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long a delivery worker may hold a job before another worker may take it again.
    pub lease_timeout: HumanDuration,
    /// A smarthost through which all mail for domains this gateway does not serve leaves,
    /// instead of MX delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_gateway: Option<OutboundGateway>,
}

/// A smarthost.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundGateway {
    /// "host:port" (or "host", port 25).
    pub host: String,
    /// TLS towards the smarthost.
    #[serde(default)]
    pub tls: TlsPolicy,
    /// SMTP AUTH credentials (sent only over TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SmtpAuth>,
}

/// SMTP AUTH credentials; the password is read from a file (a mounted Secret).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SmtpAuth {
    pub username: String,
    /// File holding the password (trailing newline ignored).
    pub password_file: PathBuf,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            mx_port: 25,
            retry_initial: HumanDuration::from_secs(60),
            retry_max: HumanDuration::from_secs(3600),
            lifetime: HumanDuration::from_secs(5 * 86400),
            concurrency: 200,
            concurrency_per_destination: 20,
            connect_timeout: HumanDuration::from_secs(30),
            command_timeout: HumanDuration::from_secs(300),
            idle_timeout: HumanDuration::from_secs(30),
            tls: TlsPolicy::default(),
            ca_file: None,
            lease_timeout: HumanDuration::from_secs(900),
            outbound_gateway: None,
        }
    }
}

/// Logging.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Logging {
    /// text or json (one JSON object a line).
    pub format: LogFormat,
    /// A tracing filter, e.g. "info" or "info,postern_gateway::smtp=debug". RUST_LOG overrides it.
    pub level: String,
}

impl Default for Logging {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings shared by the OAuth sending accounts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OAuthSettings {
    /// File holding the key that encrypts the accounts' tokens in the store (AES-256-GCM): 32
    /// bytes, base64 (`openssl rand -base64 32`; a mounted Secret). Every gateway sharing the
    /// store needs the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_key_file: Option<std::path::PathBuf>,
}

impl OAuthSettings {
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}
