//! DATA and BDAT (CHUNKING), and the end of a message: build the stored copy, plan its
//! delivery jobs, write both durably, and only then answer 250.

use std::time::Instant;

use super::framing::DataReader;
use super::received;
use super::reply::{self, Reply};
use super::session::Transaction;
use super::session::{Flow, Session, State};
use crate::metrics::{ActionLabel, AuthLabels, StageLabel};
use crate::routing;
use crate::spam::Verdict;
use crate::store::QuarantineEntry;
use crate::store::{Message, NewMessage, new_id};
use crate::util::time::{ms, now_ms};
use postern_api::Action;

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::MarkSpam => "mark_spam",
        Action::Quarantine => "quarantine",
        Action::TempFail => "temp_fail",
        Action::Reject => "reject",
    }
}

/// The spam checks' result for one message.
struct Checked<'c> {
    verdict: Verdict,
    /// Header lines (with CRLFs) to put above the client's content.
    added_headers: String,
    content: std::borrow::Cow<'c, [u8]>,
}

impl Session {
    pub(super) fn handle_data(&mut self) -> Flow {
        let Some(tx) = &self.tx else { return self.push_error(&reply::BAD_SEQUENCE_MAIL) };
        if tx.recipients.is_empty() {
            return self.push_error(&reply::BAD_SEQUENCE_RCPT);
        }
        if !tx.body.is_empty() {
            return self.push_error(&Reply::fixed(503, "5.5.1 DATA cannot follow BDAT"));
        }
        self.state = State::Data(DataReader::new());
        self.push(&Reply::fixed(354, "End data with <CR><LF>.<CR><LF>"));
        Flow::Continue
    }

    pub(super) fn handle_bdat(&mut self, chunk_size: usize, is_last: bool) -> Flow {
        let max = self.rt.config.limits.max_message_size;
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
            Some(tx) if tx.recipients.is_empty() => Some(reply::BAD_SEQUENCE_RCPT),
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

    /// A BDAT chunk that is larger than the size limit by itself (or past 64 bits).
    pub(super) fn refuse_oversized_chunk(&mut self) -> Flow {
        if self.tx.take().is_some() {
            self.gateway.metrics.message("rejected", "too_large");
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
            self.gateway.metrics.message("rejected", reason);
            tracing::info!(client = %self.client, from = %tx.sender, decision = "rejected", reason, "message refused");
        }
        self.push_error(&reply)
    }

    pub(super) async fn end_of_message(&mut self) -> Flow {
        let Some(tx) = self.tx.take() else { return Flow::Continue };
        if tx.body.len() as u64 > self.rt.config.limits.max_message_size {
            self.gateway.metrics.message("rejected", "too_large");
            return self.push_error(&reply::MESSAGE_TOO_BIG);
        }
        self.messages += 1;
        let started = Instant::now();
        let id = new_id();
        let now = now_ms();
        let helo = self.helo.as_ref();
        let header = received::header(&received::Trace {
            helo: helo.map_or("unknown", |h| h.name.as_str()),
            extended: helo.is_some_and(|h| h.extended),
            client_ip: self.client_ip(),
            hostname: self.hostname(),
            tls: self.tls.as_ref(),
            smtputf8: tx.smtputf8,
            id: &id,
            single_recipient: (tx.recipients.len() == 1).then(|| tx.recipients[0].as_str()),
        });
        let content = received::normalize_line_endings(&tx.body);
        // Mail relayed in by an inbound gateway: the client that matters for the checks is
        // the one the gateway received it from, named in the gateway's Received header.
        let original_client = self
            .rt
            .is_inbound_gateway(self.client_ip())
            .then(|| received::original_client_ip(&tx.body))
            .flatten();

        let Some(checked) = self.spam_verdict(&tx, original_client, &content).await else {
            self.gateway.metrics.message("tempfailed", "check_timeout");
            tracing::warn!(queue_id = %id, client = %self.client, from = %tx.sender, decision = "tempfail", "content checks ran out of time; told the client to retry");
            return self.push_error(&reply::CHECKS_TIMED_OUT);
        };
        let verdict = &checked.verdict;
        if let Some(reply) = reply::spam_refusal(verdict) {
            let (outcome, decision) =
                if reply.code >= 500 { ("rejected", "rejected") } else { ("tempfailed", "tempfail") };
            self.gateway.metrics.message(outcome, "spam");
            tracing::info!(queue_id = %id, client = %self.client, from = %tx.sender, decision, reasons = %verdict.reasons_text(), "message refused by spam checks");
            return self.push_error(&reply);
        }
        let mut body = Vec::with_capacity(header.len() + content.len() + 512);
        body.extend_from_slice(header.as_bytes());
        body.extend_from_slice(checked.added_headers.as_bytes());
        body.extend_from_slice(&checked.content);
        let size = body.len();

        if verdict.action == Action::Quarantine {
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
        let lifetime = ms(self.rt.config.delivery.lifetime.get());
        let new = NewMessage::planned(message, routing::plan(&tx.targets), now, lifetime);
        let job_count = new.jobs.len();
        let original_client = original_client.map(|ip| ip.to_string());
        let spam = verdict.action == Action::MarkSpam;
        let reasons = verdict.reasons_text();
        let metrics = &self.gateway.metrics;
        match self.gateway.store.enqueue(new).await {
            Ok(()) => {
                metrics.accept_latency.observe(started.elapsed().as_secs_f64());
                metrics.message("queued", "accepted");
                self.junk = 0;
                self.gateway.queue_wakeup.notify_one();
                tracing::info!(
                    queue_id = %id,
                    client = %self.client,
                    original_client = original_client.as_deref(),
                    from = %tx.sender,
                    rcpts = tx.recipients.len(),
                    jobs = job_count,
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

    /// The spam policy (name and config) the transaction's recipients are under, if any.
    fn spam_policy<'a>(
        &'a self,
        tx: &'a Transaction,
    ) -> Option<(&'a str, &'a postern_api::SpamPolicyConfig)> {
        let name = tx.spam.as_ref()?.policy.as_deref()?;
        Some((name, self.rt.config.spam_policies.get(name)?))
    }

    /// Runs the spam checks of the transaction's policy: the verdict, the headers to add and
    /// the content as it will be stored (forged Authentication-Results removed, subject
    /// prefixed for a sender warning). `None`: the checks ran past `limits.contentCheckTimeout`.
    async fn spam_verdict<'c>(
        &self,
        tx: &Transaction,
        original_client: Option<std::net::IpAddr>,
        content: &'c [u8],
    ) -> Option<Checked<'c>> {
        let hostname = &self.rt.config.hostname;
        // Nobody else may speak for our authserv-id (RFC 8601 section 5), checked or not.
        let content = crate::spam::headers::remove_forged_auth_results(content, hostname);
        let mut checked = Checked { verdict: Verdict::default(), added_headers: String::new(), content };
        let (Some(choice), Some((_, policy))) = (&tx.spam, self.spam_policy(tx)) else {
            return Some(checked);
        };
        let helo = self.helo.as_ref().map_or("", |h| h.name.as_str());
        let client = crate::spam::Client {
            ip: original_client.unwrap_or_else(|| self.client_ip()),
            helo,
            sender: &tx.sender,
            hostname,
        };
        let checks = async {
            let envelope = match &choice.envelope {
                Some(e) => e.clone(),
                // From an inbound gateway: the connection-time checks run now, on the original client.
                None => self.gateway.spam.check_envelope(policy, &client).await,
            };
            self.gateway.spam.check_content(policy, &envelope, &client, &checked.content).await
        };
        let budget = self.rt.config.limits.content_check_timeout.get();
        let Ok(outcome) = tokio::time::timeout(budget, checks).await else {
            self.gateway.metrics.check_timeouts.get_or_create(&StageLabel { stage: "content" }).inc();
            return None;
        };
        let metrics = &self.gateway.metrics;
        for &(method, result) in &outcome.results {
            metrics.auth_results.get_or_create(&AuthLabels { method, result }).inc();
        }
        let action = action_name(outcome.verdict.action);
        metrics.spam_verdicts.get_or_create(&ActionLabel { action }).inc();
        checked.verdict = outcome.verdict;
        if let Some(ar) = outcome.auth_results {
            checked.added_headers.push_str(&ar);
        }
        if checked.verdict.action == Action::MarkSpam && !policy.spam_header.is_empty() {
            checked.added_headers.push_str(&policy.spam_header);
            checked.added_headers.push_str("\r\n");
        }
        let external =
            crate::address::domain_of(&tx.sender).is_none_or(|d| self.rt.served_domain(&d).is_none());
        let warnings = &policy.sender_warnings;
        let applicable =
            [(outcome.unauthenticated, &warnings.unauthenticated), (external, &warnings.external)];
        let warnings: Vec<_> =
            applicable.into_iter().filter_map(|(on, w)| w.as_ref().filter(|_| on)).collect();
        for w in &warnings {
            checked.added_headers.push_str(&w.header);
            checked.added_headers.push_str("\r\n");
        }
        // Prefixed last to first, so the subject reads in the order above ("[UNVERIFIED] [EXT]").
        for w in warnings.iter().rev() {
            if let Some(prefix) = &w.subject_prefix {
                checked.content = std::borrow::Cow::Owned(
                    crate::spam::headers::prefix_subject(&checked.content, prefix).into_owned(),
                );
            }
        }
        Some(checked)
    }

    /// Holds the message in the quarantine instead of delivering it; the client is told it was
    /// accepted (a spammer learns nothing).
    async fn quarantine(&mut self, tx: &Transaction, id: String, body: Vec<u8>, verdict: &Verdict) -> Flow {
        let now = now_ms();
        let policy = self.spam_policy(tx);
        // Only a policy quarantines, so there is one; the default retention is belt and braces.
        let retention = policy.map_or(30 * 86_400_000, |(_, p)| ms(p.quarantine_retention.get()));
        let entry = QuarantineEntry {
            id: id.clone(),
            sender: tx.sender.clone(),
            recipients: tx.recipients.clone(),
            reasons: verdict.reasons.clone(),
            client_ip: self.client_ip().to_string(),
            created_at: now,
            expires_at: now + retention,
            policy: policy.map(|(name, _)| name.to_string()).unwrap_or_default(),
            summary: crate::spam::content::summarize(&body),
            body,
        };
        match self.gateway.store.quarantine_put(entry).await {
            Ok(()) => {
                self.gateway.metrics.message("quarantined", "spam");
                self.junk = 0;
                tracing::info!(queue_id = %id, client = %self.client, from = %tx.sender, rcpts = tx.recipients.len(), decision = "quarantined", reasons = %verdict.reasons_text(), "message quarantined");
                self.push(&Reply::new(250, format!("2.0.0 Ok: queued as {id}")));
                Flow::Continue
            }
            Err(e) => {
                self.gateway.metrics.message("tempfailed", "storage");
                tracing::error!(queue_id = %id, error = %e, decision = "tempfail", "quarantine write failed; told the client to retry");
                self.push_error(&reply::STORAGE_FAILURE)
            }
        }
    }
}
