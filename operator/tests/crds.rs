//! The CRDs as the apiserver would see them, without one: the committed YAML in `crds/` is
//! what `crdgen` generates (CI fails on drift), every schema is structural, the manifests in
//! `examples/k8s/` pass the OpenAPI schema and the CEL rules, and broken manifests are refused
//! with the expected message.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{admit, schema_of};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

#[test]
fn committed_crds_match_the_generated_ones() {
    for crd in postern_operator::crd::all() {
        let name = crd.metadata.name.clone().unwrap();
        for dir in ["crds", "charts/postern/files/crds"] {
            let path = Path::new(ROOT).join(dir).join(format!("{name}.yaml"));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == postern_operator::crd::to_yaml(&crd),
                "{} is stale: run `cargo run -p postern-operator -- crdgen --out {dir}`",
                path.display()
            );
        }
    }
}

/// Structural (what apiextensions/v1 demands): every node says its type, and no node has both
/// `properties` and `additionalProperties`.
fn assert_structural(node: &Value, path: &str) {
    let Some(obj) = node.as_object() else { return };
    let exempt = obj.contains_key("x-kubernetes-int-or-string")
        || obj.contains_key("x-kubernetes-preserve-unknown-fields");
    assert!(exempt || obj.contains_key("type"), "{path}: no type");
    assert!(
        !(obj.contains_key("properties") && obj.contains_key("additionalProperties")),
        "{path}: properties and additionalProperties"
    );
    for banned in ["allOf", "anyOf", "oneOf", "$ref", "not"] {
        assert!(!obj.contains_key(banned), "{path}: {banned} is not structural");
    }
    for (k, v) in obj.iter().filter(|(k, _)| *k == "properties") {
        for (name, sub) in v.as_object().unwrap() {
            assert_structural(sub, &format!("{path}.{k}.{name}"));
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(ap, &format!("{path}{{}}"));
    }
}

/// Every field under `node` has a description (what `kubectl explain` shows).
fn assert_described(node: &Value, path: &str) {
    for (name, sub) in node["properties"].as_object().into_iter().flatten() {
        assert!(sub.get("description").is_some(), "{path}.{name} has no description (kubectl explain)");
        assert_described(sub, &format!("{path}.{name}"));
    }
    if node["items"].is_object() {
        assert_described(&node["items"], &format!("{path}[]"));
    }
}

#[test]
fn every_schema_is_structural_and_described() {
    for kind in ["Gateway", "MailDomain", "RoutingPolicy", "SpamPolicy"] {
        let schema = schema_of(kind);
        assert_structural(&schema, kind);
        assert_described(&schema["properties"]["spec"], &format!("{kind}.spec"));
        assert!(
            schema["properties"]["status"]["properties"]["conditions"].is_object(),
            "{kind} status.conditions"
        );
    }
}

#[test]
fn the_examples_are_admitted() {
    let dir = Path::new(ROOT).join("examples/k8s");
    let mut admitted = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        for doc in yaml_docs(&std::fs::read_to_string(&path).unwrap()) {
            if doc["apiVersion"] != "mail.postern.dev/v1alpha1" {
                continue;
            }
            admit(&doc).unwrap_or_else(|e| panic!("{}: {} refused: {e:?}", path.display(), doc["kind"]));
            admitted += 1;
        }
    }
    assert!(admitted >= 5, "a Gateway, MailDomains, both policies");
}

#[test]
fn broken_manifests_are_refused_with_a_reason() {
    let cases = [
        ("kind: Gateway\nspec: {replicas: 3}", "the embedded store serves one replica"),
        (
            "kind: Gateway\nspec: {store: {type: Redis, redis: {url: 'redis://r:6379'}}, autoscaling: {minReplicas: 5, maxReplicas: 2}}",
            "autoscaling.minReplicas must not exceed maxReplicas",
        ),
        ("kind: Gateway\nspec: {store: {type: Redis}, replicas: 2}", "store.type Redis needs store.redis"),
        ("kind: Gateway\nspec: {store: {type: Etcd}}", "\"Etcd\" is not one of"),
        (
            "kind: MailDomain\nspec: {domain: example.com, primary: {mx: example.com, hosts: ['h:25']}}",
            "primary needs exactly one of mx or hosts",
        ),
        ("kind: MailDomain\nspec: {domain: 'not a domain', primary: {mx: example.com}}", "does not match"),
        ("kind: MailDomain\nspec: {primary: {mx: example.com}}", "\"domain\" is a required property"),
        (
            "kind: RoutingPolicy\nspec: {mode: Sideways, destination: {mx: d.example}}",
            "\"Sideways\" is not one of",
        ),
        (
            "kind: RoutingPolicy\nspec: {mode: Split, destination: {hosts: ['h:25']}, rewriteEnvelope: true}",
            "rewriteEnvelope needs an mx destination",
        ),
        ("kind: SpamPolicy\nspec: {spf: {fail: Bounce}}", "\"Bounce\" is not one of"),
        ("kind: SendingAccount\nspec: {from: '@example.com', type: Smtp}", "type Smtp needs smtp"),
        ("kind: SendingAccount\nspec: {from: '@example.com', type: Direct}", "type Direct needs direct"),
        (
            "kind: SendingAccount\nspec: {from: '@example.com', type: Microsoft365}",
            "types Microsoft365 and Gmail need oauth",
        ),
        (
            "kind: Gateway\nspec: {adminPublicUrl: 'https://p.example/sub', adminIngress: {}}",
            "adminIngress publishes adminPublicUrl",
        ),
        (
            "kind: SendingAccount\nspec: {from: '@example.com', type: Exchange}",
            "type Exchange needs exchange",
        ),
        (
            "kind: SendingAccount\nspec: {from: '@example.com', type: Gmail, oauth: {clientId: c, tokenUrl: 'http://x'}}",
            "tokenUrl",
        ),
        (
            "kind: SendingAccount\nspec: {from: '@example.com', type: Direct, direct: {selector: 'not a label'}}",
            "selector",
        ),
        (
            "kind: SendingAccount\nspec: {from: '@example.com', type: Smtp, smtp: {host: h, security: None, username: u, passwordSecretRef: {name: s}}}",
            "a login is never sent without TLS",
        ),
        (
            "kind: SendingAccount\nspec: {from: '@example.com', type: Smtp, smtp: {host: h, username: u}}",
            "username and passwordSecretRef go together",
        ),
        (
            "kind: SendingAccount\nspec: {from: 'not an address', type: Smtp, smtp: {host: h}}",
            "does not match",
        ),
        (
            "kind: Gateway\nspec: {listeners: [{name: sub, port: 587, role: submission}]}",
            "roles submission and submissions need tlsSecretName",
        ),
        (
            "kind: Gateway\nspec: {listeners: [{name: mx, port: 25, auth: true}]}",
            "AUTH is offered only under TLS",
        ),
        (
            "kind: Gateway\nspec: {listeners: [{name: sub, port: 587, role: submission, tlsSecretName: t}]}",
            "set auth.usersSecretRef",
        ),
        (
            "kind: Gateway\nspec: {rateLimits: [{key: everyone, count: messages, limit: 1, per: 1h}]}",
            "\"everyone\" is not one of",
        ),
        ("kind: Gateway\nspec: {relay: {rules: [{action: Drop}]}}", "\"Drop\" is not one of"),
        (
            "kind: Gateway\nspec: {service: {loadBalancerSourceRanges: ['192.0.2.0/24']}}",
            "loadBalancerClass and loadBalancerSourceRanges need type LoadBalancer",
        ),
        ("kind: Gateway\nspec: {service: {type: ExternalName}}", "\"ExternalName\" is not one of"),
        (
            "kind: Gateway\nspec: {listeners: [{name: lb, port: 25, proxyProtocol: true}]}",
            "proxyProtocol needs trustedProxies",
        ),
        (
            "kind: Gateway\nspec: {listeners: [{name: mx, port: 25, trustedProxies: ['10.0.0.0/8']}]}",
            "trustedProxies is set only with proxyProtocol",
        ),
        ("kind: SpamPolicy\nspec: {spamHeader: 'no colon'}", "spamHeader must be \"Name: value\""),
    ];
    for (text, expected) in cases {
        let mut doc: Value = serde_yaml::from_str(text).unwrap();
        doc["apiVersion"] = "mail.postern.dev/v1alpha1".into();
        doc["metadata"] = serde_json::json!({"name": "x", "namespace": "mail"});
        let errors = admit(&doc).expect_err(text);
        assert!(errors.iter().any(|e| e.contains(expected)), "{text}: expected {expected:?} in {errors:?}");
    }
}

#[test]
fn the_embedded_store_volume_cannot_change_once_created() {
    let schema = common::schema_of("Gateway");
    let gateway = |size: &str| {
        let doc: Value = serde_yaml::from_str(&format!(
            "apiVersion: mail.postern.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: x, namespace: mail}}\nspec: {{store: {{type: Embedded, embedded: {{size: {size}}}}}}}\n"
        ))
        .unwrap();
        kube::core::cel::apply_defaults(&schema, &doc)
    };
    let validator = kube::core::cel::Validator::new();
    assert!(validator.validate(&schema, &gateway("1Gi"), Some(&gateway("1Gi"))).is_ok());
    let errors = validator.validate(&schema, &gateway("2Gi"), Some(&gateway("1Gi"))).unwrap_err().into_vec();
    assert!(
        errors.iter().any(|e| e.message.contains("resize the PersistentVolumeClaim itself")),
        "{errors:?}"
    );
}
