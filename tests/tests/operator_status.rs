//! `DestinationVerified` on a RoutingPolicy comes from the gateways: a real gateway verifies
//! its Split destination against a real receiver, and the operator's reconcile (on
//! kube-fake-client) reads that state from the gateway's admin API.

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube_fake_client::ClientBuilder;
use postern_operator::controller::{Context, reconcile};
use postern_operator::crd::{Gateway, MailDomain, RoutingPolicy, SendingAccount, SpamPolicy};
use postern_operator::manifests::Objects;
use postern_tests::gateway::{GatewayConfig, GatewayProcess};
use postern_tests::sink::{Behavior, Sink};

const WAIT: Duration = Duration::from_secs(30);

fn manifests(primary: &str, destination: &str) -> String {
    format!(
        r#"apiVersion: mail.postern.dev/v1alpha1
kind: Gateway
metadata: {{name: edge, namespace: mail, uid: 00000000-0000-0000-0000-000000000001}}
spec: {{hostname: gw.test}}
---
apiVersion: mail.postern.dev/v1alpha1
kind: MailDomain
metadata: {{name: served, namespace: mail, uid: 00000000-0000-0000-0000-000000000002}}
spec:
  domain: served.test
  primary: {{hosts: ["{primary}"], tls: {{mode: none}}}}
  accounts: [{{address: alice}}]
  routingPolicyRef: split
---
apiVersion: mail.postern.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: split, namespace: mail, uid: 00000000-0000-0000-0000-000000000003}}
spec:
  mode: Split
  destination: {{hosts: ["{destination}"], tls: {{mode: none}}}}
  verificationAddress: verify@dest.test
"#
    )
}

/// The fake API server with every kind the controller reads and the status it writes.
fn fake_cluster() -> ClientBuilder {
    ClientBuilder::new()
        .with_resource::<Gateway>()
        .with_resource::<MailDomain>()
        .with_resource::<RoutingPolicy>()
        .with_resource::<SpamPolicy>()
        .with_resource::<SendingAccount>()
        .with_status_subresource::<Gateway>()
        .with_status_subresource::<MailDomain>()
        .with_status_subresource::<RoutingPolicy>()
        .with_status_subresource::<SendingAccount>()
}

async fn verified_condition(manifests: &str, admin: std::net::SocketAddr) -> (String, String, String) {
    let mut objs = Objects::default();
    objs.add_yaml(manifests, "mail").unwrap();
    let client = fake_cluster()
        .with_object(objs.gateways[0].clone())
        .with_object(objs.domains[0].clone())
        .with_object(objs.routing_policies[0].clone())
        .build()
        .await
        .unwrap();
    let mut ctx = Context::new(client.clone());
    ctx.gateway_admin = Some(admin);
    reconcile(Arc::new(objs.gateways[0].clone()), Arc::new(ctx)).await.unwrap();
    let rp = Api::<RoutingPolicy>::namespaced(client, "mail").get("split").await.unwrap();
    let c = rp.status.unwrap().conditions.into_iter().find(|c| c.type_ == "DestinationVerified").unwrap();
    (c.status, c.reason, c.message)
}

#[test]
fn destination_verified_follows_the_gateways_verification() {
    let primary = Sink::start(Behavior::default());
    let refusing = Sink::start(Behavior::default().reject("verify@dest.test", "550 5.1.1 no such mailbox"));
    let accepting = Sink::start(Behavior::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (destination, expected) in [(&refusing, "False"), (&accepting, "True")] {
        let text = manifests(&primary.host(), &destination.host());
        // The gateway runs the config the operator renders for these manifests.
        let mut objs = Objects::default();
        objs.add_yaml(&text, "mail").unwrap();
        let rendered = postern_operator::render::render(&objs.gateways[0], &objs);
        let config: serde_yaml::Value = serde_yaml::from_str(&rendered.yaml().unwrap()).unwrap();
        let domains = serde_yaml::to_string(&config["domains"]).unwrap();
        let gw = GatewayProcess::start(&GatewayConfig::new(&format!("domains:\n{domains}")));
        let outcome = if expected == "True" {
            "destination verified; routing policy is live"
        } else {
            "destination verification failed; domain stays Direct"
        };
        gw.wait_log(outcome, WAIT);

        let (status, reason, message) = rt.block_on(verified_condition(&text, gw.admin_addr()));
        assert_eq!(status, expected, "{reason}: {message}");
        if expected == "False" {
            assert_eq!(reason, "VerificationFailed");
            assert!(
                message.contains("served.test") && message.contains("550 5.1.1 no such mailbox"),
                "{message}"
            );
        } else {
            assert_eq!(reason, "Verified");
        }
    }
    // No gateway answering: Unknown, with the reason.
    let nobody: std::net::SocketAddr = ([127, 0, 0, 1], postern_tests::reserve_port()).into();
    let (status, reason, _) =
        rt.block_on(verified_condition(&manifests(&primary.host(), &accepting.host()), nobody));
    assert_eq!((status.as_str(), reason.as_str()), ("Unknown", "NotReported"));
}

/// `ConnectionTested` on a SendingAccount comes from a gateway's connection test (connect,
/// STARTTLS, login, QUIT against a real submission server), once per generation.
#[test]
fn connection_tested_comes_from_the_gateways_test() {
    use postern_tests::submission::SubmissionServer;
    let dir = tempfile::tempdir().unwrap();
    let ca = postern_tests::tls::TestCa::new();
    let ca_file = ca.write_ca(dir.path());
    let server = SubmissionServer::start(
        "starttls",
        &ca.leaf(dir.path(), "provider", &["127.0.0.1"]),
        "sales@example.com",
        "s3cret",
    );
    let account = |name: &str, from: &str, user: &str| {
        format!(
            "apiVersion: mail.postern.dev/v1alpha1\nkind: SendingAccount\nmetadata: {{name: {name}, namespace: mail, uid: 00000000-0000-0000-0000-00000000001{}, generation: 1}}\nspec:\n  from: '{from}'\n  type: Smtp\n  smtp: {{host: 127.0.0.1, port: {}, username: {user}, passwordSecretRef: {{name: {name}-smtp}}}}\n",
            name.len(),
            server.port
        )
    };
    let text = format!(
        "apiVersion: mail.postern.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: edge, namespace: mail, uid: 00000000-0000-0000-0000-000000000001}}\nspec: {{hostname: gw.test}}\n---\n{}---\n{}",
        account("sales", "@example.com", "sales@example.com"),
        account("bad", "bad@example.org", "bad@example.org"),
    );
    let mut objs = Objects::default();
    objs.add_yaml(&text, "mail").unwrap();
    // The gateway runs the accounts the operator renders, with the Secrets' files here.
    let rendered = postern_operator::render::render(&objs.gateways[0], &objs);
    let mut accounts = rendered.config.unwrap().accounts;
    for a in &mut accounts {
        let file = dir.path().join(&a.name);
        std::fs::write(&file, if a.name == "sales" { "s3cret\n" } else { "wrong\n" }).unwrap();
        a.smtp.as_mut().unwrap().password_file = Some(file);
    }
    let gw = GatewayProcess::start(&GatewayConfig::typed(|c| {
        c.accounts = accounts;
        c.delivery.ca_file = Some(ca_file.clone());
    }));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let tested = rt.block_on(async {
        let client = fake_cluster()
            .with_object(objs.gateways[0].clone())
            .with_object(objs.accounts[0].clone())
            .with_object(objs.accounts[1].clone())
            .build()
            .await
            .unwrap();
        let mut ctx = Context::new(client.clone());
        ctx.gateway_admin = Some(gw.admin_addr());
        let ctx = Arc::new(ctx);
        // Twice: the second reconcile keeps the result of this generation.
        for _ in 0..2 {
            let gateway = Api::<Gateway>::namespaced(client.clone(), "mail").get("edge").await.unwrap();
            reconcile(Arc::new(gateway), ctx.clone()).await.unwrap();
        }
        let api = Api::<SendingAccount>::namespaced(client, "mail");
        let mut out = Vec::new();
        for name in ["sales", "bad"] {
            let a = api.get(name).await.unwrap();
            let c = a
                .status
                .unwrap()
                .base
                .conditions
                .into_iter()
                .find(|c| c.type_ == "ConnectionTested")
                .unwrap();
            out.push((c.status, c.reason, c.message));
        }
        out
    });
    assert_eq!((tested[0].0.as_str(), tested[0].1.as_str()), ("True", "Connected"), "{}", tested[0].2);
    assert!(tested[0].2.ends_with("logged in"), "{}", tested[0].2);
    assert_eq!((tested[1].0.as_str(), tested[1].1.as_str()), ("False", "ConnectionFailed"));
    assert!(tested[1].2.contains("SMTP AUTH as bad@example.org failed"), "{}", tested[1].2);
    assert_eq!(
        gw.logs_matching("sending account connection tested").len(),
        2,
        "once per account and generation"
    );
}

/// A Direct SendingAccount end to end: the operator generates its key into a Secret, a real
/// gateway signs with that key and reports the record, the operator shows it in the status and
/// sets `Verified` from the DNS the gateway sees; a message signed with the generated key passes
/// an independent verifier (dkimpy).
#[test]
fn direct_accounts_sign_with_a_generated_key_and_report_their_record() {
    use k8s_openapi::api::core::v1::Secret;
    use postern_api::{HumanDuration, TlsPolicy};
    use postern_operator::crd::sending_account::SendingAccountStatus;
    use postern_tests::dns::{self, DnsServer};
    let dir = tempfile::tempdir().unwrap();
    let account = |name: &str, domain: &str, algorithm: &str, uid: u8| {
        format!(
            "apiVersion: mail.postern.dev/v1alpha1\nkind: SendingAccount\nmetadata: {{name: {name}, namespace: mail, uid: 00000000-0000-0000-0000-0000000000{uid}, generation: 1}}\nspec:\n  from: '@{domain}'\n  type: Direct\n  direct: {{selector: s2026, algorithm: {algorithm}}}\n"
        )
    };
    let text = format!(
        "apiVersion: mail.postern.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: edge, namespace: mail, uid: 00000000-0000-0000-0000-000000000001}}\nspec: {{hostname: gw.test}}\n---\n{}---\n{}",
        account("signed", "direct.example", "RsaSha256", 11),
        account("pending", "pending.example", "Ed25519Sha256", 12),
    );
    let mut objs = Objects::default();
    objs.add_yaml(&text, "mail").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        fake_cluster()
            .with_object(objs.gateways[0].clone())
            .with_object(objs.accounts[0].clone())
            .with_object(objs.accounts[1].clone())
            .build()
            .await
            .unwrap()
    });
    let reconcile_with = |admin: std::net::SocketAddr| {
        let mut ctx = Context::new(client.clone());
        ctx.gateway_admin = Some(admin);
        rt.block_on(async {
            let gateway = Api::<Gateway>::namespaced(client.clone(), "mail").get("edge").await.unwrap();
            reconcile(Arc::new(gateway), Arc::new(ctx)).await.unwrap();
        })
    };
    let status = |name: &str| -> SendingAccountStatus {
        rt.block_on(Api::<SendingAccount>::namespaced(client.clone(), "mail").get(name))
            .unwrap()
            .status
            .unwrap()
    };
    let verified = |s: &SendingAccountStatus| {
        let c = s.base.conditions.iter().find(|c| c.type_ == "Verified").unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    };

    // No gateway yet: the keys are generated; Verified is Unknown until a gateway reports.
    let nobody: std::net::SocketAddr = ([127, 0, 0, 1], postern_tests::reserve_port()).into();
    reconcile_with(nobody);
    assert_eq!(verified(&status("signed")).1, "NotReported");
    let secrets = Api::<Secret>::namespaced(client.clone(), "mail");
    let mut keys = std::collections::HashMap::new();
    for name in ["signed", "pending"] {
        let secret = rt.block_on(secrets.get(&format!("{name}-dkim"))).unwrap();
        let file = dir.path().join(format!("{name}.pem"));
        std::fs::write(&file, &secret.data.unwrap()["dkim.pem"].0).unwrap();
        keys.insert(name, file);
    }
    // The records, computed independently of Postern (openssl), and the RSA one put in DNS.
    let public = |file: &std::path::Path| {
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl reads the generated key");
        out.stdout
    };
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let rsa_record = format!("v=DKIM1; k=rsa; p={}", b64(&public(&keys["signed"])));
    let ed_der = public(&keys["pending"]);
    let ed_record = format!("v=DKIM1; k=ed25519; p={}", b64(&ed_der[ed_der.len() - 32..]));
    let port = postern_tests::reserve_port();
    let remote =
        Sink::start_at(std::net::SocketAddr::new("127.0.0.2".parse().unwrap(), port), Behavior::default());
    let dns_server = DnsServer::start(vec![
        dns::mx("remote.example", 10, "mx.remote.example"),
        dns::a("mx.remote.example", "127.0.0.2"),
        dns::txt("s2026._domainkey.direct.example", &rsa_record),
    ]);

    // The gateway runs the accounts the operator rendered, with the Secrets' files here.
    let rendered = postern_operator::render::render(&objs.gateways[0], &objs);
    let mut accounts = rendered.config.unwrap().accounts;
    for a in &mut accounts {
        a.direct.as_mut().unwrap().private_key_file = keys[a.name.as_str()].clone();
    }
    let gw = GatewayProcess::start(&GatewayConfig::typed(|c| {
        c.accounts = accounts;
        c.relay.trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.delivery.nameservers = vec![dns_server.addr];
        c.delivery.mx_port = port;
        c.delivery.tls = TlsPolicy::NONE;
        c.delivery.retry_initial = HumanDuration::from_secs(1);
    }));
    reconcile_with(gw.admin_addr());
    let signed = status("signed");
    let dkim = signed.dkim.clone().expect("the record is in the status");
    assert_eq!(
        (dkim.name.as_str(), dkim.value.as_str()),
        ("s2026._domainkey.direct.example", rsa_record.as_str())
    );
    let (s, reason, message) = verified(&signed);
    assert_eq!((s.as_str(), reason.as_str()), ("True", "KeyPublished"), "{message}");
    let pending = status("pending");
    assert_eq!(pending.dkim.as_ref().unwrap().value, ed_record);
    let (s, reason, message) = verified(&pending);
    assert_eq!((s.as_str(), reason.as_str()), ("False", "KeyNotPublished"), "{message}");
    assert!(message.contains("s2026._domainkey.pending.example"), "{message}");
    // The keys were generated once: the second operator run found the Secrets and kept them.
    let again = rt.block_on(secrets.get("signed-dkim")).unwrap();
    assert_eq!(again.data.unwrap()["dkim.pem"].0, std::fs::read(&keys["signed"]).unwrap());

    // Mail of the verified domain leaves signed with the generated key; the other is refused.
    let send = |from: &str| {
        let mut c = postern_tests::client::Client::connect(gw.smtp());
        c.cmd("EHLO app.example");
        let text = format!(
            "From: {from}\r\nTo: u@remote.example\r\nSubject: generated key\r\nMessage-ID: <{from}>\r\n\r\nA body.\r\n"
        );
        c.send_message(from, &["u@remote.example"], &text)
    };
    assert_eq!(send("app@direct.example").code, 250);
    assert_eq!(send("app@pending.example").code, 550);
    let got = remote.wait_for(1, WAIT);
    assert!(
        postern_tests::dkim::verify_with_dns(&got[0].text(), dns_server.addr),
        "dkimpy: {}",
        got[0].text()
    );
}
