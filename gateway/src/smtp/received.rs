//! The Received trace header (RFC 5321 4.4) and line-ending repair of message data.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::tls::TlsInfo;
use crate::util::time::rfc5322_now;

pub struct Trace<'a> {
    pub helo: &'a str,
    pub extended: bool,
    pub client_ip: IpAddr,
    pub hostname: &'a str,
    pub tls: Option<&'a TlsInfo>,
    pub smtputf8: bool,
    /// The client authenticated (SMTP AUTH): the protocol name says so (RFC 3848), the user
    /// name is not written.
    pub authenticated: bool,
    pub id: &'a str,
    /// Named in a "for" clause only when the message has one recipient (no list leaks).
    pub single_recipient: Option<&'a str>,
}

/// `with` protocol names of RFC 3848 and RFC 6531.
fn protocol(t: &Trace<'_>) -> &'static str {
    match (t.smtputf8, t.extended, t.tls.is_some(), t.authenticated) {
        (true, _, true, true) => "UTF8SMTPSA",
        (true, _, true, false) => "UTF8SMTPS",
        (true, _, false, true) => "UTF8SMTPA",
        (true, _, false, false) => "UTF8SMTP",
        (false, true, true, true) => "ESMTPSA",
        (false, true, true, false) => "ESMTPS",
        (false, true, false, true) => "ESMTPA",
        (false, true, false, false) => "ESMTP",
        (false, false, _, _) => "SMTP",
    }
}

pub fn header(t: &Trace<'_>) -> String {
    let ip = match t.client_ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("IPv6:{v6}"),
    };
    let mut h = format!("Received: from {} ([{ip}])\r\n", t.helo);
    if let Some(tls) = t.tls {
        h.push_str(&format!("\t(using {} with cipher {})\r\n", tls.version, tls.cipher));
    }
    h.push_str(&format!("\tby {} (Postern) with {} id {}", t.hostname, protocol(t), t.id));
    if let Some(rcpt) = t.single_recipient {
        h.push_str(&format!("\r\n\tfor <{}>", crate::address::to_wire(rcpt)));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_now()));
    h
}

/// The client IP named in the first (topmost) Received header of `data`: for mail that an
/// inbound gateway relays in, the address that gateway received it from.
pub fn original_client_ip(data: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(&data[..data.len().min(64 * 1024)]).ok()?;
    let headers = text.split("\r\n\r\n").next()?;
    // Unfold: a header's continuation lines start with white space.
    let mut current: Option<String> = None;
    for line in headers.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(h) = &mut current {
                h.push(' ');
                h.push_str(line.trim());
            }
            continue;
        }
        if let Some(h) = current.take() {
            return ip_in_from_clause(&h);
        }
        // Compared as bytes: slicing the str at 9 panics when a multi-byte character straddles
        // it (found by the fuzzer). Once they match, the first 9 bytes are ASCII.
        if line.len() > 9 && line.as_bytes()[..9].eq_ignore_ascii_case(b"received:") {
            current = Some(line[9..].trim().to_string());
        }
    }
    current.and_then(|h| ip_in_from_clause(&h))
}

/// The first "[address]" of a Received header's from clause (before " by ").
fn ip_in_from_clause(value: &str) -> Option<IpAddr> {
    let from = value.split(" by ").next()?;
    from.split('[').skip(1).find_map(|part| {
        // A literal is closed: `[192.0.2.1` at the end of a clause is not one.
        let (inner, _) = part.split_once(']')?;
        inner.trim_start_matches("IPv6:").parse().ok()
    })
}

/// Message data with every bare LF and bare CR turned into CRLF, and a last line without one
/// (BDAT allows that) ended with CRLF: what we relay is valid RFC 5322, no next hop can read a
/// different message end than we did (SMTP smuggling), and the copy we store is byte for byte
/// what the next hop reads back from our dot-stuffed DATA.
pub fn normalize_line_endings(body: &[u8]) -> Cow<'_, [u8]> {
    // Only the CRs and LFs need a look (memchr2 jumps between them).
    let clean = memchr::memchr2_iter(b'\r', b'\n', body).all(|i| match body[i] {
        b'\r' => body.get(i + 1) == Some(&b'\n'),
        _ => i > 0 && body[i - 1] == b'\r',
    });
    let terminated = body.is_empty() || body.ends_with(b"\n");
    if clean && terminated {
        return Cow::Borrowed(body);
    }
    if clean {
        let mut out = Vec::with_capacity(body.len() + 2);
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
        return Cow::Owned(out);
    }
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_client_comes_from_the_topmost_received_header() {
        let data = b"Received: from mail.sender.example (mail.sender.example\r\n\t[198.51.100.23]) by oldmx.example (Postfix) with ESMTP id X;\r\n\tMon, 1 Jan 2026 00:00:00 +0000\r\nReceived: from inner ([10.0.0.1]) by x;\r\nSubject: s\r\n\r\nbody [1.2.3.4]\r\n";
        assert_eq!(original_client_ip(data), Some("198.51.100.23".parse().unwrap()));
        assert_eq!(
            original_client_ip(b"Received: from x ([IPv6:2001:db8::5]) by y; d\r\n\r\n"),
            Some("2001:db8::5".parse().unwrap())
        );
        assert_eq!(original_client_ip(b"Subject: none\r\n\r\n"), None);
        // A multi-byte character across byte 9 of a header line (found by the fuzzer: panicked).
        assert_eq!(original_client_ip("Receive\u{300}d: from x ([192.0.2.1]) by y\r\n\r\n".as_bytes()), None);
        assert_eq!(
            original_client_ip(b"Received: from x ([192.0.2.1 by y\r\n\r\n"),
            None,
            "unclosed literal"
        );
    }

    #[test]
    fn bare_line_ends_become_crlf() {
        assert_eq!(&*normalize_line_endings(b"a\r\nb\nc\rd\r\n"), b"a\r\nb\r\nc\r\nd\r\n");
        assert!(matches!(normalize_line_endings(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*normalize_line_endings(b"\n.\n"), b"\r\n.\r\n");
        assert_eq!(&*normalize_line_endings(b"a\r\nno end"), b"a\r\nno end\r\n");
        assert_eq!(&*normalize_line_endings(b"a\nno end"), b"a\r\nno end\r\n");
        assert_eq!(&*normalize_line_endings(b""), b"");
    }

    #[test]
    fn received_names_client_tls_and_protocol() {
        let tls = TlsInfo { version: "TLSv1.3", cipher: "TLS13_AES_256_GCM_SHA384".into() };
        let h = header(&Trace {
            helo: "client.example",
            extended: true,
            client_ip: "192.0.2.9".parse().unwrap(),
            hostname: "gw.example",
            tls: Some(&tls),
            smtputf8: false,
            authenticated: false,
            id: "abc",
            single_recipient: Some("u@example.com"),
        });
        assert!(h.starts_with("Received: from client.example ([192.0.2.9])\r\n\t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\tby gw.example (Postern) with ESMTPS id abc\r\n\tfor <u@example.com>;\r\n\t"), "{h}");
        assert!(h.ends_with("+0000\r\n"));
        let submitted = header(&Trace {
            helo: "laptop",
            extended: true,
            client_ip: "192.0.2.9".parse().unwrap(),
            hostname: "gw.example",
            tls: Some(&tls),
            smtputf8: false,
            authenticated: true,
            id: "abc",
            single_recipient: None,
        });
        assert!(submitted.contains("with ESMTPSA id abc;"), "{submitted}");
    }
}
