//! Relay rules, the external postmaster, automatic-forwarding control, the sender policy and
//! the connection policy, end to end: the real gateway, a real DNS server (MX records of the
//! outside domains, a null MX, a domain that does not exist) and recording receivers.

use std::net::SocketAddr;
use std::time::Duration;

use postern_api::{
    Destination, ExternalPostmaster, MailDomainConfig, RelayAction, RelayRule, SenderPolicy, TlsPolicy,
};
use postern_tests::client::{Client, message};
use postern_tests::dns::{self, DnsServer};
use postern_tests::gateway::{GatewayConfig, GatewayProcess};
use postern_tests::reserve_port;
use postern_tests::sink::Sink;

const WAIT: Duration = Duration::from_secs(20);

struct World {
    dns: DnsServer,
    mx_port: u16,
    /// served.test's mailbox server.
    primary: Sink,
    /// other.test and corp.test (the external postmaster's domain) share this MX.
    outside: Sink,
}

impl World {
    fn new() -> Self {
        let mx_port = reserve_port();
        Self {
            dns: DnsServer::start(vec![
                dns::mx("other.test", 10, "mx.outside.test"),
                dns::mx("corp.test", 10, "mx.outside.test"),
                dns::mx("real.test", 10, "mx.outside.test"),
                dns::a("mx.outside.test", "127.0.0.3"),
                dns::a("bare.test", "127.0.0.3"),
                dns::null_mx("nomail.test"),
            ]),
            outside: Sink::start_at(
                SocketAddr::new("127.0.0.3".parse().unwrap(), mx_port),
                Default::default(),
            ),
            primary: Sink::start(Default::default()),
            mx_port,
        }
    }

    fn gateway(&self, edit: impl FnOnce(&mut postern_api::GatewayConfig)) -> GatewayProcess {
        GatewayProcess::start(&GatewayConfig::typed(|c| {
            c.delivery.nameservers = vec![self.dns.addr];
            c.delivery.mx_port = self.mx_port;
            c.delivery.tls = TlsPolicy::NONE;
            let primary = Destination::hosts(&[&self.primary.host()], TlsPolicy::NONE);
            c.domains.push(MailDomainConfig::new("served.test", primary));
            edit(c);
        }))
    }
}

fn rule(action: RelayAction) -> RelayRule {
    RelayRule {
        name: String::new(),
        action,
        client_networks: vec![],
        helo_names: vec![],
        senders: vec![],
        recipients: vec![],
    }
}

fn client(gw: &GatewayProcess) -> Client {
    let mut c = Client::connect(gw.smtp());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    c
}

#[test]
fn discarded_recipients_get_250_and_are_counted_never_delivered() {
    let world = World::new();
    let gw = world.gateway(|c| {
        c.relay.rules = vec![RelayRule {
            name: "trap".into(),
            recipients: vec!["trap@served.test".into()],
            ..rule(RelayAction::Discard)
        }];
    });
    let mut c = client(&gw);
    let m = message("a@sender.test", "alice@served.test", "mixed", "hi");
    assert!(c.send_message("a@sender.test", &["trap@served.test", "alice@served.test"], &m).starts("250"));
    let only_trap = message("a@sender.test", "trap@served.test", "trap-only", "hi");
    let r = c.send_message("a@sender.test", &["trap@served.test"], &only_trap);
    assert!(r.starts("250 2.0.0 Ok: queued as"), "{r:?}");
    gw.wait_idle();
    let got = world.primary.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, ["alice@served.test"]);
    assert!(got[0].text().contains("Subject: mixed"));
    assert_eq!(gw.metric("postern_recipients_discarded_total"), Some(2.0));
    assert_eq!(gw.metric("postern_messages_total{outcome=\"discarded\",reason=\"relay_rule\"}"), Some(1.0));
    let logged = gw.logs_matching("message discarded by a relay rule");
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0]["decision"], "discarded");
}

#[test]
fn reject_rules_refuse_and_allow_rules_open_relaying_only_by_network() {
    let world = World::new();
    let gw = world.gateway(|c| {
        c.relay.rules = vec![
            RelayRule { senders: vec!["@spammer.test".into()], ..rule(RelayAction::Reject) },
            // By sender alone: no relaying (forgeable).
            RelayRule { senders: vec!["ceo@partner.test".into()], ..rule(RelayAction::Allow) },
            // By network: relaying to what it names.
            RelayRule {
                client_networks: vec!["127.0.0.0/8".parse().unwrap()],
                recipients: vec!["@other.test".into()],
                ..rule(RelayAction::Allow)
            },
        ];
    });
    let mut c = client(&gw);
    c.cmd("MAIL FROM:<x@spammer.test>");
    assert!(c.cmd("RCPT TO:<alice@served.test>").starts("554 5.7.1 Recipient address rejected by policy"));
    c.cmd("RSET");
    c.cmd("MAIL FROM:<ceo@partner.test>");
    assert!(c.cmd("RCPT TO:<x@third.test>").starts("554 5.7.1 Relay access denied"));
    // The first rule that matches decides: the sender's rule, not the network's.
    assert!(c.cmd("RCPT TO:<x@other.test>").starts("554 5.7.1 Relay access denied"));
    assert!(c.cmd("RCPT TO:<alice@served.test>").starts("250"));
    c.cmd("RSET");
    let m = message("a@sender.test", "x@other.test", "relayed", "hi");
    assert!(c.send_message("a@sender.test", &["x@other.test"], &m).starts("250"));
    assert_eq!(world.outside.wait_for(1, WAIT)[0].rcpts, ["x@other.test"]);
    assert_eq!(gw.metric("postern_recipients_refused_total{reason=\"relay_rule\"}"), Some(1.0));
}

#[test]
fn role_addresses_of_served_domains_go_to_the_external_postmaster() {
    let world = World::new();
    let gw = world.gateway(|c| {
        c.relay.external_postmaster =
            Some(ExternalPostmaster { address: "hostmaster@corp.test".into(), include_abuse: true });
    });
    let mut c = client(&gw);
    for (n, rcpt) in
        ["postmaster@served.test", "abuse@served.test", "MAILER-DAEMON@served.test"].iter().enumerate()
    {
        let m = message("a@sender.test", rcpt, &format!("role{n}"), "hi");
        assert!(c.send_message("a@sender.test", &[rcpt], &m).starts("250"), "{rcpt}");
    }
    // The bare <postmaster> (no domain) goes there too when `postmaster` is not set.
    c.cmd("MAIL FROM:<a@sender.test>");
    assert!(c.cmd("RCPT TO:<postmaster>").starts("250"));
    assert!(c.send_data(&message("a@sender.test", "postmaster", "bare", "hi")).starts("250"));
    let got = world.outside.wait_for(4, WAIT);
    assert!(
        got.iter().all(|e| e.rcpts == ["hostmaster@corp.test"]),
        "{:?}",
        got.iter().map(|e| &e.rcpts).collect::<Vec<_>>()
    );
    // Other addresses of the domain still go to its mailbox server.
    let m = message("a@sender.test", "alice@served.test", "normal", "hi");
    assert!(c.send_message("a@sender.test", &["alice@served.test"], &m).starts("250"));
    assert_eq!(world.primary.wait_for(1, WAIT)[0].rcpts, ["alice@served.test"]);
}

#[test]
fn automatic_forwarding_to_outside_domains_is_refused() {
    let world = World::new();
    let gw = world.gateway(|c| {
        c.relay.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
        c.relay.block_auto_forwarding = true;
    });
    let mut c = client(&gw);
    let forwarded = |to: &str, header: &str| {
        format!("{header}\r\n{}", message("alice@served.test", to, "fwd", "quarterly numbers"))
    };
    for header in [
        "Auto-Submitted: auto-forwarded",
        "X-MS-Exchange-Inbox-Rules-Loop: alice@served.test",
        "Resent-From: <alice@served.test>",
    ] {
        let r = c.send_message("alice@served.test", &["x@other.test"], &forwarded("x@other.test", header));
        assert!(
            r.starts("550 5.7.1 Automatic forwarding to outside domains is not allowed"),
            "{header}: {r:?}"
        );
    }
    // Inside the organisation forwarding is fine; a message a person sent is fine anywhere.
    let inside = forwarded("bob@served.test", "Auto-Submitted: auto-forwarded");
    assert!(c.send_message("alice@served.test", &["bob@served.test"], &inside).starts("250"));
    let sent = message("alice@served.test", "x@other.test", "by hand", "hi");
    assert!(c.send_message("alice@served.test", &["x@other.test"], &sent).starts("250"));
    assert_eq!(world.primary.wait_for(1, WAIT).len(), 1);
    let out = world.outside.wait_for(1, WAIT);
    assert!(out[0].text().contains("Subject: by hand"));
    gw.wait_idle();
    assert_eq!(world.outside.received().len(), 1);
    assert_eq!(gw.metric("postern_messages_total{outcome=\"rejected\",reason=\"auto_forward\"}"), Some(3.0));
}

#[test]
fn senders_from_unresolvable_or_served_domains_are_refused_for_outside_clients() {
    let world = World::new();
    let policy = SenderPolicy { require_resolvable_domain: true, reject_served_domain_senders: true };
    let gw = world.gateway(|c| c.sender_policy = policy.clone());
    let mut c = client(&gw);
    for (sender, expected) in [
        ("a@gone.test", "550 5.1.8 Sender address rejected: domain gone.test does not exist"),
        (
            "a@nomail.test",
            "550 5.1.8 Sender address rejected: domain nomail.test does not accept mail (null MX)",
        ),
        ("ceo@served.test", "550 5.7.1 Sender address rejected: served.test is ours"),
    ] {
        let r = c.cmd(&format!("MAIL FROM:<{sender}>"));
        assert!(r.starts(expected), "{sender}: {r:?}");
    }
    // An MX, or only an address record, will do; so will the null sender.
    for sender in ["a@real.test", "a@bare.test", ""] {
        assert!(c.cmd(&format!("MAIL FROM:<{sender}>")).starts("250"), "{sender}");
        c.cmd("RSET");
    }
    assert_eq!(
        gw.metric("postern_messages_total{outcome=\"rejected\",reason=\"sender_domain_unresolvable\"}"),
        Some(2.0)
    );

    // A trusted network sends for the served domain.
    let trusted = world.gateway(|c| {
        c.sender_policy = policy;
        c.relay.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
    });
    let mut c = client(&trusted);
    assert!(c.cmd("MAIL FROM:<ceo@served.test>").starts("250"));
}

fn connection_policy(edit: impl FnOnce(&mut postern_api::ConnectionPolicy)) -> postern_api::ConnectionPolicy {
    let mut p = postern_api::ConnectionPolicy::default();
    edit(&mut p);
    p
}

#[test]
fn helo_names_that_are_not_fqdns_or_claim_to_be_us_are_refused() {
    use postern_api::CheckAction::Reject;
    let world = World::new();
    let policy = connection_policy(|p| {
        p.helo_fqdn = Reject;
        p.helo_not_ours = Reject;
    });
    let gw = world.gateway(|c| c.connection_policy = policy.clone());
    let mut c = Client::connect(gw.smtp());
    for (helo, why) in [
        ("localhost", "not a fully qualified domain name"),
        ("127.0.0.1", "a bare IP address"),
        ("gw.test", "claims to be this gateway"),
        ("served.test", "claims to be this gateway"),
    ] {
        let r = c.cmd(&format!("EHLO {helo}"));
        assert!(r.starts("550 5.7.1 Helo command rejected:") && r.text.contains(why), "{helo}: {r:?}");
    }
    assert!(c.cmd("MAIL FROM:<a@sender.test>").starts("503"), "no HELO was taken");
    assert_eq!(c.cmd("EHLO [127.0.0.1]").code, 250);
    assert_eq!(c.cmd("EHLO mail.sender.test").code, 250);
    assert_eq!(
        gw.metric("postern_connection_checks_failed_total{check=\"helo_fqdn\",action=\"reject\"}"),
        Some(2.0)
    );

    // Trusted networks are not checked.
    let trusted = world.gateway(|c| {
        c.connection_policy = policy;
        c.relay.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
    });
    assert_eq!(Client::connect(trusted.smtp()).cmd("EHLO localhost").code, 250);
}

#[test]
fn a_client_that_talks_before_the_greeting_is_refused() {
    use std::io::{BufRead, BufReader, Write};
    let world = World::new();
    let gw = world.gateway(|c| {
        c.connection_policy = connection_policy(|p| {
            p.greeting_delay = postern_api::HumanDuration(Duration::from_millis(500));
            p.early_talkers = postern_api::CheckAction::Reject;
        })
    });
    let mut rude = std::net::TcpStream::connect(gw.smtp()).unwrap();
    rude.write_all(b"EHLO bulk.example\r\nMAIL FROM:<a@bulk.example>\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(&rude).read_line(&mut line).unwrap();
    assert!(line.starts_with("554 5.7.1 Protocol error: you talked before the greeting"), "{line:?}");
    // A client that waits gets the greeting (after the delay) and its session.
    let mut polite = Client::connect(gw.smtp());
    assert_eq!(polite.greeting.code, 220);
    assert_eq!(polite.cmd("EHLO mail.sender.test").code, 250);
    assert_eq!(
        gw.metric("postern_connection_checks_failed_total{check=\"early_talker\",action=\"reject\"}"),
        Some(1.0)
    );
}

#[test]
fn clients_without_forward_confirmed_reverse_dns_are_refused_or_logged() {
    use postern_api::CheckAction::{Log, Reject};
    // A client on 127.0.0.5 has no PTR anywhere. 127.0.0.1 is "localhost", which resolves back
    // to it: the resolver answers loopback names itself (RFC 6761), so a PTR the test's DNS
    // server published for another 127.x address would never be asked for; the lookup of a
    // name that leads back is covered by the unit tests on the text-zone double.
    let world = World::new();
    let nameless = "127.0.0.5".parse().unwrap();
    let gw = world.gateway(|c| c.connection_policy = connection_policy(|p| p.reverse_dns = Reject));
    let c = Client::connect_from(gw.smtp(), nameless);
    let expected = "554 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.5]";
    assert!(c.greeting.starts(expected), "{:?}", c.greeting);
    assert_eq!(Client::connect(gw.smtp()).greeting.code, 220, "127.0.0.1 is localhost and back");
    let logged = world.gateway(|c| c.connection_policy = connection_policy(|p| p.reverse_dns = Log));
    assert_eq!(Client::connect_from(logged.smtp(), nameless).greeting.code, 220);
    let sample = "postern_connection_checks_failed_total{check=\"reverse_dns\",action=\"log\"}";
    assert_eq!(logged.metric(sample), Some(1.0));
}
