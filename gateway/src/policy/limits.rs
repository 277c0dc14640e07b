//! Rate limits (`rateLimits`): which rules apply to a new connection or to a message, as store
//! checks (all of a message's limits in one round trip), and the reply that tells a limited
//! client when to come back. Counting happens in the store (`store::limits`): shared by every
//! pod with Redis, per process with the embedded store.

use std::net::IpAddr;
use std::time::Duration;

use postern_api::{RateCount, RateKey, RateLimit};

use crate::config::ConfigSnapshot;
use crate::store::{RateCheck, RateDecision, Store, StoreError};

/// Who and what a check is about.
pub struct Subject<'a> {
    pub ip: IpAddr,
    pub trusted: bool,
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// The domain of MAIL FROM (lower case); `None` for the null sender.
    pub sender_domain: Option<&'a str>,
}

/// A rule the client is over, and when it may try again.
#[derive(Debug)]
pub struct Limited<'c> {
    pub rule: &'c RateLimit,
    pub retry_after: Duration,
}

impl Limited<'_> {
    /// `key` and `count` names for metrics and logs.
    pub fn labels(&self) -> (&'static str, &'static str) {
        (key_name(self.rule.key), count_name(self.rule.count))
    }

    /// What the client is told: 421 for connections (the connection closes), 451 4.7.1 for
    /// messages and recipients, with the limit and when to retry.
    pub fn reply_text(&self) -> String {
        let r = self.rule;
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        let whose = match r.key {
            RateKey::ClientIp => "your address",
            RateKey::User => "your user",
            RateKey::SenderDomain => "your sender domain",
        };
        let status = if r.count == RateCount::Connections { "4.7.0" } else { "4.7.1" };
        format!(
            "{status} Rate limit for {whose} reached ({} {} per {}), try again in {} seconds",
            r.limit,
            count_name(r.count),
            r.per,
            secs.max(1)
        )
    }
}

fn key_name(k: RateKey) -> &'static str {
    match k {
        RateKey::ClientIp => "clientIp",
        RateKey::User => "user",
        RateKey::SenderDomain => "senderDomain",
    }
}

fn count_name(c: RateCount) -> &'static str {
    match c {
        RateCount::Connections => "connections",
        RateCount::Messages => "messages",
        RateCount::Recipients => "recipients",
    }
}

/// The checks of the rules counting `counts` that apply to `subject`, each with its rule. The
/// store key carries the rule's numbers, so a changed rule counts afresh.
fn checks<'c>(
    cfg: &'c ConfigSnapshot,
    subject: &Subject<'_>,
    counts: &[(RateCount, u32)],
) -> Vec<(&'c RateLimit, RateCheck)> {
    let mut out = Vec::new();
    for rule in &cfg.rate_limits {
        let Some(&(_, cost)) = counts.iter().find(|(c, _)| *c == rule.count) else { continue };
        if subject.trusted && rule.exempt_trusted {
            continue;
        }
        let value = match rule.key {
            RateKey::ClientIp => subject.ip.to_string(),
            RateKey::User => match subject.user {
                Some(u) => u.to_string(),
                None => continue,
            },
            RateKey::SenderDomain => match subject.sender_domain {
                Some(d) => d.to_string(),
                None => continue,
            },
        };
        let key = format!(
            "{}:{}:{}/{}:{value}",
            count_name(rule.count),
            key_name(rule.key),
            rule.limit,
            rule.per.get().as_millis()
        );
        out.push((rule, RateCheck { key, limit: rule.limit, period: rule.per.get(), cost }));
    }
    out
}

/// Counts a new connection. `Ok(None)`: allowed (or no rule applies, at no cost).
pub async fn connection<'c>(
    store: &dyn Store,
    cfg: &'c ConfigSnapshot,
    subject: &Subject<'_>,
) -> Result<Option<Limited<'c>>, StoreError> {
    run(store, checks(cfg, subject, &[(RateCount::Connections, 1)])).await
}

/// The limits one message with `recipients` recipients counts against, for the store to check
/// in the same write that queues it (`Store::enqueue_within`) or on their own (`message`).
pub struct MessageLimits<'c> {
    rules: Vec<&'c RateLimit>,
    pub checks: Vec<RateCheck>,
}

impl<'c> MessageLimits<'c> {
    pub fn new(cfg: &'c ConfigSnapshot, subject: &Subject<'_>, recipients: u32) -> Self {
        let counts = [(RateCount::Messages, 1), (RateCount::Recipients, recipients)];
        let (rules, checks) = checks(cfg, subject, &counts).into_iter().unzip();
        Self { rules, checks }
    }

    /// The rule a store's decision names, if it refused.
    pub fn limited(&self, decision: RateDecision) -> Option<Limited<'c>> {
        named_by(&self.rules, decision)
    }
}

fn named_by<'c>(rules: &[&'c RateLimit], decision: RateDecision) -> Option<Limited<'c>> {
    match decision {
        RateDecision::Allowed => None,
        RateDecision::Limited { index, retry_after } => {
            rules.get(index).map(|&rule| Limited { rule, retry_after })
        }
    }
}

/// Counts one message with `recipients` recipients against every rule that applies, in one
/// store round trip of its own; nothing is counted when one of them is over.
pub async fn message<'c>(
    store: &dyn Store,
    cfg: &'c ConfigSnapshot,
    subject: &Subject<'_>,
    recipients: u32,
) -> Result<Option<Limited<'c>>, StoreError> {
    let limits = MessageLimits::new(cfg, subject, recipients);
    if limits.checks.is_empty() {
        return Ok(None);
    }
    Ok(limits.limited(store.rate_limit(&limits.checks).await?))
}

async fn run<'c>(
    store: &dyn Store,
    checks: Vec<(&'c RateLimit, RateCheck)>,
) -> Result<Option<Limited<'c>>, StoreError> {
    if checks.is_empty() {
        return Ok(None);
    }
    let (rules, checks): (Vec<&RateLimit>, Vec<_>) = checks.into_iter().unzip();
    Ok(named_by(&rules, store.rate_limit(&checks).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_api::HumanDuration;

    fn cfg() -> ConfigSnapshot {
        let mut c: postern_api::GatewayConfig =
            postern_api::load_gateway_config("hostname: gw.test\nlisteners:\n  - address: 127.0.0.1:2525\n")
                .unwrap();
        let rule = |key, count, limit| RateLimit {
            key,
            count,
            limit,
            per: HumanDuration::from_secs(3600),
            exempt_trusted: true,
        };
        c.rate_limits = vec![
            rule(RateKey::ClientIp, RateCount::Connections, 2),
            rule(RateKey::ClientIp, RateCount::Messages, 3),
            rule(RateKey::User, RateCount::Recipients, 5),
            rule(RateKey::SenderDomain, RateCount::Messages, 10),
        ];
        ConfigSnapshot::new(c)
    }

    #[test]
    fn rules_apply_by_what_they_count_and_whom() {
        let cfg = cfg();
        let anonymous =
            Subject { ip: "192.0.2.1".parse().unwrap(), trusted: false, user: None, sender_domain: None };
        let keys = |s: &Subject<'_>, counts: &[(RateCount, u32)]| -> Vec<(String, u32)> {
            checks(&cfg, s, counts).into_iter().map(|(_, c)| (c.key, c.cost)).collect()
        };
        assert_eq!(
            keys(&anonymous, &[(RateCount::Connections, 1)]),
            [("connections:clientIp:2/3600000:192.0.2.1".into(), 1)]
        );
        // No user, no sender domain: only the IP rule counts the message.
        assert_eq!(
            keys(&anonymous, &[(RateCount::Messages, 1), (RateCount::Recipients, 4)]),
            [("messages:clientIp:3/3600000:192.0.2.1".to_string(), 1)]
        );
        let user = Subject { user: Some("alice"), sender_domain: Some("example.com"), ..anonymous };
        assert_eq!(
            keys(&user, &[(RateCount::Messages, 1), (RateCount::Recipients, 4)]),
            [
                ("messages:clientIp:3/3600000:192.0.2.1".to_string(), 1),
                ("recipients:user:5/3600000:alice".to_string(), 4),
                ("messages:senderDomain:10/3600000:example.com".to_string(), 1)
            ]
        );
        let trusted = Subject { trusted: true, ..user };
        assert!(keys(&trusted, &[(RateCount::Messages, 1), (RateCount::Recipients, 4)]).is_empty());
    }

    #[tokio::test]
    async fn the_first_rule_over_its_limit_answers_with_when_to_retry() {
        let cfg = cfg();
        let store = crate::store::memory::MemoryStore::default();
        let s = Subject {
            ip: "192.0.2.1".parse().unwrap(),
            trusted: false,
            user: Some("alice"),
            sender_domain: None,
        };
        assert!(message(&store, &cfg, &s, 2).await.unwrap().is_none());
        assert!(message(&store, &cfg, &s, 2).await.unwrap().is_none());
        let limited = message(&store, &cfg, &s, 2).await.unwrap().expect("5 recipients an hour");
        assert_eq!(limited.labels(), ("user", "recipients"));
        assert!(
            limited
                .reply_text()
                .starts_with("4.7.1 Rate limit for your user reached (5 recipients per 1h), try again in "),
            "{}",
            limited.reply_text()
        );
        // One recipient every 12 minutes, bursts of 5: after 4, the next 2 fit in 12 minutes.
        let wait = limited.retry_after;
        assert!(wait > Duration::from_secs(11 * 60) && wait <= Duration::from_secs(12 * 60), "{wait:?}");
        assert!(connection(&store, &cfg, &s).await.unwrap().is_none());
        assert!(connection(&store, &cfg, &s).await.unwrap().is_none());
        let refused = connection(&store, &cfg, &s).await.unwrap().expect("2 connections an hour");
        assert!(refused.reply_text().starts_with("4.7.0 Rate limit for your address"));
    }
}
