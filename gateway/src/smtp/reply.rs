//! SMTP replies. Every reply the inbound side sends is built here or from `Reply::new`, and
//! every parser error maps to exactly one reply in `for_parse_error`.

use std::borrow::Cow;

/// One SMTP reply: a code and its text (which starts with the enhanced status code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: Cow<'static, str>,
}

impl Reply {
    pub const fn fixed(code: u16, text: &'static str) -> Self {
        Self { code, text: Cow::Borrowed(text) }
    }

    pub fn new(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Self { code, text: text.into() }
    }

    /// 4xx or 5xx: the client did something we refused (counted towards `maxErrors`).
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the reply, one line per text line, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_some() { '-' } else { ' ' };
            out.extend_from_slice(
                format!("{}{}{}\r\n", self.code, sep, line.trim_end_matches('\r')).as_bytes(),
            );
        }
    }

    /// Maps a parse error of smtp-proto to its reply.
    pub fn for_parse_error(e: &smtp_proto::Error) -> Self {
        use smtp_proto::Error as E;
        match e {
            E::UnknownCommand => Self::fixed(500, "5.5.1 Command unrecognized"),
            E::InvalidSenderAddress => Self::fixed(501, "5.1.7 Bad sender address syntax"),
            E::InvalidRecipientAddress => Self::fixed(501, "5.1.3 Bad recipient address syntax"),
            E::SyntaxError { syntax } => Self::new(501, format!("5.5.4 Syntax: {syntax}")),
            E::InvalidParameter { param } => Self::new(501, format!("5.5.4 Invalid parameter {param:?}")),
            E::UnsupportedParameter { param } => {
                Self::new(555, format!("5.5.4 Unsupported parameter {:?}", printable(param)))
            }
            E::ResponseTooLong => Self::fixed(500, "5.5.2 Line too long"),
            E::NeedsMoreData { .. } | E::InvalidResponse { .. } => Self::fixed(500, "5.5.2 Syntax error"),
        }
    }
}

/// Client-supplied text, cut short and with control characters replaced, safe to echo or log.
pub fn printable(s: &str) -> String {
    s.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The reply to a spam verdict that refuses the message (Reject: 550 5.7.1, TempFail: 451
/// 4.7.1), or `None`. The reasons go in the text, cut to fit one reply line (RFC 5321 section
/// 4.5.3.1.5: 512 octets with the code and CRLF) and free of line breaks.
pub fn spam_refusal(verdict: &crate::spam::Verdict) -> Option<Reply> {
    const MAX_REASONS: usize = 400;
    let (code, status) = match verdict.action {
        postern_api::Action::Reject => (550, "5.7.1 Rejected"),
        postern_api::Action::TempFail => (451, "4.7.1 Try again later"),
        _ => return None,
    };
    let mut reasons: String =
        verdict.reasons_text().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if reasons.len() > MAX_REASONS {
        let cut = (0..=MAX_REASONS).rev().find(|&i| reasons.is_char_boundary(i)).unwrap_or(0);
        reasons.truncate(cut);
        reasons.push_str("...");
    }
    Some(Reply::new(code, format!("{status}: {reasons}")))
}

pub const OK: Reply = Reply::fixed(250, "2.0.0 Ok");
pub const BAD_SEQUENCE_HELO: Reply = Reply::fixed(503, "5.5.1 Send HELO or EHLO first");
pub const BAD_SEQUENCE_MAIL: Reply = Reply::fixed(503, "5.5.1 Need MAIL command first");
pub const BAD_SEQUENCE_NESTED_MAIL: Reply = Reply::fixed(503, "5.5.1 Nested MAIL command");
pub const BAD_SEQUENCE_RCPT: Reply = Reply::fixed(554, "5.5.1 No valid recipients");
pub const NOT_IMPLEMENTED: Reply = Reply::fixed(502, "5.5.1 Command not implemented");
pub const TOO_MANY_ERRORS: Reply = Reply::fixed(421, "4.7.0 Too many errors, closing connection");
pub const STORAGE_FAILURE: Reply = Reply::fixed(451, "4.3.0 Temporary storage failure, try again later");
pub const RELAY_DENIED: Reply = Reply::fixed(554, "5.7.1 Relay access denied");
pub const STARTTLS_FIRST: Reply = Reply::fixed(530, "5.7.0 Must issue a STARTTLS command first");
pub const AUTH_REQUIRED: Reply = Reply::fixed(530, "5.7.0 Authentication required");
pub const AUTH_NEEDS_TLS: Reply =
    Reply::fixed(538, "5.7.11 Encryption required for requested authentication mechanism");
pub const AUTH_SUCCEEDED: Reply = Reply::fixed(235, "2.7.0 Authentication successful");
pub const AUTH_FAILED: Reply = Reply::fixed(535, "5.7.8 Authentication credentials invalid");
pub const AUTH_CANCELLED: Reply = Reply::fixed(501, "5.0.0 Authentication cancelled");
pub const AUTH_BAD_RESPONSE: Reply = Reply::fixed(501, "5.5.2 Cannot decode the response");
pub const AUTH_UNAVAILABLE: Reply = Reply::fixed(454, "4.7.0 Temporary authentication failure");
pub const MESSAGE_TOO_BIG: Reply = Reply::fixed(552, "5.3.4 Message size exceeds fixed limit");
pub const CHECKS_TIMED_OUT: Reply =
    Reply::fixed(451, "4.4.3 Checks of this message could not finish in time, try again later");
pub const CLOSING_AFTER_OVERSIZED_CHUNK: Reply =
    Reply::fixed(421, "4.7.0 Chunk larger than the size limit, closing connection");
pub const TOO_MANY_JUNK_COMMANDS: Reply =
    Reply::fixed(421, "4.7.0 Too many commands without mail, closing connection");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_use_dashes_except_the_last() {
        let mut out = Vec::new();
        Reply::new(250, "first\nsecond\nlast").write_to(&mut out);
        assert_eq!(out, b"250-first\r\n250-second\r\n250 last\r\n");
    }

    #[test]
    fn spam_refusals_fit_one_reply_line() {
        let mut v = crate::spam::Verdict::default();
        assert_eq!(spam_refusal(&v), None);
        v.add(postern_api::Action::MarkSpam, "dkim=fail (x)");
        assert_eq!(spam_refusal(&v), None);
        for i in 0..100 {
            v.add(postern_api::Action::Reject, format!("dnsbl: 192.0.2.{i} listed in zen.example\r\n"));
        }
        let r = spam_refusal(&v).unwrap();
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert!(
            out.starts_with(b"550 5.7.1 Rejected: dkim=fail (x); dnsbl:"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert!(
            out.len() <= 512 && out.ends_with(b"...\r\n") && out.iter().filter(|&&b| b == b'\n').count() == 1
        );
    }

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(printable("a\u{0}b\r\n"), "a?b??");
    }
}
