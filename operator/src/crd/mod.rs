//! The CRDs of group `mail.postern.dev`, version `v1alpha1`, derived from these Rust types
//! (kube derive + schemars). Field docs become the schema descriptions (`kubectl explain`),
//! serde defaults become schema defaults, and invalid combinations carry CEL rules
//! (`x-kubernetes-validations`) that the apiserver enforces and `kube::core::cel` checks offline.
//!
//! The policy kinds reuse the gateway's own config types (`postern_api`), so a field added to
//! routing or spam control reaches the CRDs without a second definition.

// kube's `printcolumn(name = .., type_ = ..)` repeats key names across columns, which clippy's
// duplicated_attributes lint mistakes for repeated attributes.
#[allow(clippy::duplicated_attributes)]
pub mod gateway;
#[allow(clippy::duplicated_attributes)]
pub mod mail_domain;
#[allow(clippy::duplicated_attributes)]
pub mod routing_policy;
#[allow(clippy::duplicated_attributes)]
pub mod sending_account;
#[allow(clippy::duplicated_attributes)]
pub mod spam_policy;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use gateway::{Gateway, GatewaySpec};
pub use mail_domain::{MailDomain, MailDomainSpec};
pub use routing_policy::{RoutingPolicy, RoutingPolicySpec};
pub use sending_account::{SendingAccount, SendingAccountSpec};
pub use spam_policy::{SpamPolicy, SpamPolicySpec};

pub const GROUP: &str = "mail.postern.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "mail.postern.dev/v1alpha1";

/// What every kind reports: conditions (`Ready`, `ConfigValid`, `DestinationVerified`) and
/// the generation they describe.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Keyed by `type` (one condition of each type; server-side apply merges by it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A key of a Secret in the same namespace (mounted into the gateway pods, never copied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key in the Secret.
    #[serde(default = "default_password_key")]
    pub key: String,
}

fn default_password_key() -> String {
    "password".into()
}

/// Where the gateway pods see a Secret's key (the operator mounts each referenced Secret).
pub fn secret_path(r: &SecretKeyRef) -> String {
    format!("/etc/postern/secrets/{}/{}", r.name, r.key)
}

/// Every CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![Gateway::crd(), MailDomain::crd(), RoutingPolicy::crd(), SpamPolicy::crd(), SendingAccount::crd()]
}

/// The CRDs as one multi-document YAML (what `postern-operator crdgen` prints and `crds/` holds).
pub fn yaml() -> String {
    all().iter().map(to_yaml).collect::<Vec<_>>().join("---\n")
}

/// A CRD as YAML that reads the same to YAML 1.1 parsers (kubectl, Helm and every Go tool read
/// a plain `Off` as the boolean false, which would turn the enum value "Off" into a schema
/// the API server refuses): such plain scalars are quoted.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    quote_yaml11_booleans(&serde_yaml::to_string(crd).expect("CRDs serialize"))
}

/// YAML 1.1's boolean words that YAML 1.2 (serde_yaml) leaves plain.
const YAML11_BOOLEANS: &[&str] =
    &["y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"];

fn quote_yaml11_booleans(yaml: &str) -> String {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut out = String::with_capacity(yaml.len());
    // Inside a block scalar (`key: |-` and its more-indented lines) text is text.
    let mut block_at: Option<usize> = None;
    for line in yaml.lines() {
        if block_at.is_some_and(|at| line.trim().is_empty() || indent(line) > at) {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        block_at = None;
        let value_at = line.rfind(": ").map(|i| i + 2).or_else(|| {
            let body = line.trim_start();
            body.starts_with("- ").then(|| indent(line) + 2)
        });
        match value_at {
            Some(at) if YAML11_BOOLEANS.contains(&&line[at..]) => {
                out.push_str(&line[..at]);
                out.push('\'');
                out.push_str(&line[at..]);
                out.push('\'');
            }
            _ => out.push_str(line),
        }
        if ["|", "|-", "|+", ">", ">-", ">+"].iter().any(|b| line.ends_with(&format!(" {b}"))) {
            block_at = Some(indent(line));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod yaml_tests {
    use super::*;

    #[test]
    fn yaml11_booleans_are_quoted_outside_block_scalars() {
        let text = "a:\n  default: Off\n  enum:\n  - Off\n  - Log\n  description: |-\n    keep: no\n    - On\n  b: 'Off: text'\n";
        assert_eq!(
            quote_yaml11_booleans(text),
            "a:\n  default: 'Off'\n  enum:\n  - 'Off'\n  - Log\n  description: |-\n    keep: no\n    - On\n  b: 'Off: text'\n"
        );
    }
}
