//! RCPT TO: relay check and routing of each recipient.

use smtp_proto::RcptTo;

use super::reply::{self, Reply};
use super::session::{Flow, Session};
use crate::metrics::ReasonLabel;
use crate::policy::relay;
use crate::routing;

impl Session {
    pub(super) fn handle_rcpt(&mut self, to: RcptTo<String>) -> Flow {
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
        let Some(tx) = &mut self.tx else { return Flow::Continue };
        if !tx.recipients.iter().any(|r| r.eq_ignore_ascii_case(&to.address)) {
            tx.recipients.push(to.address);
        }
        self.push(&Reply::fixed(250, "2.1.5 Ok"));
        Flow::Continue
    }

    fn refused(&self, reason: &'static str) {
        self.gateway.metrics.recipients_refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}
