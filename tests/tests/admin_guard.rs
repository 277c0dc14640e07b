//! The admin API's guard, end to end on the real binary: bearer tokens from `admin.tokenFile`
//! (rotated without a restart), the Host check against DNS rebinding, cross-origin changes
//! refused, and the CLI carrying a token; probes and metrics stay open.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use postern_tests::gateway::{GatewayConfig, GatewayProcess, binary};

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
    assert_eq!(gw.metric("postern_admin_unauthorized_total"), Some(3.0));

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
