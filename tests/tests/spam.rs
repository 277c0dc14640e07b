//! Spam checks end to end with a real DNS server serving SPF records and a DNSBL zone.

use std::time::Duration;

use postern_api::{Action, Destination, MailDomainConfig, SpamPolicyConfig, TlsPolicy};
use postern_tests::client::{Client, message};
use postern_tests::dns::{self, DnsServer};
use postern_tests::gateway::{GatewayConfig, GatewayProcess};
use postern_tests::sink::{Behavior, Sink};

const WAIT: Duration = Duration::from_secs(20);

fn zones() -> DnsServer {
    DnsServer::start(vec![
        dns::txt("good.test", "v=spf1 ip4:127.0.0.0/8 -all"),
        dns::txt("forged.test", "v=spf1 ip4:192.0.2.1 -all"),
        dns::txt("soft.test", "v=spf1 ip4:192.0.2.1 ~all"),
        // senders behind the old MX: their SPF names the original clients, not the gateway
        dns::txt("origin.test", "v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.0/24 -all"),
        // bl.test lists 127.0.0.1 and 203.0.113.9
        dns::a("1.0.0.127.bl.test", "127.0.0.2"),
        dns::a("9.113.0.203.bl.test", "127.0.0.2"),
    ])
}

/// A gateway serving served.test under spam policy "p" (the defaults, changed by `policy`),
/// with DNS from `dns`; `edit` changes the rest.
fn gateway(
    dns: &DnsServer,
    sink: &Sink,
    policy: impl FnOnce(&mut SpamPolicyConfig),
    edit: impl FnOnce(&mut postern_api::GatewayConfig),
) -> GatewayProcess {
    GatewayProcess::start(&GatewayConfig::typed(|c| {
        c.delivery.nameservers = vec![dns.addr];
        let mut p = SpamPolicyConfig::default();
        policy(&mut p);
        c.spam_policies.insert("p".into(), p);
        let mut served =
            MailDomainConfig::new("served.test", Destination::hosts(&[&sink.host()], TlsPolicy::NONE));
        served.spam_policy = Some("p".into());
        c.domains.push(served);
        edit(c);
    }))
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn rcpt(gw: &GatewayProcess, from: &str) -> postern_tests::client::Reply {
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).code, 250);
    c.cmd("RCPT TO:<u@served.test>")
}

#[test]
fn spf_fail_is_rejected_at_rcpt_even_for_an_allow_listed_sender() {
    let dns = zones();
    let sink = Sink::start(Behavior::default());
    let gw = gateway(&dns, &sink, |p| p.allow_list.domains = names(&["forged.test"]), |_| {});
    let r = rcpt(&gw, "ceo@forged.test");
    assert!(r.starts("550 5.7.1") && r.text.contains("spf=fail"), "{r:?}");
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    let r = c.send_message(
        "a@good.test",
        &["u@served.test"],
        &message("a@good.test", "u@served.test", "spf-pass", "x"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    let got = sink.wait_for(1, WAIT);
    assert!(got[0].text().contains("Authentication-Results: gw.test;"), "{}", got[0].text());
    assert!(got[0].text().contains("spf=pass"), "{}", got[0].text());
}

#[test]
fn a_block_listed_sender_is_refused_even_when_spf_passes() {
    let dns = zones();
    let sink = Sink::start(Behavior::default());
    let gw = gateway(&dns, &sink, |p| p.block_list.domains = names(&["good.test"]), |_| {});
    let r = rcpt(&gw, "a@good.test");
    assert!(r.starts("550 5.7.1") && r.text.contains("block-list: domain good.test"), "{r:?}");
}

#[test]
fn a_trusted_domain_skips_every_check() {
    let dns = zones();
    let sink = Sink::start(Behavior::default());
    let gw = gateway(
        &dns,
        &sink,
        |p| {
            p.trusted_domains = names(&["forged.test"]);
            p.dnsbl.zones = names(&["bl.test"]);
        },
        |_| {},
    );
    assert_eq!(rcpt(&gw, "a@forged.test").code, 250, "SPF fail and a DNSBL listing ignored");
}

#[test]
fn softfail_quarantines_and_the_message_is_held() {
    let dns = zones();
    let sink = Sink::start(Behavior::default());
    let gw = gateway(
        &dns,
        &sink,
        |p| {
            p.spf.soft_fail = Action::Quarantine;
            p.spf.fail = Action::Reject;
        },
        |_| {},
    );
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    let r = c.send_message(
        "a@soft.test",
        &["u@served.test"],
        &message("a@soft.test", "u@served.test", "held", "x"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    let logged = gw.wait_log("message quarantined", WAIT);
    assert!(logged["reasons"].as_str().unwrap().contains("spf=softfail"), "{logged}");
    let (_, stats) = gw.admin_get("/api/v1/queue");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stats).unwrap()["quarantined"], 1);
    gw.wait_idle();
    assert!(sink.received().is_empty(), "held, not delivered");
}

#[test]
fn dnsbl_rejects_the_client_but_an_inbound_gateway_is_judged_by_the_original_client() {
    let dns = zones();
    let sink = Sink::start(Behavior::default());
    let policy = |p: &mut SpamPolicyConfig| p.dnsbl.zones = names(&["bl.test"]);
    let direct = gateway(&dns, &sink, policy, |_| {});
    let r = rcpt(&direct, "a@good.test");
    assert!(r.starts("550 5.7.1") && r.text.contains("dnsbl: 127.0.0.1 listed in bl.test"), "{r:?}");

    // The same client as an inbound gateway: not checked at RCPT; checked at end of DATA
    // against the client named in its Received header.
    let via =
        gateway(&dns, &sink, policy, |c| c.relay.inbound_gateways = vec!["127.0.0.0/8".parse().unwrap()]);
    let relayed = |ip: &str, subject: &str| {
        format!(
            "Received: from origin.test ([{ip}])\r\n\tby oldmx.test with ESMTP id X;\r\n\tMon, 23 Nov 2026 12:00:00 +0000\r\n{}",
            message("a@origin.test", "u@served.test", subject, "x")
        )
    };
    let mut c = Client::connect(via.smtp());
    c.cmd("EHLO oldmx.test");
    // SPF of origin.test passes for the original client (it would fail for 127.0.0.1).
    let clean =
        c.send_message("a@origin.test", &["u@served.test"], &relayed("198.51.100.23", "clean-origin"));
    assert_eq!(clean.code, 250, "{clean:?}");
    let listed =
        c.send_message("a@origin.test", &["u@served.test"], &relayed("203.0.113.9", "listed-origin"));
    assert!(
        listed.starts("550 5.7.1") && listed.text.contains("203.0.113.9 listed in bl.test"),
        "{listed:?}"
    );
    let got = sink.wait_for(1, WAIT);
    assert!(got[0].text().contains("Subject: clean-origin"));
}
