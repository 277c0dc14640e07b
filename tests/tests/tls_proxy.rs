//! STARTTLS (inbound and outbound, with certificate reload) and the PROXY protocol.

use std::time::Duration;

use postern_tests::client::{Client, message, swaks};
use postern_tests::gateway::{GatewayConfig, GatewayProcess};
use postern_tests::sink::{Behavior, Sink};
use postern_tests::tls::{self, TestCa};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn starttls_in_and_verified_tls_out() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca(certs.path());
    let gw_leaf = ca.leaf(certs.path(), "gw", &["gw.test"]);
    let sink_leaf = ca.leaf(certs.path(), "mx", &["localhost"]);
    let sink = Sink::start(Behavior { tls: Some(tls::server_config(&sink_leaf)), ..Behavior::default() });
    let gw = GatewayProcess::start(
        &GatewayConfig::new(&format!(
            "domains:\n  - name: served.test\n    primary:\n      hosts: [\"localhost:{}\"]\n      tls: {{mode: required, verify: true}}\ndelivery:\n  caFile: \"{}\"\n",
            sink.port(),
            ca_file.display()
        ))
        .with_listeners(&format!(
            "  - name: smtp\n    address: \"127.0.0.1:0\"\n    tls: {{certFile: \"{}\", keyFile: \"{}\"}}\n",
            gw_leaf.cert.display(),
            gw_leaf.key.display()
        )),
    );

    let mut c = Client::connect(gw.smtp());
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.text.lines().any(|l| l == "STARTTLS"), "{ehlo:?}");
    // STARTTLS injection (CVE-2011-0411 class): a command pipelined after STARTTLS must be
    // dropped, not run inside the TLS session. Had it run, the EHLO below would be answered
    // by its reply first.
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n");
    assert_eq!(c.read_reply().code, 220);
    let mut c = c.tls_handshake(&ca_file, "gw.test");
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert!(c.cmd("RCPT TO:<u@served.test>").starts("503 5.5.1"), "no MAIL transaction was started");
    drop(c);

    let c = Client::connect(gw.smtp());
    let (mut c, ehlo) = c.starttls(&ca_file, "gw.test");
    assert_eq!(ehlo.code, 250);
    assert!(!ehlo.text.lines().any(|l| l == "STARTTLS"), "not offered twice");
    let r = c.send_message(
        "a@sender.test",
        &["u@served.test"],
        &message("a@sender.test", "u@served.test", "tls", "secret"),
    );
    assert_eq!(r.code, 250, "{r:?}");

    let got = sink.wait_for(1, WAIT);
    assert!(got[0].tls, "delivered over verified TLS");
    let text = got[0].text();
    assert!(text.contains("\t(using TLSv1.3 with cipher TLS13_"), "{text}");
    assert!(text.contains("with ESMTPS id"), "{text}");
}

#[test]
fn required_tls_to_a_server_without_starttls_is_deferred() {
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(&GatewayConfig::new(&format!(
        "domains:\n  - name: served.test\n    primary: {{hosts: [\"{}\"], tls: {{mode: required}}}}\n",
        sink.host()
    )));
    let (ok, t) = swaks(gw.smtp(), "a@sender.test", "u@served.test", &[]);
    assert!(ok, "{t}");
    let deferred = gw.wait_log("deferred", WAIT);
    assert!(deferred["error"].as_str().unwrap().contains("TLS is required"), "{deferred}");
    assert!(sink.received().is_empty());
}

#[test]
fn a_renewed_certificate_is_picked_up_without_restart() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca(certs.path());
    let leaf = ca.leaf(certs.path(), "gw", &["old.gw.test"]);
    let gw = GatewayProcess::start(&GatewayConfig::new("").with_listeners(&format!(
        "  - name: smtp\n    address: \"127.0.0.1:0\"\n    tls: {{certFile: \"{}\", keyFile: \"{}\"}}\n",
        leaf.cert.display(),
        leaf.key.display()
    )));
    let c = Client::connect(gw.smtp());
    let (_c, ehlo) = c.starttls(&ca_file, "old.gw.test");
    assert_eq!(ehlo.code, 250);

    // cert-manager renews: new files in place.
    let renewed = ca.leaf(certs.path(), "gw-new", &["new.gw.test"]);
    std::fs::rename(&renewed.key, &leaf.key).unwrap();
    std::fs::rename(&renewed.cert, &leaf.cert).unwrap();
    gw.wait_log("TLS certificate reloaded", WAIT);
    let c = Client::connect(gw.smtp());
    let (_c, ehlo) = c.starttls(&ca_file, "new.gw.test");
    assert_eq!(ehlo.code, 250);
}

#[test]
fn proxy_protocol_gives_the_real_client_ip() {
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(
        &GatewayConfig::new(&format!(
            "domains:\n  - name: served.test\n    primary: {{hosts: [\"{}\"], tls: {{mode: none}}}}\n",
            sink.host()
        ))
        .with_listeners(
            "  - {name: smtp, address: \"127.0.0.1:0\"}\n  - {name: lb, address: \"127.0.0.1:0\", proxyProtocol: true, trustedProxies: [127.0.0.1/32]}\n  - {name: other-lb, address: \"127.0.0.1:0\", proxyProtocol: true, trustedProxies: [127.0.0.2/32, \"::1/128\"]}\n",
        ),
    );
    let lb = gw.listeners["lb"];

    // v1 header from the load balancer: the Received header names the real client.
    let mut c = Client::connect_with_prefix(lb, b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 25\r\n");
    assert_eq!(c.greeting.code, 220);
    c.cmd("EHLO client.test");
    let r = c.send_message(
        "a@sender.test",
        &["u@served.test"],
        &message("a@sender.test", "u@served.test", "proxied", "x"),
    );
    assert_eq!(r.code, 250);
    let got = sink.wait_for(1, WAIT);
    assert!(got[0].text().starts_with("Received: from client.test ([203.0.113.7])"), "{}", got[0].text());

    // A connection without a PROXY header on that listener is dropped without a greeting.
    let mut raw = std::net::TcpStream::connect(lb).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    std::io::Write::write_all(&mut raw, b"EHLO sneaky.test\r\n").unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(std::io::Read::read(&mut raw, &mut buf).unwrap_or(0), 0, "closed without a reply");

    // A peer that is not a trusted proxy may not name a client: dropped before its header is
    // read, without a greeting, and counted.
    let mut raw = std::net::TcpStream::connect(gw.listeners["other-lb"]).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    std::io::Write::write_all(&mut raw, b"PROXY TCP4 198.51.100.1 10.0.0.1 40000 25\r\n").unwrap();
    assert_eq!(std::io::Read::read(&mut raw, &mut buf).unwrap_or(0), 0, "closed without a reply");
    assert_eq!(gw.metric("postern_smtp_connections_refused_total{reason=\"proxy_untrusted\"}"), Some(1.0));
    assert_eq!(
        gw.logs_matching("connection refused: not from a trusted proxy (listeners[].trustedProxies)").len(),
        1
    );

    // A PROXY header on a listener without proxyProtocol is refused.
    let mut c = Client::connect_with_prefix(gw.smtp(), b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 25\r\n");
    assert_eq!(c.greeting.code, 220);
    let r = c.read_reply();
    assert!(r.starts("554 5.7.0"), "{r:?}");
    assert!(c.try_read_reply().is_none());
}
