//! DATA and BDAT (CHUNKING), and the end of a message: build the stored copy, plan its
//! delivery jobs, write both durably, and only then answer 250.

use std::time::Instant;

use super::framing::DataReader;
use super::received;
use super::reply::{self, Reply};
use super::session::Transaction;
use super::session::{Flow, Session, State};
use crate::config::ConfigSnapshot;
use crate::metrics::{ActionLabel, AuthLabels, LimitLabels, StageLabel};
use crate::policy::submission;
use crate::policy::{forwarding, limits};
use crate::quarantine;
use crate::routing;
use crate::spam::{ContentVerdict, Verdict};
use crate::store::{Message, NewMessage, RateDecision, TransportFlags, new_id};
use crate::util::time::{ms, now_ms};
use postern_api::Action;

impl Session {
    pub(super) async fn handle_data(&mut self) -> Flow {
        let Some(tx) = &self.tx else { return self.push_error(&reply::BAD_SEQUENCE_MAIL) };
        if tx.recipients.is_empty() && tx.discarded.is_empty() {
            return self.push_error(&reply::BAD_SEQUENCE_RCPT);
        }
        if !tx.body.is_empty() {
            return self.push_error(&Reply::fixed(503, "5.5.1 DATA cannot follow BDAT"));
        }
        self.state = State::Data(DataReader::new());
        self.push(&Reply::fixed(354, "End data with <CR><LF>.<CR><LF>"));
        Flow::Continue
    }

    pub(super) async fn handle_bdat(&mut self, chunk_size: usize, is_last: bool) -> Flow {
        let max = self.cfg.limits.max_message_size;
        let chunk = chunk_size as u64;
        // A chunk larger than any message we take: reading it all just to drop it would hold
        // the connection for as long as the client likes. Refuse it and close.
        if chunk > max {
            return self.refuse_oversized_chunk();
        }
        // Both are at most the limit here (the body never passes it), so this cannot wrap.
        let so_far = self.tx.as_ref().map_or(0, |t| t.body.len() as u64);
        let too_big = so_far + chunk > max;
        // The chunk's bytes follow the command whatever we answer: a refused chunk is answered
        // at once, then its bytes are read and dropped (never buffered).
        let refusal = match &self.tx {
            None => Some(reply::BAD_SEQUENCE_MAIL),
            Some(tx) if tx.recipients.is_empty() && tx.discarded.is_empty() => Some(reply::BAD_SEQUENCE_RCPT),
            Some(_) if too_big => Some(reply::MESSAGE_TOO_BIG),
            Some(_) => None,
        };
        match refusal {
            Some(reply) => {
                self.state = State::DiscardBdat { left: chunk };
                self.discarded_message(reply)
            }
            None => {
                self.state = State::Bdat { left: chunk, last: is_last };
                Flow::Continue
            }
        }
    }

    /// The rate limits this message counts against (its client, user, sender domain), as
    /// `cfg` (the session's snapshot, held by the caller) has them.
    fn message_limits<'c>(&self, cfg: &'c ConfigSnapshot, tx: &Transaction) -> limits::MessageLimits<'c> {
        let ip = self.client_ip();
        let sender_domain = crate::address::domain_of(&tx.sender);
        let subject = limits::Subject {
            ip,
            trusted: cfg.is_trusted(ip),
            user: self.user.as_deref().map(|u| u.name.as_str()),
            sender_domain: sender_domain.as_deref(),
        };
        let recipients = u32::try_from(tx.recipients.len()).unwrap_or(u32::MAX);
        limits::MessageLimits::new(cfg, &subject, recipients)
    }

    /// A message over a rate limit: counted, logged, and 451 with when to retry.
    fn rate_limited(&mut self, id: &str, tx: &Transaction, limited: &limits::Limited<'_>) -> Flow {
        let (key, count) = limited.labels();
        self.ctx.metrics.rate_limited.get_or_create(&LimitLabels { key, count }).inc();
        self.ctx.metrics.message("tempfailed", "rate_limited");
        tracing::info!(queue_id = %id, client = %self.client, from = %tx.sender, key, count, retry_after = ?limited.retry_after, decision = "tempfail", "message refused: rate limit");
        let reply = Reply::new(451, limited.reply_text());
        self.push_error(&reply)
    }

    /// A BDAT chunk that is larger than the size limit by itself (or past 64 bits).
    pub(super) fn refuse_oversized_chunk(&mut self) -> Flow {
        if self.tx.take().is_some() {
            self.ctx.metrics.message("rejected", "too_large");
        }
        tracing::info!(client = %self.client, "BDAT chunk larger than the message size limit; closing");
        self.push(&reply::MESSAGE_TOO_BIG);
        self.push(&reply::CLOSING_AFTER_OVERSIZED_CHUNK);
        Flow::Close
    }

    pub(super) async fn end_of_chunk(&mut self, last: bool) -> Flow {
        if last {
            return self.end_of_message().await;
        }
        let size = self.tx.as_ref().map_or(0, |t| t.body.len());
        self.push(&Reply::new(250, format!("2.0.0 {size} octets received")));
        Flow::Continue
    }

    /// Message data that was read and dropped (too large, or a refused BDAT chunk).
    pub(super) fn discarded_message(&mut self, reply: Reply) -> Flow {
        if let Some(tx) = self.tx.take() {
            let reason = if reply == reply::MESSAGE_TOO_BIG { "too_large" } else { "bad_sequence" };
            self.ctx.metrics.message("rejected", reason);
            tracing::info!(client = %self.client, from = %tx.sender, decision = "rejected", reason, "message refused");
        }
        self.push_error(&reply)
    }

    pub(super) async fn end_of_message(&mut self) -> Flow {
        let Some(tx) = self.tx.take() else { return Flow::Continue };
        if tx.body.len() as u64 > self.cfg.limits.max_message_size {
            self.ctx.metrics.message("rejected", "too_large");
            return self.push_error(&reply::MESSAGE_TOO_BIG);
        }
        self.messages += 1;
        let started = Instant::now();
        let id = new_id();
        if tx.recipients.is_empty() {
            // Every recipient was discarded by a relay rule: read, acknowledged, dropped.
            self.ctx.metrics.message("discarded", "relay_rule");
            self.junk = 0;
            tracing::info!(queue_id = %id, client = %self.client, from = %tx.sender, rcpts = tx.discarded.len(), decision = "discarded", "message discarded by a relay rule");
            self.push(&Reply::new(250, format!("2.0.0 Ok: queued as {id}")));
            return Flow::Continue;
        }
        let now = now_ms();
        let helo = self.helo.as_ref();
        let header = received::header(&received::Trace {
            helo: helo.map_or("unknown", |h| h.name.as_str()),
            extended: helo.is_some_and(|h| h.extended),
            client_ip: self.client_ip(),
            hostname: self.hostname(),
            tls: self.tls.as_ref(),
            smtputf8: tx.smtputf8,
            authenticated: self.user.is_some(),
            id: &id,
            single_recipient: (tx.recipients.len() == 1).then(|| tx.recipients[0].as_str()),
        });
        let content = received::normalize_line_endings(&tx.body);
        if let Some(user) = &self.user
            && self.cfg.auth.restrict_senders
            && let Err(denied) = submission::check_header_from(user, &content)
        {
            self.ctx.metrics.message("rejected", "sender_not_owned");
            tracing::info!(queue_id = %id, client = %self.client, user = %user.name, header_from = %denied.address, decision = "rejected", "message refused: From is not the user's address");
            return self.push_error(&Reply::new(
                553,
                format!("5.7.1 From header rejected: not owned by user {}", reply::printable(&user.name)),
            ));
        }
        if self.cfg.relay.block_auto_forwarding
            && tx
                .recipients
                .iter()
                .any(|r| crate::address::domain_of(r).is_none_or(|d| self.cfg.served_domain(&d).is_none()))
            && let Some(mark) = forwarding::auto_forward_mark(&content)
        {
            self.ctx.metrics.message("rejected", "auto_forward");
            tracing::info!(queue_id = %id, client = %self.client, from = %tx.sender, header = %mark, decision = "rejected", "message refused: automatic forwarding to an outside domain");
            return self.push_error(&Reply::new(
                550,
                format!("5.7.1 Automatic forwarding to outside domains is not allowed ({mark} header)"),
            ));
        }
        // Mail relayed in by an inbound gateway: the client that matters for the checks is
        // the one the gateway received it from, named in the gateway's Received header.
        let original_client = self
            .cfg
            .is_inbound_gateway(self.client_ip())
            .then(|| received::original_client_ip(&tx.body))
            .flatten();

        let Some(checked) = self.check_content(&tx, original_client, &content).await else {
            self.ctx.metrics.message("tempfailed", "check_timeout");
            tracing::warn!(queue_id = %id, client = %self.client, from = %tx.sender, decision = "tempfail", "content checks ran out of time; told the client to retry");
            return self.push_error(&reply::CHECKS_TIMED_OUT);
        };
        let verdict = &checked.verdict;
        if let Some(reply) = reply::spam_refusal(verdict) {
            let (outcome, decision) =
                if reply.code >= 500 { ("rejected", "rejected") } else { ("tempfailed", "tempfail") };
            self.ctx.metrics.message(outcome, "spam");
            tracing::info!(queue_id = %id, client = %self.client, from = %tx.sender, decision, reasons = %verdict.reasons_text(), "message refused by spam checks");
            return self.push_error(&reply);
        }
        // Submitted mail whose sender has a sending account leaves through it, named as the
        // account says when the sender gave no name.
        let submitted = self.user.is_some() || self.cfg.is_trusted(self.client_ip());
        let account = crate::accounts::select(&self.cfg.accounts, &tx.sender, submitted);
        // A Direct account sends for its domain only once the domain publishes its DKIM key
        // (checked at MAIL FROM already; again here, the config may have changed since).
        let direct = account.as_ref().and_then(|(a, _)| a.direct.as_ref().map(|d| (a, d)));
        let sender_domain = crate::address::domain_of(&tx.sender).unwrap_or_default();
        if let Some((a, _)) = direct
            && let Some(text) = crate::accounts::unverified(
                &self.ctx.signing,
                &self.ctx.dns,
                &self.ctx.confirmations,
                a,
                &tx.sender,
            )
            .await
        {
            self.ctx.metrics.message("rejected", "sender_not_verified");
            tracing::info!(queue_id = %id, client = %self.client, from = %tx.sender, account = %a.name, decision = "rejected", "message refused: the Direct account's domain does not publish its DKIM key yet");
            return self.push_error(&Reply::new(550, text));
        }
        let named = account
            .as_ref()
            .and_then(|(a, _)| a.display_name.as_deref())
            .and_then(|name| crate::accounts::with_display_name(&checked.content, name));
        let mut body = Vec::with_capacity(header.len() + content.len() + 512);
        body.extend_from_slice(header.as_bytes());
        body.extend_from_slice(checked.added_headers.as_bytes());
        body.extend_from_slice(named.as_deref().unwrap_or(&checked.content));
        if let Some((a, d)) = direct {
            match self.ctx.signing.sign(d, &sender_domain, &body) {
                Ok(signature) => {
                    body.splice(0..0, signature.into_bytes());
                }
                Err(e) => {
                    self.ctx.metrics.message("tempfailed", "signing");
                    tracing::error!(queue_id = %id, account = %a.name, error = %e, decision = "tempfail", "message not accepted: DKIM signing failed");
                    return self.push_error(&Reply::new(
                        451,
                        "4.7.0 Cannot sign the message now; try again later".to_string(),
                    ));
                }
            }
        }
        let size = body.len();

        if verdict.action == Action::Quarantine {
            // Held mail counts against the limits too, in a round trip of its own (rare path).
            let cfg = self.cfg.clone();
            let limits = self.message_limits(&cfg, &tx);
            if !limits.checks.is_empty() {
                match self.ctx.store.rate_limit(&limits.checks).await.map(|d| limits.limited(d)) {
                    Ok(Some(limited)) => return self.rate_limited(&id, &tx, &limited),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(queue_id = %id, error = %e, "rate limits not checked: store unavailable")
                    }
                }
            }
            return self.quarantine(&tx, id, body, verdict).await;
        }

        let message = Message {
            id: id.clone(),
            sender: tx.sender.clone(),
            received_at: now,
            smtputf8: tx.smtputf8,
            eight_bit: tx.eight_bit,
            body,
        };
        let lifetime = ms(self.cfg.delivery.lifetime.get());
        let plan = match &account {
            Some((a, Some(hop))) => routing::plan(&crate::accounts::targets(&tx.recipients, a, hop)),
            Some((a, None)) => routing::plan(&crate::accounts::direct_targets(&tx.targets, a, &self.cfg)),
            None => routing::plan(&tx.targets),
        };
        let new = NewMessage::new(message, plan, lifetime);
        let job_count = new.jobs.len();
        let original_client = original_client.map(|ip| ip.to_string());
        let spam = verdict.action == Action::MarkSpam;
        let reasons = verdict.reasons_text();
        // The rate limits are counted in the same store write that queues the message (one
        // round trip with Redis): a limited message is neither queued nor counted.
        let cfg = self.cfg.clone();
        let limits = self.message_limits(&cfg, &tx);
        let stored = self.ctx.store.enqueue_within(new, &limits.checks).await;
        if let Ok(decision @ RateDecision::Limited { .. }) = &stored
            && let Some(limited) = limits.limited(decision.clone())
        {
            return self.rate_limited(&id, &tx, &limited);
        }
        let metrics = &self.ctx.metrics;
        match stored.map(|_| ()) {
            Ok(()) => {
                metrics.accept_latency.observe(started.elapsed().as_secs_f64());
                metrics.message("queued", "accepted");
                if let Some((a, _)) = &account {
                    metrics
                        .account_messages
                        .get_or_create(&crate::metrics::AccountLabel { account: a.name.clone() })
                        .inc();
                }
                self.junk = 0;
                self.ctx.queue_wakeup.notify_one();
                tracing::info!(
                    queue_id = %id,
                    client = %self.client,
                    original_client = original_client.as_deref(),
                    from = %tx.sender,
                    rcpts = tx.recipients.len(),
                    discarded = tx.discarded.len(),
                    jobs = job_count,
                    account = account.as_ref().map(|(a, _)| a.name.as_str()),
                    size,
                    tls = self.tls.is_some(),
                    spam,
                    reasons = %reasons,
                    decision = "queued",
                    "message accepted"
                );
                self.push(&Reply::new(250, format!("2.0.0 Ok: queued as {id}")));
                Flow::Continue
            }
            Err(e) => {
                metrics.message("tempfailed", "storage");
                tracing::error!(
                    queue_id = %id,
                    client = %self.client,
                    from = %tx.sender,
                    error = %e,
                    decision = "tempfail",
                    "message not stored; told the client to retry"
                );
                self.push_error(&reply::STORAGE_FAILURE)
            }
        }
    }

    /// Runs the content checks of the transaction's spam policy within
    /// `limits.contentCheckTimeout` (`None`: they ran out of time), and counts what they found.
    async fn check_content<'c>(
        &self,
        tx: &Transaction,
        original_client: Option<std::net::IpAddr>,
        content: &'c [u8],
    ) -> Option<ContentVerdict<'c>> {
        let choice = tx.spam.as_ref();
        let policy = choice.and_then(|c| c.policy.as_deref());
        let client = crate::spam::Client {
            ip: original_client.unwrap_or_else(|| self.client_ip()),
            helo: self.helo.as_ref().map_or("", |h| h.name.as_str()),
            sender: &tx.sender,
            hostname: &self.cfg.hostname,
        };
        let Some(policy) = policy else {
            // No policy: nothing to wait for (only forged Authentication-Results go), so no
            // time budget either; this is the plain relay's hot path.
            return Some(self.ctx.spam.check_content(None, None, &client, false, content).await);
        };
        let external =
            crate::address::domain_of(&tx.sender).is_none_or(|d| self.cfg.served_domain(&d).is_none());
        let envelope = choice.and_then(|c| c.envelope.as_ref());
        let checks = self.ctx.spam.check_content(Some(&policy.config), envelope, &client, external, content);
        let budget = self.cfg.limits.content_check_timeout.get();
        let metrics = &self.ctx.metrics;
        let Ok(judged) = tokio::time::timeout(budget, checks).await else {
            metrics.check_timeouts.get_or_create(&StageLabel { stage: "content" }).inc();
            return None;
        };
        for &(method, result) in &judged.results {
            metrics.auth_results.get_or_create(&AuthLabels { method, result }).inc();
        }
        let action = crate::metrics::spam_action(judged.verdict.action);
        metrics.spam_verdicts.get_or_create(&ActionLabel { action }).inc();
        Some(judged)
    }

    /// Holds the message in the quarantine instead of delivering it; the client is told it was
    /// accepted (a spammer learns nothing).
    async fn quarantine(&mut self, tx: &Transaction, id: String, body: Vec<u8>, verdict: &Verdict) -> Flow {
        // Only a policy quarantines, so there is one.
        let Some(policy) = tx.spam.as_ref().and_then(|c| c.policy.clone()) else {
            return self.push_error(&reply::STORAGE_FAILURE);
        };
        let held = quarantine::Held {
            id: id.clone(),
            sender: tx.sender.clone(),
            recipients: tx.recipients.clone(),
            reasons: verdict.reasons.clone(),
            client_ip: self.client_ip(),
            policy,
            flags: TransportFlags { smtputf8: tx.smtputf8, eight_bit: tx.eight_bit },
            body,
        };
        match quarantine::hold(&*self.ctx.store, held).await {
            Ok(()) => {
                self.ctx.metrics.message("quarantined", "spam");
                self.junk = 0;
                tracing::info!(queue_id = %id, client = %self.client, from = %tx.sender, rcpts = tx.recipients.len(), decision = "quarantined", reasons = %verdict.reasons_text(), "message quarantined");
                self.push(&Reply::new(250, format!("2.0.0 Ok: queued as {id}")));
                Flow::Continue
            }
            Err(e) => {
                self.ctx.metrics.message("tempfailed", "storage");
                tracing::error!(queue_id = %id, error = %e, decision = "tempfail", "quarantine write failed; told the client to retry");
                self.push_error(&reply::STORAGE_FAILURE)
            }
        }
    }
}
