//! Rendering: a Gateway plus the MailDomains it selects and the policies they reference become
//! one `GatewayConfig` (what the gateway pods read from their ConfigMap). Pure: no API calls,
//! so the controller, `render -f` and the tests share it.
//!
//! A MailDomain with a broken reference is left out of the config (serving it without its
//! policy would route or filter its mail wrongly) and reported as a `Problem`, which becomes
//! its `Ready=False` condition; the other domains are served as usual.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use postern_api::config::{Group, MailDomainConfig};
use postern_api::{GatewayConfig, validate};
use serde_json::{Value, json};

use crate::crd::gateway::StoreType;
use crate::crd::{Gateway, MailDomain, secret_path};
use crate::manifests::Objects;

/// The Redis queue a Gateway's pods share: (URL, key prefix); `None` on the embedded store.
pub fn redis_queue(gw: &Gateway) -> Option<(&str, &str)> {
    match (gw.spec.store.kind, &gw.spec.store.redis) {
        (StoreType::Redis, Some(r)) => Some((
            r.url.trim_end_matches('/'),
            r.key_prefix.as_deref().unwrap_or(postern_api::config::DEFAULT_KEY_PREFIX),
        )),
        _ => None,
    }
}

/// The other Gateways (by name) whose pods would share `gw`'s Redis queue: the same URL and
/// key prefix. (Two seeds of one Redis Cluster under different URLs are not recognised.)
pub fn sharing_queue_with(gw: &Gateway, others: &[Gateway]) -> Vec<String> {
    let Some(mine) = redis_queue(gw) else { return Vec::new() };
    let name = gw.name_any();
    others
        .iter()
        .filter(|o| o.name_any() != name && redis_queue(o).as_ref() == Some(&mine))
        .map(|o| o.name_any())
        .collect()
}

/// The admin port of every gateway pod (health, metrics, admin API).
pub const ADMIN_PORT: u16 = 8025;
/// Where the embedded store lives in the pod (an emptyDir volume).
pub const STORE_PATH: &str = "/var/lib/postern";
/// Where gateway pods find their projected service-account token and the cluster's CA, for
/// the admin API's TokenReview and SubjectAccessReview calls.
pub const KUBE_API_DIR: &str = "/var/run/secrets/postern/kubernetes";

/// Something that keeps an object from being served as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// "MailDomain", "Gateway", ...
    pub kind: &'static str,
    pub name: String,
    /// CamelCase, for the condition's `reason`.
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug)]
pub struct Rendered {
    /// `None` when the config itself is invalid (then `config_errors` says why).
    pub config: Option<GatewayConfig>,
    pub config_errors: Vec<String>,
    pub problems: Vec<Problem>,
    /// The MailDomains (names) that made it into the config.
    pub served: Vec<String>,
    /// The Secrets the pods must mount (never copied into the config).
    pub secrets: BTreeSet<String>,
    /// The DKIM keys the operator generates into Secrets (Direct accounts that name none).
    pub generated_keys: Vec<crate::generated_secrets::GeneratedKey>,
}

impl Rendered {
    pub fn yaml(&self) -> Option<String> {
        self.config.as_ref().map(|c| serde_yaml::to_string(c).expect("config serializes"))
    }
}

/// Whether `labels` match `selector` (matchLabels and matchExpressions; empty matches all).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

pub fn render(gw: &Gateway, objs: &Objects) -> Rendered {
    let ns = gw.namespace().unwrap_or_default();
    let mut problems = Vec::new();
    let mut secrets = BTreeSet::new();
    let spec = &gw.spec;

    let mut domains: Vec<&MailDomain> = objs
        .domains
        .iter()
        .filter(|d| {
            d.namespace().as_deref() == Some(ns.as_str()) && selects(&spec.domain_selector, d.labels())
        })
        .collect();
    domains.sort_by_key(|d| d.name_any());

    let mut inbound: BTreeSet<String> = BTreeSet::new();
    let mut outbound: Option<(String, Value)> = None;
    let mut spam_policies = std::collections::BTreeMap::new();
    let mut rendered_domains = Vec::new();
    let mut served = Vec::new();
    for d in domains {
        let name = d.name_any();
        let problem =
            |reason, message: String| Problem { kind: "MailDomain", name: name.clone(), reason, message };
        let mut domain = MailDomainConfig {
            name: d.spec.domain.clone(),
            primary: d.spec.primary.clone(),
            accounts: d.spec.accounts.clone(),
            groups: Vec::new(),
            recipient_verification: d.spec.recipient_verification.clone(),
            routing: None,
            spam_policy: None,
        };
        let mut groups: Vec<Group> = d.spec.groups.clone();
        if let Some(r) = &d.spec.groups_from {
            let cm = objs
                .config_maps
                .iter()
                .find(|c| c.namespace().as_deref() == Some(&ns) && c.name_any() == r.name);
            let data = cm.and_then(|c| c.data.as_ref()).and_then(|data| data.get(&r.key));
            match data.map(|t| serde_yaml::from_str::<Vec<Group>>(t)) {
                Some(Ok(more)) => groups.extend(more),
                Some(Err(e)) => {
                    problems
                        .push(problem("GroupsInvalid", format!("ConfigMap {} key {}: {e}", r.name, r.key)));
                    continue;
                }
                None => {
                    problems.push(problem(
                        "GroupsNotFound",
                        format!("ConfigMap {} has no key {}", r.name, r.key),
                    ));
                    continue;
                }
            }
        }
        domain.groups = groups;
        if let Some(rp_name) = &d.spec.routing_policy_ref {
            let Some(rp) = objs
                .routing_policies
                .iter()
                .find(|p| p.namespace().as_deref() == Some(&ns) && &p.name_any() == rp_name)
            else {
                problems.push(problem(
                    "RoutingPolicyNotFound",
                    format!("RoutingPolicy {rp_name} does not exist in {ns}"),
                ));
                continue;
            };
            domain.routing = Some(rp.spec.routing.clone());
            inbound.extend(rp.spec.inbound_gateways.iter().cloned());
            if let Some(og) = &rp.spec.outbound_gateway {
                let mut value = json!({"host": og.host, "tls": og.tls});
                if let Some(auth) = &og.auth {
                    secrets.insert(auth.password_secret_ref.name.clone());
                    value["auth"] = json!({"username": auth.username, "passwordFile": secret_path(&auth.password_secret_ref)});
                }
                match &outbound {
                    Some((owner, existing)) if *existing != value => {
                        problems.push(Problem {
                            kind: "RoutingPolicy",
                            name: rp_name.clone(),
                            reason: "OutboundGatewayConflict",
                            message: format!("Gateway {} already sends through the outbound gateway of RoutingPolicy {owner}", gw.name_any()),
                        });
                    }
                    Some(_) => {}
                    None => outbound = Some((rp_name.clone(), value)),
                }
            }
        }
        if let Some(sp_name) = &d.spec.spam_policy_ref {
            let Some(sp) = objs
                .spam_policies
                .iter()
                .find(|p| p.namespace().as_deref() == Some(&ns) && &p.name_any() == sp_name)
            else {
                problems.push(problem(
                    "SpamPolicyNotFound",
                    format!("SpamPolicy {sp_name} does not exist in {ns}"),
                ));
                continue;
            };
            spam_policies.insert(sp_name.clone(), sp.spec.policy.clone());
            domain.spam_policy = Some(sp_name.clone());
        }
        rendered_domains.push(domain);
        served.push(name);
    }

    let listeners: Vec<Value> = spec
        .listeners
        .iter()
        .map(|l| {
            let mut v = json!({
                "name": l.name,
                "address": format!("0.0.0.0:{}", l.container_port()),
                "proxyProtocol": l.proxy_protocol,
                "trustedProxies": l.trusted_proxies,
                "role": l.role,
            });
            if let Some(auth) = l.auth {
                v["auth"] = json!(auth);
            }
            if let Some(secret) = &l.tls_secret_name {
                secrets.insert(secret.clone());
                v["tls"] = json!({
                    "certFile": format!("/etc/postern/tls/{secret}/tls.crt"),
                    "keyFile": format!("/etc/postern/tls/{secret}/tls.key"),
                });
            }
            v
        })
        .collect();
    let store = match (spec.store.kind, &spec.store.redis) {
        (StoreType::Redis, Some(r)) => {
            let mut redis = json!({"url": r.url, "cluster": r.cluster, "waitReplicas": r.wait_replicas, "partitions": r.partitions});
            if let Some(u) = &r.username {
                redis["username"] = json!(u);
            }
            if let Some(prefix) = &r.key_prefix {
                redis["keyPrefix"] = json!(prefix);
            }
            if let Some(p) = &r.password_secret_ref {
                secrets.insert(p.name.clone());
                redis["passwordFile"] = json!(secret_path(p));
            }
            json!({"redis": redis})
        }
        _ => json!({"embedded": {"path": STORE_PATH}}),
    };
    let hostname = spec.hostname.clone().unwrap_or_else(|| format!("{}.{ns}.postern.local", gw.name_any()));
    let mut delivery = json!({"nameservers": spec.dns.nameservers});
    if let Some((_, og)) = outbound {
        delivery["outboundGateway"] = og;
    }
    let mut relay = serde_json::to_value(&spec.relay).expect("relay config serializes");
    inbound.extend(spec.relay.inbound_gateways.iter().map(ToString::to_string));
    relay["inboundGateways"] = json!(inbound);
    let auth = match &spec.auth {
        Some(a) => {
            secrets.insert(a.users_secret_ref.name.clone());
            json!({
                "usersFile": secret_path(&a.users_secret_ref),
                "restrictSenders": a.restrict_senders,
                "failedLogins": a.failed_logins,
            })
        }
        None => json!({}),
    };
    let mut generated_keys = Vec::new();
    let accounts = render_accounts(gw, objs, &mut secrets, &mut generated_keys, &mut problems);
    // The OAuth accounts' tokens are sealed with the Gateway's key: given, or generated.
    let token_key = accounts.iter().any(|a| a.oauth.is_some()).then(|| {
        let key = spec.oauth_token_key_secret_ref.clone().unwrap_or_else(|| {
            let key = crate::generated_secrets::token_key(&gw.name_any());
            generated_keys.push(key.clone());
            key.secret
        });
        secrets.insert(key.name.clone());
        secret_path(&key)
    });
    // Console sessions and digest links are sealed and signed with the Gateway's admin key.
    let admin_key = {
        let key = spec.admin_key_secret_ref.clone().unwrap_or_else(|| {
            let key = crate::generated_secrets::admin_key(&gw.name_any());
            generated_keys.push(key.clone());
            key.secret
        });
        secrets.insert(key.name.clone());
        secret_path(&key)
    };
    let config = json!({
        "hostname": hostname,
        "listeners": listeners,
        // The admin Service's names: the operator (and kubectl's service proxy) ask by them;
        // the admin API refuses other Host names (DNS rebinding).
        // RBAC decides who uses the admin API: a Role granting verbs on `quarantine` of
        // mail.postern.dev in this namespace.
        "admin": {
            "address": format!("0.0.0.0:{ADMIN_PORT}"), "hosts": admin_hosts(gw, &ns),
            "kubernetes": {"namespace": ns, "tokenFile": format!("{KUBE_API_DIR}/token"),
                           "caFile": format!("{KUBE_API_DIR}/ca.crt")},
            "publicUrl": spec.admin_public_url,
            "keyFile": admin_key,
        },
        "oauth": {"tokenKeyFile": token_key},
        "store": store,
        "relay": relay,
        "auth": auth,
        "senderPolicy": spec.sender_policy,
        "connectionPolicy": spec.connection_policy,
        "rateLimits": spec.rate_limits,
        "mtaSts": spec.mta_sts.as_ref().map(|m| &m.policy),
        "accounts": accounts,
        "delivery": delivery,
        "logging": {"format": "json", "level": "info"},
    });
    // The gateway-wide part goes through deserialisation (defaults, the same checks as a file);
    // the domains and policies, already typed, are moved in as they are (100k accounts would
    // otherwise be copied through JSON twice).
    let config = serde_path_to_error::deserialize::<_, GatewayConfig>(config).map(|mut c| {
        c.domains = rendered_domains;
        c.spam_policies = spam_policies;
        c
    });
    let (config, config_errors) = match config {
        Ok(c) => match validate(&c) {
            Ok(()) => (Some(c), Vec::new()),
            Err(errs) => (None, errs.iter().map(|e| e.to_string()).collect()),
        },
        Err(e) => (None, vec![format!("{}: {}", e.path(), e.inner())]),
    };
    Rendered { config, config_errors, problems, served, secrets, generated_keys }
}

/// The SendingAccounts the Gateway selects, as the gateway's config has them (passwords as
/// files of mounted Secrets). Of two accounts for the same `from`, the first by name is used
/// and the other is a problem (`FromConflict`).
fn render_accounts(
    gw: &Gateway,
    objs: &Objects,
    secrets: &mut BTreeSet<String>,
    generated_keys: &mut Vec<crate::generated_secrets::GeneratedKey>,
    problems: &mut Vec<Problem>,
) -> Vec<postern_api::SendingAccount> {
    let ns = gw.namespace().unwrap_or_default();
    let mut selected: Vec<&crate::crd::SendingAccount> = objs
        .accounts
        .iter()
        .filter(|a| {
            a.namespace().as_deref() == Some(ns.as_str()) && selects(&gw.spec.account_selector, a.labels())
        })
        .collect();
    selected.sort_by_key(|a| a.name_any());
    let mut out: Vec<postern_api::SendingAccount> = Vec::new();
    for a in selected {
        let spec = &a.spec;
        if let Some(first) = out.iter().find(|o| o.from.eq_ignore_ascii_case(&spec.from)) {
            problems.push(Problem {
                kind: "SendingAccount",
                name: a.name_any(),
                reason: "FromConflict",
                message: format!("SendingAccount {} already sends for {}", first.name, first.from),
            });
            continue;
        }
        let smtp = spec.smtp.as_ref().map(|s| {
            if let Some(r) = &s.password_secret_ref {
                secrets.insert(r.name.clone());
            }
            postern_api::SmtpAccount {
                host: s.host.clone(),
                port: s.port,
                security: s.security,
                username: s.username.clone(),
                password_file: s.password_secret_ref.as_ref().map(|r| secret_path(r).into()),
            }
        });
        let direct = spec.direct.as_ref().map(|d| {
            let key = d.private_key_secret_ref.clone().unwrap_or_else(|| {
                let key = crate::generated_secrets::dkim(&a.name_any(), d.algorithm);
                generated_keys.push(key.clone());
                key.secret
            });
            secrets.insert(key.name.clone());
            postern_api::DirectAccount {
                selector: d.selector.clone(),
                private_key_file: secret_path(&key).into(),
                algorithm: d.algorithm,
            }
        });
        out.push(postern_api::SendingAccount {
            name: a.name_any(),
            from: spec.from.clone(),
            display_name: spec.display_name.clone(),
            bcc: spec.bcc.clone(),
            kind: spec.kind,
            smtp,
            direct,
            oauth: spec.oauth.as_ref().map(|o| {
                if let Some(r) = &o.client_secret_secret_ref {
                    secrets.insert(r.name.clone());
                }
                postern_api::OAuthAccount {
                    client_id: o.client_id.clone(),
                    client_secret_file: o.client_secret_secret_ref.as_ref().map(|r| secret_path(r).into()),
                    tenant: o.tenant.clone(),
                    authorization_url: o.authorization_url.clone(),
                    token_url: o.token_url.clone(),
                    api_url: o.api_url.clone(),
                    scopes: o.scopes.clone(),
                    grant: o.grant,
                    send: o.send,
                    smtp_host: o.smtp_host.clone(),
                    smtp_username: o.smtp_username.clone(),
                }
            }),
            exchange: spec.exchange.as_ref().map(|x| {
                secrets.insert(x.password_secret_ref.name.clone());
                postern_api::ExchangeAccount {
                    url: x.url.clone(),
                    username: x.username.clone(),
                    password_file: secret_path(&x.password_secret_ref).into(),
                }
            }),
        });
    }
    out
}

/// The admin port's own Service (never the SMTP one a load balancer exposes).
pub fn admin_service_name(gw: &Gateway) -> String {
    format!("{}-admin", gw.name_any())
}

/// The names of a Gateway's admin Service (`<gateway>-admin`), short to fully qualified.
fn admin_hosts(gw: &Gateway, ns: &str) -> Vec<String> {
    let service = admin_service_name(gw);
    vec![
        service.clone(),
        format!("{service}.{ns}"),
        format!("{service}.{ns}.svc"),
        format!("{service}.{ns}.svc.cluster.local"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: mail.postern.dev/v1alpha1
kind: Gateway
metadata: {name: edge}
spec:
  hostname: mx.example.com
  domainSelector: {matchLabels: {postern.dev/gateway: edge}}
---
apiVersion: mail.postern.dev/v1alpha1
kind: MailDomain
metadata: {name: example-com, labels: {postern.dev/gateway: edge}}
spec:
  domain: example.com
  primary: {hosts: ["mail.example.com:25"]}
  accounts: [{address: alice}]
  groupsFrom: {name: big-groups}
  routingPolicyRef: split
  spamPolicyRef: standard
---
apiVersion: mail.postern.dev/v1alpha1
kind: MailDomain
metadata: {name: broken, labels: {postern.dev/gateway: edge}}
spec:
  domain: broken.example
  primary: {mx: broken.example}
  spamPolicyRef: missing
---
apiVersion: mail.postern.dev/v1alpha1
kind: MailDomain
metadata: {name: elsewhere, labels: {postern.dev/gateway: other}}
spec:
  domain: other.example
  primary: {mx: other.example}
---
apiVersion: mail.postern.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: split}
spec:
  mode: Split
  destination: {mx: legacy.example.net}
  inboundGateways: [192.0.2.0/24]
  outboundGateway:
    host: smarthost.example.net:587
    tls: {mode: required}
    auth: {username: relay, passwordSecretRef: {name: smarthost}}
---
apiVersion: mail.postern.dev/v1alpha1
kind: SpamPolicy
metadata: {name: standard}
spec:
  spf: {fail: Reject}
  dnsbl: {zones: [zen.example]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: big-groups}
data:
  groups.yaml: |
    - {address: sales, members: [alice], moderator: alice}
"#;

    #[test]
    fn a_gateway_renders_its_domains_and_policies() {
        let mut objs = Objects::default();
        objs.add_yaml(MANIFESTS, "mail").unwrap();
        let r = render(&objs.gateways[0], &objs);
        assert!(r.config_errors.is_empty(), "{:?}", r.config_errors);
        let c = r.config.as_ref().unwrap();
        assert_eq!(c.hostname, "mx.example.com");
        assert_eq!(r.served, ["example-com"], "the broken domain is left out, the other gateway's too");
        assert_eq!(
            r.problems,
            [Problem {
                kind: "MailDomain",
                name: "broken".into(),
                reason: "SpamPolicyNotFound",
                message: "SpamPolicy missing does not exist in mail".into()
            }]
        );
        let d = &c.domains[0];
        assert_eq!(d.groups[0].address, "sales");
        assert_eq!(d.routing.as_ref().unwrap().mode, postern_api::RoutingMode::Split);
        assert_eq!(d.spam_policy.as_deref(), Some("standard"));
        assert_eq!(c.spam_policies["standard"].dnsbl.zones, ["zen.example"]);
        assert_eq!(c.relay.inbound_gateways[0].to_string(), "192.0.2.0/24");
        let og = c.delivery.outbound_gateway.as_ref().unwrap();
        assert_eq!(
            og.auth.as_ref().unwrap().password_file.to_str(),
            Some("/etc/postern/secrets/smarthost/password")
        );
        assert_eq!(
            r.secrets.iter().collect::<Vec<_>>(),
            ["edge-admin-key", "smarthost"],
            "referenced, never copied"
        );
        assert_eq!(
            c.admin.key_file.as_ref().unwrap().to_str(),
            Some("/etc/postern/secrets/edge-admin-key/key")
        );
        assert_eq!(
            r.generated_keys.iter().map(|k| k.secret.name.as_str()).collect::<Vec<_>>(),
            ["edge-admin-key"]
        );
        assert!(!r.yaml().unwrap().contains("kind:"), "a plain GatewayConfig");
    }

    #[test]
    fn a_redis_cluster_store_renders_with_its_partitions() {
        let gateway = r#"
apiVersion: mail.postern.dev/v1alpha1
kind: Gateway
metadata: {name: edge}
spec:
  store:
    type: Redis
    redis: {url: "redis://redis-0.redis:6379", cluster: true, partitions: 6, passwordSecretRef: {name: redis, key: password}}
"#;
        let mut ours = Objects::default();
        ours.add_yaml(gateway, "mail").unwrap();
        let r = render(&ours.gateways[0], &Objects::default());
        assert!(r.config_errors.is_empty(), "{:?}", r.config_errors);
        let redis = r.config.as_ref().unwrap().store.redis.as_ref().unwrap();
        assert!(redis.cluster);
        assert_eq!(redis.partitions, 6);
        assert_eq!(
            redis.password_file.as_ref().unwrap().to_str(),
            Some("/etc/postern/secrets/redis/password")
        );
    }

    #[test]
    fn gateways_on_one_redis_share_a_queue_unless_their_prefixes_differ() {
        let gateway = |name: &str, store: &str| {
            let mut objs = Objects::default();
            let yaml = format!(
                "apiVersion: mail.postern.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  store: {store}\n"
            );
            objs.add_yaml(&yaml, "mail").unwrap();
            objs.gateways.remove(0)
        };
        let all = [
            gateway("a", "{type: Redis, redis: {url: 'redis://r:6379'}}"),
            gateway("b", "{type: Redis, redis: {url: 'redis://r:6379/', keyPrefix: postern}}"),
            gateway("c", "{type: Redis, redis: {url: 'redis://r:6379', keyPrefix: other}}"),
            gateway("d", "{type: Embedded}"),
        ];
        assert_eq!(sharing_queue_with(&all[0], &all), ["b"], "the default prefix is postern");
        assert_eq!(sharing_queue_with(&all[1], &all), ["a"]);
        assert!(sharing_queue_with(&all[2], &all).is_empty());
        assert!(sharing_queue_with(&all[3], &all).is_empty());
        let r = render(&all[2], &Objects::default());
        assert_eq!(r.config.unwrap().store.redis.unwrap().key_prefix, "other");
    }

    #[test]
    fn relay_control_renders_with_the_users_secret_mounted() {
        let gateway = r#"
apiVersion: mail.postern.dev/v1alpha1
kind: Gateway
metadata: {name: edge}
spec:
  hostname: mx.example.com
  domainSelector: {matchLabels: {postern.dev/gateway: edge}}
  listeners:
    - {name: smtp, port: 25}
    - {name: submission, port: 587, role: submission, tlsSecretName: mx-tls}
  auth:
    usersSecretRef: {name: users, key: users}
    failedLogins: {max: 3}
  relay:
    trustedNetworks: [10.0.0.0/8]
    inboundGateways: [198.51.100.0/24]
    rules: [{action: Discard, recipients: ["trap@example.com"]}]
  senderPolicy: {requireResolvableDomain: true}
  connectionPolicy: {heloFqdn: Log}
  rateLimits: [{key: user, count: recipients, limit: 100, per: 1h}]
"#;
        let mut objs = Objects::default();
        objs.add_yaml(MANIFESTS, "mail").unwrap();
        let mut ours = Objects::default();
        ours.add_yaml(gateway, "mail").unwrap();
        let r = render(&ours.gateways[0], &objs);
        assert!(r.config_errors.is_empty(), "{:?}", r.config_errors);
        let c = r.config.as_ref().unwrap();
        assert_eq!(c.listeners[1].role, postern_api::ListenerRole::Submission);
        assert!(c.listeners[1].offers_auth() && !c.listeners[0].offers_auth());
        assert_eq!(
            c.auth.users_file.as_deref(),
            Some(std::path::Path::new("/etc/postern/secrets/users/users"))
        );
        assert_eq!(c.auth.failed_logins.max, 3);
        assert!(c.auth.restrict_senders, "on unless turned off");
        // The Gateway's own inbound gateways and the RoutingPolicy's, together.
        let inbound: Vec<String> = c.relay.inbound_gateways.iter().map(ToString::to_string).collect();
        assert_eq!(inbound, ["192.0.2.0/24", "198.51.100.0/24"]);
        assert_eq!(c.relay.trusted_networks[0].to_string(), "10.0.0.0/8");
        assert_eq!(c.relay.rules[0].action, postern_api::RelayAction::Discard);
        assert!(c.sender_policy.require_resolvable_domain);
        assert_eq!(c.connection_policy.helo_fqdn, postern_api::CheckAction::Log);
        assert_eq!(c.rate_limits[0].limit, 100);
        assert!(r.secrets.contains("users") && r.secrets.contains("mx-tls"));
    }

    #[test]
    fn label_selectors_match_like_kubernetes() {
        let labels: BTreeMap<String, String> = [("tier".to_string(), "edge".to_string())].into();
        let sel = |y: &str| serde_yaml::from_str::<LabelSelector>(y).unwrap();
        assert!(selects(&sel("{}"), &labels));
        assert!(selects(
            &sel("{matchExpressions: [{key: tier, operator: In, values: [edge, core]}]}"),
            &labels
        ));
        assert!(!selects(
            &sel("{matchExpressions: [{key: tier, operator: NotIn, values: [edge]}]}"),
            &labels
        ));
        assert!(selects(&sel("{matchExpressions: [{key: zone, operator: DoesNotExist}]}"), &labels));
        assert!(!selects(&sel("{matchLabels: {tier: core}}"), &labels));
    }
}
