//! Delivery status notifications (RFC 3464): a multipart/report to the envelope sender naming
//! each failed recipient, its status and the remote server's words, with the original headers.
//! Never sent to the null sender, so bounces cannot loop.

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::text::Text;
use mail_builder::mime::MimePart;

use crate::generated::{generated_message, to_bytes};
use crate::outbound::OutboundError;
use crate::store::{Message, Recipient};
use crate::util::time::{now_ms, rfc5322};

/// One failed recipient for the report.
pub struct FailedRecipient<'a> {
    pub recipient: &'a Recipient,
    pub failure: &'a OutboundError,
}

/// The DSN (headers and MIME parts, built with mail-builder), addressed to `to`.
pub fn build(reporting_mta: &str, original: &Message, to: &str, failed: &[FailedRecipient<'_>]) -> Vec<u8> {
    let now = now_ms();
    let date = rfc5322(now);
    let arrival = rfc5322(original.received_at);

    let mut human = format!(
        "This is the mail system at host {reporting_mta}.\r\n\r\nYour message could not be delivered to one or more recipients.\r\n\r\n"
    );
    for f in failed {
        human.push_str(&format!("<{}>: {}\r\n", f.recipient.original, one_line(&f.failure.diagnostic)));
    }

    let mut status = format!(
        "Reporting-MTA: dns; {reporting_mta}\r\nX-Postern-Queue-ID: {}\r\nArrival-Date: {arrival}\r\n",
        original.id
    );
    for f in failed {
        status.push_str("\r\n");
        if f.recipient.original != f.recipient.address {
            status.push_str(&format!("Original-Recipient: rfc822; {}\r\n", f.recipient.original));
        }
        status.push_str(&format!("Final-Recipient: rfc822; {}\r\n", f.recipient.address));
        status.push_str("Action: failed\r\n");
        status.push_str(&format!("Status: {}\r\n", f.failure.status));
        if let Some(remote) = &f.failure.remote {
            status.push_str(&format!("Remote-MTA: dns; {remote}\r\n"));
        }
        let kind = if f.failure.smtp { "smtp" } else { "x-postern" };
        status.push_str(&format!("Diagnostic-Code: {kind}; {}\r\n", one_line(&f.failure.diagnostic)));
        status.push_str(&format!("Last-Attempt-Date: {date}\r\n"));
    }

    // The report parts go out as they are (7bit, or 8bit when an address or a remote reply has
    // UTF-8): RFC 3464 fields are read by programs, and a returned header block is returned
    // byte for byte.
    let as_is = |bytes: &[u8]| if bytes.is_ascii() { "7bit" } else { "8bit" };
    let headers = headers_of(&original.body);
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human).header("Content-Description", Text::new("Notification")),
            MimePart::new("message/delivery-status", status.as_bytes().to_vec())
                .header("Content-Description", Text::new("Delivery report"))
                .transfer_encoding(as_is(status.as_bytes())),
            MimePart::new("text/rfc822-headers", headers.to_vec())
                .header("Content-Description", Text::new("Undelivered Message Headers"))
                .transfer_encoding(as_is(headers)),
        ],
    );
    to_bytes(
        generated_message(reporting_mta, now)
            .from(("Mail Delivery System".to_string(), format!("MAILER-DAEMON@{reporting_mta}")))
            .to(to.to_string())
            .subject("Undelivered Mail Returned to Sender")
            .header("Auto-Submitted", Text::new("auto-replied"))
            .body(report),
    )
}

/// The header section of a message (up to the blank line), ending in CRLF.
fn headers_of(body: &[u8]) -> &[u8] {
    match body.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &body[..i + 2],
        None => body,
    }
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dsn_names_each_failed_recipient_with_status_and_remote_text() {
        let original = Message {
            id: "q1".into(),
            sender: "s@example.org".into(),
            received_at: 0,
            smtputf8: false,
            eight_bit: false,
            body: b"Subject: hi\r\nFrom: s@example.org\r\n\r\nsecret body\r\n".to_vec(),
        };
        let rcpt = Recipient { address: "u@example.com".into(), original: "u@example.com".into() };
        let mut failure = OutboundError::permanent_status("5.1.1".into(), "550 5.1.1 no such user".into());
        failure.remote = Some("mx.example.com".into());
        failure.smtp = true;
        let dsn = build(
            "gw.test",
            &original,
            "s@example.org",
            &[FailedRecipient { recipient: &rcpt, failure: &failure }],
        );
        use mail_parser::MimeHeaders;
        let parsed = mail_parser::MessageParser::default().parse(&dsn).unwrap();
        let ct = parsed.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("Final-Recipient: rfc822; u@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.example.com\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
        assert!(text.contains("Subject: hi\r\n"));
        assert!(!text.contains("secret body"), "only the headers are returned");
    }
}
