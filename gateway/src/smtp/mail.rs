//! MAIL FROM.

use smtp_proto::{MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_SMTPUTF8, MailFrom};

use super::reply::{self, Reply, printable};
use super::session::{Flow, Session, Transaction};
use crate::address::{self, Problem};
use crate::policy::{relay, senders, submission};

impl Session {
    /// `path`: the reverse-path as the client wrote it.
    pub(super) async fn handle_mail(&mut self, from: MailFrom<String>, path: Vec<u8>) -> Flow {
        if self.helo.is_none() {
            return self.push_error(&reply::BAD_SEQUENCE_HELO);
        }
        if self.tx.is_some() {
            return self.push_error(&reply::BAD_SEQUENCE_NESTED_MAIL);
        }
        // Submission (RFC 6409, 8314): TLS first, then a user, unless the network is trusted.
        if self.role.is_submission() {
            if self.tls.is_none() {
                return self.push_error(&reply::STARTTLS_FIRST);
            }
            if self.user.is_none() && !self.cfg.is_trusted(self.client_ip()) {
                return self.push_error(&reply::AUTH_REQUIRED);
            }
        }
        let limits = &self.cfg.limits;
        if self.messages >= limits.max_messages_per_session {
            self.push(&Reply::fixed(421, "4.7.0 Too many messages in one session, closing connection"));
            return Flow::Close;
        }
        if u64::try_from(from.size).unwrap_or(u64::MAX) > limits.max_message_size {
            return self.push_error(&reply::MESSAGE_TOO_BIG);
        }
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return self.push_error(&Reply::fixed(504, "5.5.4 BODY=BINARYMIME is not supported"));
        }
        if from.flags & MAIL_SMTPUTF8 == 0 && !from.address.is_ascii() {
            return self.push_error(&Reply::fixed(553, "5.6.7 Non-ASCII sender address requires SMTPUTF8"));
        }
        // smtp-proto reads `<postmaster>` as the null path; only `<>` is one.
        let null_path = from.address.is_empty() && path.iter().all(|&b| b == b' ');
        if !null_path && let Err(problem) = address::check(&from.address) {
            return self.push_error(&match problem {
                Problem::ControlCharacter => {
                    Reply::fixed(553, "5.1.7 Sender address contains control characters")
                }
                Problem::MissingDomain => Reply::fixed(501, "5.1.7 Sender address must have a domain"),
                Problem::BadDomain => Reply::fixed(501, "5.1.7 Bad sender domain syntax"),
            });
        }
        if let Some(user) = &self.user
            && self.cfg.auth.restrict_senders
            && let Err(denied) = submission::check_envelope_sender(user, &from.address)
        {
            tracing::info!(client = %self.client, user = %user.name, from = %denied.address, "sender refused: not the user's address");
            return self.push_error(&Reply::new(
                553,
                format!("5.7.1 Sender address rejected: not owned by user {}", printable(&user.name)),
            ));
        }
        if !null_path && self.sender_policy_applies(&from.address) {
            let checked = senders::check(&self.cfg, &self.ctx.dns, &from.address).await;
            if let Err(refused) = checked {
                let (code, text) = refused.reply();
                self.ctx
                    .metrics
                    .message(if code >= 500 { "rejected" } else { "tempfailed" }, refused.reason());
                tracing::info!(client = %self.client, from = %from.address, reason = refused.reason(), "sender refused by the sender policy");
                return self.push_error(&Reply::new(code, text));
            }
        }
        // A Direct sending account's mail waits for its domain's DKIM key in DNS: refused
        // before any data is sent.
        let submitted = self.user.is_some() || self.cfg.is_trusted(self.client_ip());
        if let Some((account, None)) = crate::accounts::select(&self.cfg.accounts, &from.address, submitted)
            && let Some(text) = crate::accounts::unverified(
                &self.ctx.signing,
                &self.ctx.dns,
                &self.ctx.confirmations,
                account,
                &from.address,
            )
            .await
        {
            self.ctx.metrics.message("rejected", "sender_not_verified");
            tracing::info!(client = %self.client, from = %from.address, account = %account.name, "sender refused: the Direct account's domain does not publish its DKIM key yet");
            return self.push_error(&Reply::new(550, text));
        }
        self.tx = Some(Transaction {
            sender: from.address,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            eight_bit: from.flags & MAIL_BODY_8BITMIME != 0,
            ..Transaction::default()
        });
        self.push(&Reply::fixed(250, "2.1.0 Ok"));
        Flow::Continue
    }

    /// The sender policy checks outside clients only: not authenticated users, trusted
    /// networks, inbound gateways, or clients an `Allow` relay rule names.
    fn sender_policy_applies(&self, sender: &str) -> bool {
        let policy = &self.cfg.sender_policy;
        if !(policy.require_resolvable_domain || policy.reject_served_domain_senders) || self.user.is_some() {
            return false;
        }
        let ip = self.client_ip();
        if self.cfg.is_trusted(ip) || self.cfg.is_inbound_gateway(ip) {
            return false;
        }
        let helo = self.helo.as_ref().map_or("", |h| h.name.as_str());
        let client = relay::Client { ip, authenticated: false, helo, sender };
        !relay::allows_sender(&self.cfg, &client)
    }
}
