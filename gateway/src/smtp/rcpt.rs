//! RCPT TO: relay check, then routing resolves the recipient to its deliveries (or a reply).

use smtp_proto::RcptTo;

use super::reply::{self, Reply};
use super::session::{Flow, Session};
use crate::address::{self, Problem};
use crate::metrics::{ReasonLabel, StageLabel};
use crate::policy::relay::{self, RelayDecision};
use crate::routing::probe::ProbingDirectory;
use crate::routing::{Decision, Router};

impl Session {
    /// `path`: the forward-path as the client wrote it.
    pub(super) async fn handle_rcpt(&mut self, mut to: RcptTo<String>, path: Vec<u8>) -> Flow {
        let Some(tx) = &self.tx else {
            return self.push_error(&reply::BAD_SEQUENCE_MAIL);
        };
        if tx.recipients.len() + tx.discarded.len() >= self.cfg.limits.max_recipients as usize {
            self.refused("too_many");
            return self.push_error(&Reply::fixed(452, "4.5.3 Too many recipients"));
        }
        if !tx.smtputf8 && !to.address.is_ascii() {
            return self
                .push_error(&Reply::fixed(553, "5.6.7 Non-ASCII recipient address requires SMTPUTF8"));
        }
        // `<postmaster>` (smtp-proto hands it over as an empty address) must be accepted.
        let bare_postmaster = to.address.is_empty() && address::is_bare_postmaster(&path);
        if bare_postmaster {
            match self.cfg.postmaster() {
                Some(postmaster) => to.address = postmaster,
                None => return self.push_error(&Reply::fixed(550, "5.1.1 No postmaster at this gateway")),
            }
        }
        if let Err(problem) = address::check(&to.address) {
            return self.push_error(&match problem {
                Problem::ControlCharacter => {
                    Reply::fixed(553, "5.1.3 Recipient address contains control characters")
                }
                Problem::MissingDomain => Reply::fixed(501, "5.1.3 Recipient address must have a domain"),
                Problem::BadDomain => Reply::fixed(501, "5.1.3 Bad recipient domain syntax"),
            });
        }
        let Some(domain) = crate::address::domain_of(&to.address) else {
            return self.push_error(&Reply::fixed(501, "5.1.3 Recipient address must have a domain"));
        };
        // Role addresses (postmaster@ a served domain...) may go to the external postmaster.
        let redirected = relay::role_address_target(&self.cfg, &to.address);
        if let Some(target) = &redirected {
            tracing::debug!(client = %self.client, rcpt = %to.address, to = %target, "role address sent to the external postmaster");
            to.address = target.clone();
        }
        let domain = crate::address::domain_of(&to.address).unwrap_or(domain);
        if tx.recipients.iter().chain(&tx.discarded).any(|r| r.eq_ignore_ascii_case(&to.address)) {
            self.push(&Reply::fixed(250, "2.1.5 Ok"));
            return Flow::Continue;
        }
        // The postmaster, configured or external, may live elsewhere; a client may always
        // write to it (RFC 5321 4.5.1), whatever the rules say.
        if !bare_postmaster && redirected.is_none() {
            let helo = self.helo.as_ref().map_or("", |h| h.name.as_str());
            let client = relay::Client {
                ip: self.client_ip(),
                authenticated: self.user.is_some(),
                helo,
                sender: &tx.sender,
            };
            match relay::decide(&self.cfg, &client, &to.address, &domain) {
                RelayDecision::Accept { .. } => {}
                RelayDecision::Discard(rule) => {
                    let rule = rule.name.clone();
                    tracing::info!(client = %self.client, rcpt = %to.address, rule = %rule, "recipient accepted and discarded by a relay rule");
                    self.ctx.metrics.recipients_discarded.inc();
                    if let Some(tx) = &mut self.tx {
                        tx.discarded.push(to.address);
                    }
                    self.push(&Reply::fixed(250, "2.1.5 Ok"));
                    return Flow::Continue;
                }
                RelayDecision::Reject(rule) => {
                    self.refused("relay_rule");
                    tracing::info!(client = %self.client, rcpt = %to.address, rule = %rule.name, "recipient refused by a relay rule");
                    return self.push_error(&Reply::fixed(554, "5.7.1 Recipient address rejected by policy"));
                }
                RelayDecision::Denied(relay::RelayDenied) => {
                    self.refused("relay_denied");
                    tracing::info!(client = %self.client, rcpt = %to.address, "relay access denied");
                    return self.push_error(&reply::RELAY_DENIED);
                }
            }
        }
        if let Err(reply) = self.spam_envelope(&domain).await {
            return self.push_error(&reply);
        }
        let ctx = &self.ctx;
        let directory = ProbingDirectory { probes: &ctx.probes, outbound: &ctx.outbound, cfg: &self.cfg };
        let router = Router { cfg: &self.cfg, directory: &directory, policies: &*self.ctx.verifications };
        match router.resolve(&to.address).await {
            Decision::Deliver(targets) => {
                let Some(tx) = &mut self.tx else { return Flow::Continue };
                tx.recipients.push(to.address);
                tx.targets.extend(targets);
                self.push(&Reply::fixed(250, "2.1.5 Ok"));
                Flow::Continue
            }
            Decision::Unknown => {
                self.refused("unknown_user");
                tracing::info!(client = %self.client, rcpt = %to.address, "unknown recipient");
                self.push_error(&Reply::fixed(550, "5.1.1 Recipient address rejected: user unknown"))
            }
            Decision::TryLater(why) => {
                self.refused("verification_unavailable");
                tracing::info!(client = %self.client, rcpt = %to.address, reason = %why, "recipient could not be verified now");
                self.push_error(&Reply::fixed(
                    450,
                    "4.1.1 Recipient address could not be verified, try again later",
                ))
            }
        }
    }

    /// One spam policy per transaction; its envelope checks run at the first RCPT that names it,
    /// and a Reject or TempFail from them is the answer to every RCPT under that policy.
    async fn spam_envelope(&mut self, domain: &str) -> Result<(), Reply> {
        // Authenticated submission is the users' own mail: no spam checks (their laptop's
        // address may well be on a dynamic-IP blocklist, and their mail is not DKIM-signed yet).
        if self.user.is_some() {
            return Ok(());
        }
        let policy = self.cfg.served_domain(domain).and_then(|d| d.spam_policy.clone());
        let Some(tx) = &self.tx else { return Ok(()) };
        fn name(p: &Option<std::sync::Arc<crate::config::NamedSpamPolicy>>) -> Option<&str> {
            p.as_deref().map(|p| p.name.as_str())
        }
        match &tx.spam {
            Some(choice) if name(&choice.policy) != name(&policy) => {
                self.refused("spam_policy_mix");
                return Err(Reply::fixed(
                    451,
                    "4.7.1 Send mail for this recipient in a separate transaction",
                ));
            }
            Some(_) => {}
            None => {
                let mut timed_out = false;
                let envelope = match (&policy, self.cfg.is_inbound_gateway(self.client_ip())) {
                    (Some(p), false) => {
                        let helo = self.helo.as_ref().map_or("", |h| h.name.as_str());
                        let client = crate::spam::Client {
                            ip: self.client_ip(),
                            helo,
                            sender: &tx.sender,
                            hostname: &self.cfg.hostname,
                        };
                        let budget = self.cfg.limits.envelope_check_timeout.get();
                        let checks = self.ctx.spam.check_envelope(&p.config, &client);
                        match tokio::time::timeout(budget, checks).await {
                            Ok(result) => Some(result),
                            Err(_) => {
                                timed_out = true;
                                None
                            }
                        }
                    }
                    _ => None,
                };
                let Some(tx) = &mut self.tx else { return Ok(()) };
                tx.spam = Some(super::session::SpamChoice { policy, envelope, timed_out });
                if timed_out {
                    self.ctx.metrics.check_timeouts.get_or_create(&StageLabel { stage: "envelope" }).inc();
                    tracing::warn!(client = %self.client, domain, "envelope checks ran out of time; told the client to retry");
                }
            }
        }
        if self.tx.as_ref().and_then(|t| t.spam.as_ref()).is_some_and(|c| c.timed_out) {
            self.refused("check_timeout");
            return Err(reply::CHECKS_TIMED_OUT);
        }
        let verdict = self
            .tx
            .as_ref()
            .and_then(|t| t.spam.as_ref())
            .and_then(|c| c.envelope.as_ref())
            .map(|e| &e.verdict);
        let Some(v) = verdict else { return Ok(()) };
        let Some(reply) = reply::spam_refusal(v) else { return Ok(()) };
        let (reason, decision) =
            if reply.code >= 500 { ("spam", "rejected") } else { ("spam_tempfail", "tempfail") };
        self.refused(reason);
        tracing::info!(client = %self.client, domain, decision, reasons = %v.reasons_text(), "refused at RCPT by spam checks");
        Err(reply)
    }

    fn refused(&self, reason: &'static str) {
        self.ctx.metrics.recipients_refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}
