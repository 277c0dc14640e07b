//! `RoutingPolicy`: how a MailDomain's recipients are routed between its primary and another
//! destination, plus the gateways in front of and behind it.

use kube::CustomResource;
use postern_api::config::RoutingPolicyConfig;
use postern_api::{Destination, TlsPolicy};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SecretKeyRef, Status};

/// Mail flow for the MailDomains that reference this policy: Split (unknown recipients
/// forwarded instead of bounced), Dual (known recipients delivered to both), RouteAll
/// (everything forwarded, known accounts also delivered locally).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mail.postern.dev",
    version = "v1alpha1",
    kind = "RoutingPolicy",
    namespaced,
    derive = "Default",
    doc = "How the recipients of the MailDomains referencing this policy are routed (Direct, Split, Dual, RouteAll), with inbound gateways and an outbound smarthost.",
    status = "Status",
    shortname = "rtp",
    category = "postern",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(
        name = "Verified",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"DestinationVerified\")].status"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.destination.mx) != (has(self.destination.hosts) && size(self.destination.hosts) > 0)",
     "message": "destination needs exactly one of mx or hosts"},
    {"rule": "!self.rewriteEnvelope || has(self.destination.mx)",
     "message": "rewriteEnvelope needs an mx destination (the domain to rewrite to)"}
]))]
pub struct RoutingPolicySpec {
    #[serde(flatten)]
    pub routing: RoutingPolicyConfig,
    /// Relays that hand mail to the gateway (the old MX, an archiving service), as CIDRs. Their
    /// mail is judged by the original client in their Received header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_gateways: Vec<String>,
    /// A smarthost through which all mail for non-served domains leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_gateway: Option<OutboundGatewaySpec>,
}

/// A smarthost ("host:port") with its TLS policy and optional AUTH PLAIN credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboundGatewaySpec {
    /// "host:port" of the smarthost.
    pub host: String,
    #[serde(default)]
    pub tls: TlsPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<OutboundAuth>,
}

/// AUTH PLAIN towards the smarthost; the password stays in its Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboundAuth {
    /// The AUTH PLAIN user name.
    pub username: String,
    /// The password, mounted from this Secret.
    pub password_secret_ref: SecretKeyRef,
}

impl Default for RoutingPolicySpec {
    fn default() -> Self {
        Self {
            routing: RoutingPolicyConfig {
                mode: postern_api::RoutingMode::Direct,
                destination: Destination::default(),
                enabled: true,
                rewrite_envelope: false,
                bounce_on_failure: true,
                verification_address: None,
                expand_groups: false,
            },
            inbound_gateways: Vec::new(),
            outbound_gateway: None,
        }
    }
}
