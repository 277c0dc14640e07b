//! Who may submit mail through the gateway: listener roles, SMTP AUTH with a users file, failed
//! login handling, and rate limits. Part of `GatewayConfig` (`listeners[].role`, `auth`,
//! `rateLimits`).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// What a listener is for; decides TLS and AUTH rules (RFC 6409, RFC 8314).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ListenerRole {
    /// Mail exchange (port 25): mail from other servers. AUTH off unless `auth: true`.
    #[default]
    Smtp,
    /// Message submission (port 587): STARTTLS is required before AUTH and before MAIL, and a
    /// client must authenticate (or be in `relay.trustedNetworks`). Needs `tls`.
    Submission,
    /// Message submission over implicit TLS (port 465): the TLS handshake comes first; then as
    /// `submission`. Needs `tls`.
    Submissions,
}

impl ListenerRole {
    /// Submission roles: clients authenticate, TLS is required.
    pub fn is_submission(self) -> bool {
        self != Self::Smtp
    }
}

/// SMTP AUTH (PLAIN and LOGIN, offered only under TLS) and what an authenticated user may do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AuthConfig {
    /// The users: one `name:hash` line each, as htpasswd writes them, with an optional third
    /// field listing the addresses (`alice@example.com`) and domains (`@example.com`) the user
    /// may send as, comma-separated: `alice@example.com:$argon2id$...:alice@example.com,@example.org`.
    /// Hashes: argon2id (`$argon2id$`), bcrypt (`$2a$`, `$2b$`, `$2y$`), SHA-crypt (`$5$`,
    /// `$6$`). A user name that is an address may always send as itself. Re-read when it changes
    /// (a mounted Secret). Without a file no one can authenticate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    /// An authenticated user may use only its own addresses and domains in MAIL FROM and in the
    /// header From (553 5.7.1 otherwise).
    pub restrict_senders: bool,
    /// Delays and lockouts after failed logins.
    pub failed_logins: FailedLogins,
}

/// What failed logins cost a client. Counted per client IP in the store (across pods with
/// Redis).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct FailedLogins {
    /// Delay before answering a failed login, times the client's failures in the window (1, 2,
    /// 3... times this), at most `maxDelay`.
    pub delay: HumanDuration,
    /// The longest delay.
    pub max_delay: HumanDuration,
    /// Failed logins within `window` after which the client IP is refused (421 4.7.0) for
    /// `lockout` on every listener that offers AUTH.
    pub max: u32,
    /// The window failures are counted in, from the first one.
    pub window: HumanDuration,
    /// How long a client IP that reached `max` is refused.
    pub lockout: HumanDuration,
}

impl Default for FailedLogins {
    fn default() -> Self {
        Self {
            delay: HumanDuration::from_secs(1),
            max_delay: HumanDuration::from_secs(10),
            max: 5,
            window: HumanDuration::from_secs(15 * 60),
            lockout: HumanDuration::from_secs(15 * 60),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { users_file: None, restrict_senders: true, failed_logins: FailedLogins::default() }
    }
}

/// One rate limit: at most `limit` of `count` per `per`, for each value of `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    /// What is counted separately: each client IP, each authenticated user, each sender domain.
    pub key: RateKey,
    /// What is counted.
    pub count: RateCount,
    /// How many in one `per` (a steady rate with bursts up to `limit`: GCRA).
    pub limit: u32,
    /// The window, e.g. "1m", "1h", "1d".
    pub per: HumanDuration,
    /// Clients in `relay.trustedNetworks` are not limited (unless this is false).
    #[serde(default = "yes")]
    pub exempt_trusted: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RateKey {
    ClientIp,
    /// The authenticated user (unauthenticated sessions are not counted by this limit).
    User,
    /// The domain of MAIL FROM (the null sender is not counted).
    SenderDomain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RateCount {
    /// New connections (checked at connect; only with `key: clientIp`). Over: 421 4.7.0.
    Connections,
    /// Messages (checked at the end of the message, in the store write that queues it). Over:
    /// 451 4.7.1 with when to retry.
    Messages,
    /// Recipients of each message (checked with `messages`). Over: 451 4.7.1 with when to retry.
    Recipients,
}
