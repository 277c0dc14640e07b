//! Microsoft365 and Gmail sending accounts end to end: the consent (authorization code with
//! PKCE) against a real OAuth 2.0 server (oidc-provider) on loopback, driven like a person's
//! browser; the grant kept encrypted in the store; mail sent through stand-ins of Microsoft
//! Graph and the Gmail API that check every request against the documented format and vouch
//! for tokens with the real server; throttling (429 with Retry-After, 503) deferred and retried;
//! a forced refresh; a grant the server no longer knows (Authorized false, mail deferred with
//! a clear line); a declined consent.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use postern_api::{
    AccountType, GatewayConfig as Config, HumanDuration, OAuthAccount, OAuthGrant, OAuthSend, SendingAccount,
};
use postern_tests::client::Client;
use postern_tests::gateway::{GatewayConfig, GatewayProcess, binary};
use postern_tests::mailbox_api::MailboxApis;
use postern_tests::oauth::{self, OAuthServer};

const WAIT: Duration = Duration::from_secs(30);

fn cli(gw: &GatewayProcess, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out =
        Command::new(binary()).args(args).args(["--admin", &gw.admin_addr().to_string()]).output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The operator's `Authorized` of SendingAccounts ms and gm (Microsoft365, Gmail), reconciled
/// on kube-fake-client against this gateway's admin API: (status, reason) of each.
fn operator_authorized(gw: &GatewayProcess, public: &str) -> Vec<(String, String)> {
    use kube::api::Api;
    use postern_operator::controller::{Context, reconcile};
    use postern_operator::crd::{Gateway, MailDomain, RoutingPolicy, SendingAccount as Crd, SpamPolicy};
    use postern_operator::manifests::Objects;
    let account = |name: &str, from: &str, kind: &str, uid: u8| {
        format!(
            "apiVersion: mail.postern.dev/v1alpha1\nkind: SendingAccount\nmetadata: {{name: {name}, namespace: mail, uid: 00000000-0000-0000-0000-0000000000{uid}, generation: 1}}\nspec: {{from: '{from}', type: {kind}, oauth: {{clientId: {}}}}}\n",
            oauth::CLIENT_ID
        )
    };
    let text = format!(
        "apiVersion: mail.postern.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: edge, namespace: mail, uid: 00000000-0000-0000-0000-000000000001}}\nspec: {{hostname: gw.test, adminPublicUrl: '{public}'}}\n---\n{}---\n{}",
        account("ms", "@ms.example", "Microsoft365", 11),
        account("gm", "@gm.example", "Gmail", 12),
    );
    let mut objs = Objects::default();
    objs.add_yaml(&text, "mail").unwrap();
    postern_tests::admin::block_on(async {
        let client = kube_fake_client::ClientBuilder::new()
            .with_resource::<Gateway>()
            .with_resource::<MailDomain>()
            .with_resource::<RoutingPolicy>()
            .with_resource::<SpamPolicy>()
            .with_resource::<Crd>()
            .with_status_subresource::<Gateway>()
            .with_status_subresource::<Crd>()
            .with_object(objs.gateways[0].clone())
            .with_object(objs.accounts[0].clone())
            .with_object(objs.accounts[1].clone())
            .build()
            .await
            .unwrap();
        let mut ctx = Context::new(client.clone());
        ctx.gateway_admin = Some(gw.admin_addr());
        reconcile(Arc::new(objs.gateways[0].clone()), Arc::new(ctx)).await.unwrap();
        let mut out = Vec::new();
        for name in ["ms", "gm"] {
            let a = Api::<Crd>::namespaced(client.clone(), "mail").get(name).await.unwrap();
            let c = a.status.unwrap().base.conditions.into_iter().find(|c| c.type_ == "Authorized").unwrap();
            out.push((c.status, c.reason));
        }
        out
    })
}

fn account_state(gw: &GatewayProcess, name: &str) -> serde_json::Value {
    let (_, list, _) = cli(gw, &["accounts", "list"]);
    list.as_array().unwrap().iter().find(|a| a["name"] == name).unwrap().clone()
}

/// A deferral of the mail through `route` whose error says `what`.
fn wait_deferred(gw: &GatewayProcess, route: &str, what: &str) -> serde_json::Value {
    postern_tests::wait_for(&format!("a deferral saying {what:?}"), WAIT, || {
        gw.logs_matching("deferred")
            .into_iter()
            .find(|l| l["route"] == route && l["error"].as_str().is_some_and(|e| e.contains(what)))
    })
}

#[test]
fn oauth_accounts_send_through_the_providers_apis_once_authorized() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = postern_tests::reserve_port();
    let public = format!("http://127.0.0.1:{admin_port}");
    let server = Arc::new(OAuthServer::start(&format!("{public}/oauth/callback"), 5));
    let apis = MailboxApis::start(server.clone());
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, format!("{}\n", oauth::CLIENT_SECRET)).unwrap();
    // A provider's submission server taking XOAUTH2 (aiosmtpd; tokens checked with the server).
    let ca = postern_tests::tls::TestCa::new();
    let ca_file = ca.write_ca(dir.path());
    let submission = postern_tests::submission::SubmissionServer::start(
        "xoauth2",
        &ca.leaf(dir.path(), "provider", &["127.0.0.1"]),
        &format!("{}/token/introspection", server.issuer),
        &format!("{}:{}", oauth::CLIENT_ID, oauth::CLIENT_SECRET),
    );
    let key = dir.path().join("token-key");
    std::fs::write(&key, base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap();
    let account = |name: &str, from: &str, kind: AccountType, bcc: Option<&str>| SendingAccount {
        name: name.into(),
        from: from.into(),
        display_name: None,
        bcc: bcc.map(Into::into),
        kind,
        smtp: None,
        direct: None,
        exchange: None,
        oauth: Some(OAuthAccount {
            client_id: oauth::CLIENT_ID.into(),
            client_secret_file: Some(secret.clone()),
            tenant: None,
            authorization_url: Some(server.authorization_url()),
            token_url: Some(server.token_url()),
            api_url: Some(apis.url.clone()),
            scopes: match kind {
                AccountType::Microsoft365 => vec!["offline_access".into(), "Mail.Send".into()],
                _ => vec!["offline_access".into(), "https://www.googleapis.com/auth/gmail.send".into()],
            },
            grant: OAuthGrant::AuthorizationCode,
            send: OAuthSend::Api,
            smtp_host: None,
            smtp_username: None,
        }),
    };
    let config = GatewayConfig::typed(|c: &mut Config| {
        c.relay.trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.admin.address = format!("127.0.0.1:{admin_port}").parse().unwrap();
        c.admin.public_url = Some(public.clone());
        c.oauth.token_key_file = Some(key.clone());
        c.delivery.retry_initial = HumanDuration::from_secs(1);
        let mut app = account("app", "@app.example", AccountType::Microsoft365, None);
        if let Some(o) = app.oauth.as_mut() {
            o.grant = OAuthGrant::ClientCredentials;
            o.scopes = vec!["Mail.Send".into()];
        }
        let mut xo = account("xo", "@smtp.example", AccountType::Microsoft365, None);
        if let Some(o) = xo.oauth.as_mut() {
            o.send = OAuthSend::Smtp;
            o.smtp_host = Some(format!("127.0.0.1:{}", submission.port));
            o.smtp_username = Some("carol@smtp.example".into());
        }
        c.delivery.ca_file = Some(ca_file.clone());
        c.accounts = vec![
            account("ms", "@ms.example", AccountType::Microsoft365, Some("archive@ms.example")),
            account("gm", "@gm.example", AccountType::Gmail, None),
            app,
            xo,
        ];
    });
    let gw = GatewayProcess::start(&config);
    let send = |from: &str, rcpts: &[&str], subject: &str| {
        let mut c = Client::connect(gw.smtp());
        c.cmd("EHLO app.example");
        let text = format!(
            "From: {from}\r\nTo: u@remote.example\r\nSubject: {subject}\r\nMessage-ID: <{subject}@app.example>\r\n\r\nA body.\r\n"
        );
        c.send_message(from, rcpts, &text)
    };

    // Not authorized yet: the mail is accepted and waits, and the log says what to do.
    assert_eq!(account_state(&gw, "ms")["authorization"]["reason"], "NotAuthorized");
    assert_eq!(send("a@ms.example", &["u@remote.example", "hidden@remote.example"], "first").code, 250);
    wait_deferred(&gw, "account:ms", "postern-gateway accounts authorize ms");

    // The consent: the link the CLI prints, opened by the mailbox's owner.
    let (ok, answer, err) = cli(&gw, &["accounts", "authorize", "ms"]);
    assert!(ok, "{err}");
    let url = answer["authorizeUrl"].as_str().unwrap().to_string();
    let pairs: Vec<(String, String)> =
        url::Url::parse(&url).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let param = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert!(url.starts_with(&server.authorization_url()), "{url}");
    assert_eq!(param("code_challenge_method"), "S256");
    assert_eq!(param("code_challenge").len(), 43);
    assert_eq!(param("redirect_uri"), format!("{public}/oauth/callback"));
    let (status, page) = oauth::consent(&url, "alice", false);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("may now send"), "{page}");
    assert_eq!(oauth::consent(&url, "alice", false).0, 400, "a consent link is used once");
    let state = account_state(&gw, "ms");
    assert_eq!(state["authorization"]["authorized"], true, "{state}");

    // The waiting mail leaves through Graph as alice, every envelope recipient named.
    let sent = apis.wait_for(1, WAIT);
    assert_eq!((sent[0].api, sent[0].user.as_str()), ("graph", "alice"));
    let text = String::from_utf8_lossy(&sent[0].message).into_owned();
    assert!(text.starts_with("Bcc: hidden@remote.example,\r\n archive@ms.example\r\n"), "{text}");
    assert!(text.contains("Subject: first\r\n"), "{text}");
    gw.wait_log("delivered", WAIT);

    // Gmail, granted by bob, started with the console's Authorize button: the button's POST
    // redirects the browser to the provider.
    let console = postern_tests::console::Console::sign_in(gw.admin_addr(), None);
    let page = console.get("/console/accounts");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("action=\"/console/accounts/gm/authorize\""), "{}", page.body);
    let stale = console.post("/console/accounts/gm/authorize", "csrf=forged");
    assert_eq!(stale.status, 403, "a form without the session's CSRF token");
    let button = console.post("/console/accounts/gm/authorize", &format!("csrf={}", page.csrf()));
    assert_eq!(button.status, 303, "{}", button.body);
    let gm_url = button.header("location").unwrap().to_string();
    assert!(gm_url.starts_with(&server.authorization_url()), "{gm_url}");
    assert!(gm_url.contains("access_type=offline"), "{gm_url}");
    assert_eq!(oauth::consent(&gm_url, "bob", false).0, 200);
    assert_eq!(send("b@gm.example", &["u@remote.example"], "gmail").code, 250);
    let sent = apis.wait_for(2, WAIT);
    assert_eq!((sent[1].api, sent[1].user.as_str()), ("gmail", "bob"));
    let authorized = |s: &str, r: &str| (s.to_string(), r.to_string());
    assert_eq!(
        operator_authorized(&gw, &public),
        [authorized("True", "Authorized"), authorized("True", "Authorized")],
        "the operator's Authorized follows the gateways' grants"
    );
    assert!(String::from_utf8_lossy(&sent[1].message).contains("Subject: gmail\r\n"));

    // SMTP with XOAUTH2: the same consent, then the provider's submission server (STARTTLS,
    // its certificate verified) takes the token as the login of the mailbox that granted it.
    let (_, answer, _) = cli(&gw, &["accounts", "authorize", "xo"]);
    assert_eq!(oauth::consent(answer["authorizeUrl"].as_str().unwrap(), "carol@smtp.example", false).0, 200);
    assert_eq!(send("x@smtp.example", &["u@remote.example", "hidden@remote.example"], "xoauth2").code, 250);
    let got = submission.wait_for(1, WAIT);
    assert_eq!(got[0]["login"], "carol@smtp.example", "{}", got[0]);
    assert_eq!(got[0]["tls"], true);
    assert_eq!(got[0]["rcpt_tos"], serde_json::json!(["u@remote.example", "hidden@remote.example"]));

    // App-only (client credentials): no consent; the mail goes to the sender's own mailbox.
    assert_eq!(account_state(&gw, "app")["authorization"]["reason"], "NotAuthorized");
    assert_eq!(send("notices@app.example", &["u@remote.example"], "app-only").code, 250);
    let sent = apis.wait_for(3, WAIT);
    assert_eq!((sent[2].api, sent[2].user.as_str()), ("graph", "notices@app.example"));
    assert_eq!(account_state(&gw, "app")["authorization"]["authorized"], true);

    // Throttled, then unavailable: deferred as long as Retry-After says, then delivered.
    apis.script(&[(429, Some(3)), (503, None)]);
    assert_eq!(send("a@ms.example", &["u@remote.example"], "throttled").code, 250);
    let throttled = wait_deferred(&gw, "account:ms", "HTTP 429");
    assert!(throttled["error"].as_str().unwrap().contains("Retry-After: 3"), "{throttled}");
    assert_eq!(throttled["retry_in"], "3s", "the next attempt waits as long as Graph asked: {throttled}");
    wait_deferred(&gw, "account:ms", "HTTP 503");
    let sent = apis.wait_for(4, WAIT);
    assert!(String::from_utf8_lossy(&sent[3].message).contains("Subject: throttled\r\n"));

    // The API refuses the token (401, e.g. revoked sessions): one fresh token, one more try.
    let refreshed_before = gw.logs_matching("sending account token refreshed").len();
    apis.script(&[(401, None)]);
    assert_eq!(send("a@ms.example", &["u@remote.example"], "after-401").code, 250);
    let sent = apis.wait_for(5, WAIT);
    assert!(String::from_utf8_lossy(&sent[4].message).contains("Subject: after-401\r\n"));
    // (At least one: the token may also have been due for its routine refresh.)
    assert!(gw.logs_matching("sending account token refreshed").len() > refreshed_before);
    assert!(
        gw.logs_matching("deferred")
            .iter()
            .all(|l| !l["error"].as_str().unwrap_or_default().contains("HTTP 401")),
        "delivered in the same attempt"
    );

    // "Test connection" refreshes the token; the next mail carries the new one.
    let before = apis.tokens().last().cloned().unwrap();
    let (ok, test, err) = cli(&gw, &["accounts", "test", "ms"]);
    assert!(ok && test["detail"] == "token refreshed", "{test} {err}");
    assert_eq!(send("a@ms.example", &["u@remote.example"], "refreshed").code, 250);
    apis.wait_for(6, WAIT);
    assert_ne!(apis.tokens().last().unwrap(), &before, "a new access token after the refresh");

    // The server no longer knows the grant: the next refresh fails, Authorized turns false,
    // and mail waits with a line saying to authorize again.
    server.restart_forgetting_grants();
    let (ok, test, _) = cli(&gw, &["accounts", "test", "ms"]);
    assert!(!ok, "{test}");
    let state = account_state(&gw, "ms");
    assert_eq!(state["authorization"]["reason"], "GrantRevoked", "{state}");
    assert_eq!(send("a@ms.example", &["u@remote.example"], "revoked").code, 250);
    wait_deferred(&gw, "account:ms", "authorize it again");

    // A declined consent is recorded as such.
    let (_, answer, _) = cli(&gw, &["accounts", "authorize", "gm"]);
    let (status, page) = oauth::consent(answer["authorizeUrl"].as_str().unwrap(), "bob", true);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("was not authorized"), "{page}");
    assert_eq!(account_state(&gw, "gm")["authorization"]["reason"], "ConsentDenied");
    assert_eq!(
        operator_authorized(&gw, &public),
        [authorized("False", "GrantRevoked"), authorized("False", "ConsentDenied")]
    );

    assert!(apis.violations().is_empty(), "{:?}", apis.violations());
    // No token in the store in the clear (the embedded store's file).
    let store_bytes: Vec<u8> = walk(&dir_of_store(&gw));
    for t in apis.tokens() {
        assert!(!contains(&store_bytes, t.as_bytes()), "an access token is stored in the clear");
    }
}

fn dir_of_store(gw: &GatewayProcess) -> std::path::PathBuf {
    gw.config_path.parent().unwrap().join("store")
}

/// Every byte of the files under `dir`.
fn walk(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.extend(b);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
