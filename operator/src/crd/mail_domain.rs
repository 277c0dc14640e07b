//! `MailDomain`: a domain the gateways serve, its mailbox servers and directory, and the
//! policies it follows.

use kube::CustomResource;
use postern_api::Destination;
use postern_api::config::{Account, Group, RecipientVerification};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Status;

/// A served domain. Gateways whose `domainSelector` matches its labels serve it.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mail.postern.dev",
    version = "v1alpha1",
    kind = "MailDomain",
    namespaced,
    derive = "Default",
    doc = "A mail domain Postern serves: its mailbox servers (primary), directory (accounts, aliases, groups) and the RoutingPolicy and SpamPolicy it follows.",
    status = "Status",
    shortname = "md",
    category = "postern",
    printcolumn(name = "Domain", type_ = "string", json_path = ".spec.domain"),
    printcolumn(name = "Routing", type_ = "string", json_path = ".spec.routingPolicyRef"),
    printcolumn(name = "Spam", type_ = "string", json_path = ".spec.spamPolicyRef"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.primary.mx) != (has(self.primary.hosts) && size(self.primary.hosts) > 0)",
     "message": "primary needs exactly one of mx or hosts"}
]))]
pub struct MailDomainSpec {
    /// The domain name, e.g. example.com.
    #[schemars(regex(pattern = r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$"))]
    pub domain: String,
    /// The domain's mailbox servers.
    pub primary: Destination,
    /// Known accounts (local parts or whole addresses) with their aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<Account>,
    /// Groups: an address whose mail goes to its members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
    /// More groups, from a ConfigMap key holding a YAML list of groups (for large lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_from: Option<ConfigMapKeyRef>,
    /// Ask the primary server whether an unlisted recipient exists (RCPT probe, cached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_verification: Option<RecipientVerification>,
    /// The RoutingPolicy (same namespace) this domain follows; none means Direct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_policy_ref: Option<String>,
    /// The SpamPolicy (same namespace) this domain's inbound mail is checked with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam_policy_ref: Option<String>,
}

/// A key of a ConfigMap in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// The ConfigMap's name.
    pub name: String,
    /// The key holding the YAML list of groups.
    #[serde(default = "default_groups_key")]
    pub key: String,
}

fn default_groups_key() -> String {
    "groups.yaml".into()
}
