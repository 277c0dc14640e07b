//! Sending accounts, end to end: the real gateway hands submitted mail to a provider's
//! submission server (aiosmtpd with AUTH, on loopback) as the account, in each security mode
//! (STARTTLS, implicit TLS, plain); a wrong password defers the mail with the reason in the log;
//! the account's BCC copy and display name arrive at the provider; mail from outside clients
//! never uses an account.

use std::net::IpAddr;
use std::time::Duration;

use postern_api::{
    AccountType, Destination, GatewayConfig as Config, MailDomainConfig, SendingAccount, SmtpAccount,
    SmtpSecurity, TlsPolicy,
};
use postern_tests::client::{Client, message};
use postern_tests::gateway::{GatewayConfig, GatewayProcess, binary};
use postern_tests::sink::{Behavior, Sink};
use postern_tests::submission::SubmissionServer;
use postern_tests::tls::TestCa;

const WAIT: Duration = Duration::from_secs(30);

fn account(
    name: &str,
    from: &str,
    server: &SubmissionServer,
    security: SmtpSecurity,
    login: Option<(&str, &std::path::Path)>,
) -> SendingAccount {
    SendingAccount {
        name: name.into(),
        from: from.into(),
        display_name: None,
        bcc: None,
        kind: AccountType::Smtp,
        oauth: None,
        exchange: None,
        smtp: Some(SmtpAccount {
            host: server.host(),
            port: Some(server.port),
            security,
            username: login.map(|(u, _)| u.to_string()),
            password_file: login.map(|(_, p)| p.to_path_buf()),
        }),
        direct: None,
    }
}

#[test]
fn submitted_mail_leaves_through_the_senders_account() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_file = ca.write_ca(dir.path());
    let leaf = ca.leaf(dir.path(), "provider", &["127.0.0.1"]);
    let starttls = SubmissionServer::start("starttls", &leaf, "sales@example.com", "s3cret");
    let implicit = SubmissionServer::start("tls", &leaf, "alice@example.com", "al1ce");
    let plain = SubmissionServer::start("plain", &leaf, "-", "-");
    let served = Sink::start(Behavior::default());
    let password = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{text}\n")).unwrap();
        p
    };
    let (sales_pw, alice_pw, wrong_pw) =
        (password("sales", "s3cret"), password("alice", "al1ce"), password("bob", "guess"));
    let served_host = served.host();
    let config = GatewayConfig::typed(|c: &mut Config| {
        // 127.0.0.1 is the application network; 127.0.0.2 is an outside client.
        c.relay.trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.delivery.ca_file = Some(ca_file.clone());
        c.domains
            .push(MailDomainConfig::new("example.com", Destination::hosts(&[&served_host], TlsPolicy::NONE)));
        let mut sales = account(
            "sales",
            "@example.com",
            &starttls,
            SmtpSecurity::StartTls,
            Some(("sales@example.com", &sales_pw)),
        );
        sales.display_name = Some("Example Sales".into());
        sales.bcc = Some("archive@example.com".into());
        c.accounts = vec![
            sales,
            account(
                "alice",
                "alice@example.com",
                &implicit,
                SmtpSecurity::Tls,
                Some(("alice@example.com", &alice_pw)),
            ),
            account(
                "bob",
                "bob@example.com",
                &starttls,
                SmtpSecurity::StartTls,
                Some(("bob@example.com", &wrong_pw)),
            ),
            account("relay", "@relay.example", &plain, SmtpSecurity::None, None),
        ];
    });
    let gw = GatewayProcess::start(&config);
    let send = |from_ip: &str, from: &str, to: &str, text: &str| {
        let mut c = Client::connect_from(gw.smtp(), from_ip.parse::<IpAddr>().unwrap());
        c.cmd("EHLO app.example");
        c.send_message(from, &[to], text).code
    };

    // A domain account over STARTTLS: logged in as the account, the BCC copy in the envelope,
    // the display name on a From that had none.
    let text = "From: carol@example.com\r\nTo: x@remote.example\r\nSubject: quote\r\n\r\nHello\r\n";
    assert_eq!(send("127.0.0.1", "carol@example.com", "x@remote.example", text), 250);
    let got = starttls.wait_for(1, WAIT);
    assert_eq!(got[0]["login"], "sales@example.com");
    assert_eq!(got[0]["tls"], true);
    assert_eq!(got[0]["mail_from"], "carol@example.com");
    assert_eq!(got[0]["rcpt_tos"], serde_json::json!(["x@remote.example", "archive@example.com"]));
    let data = got[0]["data"].as_str().unwrap();
    assert!(data.contains("From: \"Example Sales\" <carol@example.com>\r\n"), "{data}");
    assert!(!data.contains("archive@example.com"), "a BCC is no header");
    let accepted = gw.wait_log("message accepted", WAIT);
    assert_eq!(accepted["account"], "sales", "{accepted}");
    let delivered = gw.wait_log("delivered", WAIT);
    assert_eq!(delivered["route"], "account:sales", "{delivered}");

    // An address's own account wins over its domain's: implicit TLS, its own login; a From
    // with a name keeps it.
    let named = "From: Alice A <alice@example.com>\r\nTo: y@remote.example\r\nSubject: mine\r\n\r\nx\r\n";
    assert_eq!(send("127.0.0.1", "alice@example.com", "y@remote.example", named), 250);
    let got = implicit.wait_for(1, WAIT);
    assert_eq!((got[0]["login"].as_str(), got[0]["tls"].as_bool()), (Some("alice@example.com"), Some(true)));
    assert!(
        got[0]["data"].as_str().unwrap().contains("From: Alice A <alice@example.com>"),
        "{}",
        got[0]["data"]
    );

    // Plain, without a login (a relay on a private network).
    assert_eq!(
        send(
            "127.0.0.1",
            "ops@relay.example",
            "z@remote.example",
            &message("ops@relay.example", "z@remote.example", "p", "x")
        ),
        250
    );
    let got = plain.wait_for(1, WAIT);
    assert_eq!((got[0]["login"].is_null(), got[0]["tls"].as_bool()), (true, Some(false)));

    // A wrong password: nothing is delivered, the mail waits, and the log says why.
    assert_eq!(
        send(
            "127.0.0.1",
            "bob@example.com",
            "w@remote.example",
            &message("bob@example.com", "w@remote.example", "w", "x")
        ),
        250
    );
    let deferred = gw.wait_log("deferred", WAIT);
    assert_eq!(deferred["route"], "account:bob", "{deferred}");
    assert!(
        deferred["error"].as_str().unwrap().contains("SMTP AUTH as bob@example.com failed"),
        "{deferred}"
    );
    assert_eq!(starttls.received().len(), 1, "nothing more at the provider");

    // An outside client's mail to a served domain never leaves through an account, even with a
    // sender that has one.
    assert_eq!(
        send(
            "127.0.0.2",
            "carol@example.com",
            "u@example.com",
            &message("carol@example.com", "u@example.com", "in", "x")
        ),
        250
    );
    served.wait_for(1, WAIT);
    assert_eq!(starttls.received().len(), 1);
    assert_eq!(gw.metric("postern_account_messages_total{account=\"sales\"}"), Some(1.0));

    // "Test connection" from the CLI (through the admin API): connect, TLS, login, QUIT.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .arg("accounts")
            .args(args)
            .args(["--admin", &gw.admin_addr().to_string()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["test", "sales"]);
    assert!(ok, "{err}");
    let tested: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(tested["ok"], true);
    assert!(
        tested["detail"].as_str().unwrap().contains("TLS")
            && tested["detail"].as_str().unwrap().ends_with("logged in"),
        "{tested}"
    );
    let (ok, _, err) = cli(&["test", "bob"]);
    assert!(!ok);
    assert!(err.contains("SMTP AUTH as bob@example.com failed"), "{err}");
    let (ok, _, err) = cli(&["test", "nobody"]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, out, _) = cli(&["list"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sales", "alice", "bob", "relay"]);
    assert_eq!(list[0]["tested"]["ok"], true);
    assert_eq!(list[2]["tested"]["ok"], false);
    assert!(list[1]["tested"].is_null(), "never tested");
    assert!(!out.contains("s3cret") && !out.contains("passwordFile"), "no credentials in the API");
}

/// Ed25519 key made with openssl: (the PKCS#8 PEM file, the raw public key in base64).
fn ed25519_key(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let pem = dir.join("ed25519.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&pem)
        .status()
        .unwrap();
    assert!(ok.success());
    let der = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(der.status.success());
    use base64::Engine;
    let raw = &der.stdout[der.stdout.len() - 32..];
    (pem, base64::engine::general_purpose::STANDARD.encode(raw))
}

/// Direct accounts: Postern delivers by MX itself, DKIM-signed (RSA-2048 and Ed25519) so that
/// an independent verifier (dkimpy) accepts the signature with the key from DNS; a domain that
/// does not publish the key is refused at submission.
#[test]
fn direct_accounts_sign_with_dkim_once_their_domain_publishes_the_key() {
    use postern_api::{DkimAlgorithm, HumanDuration};
    use postern_tests::dkim;
    use postern_tests::dns::{self, DnsServer};
    let dir = tempfile::tempdir().unwrap();
    let (ed_pem, ed_public) = ed25519_key(dir.path());
    let port = postern_tests::reserve_port();
    let remote =
        Sink::start_at(std::net::SocketAddr::new("127.0.0.2".parse().unwrap(), port), Behavior::default());
    let dns_server = DnsServer::start(vec![
        dns::mx("remote.example", 10, "mx.remote.example"),
        dns::a("mx.remote.example", "127.0.0.2"),
        dns::txt(&dkim::key_name("rsa.example"), &dkim::key_record()),
        dns::txt("ed._domainkey.ed.example", &format!("v=DKIM1; k=ed25519; p={ed_public}")),
    ]);
    let direct = direct_account;
    let rsa_key =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/dkim-test-key.pem"));
    let config = GatewayConfig::typed(|c: &mut Config| {
        c.relay.trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.delivery.nameservers = vec![dns_server.addr];
        c.delivery.mx_port = port;
        c.delivery.tls = TlsPolicy::NONE;
        c.delivery.retry_initial = HumanDuration::from_secs(1);
        c.accounts = vec![
            SendingAccount {
                bcc: Some("archive@remote.example".into()),
                display_name: Some("RSA Example".into()),
                ..direct("rsa", "@rsa.example", dkim::SELECTOR, rsa_key.clone(), DkimAlgorithm::RsaSha256)
            },
            direct("ed", "@ed.example", "ed", ed_pem.clone(), DkimAlgorithm::Ed25519Sha256),
            direct(
                "unverified",
                "@unverified.example",
                dkim::SELECTOR,
                rsa_key.clone(),
                DkimAlgorithm::RsaSha256,
            ),
        ];
    });
    let gw = GatewayProcess::start(&config);
    let send = |from: &str| {
        let mut c = Client::connect(gw.smtp());
        c.cmd("EHLO app.example");
        let text = format!(
            "From: {from}\r\nTo: u@remote.example\r\nSubject: signed by Postern\r\nMessage-ID: <{from}>\r\n\r\nA body.\r\n"
        );
        c.send_message(from, &["u@remote.example"], &text)
    };
    assert_eq!(send("a@rsa.example").code, 250);
    assert_eq!(send("b@ed.example").code, 250);
    let got = remote.wait_for(2, WAIT);
    for m in &got {
        let text = m.text();
        assert!(text.starts_with("DKIM-Signature: "), "{text}");
        assert!(dkim::verify_with_dns(&text, dns_server.addr), "dkimpy rejects: {text}");
    }
    // The BCC copy rides in the same transaction (same MX), and the display name is signed.
    let rsa = got.iter().find(|m| m.text().contains("d=rsa.example")).unwrap();
    assert_eq!(rsa.rcpts, ["u@remote.example", "archive@remote.example"]);
    assert!(rsa.text().contains("From: \"RSA Example\" <a@rsa.example>\r\n"), "{}", rsa.text());
    let algorithms: Vec<bool> = got.iter().map(|m| m.text().contains("a=ed25519-sha256")).collect();
    assert!(algorithms.contains(&true) && algorithms.contains(&false), "one of each");
    // A body changed on the way fails the verifier: the signature covers it.
    let tampered = got[0].text().replace("A body.", "A changed body.");
    assert!(!dkim::verify_with_dns(&tampered, dns_server.addr));

    // The record to publish is shown by `accounts list` (here: the very one in DNS).
    let out = std::process::Command::new(binary())
        .args(["accounts", "list", "--admin", &gw.admin_addr().to_string()])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["dkimRecord"], dkim::key_record(), "{list}");
    assert_eq!(list[1]["dkimRecord"], format!("v=DKIM1; k=ed25519; p={ed_public}"), "{list}");
    assert_eq!(list[0]["dkimName"], dkim::key_name("rsa.example"), "{list}");
    assert_eq!(list[0]["verification"]["verified"], true, "{list}");
    assert_eq!(list[0]["verification"]["reason"], "KeyPublished", "{list}");
    let unverified = list.as_array().unwrap().iter().find(|a| a["from"] == "@unverified.example").unwrap();
    assert_eq!(unverified["verification"]["verified"], false, "{list}");
    assert_eq!(unverified["verification"]["reason"], "KeyNotPublished", "{list}");

    // No key in DNS: refused at submission, at MAIL FROM (before any data), nothing queued.
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO app.example");
    let refused = c.cmd("MAIL FROM:<c@unverified.example>");
    assert_eq!(refused.code, 550, "{refused:?}");
    assert!(refused.text.contains("5.7.1 Sender not verified"), "{refused:?}");
    assert!(refused.text.contains("test2026._domainkey.unverified.example"), "{refused:?}");
    assert_eq!(send("c@unverified.example").code, 550);
}

/// A Direct account for a single address is usable only once its mailbox confirms: the gateway
/// mails a one-time link and a code to the address; the link's page confirms only on its
/// button (a scanner's GET does not), cross-site posts and wrong tokens are refused, the link
/// works once; a second account is confirmed with its code through the CLI (wrong codes are
/// counted). Then the address's mail leaves, DKIM-signed.
#[test]
fn a_direct_account_for_an_address_sends_once_its_mailbox_confirms() {
    use postern_api::{DkimAlgorithm, HumanDuration};
    use postern_tests::dkim;
    use postern_tests::dns::{self, DnsServer};
    let port = postern_tests::reserve_port();
    let remote =
        Sink::start_at(std::net::SocketAddr::new("127.0.0.2".parse().unwrap(), port), Behavior::default());
    let dns_server = DnsServer::start(vec![
        dns::mx("remote.example", 10, "mx.remote.example"),
        dns::a("mx.remote.example", "127.0.0.2"),
        dns::txt(&dkim::key_name("remote.example"), &dkim::key_record()),
    ]);
    let key = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/dkim-test-key.pem"));
    let direct = |name: &str, from: &str| {
        direct_account(name, from, dkim::SELECTOR, key.clone(), DkimAlgorithm::RsaSha256)
    };
    let config = GatewayConfig::typed(|c: &mut Config| {
        c.relay.trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.delivery.nameservers = vec![dns_server.addr];
        c.delivery.mx_port = port;
        c.delivery.tls = TlsPolicy::NONE;
        c.delivery.retry_initial = HumanDuration::from_secs(1);
        c.admin.public_url = Some("https://postern.example/mail-admin/".into());
        c.accounts = vec![direct("app", "app@remote.example"), direct("ops", "ops@remote.example")];
    });
    let gw = GatewayProcess::start(&config);
    let admin = gw.admin_addr();
    let send = |from: &str| {
        let mut c = Client::connect(gw.smtp());
        c.cmd("EHLO app.example");
        let text = format!(
            "From: {from}\r\nTo: u@remote.example\r\nSubject: confirmed\r\nMessage-ID: <{from}>\r\n\r\nA body.\r\n"
        );
        c.send_message(from, &["u@remote.example"], &text)
    };
    let refused = send("app@remote.example");
    assert_eq!(refused.code, 550, "{refused:?}");
    assert!(refused.text.contains("5.7.1 Sender not verified"), "{refused:?}");

    // One request per address, mailed by the gateway (one pod sends: the store decides).
    let requests = remote.wait_for(2, WAIT);
    // As a mail client shows it (the body is quoted-printable: its link is a long line).
    let request_to = |to: &str| {
        let raw = requests.iter().find(|m| m.rcpts == [to]).unwrap().text();
        let parsed = mail_parser::MessageParser::default().parse(raw.as_bytes()).unwrap();
        format!("Subject: {}\n{}", parsed.subject().unwrap_or_default(), parsed.body_text(0).unwrap())
    };
    let app_mail = request_to("app@remote.example");
    assert!(app_mail.contains("Subject: Confirm that mail may be sent as app@remote.example"), "{app_mail}");
    let link = app_mail
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("https://postern.example/mail-admin/confirm?"))
        .unwrap_or_else(|| panic!("a link under admin.publicUrl: {app_mail}"))
        .to_string();
    let code_of = |mail: &str| {
        let lines: Vec<&str> = mail.lines().map(str::trim).collect();
        let at = lines.iter().position(|l| l.contains("give your mail administrator this code")).unwrap();
        lines[at + 2].to_string()
    };
    let (app_code, ops_code) = (code_of(&app_mail), code_of(&request_to("ops@remote.example")));
    assert_eq!(app_code.len(), 9, "{app_code}");

    // The link reaches the admin port (as an Ingress would forward it).
    let query = link.split_once('?').unwrap().1.to_string();
    let base = format!("http://{admin}/confirm");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let get = postern_tests::admin::block_on(http.get(format!("{base}?{query}")).send()).unwrap();
    assert_eq!(get.status(), 200);
    let csp = get.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(get.headers()["referrer-policy"], "no-referrer");
    let page = postern_tests::admin::block_on(get.text()).unwrap();
    assert!(page.contains("<form method=\"post\">") && page.contains("app@remote.example"), "{page}");
    assert_eq!(send("app@remote.example").code, 550, "opening the link does not confirm");

    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let post = |params: &[(String, String)], origin: Option<&str>| {
        let mut r = http.post(&base).form(params);
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        let resp = postern_tests::admin::block_on(r.send()).unwrap();
        (resp.status().as_u16(), postern_tests::admin::block_on(resp.text()).unwrap())
    };
    assert_eq!(post(&params, Some("https://evil.example")).0, 403, "a cross-site post");
    let mut tampered = params.clone();
    tampered[1].1 = tampered[1].1.replace(|c: char| c.is_ascii_alphabetic(), "A");
    assert_eq!(post(&tampered, None).0, 404, "another token");
    let mut other = params.clone();
    other[0].1 = "ops@remote.example".into();
    assert_eq!(post(&other, None).0, 404, "app's token does not confirm ops");
    let (status, page) = post(&params, None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Mail may now be sent as <strong>app@remote.example</strong>"), "{page}");
    let (status, page) = post(&params, None);
    assert_eq!((status, page.contains("was confirmed before")), (200, true), "{page}");
    gw.wait_log("account address confirmed", WAIT);

    // ops: a wrong code is refused (and counted), the right one confirms.
    let cli = |args: &[&str]| {
        std::process::Command::new(binary())
            .args(args)
            .args(["--admin", &admin.to_string()])
            .output()
            .unwrap()
    };
    let wrong = cli(&["accounts", "confirm", "ops", "0000-0000"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not the code"), "{wrong:?}");
    let right = cli(&["accounts", "confirm", "ops", &ops_code]);
    assert!(right.status.success(), "{right:?}");
    let list: serde_json::Value = serde_json::from_slice(&cli(&["accounts", "list"]).stdout).unwrap();
    for account in list.as_array().unwrap() {
        assert_eq!(account["verification"]["reason"], "AddressConfirmed", "{list}");
    }
    let again = cli(&["accounts", "send-confirmation", "app"]);
    assert!(!again.status.success(), "a confirmed address gets no new request");

    // Confirmed: the address's mail leaves, signed.
    assert_eq!(send("app@remote.example").code, 250);
    assert_eq!(send("ops@remote.example").code, 250);
    let got = remote.wait_for(4, WAIT);
    for m in got.iter().filter(|m| m.rcpts == ["u@remote.example"]) {
        assert!(dkim::verify_with_dns(&m.text(), dns_server.addr), "dkimpy: {}", m.text());
    }
    assert_eq!(gw.logs_matching("account address confirmation sent").len(), 2, "one request each");
}

/// An Exchange account sends through EWS (`CreateItem`, `SendAndSaveCopy`, the message as
/// `MimeContent`) as the mailbox's login, against a stand-in that checks each request against
/// the documented format: envelope-only recipients ride in a Bcc header, `ErrorServerBusy`
/// defers (the back-off in the log), "test connection" is an authenticated `GetFolder`, and a
/// wrong password fails the test.
#[test]
fn exchange_accounts_send_through_ews() {
    use postern_api::{ExchangeAccount, HumanDuration};
    use postern_tests::ews::Ews;
    let ews = Ews::start("alice@example.com", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
    std::fs::write(&good, "s3cret\n").unwrap();
    std::fs::write(&bad, "wrong\n").unwrap();
    let exchange = |name: &str, from: &str, password_file: &std::path::Path| SendingAccount {
        name: name.into(),
        from: from.into(),
        display_name: None,
        bcc: None,
        kind: AccountType::Exchange,
        smtp: None,
        direct: None,
        oauth: None,
        exchange: Some(ExchangeAccount {
            url: ews.url.clone(),
            username: "alice@example.com".into(),
            password_file: password_file.to_path_buf(),
        }),
    };
    let config = GatewayConfig::typed(|c: &mut Config| {
        c.relay.trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.delivery.retry_initial = HumanDuration::from_secs(1);
        c.accounts =
            vec![exchange("alice", "alice@example.com", &good), exchange("wrong", "@wrong.example", &bad)];
    });
    let gw = GatewayProcess::start(&config);
    let cli = |args: &[&str]| {
        std::process::Command::new(binary())
            .args(args)
            .args(["--admin", &gw.admin_addr().to_string()])
            .output()
            .unwrap()
    };
    let test = cli(&["accounts", "test", "alice"]);
    assert!(test.status.success(), "{test:?}");
    assert_eq!(ews.folder_calls(), 1, "the test is one authenticated GetFolder");
    let wrong = cli(&["accounts", "test", "wrong"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("EWS refused the login"), "{wrong:?}");

    ews.busy_for(1);
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO app.example");
    let text = "From: alice@example.com\r\nTo: u@remote.example\r\nSubject: via EWS\r\n\r\nA body.\r\n";
    assert_eq!(
        c.send_message("alice@example.com", &["u@remote.example", "hidden@remote.example"], text).code,
        250
    );
    let busy = postern_tests::wait_for("a deferral for ErrorServerBusy", WAIT, || {
        gw.logs_matching("deferred").into_iter().find(|l| l["route"] == "account:alice")
    });
    assert!(busy["error"].as_str().unwrap().contains("ErrorServerBusy"), "{busy}");
    assert!(busy["error"].as_str().unwrap().contains("back off 1000 ms"), "{busy}");
    let sent = ews.wait_for(1, WAIT);
    let mime = String::from_utf8_lossy(&sent[0]).into_owned();
    assert!(mime.starts_with("Bcc: hidden@remote.example\r\nReceived: "), "{mime}");
    assert!(mime.contains("\r\nSubject: via EWS\r\n"), "{mime}");
    assert!(ews.violations().is_empty(), "{:?}", ews.violations());
}

/// A Direct account signing with `key`.
fn direct_account(
    name: &str,
    from: &str,
    selector: &str,
    key: std::path::PathBuf,
    algorithm: postern_api::DkimAlgorithm,
) -> SendingAccount {
    SendingAccount {
        name: name.into(),
        from: from.into(),
        display_name: None,
        bcc: None,
        kind: AccountType::Direct,
        oauth: None,
        exchange: None,
        smtp: None,
        direct: Some(postern_api::DirectAccount {
            selector: selector.into(),
            private_key_file: key,
            algorithm,
        }),
    }
}
