//! `kubectl postern` with a real kubeconfig against a stand-in of the Kubernetes API server
//! (none can run here; `tests/src/kube_api.rs` checks every request against the documented
//! shapes): the plugin reaches the Gateway's admin Service through the service proxy, so the
//! API server's RBAC on `services/proxy` decides whether the user gets through, and the
//! gateway's review of the user's token (TokenReview, SubjectAccessReview) decides what they
//! may do there.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use postern_tests::client::Client;
use postern_tests::dns::{self, DnsServer};
use postern_tests::gateway::{GatewayProcess, kubectl_plugin_binary, quarantining};
use postern_tests::kube_api::KubeApi;
use postern_tests::sink::{Behavior, Sink};

const WAIT: Duration = Duration::from_secs(30);

/// A kubeconfig for the stand-in API server: one context per user, namespace `mail`.
fn kubeconfig(dir: &Path, server: &str, ca: &Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {}\ncontexts:\n",
        ca.display()
    );
    for (name, _) in users {
        text.push_str(&format!(
            "- name: {name}\n  context: {{cluster: test, user: {name}, namespace: mail}}\n"
        ));
    }
    text.push_str(&format!("current-context: {}\nusers:\n", users[0].0));
    for (name, auth) in users {
        text.push_str(&format!("- name: {name}\n  user:\n{auth}\n"));
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

fn plugin(kubeconfig: &Path, context: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(kubectl_plugin_binary())
        .args(["--context", context])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("POSTERN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kubectl_postern_goes_through_the_service_proxy_and_rbac_decides() {
    let dir = tempfile::tempdir().unwrap();
    let ca = postern_tests::tls::TestCa::new();
    let ca_file = ca.write_ca(dir.path());
    let api = KubeApi::start(&ca.leaf(dir.path(), "apiserver", &["127.0.0.1"]), "gateway-sa-token");
    api.user("alice-token", "alice@example.com", &["system:authenticated"]);
    api.user("bob-token", "bob@example.com", &["system:authenticated"]);
    api.user("carol-token", "carol@example.com", &["system:authenticated"]);
    // alice: the quarantine, through the proxy, and the Gateway list.
    for verb in ["list", "get", "release", "delete"] {
        api.grant("alice@example.com", "mail", "quarantine", verb);
    }
    for verb in ["get", "create", "delete"] {
        api.grant("alice@example.com", "mail", "services/proxy", verb);
    }
    api.grant("alice@example.com", "mail", "gateways", "list");
    // bob may read through the proxy but not POST; carol may pass the proxy but has no right
    // on the quarantine.
    api.grant("bob@example.com", "mail", "services/proxy", "get");
    api.grant("bob@example.com", "mail", "quarantine", "list");
    api.grant("bob@example.com", "mail", "quarantine", "release");
    for verb in ["get", "create"] {
        api.grant("carol@example.com", "mail", "services/proxy", verb);
    }
    let auth = api.admin_auth(dir.path(), "gateway-sa-token", &ca_file);

    let dns = DnsServer::start(vec![dns::txt("soft.test", "v=spf1 ip4:192.0.2.1 ~all")]);
    let sink = Sink::start(Behavior::default());
    let gw = GatewayProcess::start(&quarantining(dns.addr, &sink.host(), &["u"], move |c| {
        c.admin.kubernetes = Some(auth);
    }));
    api.service("mail", "edge-admin", "admin", gw.admin_addr());
    api.gateway("mail", "edge");
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    let m = postern_tests::client::message("x@soft.test", "u@served.test", "Held for review", "x");
    assert_eq!(c.send_message("x@soft.test", &["u@served.test"], &m).code, 250);

    // alice by token, and alice again through an exec plugin (as cloud kubeconfigs have it).
    let exec_credential = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"alice-token"}}"#;
    let config = kubeconfig(
        dir.path(),
        &api.url(),
        &ca_file,
        &[
            ("alice", "    token: alice-token"),
            (
                "alice-exec",
                &format!(
                    "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: sh\n      args: ['-c', 'echo ''{exec_credential}''']\n      interactiveMode: Never"
                ),
            ),
            ("bob", "    token: bob-token"),
            ("carol", "    token: carol-token"),
        ],
    );

    // The only Gateway of the namespace is found; the list is the CLI's table.
    let (ok, out, err) = plugin(&config, "alice", &["quarantine", "list"]);
    assert!(ok, "{err}");
    assert!(out.contains("Held for review") && out.contains("1 held"), "{out}");
    let id = out.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let (ok, out, err) = plugin(&config, "alice-exec", &["quarantine", "show", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("Subject: Held for review"), "{out}");

    // bob gets through the proxy for reading, but the API server refuses his POST.
    let (ok, _, err) = plugin(&config, "bob", &["-g", "edge", "quarantine", "release", &id]);
    assert!(!ok);
    assert!(err.contains("cannot create resource \"services/proxy\""), "{err}");
    // carol gets through the proxy; the gateway refuses her, naming what RBAC does not grant.
    let (ok, _, err) = plugin(&config, "carol", &["-g", "edge", "quarantine", "list"]);
    assert!(!ok);
    assert!(
        err.contains("carol@example.com may not list quarantine.mail.postern.dev in namespace mail"),
        "{err}"
    );
    // alice may not read verifications (no grant), and may release.
    let (ok, _, err) = plugin(&config, "alice", &["verification", "list"]);
    assert!(!ok && err.contains("HTTP 403"), "{err}");
    let (ok, out, err) = plugin(&config, "alice", &["quarantine", "release", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("\"releasedBy\": \"alice@example.com\""), "the reviewed user acts: {out}");
    assert_eq!(sink.wait_for(1, WAIT)[0].rcpts, ["u@served.test"]);

    let recorded = api.recorded();
    assert!(recorded.violations.is_empty(), "{:?}", recorded.violations);
    assert!(
        recorded
            .proxied
            .iter()
            .any(|p| p.starts_with("POST /api/v1/quarantine/") && p.ends_with("as alice@example.com")),
        "{:?}",
        recorded.proxied
    );
}
