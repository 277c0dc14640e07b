//! A real OAuth 2.0 authorization server on loopback (npm `oidc-provider`, run from
//! `tests/peers/oauth/server.mjs`; installed by scripts/install-test-deps.sh), and a person's
//! browser on its consent pages (`tests/peers/oauth/consent.py`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const CLIENT_ID: &str = "postern-test";
pub const CLIENT_SECRET: &str = "client-s3cret";

pub struct OAuthServer {
    child: std::sync::Mutex<Child>,
    port: u16,
    redirect_uri: String,
    access_ttl: u32,
    pub issuer: String,
}

impl OAuthServer {
    /// One confidential client that may send the browser to `redirect_uri`; access tokens live
    /// `access_ttl` seconds.
    pub fn start(redirect_uri: &str, access_ttl: u32) -> Self {
        // This crate's HTTP clients (introspection, the stand-ins) use rustls on ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = crate::reserve_port();
        let (child, issuer) = Self::spawn(port, redirect_uri, access_ttl);
        Self {
            child: std::sync::Mutex::new(child),
            port,
            redirect_uri: redirect_uri.into(),
            access_ttl,
            issuer,
        }
    }

    /// A new server at the same address that knows none of the old one's grants: to whoever
    /// holds one, as if its owner had revoked it.
    pub fn restart_forgetting_grants(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        *child = Self::spawn(self.port, &self.redirect_uri, self.access_ttl).0;
    }

    fn spawn(port: u16, redirect_uri: &str, access_ttl: u32) -> (Child, String) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/oauth");
        let mut child = Command::new("node")
            .arg(dir.join("server.mjs"))
            .args([&port.to_string(), CLIENT_ID, CLIENT_SECRET, redirect_uri, &access_ttl.to_string()])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node with oidc-provider (scripts/install-test-deps.sh)");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // Its later notices are read and dropped, so it never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let issuer =
            line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("oidc-provider: {line:?}"));
        (child, issuer.to_string())
    }

    pub fn authorization_url(&self) -> String {
        format!("{}/auth", self.issuer)
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// What the server says of `token` (RFC 7662 introspection, as the client).
    pub async fn introspect(&self, token: &str) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(format!("{}/token/introspection", self.issuer))
            .form(&[("token", token), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A person opens `authorize_url`, signs in as `user` and grants (or, `deny`, declines) the
/// consent; the browser follows the provider back to the gateway's callback. The callback's
/// (status, page).
pub fn consent(authorize_url: &str, user: &str, deny: bool) -> (u16, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/oauth/consent.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args([authorize_url, user]);
    if deny {
        cmd.arg("deny");
    }
    let out = cmd.output().expect("python3 with requests");
    assert!(out.status.success(), "consent.py: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, page) = text.split_once('\n').unwrap_or((&text, ""));
    (status.trim().parse().unwrap(), page.to_string())
}
