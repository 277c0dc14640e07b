//! The quarantine console in a real browser: Debian's Chromium, headless, driven by
//! playwright-core (`tests/peers/browser/console.mjs`) as a reviewer would use it, against the
//! real gateway whose admin API asks a (stand-in) Kubernetes API server who the reviewer is and
//! what RBAC lets them do. The mail side is checked here: what the recording sink received (and
//! how often), what is left in the quarantine, and that the HTML message's remote image was
//! never fetched.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use postern_tests::client::Client;
use postern_tests::dns::{self, DnsServer};
use postern_tests::gateway::{GatewayProcess, quarantining};
use postern_tests::kube_api::KubeApi;
use postern_tests::sink::{Behavior, Sink};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A loopback HTTP server that only counts who connects: the HTML message's remote image
/// points here, so any fetch shows.
fn trap() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
        }
    });
    (port, hits)
}

fn message(subject: &str, to: &str, body: &str) -> String {
    format!(
        "From: Sam Sender <sam@soft.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: Tue, 01 Dec 2026 09:00:00 +0000\r\nMessage-ID: <{}@soft.test>\r\nMIME-Version: 1.0\r\n{body}",
        subject.replace(' ', "-")
    )
}

fn with_attachment(name: &str, text: &str) -> String {
    format!(
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see the attachment.\r\n--b\r\nContent-Type: text/plain; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n{text}\r\n--b--\r\n"
    )
}

#[test]
fn reviewers_search_read_deliver_and_delete_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let ca = postern_tests::tls::TestCa::new();
    let ca_file = ca.write_ca(dir.path());
    let api = KubeApi::start(&ca.leaf(dir.path(), "apiserver", &["127.0.0.1"]), "gateway-sa-token");
    api.user("alice-token", "alice@example.com", &["system:authenticated"]);
    api.user("bob-token", "bob@example.com", &["system:authenticated"]);
    for verb in ["list", "get", "release", "delete"] {
        api.grant("alice@example.com", "mail", "quarantine", verb);
    }
    api.grant("bob@example.com", "mail", "quarantine", "list");
    let auth = api.admin_auth(dir.path(), "gateway-sa-token", &ca_file);
    // The test's own token (the queue), next to the reviewers' Kubernetes tokens.
    let file_tokens = dir.path().join("admin-tokens");
    std::fs::write(&file_tokens, "test-harness-token\n").unwrap();
    let key_file = dir.path().join("admin-key");
    std::fs::write(&key_file, "Zm9yLXRoZS1jb25zb2xlLXRlc3Qtb25seS0zMmJ5dGU=\n").unwrap();

    let dns = DnsServer::start(vec![dns::txt("soft.test", "v=spf1 ip4:192.0.2.1 ~all")]);
    let sink = Sink::start(Behavior::default());
    let (trap_port, fetched) = trap();
    let gw = GatewayProcess::start(&quarantining(dns.addr, &sink.host(), &["alice"], move |c| {
        c.admin.key_file = Some(key_file);
        c.admin.token_file = Some(file_tokens);
        c.admin.kubernetes = Some(auth);
    }));

    let unsafe_html = format!(
        "Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hello</p><script>window.__pwned = true; alert('script')</script>\
         <img src=\"http://127.0.0.1:{trap_port}/pixel.gif\" onerror=\"window.__pwned = true\" alt=\"pixel\">\
         <a href=\"javascript:window.__pwned = true\">click me</a>\
         <svg><image href=\"http://127.0.0.1:{trap_port}/svg.png\"/></svg>\
         <div style=\"background: url(http://127.0.0.1:{trap_port}/bg.png)\">styled</div>\r\n"
    );
    let to = "alice@served.test";
    for (subject, body) in [
        ("Quarterly report", with_attachment("budget-2027.txt", "numbers")),
        ("Invoice 4411", with_attachment("invoice-4411.txt", "pay now")),
        ("Lunch plans", "Content-Type: text/plain\r\n\r\nPizza?\r\n".to_string()),
        ("Unsafe HTML", unsafe_html),
    ] {
        let mut c = Client::connect(gw.smtp());
        c.cmd("EHLO client.test");
        let r = c.send_message("sam@soft.test", &[to], &message(subject, to, &body));
        assert_eq!(r.code, 250, "{r:?}");
    }

    // The screenshots README shows are kept in docs/: `UPDATE_SCREENSHOTS=1` writes them there.
    let shots = match std::env::var_os("UPDATE_SCREENSHOTS") {
        Some(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs"),
        None => dir.path().to_path_buf(),
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/browser/console.mjs");
    let base = format!("http://{}", gw.admin_addr());
    let out = Command::new("node")
        .arg(&script)
        .args([&base, "alice-token", "bob-token", shots.to_str().unwrap()])
        .current_dir(script.parent().unwrap())
        .output()
        .expect("node (scripts/install-test-deps.sh installs it and playwright-core)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser run failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let texts = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .unwrap_or(&vec![])
            .iter()
            .map(|v| v.as_str().unwrap_or_default().trim().to_string())
            .collect()
    };

    // Newest first; searches by subject and by attachment name.
    assert_eq!(texts("listed"), ["Unsafe HTML", "Lunch plans", "Invoice 4411", "Quarterly report"]);
    assert_eq!(texts("bySubject"), ["Invoice 4411"]);
    assert_eq!(texts("byAttachment"), ["Quarterly report"]);
    // The detail: its headers, its attachment.
    assert_eq!(report["detailSubject"], "Quarterly report");
    let headers = texts("detailHeaders");
    for h in ["From", "To", "Subject", "Message-ID", "Received"] {
        assert!(headers.iter().any(|x| x == h), "{h} in {headers:?}");
    }
    assert_eq!(texts("attachments"), ["budget-2027.txt"]);

    // Two delivered, once each; one deleted and never delivered.
    let delivered = texts("delivered");
    assert_eq!(delivered.len(), 2, "{report}");
    assert!(delivered.iter().all(|r| r.starts_with("delivered to alice@served.test")), "{delivered:?}");
    assert_eq!(texts("deleted"), ["deleted"]);
    assert_eq!(texts("left"), ["Unsafe HTML"]);
    gw.wait_idle_as("test-harness-token");
    let mut arrived: Vec<String> = sink
        .received()
        .iter()
        .map(|m| {
            m.text().lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_string)).unwrap_or_default()
        })
        .collect();
    arrived.sort();
    assert_eq!(arrived, ["Invoice 4411", "Quarterly report"]);
    let released = gw.wait_log("quarantined message released", WAIT);
    assert_eq!(released["released_by"], "alice@example.com", "the actor is the reviewed user: {released}");
    let deleted = gw.wait_log("quarantined message deleted", WAIT);
    assert_eq!(deleted["deleted_by"], "alice@example.com", "{deleted}");

    // The HTML traps: nothing ran, nothing was fetched, nothing dangerous is left in the page.
    let unsafe_report = &report["unsafe"];
    assert_eq!(unsafe_report["pwned"], false, "{unsafe_report}");
    assert_eq!(unsafe_report["pwnedAfterClick"], false, "{unsafe_report}");
    assert_eq!(unsafe_report["scripts"], 0, "{unsafe_report}");
    assert_eq!(unsafe_report["handlers"], serde_json::json!([]), "{unsafe_report}");
    assert!(unsafe_report["imageSources"].as_array().unwrap().iter().all(Value::is_null), "{unsafe_report}");
    assert!(
        unsafe_report["links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| !l.as_str().unwrap_or_default().contains("javascript")),
        "{unsafe_report}"
    );
    assert!(unsafe_report["text"].as_str().unwrap().contains("Hello"), "{unsafe_report}");
    assert_eq!(report["dialogs"], serde_json::json!([]));
    assert_eq!(report["elsewhere"], serde_json::json!([]), "requests to other origins");
    assert_eq!(fetched.load(Ordering::SeqCst), 0, "the remote image was fetched");

    // A reviewer who may only list: 403 on a message, saying why.
    assert_eq!(report["listOnlyStatus"], 403);
    let why = report["listOnlyText"].as_str().unwrap();
    assert!(
        why.contains("bob@example.com may not get quarantine.mail.postern.dev in namespace mail"),
        "{why}"
    );
    assert_eq!(report["phoneOverflow"], false, "the list scrolls sideways on a phone");
    assert!(api.recorded().violations.is_empty(), "{:?}", api.recorded().violations);
}
