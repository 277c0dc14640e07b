//! EHLO and HELO.

use postern_api::{CheckAction, ListenerRole};

use super::reply::{Reply, printable};
use super::session::{Flow, Helo, Session};
use crate::policy::screening;

impl Session {
    pub(super) fn handle_ehlo(&mut self, host: String, extended: bool) -> Flow {
        if host.trim().is_empty() {
            return self.push_error(&Reply::fixed(501, "5.5.4 Syntax: EHLO hostname"));
        }
        if self.role == ListenerRole::Smtp
            && screening::applies(&self.cfg, self.client_ip())
            && let Some(failed) = screening::check_helo(&self.cfg, &host)
        {
            let reject = failed.action == CheckAction::Reject;
            self.ctx.metrics.connection_check(failed.check, reject);
            tracing::info!(client = %self.client, helo = %printable(&host), check = failed.check, why = %failed.why, rejected = reject, "HELO name failed a connection check");
            if reject {
                return self
                    .push_error(&Reply::new(550, format!("5.7.1 Helo command rejected: {}", failed.why)));
            }
        }
        // A new EHLO resets any transaction (RFC 5321 4.1.4).
        self.tx = None;
        self.helo = Some(Helo { name: printable(&host), extended });
        if !extended {
            let text = self.hostname().to_string();
            self.push(&Reply::new(250, text));
            return Flow::Continue;
        }
        let mut lines = vec![self.hostname().to_string(), "PIPELINING".into()];
        lines.push(format!("SIZE {}", self.cfg.limits.max_message_size));
        if self.tls_offered && self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        // AUTH only under TLS (RFC 4954 section 4: no plain-text passwords in the clear).
        if self.auth_offered && self.tls.is_some() && self.user.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.extend(["8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"].map(String::from));
        self.push(&Reply::new(250, lines.join("\n")));
        Flow::Continue
    }
}
