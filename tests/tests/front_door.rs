//! The SMTP front door as an attacker sees it: raw bytes against the real binary, and what the
//! next hop then receives. One test per defect found by hand (smuggling, BDAT sizes, the first
//! line of DATA, quoted local parts, log injection) and per hardening point.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use postern_api::{
    Account, Action, Destination, HumanDuration, MailDomainConfig, SpamPolicyConfig, TlsPolicy,
};
use postern_tests::client::Client;
use postern_tests::gateway::{GatewayConfig, GatewayProcess};
use postern_tests::sink::{Behavior, Sink};

const WAIT: Duration = Duration::from_secs(20);

/// A gateway config serving served.test, delivered to `sink`, changed by `edit`.
fn config(sink: &Sink, edit: impl FnOnce(&mut postern_api::GatewayConfig)) -> GatewayConfig {
    GatewayConfig::typed(|c| {
        let primary = Destination::hosts(&[&sink.host()], TlsPolicy::NONE);
        c.domains.push(MailDomainConfig::new("served.test", primary));
        edit(c);
    })
}

/// EHLO, MAIL, RCPT and DATA answered: the client is at the start of message data.
fn at_data(gw: &GatewayProcess) -> Client {
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<alice@sender.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@served.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c
}

/// After QUIT's 221, every reply the session will ever send has been sent: the queued count is
/// final, so "exactly one message" is a count, not a wait.
fn queued(gw: &GatewayProcess) -> f64 {
    gw.metric("postern_messages_total{outcome=\"queued\",reason=\"accepted\"}").unwrap_or(0.0)
}

#[test]
fn smuggled_end_of_data_variants_are_message_data() {
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(&config(&sink, |_| {}));
    let variants: [&[u8]; 8] = [
        b"\n.\n",
        b"\r.\r",
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r\n.\r",
        b"\r.\r\n",
        b"\r\n.\r\r\n",
        b"\r\n.\r\r\r\n",
    ];
    for (i, variant) in variants.iter().enumerate() {
        let mut c = at_data(&gw);
        let mut data = b"Subject: outer\r\n\r\nhello".to_vec();
        data.extend_from_slice(variant);
        data.extend_from_slice(b"MAIL FROM:<ceo@corp.test>\r\nRCPT TO:<bob@served.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nforged\r\n\r\n.\r\nQUIT\r\n");
        c.send_raw(&data);
        assert!(c.read_reply().starts("250 2.0.0 Ok: queued"), "variant {variant:?}");
        assert_eq!(c.read_reply().code, 221, "variant {variant:?}: QUIT is the only other reply");
        assert!(c.try_read_reply().is_none());
        assert_eq!(queued(&gw), (i + 1) as f64, "variant {variant:?}: one message per 250");
        let got = sink.wait_for(i + 1, WAIT);
        let msg = &got[i];
        assert_eq!(msg.from, "alice@sender.test");
        let text = msg.text();
        assert!(text.contains("Subject: outer\r\n\r\nhello\r\n"), "variant {variant:?}: {text:?}");
        assert!(
            text.ends_with("MAIL FROM:<ceo@corp.test>\r\nRCPT TO:<bob@served.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nforged\r\n\r\n"),
            "variant {variant:?}: the smuggled commands are body text: {text:?}"
        );
        // Line ends are CRLF only by the time the next hop sees them.
        let bytes = &msg.data;
        assert!(
            bytes.iter().enumerate().all(|(k, &b)| match b {
                b'\r' => bytes.get(k + 1) == Some(&b'\n'),
                b'\n' => k > 0 && bytes[k - 1] == b'\r',
                _ => true,
            }),
            "variant {variant:?}: bare CR or LF reached the next hop"
        );
    }
    assert_eq!(sink.received().len(), variants.len(), "nothing beyond one message per 250");
}

#[test]
fn empty_message_and_a_stuffed_first_line() {
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(&config(&sink, |_| {}));
    let mut c = at_data(&gw);
    // `.` right after 354 ends an empty message; the pipelined transaction after it is its own.
    c.send_raw(b".\r\nMAIL FROM:<alice@sender.test>\r\nRCPT TO:<carol@served.test>\r\nDATA\r\n");
    assert!(c.read_reply().starts("250 2.0.0 Ok: queued"));
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 354);
    c.send_raw(b"..x first line\r\nsecond\r\n.\r\nQUIT\r\n");
    assert!(c.read_reply().starts("250 2.0.0 Ok: queued"));
    assert_eq!(c.read_reply().code, 221);
    let got = sink.wait_for(2, WAIT);
    let by_rcpt = |r: &str| got.iter().find(|e| e.rcpts == [r]).unwrap().text();
    let empty = by_rcpt("bob@served.test");
    assert!(
        empty.starts_with("Received: ") && empty.ends_with("+0000\r\n"),
        "only our trace header: {empty:?}"
    );
    assert!(!empty.contains("MAIL FROM"), "{empty:?}");
    assert!(
        by_rcpt("carol@served.test").ends_with("+0000\r\n.x first line\r\nsecond\r\n"),
        "one stuffing dot removed"
    );
}

#[test]
fn bdat_sizes_use_checked_arithmetic_and_memory_stays_flat() {
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(&config(&sink, |c| c.limits.max_message_size = 100_000));

    // The size from the report: u64::MAX - 1 after two bytes would wrap. Refused at once; the
    // connection is closed, since reading 2^64 bytes to drop them is no option.
    let mut c = Client::connect(gw.smtp());
    c.send_raw(
        b"EHLO client.test\r\nMAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@served.test>\r\nBDAT 2\r\nab",
    );
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 250);
    assert!(c.read_reply().starts("250 2.0.0 2 octets"));
    c.send_raw(b"BDAT 18446744073709551614 LAST\r\n");
    assert!(c.read_reply().starts("552 5.3.4"));
    assert!(c.read_reply().starts("421 4.7.0"));
    assert!(c.is_closed());

    // Past 64 bits (smtp-proto would hand over a small number): the same.
    let mut c = Client::connect(gw.smtp());
    c.send_raw(b"EHLO client.test\r\nMAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@served.test>\r\n");
    for _ in 0..3 {
        c.read_reply();
    }
    c.send_raw(b"BDAT 99999999999999999999999 LAST\r\n");
    assert!(c.read_reply().starts("552 5.3.4"));
    assert!(c.read_reply().starts("421 4.7.0"));

    // A chunk that would pass the limit together with the earlier ones: 552 before its bytes
    // are even sent; they are then read and dropped, and the session goes on.
    let mut c = Client::connect(gw.smtp());
    c.send_raw(
        b"EHLO client.test\r\nMAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@served.test>\r\nBDAT 60000\r\n",
    );
    c.send_raw(&vec![b'a'; 60000]);
    for _ in 0..3 {
        c.read_reply();
    }
    assert!(c.read_reply().starts("250 2.0.0 60000 octets"));
    c.send_raw(b"BDAT 60000 LAST\r\n");
    assert!(c.read_reply().starts("552 5.3.4"), "answered before the chunk's bytes");
    c.send_raw(&vec![b'b'; 60000]);
    assert_eq!(c.cmd("MAIL FROM:<alice@sender.test>").code, 250, "the dropped bytes were not commands");
    assert_eq!(c.cmd("RCPT TO:<bob@served.test>").code, 250);
    c.send_raw(b"BDAT 5 LAST\r\nhello");
    assert!(c.read_reply().starts("250 2.0.0 Ok: queued"));
    assert!(sink.wait_for(1, WAIT)[0].text().ends_with("+0000\r\nhello\r\n"));

    // DATA far past the limit: read and dropped as it comes, never buffered.
    let before = gw.rss_kib();
    let mut c = at_data(&gw);
    let block = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        c.send_raw(&block);
    }
    c.send_raw(b"\r\n.\r\n");
    assert!(c.read_reply().starts("552 5.3.4"));
    let grown = gw.rss_kib().saturating_sub(before);
    assert!(grown < 16 * 1024, "64 MiB of refused data grew the gateway by {grown} KiB");
}

#[test]
fn quoted_local_parts_reach_the_next_hop_quoted() {
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(&config(&sink, |_| {}));
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<\"ceo@corp.test> ENVID=q\"@ext.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<\"bob smith\"@served.test>").code, 250);
    assert!(c.send_data("Subject: quoted\r\n\r\nhi\r\n").starts("250 2.0.0 Ok: queued"));
    let got = sink.wait_for(1, WAIT);
    let lines = &got[0].command_lines;
    assert!(
        lines[0].starts_with("MAIL FROM:<\"ceo@corp.test> ENVID=q\"@ext.test> SIZE=")
            && !lines[0].contains("ENVID=q@"),
        "the next hop sees the sender we judged: {lines:?}"
    );
    assert_eq!(lines[1], "RCPT TO:<\"bob smith\"@served.test>");

    // No form of an address carries control characters: refused, and nothing is relayed.
    for (line, code) in [
        ("MAIL FROM:<\"a\u{1b}[31m\"@ext.test>", 553),
        ("MAIL FROM:<\"a\u{b}b\"@ext.test>", 553),
        ("MAIL FROM:<\"a\u{0}b\"@ext.test>", 553),
    ] {
        let r = c.cmd(line);
        assert_eq!(r.code, code, "{line:?}: {r:?}");
    }
    assert_eq!(c.cmd("MAIL FROM:<alice@sender.test>").code, 250);
    let r = c.cmd("RCPT TO:<\"x\u{1b}y\"@served.test>");
    assert_eq!(r.code, 553, "{r:?}");
}

#[test]
fn values_from_clients_cannot_forge_text_log_lines() {
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(&config(&sink, |_| {}).with_text_logs());
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<\"eve decision=rejected reason=spam\"@ext.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@served.test>").code, 250);
    assert!(c.send_data("Subject: x\r\n\r\nhi\r\n").starts("250"));
    let line = gw.wait_log("message accepted", WAIT);
    let raw = line["raw"].as_str().unwrap();
    assert!(raw.contains(r#" from="eve decision=rejected reason=spam@ext.test" "#), "{raw}");
    assert_eq!(line["decision"], "queued", "the forged field stayed inside the quoted value: {raw}");
}

#[test]
fn postmaster_is_accepted_and_delivered() {
    let sink = Sink::start(Behavior::default());
    // A directory that does not list postmaster: RFC 5321 4.5.1 wants it accepted anyway.
    let gw = GatewayProcess::start(&config(&sink, |c| {
        c.domains[0].accounts = vec![Account { address: "alice".into(), aliases: vec![] }];
    }));
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert!(c.cmd("MAIL FROM:<postmaster>").starts("501 5.1.7"), "not silently the null sender");
    assert!(c.cmd("MAIL FROM:<alice@>").starts("501 5.1.7"));
    assert_eq!(c.cmd("MAIL FROM:<>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@served.test>").code, 550);
    assert_eq!(c.cmd("RCPT TO:<Postmaster@served.test>").code, 250);
    assert!(c.send_data("Subject: one\r\n\r\nhi\r\n").starts("250"));
    assert_eq!(c.cmd("MAIL FROM:<>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<postmaster>").code, 250);
    assert!(c.send_data("Subject: two\r\n\r\nhi\r\n").starts("250"));
    let got = sink.wait_for(2, WAIT);
    let mut rcpts: Vec<&str> = got.iter().map(|e| e.rcpts[0].as_str()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["Postmaster@served.test", "postmaster@served.test"]);
}

#[test]
fn oversized_size_parameter_is_refused() {
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(&config(&sink, |_| {}));
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert!(c.cmd("MAIL FROM:<alice@sender.test> SIZE=99999999999999999999999").starts("552 5.3.4"));
    assert!(c.cmd("MAIL FROM:<alice@sender.test> SIZE=18446744073709551615").starts("552 5.3.4"));
    assert_eq!(c.cmd("MAIL FROM:<alice@sender.test> SIZE=1000").code, 250);
}

#[test]
fn a_command_line_must_be_complete_within_the_command_timeout() {
    let sink = Sink::start(Behavior::default());
    let gw =
        GatewayProcess::start(&config(&sink, |c| c.limits.command_timeout = HumanDuration::from_secs(1)));
    let mut c = Client::connect(gw.smtp());
    // One byte every 200 ms, for up to 8 s: every read comes well within the timeout, the line
    // never does. The 421 must arrive while the bytes are still trickling in.
    let mut writer = c.stream();
    let trickling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let still = trickling.clone();
    let trickle = std::thread::spawn(move || {
        for b in b"NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP\r\n" {
            if writer.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        still.store(false, std::sync::atomic::Ordering::SeqCst);
    });
    let r = c.try_read_reply().expect("a reply before the line ends");
    assert!(
        trickling.load(std::sync::atomic::Ordering::SeqCst),
        "the timeout came only after the client went quiet"
    );
    assert!(r.starts("421 4.4.2"), "{r:?}");
    let _ = trickle.join();
}

#[test]
fn trusted_networks_keep_reserved_connection_slots() {
    let sink = Sink::start(Behavior::default());
    let cfg = config(&sink, |c| {
        c.limits.max_connections = 4;
        c.limits.max_connections_per_ip = 4;
        c.limits.reserved_trusted_connections = 2;
        c.relay.trusted_networks = vec!["198.51.100.0/24".parse().unwrap()];
        c.listeners[0].proxy_protocol = true;
        c.listeners[0].trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    });
    let gw = GatewayProcess::start(&cfg);
    let from = |ip: &str| format!("PROXY TCP4 {ip} 127.0.0.1 40000 25\r\n").into_bytes();
    let _u1 = Client::connect_with_prefix(gw.smtp(), &from("203.0.113.1"));
    let _u2 = Client::connect_with_prefix(gw.smtp(), &from("203.0.113.2"));
    let u3 = Client::connect_with_prefix(gw.smtp(), &from("203.0.113.3"));
    assert!(u3.greeting.starts("421 4.7.0"), "untrusted clients fill only the unreserved slots");
    let mut t1 = Client::connect_with_prefix(gw.smtp(), &from("198.51.100.7"));
    assert_eq!(t1.greeting.code, 220, "a trusted client still gets in");
    assert_eq!(t1.cmd("EHLO relay.test").code, 250);
    let _t2 = Client::connect_with_prefix(gw.smtp(), &from("198.51.100.8"));
    let t3 = Client::connect_with_prefix(gw.smtp(), &from("198.51.100.9"));
    assert!(t3.greeting.starts("421 4.7.0"), "maxConnections holds for trusted clients too");
}

#[test]
fn commands_that_move_no_mail_are_limited() {
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(&config(&sink, |c| c.limits.max_junk_commands = 5));
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    for cmd in ["NOOP", "RSET", "NOOP", "VRFY x", "HELP"] {
        assert!(c.cmd(cmd).code < 400, "{cmd}");
    }
    assert!(c.cmd("NOOP").starts("421 4.7.0"));
    assert!(c.is_closed());

    // An accepted message starts the count again.
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    for _ in 0..5 {
        assert_eq!(c.cmd("RSET").code, 250);
    }
    assert!(
        c.send_message("alice@sender.test", &["bob@served.test"], "Subject: x\r\n\r\nx\r\n").starts("250")
    );
    for _ in 0..5 {
        assert_eq!(c.cmd("NOOP").code, 250);
    }
}

#[test]
fn envelope_checks_have_a_time_budget() {
    // A DNS server that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns: SocketAddr = silent.local_addr().unwrap();
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(&config(&sink, |c| {
        c.delivery.nameservers = vec![dns];
        c.limits.envelope_check_timeout = HumanDuration::from_secs(1);
        let mut strict = SpamPolicyConfig::default();
        strict.spf.fail = Action::Reject;
        c.spam_policies.insert("strict".into(), strict);
        c.domains[0].spam_policy = Some("strict".into());
    }));
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<alice@sender.test>").code, 250);
    let started = Instant::now();
    let r = c.cmd("RCPT TO:<bob@served.test>");
    let took = started.elapsed();
    assert!(r.starts("451 4.4.3"), "{r:?}");
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    assert!(c.cmd("RCPT TO:<carol@served.test>").starts("451 4.4.3"), "same answer without a second wait");
    assert_eq!(gw.metric("postern_spam_check_timeouts_total{stage=\"envelope\"}"), Some(1.0));
    gw.wait_log("envelope checks ran out of time; told the client to retry", WAIT);
    drop(silent);
}

#[test]
fn admin_parameters_cannot_forge_text_log_lines() {
    let dns = postern_tests::dns::DnsServer::start(vec![postern_tests::dns::txt(
        "soft.test",
        "v=spf1 ip4:192.0.2.1 ~all",
    )]);
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(
        &config(&sink, |c| {
            c.delivery.nameservers = vec![dns.addr];
            let mut p = SpamPolicyConfig::default();
            p.spf.soft_fail = Action::Quarantine;
            c.spam_policies.insert("p".into(), p);
            c.domains[0].spam_policy = Some("p".into());
        })
        .with_text_logs(),
    );
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert!(c.send_message("x@soft.test", &["bob@served.test"], "Subject: held\r\n\r\nhi\r\n").starts("250"));
    gw.wait_log("message quarantined", WAIT);
    let (_, body) = gw.admin_get("/api/v1/quarantine");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    let forged = "eve%0A2026-12-01T00:00:00Z%20INFO%20quarantined%20message%20released%20by%3Dadmin%1B%5B2K";
    let (status, _) = gw.admin("DELETE", &format!("/api/v1/quarantine/{id}?by={forged}"));
    assert_eq!(status, 200);
    let line = gw.wait_log("quarantined message deleted", WAIT);
    let raw = line["raw"].as_str().unwrap();
    assert!(
        raw.contains(
            r#"deleted_by="eve\n2026-12-01T00:00:00Z INFO quarantined message released by=admin\u{1b}[2K""#
        ),
        "{raw}"
    );
    assert!(!gw.log_contains("quarantined message released"), "no forged line");
}
