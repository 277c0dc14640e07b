//! GitOps path without a cluster: manifests -> `postern-operator render -f` -> a config the
//! gateway accepts -> a running gateway that relays mail as the manifests say.

use std::process::Command;
use std::time::Duration;

use postern_tests::client::{Client, message};
use postern_tests::gateway::{GatewayProcess, binary, operator_binary};
use postern_tests::sink::{Behavior, Sink};

fn render(dir: &std::path::Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(operator_binary()).args(["render", "-f"]).arg(dir).args(extra).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_config(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(binary()).arg("check-config").arg(path).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_examples_render_to_a_config_the_gateway_accepts() {
    let examples = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/k8s"));
    let (ok, _, errors) = render(examples, &[]);
    assert!(!ok && errors.contains("2 Gateways found (edge, relay); choose one with --gateway"), "{errors}");
    for gateway in ["edge", "relay"] {
        let (ok, config, errors) = render(examples, &["--gateway", gateway]);
        assert!(ok, "{gateway}: {errors}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rendered.yaml");
        std::fs::write(&path, &config).unwrap();
        let (ok, err) = check_config(&path);
        assert!(ok, "{gateway}: {err}\n{config}");
    }
}

#[test]
fn rendered_manifests_run_and_relay() {
    let primary = Sink::start(Behavior::default());
    let legacy = Sink::start(Behavior::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mail.yaml"),
        format!(
            r#"apiVersion: mail.postern.dev/v1alpha1
kind: Gateway
metadata: {{name: edge}}
spec:
  hostname: gw.test
  domainSelector: {{matchLabels: {{tier: edge}}}}
---
apiVersion: mail.postern.dev/v1alpha1
kind: MailDomain
metadata: {{name: served, labels: {{tier: edge}}}}
spec:
  domain: served.test
  primary: {{hosts: ["{primary}"], tls: {{mode: none}}}}
  accounts: [{{address: alice}}]
  routingPolicyRef: split
  spamPolicyRef: strict
---
apiVersion: mail.postern.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: split}}
spec:
  mode: Split
  destination: {{hosts: ["{legacy}"], tls: {{mode: none}}}}
---
apiVersion: mail.postern.dev/v1alpha1
kind: SpamPolicy
metadata: {{name: strict}}
spec:
  blockList: {{domains: [spam.test], action: Reject}}
  spf: {{softFail: Allow, fail: Allow}}
---
apiVersion: mail.postern.dev/v1alpha1
kind: MailDomain
metadata: {{name: broken, labels: {{tier: edge}}}}
spec:
  domain: broken.test
  primary: {{hosts: ["{primary}"]}}
  routingPolicyRef: nowhere
"#,
            primary = primary.host(),
            legacy = legacy.host()
        ),
    )
    .unwrap();
    let (ok, config, errors) = render(dir.path(), &[]);
    assert!(!ok, "a broken reference makes render fail loudly");
    assert!(
        errors.contains(
            "MailDomain broken: RoutingPolicyNotFound: RoutingPolicy nowhere does not exist in default"
        ),
        "{errors}"
    );

    // In a pod the config listens on :25 with its store in /var/lib/postern; here on loopback.
    let mut value: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
    value["listeners"] = serde_yaml::from_str("[{name: smtp, address: '127.0.0.1:0'}]").unwrap();
    value["admin"] = serde_yaml::from_str("{address: '127.0.0.1:0'}").unwrap();
    let store = dir.path().join("store");
    value["store"] = serde_yaml::from_str(&format!("{{embedded: {{path: '{}'}}}}", store.display())).unwrap();
    // SPF lookups go to the test's own (empty) DNS server.
    let dns = postern_tests::dns::DnsServer::start(vec![]);
    value["delivery"]["nameservers"] = serde_yaml::from_str(&format!("['{}']", dns.addr)).unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, serde_yaml::to_string(&value).unwrap()).unwrap();
    assert!(check_config(&path).0);

    let gw = GatewayProcess::start_from(&path);
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    // known account -> primary; unknown -> the Split destination; blocked sender refused;
    // the broken domain is not served at all.
    assert_eq!(c.cmd("MAIL FROM:<a@spam.test>").code, 250);
    let r = c.cmd("RCPT TO:<alice@served.test>");
    assert!(r.starts("550 5.7.1") && r.text.contains("block-list: domain spam.test"), "{r:?}");
    c.cmd("RSET");
    assert!(c.cmd("MAIL FROM:<a@sender.test>").code == 250);
    assert_eq!(c.cmd("RCPT TO:<x@broken.test>").code, 554, "not served, so not relayed");
    c.cmd("RSET");
    let r = c.send_message(
        "a@sender.test",
        &["alice@served.test", "old@served.test"],
        &message("a@sender.test", "alice@served.test", "split", "x"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    let wait = Duration::from_secs(20);
    assert_eq!(primary.wait_for(1, wait)[0].rcpts, ["alice@served.test"]);
    assert_eq!(legacy.wait_for(1, wait)[0].rcpts, ["old@served.test"]);
}
