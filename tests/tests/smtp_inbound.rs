//! Inbound SMTP against the real gateway binary: the dialogue, limits, and bad input.

use std::time::Duration;

use postern_api::{Destination, HumanDuration, Limits, MailDomainConfig, TlsPolicy};
use postern_tests::client::{Client, message};
use postern_tests::gateway::{GatewayConfig, GatewayProcess};
use postern_tests::sink::{Behavior, Sink};

const WAIT: Duration = Duration::from_secs(20);

/// A gateway serving served.test, delivered to `sink`, with the limits `limits` sets.
fn gateway_to(sink: &Sink, limits: impl FnOnce(&mut Limits)) -> GatewayProcess {
    GatewayProcess::start(&GatewayConfig::typed(|c| {
        let primary = Destination::hosts(&[&sink.host()], TlsPolicy::NONE);
        c.domains.push(MailDomainConfig::new("served.test", primary));
        limits(&mut c.limits);
    }))
}

fn ehlo(gw: &GatewayProcess) -> Client {
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    c
}

#[test]
fn greeting_and_extensions() {
    let sink = Sink::start(Behavior::default());
    let gw = gateway_to(&sink, |l| l.max_message_size = 123456);
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.greeting.code, 220);
    assert!(c.greeting.text.starts_with("gw.test ESMTP"), "{:?}", c.greeting);
    let r = c.cmd("EHLO client.test");
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(lines[0], "gw.test");
    for ext in ["PIPELINING", "SIZE 123456", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"] {
        assert!(lines.contains(&ext), "{ext} missing from {lines:?}");
    }
    assert!(!lines.contains(&"STARTTLS"), "no TLS configured, none offered");
    assert!(c.cmd("VRFY someone").starts("252 2.5.2"));
    assert!(c.cmd("HELP").starts("214"));
    assert!(c.cmd("NOOP").starts("250 2.0.0"));
    assert!(c.cmd("STARTTLS").starts("454 4.7.0"));
    assert!(c.cmd("AUTH PLAIN AGFAYg==").starts("502 5.5.1"));
    assert!(c.cmd("QUIT").starts("221 2.0.0"));
    assert!(c.is_closed());
}

#[test]
fn commands_out_of_order_get_503() {
    let sink = Sink::start(Behavior::default());
    let gw = gateway_to(&sink, |_| {});
    let mut c = Client::connect(gw.smtp());
    assert!(c.cmd("MAIL FROM:<a@sender.test>").starts("503 5.5.1"), "MAIL before EHLO");
    c.cmd("EHLO client.test");
    assert!(c.cmd("RCPT TO:<u@served.test>").starts("503 5.5.1"), "RCPT before MAIL");
    assert!(c.cmd("DATA").starts("503 5.5.1"), "DATA before MAIL");
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").code, 250);
    assert!(c.cmd("MAIL FROM:<a@sender.test>").starts("503 5.5.1"), "nested MAIL");
    assert!(c.cmd("DATA").starts("554 5.5.1"), "DATA without recipients");
    assert_eq!(c.cmd("RSET").code, 250);
    assert!(c.cmd("RCPT TO:<u@served.test>").starts("503"), "RSET ends the transaction");
    assert!(c.cmd("MAIL FROM:<not an address>").starts("501"));
    assert!(c.cmd("FROBNICATE").starts("500 5.5.1"));
    assert!(c.cmd("MAIL FROM:<a@sender.test> FOO=BAR").starts("555"), "unknown parameter");
}

#[test]
fn pipelined_commands_get_replies_in_order_and_the_message_arrives() {
    let sink = Sink::start(Behavior::default());
    let gw = gateway_to(&sink, |_| {});
    let mut c = Client::connect(gw.smtp());
    c.send_raw(b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<one@served.test>\r\nRCPT TO:<relay@elsewhere.test>\r\nRCPT TO:<two@served.test>\r\nDATA\r\n");
    let codes: Vec<u16> = (0..6).map(|_| c.read_reply().code).collect();
    assert_eq!(codes, [250, 250, 250, 554, 250, 354]);
    c.send_raw(b"Subject: piped\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n");
    assert!(c.read_reply().starts("250 2.0.0 Ok: queued as"));
    assert_eq!(c.read_reply().code, 221);
    let got = sink.wait_for(1, WAIT);
    assert_eq!(got[0].rcpts, ["one@served.test", "two@served.test"]);
    assert!(got[0].text().ends_with("Subject: piped\r\n\r\n.leading dot\r\n"), "{:?}", got[0].text());
}

#[test]
fn bdat_chunks_make_one_message() {
    let sink = Sink::start(Behavior::default());
    let gw = gateway_to(&sink, |_| {});
    let mut c = ehlo(&gw);
    c.cmd("MAIL FROM:<a@sender.test>");
    c.cmd("RCPT TO:<u@served.test>");
    let part1 = b"Subject: chunked\r\n\r\n";
    let part2 = b"body line\r\n.not stuffed in BDAT\r\n";
    c.send_raw(format!("BDAT {}\r\n", part1.len()).as_bytes());
    c.send_raw(part1);
    assert!(c.read_reply().starts("250 2.0.0"));
    c.send_raw(format!("BDAT {} LAST\r\n", part2.len()).as_bytes());
    c.send_raw(part2);
    assert!(c.read_reply().starts("250 2.0.0 Ok: queued as"));
    let got = sink.wait_for(1, WAIT);
    assert!(got[0].text().ends_with("Subject: chunked\r\n\r\nbody line\r\n.not stuffed in BDAT\r\n"));
}

#[test]
fn size_limits_at_mail_and_in_data() {
    let sink = Sink::start(Behavior::default());
    let gw = gateway_to(&sink, |l| l.max_message_size = 2000);
    let mut c = ehlo(&gw);
    assert!(c.cmd("MAIL FROM:<a@sender.test> SIZE=5000").starts("552 5.3.4"));
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test> SIZE=100").code, 250);
    c.cmd("RCPT TO:<u@served.test>");
    assert_eq!(c.cmd("DATA").code, 354);
    let big = "x".repeat(100) + "\r\n";
    for _ in 0..50 {
        c.send_raw(big.as_bytes());
    }
    c.send_raw(b".\r\n");
    assert!(c.read_reply().starts("552 5.3.4"));
    // The session goes on and a small message still gets through.
    let r = c.send_message(
        "a@sender.test",
        &["u@served.test"],
        &message("a@sender.test", "u@served.test", "small", "ok"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(sink.wait_for(1, WAIT).len(), 1);
}

#[test]
fn too_many_recipients_get_452() {
    let sink = Sink::start(Behavior::default());
    let gw = gateway_to(&sink, |l| l.max_recipients = 2);
    let mut c = ehlo(&gw);
    c.cmd("MAIL FROM:<a@sender.test>");
    assert_eq!(c.cmd("RCPT TO:<a@served.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@served.test>").code, 250);
    assert!(c.cmd("RCPT TO:<c@served.test>").starts("452 4.5.3"));
}

#[test]
fn overlong_lines_nul_bytes_and_random_bytes_get_errors_not_crashes() {
    let sink = Sink::start(Behavior::default());
    let mut gw = gateway_to(&sink, |l| l.max_errors = 100);
    let mut c = ehlo(&gw);
    c.send_raw(format!("NOOP {}\r\n", "a".repeat(10_000)).as_bytes());
    assert!(c.read_reply().starts("500 5.5.2"), "line too long");
    assert_eq!(c.cmd("NOOP").code, 250, "the rest of the long line was dropped, the session goes on");
    c.send_raw(b"MAIL FROM:<a\0b@sender.test>\r\n");
    assert!(c.read_reply().code >= 500);
    // Random bytes: each line gets an error reply, none a panic.
    let mut seed: u32 = 0x1234_5678;
    let mut junk = Vec::new();
    for _ in 0..4000 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        junk.push((seed & 0xff) as u8);
    }
    junk.retain(|&b| b != b'\n');
    junk.extend_from_slice(b"\r\nNOOP\r\n");
    c.send_raw(&junk);
    c.set_read_timeout(Duration::from_secs(10));
    let mut last = c.read_reply();
    while last.code != 250 {
        assert!(last.code >= 500, "{last:?}");
        last = c.read_reply();
    }
    assert!(gw.is_running());
    // Another session is served normally.
    let mut other = ehlo(&gw);
    assert_eq!(other.cmd("NOOP").code, 250);
}

#[test]
fn bare_lf_in_data_is_normalised_to_crlf() {
    let sink = Sink::start(Behavior::default());
    let gw = gateway_to(&sink, |_| {});
    let mut c = ehlo(&gw);
    c.cmd("MAIL FROM:<a@sender.test>");
    c.cmd("RCPT TO:<u@served.test>");
    assert_eq!(c.cmd("DATA").code, 354);
    // A bare "\n.\n" must not end the message (SMTP smuggling); only CRLF.CRLF does.
    c.send_raw(b"Subject: lf\nline one\n.\nMAIL FROM:<smuggled@x.test>\r\n.\r\n");
    assert!(c.read_reply().starts("250 2.0.0"));
    let got = sink.wait_for(1, WAIT);
    let text = got[0].text();
    assert!(text.ends_with("Subject: lf\r\nline one\r\n.\r\nMAIL FROM:<smuggled@x.test>\r\n"), "{text:?}");
    gw.wait_idle();
    assert_eq!(sink.received().len(), 1, "nothing smuggled");
}

#[test]
fn too_many_errors_disconnect() {
    let sink = Sink::start(Behavior::default());
    let gw = gateway_to(&sink, |l| l.max_errors = 3);
    let mut c = ehlo(&gw);
    assert_eq!(c.cmd("BOGUS1").code, 500);
    assert_eq!(c.cmd("BOGUS2").code, 500);
    c.send_raw(b"BOGUS3\r\n");
    assert_eq!(c.read_reply().code, 500);
    assert!(c.read_reply().starts("421 4.7.0"));
    assert!(c.try_read_reply().is_none(), "closed");
}

#[test]
fn idle_clients_and_endless_data_time_out_with_421() {
    let sink = Sink::start(Behavior::default());
    let gw = gateway_to(&sink, |l| {
        l.command_timeout = HumanDuration::from_secs(1);
        l.data_timeout = HumanDuration::from_secs(1);
    });
    let mut idle = ehlo(&gw);
    assert!(idle.read_reply().starts("421 4.4.2"));
    let mut endless = ehlo(&gw);
    endless.cmd("MAIL FROM:<a@sender.test>");
    endless.cmd("RCPT TO:<u@served.test>");
    assert_eq!(endless.cmd("DATA").code, 354);
    endless.send_raw(b"Subject: never ends\r\n\r\nand no dot follows\r\n");
    assert!(endless.read_reply().starts("421 4.4.2"));
    assert!(endless.try_read_reply().is_none());
    gw.wait_idle();
    assert!(sink.received().is_empty(), "an unfinished message is never relayed");
}

#[test]
fn connection_limit_per_ip() {
    let sink = Sink::start(Behavior::default());
    let gw = gateway_to(&sink, |l| l.max_connections_per_ip = 2);
    let _a = Client::connect(gw.smtp());
    let _b = Client::connect(gw.smtp());
    let third = Client::connect(gw.smtp());
    assert!(third.greeting.code == 421 && third.greeting.text.starts_with("4.7.0"), "{:?}", third.greeting);
    drop(_a);
    let again = postern_tests::wait_for("a slot to free up", WAIT, || {
        let c = Client::connect(gw.smtp());
        (c.greeting.code == 220).then_some(c)
    });
    assert_eq!(again.greeting.code, 220);
}
