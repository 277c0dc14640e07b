//! Delivery end to end: the real gateway, a real DNS server with MX records, real receivers.

use std::net::SocketAddr;
use std::time::Duration;

use postern_api::{Destination, HumanDuration, MailDomainConfig, TlsMode, TlsPolicy};
use postern_tests::client::{Client, message, swaks};
use postern_tests::dns::{self, DnsServer};
use postern_tests::gateway::{GatewayConfig, GatewayProcess};
use postern_tests::reserve_port;
use postern_tests::sink::{Behavior, Sink};

const WAIT: Duration = Duration::from_secs(20);

/// Sinks that play MX hosts listen on different loopback IPs and one shared port, since MX
/// delivery uses one port (delivery.mxPort) for every host.
fn mx_sink(ip: &str, port: u16, behavior: Behavior) -> Sink {
    Sink::start_at(SocketAddr::new(ip.parse().unwrap(), port), behavior)
}

/// A gateway that finds MX hosts through `dns` (on port `mx_port`, plain SMTP) and retries
/// after 1-2 s; `edit` adds what the test is about.
fn config(
    dns: &DnsServer,
    mx_port: u16,
    edit: impl FnOnce(&mut postern_api::GatewayConfig),
) -> GatewayConfig {
    GatewayConfig::typed(|c| {
        c.delivery.nameservers = vec![dns.addr];
        c.delivery.mx_port = mx_port;
        c.delivery.retry_initial = HumanDuration::from_secs(1);
        c.delivery.retry_max = HumanDuration::from_secs(2);
        c.delivery.tls = TlsPolicy::NONE;
        edit(c);
    })
}

/// Clients on loopback may relay.
fn trust_loopback(c: &mut postern_api::GatewayConfig) {
    c.relay.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
}

/// served.test, delivered to `host` over plain SMTP.
fn serve(c: &mut postern_api::GatewayConfig, host: &str) {
    c.domains.push(MailDomainConfig::new("served.test", Destination::hosts(&[host], TlsPolicy::NONE)));
}

#[test]
fn served_domain_goes_to_its_hosts_and_relayed_mail_to_the_mx() {
    let primary = Sink::start(Behavior::default());
    let port = reserve_port();
    let remote = mx_sink("127.0.0.2", port, Behavior::default());
    let dns = DnsServer::start(vec![
        dns::mx("remote.test", 10, "mx.remote.test"),
        dns::a("mx.remote.test", "127.0.0.2"),
    ]);
    let gw = GatewayProcess::start(&config(&dns, port, |c| {
        trust_loopback(c);
        serve(c, &primary.host());
    }));

    // One transaction, two destinations: two jobs, each receiver gets only its recipient.
    let (ok, transcript) = swaks(
        gw.smtp(),
        "alice@sender.test",
        "bob@served.test,carol@remote.test",
        &["--header", "Subject: two hops"],
    );
    assert!(ok, "{transcript}");
    assert!(transcript.contains("250 2.0.0 Ok: queued as"), "{transcript}");

    let at_primary = primary.wait_for(1, WAIT);
    let at_remote = remote.wait_for(1, WAIT);
    assert_eq!(at_primary[0].rcpts, ["bob@served.test"]);
    assert_eq!(at_remote[0].rcpts, ["carol@remote.test"]);
    for env in [&at_primary[0], &at_remote[0]] {
        assert_eq!(env.from, "alice@sender.test");
        assert_eq!(env.helo, "gw.test");
        let text = env.text();
        assert!(
            text.starts_with(
                "Received: from client.test ([127.0.0.1])\r\n\tby gw.test (Postern) with ESMTP id "
            ),
            "{text}"
        );
        assert!(text.contains("Subject: two hops\r\n"));
    }
    gw.wait_idle();
    assert_eq!(primary.received().len(), 1, "exactly one copy");
    assert_eq!(remote.received().len(), 1, "exactly one copy");
    let delivered = gw.logs_matching("delivered");
    assert_eq!(delivered.len(), 2, "one log line per delivered recipient");
    assert_eq!(gw.metric("postern_delivery_recipients_total{result=\"delivered\"}"), Some(2.0));
}

#[test]
fn untrusted_clients_cannot_relay() {
    let dns = DnsServer::start(vec![]);
    let gw = GatewayProcess::start(&config(&dns, 25, |c| {
        let primary = Destination::hosts(&["127.0.0.1:9"], TlsPolicy::default());
        c.domains.push(MailDomainConfig::new("served.test", primary));
    }));
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").code, 250);
    let r = c.cmd("RCPT TO:<victim@elsewhere.test>");
    assert!(r.starts("554 5.7.1"), "{r:?}");
    assert_eq!(c.cmd("RCPT TO:<user@SERVED.test>").code, 250, "served domains are case-insensitive");
}

#[test]
fn a_refused_recipient_is_bounced_and_the_accepted_one_delivered() {
    let port = reserve_port();
    let dest = mx_sink(
        "127.0.0.2",
        port,
        Behavior::default().reject("nobody@remote.test", "550 5.1.1 no such user here"),
    );
    let sender_mx = mx_sink("127.0.0.3", port, Behavior::default());
    let dns = DnsServer::start(vec![
        dns::mx("remote.test", 10, "mx.remote.test"),
        dns::a("mx.remote.test", "127.0.0.2"),
        dns::mx("sender.test", 10, "mx.sender.test"),
        dns::a("mx.sender.test", "127.0.0.3"),
    ]);
    let gw = GatewayProcess::start(&config(&dns, port, trust_loopback));
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    let r = c.send_message(
        "alice@sender.test",
        &["someone@remote.test", "nobody@remote.test"],
        &message("alice@sender.test", "someone@remote.test", "partial", "hello"),
    );
    assert_eq!(r.code, 250, "{r:?}");

    let delivered = dest.wait_for(1, WAIT);
    assert_eq!(delivered[0].rcpts, ["someone@remote.test"], "only the accepted recipient");
    let dsn = sender_mx.wait_for(1, WAIT);
    assert_eq!(dsn[0].from, "", "a DSN has the null sender");
    assert_eq!(dsn[0].rcpts, ["alice@sender.test"]);
    let text = dsn[0].text();
    // mail-builder quotes the parameter (RFC 2045 allows both forms).
    assert!(text.contains("Content-Type: multipart/report; report-type=\"delivery-status\";"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; nobody@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"),
        "{text}"
    );
    assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user here"), "{text}");
    assert!(!text.contains("Final-Recipient: rfc822; someone@remote.test"), "{text}");
    assert!(text.contains("Subject: partial"), "the original headers come back");
    let bounced = gw.wait_log("failed permanently; DSN queued to the sender", WAIT);
    assert_eq!(bounced["rcpt"], "nobody@remote.test");
}

#[test]
fn null_mx_bounces_and_null_sender_never_gets_a_dsn() {
    let port = reserve_port();
    let sender_mx = mx_sink("127.0.0.3", port, Behavior::default());
    let dns = DnsServer::start(vec![
        dns::null_mx("nomail.test"),
        dns::mx("sender.test", 10, "mx.sender.test"),
        dns::a("mx.sender.test", "127.0.0.3"),
    ]);
    let gw = GatewayProcess::start(&config(&dns, port, trust_loopback));
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    let body = message("alice@sender.test", "x@nomail.test", "nullmx", "hi");
    assert_eq!(c.send_message("alice@sender.test", &["x@nomail.test"], &body).code, 250);
    assert_eq!(c.send_message("", &["y@nomail.test"], &body).code, 250);

    let dsn = sender_mx.wait_for(1, WAIT);
    let text = dsn[0].text();
    assert!(
        text.contains("Final-Recipient: rfc822; x@nomail.test\r\nAction: failed\r\nStatus: 5.1.10\r\n"),
        "{text}"
    );
    let dropped = gw.wait_log("failed permanently; no DSN sent", WAIT);
    assert_eq!(dropped["rcpt"], "y@nomail.test");
    assert_eq!(dropped["reason"], "the sender is the null sender");
    gw.wait_idle();
    assert_eq!(sender_mx.received().len(), 1, "no DSN for the null sender");
}

#[test]
fn a_destination_that_is_down_is_retried_until_it_answers() {
    let port = reserve_port();
    let dns = DnsServer::start(vec![]);
    let gw = GatewayProcess::start(&config(&dns, 25, |c| serve(c, &format!("127.0.0.1:{port}"))));
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    let r = c.send_message(
        "a@sender.test",
        &["u@served.test"],
        &message("a@sender.test", "u@served.test", "retry", "x"),
    );
    assert_eq!(r.code, 250);
    let deferred = gw.wait_log("deferred", WAIT);
    assert_eq!(deferred["rcpt"], "u@served.test");
    let sink = Sink::start_on(port, Behavior::default());
    let got = sink.wait_for(1, WAIT);
    assert_eq!(got[0].rcpts, ["u@served.test"]);
}

#[test]
fn mail_that_cannot_be_delivered_within_its_lifetime_is_bounced() {
    let port = reserve_port();
    let sender_mx = mx_sink("127.0.0.3", port, Behavior::default());
    let dead = reserve_port();
    let dns = DnsServer::start(vec![
        dns::mx("sender.test", 10, "mx.sender.test"),
        dns::a("mx.sender.test", "127.0.0.3"),
    ]);
    let gw = GatewayProcess::start(&config(&dns, port, |c| {
        c.delivery.lifetime = HumanDuration::from_secs(3);
        serve(c, &format!("127.0.0.1:{dead}"));
    }));
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    let r = c.send_message(
        "a@sender.test",
        &["u@served.test"],
        &message("a@sender.test", "u@served.test", "expire", "x"),
    );
    assert_eq!(r.code, 250);
    let dsn = sender_mx.wait_for(1, WAIT);
    let text = dsn[0].text();
    assert!(
        text.contains("Final-Recipient: rfc822; u@served.test\r\nAction: failed\r\nStatus: 4.4.1\r\n"),
        "{text}"
    );
    assert!(text.contains("delivery time expired"), "{text}");
}

#[test]
fn mx_preference_fallback_and_implicit_mx() {
    let port = reserve_port();
    // remote.test: MX 10 is down, MX 20 answers. implicit.test: no MX, only an A record.
    let backup = mx_sink("127.0.0.3", port, Behavior::default());
    let implicit = mx_sink("127.0.0.4", port, Behavior::default());
    let dns = DnsServer::start(vec![
        dns::mx("remote.test", 10, "mx1.remote.test"),
        dns::mx("remote.test", 20, "mx2.remote.test"),
        dns::a("mx1.remote.test", "127.0.0.2"),
        dns::a("mx2.remote.test", "127.0.0.3"),
        dns::a("implicit.test", "127.0.0.4"),
    ]);
    let gw = GatewayProcess::start(&config(&dns, port, trust_loopback));
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    let body = message("a@sender.test", "x@remote.test", "mx", "x");
    assert_eq!(c.send_message("a@sender.test", &["x@remote.test", "y@implicit.test"], &body).code, 250);
    assert_eq!(backup.wait_for(1, WAIT)[0].rcpts, ["x@remote.test"]);
    assert_eq!(implicit.wait_for(1, WAIT)[0].rcpts, ["y@implicit.test"]);
}

#[test]
fn opportunistic_tls_encrypts_without_verifying_and_connections_are_reused() {
    let ca = postern_tests::tls::TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    // A certificate for some other name, from a CA the gateway does not trust.
    let leaf = ca.leaf(certs.path(), "mx", &["unrelated.example"]);
    let sink =
        Sink::start(Behavior { tls: Some(postern_tests::tls::server_config(&leaf)), ..Behavior::default() });
    let dns = DnsServer::start(vec![]);
    let gw = GatewayProcess::start(&config(&dns, 25, |c| {
        let tls = TlsPolicy { mode: TlsMode::Opportunistic, verify: false };
        c.domains.push(MailDomainConfig::new("served.test", Destination::hosts(&[&sink.host()], tls)));
    }));
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    for i in 0..3 {
        let body = message("a@sender.test", "u@served.test", &format!("reuse-{i}"), "x");
        assert_eq!(c.send_message("a@sender.test", &["u@served.test"], &body).code, 250);
        // One at a time, so each delivery can reuse the connection the previous one left.
        sink.wait_for(i + 1, WAIT);
    }
    let got = sink.received();
    assert!(got.iter().all(|e| e.tls), "encrypted");
    assert_eq!(sink.connections(), 1, "one connection carried all three messages");
}

/// A new connection to a server seen before resumes its TLS session (an abbreviated
/// handshake: no certificate, no key exchange from scratch), when the server allows it.
#[test]
fn outbound_tls_sessions_resume_on_new_connections() {
    let ca = postern_tests::tls::TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let leaf = ca.leaf(certs.path(), "mx", &["unrelated.example"]);
    let (tls, sessions) = postern_tests::tls::server_config_counting_resumptions(&leaf);
    let sink = Sink::start(Behavior { tls: Some(tls), ..Behavior::default() });
    let dns = DnsServer::start(vec![]);
    let gw = GatewayProcess::start(&config(&dns, 25, |c| {
        // No reuse: every delivery opens a connection of its own.
        c.delivery.idle_timeout = postern_api::HumanDuration::from_millis(0);
        let tls = TlsPolicy { mode: TlsMode::Opportunistic, verify: false };
        c.domains.push(MailDomainConfig::new("served.test", Destination::hosts(&[&sink.host()], tls)));
    }));
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    for i in 0..3 {
        let body = message("a@sender.test", "u@served.test", &format!("resume-{i}"), "x");
        assert_eq!(c.send_message("a@sender.test", &["u@served.test"], &body).code, 250);
        sink.wait_for(i + 1, WAIT);
    }
    assert!(sink.received().iter().all(|e| e.tls), "encrypted");
    assert_eq!(sink.connections(), 3, "a connection per message");
    assert_eq!(
        sessions.resumed.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the second and third handshakes resumed the first session"
    );
}

#[test]
fn a_4xx_reply_is_retried_with_backoff() {
    let sink = Sink::start(Behavior {
        data_reply: Some("451 4.3.0 queue full, try later".into()),
        ..Behavior::default()
    });
    let dns = DnsServer::start(vec![]);
    let gw = GatewayProcess::start(&config(&dns, 25, |c| serve(c, &sink.host())));
    let (ok, t) = swaks(gw.smtp(), "a@sender.test", "u@served.test", &[]);
    assert!(ok, "{t}");
    let second = postern_tests::wait_for("a second deferred attempt", WAIT, || {
        gw.logs_matching("deferred").into_iter().find(|l| l["attempt"] == 2)
    });
    assert!(second["error"].as_str().unwrap().contains("451 4.3.0 queue full"), "{second}");
    let first = &gw.logs_matching("deferred")[0];
    assert_eq!(first["attempt"], 1);
    assert!(sink.received().is_empty());
}

#[test]
fn smtputf8_addresses_are_relayed_and_refused_without_the_parameter() {
    let sink = Sink::start(Behavior::default());
    let dns = DnsServer::start(vec![]);
    let gw = GatewayProcess::start(&config(&dns, 25, |c| serve(c, &sink.host())));
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<jürgen@sender.test>").starts("553 5.6.7"), "UTF-8 needs SMTPUTF8");
    assert_eq!(c.cmd("MAIL FROM:<jürgen@sender.test> SMTPUTF8").code, 250);
    assert_eq!(c.cmd("RCPT TO:<zoë@served.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(
        "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\nFrom: jürgen@sender.test\r\n\r\nhallo\r\n.\r\n".as_bytes(),
    );
    assert_eq!(c.read_reply().code, 250);
    let got = sink.wait_for(1, WAIT);
    assert_eq!(got[0].from, "jürgen@sender.test");
    assert_eq!(got[0].rcpts, ["zoë@served.test"]);
    assert!(got[0].text().contains("with UTF8SMTP id"), "{}", got[0].text());
}
