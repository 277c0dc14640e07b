//! RCPT TO: relay check, then routing resolves the recipient to its deliveries (or a reply).

use smtp_proto::RcptTo;

use super::reply::{self, Reply};
use super::session::{Flow, Session};
use crate::metrics::ReasonLabel;
use crate::policy::relay;
use crate::routing::probe::ProbingDirectory;
use crate::routing::{self, Decision, Router};

impl Session {
    pub(super) async fn handle_rcpt(&mut self, to: RcptTo<String>) -> Flow {
        let Some(tx) = &self.tx else {
            return self.push_error(&reply::BAD_SEQUENCE_MAIL);
        };
        if tx.recipients.len() >= self.rt.config.limits.max_recipients as usize {
            self.refused("too_many");
            return self.push_error(&Reply::fixed(452, "4.5.3 Too many recipients"));
        }
        if !tx.smtputf8 && !to.address.is_ascii() {
            return self
                .push_error(&Reply::fixed(553, "5.6.7 Non-ASCII recipient address requires SMTPUTF8"));
        }
        let Some(domain) = routing::domain_of(&to.address) else {
            return self.push_error(&Reply::fixed(501, "5.1.3 Recipient address must have a domain"));
        };
        if let Err(reply) = relay::check_recipient_domain(&self.rt, self.client_ip(), &domain) {
            self.refused("relay_denied");
            tracing::info!(client = %self.client, rcpt = %to.address, "relay access denied");
            return self.push_error(&reply);
        }
        if tx.recipients.iter().any(|r| r.eq_ignore_ascii_case(&to.address)) {
            self.push(&Reply::fixed(250, "2.1.5 Ok"));
            return Flow::Continue;
        }
        if let Err(reply) = self.spam_envelope(&domain).await {
            return self.push_error(&reply);
        }
        let directory = ProbingDirectory { gw: &self.gateway, rt: &self.rt };
        let router = Router { rt: &self.rt, directory: &directory, policies: &self.gateway.verifications };
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
        let policy = self.rt.served_domain(domain).and_then(|d| d.config.spam_policy.clone());
        let Some(tx) = &self.tx else { return Ok(()) };
        match &tx.spam {
            Some(choice) if choice.policy != policy => {
                self.refused("spam_policy_mix");
                return Err(Reply::fixed(
                    451,
                    "4.7.1 Send mail for this recipient in a separate transaction",
                ));
            }
            Some(_) => {}
            None => {
                let envelope = match (&policy, self.rt.is_inbound_gateway(self.client_ip())) {
                    (Some(name), false) => match self.rt.config.spam_policies.get(name) {
                        Some(p) => {
                            let helo = self.helo.as_ref().map_or("", |h| h.name.as_str());
                            let client = crate::spam::Client {
                                ip: self.client_ip(),
                                helo,
                                sender: &tx.sender,
                                hostname: &self.rt.config.hostname,
                            };
                            Some(
                                self.gateway
                                    .spam
                                    .check_envelope(p, self.gateway.outbound.resolver(), &client)
                                    .await,
                            )
                        }
                        None => None,
                    },
                    _ => None,
                };
                let Some(tx) = &mut self.tx else { return Ok(()) };
                tx.spam = Some(super::session::SpamChoice { policy, envelope });
            }
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
        self.gateway.metrics.recipients_refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}
