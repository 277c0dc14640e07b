//! What the store keeps: messages (envelope and body, stored once), delivery jobs (one per
//! message and next hop, each with its own retry state) and quarantine entries.

use postern_api::{
    Destination, OAuthSend, OutboundGateway, SendingAccount, SmtpAuth, SmtpSecurity, TlsMode, TlsPolicy,
};
use serde::{Deserialize, Serialize};

/// Stored as the admin API shows them (the same fields, one definition).
pub use postern_api::admin::{MessageSummary, QueueStats};

/// A queue id: time-ordered (UUIDv7) and unique across restarts and pods.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// How many trailing characters of an id place it in a partition (`partition_key`).
const PARTITION_TAIL: usize = 4;

/// A new queue id that ends like `other` (when `other` ends in hex digits, as ids do): a store
/// that spreads its data over partitions places an id by its tail (`partition_key`), so a
/// message made from another (the DSN of a message that bounced, the release of a quarantine
/// entry) lands in the same partition and is written in the same atomic step as the change
/// that makes it. The id keeps its time order and 58 random bits.
pub fn new_id_beside(other: &str) -> String {
    let mut id = new_id();
    let tail = other.len().checked_sub(PARTITION_TAIL).and_then(|at| other.get(at..));
    if let Some(tail) = tail.filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit())) {
        id.truncate(id.len() - PARTITION_TAIL);
        id.push_str(&tail.to_ascii_lowercase());
    }
    id
}

/// What places an id in a partition: its last few bytes (the random end of a UUIDv7), which
/// `new_id_beside` copies.
pub fn partition_key(id: &str) -> &[u8] {
    let bytes = id.as_bytes();
    &bytes[bytes.len().saturating_sub(PARTITION_TAIL)..]
}

/// An accepted message. The body is stored once and shared by all of its jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    /// Milliseconds since the Unix epoch.
    pub received_at: u64,
    /// The client asked for SMTPUTF8 (the envelope or headers carry UTF-8).
    #[serde(default)]
    pub smtputf8: bool,
    /// The client declared BODY=8BITMIME.
    #[serde(default)]
    pub eight_bit: bool,
    /// The whole message as stored: our Received header, then what the client sent.
    #[serde(skip)]
    pub body: Vec<u8>,
}

impl Message {
    /// A message the gateway itself originates (a DSN, a digest), received now.
    pub fn generated(sender: String, body: Vec<u8>) -> Self {
        Self {
            id: new_id(),
            sender,
            received_at: crate::util::time::now_ms(),
            smtputf8: false,
            eight_bit: !body.is_ascii(),
            body,
        }
    }

    /// The message with a new id beside `other`'s (`new_id_beside`).
    pub fn beside(mut self, other: &str) -> Self {
        self.id = new_id_beside(other);
        self
    }
}

/// The jobs one message needs: its recipients grouped per (next hop, bounce setting), in the
/// order each group first appears, each address once per group. Built once at the end of DATA
/// (or at a quarantine release, or for a generated message) and turned into jobs by
/// `NewMessage::new`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeliveryPlan {
    pub jobs: Vec<PlannedJob>,
}

/// One job of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedJob {
    pub next_hop: NextHop,
    /// Send a DSN when a recipient of this job fails permanently.
    pub bounce: bool,
    pub recipients: Vec<Recipient>,
}

impl DeliveryPlan {
    /// Adds a recipient to its (next hop, bounce) job; an address already there is skipped.
    pub fn add(&mut self, next_hop: &NextHop, bounce: bool, recipient: Recipient) {
        match self.jobs.iter_mut().find(|j| j.bounce == bounce && j.next_hop == *next_hop) {
            Some(job) => {
                if !job.recipients.iter().any(|r| r.address.eq_ignore_ascii_case(&recipient.address)) {
                    job.recipients.push(recipient);
                }
            }
            None => {
                self.jobs.push(PlannedJob { next_hop: next_hop.clone(), bounce, recipients: vec![recipient] })
            }
        }
    }

    /// A plan of one job with one recipient.
    pub fn single(next_hop: NextHop, bounce: bool, address: &str) -> Self {
        let recipient = Recipient { address: address.to_string(), original: address.to_string() };
        Self { jobs: vec![PlannedJob { next_hop, bounce, recipients: vec![recipient] }] }
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

/// A message with the jobs that deliver it, written to the store in one atomic step. Every
/// message enters the queue this way: accepted, released from quarantine, or generated.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    pub message: Message,
    pub jobs: Vec<Job>,
}

impl NewMessage {
    /// The message with one job per planned job, all due at once and expiring `lifetime_ms`
    /// after the message was received.
    pub fn new(message: Message, plan: DeliveryPlan, lifetime_ms: u64) -> Self {
        let now = message.received_at;
        let jobs = plan
            .jobs
            .into_iter()
            .map(|planned| Job {
                id: new_id(),
                message_id: message.id.clone(),
                sender: message.sender.clone(),
                recipients: planned.recipients,
                next_hop: planned.next_hop,
                attempts: 0,
                created_at: now,
                due: now,
                expires_at: now.saturating_add(lifetime_ms),
                bounce: planned.bounce,
                last_error: None,
            })
            .collect();
        Self { message, jobs }
    }
}

/// One recipient of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address used in RCPT TO towards the next hop.
    pub address: String,
    /// The address as the client gave it (reported in DSNs as the Original-Recipient).
    pub original: String,
}

/// Where a job goes next: how its hosts are found, and the TLS policy (and AUTH) towards them.
/// Serialized with the names it had as `Route`, so stored jobs stay readable.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NextHop {
    #[serde(rename = "target")]
    pub via: Via,
    pub tls: TlsPolicy,
    /// SMTP AUTH towards this next hop (a smarthost, a sending account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SmtpAuth>,
    /// The sending account this next hop is (logs, metrics, its own connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// How a next hop's hosts are found.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Via {
    /// The MX hosts of a domain (or its A/AAAA when it has no MX).
    Mx(String),
    /// Explicit "host[:port]" entries, tried in order.
    Hosts(Vec<String>),
    /// A sending account's mail API (Microsoft Graph, Gmail), by the account's name.
    MailboxApi(String),
}

impl NextHop {
    pub fn mx(domain: &str, tls: TlsPolicy) -> Self {
        Self { via: Via::Mx(domain.to_ascii_lowercase()), tls, auth: None, account: None }
    }

    pub fn from_destination(d: &Destination) -> Self {
        let via = match &d.mx {
            Some(mx) => Via::Mx(mx.to_ascii_lowercase()),
            None => Via::Hosts(d.hosts.clone()),
        };
        Self { via, tls: d.tls.clone(), auth: None, account: None }
    }

    pub fn smarthost(gw: &OutboundGateway) -> Self {
        Self {
            via: Via::Hosts(vec![gw.host.clone()]),
            tls: gw.tls.clone(),
            auth: gw.auth.clone(),
            account: None,
        }
    }

    /// A sending account's server (its certificate always verified), or its mail API.
    pub fn account(a: &SendingAccount) -> Option<Self> {
        if let Some(o) = a.oauth.as_ref().filter(|o| o.send == OAuthSend::Smtp) {
            // XOAUTH2 to the provider's submission server: the token is looked up by account.
            return Some(Self {
                via: Via::Hosts(vec![o.smtp_server(a.kind)]),
                tls: TlsPolicy { mode: TlsMode::Required, verify: true },
                auth: None,
                account: Some(a.name.clone()),
            });
        }
        if a.oauth.is_some() || a.exchange.is_some() {
            return Some(Self {
                via: Via::MailboxApi(a.name.clone()),
                tls: TlsPolicy { mode: TlsMode::Required, verify: true },
                auth: None,
                account: Some(a.name.clone()),
            });
        }
        let s = a.smtp.as_ref()?;
        let mode = match s.security {
            SmtpSecurity::StartTls => TlsMode::Required,
            SmtpSecurity::Tls => TlsMode::Implicit,
            SmtpSecurity::None => TlsMode::None,
        };
        let host = if s.host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{}]", s.host)
        } else {
            s.host.clone()
        };
        let auth = match (&s.username, &s.password_file) {
            (Some(username), Some(password_file)) => {
                Some(SmtpAuth { username: username.clone(), password_file: password_file.clone() })
            }
            _ => None,
        };
        Some(Self {
            via: Via::Hosts(vec![format!("{host}:{}", s.port())]),
            tls: TlsPolicy { mode, verify: mode != TlsMode::None },
            auth,
            account: Some(a.name.clone()),
        })
    }

    /// A short stable name for logs, metrics, per-destination limits and connection reuse
    /// (so an account's connection, logged in as it, serves only that account).
    pub fn key(&self) -> String {
        if let Some(account) = &self.account {
            return format!("account:{account}");
        }
        let base = match &self.via {
            Via::Mx(d) => format!("mx:{d}"),
            Via::Hosts(h) => format!("hosts:{}", h.join(",")),
            Via::MailboxApi(a) => format!("account:{a}"),
        };
        match &self.auth {
            // Two smarthosts on one server with different logins are two destinations.
            Some(auth) => format!("{base}|{}", auth.username),
            None => base,
        }
    }
}

/// Delivery of one message to one next hop, for one or more recipients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub message_id: String,
    /// Envelope sender for this delivery; empty for `<>`.
    pub sender: String,
    /// Recipients still to deliver.
    pub recipients: Vec<Recipient>,
    #[serde(rename = "route")]
    pub next_hop: NextHop,
    /// Attempts made so far.
    pub attempts: u32,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    /// When the next attempt is due (ms since the epoch).
    pub due: u64,
    /// After this, the job's remaining recipients are bounced (ms since the epoch).
    pub expires_at: u64,
    /// Send a DSN to the sender when a recipient fails permanently or expires.
    pub bounce: bool,
    /// The last temporary error, reported in the DSN when the job expires.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A message held back from delivery, waiting for an admin to release or delete it.
/// Stored (and shown by the admin API) as camelCase JSON; the aliases read entries written
/// before the rename.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineEntry {
    pub id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    /// Why it was held, one line per reason.
    pub reasons: Vec<String>,
    /// The client's IP address.
    #[serde(default, alias = "client_ip")]
    pub client_ip: String,
    /// ms since the epoch.
    #[serde(alias = "created_at")]
    pub created_at: u64,
    /// ms since the epoch; the entry is removed after this.
    #[serde(alias = "expires_at")]
    pub expires_at: u64,
    /// The spam policy that held it (its retention and digests apply).
    #[serde(default)]
    pub policy: String,
    /// The transaction's SMTPUTF8 and 8BITMIME, for the release; `None` in entries written
    /// before they were kept (the release then reads them off the message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<TransportFlags>,
    /// What the headers and MIME structure say, for search, listings and digests.
    #[serde(default)]
    pub summary: MessageSummary,
    #[serde(skip)]
    pub body: Vec<u8>,
}

/// What the client declared about a message's transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportFlags {
    pub smtputf8: bool,
    pub eight_bit: bool,
}
