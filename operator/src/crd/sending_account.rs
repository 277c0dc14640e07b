//! `SendingAccount`: mail that trusted networks or authenticated users submit with a matching
//! envelope sender leaves through this account, as its user or mailbox (the gateway's
//! `postern_api::SendingAccount`, with credentials from Secrets).

use kube::CustomResource;
use postern_api::{AccountType, DkimAlgorithm, SmtpSecurity};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SecretKeyRef, Status};

/// A sending account of the Gateways whose `accountSelector` matches it: types Smtp (a
/// provider's submission server with a login), Direct (Postern delivers, DKIM-signed),
/// Microsoft365 and Gmail (the provider's mail API with an OAuth grant), Exchange (EWS).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mail.postern.dev",
    version = "v1alpha1",
    kind = "SendingAccount",
    namespaced,
    derive = "Default",
    doc = "A sending account: submitted mail whose envelope sender matches `from` leaves through it, as that user or mailbox (type Smtp: the provider's submission server with the account's login; type Direct: Postern delivers by MX, DKIM-signed, once the domain publishes the key shown in status.dkim).",
    status = "SendingAccountStatus",
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
    {"rule": "self.type != 'Direct' || has(self.direct)", "message": "type Direct needs direct"},
    {"rule": "(self.type != 'Microsoft365' && self.type != 'Gmail') || has(self.oauth)",
     "message": "types Microsoft365 and Gmail need oauth"},
    {"rule": "self.type != 'Exchange' || has(self.exchange)", "message": "type Exchange needs exchange"},
    {"rule": "self.type != 'Gmail' || !has(self.oauth) || !has(self.oauth.grant) || self.oauth.grant != 'ClientCredentials'",
     "message": "ClientCredentials is for Microsoft365 only"}
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
    /// With type Direct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<DirectAccountSpec>,
    /// With type Microsoft365 or Gmail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthAccountSpec>,
    /// With type Exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeAccountSpec>,
}

/// The OAuth 2.0 app whose grant the mailbox's owner gives (`postern-gateway accounts
/// authorize NAME` prints the consent link; the Gateway's `adminPublicUrl` must reach the
/// gateways' `/oauth/callback`). `Authorized` in the status says whether a grant is held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.grant) || self.grant != 'ClientCredentials' || has(self.clientSecretSecretRef)",
     "message": "ClientCredentials needs clientSecretSecretRef"}
]))]
pub struct OAuthAccountSpec {
    /// The app's client id.
    pub client_id: String,
    /// The client secret, from a Secret (mounted into the gateway pods, never copied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_secret_ref: Option<SecretKeyRef>,
    /// Microsoft365: the directory (tenant) id or domain (default `organizations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Endpoint overrides (sovereign clouds): https:// URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https://\S+$"))]
    pub authorization_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https://\S+$"))]
    pub token_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https://\S+$"))]
    pub api_url: Option<String>,
    /// The scopes asked for (default: the provider's send scope, and offline access).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// AuthorizationCode (default: the mailbox's owner consents once) or, Microsoft365 only,
    /// ClientCredentials (app-only; needs clientSecretSecretRef).
    #[serde(default)]
    pub grant: postern_api::OAuthGrant,
    /// Api (default) or Smtp (the provider's submission server with XOAUTH2).
    #[serde(default)]
    pub send: postern_api::OAuthSend,
    /// With send Smtp: `host:port` (default the provider's, port 587).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_host: Option<String>,
    /// With send Smtp: the mailbox XOAUTH2 names (default: `from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_username: Option<String>,
}

/// An on-premises Exchange server's EWS and the mailbox's login (HTTP Basic over TLS).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeAccountSpec {
    /// e.g. `https://mail.example.com/ews/exchange.asmx`.
    #[schemars(regex(pattern = r"^https://\S+$"))]
    pub url: String,
    /// The login in `user@domain` form.
    #[schemars(regex(pattern = r"^[^@\s]+@[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"))]
    pub username: String,
    /// The password, from a Secret (mounted, never copied).
    pub password_secret_ref: SecretKeyRef,
}

/// Postern delivers the account's mail itself (MX), DKIM-signed (RFC 6376). Usable once
/// verified (`Verified`): an `@domain` account when the domain publishes the key at
/// `<selector>._domainkey.<domain>` (status.dkim shows the record; a Gateway's `dnsRecords`
/// publishes it through external-dns); an address when its mailbox confirmed the request the
/// gateways mail to it (a one-time link under the Gateway's `adminPublicUrl`, or a code).
/// Until then its mail is refused at submission (550 5.7.1 sender not verified).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectAccountSpec {
    /// The DKIM selector (`s=`), a DNS label.
    #[serde(default = "default_selector")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$"))]
    pub selector: String,
    /// RsaSha256 (RSA-2048, what every receiver verifies; default) or Ed25519Sha256 (RFC 8463).
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
    /// The private key (PEM: PKCS#8, or PKCS#1 for RSA). Without it the operator generates one
    /// into the Secret `<account>-dkim` (key `dkim.pem`) and never reads it back; that Secret
    /// outlives the account (its DNS record may still be published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_secret_ref: Option<SecretKeyRef>,
}

fn default_selector() -> String {
    "postern".into()
}

/// What a SendingAccount reports: its conditions (`Ready`, `ConnectionTested`, `Verified` of a
/// Direct account, `Authorized` of an OAuth one) and, for a Direct account, the DKIM record to
/// publish.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendingAccountStatus {
    #[serde(flatten)]
    pub base: Status,
    /// A Direct account's DKIM key record, as the gateways read the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<DkimRecord>,
}

/// A DNS TXT record to publish.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimRecord {
    /// Where: `<selector>._domainkey.<domain>`.
    pub name: String,
    /// The TXT value (`v=DKIM1; k=...; p=...`).
    pub value: String,
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
