//! `SpamPolicy`: the checks a served domain's inbound mail goes through and what each does.
//! The `SpamPolicy` CRD maps onto this.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// What a check does when it fires. When several fire, the most severe wins
/// (Reject > TempFail > Quarantine > MarkSpam > Allow) and the verdict keeps every reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    /// Deliver as if nothing fired.
    Allow,
    /// Deliver with the policy's spam header, so the mailbox server files it as junk.
    MarkSpam,
    /// Hold in the quarantine for an admin.
    Quarantine,
    /// 451 4.7.x in the session; the retry is checked again.
    TempFail,
    /// 550 5.7.x in the session (at MAIL, RCPT or end of DATA); never accepted and bounced later.
    Reject,
}

impl Action {
    /// Every action, mildest first.
    pub const ALL: [Action; 5] =
        [Action::Allow, Action::MarkSpam, Action::Quarantine, Action::TempFail, Action::Reject];
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SpamPolicyConfig {
    pub spf: SpfCheck,
    pub dkim: DkimCheck,
    pub dmarc: DmarcCheck,
    pub dnsbl: DnsblCheck,
    /// Senders that are spam whatever else is true (even with SPF passing).
    pub block_list: BlockList,
    /// Senders that are not spam, unless SPF fails (a forged allow-listed sender must not pass).
    pub allow_list: AllowList,
    /// Sender domains that skip every spam check.
    pub trusted_domains: Vec<String>,
    /// Rules on the message's MIME content.
    pub content: ContentRules,
    /// Banners for mail from unauthenticated or external senders.
    pub sender_warnings: SenderWarnings,
    /// Header added by MarkSpam, as "Name: value".
    pub spam_header: String,
    /// How long quarantined messages are kept.
    pub quarantine_retention: HumanDuration,
    /// Digests of what was quarantined, sent to the recipients.
    pub notifications: Notifications,
}

impl Default for SpamPolicyConfig {
    fn default() -> Self {
        Self {
            spf: SpfCheck::default(),
            dkim: DkimCheck::default(),
            dmarc: DmarcCheck::default(),
            dnsbl: DnsblCheck::default(),
            block_list: BlockList::default(),
            allow_list: AllowList::default(),
            trusted_domains: Vec::new(),
            content: ContentRules::default(),
            sender_warnings: SenderWarnings::default(),
            spam_header: "X-Spam-Flag: YES".into(),
            quarantine_retention: HumanDuration::from_secs(30 * 86400),
            notifications: Notifications::default(),
        }
    }
}

/// SPF (RFC 7208) of the MAIL FROM identity (HELO identity for the null sender).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SpfCheck {
    pub soft_fail: Action,
    pub fail: Action,
}

impl Default for SpfCheck {
    fn default() -> Self {
        Self { soft_fail: Action::MarkSpam, fail: Action::Reject }
    }
}

/// DKIM (RFC 6376): a signature is present and does not verify.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DkimCheck {
    pub fail: Action,
}

impl Default for DkimCheck {
    fn default() -> Self {
        Self { fail: Action::MarkSpam }
    }
}

/// DMARC (RFC 7489): the From domain's policy when neither SPF nor DKIM passes aligned.
/// The defaults honour the sender's published policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DmarcCheck {
    /// Failure under p=quarantine.
    pub quarantine: Action,
    /// Failure under p=reject.
    pub reject: Action,
}

impl Default for DmarcCheck {
    fn default() -> Self {
        Self { quarantine: Action::Quarantine, reject: Action::Reject }
    }
}

/// DNS blocklists: the client IP in `zones`, the sender domain in `rhsblZones`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DnsblCheck {
    /// IP blocklist zones, e.g. "zen.spamhaus.org".
    pub zones: Vec<String>,
    /// Domain blocklist zones for the sender's domain, e.g. "dbl.spamhaus.org".
    pub rhsbl_zones: Vec<String>,
    pub action: Action,
}

impl Default for DnsblCheck {
    fn default() -> Self {
        Self { zones: Vec::new(), rhsbl_zones: Vec::new(), action: Action::Reject }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct BlockList {
    /// Sender domains.
    pub domains: Vec<String>,
    /// Whole sender addresses.
    pub addresses: Vec<String>,
    /// Top-level domains, e.g. "zip".
    pub tlds: Vec<String>,
    pub action: Action,
}

impl Default for BlockList {
    fn default() -> Self {
        Self { domains: Vec::new(), addresses: Vec::new(), tlds: Vec::new(), action: Action::Reject }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AllowList {
    /// Sender domains.
    pub domains: Vec<String>,
    /// Whole sender addresses.
    pub addresses: Vec<String>,
}

/// Checks of the MIME content (every part, decoded). Each fires at most once per message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ContentRules {
    /// HTML parts with one of `htmlTagNames` (frames, plug-ins, forms: phishing tools).
    pub html_tags: Action,
    /// The tags `htmlTags` looks for.
    pub html_tag_names: Vec<String>,
    /// Office documents carrying VBA macros (macro-enabled OOXML, or OLE files with a VBA project).
    pub office_macros: Action,
    /// Script in HTML (`<script>`, `javascript:` links, event handlers) or JavaScript attachments.
    pub javascript: Action,
    /// Web bugs: 1x1 images loaded from a remote server.
    pub web_bugs: Action,
    /// Bulk mail: `Precedence: bulk|junk|list` or a `List-Unsubscribe` header.
    pub bulk_mail: Action,
}

impl Default for ContentRules {
    fn default() -> Self {
        Self {
            html_tags: Action::MarkSpam,
            html_tag_names: ["frame", "iframe", "object", "embed", "form"].map(String::from).to_vec(),
            office_macros: Action::Quarantine,
            javascript: Action::Quarantine,
            web_bugs: Action::Allow,
            bulk_mail: Action::Allow,
        }
    }
}

impl ContentRules {
    /// Whether any rule can change the verdict (otherwise the MIME parse is skipped).
    pub fn any_active(&self) -> bool {
        [self.html_tags, self.office_macros, self.javascript, self.web_bugs, self.bulk_mail]
            .iter()
            .any(|a| *a != Action::Allow)
    }
}

/// Banners telling the reader to be careful. Each is off unless set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SenderWarnings {
    /// For senders whose SPF failed (fail or softfail) or whose DKIM signatures all failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unauthenticated: Option<Warning>,
    /// For senders outside the gateway's served domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<Warning>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Warning {
    /// Header added, as "Name: value".
    pub header: String,
    /// Put before the Subject (once), e.g. "[EXTERNAL]".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_prefix: Option<String>,
}

/// Quarantine digests: per recipient, the messages held for them since the last digest.
/// For a group address the digest goes to the group's moderator, or to `admin` when it has none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Notifications {
    /// Send digests.
    pub enabled: bool,
    /// How often (each recipient gets what was held since the last one).
    pub interval: HumanDuration,
    /// Gets a copy of every digest (and the digests of groups without a moderator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The digests' sender; defaults to postmaster@<hostname>.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl Default for Notifications {
    fn default() -> Self {
        Self { enabled: false, interval: HumanDuration::from_secs(86400), admin: None, from: None }
    }
}
