//! The mail APIs of the sending accounts that do not speak SMTP: Microsoft Graph
//! `POST /v1.0/me/sendMail` with the MIME message (base64, `Content-Type: text/plain`; saved to
//! Sent Items) and the Gmail API `POST /gmail/v1/users/me/messages/send` with
//! `{"raw": base64url}` (shown in Sent), both with OAuth tokens; and Exchange's EWS (`ews`).
//!
//! Both take the recipients from the message's headers, so envelope recipients the headers do
//! not name (Bcc, the account's BCC copy) are added as a `Bcc:` header, which the provider
//! removes from what recipients see. A call delivers to all recipients or to none.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use mail_parser::{HeaderName, MessageParser};
use postern_api::{AccountType, OAuthGrant, SendingAccount};

use super::connection::Envelope;
use super::error::OutboundError;
use super::oauth::{OAuthTokens, TokenError};
use crate::config::ConfigSnapshot;

/// The addresses the message's To, Cc and Bcc headers name (lowercase).
fn header_recipients(body: &[u8]) -> Vec<String> {
    let Some(message) = MessageParser::default().parse_headers(body) else { return Vec::new() };
    let mut out = Vec::new();
    for header in message.headers() {
        if !matches!(header.name, HeaderName::To | HeaderName::Cc | HeaderName::Bcc) {
            continue;
        }
        if let Some(list) = header.value.as_address() {
            out.extend(list.iter().filter_map(|a| a.address.as_deref()).map(str::to_ascii_lowercase));
        }
    }
    out
}

/// The message with a `Bcc:` header naming the envelope recipients its headers do not.
pub fn with_envelope_bcc(body: &[u8], recipients: &[&str]) -> Vec<u8> {
    let named = header_recipients(body);
    let missing: Vec<&str> =
        recipients.iter().copied().filter(|r| !named.contains(&r.to_ascii_lowercase())).collect();
    if missing.is_empty() {
        return body.to_vec();
    }
    let mut out = format!("Bcc: {}\r\n", missing.join(",\r\n ")).into_bytes();
    out.extend_from_slice(body);
    out
}

/// What an API's refusal means for the job (RFC 3463 codes).
fn refused(api: &str, status: u16, retry_after: Option<&str>, body: &str) -> OutboundError {
    let excerpt: String = body.chars().take(300).flat_map(char::escape_debug).collect();
    let text = format!("{api} answered HTTP {status}: {excerpt}");
    match status {
        // RFC 9110 10.2.3: delay-seconds (an HTTP-date is logged, not followed).
        429 | 503 => OutboundError::temporary(
            if status == 429 { "4.4.5" } else { "4.4.2" },
            format!(
                "{text} ({}; Retry-After: {})",
                if status == 429 { "throttled" } else { "unavailable" },
                retry_after.unwrap_or("none")
            ),
        )
        .retry_after(
            retry_after.and_then(|s| s.trim().parse::<u64>().ok()).map(std::time::Duration::from_secs),
        ),
        401 | 403 => OutboundError::temporary("4.7.0", text),
        413 => OutboundError::permanent("5.3.4", text),
        400 | 404 | 415 | 422 => OutboundError::permanent("5.6.0", text),
        _ => OutboundError::temporary("4.4.2", text),
    }
}

pub struct MailboxApi {
    tokens: Arc<OAuthTokens>,
}

impl MailboxApi {
    pub fn new(tokens: Arc<OAuthTokens>) -> Self {
        Self { tokens }
    }

    /// Sends the message through `account`'s API: one result per recipient (all the same).
    pub async fn send(
        &self,
        cfg: &ConfigSnapshot,
        account: &str,
        env: &Envelope<'_>,
        body: &[u8],
    ) -> Vec<Result<(), OutboundError>> {
        let n = env.recipients.len();
        let found = cfg.sending_account(account).filter(|a| a.oauth.is_some() || a.exchange.is_some());
        let result = match found {
            Some(a) => {
                let message = with_envelope_bcc(body, &env.recipients);
                match &a.exchange {
                    Some(x) => {
                        super::ews::call(self.tokens.http(), x, super::ews::create_item(&message)).await
                    }
                    None => self.send_once_refreshed(cfg, a, env.sender, &message).await,
                }
            }
            // Retried: the config may bring it back; past the lifetime it bounces.
            None => {
                Err(OutboundError::temporary("4.3.5", format!("sending account {account} is not configured")))
            }
        };
        vec![result; n]
    }

    /// One call; when the API refuses the token (401), once more with a fresh one.
    async fn send_once_refreshed(
        &self,
        cfg: &ConfigSnapshot,
        account: &SendingAccount,
        sender: &str,
        message: &[u8],
    ) -> Result<(), OutboundError> {
        let token = self.tokens.access_token(cfg, account).await.map_err(not_authorized)?;
        match self.call(account, sender, &token, message).await {
            Err(e) if e.status == "4.7.0" && e.diagnostic.contains("HTTP 401") => {
                self.tokens.forget(&account.name);
                let token = self.tokens.refresh(cfg, account, true).await.map_err(not_authorized)?;
                self.call(account, sender, &token, message).await
            }
            other => other,
        }
    }

    async fn call(
        &self,
        account: &SendingAccount,
        sender: &str,
        token: &str,
        message: &[u8],
    ) -> Result<(), OutboundError> {
        let Some(oauth) = &account.oauth else {
            return Err(OutboundError::permanent("5.3.5", "no oauth".into()));
        };
        let base = oauth.endpoints(account.kind).api_url;
        let (api, request) = match account.kind {
            AccountType::Gmail => (
                "Gmail API",
                self.tokens
                    .http()
                    .post(format!("{base}/gmail/v1/users/me/messages/send"))
                    .json(&serde_json::json!({"raw": URL_SAFE.encode(message)})),
            ),
            _ => (
                "Microsoft Graph",
                self.tokens
                    .http()
                    .post(graph_send_url(&base, oauth.grant, sender))
                    .header(reqwest::header::CONTENT_TYPE, "text/plain")
                    .body(STANDARD.encode(message)),
            ),
        };
        let response = request
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| OutboundError::temporary("4.4.1", format!("{api} {base}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.text().await.unwrap_or_default();
        Err(refused(api, status.as_u16(), retry_after.as_deref(), &body))
    }

    /// "Test connection": an OAuth account's token refresh now; an Exchange account's
    /// authenticated EWS call (GetFolder of Sent Items).
    pub async fn test(&self, cfg: &ConfigSnapshot, account: &SendingAccount) -> Result<String, String> {
        if let Some(x) = &account.exchange {
            return super::ews::call(self.tokens.http(), x, super::ews::get_folder())
                .await
                .map(|()| format!("EWS at {} answered for {}", x.url, x.username))
                .map_err(|e| e.diagnostic);
        }
        self.tokens
            .refresh(cfg, account, true)
            .await
            .map(|_| "token refreshed".to_string())
            .map_err(|e| e.to_string())
    }
}

/// Graph's sendMail: the granting user's own (`/me`), or with an app-only token the envelope
/// sender's mailbox (`/users/{address}`, the address as one path segment).
fn graph_send_url(base: &str, grant: OAuthGrant, sender: &str) -> String {
    match grant {
        OAuthGrant::AuthorizationCode => format!("{base}/v1.0/me/sendMail"),
        OAuthGrant::ClientCredentials => {
            let user: String = url::form_urlencoded::byte_serialize(sender.as_bytes())
                .collect::<String>()
                .replace('+', "%20");
            format!("{base}/v1.0/users/{user}/sendMail")
        }
    }
}

/// No token: deferred (someone must authorize; past the delivery lifetime the mail bounces).
fn not_authorized(e: TokenError) -> OutboundError {
    match e {
        TokenError::NotAuthorized(why) => OutboundError::temporary("4.7.0", why),
        TokenError::Temporary(why) => OutboundError::temporary("4.4.1", why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_recipients_the_headers_miss_go_in_a_bcc_header() {
        let body = b"From: a@x.example\r\nTo: B <b@y.example>\r\nCc: c@y.example\r\nSubject: s\r\n\r\nhi\r\n";
        let out =
            with_envelope_bcc(body, &["B@y.example", "c@y.example", "hidden@z.example", "copy@z.example"]);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("Bcc: hidden@z.example,\r\n copy@z.example\r\nFrom: a@x.example\r\n"),
            "{text}"
        );
        assert_eq!(with_envelope_bcc(body, &["b@y.example"]), body.to_vec(), "all named: unchanged");
    }

    #[test]
    fn app_only_mail_goes_to_the_senders_mailbox() {
        assert_eq!(
            graph_send_url("https://g", OAuthGrant::AuthorizationCode, "a@x"),
            "https://g/v1.0/me/sendMail"
        );
        assert_eq!(
            graph_send_url("https://g", OAuthGrant::ClientCredentials, "a/b@x"),
            "https://g/v1.0/users/a%2Fb%40x/sendMail",
            "one path segment, whatever the address holds"
        );
    }

    #[test]
    fn refusals_map_to_retry_or_bounce() {
        assert!(!refused("Graph", 429, Some("7"), "").permanent);
        assert!(refused("Graph", 429, Some("7"), "").diagnostic.contains("Retry-After: 7"));
        assert_eq!(refused("Graph", 429, Some("7"), "").retry_after, Some(std::time::Duration::from_secs(7)));
        assert_eq!(refused("Graph", 503, Some("Wed, 21 Oct 2026 07:28:00 GMT"), "").retry_after, None);
        assert!(!refused("Graph", 503, None, "").permanent);
        assert!(!refused("Graph", 401, None, "").permanent, "a token problem waits for a new grant");
        assert!(refused("Graph", 400, None, "bad MIME").permanent);
        assert_eq!(refused("Gmail API", 413, None, "").status, "5.3.4");
    }
}
