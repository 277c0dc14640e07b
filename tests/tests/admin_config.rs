//! The CLI's config check, hot reload, the admin endpoints and a clean shutdown.

use std::process::Command;
use std::time::Duration;

use postern_tests::client::{Client, message};
use postern_tests::gateway::{GatewayConfig, GatewayProcess, binary};
use postern_tests::sink::{Behavior, Sink};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn check_config_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "hostname: gw.test\nlisteners: [{address: \"127.0.0.1:25\"}]\nlimits: {maxRecipients: many}\n",
            "limits.maxRecipients: invalid type",
        ),
        (
            "hostname: gw.test\nlisteners: [{address: \"127.0.0.1:25\"}]\ndomains: [{name: a.test, primary: {}}]\n",
            "domains[0].primary: set mx (a domain) or hosts (a list)",
        ),
        ("hostname: gw.test\nlisteners: []\n", "listeners: at least one listener is required"),
        (
            "hostname: gw.test\nlisteners: [{address: \"127.0.0.1:25\"}]\ndelivery: {lifetime: soon}\n",
            "delivery.lifetime: invalid duration",
        ),
        (
            "hostname: gw.test\nlisteners: [{address: \"127.0.0.1:25\", tls: {certFile: /nonexistent.pem}}]\n",
            "listeners[0].tls: missing field `keyFile`",
        ),
    ];
    for (text, want) in cases {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
        assert!(!out.status.success(), "{text} passed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "for {text:?}: expected {want:?} in {err:?}");
    }
    let good = GatewayConfig::new("");
    let out = Command::new(binary()).arg("check-config").arg(good.write()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_example_config_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            checked += 1;
        }
    }
    assert!(checked >= 7, "gateway.yaml, one example per routing mode, spam.yaml, submission.yaml");
}

#[test]
fn health_readiness_and_metrics() {
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(&GatewayConfig::new(&format!(
        "domains:\n  - name: served.test\n    primary: {{hosts: [\"{}\"], tls: {{mode: none}}}}\n",
        sink.host()
    )));
    assert_eq!(gw.admin_get("/healthz"), (200, "ok\n".into()));
    assert_eq!(gw.admin_get("/readyz"), (200, "ready\n".into()));
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    let r = c.send_message(
        "a@sender.test",
        &["u@served.test"],
        &message("a@sender.test", "u@served.test", "m", "x"),
    );
    assert_eq!(r.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").code, 250);
    assert!(c.cmd("RCPT TO:<x@elsewhere.test>").starts("554"));
    sink.wait_for(1, WAIT);
    postern_tests::wait_for("delivery metrics", WAIT, || {
        (gw.metric("postern_delivery_attempts_total{result=\"delivered\"}") == Some(1.0)).then_some(())
    });
    assert_eq!(gw.metric("postern_messages_total{outcome=\"queued\",reason=\"accepted\"}"), Some(1.0));
    assert_eq!(gw.metric("postern_recipients_refused_total{reason=\"relay_denied\"}"), Some(1.0));
    assert_eq!(gw.metric("postern_smtp_connections_total{listener=\"smtp\"}"), Some(1.0));
    assert_eq!(gw.metric("postern_accept_latency_seconds_count"), Some(1.0));
    assert_eq!(gw.metric("postern_queue_jobs"), Some(0.0));
    let (status, queue) = gw.admin_get("/api/v1/queue");
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&queue).unwrap();
    assert_eq!(stats["jobs"], 0);
    // One log line per decision, with the queue id the client was told.
    let queue_id = r.text.rsplit(' ').next().unwrap();
    let accepted = gw.wait_log("message accepted", WAIT);
    assert_eq!(accepted["queue_id"], queue_id);
    assert_eq!(accepted["decision"], "queued");
    assert_eq!(gw.wait_log("delivered", WAIT)["queue_id"], queue_id);
}

#[test]
fn config_changes_apply_to_new_sessions_and_bad_ones_are_refused() {
    let sink = Sink::start(Behavior::default());
    let mut config = GatewayConfig::new(&format!(
        "domains:\n  - name: one.test\n    primary: {{hosts: [\"{}\"], tls: {{mode: none}}}}\n",
        sink.host()
    ));
    let mut gw = GatewayProcess::start(&config);
    let mut open = Client::connect(gw.smtp());
    open.cmd("EHLO client.test");
    open.cmd("MAIL FROM:<a@sender.test>");
    assert!(open.cmd("RCPT TO:<u@two.test>").starts("554"), "two.test is not served yet");

    // A broken file is refused and the running config stays.
    std::fs::write(config.path(), "hostname: [broken\n").unwrap();
    gw.wait_log("config change rejected; keeping the running config", WAIT);

    config.body.push_str(&format!(
        "  - name: two.test\n    primary: {{hosts: [\"{}\"], tls: {{mode: none}}}}\n",
        sink.host()
    ));
    config.write();
    gw.wait_log("config reloaded; new sessions use it", WAIT);
    let mut fresh = Client::connect(gw.smtp());
    fresh.cmd("EHLO client.test");
    fresh.cmd("MAIL FROM:<a@sender.test>");
    assert_eq!(fresh.cmd("RCPT TO:<u@two.test>").code, 250, "the new domain is served");
    // The open session was not dropped by the reload.
    assert_eq!(open.cmd("NOOP").code, 250);
    assert_eq!(gw.metric("postern_config_reloads_total{result=\"invalid\"}"), Some(1.0));

    // SIGTERM: the open session may finish, then the process exits cleanly.
    drop(open);
    drop(fresh);
    assert!(gw.terminate(), "clean exit on SIGTERM");
    assert!(gw.log_contains("stopped"));
}
