//! The admin API's guard, end to end on the real binary: bearer tokens from `admin.tokenFile`
//! (rotated without a restart), the Host check against DNS rebinding, cross-origin changes
//! refused, and the CLI carrying a token; probes and metrics stay open.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use postern_tests::gateway::{GatewayConfig, GatewayProcess, binary};
use postern_tests::kube_api::KubeApi;

const WAIT: Duration = Duration::from_secs(20);

/// One HTTP/1.1 request with exactly these headers (Host included); returns the status and
/// the whole answer.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    s.write_all(text.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

#[test]
fn the_admin_api_wants_a_token_its_own_host_and_no_cross_origin_changes() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-tokens");
    std::fs::write(&tokens, "# reviewers' tokens\nt0ken-one\n").unwrap();
    let config = GatewayConfig::typed(|c| {
        c.admin.token_file = Some(tokens.clone());
        c.admin.hosts = vec!["gw-admin.mail.svc".into()];
    });
    let gw = GatewayProcess::start(&config);
    let admin = gw.admin_addr();
    let host = admin.to_string();
    let get = |path: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("Host", host.as_str())];
        headers.extend_from_slice(extra);
        request(admin, "GET", path, &headers)
    };

    // Probes and metrics: open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(path, &[]).0, 200, "{path}");
    }
    // The quarantine: a token from the file, nothing else.
    let (status, answer) = get("/api/v1/quarantine", &[]);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("www-authenticate: bearer"), "{answer}");
    assert_eq!(get("/api/v1/quarantine", &[("Authorization", "Bearer t0ken-on")]).0, 401);
    assert_eq!(get("/api/v1/quarantine", &[("Authorization", "Basic dDBrZW4tb25l")]).0, 401);
    assert_eq!(get("/api/v1/quarantine", &[("Authorization", "Bearer t0ken-one")]).0, 200);
    assert_eq!(get("/api/v1/queue", &[("Authorization", "bearer t0ken-one")]).0, 200);

    // Another Host (a rebinding page's own name) is refused, token or not; a listed one is not.
    let (status, _) = request(
        admin,
        "GET",
        "/api/v1/quarantine",
        &[("Host", "attacker.example:8025"), ("Authorization", "Bearer t0ken-one")],
    );
    assert_eq!(status, 421);
    let listed = request(
        admin,
        "GET",
        "/api/v1/quarantine",
        &[("Host", "gw-admin.mail.svc:8025"), ("Authorization", "Bearer t0ken-one")],
    );
    assert_eq!(listed.0, 200);

    // A change from another origin is refused; the same request from no browser passes the
    // guard (and finds no such entry).
    let release = |extra: &[(&str, &str)]| {
        let mut headers = vec![("Host", host.as_str()), ("Authorization", "Bearer t0ken-one")];
        headers.extend_from_slice(extra);
        request(admin, "POST", "/api/v1/quarantine/nope/release", &headers).0
    };
    assert_eq!(release(&[("Origin", "https://attacker.example")]), 403);
    assert_eq!(release(&[("Sec-Fetch-Site", "cross-site")]), 403);
    assert_eq!(release(&[]), 404);
    let refused = |reason: &str| gw.metric(&format!("postern_admin_refused_total{{reason=\"{reason}\"}}"));
    assert_eq!(refused("unauthenticated"), Some(3.0));
    assert_eq!(refused("host"), Some(1.0));
    assert_eq!(refused("cross_origin"), Some(2.0));

    // The CLI sends the token it is given; without one it reports the refusal.
    let cli = |env: Option<(&str, &str)>| {
        let mut cmd = Command::new(binary());
        cmd.args(["quarantine", "list", "--admin", &host]).env_remove("POSTERN_ADMIN_TOKEN");
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let refused = cli(None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"), "{refused:?}");
    assert!(cli(Some(("POSTERN_ADMIN_TOKEN", "t0ken-one"))).status.success());

    // Rotation: a new file takes effect without a restart; the old token stops working.
    let loads = gw.logs_matching("admin token file loaded").len();
    std::fs::write(&tokens, "t0ken-two-longer\n").unwrap();
    postern_tests::wait_for("the token file re-read", WAIT, || {
        (gw.logs_matching("admin token file loaded").len() > loads).then_some(())
    });
    assert_eq!(get("/api/v1/quarantine", &[("Authorization", "Bearer t0ken-one")]).0, 401);
    assert_eq!(get("/api/v1/quarantine", &[("Authorization", "Bearer t0ken-two-longer")]).0, 200);
    let token_file = dir.path().join("cli-token");
    std::fs::write(&token_file, "t0ken-two-longer\n").unwrap();
    assert!(cli(Some(("POSTERN_ADMIN_TOKEN_FILE", token_file.to_str().unwrap()))).status.success());
}

/// In Kubernetes, RBAC decides: a token that is not the file's goes to the API server in a
/// TokenReview, then a SubjectAccessReview asks for the request's verb on its resource of
/// `mail.postern.dev` in the Gateway's namespace. The stand-in API server checks every request
/// against the documented shapes; the bodies are also validated with the real OpenAPI schemas.
#[test]
fn kubernetes_rbac_decides_who_may_use_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let ca = postern_tests::tls::TestCa::new();
    let ca_file = ca.write_ca(dir.path());
    let api = KubeApi::start(&ca.leaf(dir.path(), "apiserver", &["127.0.0.1"]), "gateway-sa-token");
    api.user("alice-token", "alice@example.com", &["reviewers", "system:authenticated"]);
    api.user("bob-token", "bob@example.com", &["system:authenticated"]);
    api.user("operator-token", "system:serviceaccount:postern:postern-operator", &["system:serviceaccounts"]);
    for verb in ["list", "get", "release", "delete"] {
        api.grant("alice@example.com", "mail", "quarantine", verb);
    }
    api.grant("bob@example.com", "mail", "quarantine", "list");
    api.grant("bob@example.com", "elsewhere", "quarantine", "get");
    api.grant("system:serviceaccount:postern:postern-operator", "mail", "verifications", "list");

    let own_token = dir.path().join("sa-token");
    std::fs::write(&own_token, "gateway-sa-token\n").unwrap();
    let file_tokens = dir.path().join("admin-tokens");
    std::fs::write(&file_tokens, "local-break-glass-token\n").unwrap();
    let (url, own, ca_path, files) = (api.url(), own_token.clone(), ca_file.clone(), file_tokens.clone());
    let config = GatewayConfig::typed(move |c| {
        c.admin.token_file = Some(files);
        c.admin.kubernetes = Some(postern_api::KubernetesAuth {
            namespace: "mail".into(),
            api_server: Some(url),
            token_file: own,
            ca_file: ca_path,
        });
    })
    .with_text_logs();
    let gw = GatewayProcess::start(&config);
    let admin = gw.admin_addr();
    let host = admin.to_string();
    let call = |method: &str, path: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Host", host.as_str())];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        request(admin, method, path, &headers)
    };

    // No token, or one the API server does not know: 401.
    assert_eq!(call("GET", "/api/v1/quarantine", None).0, 401);
    assert_eq!(call("GET", "/api/v1/quarantine", Some("stolen-token")).0, 401);
    // Probes stay open.
    assert_eq!(call("GET", "/metrics", None).0, 200);

    // alice's Role: everything on quarantine in namespace mail.
    assert_eq!(call("GET", "/api/v1/quarantine", Some("alice-token")).0, 200);
    assert_eq!(call("GET", "/api/v1/quarantine/0123/raw", Some("alice-token")).0, 404, "past the guard");
    assert_eq!(call("POST", "/api/v1/quarantine/0123/release?by=mallory", Some("alice-token")).0, 404);
    let acted = gw.wait_log("admin request by a Kubernetes user", WAIT);
    assert_eq!(acted["actor"], "alice@example.com", "{acted}");
    assert_eq!(acted["verb"], "release", "{acted}");
    // ... but not the queue.
    assert_eq!(call("GET", "/api/v1/queue", Some("alice-token")).0, 403);

    // bob may list here, and read only in another namespace: reading here is forbidden, and
    // the answer says who, what and where.
    assert_eq!(call("GET", "/api/v1/quarantine", Some("bob-token")).0, 200);
    let (status, answer) = call("GET", "/api/v1/quarantine/0123", Some("bob-token"));
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer.contains("bob@example.com may not get quarantine.mail.postern.dev in namespace mail"),
        "{answer}"
    );
    assert_eq!(call("DELETE", "/api/v1/quarantine/0123", Some("bob-token")).0, 403);

    // The operator reads verification states with its service account's token.
    assert_eq!(call("GET", "/api/v1/verifications", Some("operator-token")).0, 200);
    // The file's token needs no review.
    let reviews_before = api.recorded().token_reviews.len();
    assert_eq!(call("GET", "/api/v1/queue", Some("local-break-glass-token")).0, 200);

    // Answers are remembered: alice's list again costs no review.
    let access_before = api.recorded().access_reviews.len();
    assert_eq!(call("GET", "/api/v1/quarantine", Some("alice-token")).0, 200);
    assert_eq!(api.recorded().token_reviews.len(), reviews_before);
    assert_eq!(api.recorded().access_reviews.len(), access_before);

    // The gateway cannot ask (its own token is gone): refused, 503, nobody let in.
    std::fs::remove_file(&own_token).unwrap();
    api.user("carol-token", "carol@example.com", &[]);
    assert_eq!(call("GET", "/api/v1/quarantine", Some("carol-token")).0, 503);

    let refused = |reason: &str| gw.metric(&format!("postern_admin_refused_total{{reason=\"{reason}\"}}"));
    assert_eq!(refused("unauthenticated"), Some(2.0));
    assert_eq!(refused("forbidden"), Some(3.0));
    assert_eq!(refused("review_failed"), Some(1.0));

    // Every review was a documented object: the stand-in's own checks ...
    let recorded = api.recorded();
    assert!(recorded.violations.is_empty(), "{:?}", recorded.violations);
    let sar = recorded.access_reviews.iter().find(|r| r["spec"]["user"] == "bob@example.com").unwrap();
    assert_eq!(sar["spec"]["resourceAttributes"]["namespace"], "mail");
    assert_eq!(sar["spec"]["resourceAttributes"]["group"], "mail.postern.dev");
    assert_eq!(sar["spec"]["uid"], "uid-bob@example.com");
    drop(recorded);
    // ... and the Kubernetes OpenAPI schemas (strict: no unknown field).
    let bodies = dir.path().join("reviews.yaml");
    api.write_bodies(&bodies);
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .arg(&bodies)
        .output()
        .expect("python3 with kubernetes-validate (scripts/install-test-deps.sh)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("ERROR"), "{text}");
}

/// The MTA-STS policy file (RFC 8461) is public, for `mta-sts.<served domain>` only, and is
/// the text whose id the operator publishes.
#[test]
fn the_mta_sts_policy_is_served_for_served_domains_only() {
    let mut policy = None;
    let mut txt = String::new();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "t0ken\n").unwrap();
    let config = GatewayConfig::typed(|c| {
        c.domains.push(postern_api::MailDomainConfig::new(
            "example.com",
            postern_api::Destination::hosts(&["127.0.0.1:9"], postern_api::TlsPolicy::NONE),
        ));
        c.mta_sts = Some(postern_api::MtaSts {
            mode: postern_api::MtaStsMode::Enforce,
            max_age: postern_api::HumanDuration::from_secs(86400),
            mx: vec![],
        });
        // The API is closed; the policy is public all the same.
        c.admin.token_file = Some(tokens.clone());
        policy = c.mta_sts.clone().map(|p| p.policy(&c.hostname));
        txt = c.mta_sts.as_ref().map(|p| p.txt_record(&c.hostname)).unwrap();
    });
    let gw = GatewayProcess::start(&config);
    let admin = gw.admin_addr();
    let get = |host: &str| request(admin, "GET", "/.well-known/mta-sts.txt", &[("Host", host)]);
    let (status, answer) = get("MTA-STS.example.com:443");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("content-type: text/plain"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body, policy.unwrap());
    assert!(body.starts_with("version: STSv1\r\nmode: enforce\r\nmx: "), "{body}");
    assert_eq!(get("mta-sts.other.example").0, 404, "not a served domain");
    assert_eq!(get("example.com").0, 404);
    // The record to publish by hand (standalone) names the id of the text served.
    let out = Command::new(binary()).arg("mta-sts-records").arg(&gw.config_path).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("_mta-sts.example.com. IN TXT \"{txt}\"\n"));
}
