//! Routing end to end: the real gateway, a real DNS server (MX records for the destination and
//! the sender's domain), and three recording receivers: "primary" (the mailbox server),
//! "destination" (the other server of a routing policy) and "sender" (the sender's domain,
//! where DSNs arrive). Each test asserts which receiver got which RCPT TO, how many copies,
//! and what the client was told.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use postern_api::{
    Account, Destination, Group, HumanDuration, MailDomainConfig, OutboundGateway, RecipientVerification,
    RoutingMode, RoutingPolicyConfig, SmtpAuth, TlsMode, TlsPolicy,
};
use postern_tests::client::{Client, message};
use postern_tests::dns::{self, DnsServer};
use postern_tests::gateway::{GatewayConfig, GatewayProcess, binary};
use postern_tests::reserve_port;
use postern_tests::sink::{Behavior, Envelope, Sink};
use postern_tests::tls::{self, TestCa};

const WAIT: Duration = Duration::from_secs(20);

struct World {
    dns: DnsServer,
    mx_port: u16,
    primary: Sink,
    destination: Sink,
    sender: Sink,
}

impl World {
    fn new(destination: Behavior) -> Self {
        Self::with_primary(Behavior::default(), destination)
    }

    fn with_primary(primary: Behavior, destination: Behavior) -> Self {
        let mx_port = reserve_port();
        let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), mx_port);
        Self {
            dns: DnsServer::start(vec![
                dns::mx("dest.test", 10, "mx.dest.test"),
                dns::a("mx.dest.test", "127.0.0.2"),
                dns::mx("sender.test", 10, "mx.sender.test"),
                dns::a("mx.sender.test", "127.0.0.3"),
                dns::mx("other.test", 10, "mx.other.test"),
                dns::a("mx.other.test", "127.0.0.3"),
            ]),
            primary: Sink::start(primary),
            destination: Sink::start_at(at("127.0.0.2"), destination),
            sender: Sink::start_at(at("127.0.0.3"), Behavior::default()),
            mx_port,
        }
    }

    /// A gateway serving served.test (accounts alice + alias al, bob; group team) through the
    /// world's DNS and receivers; `edit` adds what the test is about (a routing policy, ...).
    fn gateway(&self, edit: impl FnOnce(&mut postern_api::GatewayConfig)) -> GatewayProcess {
        GatewayProcess::start(&GatewayConfig::typed(|c| {
            c.delivery.nameservers = vec![self.dns.addr];
            c.delivery.mx_port = self.mx_port;
            c.delivery.retry_initial = HumanDuration::from_secs(1);
            c.delivery.retry_max = HumanDuration::from_secs(2);
            c.delivery.tls = TlsPolicy::NONE;
            let primary = Destination::hosts(&[&self.primary.host()], TlsPolicy::NONE);
            let mut served = MailDomainConfig::new("served.test", primary);
            let account = |address: &str, aliases: &[&str]| Account {
                address: address.into(),
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
            };
            served.accounts = vec![account("alice", &["al"]), account("bob", &[])];
            served.groups = vec![Group {
                address: "team".into(),
                members: vec!["alice".into(), "bob".into()],
                moderator: None,
            }];
            c.domains.push(served);
            edit(c);
        }))
    }
}

/// A routing policy: `mode` (as the CRD spells it) to dest.test's MX, plain SMTP, with the
/// defaults of the file format; `adjust` changes the rest.
fn policy(mode: &str, adjust: impl FnOnce(&mut RoutingPolicyConfig)) -> RoutingPolicyConfig {
    let mode: RoutingMode = serde_json::from_value(serde_json::Value::String(mode.into())).unwrap();
    let mut policy = RoutingPolicyConfig {
        mode,
        destination: Destination { mx: Some("dest.test".into()), hosts: vec![], tls: TlsPolicy::NONE },
        enabled: true,
        rewrite_envelope: false,
        bounce_on_failure: true,
        verification_address: None,
        expand_groups: false,
    };
    adjust(&mut policy);
    policy
}

/// served.test under `policy(mode, adjust)`.
fn routed(
    mode: &str,
    adjust: impl FnOnce(&mut RoutingPolicyConfig),
) -> impl FnOnce(&mut postern_api::GatewayConfig) {
    let policy = policy(mode, adjust);
    move |c| c.domains[0].routing = Some(policy)
}

/// Sends one transaction; returns the reply to each RCPT and the final reply.
fn send(gw: &GatewayProcess, from: &str, rcpts: &[&str], subject: &str) -> (Vec<u16>, u16) {
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).code, 250);
    let codes: Vec<u16> = rcpts.iter().map(|r| c.cmd(&format!("RCPT TO:<{r}>")).code).collect();
    if !codes.contains(&250) {
        return (codes, 0);
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(message(from, rcpts[0], subject, "routing test").as_bytes());
    c.send_raw(b".\r\n");
    let fin = c.read_reply().code;
    c.cmd("QUIT");
    (codes, fin)
}

/// What a receiver got: each envelope's recipients, sorted, once the expected count arrived
/// and the gateway's queue is empty (so nothing more can come).
fn rcpts_at(gw: &GatewayProcess, sink: &Sink, expected_envelopes: usize) -> Vec<Vec<String>> {
    if expected_envelopes > 0 {
        sink.wait_for(expected_envelopes, WAIT);
    }
    gw.wait_idle();
    let got: Vec<Envelope> = sink.received();
    let mut out: Vec<Vec<String>> = got
        .into_iter()
        .map(|e| {
            let mut r = e.rcpts;
            r.sort();
            r
        })
        .collect();
    out.sort();
    out
}

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn each_mode_routes_known_unknown_and_group_recipients() {
    // recipients: alice (account), zed (unknown), team (a group, not expanded)
    // (mode, RCPT replies, envelopes at the primary, envelopes at the destination)
    type Case = (&'static str, [u16; 3], Vec<Vec<String>>, Vec<Vec<String>>);
    let cases: [Case; 4] = [
        ("Direct", [250, 550, 250], vec![v(&["alice@served.test", "team@served.test"])], vec![]),
        (
            "Split",
            [250, 250, 250],
            vec![v(&["alice@served.test", "team@served.test"])],
            vec![v(&["zed@served.test"])],
        ),
        (
            "Dual",
            [250, 550, 250],
            vec![v(&["alice@served.test", "team@served.test"])],
            vec![v(&["alice@served.test", "team@served.test"])],
        ),
        (
            "RouteAll",
            [250, 250, 250],
            vec![v(&["alice@served.test", "team@served.test"])],
            vec![v(&["alice@served.test", "team@served.test", "zed@served.test"])],
        ),
    ];
    for (mode, codes, at_primary, at_destination) in cases {
        let world = World::new(Behavior::default());
        let gw = world.gateway(routed(mode, |_| {}));
        let (got_codes, fin) = send(
            &gw,
            "sender@sender.test",
            &["alice@served.test", "zed@served.test", "team@served.test"],
            mode,
        );
        assert_eq!(got_codes, codes, "{mode}: RCPT replies");
        assert_eq!(fin, 250, "{mode}");
        assert_eq!(rcpts_at(&gw, &world.primary, at_primary.len()), at_primary, "{mode}: primary");
        assert_eq!(
            rcpts_at(&gw, &world.destination, at_destination.len()),
            at_destination,
            "{mode}: destination"
        );
        assert!(world.sender.received().is_empty(), "{mode}: no bounce");
    }
}

#[test]
fn no_policy_is_direct_and_aliases_are_known() {
    let world = World::new(Behavior::default());
    let gw = world.gateway(|_| {});
    let (codes, fin) = send(&gw, "s@sender.test", &["al@served.test", "nobody@served.test"], "direct");
    assert_eq!((codes, fin), (vec![250, 550], 250));
    assert_eq!(rcpts_at(&gw, &world.primary, 1), vec![v(&["al@served.test"])]);
    assert_eq!(world.destination.received().len(), 0);
}

#[test]
fn envelope_rewrite_changes_rcpt_to_but_not_the_headers() {
    let world = World::new(Behavior::default());
    let gw = world.gateway(routed("Split", |p| p.rewrite_envelope = true));
    let (codes, fin) = send(&gw, "s@sender.test", &["Zed@served.test"], "rewrite");
    assert_eq!((codes, fin), (vec![250], 250));
    let got = world.destination.wait_for(1, WAIT);
    assert_eq!(got[0].rcpts, ["Zed@dest.test"]);
    assert!(got[0].text().contains("To: <Zed@served.test>\r\n"), "headers untouched");
}

#[test]
fn bounce_on_failure_on_sends_a_dsn() {
    let world = World::new(Behavior::default().reject("zed@served.test", "550 5.1.1 unknown at destination"));
    let gw = world.gateway(routed("Split", |p| p.bounce_on_failure = true));
    assert_eq!(send(&gw, "s@sender.test", &["zed@served.test"], "bounce-on"), (vec![250], 250));
    let dsn = world.sender.wait_for(1, WAIT);
    assert_eq!(dsn[0].rcpts, ["s@sender.test"]);
    assert!(
        dsn[0].text().contains("Diagnostic-Code: smtp; 550 5.1.1 unknown at destination"),
        "{}",
        dsn[0].text()
    );
}

#[test]
fn bounce_on_failure_off_drops_with_a_log_line_and_a_metric() {
    let world = World::new(Behavior::default().reject("zed@served.test", "550 5.1.1 unknown at destination"));
    let gw = world.gateway(routed("Split", |p| p.bounce_on_failure = false));
    assert_eq!(send(&gw, "s@sender.test", &["zed@served.test"], "bounce-off"), (vec![250], 250));
    let dropped = gw.wait_log("failed permanently; no DSN sent", WAIT);
    assert_eq!(dropped["rcpt"], "zed@served.test");
    assert_eq!(dropped["reason"], "bouncing is off for this route");
    assert_eq!(gw.metric("postern_delivery_recipients_total{result=\"dropped\"}"), Some(1.0));
    assert_eq!(rcpts_at(&gw, &world.sender, 0), Vec::<Vec<String>>::new(), "no DSN");
}

#[test]
fn a_policy_goes_live_only_after_its_destination_accepted_the_verification_message() {
    let refusing = Behavior::default().reject("verify@dest.test", "550 5.1.1 no such mailbox");
    let world = World::new(refusing);
    let gw = world.gateway(routed("Split", |p| p.verification_address = Some("verify@dest.test".into())));
    let failed = gw.wait_log("destination verification failed; domain stays Direct", WAIT);
    assert!(failed["detail"].as_str().unwrap().contains("550 5.1.1 no such mailbox"), "{failed}");
    // Not verified: the domain is Direct, so an unknown address is refused.
    assert_eq!(send(&gw, "s@sender.test", &["zed@served.test"], "gated").0, vec![550]);

    // The destination is fixed; an admin re-triggers verification with the CLI.
    world.destination.stop();
    let accepting = Sink::start_at(world.destination.addr, Behavior::default());
    let out = Command::new(binary())
        .args(["verification", "retry", "served.test", "--admin", &gw.admin.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    gw.wait_log("destination verified; routing policy is live", WAIT);
    let list = Command::new(binary())
        .args(["verification", "list", "--admin", &gw.admin.to_string()])
        .output()
        .unwrap();
    let states: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(states[0]["domain"], "served.test");
    assert_eq!(states[0]["status"], "verified");
    let verification = accepting.wait_for(1, WAIT);
    assert_eq!(verification[0].rcpts, ["verify@dest.test"]);
    assert!(verification[0].text().contains("Subject: Postern destination verification for served.test"));

    // Live now: the unknown address is forwarded to the destination.
    assert_eq!(send(&gw, "s@sender.test", &["zed@served.test"], "live"), (vec![250], 250));
    let got = accepting.wait_for(2, WAIT);
    assert_eq!(got[1].rcpts, ["zed@served.test"]);

    // A new destination (config reload) is verified again before it is used.
    let second = Sink::start(Behavior::default());
    let mut config =
        postern_api::load_gateway_config(&std::fs::read_to_string(&gw.config_path).unwrap()).unwrap();
    config.domains[0].routing.as_mut().unwrap().destination =
        Destination::hosts(&[&second.host()], TlsPolicy::NONE);
    std::fs::write(&gw.config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let verified = postern_tests::wait_for("the new destination to be verified", WAIT, || {
        gw.logs_matching("destination verified; routing policy is live")
            .into_iter()
            .find(|l| l["destination"] == format!("hosts:{}", second.host()))
    });
    assert_eq!(verified["domain"], "served.test");
    assert_eq!(second.wait_for(1, WAIT)[0].rcpts, ["verify@dest.test"]);
}

#[test]
fn group_members_are_routed_one_by_one_when_expansion_is_on() {
    let world = World::new(Behavior::default());
    // "all" nests "team" (a loop) and names an outside member and alice twice.
    let gw = world.gateway(|c| {
        let group = |address: &str, members: &[&str]| Group {
            address: address.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            moderator: None,
        };
        c.domains[0].groups = vec![
            group("team", &["alice", "all"]),
            group("all", &["bob", "carol@other.test", "team", "alice"]),
        ];
        routed("Dual", |p| p.expand_groups = true)(c);
    });
    assert_eq!(send(&gw, "s@sender.test", &["team@served.test"], "group"), (vec![250], 250));
    // Dual: each local member to the primary and the destination; the outside member relayed.
    assert_eq!(rcpts_at(&gw, &world.primary, 1), vec![v(&["alice@served.test", "bob@served.test"])]);
    assert_eq!(rcpts_at(&gw, &world.destination, 1), vec![v(&["alice@served.test", "bob@served.test"])]);
    assert_eq!(
        rcpts_at(&gw, &world.sender, 1),
        vec![v(&["carol@other.test"])],
        "mx.other.test is the 'sender' sink"
    );
}

#[test]
fn recipient_verification_asks_the_primary_and_caches_the_answer() {
    let primary = Behavior::default().reject("ghost@served.test", "550 5.1.1 no such user");
    let world = World::with_primary(primary, Behavior::default());
    // No directory of its own: every address is asked of the primary.
    let gw = world.gateway(|c| {
        let served = &mut c.domains[0];
        served.accounts.clear();
        served.groups.clear();
        served.recipient_verification =
            Some(RecipientVerification { cache_ttl: HumanDuration::from_secs(600) });
    });
    let (codes, fin) = send(&gw, "s@sender.test", &["ghost@served.test", "real@served.test"], "probe");
    assert_eq!((codes, fin), (vec![550, 250], 250));
    // Count only after the first delivery: it opens its own connection, at a time of its own.
    world.primary.wait_for(1, WAIT);
    let probes_before = world.primary.connections();
    let (codes, _) = send(&gw, "s@sender.test", &["ghost@served.test", "real@served.test"], "probe-again");
    assert_eq!(codes, vec![550, 250]);
    let got = world.primary.wait_for(2, WAIT);
    assert!(got.iter().all(|e| e.rcpts == ["real@served.test"]));
    // The second transaction asked nothing: both answers came from the cache (the only new
    // connection, if any, is the delivery itself, which may reuse the pooled one).
    assert!(world.primary.connections() <= probes_before + 1, "answers cached");
}

#[test]
fn one_transaction_across_domains_and_modes_makes_the_right_jobs() {
    let world = World::new(Behavior::default());
    let gw = world.gateway(|c| {
        c.relay.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
        let domain = |name: &str, account: &str, c: &mut postern_api::GatewayConfig| {
            let mut d = c.domains[0].clone();
            d.name = name.into();
            d.accounts = vec![Account { address: account.into(), aliases: vec![] }];
            d.groups.clear();
            d
        };
        let mut split = domain("split.test", "ann", c);
        split.routing = Some(policy("Split", |_| {}));
        let mut dual = domain("dual.test", "dan", c);
        dual.routing = Some(policy("Dual", |p| p.bounce_on_failure = false));
        c.domains = vec![split, dual];
    });
    let rcpts = ["ann@split.test", "new@split.test", "dan@dual.test", "nope@dual.test", "x@other.test"];
    let (codes, fin) = send(&gw, "s@sender.test", &rcpts, "mixed");
    assert_eq!((codes, fin), (vec![250, 250, 250, 550, 250], 250));
    // primary: ann and dan share one next hop and one bounce setting: one envelope.
    assert_eq!(rcpts_at(&gw, &world.primary, 1), vec![v(&["ann@split.test", "dan@dual.test"])]);
    // destination: new@split.test (bounce on) and dan@dual.test (bounce off) are two jobs.
    assert_eq!(rcpts_at(&gw, &world.destination, 2), vec![v(&["dan@dual.test"]), v(&["new@split.test"])]);
    // x@other.test relayed to its MX (the "sender" sink plays mx.other.test).
    assert_eq!(rcpts_at(&gw, &world.sender, 1), vec![v(&["x@other.test"])]);
}

#[test]
fn mail_from_an_inbound_gateway_names_the_original_client() {
    let world = World::new(Behavior::default());
    let gw = world.gateway(|c| c.relay.inbound_gateways = vec!["127.0.0.0/8".parse().unwrap()]);
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO oldmx.test");
    let relayed = format!(
        "Received: from mail.sender.test (mail.sender.test [198.51.100.23])\r\n\tby oldmx.test (Postfix) with ESMTP id ABC;\r\n\tMon, 23 Nov 2026 12:00:00 +0000\r\n{}",
        message("s@sender.test", "alice@served.test", "via-old-mx", "x")
    );
    assert_eq!(c.send_message("s@sender.test", &["alice@served.test"], &relayed).code, 250);
    let accepted = gw.wait_log("message accepted", WAIT);
    assert_eq!(accepted["original_client"], "198.51.100.23");
    assert_eq!(rcpts_at(&gw, &world.primary, 1), vec![v(&["alice@served.test"])]);
}

#[test]
fn mail_for_other_domains_leaves_through_the_smarthost_with_auth() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca(certs.path());
    let leaf = ca.leaf(certs.path(), "smarthost", &["localhost"]);
    let password_file = certs.path().join("smarthost-password");
    std::fs::write(&password_file, "s3cret\n").unwrap();
    let smarthost = Sink::start(Behavior {
        tls: Some(tls::server_config(&leaf)),
        auth: Some(("relay-user".into(), "s3cret".into())),
        ..Behavior::default()
    });
    let world = World::new(Behavior::default());
    let gw = world.gateway(|c| {
        c.relay.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
        c.delivery.ca_file = Some(ca_file.clone());
        c.delivery.outbound_gateway = Some(OutboundGateway {
            host: format!("localhost:{}", smarthost.port()),
            tls: TlsPolicy { mode: TlsMode::Required, verify: true },
            auth: Some(SmtpAuth { username: "relay-user".into(), password_file: password_file.clone() }),
        });
    });
    assert_eq!(send(&gw, "s@sender.test", &["x@other.test"], "smarthost"), (vec![250], 250));
    let got = smarthost.wait_for(1, WAIT);
    assert_eq!(got[0].rcpts, ["x@other.test"]);
    assert!(got[0].tls);
    assert_eq!(got[0].auth.as_deref(), Some("relay-user"));
    assert!(world.sender.received().is_empty(), "not delivered by MX");
}
