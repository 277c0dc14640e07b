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

    fn refused(&self, reason: &'static str) {
        self.gateway.metrics.recipients_refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}
