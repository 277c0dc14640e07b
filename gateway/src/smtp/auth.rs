//! AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN, offered only under TLS on listeners that
//! enable it. A failed login is answered after a delay that grows with the client's failures;
//! the failure that reaches `auth.failedLogins.max` locks the client IP out (421 4.7.0). Failures are
//! counted in the store, so with Redis every pod sees them. No password reaches a log line.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

use super::reply::{self, Reply, printable};
use super::session::{Flow, Session};
use crate::metrics::ResultLabel;
use crate::store::{LockoutPolicy, LoginFailures};

/// A SASL exchange waiting for the client's next line.
pub(super) enum Sasl {
    /// PLAIN sent without an initial response: the next line is the whole response.
    Plain,
    /// LOGIN: the user name comes next.
    LoginUser,
    /// LOGIN: the password comes next.
    LoginPassword { user: String },
}

/// "Username:" and "Password:", base64, as every LOGIN client expects them.
const LOGIN_USER_PROMPT: Reply = Reply::fixed(334, "VXNlcm5hbWU6");
const LOGIN_PASSWORD_PROMPT: Reply = Reply::fixed(334, "UGFzc3dvcmQ6");

impl Session {
    pub(super) async fn handle_auth(&mut self, mechanism: u64, initial: String) -> Flow {
        if !self.auth_offered {
            return self.push_error(&reply::NOT_IMPLEMENTED);
        }
        if self.tls.is_none() {
            return self.push_error(&reply::AUTH_NEEDS_TLS);
        }
        if self.helo.is_none() {
            return self.push_error(&reply::BAD_SEQUENCE_HELO);
        }
        if self.user.is_some() {
            return self.push_error(&Reply::fixed(503, "5.5.1 Already authenticated"));
        }
        if self.tx.is_some() {
            return self.push_error(&Reply::fixed(503, "5.5.1 AUTH not allowed in a mail transaction"));
        }
        if let Some(flow) = self.refuse_if_locked_out().await {
            return flow;
        }
        let initial = initial.trim();
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.sasl = Some(Sasl::Plain);
                self.push(&Reply::fixed(334, ""));
                Flow::Continue
            }
            AUTH_PLAIN => self.sasl_plain(initial.as_bytes()).await,
            AUTH_LOGIN if initial.is_empty() => {
                self.sasl = Some(Sasl::LoginUser);
                self.push(&LOGIN_USER_PROMPT);
                Flow::Continue
            }
            AUTH_LOGIN => self.login_user(initial.as_bytes()),
            _ => self.push_error(&Reply::fixed(504, "5.5.4 Unrecognized authentication type")),
        }
    }

    /// The client's line in a SASL exchange (`line` with its line ending).
    pub(super) async fn sasl_response(&mut self, line: &[u8]) -> Flow {
        let response = line.strip_suffix(b"\n").unwrap_or(line);
        let response = response.strip_suffix(b"\r").unwrap_or(response);
        let Some(step) = self.sasl.take() else { return Flow::Continue };
        if response == b"*" {
            return self.push_error(&reply::AUTH_CANCELLED);
        }
        match step {
            Sasl::Plain => self.sasl_plain(response).await,
            Sasl::LoginUser => self.login_user(response),
            Sasl::LoginPassword { user } => match decode(response) {
                Some(password) => self.login(&user, &password).await,
                None => self.push_error(&reply::AUTH_BAD_RESPONSE),
            },
        }
    }

    fn login_user(&mut self, encoded: &[u8]) -> Flow {
        let Some(user) = decode(encoded).and_then(|u| String::from_utf8(u).ok()) else {
            return self.push_error(&reply::AUTH_BAD_RESPONSE);
        };
        self.sasl = Some(Sasl::LoginPassword { user });
        self.push(&LOGIN_PASSWORD_PROMPT);
        Flow::Continue
    }

    /// PLAIN: `authzid NUL authcid NUL password`. Acting for another identity (an authzid
    /// that is not the authcid) is not supported and fails like a wrong password.
    async fn sasl_plain(&mut self, encoded: &[u8]) -> Flow {
        let Some(decoded) = decode(encoded) else { return self.push_error(&reply::AUTH_BAD_RESPONSE) };
        let mut parts = decoded.splitn(3, |&b| b == 0);
        let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
        else {
            return self.push_error(&reply::AUTH_BAD_RESPONSE);
        };
        let Ok(user) = std::str::from_utf8(authcid) else {
            return self.push_error(&reply::AUTH_BAD_RESPONSE);
        };
        if !authzid.is_empty() && authzid != authcid {
            return self.login_failed(user).await;
        }
        self.login(user, password).await
    }

    async fn login(&mut self, user: &str, password: &[u8]) -> Flow {
        match self.ctx.users.authenticate(user, password).await {
            Some(found) => {
                self.auth_metric("success");
                tracing::info!(client = %self.client, listener = %self.listener, user = %found.name, "authenticated");
                self.user = Some(found);
                self.push(&reply::AUTH_SUCCEEDED);
                Flow::Continue
            }
            None => self.login_failed(user).await,
        }
    }

    /// Counts the failure, waits the delay it earns, then answers 535, or 421 and closes when
    /// this failure locked the client out.
    async fn login_failed(&mut self, user: &str) -> Flow {
        let failed = &self.cfg.auth.failed_logins;
        let policy = LockoutPolicy {
            window: failed.window.get(),
            max_failures: failed.max,
            lockout: failed.lockout.get(),
        };
        let client = self.client_ip().to_string();
        let counted = match self.ctx.store.login_failed(&client, &policy).await {
            Ok(c) => c,
            Err(e) => {
                // Not counted; the delay still applies.
                tracing::warn!(client = %self.client, error = %e, "failed login not counted: store unavailable");
                LoginFailures { failures: 1, locked_for: None }
            }
        };
        let delay = failed.delay.get().saturating_mul(counted.failures).min(failed.max_delay.get());
        tracing::info!(client = %self.client, listener = %self.listener, user = %printable(user), failures = counted.failures, "authentication failed");
        self.auth_metric("failure");
        tokio::time::sleep(delay).await;
        match counted.locked_for {
            Some(lockout) => {
                self.auth_metric("locked_out");
                tracing::warn!(client = %self.client, failures = counted.failures, lockout = ?lockout, "client locked out after failed logins");
                self.push(&locked_out_reply(lockout));
                Flow::Close
            }
            None => self.push_error(&reply::AUTH_FAILED),
        }
    }

    /// 421 and close when the client IP is locked out after failed logins (`None`: it is not,
    /// or the store cannot say; a store outage does not lock everyone out).
    pub async fn refuse_if_locked_out(&mut self) -> Option<Flow> {
        let client = self.client_ip().to_string();
        let left = match self.ctx.store.login_locked(&client).await {
            Ok(left) => left?,
            Err(e) => {
                tracing::warn!(client = %self.client, error = %e, "lockout not checked: store unavailable");
                return None;
            }
        };
        self.auth_metric("locked_out");
        tracing::info!(client = %self.client, "refused: locked out after failed logins");
        self.push(&locked_out_reply(left));
        Some(Flow::Close)
    }

    fn auth_metric(&self, result: &'static str) {
        self.ctx.metrics.logins.get_or_create(&ResultLabel { result }).inc();
    }
}

pub(super) fn locked_out_reply(left: std::time::Duration) -> Reply {
    let secs = left.as_secs().max(1);
    Reply::new(421, format!("4.7.0 Too many failed logins from your address, try again in {secs} seconds"))
}

/// Base64 of a SASL response; `=` is the empty response (RFC 4954).
fn decode(encoded: &[u8]) -> Option<Vec<u8>> {
    if encoded == b"=" {
        return Some(Vec::new());
    }
    STANDARD.decode(encoded).ok()
}
