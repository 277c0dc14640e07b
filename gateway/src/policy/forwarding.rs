//! Automatic-forwarding control (`relay.blockAutoForwarding`): a message that a mail client or
//! server forwarded by itself (a mailbox rule, an auto-forward setting) carries marks of it in
//! its headers. Sent to a domain we do not serve, it is data leaving the organisation without
//! a person choosing to send it, so it is refused.

use mail_parser::MessageParser;

/// The header that shows `content` was forwarded automatically, if one does:
/// `Auto-Submitted: auto-forwarded` (RFC 5436/3834), Exchange's `X-MS-Exchange-Inbox-Rules-Loop`
/// (set when an inbox rule redirects or forwards), or any `Resent-*` header (RFC 5322 3.6.6:
/// reintroduced by a forwarding agent).
pub fn auto_forward_mark(content: &[u8]) -> Option<String> {
    let message = MessageParser::new().parse_headers(content)?;
    for header in message.headers() {
        let name = header.name.as_str();
        let lower = name.to_ascii_lowercase();
        let marked = match lower.as_str() {
            "auto-submitted" => header
                .value()
                .as_text()
                .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("auto-forwarded")),
            "x-ms-exchange-inbox-rules-loop" => true,
            _ => lower.starts_with("resent-"),
        };
        if marked {
            return Some(name.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_marks_are_found_and_ordinary_mail_has_none() {
        let ordinary = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nAuto-Submitted: auto-forwarded\r\n";
        assert_eq!(auto_forward_mark(ordinary), None);
        let replied = b"From: a@example.com\r\nAuto-Submitted: auto-replied\r\n\r\nx\r\n";
        assert_eq!(auto_forward_mark(replied), None);
        for (text, header) in [
            (
                &b"Auto-Submitted: Auto-Forwarded; owner-email=\"a@example.com\"\r\n\r\nx\r\n"[..],
                "Auto-Submitted",
            ),
            (b"X-MS-Exchange-Inbox-Rules-Loop: a@example.com\r\n\r\nx\r\n", "X-MS-Exchange-Inbox-Rules-Loop"),
            (b"From: a@example.com\r\nResent-From: b@example.com\r\n\r\nx\r\n", "Resent-From"),
            (b"resent-to: c@example.org\r\n\r\nx\r\n", "Resent-To"),
        ] {
            assert_eq!(auto_forward_mark(text).as_deref(), Some(header));
        }
    }
}
