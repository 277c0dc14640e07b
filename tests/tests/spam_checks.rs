//! Every spam check with every action, end to end: a real DNS server serves the SPF records,
//! DKIM keys, DMARC records and blocklist zones; DKIM signatures come from dkimpy. One gateway
//! serves one domain per (check, action), each under its own policy in which only that check
//! acts, so the outcome of each message shows what that one action does.

use std::time::Duration;

use postern_api::{Action, Destination, MailDomainConfig, SpamPolicyConfig, TlsPolicy};
use postern_tests::client::{Client, Reply};
use postern_tests::dkim;
use postern_tests::dns::{self, DnsServer};
use postern_tests::gateway::{GatewayConfig, GatewayProcess};
use postern_tests::sink::{Behavior, Sink};

const WAIT: Duration = Duration::from_secs(30);
const ACTIONS: [&str; 5] = ["Reject", "TempFail", "Quarantine", "MarkSpam", "Allow"];

fn zones() -> DnsServer {
    let spf_pass = "v=spf1 ip4:127.0.0.0/8 -all";
    let spf_fail = "v=spf1 ip4:192.0.2.1 -all";
    DnsServer::start(vec![
        dns::txt("pass.test", spf_pass),
        dns::txt(&dkim::key_name("pass.test"), &dkim::key_record()),
        dns::txt("_dmarc.pass.test", "v=DMARC1; p=reject"),
        dns::txt("softfail.test", "v=spf1 ip4:192.0.2.1 ~all"),
        dns::txt("fail.test", spf_fail),
        dns::txt("dkimbad.test", spf_pass),
        dns::txt(&dkim::key_name("dkimbad.test"), &dkim::key_record()),
        dns::txt("dmarcq.test", spf_fail),
        dns::txt("_dmarc.dmarcq.test", "v=DMARC1; p=quarantine"),
        dns::txt("dmarcr.test", spf_fail),
        dns::txt("_dmarc.dmarcr.test", "v=DMARC1; p=reject"),
        dns::txt("listed.test", spf_pass),
        dns::txt("blocked.test", spf_pass),
        // bl.test lists the client (127.0.0.1); rhs.test lists the sender domain listed.test.
        dns::a("1.0.0.127.bl.test", "127.0.0.2"),
        dns::a("listed.test.rhs.test", "127.0.0.2"),
    ])
}

/// A check: how its policy turns it on with `action`, who sends, and what.
struct Check {
    name: &'static str,
    /// Sets the check's action in a policy where everything else is Allow.
    enable: fn(&mut SpamPolicyConfig, Action),
    sender: &'static str,
    message: fn(&str, &str, &str) -> String,
    /// Envelope checks answer at RCPT; content checks at the end of DATA.
    at_rcpt: bool,
}

fn plain(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: Sender <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject}@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, this is {subject}.\r\n"
    )
}

fn alternative(from: &str, to: &str, subject: &str, html: &str) -> String {
    format!(
        "From: Sender <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject}@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"alt-1\"\r\n\r\n--alt-1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, this is {subject}.\r\n--alt-1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello, this is {subject}.</p>{html}</body></html>\r\n--alt-1--\r\n"
    )
}

/// A spreadsheet with a VBA project, as a mail client attaches it (base64).
fn with_macro_attachment(from: &str, to: &str, subject: &str) -> String {
    use base64::Engine;
    // A minimal OOXML zip, stored: the entry names are what identify a VBA project.
    let mut zip = Vec::new();
    for (name, data) in
        [("[Content_Types].xml", &b"<Types/>"[..]), ("xl/vbaProject.bin", &b"\xd0\xcf\x11\xe0"[..])]
    {
        zip.extend_from_slice(b"PK\x03\x04\x14\0\0\0\0\0\0\0\0\0\0\0\0\0");
        zip.extend_from_slice(&(data.len() as u32).to_le_bytes());
        zip.extend_from_slice(&(data.len() as u32).to_le_bytes());
        zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
        zip.extend_from_slice(&[0, 0]);
        zip.extend_from_slice(name.as_bytes());
        zip.extend_from_slice(data);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(&zip);
    format!(
        "From: Sender <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mix-1\"\r\n\r\n--mix-1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see the invoice.\r\n--mix-1\r\nContent-Type: application/octet-stream; name=\"invoice.xlsx\"\r\nContent-Disposition: attachment; filename=\"invoice.xlsx\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--mix-1--\r\n"
    )
}

/// An action as the CRD spells it.
fn action(name: &str) -> Action {
    serde_json::from_value(serde_json::Value::String(name.into())).unwrap()
}

fn checks() -> Vec<Check> {
    vec![
        Check {
            name: "spf-softfail",
            enable: |p, a| p.spf.soft_fail = a,
            sender: "a@softfail.test",
            message: plain,
            at_rcpt: true,
        },
        Check {
            name: "spf-fail",
            enable: |p, a| p.spf.fail = a,
            sender: "a@fail.test",
            message: plain,
            at_rcpt: true,
        },
        Check {
            name: "dkim",
            enable: |p, a| p.dkim.fail = a,
            sender: "a@dkimbad.test",
            // Signed by dkimpy, then changed in transit: the body hash no longer matches.
            message: |f, t, s| {
                dkim::sign(&plain(f, t, s), "dkimbad.test").replace("Hello, this is", "Hello, THIS is")
            },
            at_rcpt: false,
        },
        Check {
            name: "dmarc-quarantine",
            enable: |p, a| p.dmarc.quarantine = a,
            sender: "a@dmarcq.test",
            message: plain,
            at_rcpt: false,
        },
        Check {
            name: "dmarc-reject",
            enable: |p, a| p.dmarc.reject = a,
            sender: "a@dmarcr.test",
            message: plain,
            at_rcpt: false,
        },
        Check {
            name: "dnsbl",
            enable: |p, a| {
                p.dnsbl.zones = vec!["bl.test".into()];
                p.dnsbl.action = a;
            },
            sender: "a@pass.test",
            message: plain,
            at_rcpt: true,
        },
        Check {
            name: "rhsbl",
            enable: |p, a| {
                p.dnsbl.rhsbl_zones = vec!["rhs.test".into()];
                p.dnsbl.action = a;
            },
            sender: "a@listed.test",
            message: plain,
            at_rcpt: true,
        },
        Check {
            name: "block-list",
            enable: |p, a| {
                p.block_list.domains = vec!["blocked.test".into()];
                p.block_list.action = a;
            },
            sender: "a@blocked.test",
            message: plain,
            at_rcpt: true,
        },
        Check {
            name: "html-tags",
            enable: |p, a| p.content.html_tags = a,
            sender: "a@pass.test",
            message: |f, t, s| {
                alternative(f, t, s, "<form action=\"https://login.example.invalid/\"><input name=pw></form>")
            },
            at_rcpt: false,
        },
        Check {
            name: "javascript",
            enable: |p, a| p.content.javascript = a,
            sender: "a@pass.test",
            message: |f, t, s| alternative(f, t, s, "<script>document.location='https://x.invalid'</script>"),
            at_rcpt: false,
        },
        Check {
            name: "web-bugs",
            enable: |p, a| p.content.web_bugs = a,
            sender: "a@pass.test",
            message: |f, t, s| {
                alternative(
                    f,
                    t,
                    s,
                    "<img src=\"https://track.example.invalid/o.gif\" width=\"1\" height=\"1\">",
                )
            },
            at_rcpt: false,
        },
        Check {
            name: "office-macros",
            enable: |p, a| p.content.office_macros = a,
            sender: "a@pass.test",
            message: with_macro_attachment,
            at_rcpt: false,
        },
        Check {
            name: "bulk-mail",
            enable: |p, a| p.content.bulk_mail = a,
            sender: "a@pass.test",
            message: |f, t, s| {
                format!(
                    "Precedence: bulk\r\nList-Unsubscribe: <mailto:unsub@pass.test>\r\n{}",
                    plain(f, t, s)
                )
            },
            at_rcpt: false,
        },
    ]
}

/// A policy in which no check acts.
fn quiet_policy() -> SpamPolicyConfig {
    let mut p = SpamPolicyConfig::default();
    p.spf.soft_fail = Action::Allow;
    p.spf.fail = Action::Allow;
    p.dkim.fail = Action::Allow;
    p.dmarc.quarantine = Action::Allow;
    p.dmarc.reject = Action::Allow;
    let c = &mut p.content;
    (c.html_tags, c.office_macros, c.javascript, c.web_bugs, c.bulk_mail) =
        (Action::Allow, Action::Allow, Action::Allow, Action::Allow, Action::Allow);
    p
}

fn case_name(check: &str, action: &str) -> String {
    format!("{check}-{}", action.to_ascii_lowercase())
}

/// MAIL, RCPT and DATA, stopping at the first refusal: the reply that decided.
fn transact(gw: &GatewayProcess, from: &str, rcpt: &str, data: &str) -> (&'static str, Reply) {
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).code, 250);
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    if r.code != 250 {
        return ("rcpt", r);
    }
    ("data", c.send_data(data))
}

#[test]
fn every_check_with_every_action() {
    let dns = zones();
    let sink = Sink::start(Behavior::default());
    let checks = checks();
    // One domain per (check, action), each under its own policy.
    let gw = GatewayProcess::start(&GatewayConfig::typed(|c| {
        c.delivery.nameservers = vec![dns.addr];
        for check in &checks {
            for name_of_action in ACTIONS {
                let name = case_name(check.name, name_of_action);
                let mut policy = quiet_policy();
                (check.enable)(&mut policy, action(name_of_action));
                c.spam_policies.insert(name.clone(), policy);
                let primary = Destination::hosts(&[&sink.host()], TlsPolicy::NONE);
                let mut domain = MailDomainConfig::new(&format!("{name}.test"), primary);
                domain.spam_policy = Some(name);
                c.domains.push(domain);
            }
        }
    }));

    let mut delivered = Vec::new();
    let mut quarantined = Vec::new();
    for check in &checks {
        for action in ACTIONS {
            let name = case_name(check.name, action);
            let rcpt = format!("u@{name}.test");
            let (stage, reply) =
                transact(&gw, check.sender, &rcpt, &(check.message)(check.sender, &rcpt, &name));
            let expected_stage = if check.at_rcpt { "rcpt" } else { "data" };
            match action {
                "Reject" => {
                    assert!(reply.starts("550 5.7.1") && stage == expected_stage, "{name}: {stage} {reply:?}")
                }
                "TempFail" => {
                    assert!(reply.starts("451 4.7.1") && stage == expected_stage, "{name}: {stage} {reply:?}")
                }
                "Quarantine" => {
                    assert_eq!((stage, reply.code), ("data", 250), "{name}: {reply:?}");
                    quarantined.push(name);
                }
                _ => {
                    assert_eq!((stage, reply.code), ("data", 250), "{name}: {reply:?}");
                    delivered.push((name, action));
                }
            }
        }
    }

    let got = sink.wait_for(delivered.len(), WAIT);
    for (name, action) in &delivered {
        let msg = got
            .iter()
            .find(|m| m.text().contains(&format!("Subject: {name}\r\n")))
            .unwrap_or_else(|| panic!("{name} was not delivered"));
        let text = msg.text();
        let flagged = text.contains("\r\nX-Spam-Flag: YES\r\n");
        assert_eq!(flagged, *action == "MarkSpam", "{name}: spam header\n{text}");
        assert!(text.contains("Authentication-Results: gw.test;"), "{name}\n{text}");
    }
    for name in &quarantined {
        let (status, found) = gw.admin_get(&format!("/api/v1/quarantine?subject={name}"));
        let found: serde_json::Value = serde_json::from_str(&found).unwrap();
        assert_eq!(status, 200);
        assert_eq!(found.as_array().map(Vec::len), Some(1), "{name} held once: {found}");
        let reasons = found[0]["reasons"].to_string();
        let check = name.strip_suffix("-quarantine").unwrap();
        let expected = match check {
            "spf-softfail" => "spf=softfail",
            "spf-fail" => "spf=fail",
            "dkim" => "dkim=fail",
            "dmarc-quarantine" => "dmarc=fail p=quarantine",
            "dmarc-reject" => "dmarc=fail p=reject",
            "dnsbl" => "listed in bl.test",
            "rhsbl" => "listed.test listed in rhs.test",
            "block-list" => "block-list: domain blocked.test",
            "html-tags" => "HTML tags form",
            "javascript" => "JavaScript",
            "web-bugs" => "web bug",
            "office-macros" => "Office macros in invoice.xlsx",
            "bulk-mail" => "bulk mail",
            other => panic!("unknown check {other}"),
        };
        assert!(reasons.contains(expected), "{name}: {reasons}");
    }
    // Nothing quarantined reached the mailbox server.
    assert!(got.iter().all(|m| !quarantined.iter().any(|q| m.text().contains(&format!("Subject: {q}\r\n")))));

    // A properly signed message from a domain with p=reject passes everything.
    let (stage, reply) = transact(
        &gw,
        "a@pass.test",
        "u@dkim-reject.test",
        &dkim::sign(&plain("a@pass.test", "u@dkim-reject.test", "signed-ok"), "pass.test"),
    );
    assert_eq!((stage, reply.code), ("data", 250), "{reply:?}");
    let got = sink.wait_for(delivered.len() + 1, WAIT);
    let ok = got.iter().find(|m| m.text().contains("Subject: signed-ok")).unwrap().text();
    assert!(ok.contains("dkim=pass") && ok.contains("dmarc=pass") && ok.contains("spf=pass"), "{ok}");
}
