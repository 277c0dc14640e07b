//! Prometheus metrics, served as text at /metrics on the admin port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabel {
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub method: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub key: &'static str,
    pub count: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub check: &'static str,
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn delivery_histogram() -> Histogram {
    // 1 ms .. ~9 h (queue time includes retries)
    Histogram::new(exponential_buckets(0.001, 3.0, 16))
}

pub struct Metrics {
    pub registry: Registry,
    pub connections: Family<ListenerLabel, Counter>,
    pub connections_active: Gauge,
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// Messages accepted to leave through a sending account, by account.
    pub account_messages: Family<AccountLabel, Counter>,
    /// Admin API requests refused, by reason.
    pub admin_refused: Family<ReasonLabel, Counter>,
    pub messages: Family<OutcomeLabels, Counter>,
    pub recipients_refused: Family<ReasonLabel, Counter>,
    pub accept_latency: Histogram,
    pub queue_jobs: Gauge,
    pub queue_messages: Gauge,
    pub quarantine_entries: Gauge,
    /// 1 when the store answered the last scrape's queue query, 0 when it did not.
    pub store_up: Gauge,
    pub delivery_attempts: Family<ResultLabel, Counter>,
    pub delivery_recipients: Family<ResultLabel, Counter>,
    pub delivery_latency: HistogramFamily<ResultLabel>,
    pub queue_time: Histogram,
    pub dsns: Counter,
    /// Quarantine digest windows claimed by this pod (with or without held mail in them).
    pub digest_windows: Counter,
    pub config_reloads: Family<ResultLabel, Counter>,
    pub auth_results: Family<AuthLabels, Counter>,
    pub spam_verdicts: Family<ActionLabel, Counter>,
    pub check_timeouts: Family<StageLabel, Counter>,
    /// SMTP AUTH attempts by result (success, failure, locked_out).
    pub logins: Family<ResultLabel, Counter>,
    /// Connections and messages refused by a rate limit, by the limit's key and count.
    pub rate_limited: Family<LimitLabels, Counter>,
    /// Recipients accepted and dropped by a `Discard` relay rule.
    pub recipients_discarded: Counter,
    /// Clients that failed a connection-policy check, by check and the action taken.
    pub connection_checks: Family<CheckLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("postern");
        let m = Self {
            connections: Family::default(),
            connections_active: Gauge::default(),
            connections_refused: Family::default(),
            admin_refused: Family::default(),
            account_messages: Family::default(),
            messages: Family::default(),
            recipients_refused: Family::default(),
            accept_latency: latency_histogram(),
            queue_jobs: Gauge::default(),
            queue_messages: Gauge::default(),
            quarantine_entries: Gauge::default(),
            store_up: Gauge::default(),
            delivery_attempts: Family::default(),
            delivery_recipients: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            queue_time: delivery_histogram(),
            dsns: Counter::default(),
            digest_windows: Counter::default(),
            config_reloads: Family::default(),
            auth_results: Family::default(),
            spam_verdicts: Family::default(),
            check_timeouts: Family::default(),
            logins: Family::default(),
            rate_limited: Family::default(),
            recipients_discarded: Counter::default(),
            connection_checks: Family::default(),
            registry: Registry::default(),
        };
        // Known outcomes start at 0, so a rate or ratio over them (the chart's alerts) has a
        // series from the first scrape, not only after the first such event.
        for result in ["delivered", "partial", "deferred", "failed"] {
            drop(m.delivery_attempts.get_or_create(&ResultLabel { result }));
        }
        for result in ["ok", "invalid"] {
            drop(m.config_reloads.get_or_create(&ResultLabel { result }));
        }
        for action in postern_api::Action::ALL {
            drop(m.spam_verdicts.get_or_create(&ActionLabel { action: spam_action(action) }));
        }
        registry.register("smtp_connections", "SMTP connections accepted", m.connections.clone());
        registry.register("smtp_connections_active", "SMTP sessions open now", m.connections_active.clone());
        registry.register(
            "account_messages",
            "Messages accepted to leave through a sending account, by account",
            m.account_messages.clone(),
        );
        registry.register(
            "admin_refused",
            "Admin API requests refused: host, cross_origin, unauthenticated, forbidden, review_failed",
            m.admin_refused.clone(),
        );
        registry.register(
            "smtp_connections_refused",
            "SMTP connections refused before the greeting",
            m.connections_refused.clone(),
        );
        registry.register(
            "messages",
            "Messages by outcome (queued, rejected, tempfailed) and reason",
            m.messages.clone(),
        );
        registry.register(
            "spam_check_timeouts",
            "Spam checks that ran past their time budget (answered 451 4.4.3), by stage (envelope, content)",
            m.check_timeouts.clone(),
        );
        registry.register("recipients_refused", "RCPT TO refused, by reason", m.recipients_refused.clone());
        registry.register(
            "accept_latency_seconds",
            "End of DATA until the 250 reply (includes the durable write)",
            m.accept_latency.clone(),
        );
        registry.register("queue_jobs", "Delivery jobs in the queue", m.queue_jobs.clone());
        registry.register("queue_messages", "Messages in the queue", m.queue_messages.clone());
        registry.register("quarantine_entries", "Messages in quarantine", m.quarantine_entries.clone());
        registry.register(
            "store_up",
            "1 when the store (embedded or Redis) answered the last scrape, 0 when it did not",
            m.store_up.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Delivery attempts by result (delivered, partial, deferred, failed)",
            m.delivery_attempts.clone(),
        );
        registry.register(
            "delivery_recipients",
            "Recipients by delivery result (delivered, deferred, bounced, dropped)",
            m.delivery_recipients.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Duration of one delivery attempt, by result",
            m.delivery_latency.clone(),
        );
        registry.register(
            "queue_time_seconds",
            "Time from acceptance to final delivery of a job",
            m.queue_time.clone(),
        );
        registry.register("dsns", "Delivery status notifications (bounces) generated", m.dsns.clone());
        registry.register(
            "digest_windows",
            "Quarantine digest windows claimed by this pod, whether or not mail was held in them",
            m.digest_windows.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads by result (ok, invalid)",
            m.config_reloads.clone(),
        );
        registry.register(
            "auth_results",
            "SPF, DKIM (per signature) and DMARC results of checked messages",
            m.auth_results.clone(),
        );
        registry.register(
            "spam_verdicts",
            "Spam verdicts of checked messages, by action",
            m.spam_verdicts.clone(),
        );
        registry.register(
            "smtp_auth_attempts",
            "SMTP AUTH attempts by result (success, failure, locked_out: refused after failed logins)",
            m.logins.clone(),
        );
        registry.register(
            "rate_limited",
            "Connections and messages refused by a rate limit, by the limit's key and what it counts",
            m.rate_limited.clone(),
        );
        registry.register(
            "recipients_discarded",
            "Recipients accepted with 250 and dropped by a Discard relay rule",
            m.recipients_discarded.clone(),
        );
        registry.register(
            "connection_checks_failed",
            "Clients that failed a connection-policy check (reverse_dns, helo_fqdn, helo_not_ours, early_talker), by the action taken (log, reject)",
            m.connection_checks.clone(),
        );
        Self { registry, ..m }
    }

    /// A client failed a connection-policy check; `rejected`: it was refused for it.
    pub fn connection_check(&self, check: &'static str, rejected: bool) {
        let action = if rejected { "reject" } else { "log" };
        self.connection_checks.get_or_create(&CheckLabels { check, action }).inc();
    }

    pub fn message(&self, outcome: &'static str, reason: &'static str) {
        self.messages.get_or_create(&OutcomeLabels { outcome, reason }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// The `action` label of `postern_spam_verdicts_total`.
pub fn spam_action(a: postern_api::Action) -> &'static str {
    use postern_api::Action;
    match a {
        Action::Allow => "allow",
        Action::MarkSpam => "mark_spam",
        Action::Quarantine => "quarantine",
        Action::TempFail => "temp_fail",
        Action::Reject => "reject",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
