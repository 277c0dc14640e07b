//! `SendingAccount`: mail that trusted networks or authenticated users submit with a matching
//! envelope sender leaves through this account, as its user or mailbox (the gateway's
//! `postern_api::SendingAccount`, with credentials from Secrets).

use kube::CustomResource;
use postern_api::{AccountType, SmtpSecurity};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SecretKeyRef, Status};

/// A sending account of the Gateways whose `accountSelector` matches it. Built so far: type
/// Smtp (a provider's submission server with a login).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mail.postern.dev",
    version = "v1alpha1",
    kind = "SendingAccount",
    namespaced,
    derive = "Default",
    doc = "A sending account: submitted mail whose envelope sender matches `from` leaves through it, as that user or mailbox (type Smtp: the provider's submission server with the account's login).",
    status = "Status",
    category = "postern",
    printcolumn(name = "From", type_ = "string", json_path = ".spec.from"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'Smtp' || has(self.smtp)", "message": "type Smtp needs smtp"},
    {"rule": "self.type != 'Direct'",
     "message": "type Direct is not available as a SendingAccount yet (its key Secret and DNS record are not built): use the gateway's config file"}
]))]
pub struct SendingAccountSpec {
    /// Whose mail: an address (`alice@example.com`) or a whole domain (`@example.com`). An
    /// address's own account wins over its domain's.
    #[schemars(regex(pattern = r"^([^@\s]+)?@[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"))]
    pub from: String,
    /// The name recipients see, set on the From header when the sender gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// An address that receives a copy of every mail sent through the account (one more
    /// envelope recipient; no header names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^@\s]+@[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"))]
    pub bcc: Option<String>,
    /// How the account sends.
    #[serde(rename = "type")]
    pub kind: AccountType,
    /// With type Smtp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpAccountSpec>,
}

/// The provider's submission server and the account's login there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.username) == has(self.passwordSecretRef)",
     "message": "username and passwordSecretRef go together"},
    {"rule": "!has(self.username) || !has(self.security) || self.security != 'None'",
     "message": "a login is never sent without TLS: use StartTls or Tls"}
]))]
pub struct SmtpAccountSpec {
    /// The server's name (its certificate must name it).
    pub host: String,
    /// Default: 587 with StartTls, 465 with Tls, 25 with None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// StartTls (default, required: without it a test mail may pass while real mail fails),
    /// Tls (implicit TLS, port 465) or None (a relay on a private network, no login).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The login (often the mailbox address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password, from a Secret (mounted into the gateway pods, never copied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}
