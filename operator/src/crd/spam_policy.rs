//! `SpamPolicy`: every spam check with its action, the lists, content rules, sender warnings,
//! quarantine retention and digests. The spec is the gateway's `SpamPolicyConfig`.

use kube::CustomResource;
use postern_api::SpamPolicyConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Status;

/// Spam control for the MailDomains that reference it. Each check has an action: Reject (5xx in
/// the session), TempFail (4xx), Quarantine, MarkSpam (delivered with a spam header) or Allow.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mail.postern.dev",
    version = "v1alpha1",
    kind = "SpamPolicy",
    namespaced,
    derive = "Default",
    doc = "Spam control for the MailDomains referencing this policy: SPF, DKIM, DMARC, DNS blocklists, allow/block lists, content rules, each with an action; quarantine retention and digests.",
    status = "Status",
    shortname = "spp",
    category = "postern",
    printcolumn(name = "SPF-Fail", type_ = "string", json_path = ".spec.spf.fail"),
    printcolumn(name = "DMARC-Reject", type_ = "string", json_path = ".spec.dmarc.reject"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.spamHeader) || self.spamHeader.matches('^[!-9;-~]+:.*$')",
     "message": "spamHeader must be \"Name: value\""}
]))]
pub struct SpamPolicySpec {
    #[serde(flatten)]
    pub policy: SpamPolicyConfig,
}
