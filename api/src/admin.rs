//! The admin API's wire types (`/api/v1/...` on the gateway's admin port), shared by the gateway
//! that serves them, the `postern-admin-client` crate (the CLI, the operator and the tests).
//! JSON, camelCase. Storage types live in the gateway and are converted, so the stored format
//! and the API can change apart.

use serde::{Deserialize, Serialize};

/// The API group whose RBAC decides who uses the admin API in Kubernetes.
pub const RBAC_GROUP: &str = "mail.postern.dev";

/// Every (resource, verbs) of `RBAC_GROUP` the admin API checks with a SubjectAccessReview:
/// `quarantine` list/get (content), release, delete; `queue` get; `verifications` list and
/// update (retry). The chart's quarantine-reviewer role grants exactly these.
pub const RBAC_RULES: &[(&str, &[&str])] = &[
    ("quarantine", &["list", "get", "release", "delete"]),
    ("queue", &["get"]),
    ("verifications", &["list", "update"]),
    ("accounts", &["list", "test", "confirm", "authorize"]),
];

/// `GET /api/v1/accounts`: the sending accounts and their last connection test (this pod's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountState {
    pub name: String,
    pub from: String,
    /// The account's server and its security, for people reading it.
    pub server: String,
    /// A Direct account's DKIM key record (the TXT value; absent when the key cannot be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim_record: Option<String>,
    /// Where a Direct account's record goes: `<selector>._domainkey.<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim_name: Option<String>,
    /// Whether a Direct account may send now, and why (absent for other types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<AccountVerification>,
    /// Whether an OAuth account (Microsoft365, Gmail) holds a grant (absent for other types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AccountAuthorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tested: Option<AccountTest>,
}

/// A Direct account's verification: its mail is refused until `verified`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountVerification {
    pub verified: bool,
    /// An `@domain` account: `KeyPublished`, `KeyNotPublished` or `KeyUnreadable`; an address:
    /// `AddressConfirmed`, `AwaitingConfirmation`, `ConfirmationExpired` or
    /// `ConfirmationNotSent` (Kubernetes condition reasons).
    pub reason: String,
    /// What was found, or what to do.
    pub detail: String,
}

/// An OAuth account's grant: its mail waits (deferred) until `authorized`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountAuthorization {
    pub authorized: bool,
    /// `Authorized`, `NotAuthorized`, `ConsentDenied` or `GrantRevoked` (condition reasons).
    pub reason: String,
    pub detail: String,
}

/// `POST /api/v1/accounts/NAME/authorize`: the provider's consent page to open in a browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizeAnswer {
    pub account: String,
    pub authorize_url: String,
}

/// `POST /api/v1/accounts/NAME/confirm`: the code a confirmation mail carried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmCode {
    pub code: String,
}

/// The answer to `POST /api/v1/accounts/NAME/confirm` (a code) and
/// `POST /api/v1/accounts/NAME/confirmation` (send a new request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationAnswer {
    pub account: String,
    pub ok: bool,
    pub detail: String,
}

/// `POST /api/v1/accounts/NAME/test`: connect, TLS, login, QUIT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountTest {
    pub account: String,
    pub ok: bool,
    /// What the server showed (host, TLS version, logged in), or why the test failed.
    pub detail: String,
    /// ms since the epoch.
    pub tested_at: u64,
}

/// `GET /api/v1/queue`: how much is queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub jobs: u64,
    pub messages: u64,
    pub quarantined: u64,
}

/// Where a routing policy's destination verification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VerificationStatus {
    Pending,
    Verified,
    Failed,
}

/// `GET /api/v1/verifications`: one per domain whose routing policy asks for verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationState {
    pub domain: String,
    pub address: String,
    /// The destination as a next-hop key (`mx:...` or `hosts:...`), for people reading it.
    pub destination: String,
    /// What was verified; a different fingerprint means "verify again".
    pub fingerprint: String,
    pub status: VerificationStatus,
    /// The destination's answer, or why it could not be asked.
    pub detail: String,
    /// ms since the epoch.
    pub checked_at: u64,
}

/// `POST /api/v1/verifications/{domain}/retry`: accepted, verification is pending again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRetry {
    pub domain: String,
    pub status: VerificationStatus,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// A search of the quarantine (`GET /api/v1/quarantine?...`): every given field must match
/// (case-insensitive substring); `q` matches any field or the text. Dates are RFC 3339 or
/// YYYY-MM-DD (UTC) and bound the time the entry was held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct QuarantineSearch {
    /// Anywhere: headers, reasons, text, attachments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Envelope sender or From header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Envelope recipient, To or Cc.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Text of the message itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Attachment file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<String>,
    /// Text inside text attachments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment_text: Option<String>,
    /// Held at or after (YYYY-MM-DD or RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Held at or before (YYYY-MM-DD or RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// At most this many entries (default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A message's headers and structure, decoded (RFC 2047 words, MIME parts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageSummary {
    pub subject: String,
    /// The From header, as "Name <address>" or the address.
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// The Date header, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<i64>,
    /// File names of the attachments.
    pub attachments: Vec<String>,
    pub size: u64,
}

/// A held message as listed (`GET /api/v1/quarantine`): everything but the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldMessage {
    pub id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    /// Why it was held, one line per reason.
    pub reasons: Vec<String>,
    pub client_ip: String,
    /// The spam policy that held it.
    pub policy: String,
    pub summary: MessageSummary,
    /// ms since the epoch, and the same as RFC 3339.
    pub created_at: u64,
    pub held_at: String,
    /// ms since the epoch when it is removed, and the same as RFC 3339.
    pub expires_at: u64,
    pub expires: String,
}

/// One held message with its header fields, unfolded, in order (`GET /api/v1/quarantine/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldMessageDetail {
    #[serde(flatten)]
    pub message: HeldMessage,
    pub headers: Vec<(String, String)>,
}

/// `POST /api/v1/quarantine/{id}/release`: what the release did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Released {
    pub id: String,
    pub queue_id: String,
    pub recipients: Vec<String>,
    /// Recipients the current routing no longer knows (not delivered).
    pub dropped: Vec<String>,
    pub released_by: String,
}

/// `DELETE /api/v1/quarantine/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}
