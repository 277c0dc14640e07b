//! Delivery status notifications (RFC 3464): a multipart/report to the envelope sender naming
//! each failed recipient, its status and the remote server's words, with the original headers.
//! Never sent to the null sender, so bounces cannot loop.

use crate::outbound::OutboundError;
use crate::store::{Message, Recipient, new_id};
use crate::util::time::{rfc5322, rfc5322_now};

/// One failed recipient for the report.
pub struct FailedRecipient<'a> {
    pub recipient: &'a Recipient,
    pub failure: &'a OutboundError,
}

/// The DSN message body (headers and MIME parts), addressed to `to`.
pub fn build(
    reporting_mta: &str,
    original: &Message,
    to: &str,
    failed: &[FailedRecipient<'_>],
) -> (String, Vec<u8>) {
    let id = new_id();
    let boundary = format!("{id}/{reporting_mta}");
    let date = rfc5322_now();
    let arrival = rfc5322(original.received_at);

    let mut human = String::from("This is the mail system at host ");
    human.push_str(reporting_mta);
    human.push_str(".\r\n\r\nYour message could not be delivered to one or more recipients.\r\n\r\n");
    for f in failed {
        human.push_str(&format!("<{}>: {}\r\n", f.recipient.original, f.failure.diagnostic));
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

    let mut body = String::new();
    body.push_str(&format!("From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"));
    body.push_str(&format!("To: <{to}>\r\n"));
    body.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    body.push_str(&format!("Date: {date}\r\n"));
    body.push_str(&format!("Message-ID: <{id}@{reporting_mta}>\r\n"));
    body.push_str("Auto-Submitted: auto-replied\r\n");
    body.push_str("MIME-Version: 1.0\r\n");
    body.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    body.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    body.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Description: Notification\r\n\r\n{human}\r\n"));
    body.push_str(&format!(
        "--{boundary}\r\nContent-Type: message/delivery-status\r\nContent-Description: Delivery report\r\n\r\n{status}\r\n"
    ));
    body.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/rfc822-headers\r\nContent-Description: Undelivered Message Headers\r\n\r\n"
    ));
    let mut out = body.into_bytes();
    out.extend_from_slice(headers_of(&original.body));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (id, out)
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
        let (_, dsn) = build(
            "gw.test",
            &original,
            "s@example.org",
            &[FailedRecipient { recipient: &rcpt, failure: &failure }],
        );
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("Final-Recipient: rfc822; u@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.example.com\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
        assert!(text.contains("Subject: hi\r\n"));
        assert!(!text.contains("secret body"), "only the headers are returned");
    }
}
