//! The quarantine end to end: messages of real-world shapes are held by a spam check, then
//! searched, inspected, released (through the CLI) and deleted (through the API); digests
//! tell recipients, moderators and the admin what was held. Also the sender warnings and the
//! removal of forged Authentication-Results.

use std::process::Command;
use std::time::Duration;

use postern_api::spam::Warning;
use postern_api::{
    Account, Action, Destination, Group, HumanDuration, MailDomainConfig, SpamPolicyConfig, TlsPolicy,
};
use postern_tests::client::Client;
use postern_tests::dns::{self, DnsServer};
use postern_tests::gateway::{GatewayConfig, GatewayProcess, binary};
use postern_tests::sink::{Behavior, Sink};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn zones() -> DnsServer {
    DnsServer::start(vec![
        dns::txt("soft.test", "v=spf1 ip4:192.0.2.1 ~all"),
        dns::txt("good.test", "v=spf1 ip4:127.0.0.0/8 -all"),
    ])
}

/// A gateway serving served.test (accounts, group "team" moderated by boss, group "open"
/// without a moderator) under spam policy "p": SPF softfail (what the tests' senders do)
/// gets `soft_fail`, and `policy` changes the rest of the policy.
fn gateway(
    dns: &DnsServer,
    sink: &Sink,
    soft_fail: Action,
    policy: impl FnOnce(&mut SpamPolicyConfig),
) -> GatewayProcess {
    gateway_with_admin(dns, sink, soft_fail, policy, |_| {})
}

/// `gateway`, with `admin` changing the admin endpoint's settings.
fn gateway_with_admin(
    dns: &DnsServer,
    sink: &Sink,
    soft_fail: Action,
    policy: impl FnOnce(&mut SpamPolicyConfig),
    admin: impl FnOnce(&mut postern_api::Admin),
) -> GatewayProcess {
    GatewayProcess::start(&GatewayConfig::typed(|c| {
        admin(&mut c.admin);
        c.delivery.nameservers = vec![dns.addr];
        let mut p = SpamPolicyConfig::default();
        p.spf.soft_fail = soft_fail;
        policy(&mut p);
        c.spam_policies.insert("p".into(), p);
        let mut served =
            MailDomainConfig::new("served.test", Destination::hosts(&[&sink.host()], TlsPolicy::NONE));
        served.spam_policy = Some("p".into());
        served.accounts = ["alice", "bob", "carol", "lead", "boss", "admin", "z"]
            .iter()
            .map(|a| Account { address: a.to_string(), aliases: vec![] })
            .collect();
        let group = |address: &str, moderator: Option<&str>| Group {
            address: address.into(),
            members: vec!["lead".into()],
            moderator: moderator.map(str::to_string),
        };
        served.groups = vec![group("team", Some("boss")), group("open", None)];
        c.domains.push(served);
    }))
}

/// A newsletter-like message: multipart/alternative inside multipart/mixed, an encoded
/// non-ASCII subject and sender name, a Cc, and a text attachment.
fn rich_message(to: &str, cc: &str, subject_b64: &str, body: &str, attachment: (&str, &str)) -> String {
    format!(
        "From: =?UTF-8?Q?Ren=C3=A9e_M=C3=BCller?= <renee@soft.test>\r\nTo: <{to}>\r\nCc: Colleague <{cc}>\r\nSubject: =?UTF-8?B?{subject_b64}?=\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject_b64}@soft.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\nThis is a multi-part message in MIME format.\r\n--outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n--inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{body}\r\n--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>{body}</p>\r\n--inner--\r\n--outer\r\nContent-Type: text/plain; charset=utf-8; name=\"{0}\"\r\nContent-Disposition: attachment; filename=\"{0}\"\r\n\r\n{1}\r\n--outer--\r\n",
        attachment.0, attachment.1
    )
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn send(gw: &GatewayProcess, from: &str, rcpts: &[&str], data: &str) {
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    let r = c.send_message(from, rcpts, data);
    assert_eq!(r.code, 250, "{r:?}");
}

fn search(gw: &GatewayProcess, query: &str) -> Vec<Value> {
    let (status, body) = gw.admin_get(&format!("/api/v1/quarantine?{query}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap().as_array().unwrap().clone()
}

fn ids(found: &[Value]) -> Vec<String> {
    found.iter().map(|e| e["summary"]["subject"].as_str().unwrap().to_string()).collect()
}

fn cli(gw: &GatewayProcess, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary())
        .arg("quarantine")
        .args(args)
        .args(["--admin", &gw.admin_addr().to_string()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn search_show_release_and_delete() {
    let dns = zones();
    let sink = Sink::start(Behavior::default());
    let gw = gateway(&dns, &sink, Action::Quarantine, |_| {});
    send(
        &gw,
        "renee@soft.test",
        &["alice@served.test"],
        &rich_message(
            "alice@served.test",
            "carol@served.test",
            &b64("Grüße aus Köln"),
            "Das Angebot gilt bis Freitag.",
            ("angebot.txt", "Preisliste: Kaffee 3 EUR"),
        ),
    );
    send(
        &gw,
        "renee@soft.test",
        &["bob@served.test"],
        &rich_message(
            "bob@served.test",
            "dave@served.test",
            &b64("Quarterly report"),
            "Numbers attached.",
            ("report.csv", "revenue,42"),
        ),
    );
    postern_tests::wait_for("both held", WAIT, || (search(&gw, "").len() == 2).then_some(()));

    // Each field narrows; `q` looks everywhere (headers, text, attachments).
    assert_eq!(ids(&search(&gw, "subject=gr%C3%BC%C3%9Fe")), ["Grüße aus Köln"], "decoded, case-insensitive");
    assert_eq!(ids(&search(&gw, "sender=M%C3%BCller&to=bob")), ["Quarterly report"]);
    assert_eq!(ids(&search(&gw, "to=carol")), ["Grüße aus Köln"], "Cc counts as a recipient");
    assert_eq!(ids(&search(&gw, "body=freitag")), ["Grüße aus Köln"]);
    assert_eq!(ids(&search(&gw, "attachment=.csv")), ["Quarterly report"]);
    assert_eq!(ids(&search(&gw, "attachmentText=kaffee")), ["Grüße aus Köln"]);
    assert!(search(&gw, "body=kaffee").is_empty(), "attachment text is not body text");
    assert_eq!(ids(&search(&gw, "q=revenue")), ["Quarterly report"]);
    assert_eq!(ids(&search(&gw, "q=softfail")).len(), 2, "reasons are searched too");
    let today = chrono_today();
    assert_eq!(search(&gw, &format!("since={today}&until={today}")).len(), 2);
    assert!(search(&gw, "until=2020-01-01").is_empty());
    let (status, body) = gw.admin_get("/api/v1/quarantine?since=someday");
    assert_eq!(status, 400, "{body}");

    // Show: envelope, reasons and the headers as stored.
    let held = search(&gw, "subject=Quarterly");
    let id = held[0]["id"].as_str().unwrap().to_string();
    let (status, shown) = gw.admin_get(&format!("/api/v1/quarantine/{id}"));
    assert_eq!(status, 200);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["recipients"][0], "bob@served.test");
    let headers = shown["headers"].as_array().unwrap();
    assert!(headers.iter().any(|h| h[0] == "Received"), "{shown}");
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "Authentication-Results" && h[1].as_str().unwrap().contains("spf=softfail"))
    );
    let (ok, out) = cli(&gw, &["show", &id]);
    assert!(
        ok && out.contains("Reasons      spf=softfail (soft.test)") && out.contains("Subject: =?UTF-8?B?"),
        "{out}"
    );

    // Release through the CLI: delivered to the original recipient, the checks skipped, who
    // released it logged.
    let (ok, out) = cli(&gw, &["list", "report"]);
    assert!(ok && out.contains(&id) && out.contains("1 held"), "{out}");
    let (ok, out) = cli(&gw, &["release", &id, "--by", "alice-admin"]);
    assert!(ok, "{out}");
    let got = sink.wait_for(1, WAIT);
    assert_eq!(got[0].rcpts, ["bob@served.test"]);
    assert!(got[0].text().contains("revenue,42"));
    let logged = gw.wait_log("quarantined message released", WAIT);
    assert_eq!(logged["released_by"], "alice-admin", "{logged}");
    let (ok, out) = cli(&gw, &["release", &id]);
    assert!(!ok && out.contains("404"), "released once: {out}");

    // Delete through the API.
    let other = search(&gw, "")[0]["id"].as_str().unwrap().to_string();
    assert_eq!(gw.admin("DELETE", &format!("/api/v1/quarantine/{other}?by=ops")).0, 200);
    assert_eq!(gw.admin("DELETE", &format!("/api/v1/quarantine/{other}")).0, 404);
    assert!(search(&gw, "").is_empty());
    assert_eq!(gw.wait_log("quarantined message deleted", WAIT)["deleted_by"], "ops");
    gw.wait_idle();
    assert_eq!(sink.received().len(), 1, "the deleted message was never delivered");
}

fn chrono_today() -> String {
    let out = Command::new("date").args(["-u", "+%F"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn digests_reach_recipients_moderators_and_the_admin() {
    let dns = zones();
    let sink = Sink::start(Behavior::default());
    let gw = gateway(&dns, &sink, Action::Quarantine, |p| {
        p.notifications.enabled = true;
        p.notifications.interval = HumanDuration::from_secs(1);
        p.notifications.admin = Some("admin@served.test".into());
    });
    send(
        &gw,
        "x@soft.test",
        &["alice@served.test", "team@served.test"],
        &rich_message(
            "alice@served.test",
            "team@served.test",
            &b64("Rechnung Nr. 7 – fällig"),
            "Bitte zahlen.",
            ("r.txt", "7"),
        ),
    );
    send(
        &gw,
        "y@soft.test",
        &["open@served.test"],
        &postern_tests::client::message("y@soft.test", "open@served.test", "group-without-moderator", "x"),
    );

    // alice, boss (moderator of team) and admin (for open, which has no moderator).
    let got = sink.wait_for(3, WAIT);
    let digest_for = |reader: &str| {
        got.iter()
            .find(|m| m.text().contains(&format!("To: <{reader}>")))
            .unwrap_or_else(|| panic!("no digest for {reader}: {got:?}"))
    };
    let alice = digest_for("alice@served.test");
    assert!(
        alice.rcpts.contains(&"admin@served.test".to_string()),
        "the admin gets a copy: {:?}",
        alice.rcpts
    );
    let text = alice.text();
    assert!(text.contains("Subject: Quarantine digest: 1 message held"), "{text}");
    assert!(text.contains("From:    Renée Müller <renee@soft.test>"), "{text}");
    assert!(text.contains("Subject: Rechnung Nr. 7 – fällig"), "{text}");
    assert!(text.contains("Reason:  spf=softfail (soft.test)"), "{text}");
    assert!(digest_for("boss@served.test").text().contains("Rechnung Nr. 7"));
    let admin = digest_for("admin@served.test").text();
    assert!(admin.contains("group-without-moderator") && !admin.contains("Rechnung"), "{admin}");

    // The window moved on: no second digest for the same entries. Once a later window was
    // claimed and the queue is empty, nothing more can come.
    let windows = gw.metric("postern_digest_windows_total").unwrap_or(0.0);
    postern_tests::wait_for("a later digest window", WAIT, || {
        (gw.metric("postern_digest_windows_total").unwrap_or(0.0) > windows).then_some(())
    });
    gw.wait_idle();
    assert_eq!(sink.received().len(), 3);
}

/// A request with an optional form body on the admin port: (status, body).
fn http_form(gw: &GatewayProcess, method: &str, path: &str, form: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        gw.admin_addr(),
        form.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    (out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), out)
}

const LINK_KEY: [u8; 32] = [0x5a; 32];

/// A digest link as anyone holding `admin.keyFile` could make it, written from its documented
/// format (`quarantine::links`), not with the gateway's code: base64url JSON, a dot, and
/// HMAC-SHA256 under the key derived with "postern sign v1" over "postern digest link v1\0" and
/// the payload.
fn forged_link(action: &str, id: &str, recipient: &str, expires: u64) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &LINK_KEY);
    let sign =
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ring::hmac::sign(&root, b"postern sign v1").as_ref());
    let payload = URL_SAFE_NO_PAD
        .encode(serde_json::json!({"a": action, "i": id, "r": recipient, "e": expires}).to_string());
    let tag = ring::hmac::sign(&sign, &[&b"postern digest link v1\0"[..], payload.as_bytes()].concat());
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// The token of a digest's `Release:` or `Delete:` line for the message with `subject`.
fn digest_link(digest: &str, subject: &str, action: &str) -> String {
    let block = digest.split("\r\n\r\n").find(|b| b.contains(&format!("Subject: {subject}"))).unwrap();
    let line = block.lines().find(|l| l.starts_with(&format!("{action}:"))).unwrap();
    line.split("/quarantine/link?t=").nth(1).unwrap().trim().to_string()
}

#[test]
fn digest_links_release_or_delete_once_for_their_recipient() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("admin-key");
    std::fs::write(&key_file, base64::engine::general_purpose::STANDARD.encode(LINK_KEY)).unwrap();
    let dns = zones();
    let sink = Sink::start(Behavior::default());
    let gw = gateway_with_admin(
        &dns,
        &sink,
        Action::Quarantine,
        |p| {
            p.notifications.enabled = true;
            p.notifications.interval = HumanDuration::from_secs(1);
        },
        |admin| {
            admin.key_file = Some(key_file.clone());
            admin.public_url = Some("https://postern.test/".into());
        },
    );
    let shared = postern_tests::client::message("x@soft.test", "alice@served.test", "Shared offer", "x");
    send(&gw, "x@soft.test", &["alice@served.test", "bob@served.test"], &shared);
    let only = postern_tests::client::message("x@soft.test", "carol@served.test", "Only carol", "x");
    send(&gw, "x@soft.test", &["carol@served.test"], &only);

    let got = sink.wait_for(3, WAIT);
    let digest_for = |reader: &str| {
        let m = got.iter().find(|m| m.rcpts == [reader]).unwrap_or_else(|| panic!("{reader}: {got:?}"));
        use mail_parser::MimeHeaders;
        let parsed = mail_parser::MessageParser::default().parse(&m.data).unwrap();
        assert_eq!(
            parsed.content_type().map(|c| c.subtype()),
            Some(Some("alternative")),
            "multipart/alternative"
        );
        let html = parsed.body_html(0).unwrap().into_owned();
        (parsed.body_text(0).unwrap().into_owned().replace('\n', "\r\n").replace("\r\r", "\r"), html)
    };
    let (alice, alice_html) = digest_for("alice@served.test");
    let (bob, _) = digest_for("bob@served.test");
    let release = digest_link(&alice, "Shared offer", "Release");
    assert!(alice_html.contains(&release), "the HTML part carries the same link: {alice_html}");
    assert!(alice.contains("https://postern.test/console/"), "and the console's: {alice}");
    let id = search(&gw, "subject=Shared")[0]["id"].as_str().unwrap().to_string();
    let carol_id = search(&gw, "subject=Only")[0]["id"].as_str().unwrap().to_string();

    // The GET only shows; a link changed to act for someone else is refused.
    let (status, page) = gw.admin_get(&format!("/quarantine/link?t={release}"));
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Shared offer") && page.contains("alice@served.test") && page.contains("<button"),
        "{page}"
    );
    let (payload, signature) = release.split_once('.').unwrap();
    let mut claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
            .unwrap();
    claims["r"] = "mallory@served.test".into();
    let changed = format!(
        "{}.{signature}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert_eq!(http_form(&gw, "POST", "/quarantine/link", &format!("t={changed}")).0, 403);
    assert_eq!(
        http_form(&gw, "POST", "/quarantine/link", &format!("t={}", &release[..release.len() - 2])).0,
        403
    );

    // The click: delivered to alice only, once.
    let (status, page) = http_form(&gw, "POST", "/quarantine/link", &format!("t={release}"));
    assert_eq!(status, 200, "{page}");
    let released = sink.wait_for(4, WAIT).into_iter().find(|m| m.from == "x@soft.test").unwrap();
    assert_eq!(released.rcpts, ["alice@served.test"]);
    assert_eq!(http_form(&gw, "POST", "/quarantine/link", &format!("t={release}")).0, 410, "a second click");
    let (_, entry) = gw.admin_get(&format!("/api/v1/quarantine/{id}"));
    let entry: Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(entry["recipients"], serde_json::json!(["bob@served.test"]), "still held for bob");

    // Signed with the key but expired, or for a recipient the message was not held for.
    let expired = forged_link("release", &id, "bob@served.test", 1);
    let (status, page) = http_form(&gw, "POST", "/quarantine/link", &format!("t={expired}"));
    assert!(status == 403 && page.contains("expired"), "{page}");
    let not_theirs = forged_link("release", &carol_id, "alice@served.test", u64::MAX / 2);
    assert_eq!(http_form(&gw, "POST", "/quarantine/link", &format!("t={not_theirs}")).0, 410);

    // bob deletes his copy: the entry goes with its last recipient.
    let delete = digest_link(&bob, "Shared offer", "Delete");
    assert_eq!(http_form(&gw, "POST", "/quarantine/link", &format!("t={delete}")).0, 200);
    assert_eq!(gw.admin_get(&format!("/api/v1/quarantine/{id}")).0, 404);
    gw.wait_idle();
    assert_eq!(sink.received().len(), 4, "three digests and alice's release, nothing else");
}

#[test]
fn sender_warnings_and_forged_authentication_results() {
    let dns = zones();
    let sink = Sink::start(Behavior::default());
    let gw = gateway(&dns, &sink, Action::MarkSpam, |p| {
        let warning = |header: &str, prefix: &str| Warning {
            header: header.into(),
            subject_prefix: Some(prefix.into()),
        };
        p.sender_warnings.unauthenticated =
            Some(warning("X-Postern-Warning: sender not verified", "[UNVERIFIED]"));
        p.sender_warnings.external = Some(warning("X-Postern-External: yes", "[EXT]"));
    });
    // A forged result under our authserv-id, and an honest one from another host.
    let forged = format!(
        "Authentication-Results: gw.test; spf=pass smtp.mailfrom=x@soft.test\r\nAuthentication-Results: upstream.test; spf=none\r\n{}",
        rich_message("alice@served.test", "carol@served.test", &b64("Grüße"), "hi", ("a.txt", "a"))
    );
    send(&gw, "x@soft.test", &["alice@served.test"], &forged);
    send(
        &gw,
        "y@good.test",
        &["alice@served.test"],
        &postern_tests::client::message("y@good.test", "alice@served.test", "verified-external", "x"),
    );
    send(
        &gw,
        "z@served.test",
        &["alice@served.test"],
        &postern_tests::client::message("z@served.test", "alice@served.test", "internal", "x"),
    );
    let got = sink.wait_for(3, WAIT);
    let find = |needle: &str| got.iter().map(|m| m.text()).find(|t| t.contains(needle)).unwrap();

    let soft = find(&b64("Grüße"));
    assert!(soft.contains("Subject: [UNVERIFIED] [EXT] =?UTF-8?B?"), "{soft}");
    assert!(
        soft.contains("X-Postern-Warning: sender not verified\r\n")
            && soft.contains("X-Postern-External: yes\r\n")
    );
    assert!(!soft.contains("gw.test; spf=pass"), "forged result removed: {soft}");
    assert!(soft.contains("Authentication-Results: upstream.test; spf=none"), "{soft}");
    assert_eq!(soft.matches("Authentication-Results: gw.test;").count(), 1, "{soft}");

    let external = find("verified-external");
    assert!(
        external.contains("Subject: [EXT] verified-external") && !external.contains("X-Postern-Warning"),
        "{external}"
    );
    let internal = find("Subject: internal");
    assert!(!internal.contains("X-Postern-External") && !internal.contains("[EXT]"), "{internal}");
}
