//! A stand-in for the one part of a Kubernetes API server the gateway calls: TokenReview and
//! SubjectAccessReview (no API server can run here). HTTPS on loopback with a test CA. Every
//! request is checked against the documented `authentication.k8s.io/v1` and
//! `authorization.k8s.io/v1` shapes (method, path, the caller's bearer token, JSON content,
//! apiVersion/kind, the fields a spec may have); a request that does not match is answered
//! `400` and kept in `violations`, so a test fails on it. The bodies are kept for the test to
//! check further (e.g. with the real OpenAPI schemas).
//!
//! RBAC is a table: `grant(user, resource, verb)` in one namespace of the `mail.postern.dev`
//! group; everything else is denied.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::tls::{LeafFiles, server_config};

#[derive(Default)]
struct Rbac {
    /// token -> (username, groups)
    users: Vec<(String, String, Vec<String>)>,
    /// (username, namespace, resource, verb)
    grants: Vec<(String, String, String, String)>,
}

#[derive(Default)]
pub struct Recorded {
    pub token_reviews: Vec<Value>,
    pub access_reviews: Vec<Value>,
    pub violations: Vec<String>,
}

pub struct KubeApi {
    addr: SocketAddr,
    rbac: Arc<Mutex<Rbac>>,
    recorded: Arc<Mutex<Recorded>>,
}

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
const GROUP: &str = "mail.postern.dev";

impl KubeApi {
    /// Serves with `leaf`'s certificate; only `caller_token` may ask for reviews.
    pub fn start(leaf: &LeafFiles, caller_token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = server_config(leaf);
        let rbac = Arc::new(Mutex::new(Rbac::default()));
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let (r, rec, caller) = (rbac.clone(), recorded.clone(), caller_token.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (tls, r, rec, caller) = (tls.clone(), r.clone(), rec.clone(), caller.clone());
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(tls) else { return };
                    serve(rustls::StreamOwned::new(conn, stream), &r, &rec, &caller);
                });
            }
        });
        Self { addr, rbac, recorded }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `token` authenticates as `user` in `groups`.
    pub fn user(&self, token: &str, user: &str, groups: &[&str]) {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        self.rbac.lock().unwrap().users.push((token.into(), user.into(), groups));
    }

    /// `user` may `verb` `resource` (of mail.postern.dev) in `namespace`.
    pub fn grant(&self, user: &str, namespace: &str, resource: &str, verb: &str) {
        self.rbac.lock().unwrap().grants.push((user.into(), namespace.into(), resource.into(), verb.into()));
    }

    pub fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap()
    }

    /// Writes every review body received as one YAML stream (for kubernetes-validate).
    pub fn write_bodies(&self, path: &Path) {
        let r = self.recorded();
        let docs: Vec<String> = r
            .token_reviews
            .iter()
            .chain(&r.access_reviews)
            .map(|v| serde_yaml::to_string(v).unwrap())
            .collect();
        std::fs::write(path, docs.join("---\n")).unwrap();
    }
}

/// One request per connection (answered with `Connection: close`).
fn serve(
    mut stream: rustls::StreamOwned<rustls::ServerConnection, TcpStream>,
    rbac: &Mutex<Rbac>,
    recorded: &Mutex<Recorded>,
    caller: &str,
) {
    let mut reader = BufReader::new(&mut stream);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => head.push(line.trim_end().to_string()),
        }
    }
    let header = |name: &str| {
        head.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length.min(1 << 20)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request_line = head.first().cloned().unwrap_or_default();
    let (status, answer) =
        match check(&request_line, &header("authorization"), &header("content-type"), &body, caller) {
            Err(violation) => {
                recorded.lock().unwrap().violations.push(violation.clone());
                (
                    400,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": violation}),
                )
            }
            Ok((path, review)) => (201, answer(&path, review, rbac, recorded)),
        };
    let text = answer.to_string();
    let reason = if status == 201 { "Created" } else { "Bad Request" };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.flush();
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

/// The request as the API documents it, or what is wrong with it.
fn check(
    request_line: &str,
    authorization: &Option<String>,
    content_type: &Option<String>,
    body: &[u8],
    caller: &str,
) -> Result<(String, Value), String> {
    let mut parts = request_line.split(' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default().to_string());
    if method != "POST" || (path != TOKEN_REVIEWS && path != ACCESS_REVIEWS) {
        return Err(format!("unexpected request {request_line:?}"));
    }
    if authorization.as_deref() != Some(&format!("Bearer {caller}")) {
        return Err(format!("{path}: the caller's own bearer token is missing ({authorization:?})"));
    }
    if !content_type.as_deref().is_some_and(|t| t.starts_with("application/json")) {
        return Err(format!("{path}: Content-Type {content_type:?} is not application/json"));
    }
    let review: Value = serde_json::from_slice(body).map_err(|e| format!("{path}: body is not JSON: {e}"))?;
    let (api_version, kind, spec_fields): (_, _, &[&str]) = if path == TOKEN_REVIEWS {
        ("authentication.k8s.io/v1", "TokenReview", &["token", "audiences"])
    } else {
        (
            "authorization.k8s.io/v1",
            "SubjectAccessReview",
            &["user", "uid", "groups", "extra", "resourceAttributes", "nonResourceAttributes"],
        )
    };
    if review["apiVersion"] != api_version || review["kind"] != kind {
        return Err(format!("{path}: apiVersion/kind {} {}", review["apiVersion"], review["kind"]));
    }
    let only = |v: &Value, allowed: &[&str], what: &str| -> Result<(), String> {
        let o = v.as_object().ok_or(format!("{what} is not an object"))?;
        match o.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(format!("{what}.{k} is not a field of {kind}")),
            None => Ok(()),
        }
    };
    only(&review, &["apiVersion", "kind", "metadata", "spec"], kind)?;
    only(&review["spec"], spec_fields, "spec")?;
    if path == TOKEN_REVIEWS {
        if review["spec"]["token"].as_str().is_none_or(str::is_empty) {
            return Err("TokenReview spec.token is empty".into());
        }
    } else {
        let attrs = &review["spec"]["resourceAttributes"];
        only(
            attrs,
            &[
                "namespace",
                "verb",
                "group",
                "version",
                "resource",
                "subresource",
                "name",
                "fieldSelector",
                "labelSelector",
            ],
            "spec.resourceAttributes",
        )?;
        if review["spec"]["user"].as_str().is_none_or(str::is_empty) {
            return Err("SubjectAccessReview spec.user is empty".into());
        }
        if !review["spec"]["groups"].is_null() && !review["spec"]["groups"].is_array() {
            return Err("SubjectAccessReview spec.groups is not a list".into());
        }
    }
    Ok((path, review))
}

fn answer(path: &str, mut review: Value, rbac: &Mutex<Rbac>, recorded: &Mutex<Recorded>) -> Value {
    let rbac = rbac.lock().unwrap();
    let status = if path == TOKEN_REVIEWS {
        recorded.lock().unwrap().token_reviews.push(review.clone());
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        match rbac.users.iter().find(|(t, ..)| t == token) {
            Some((_, user, groups)) => json!({"authenticated": true,
                "user": {"username": user, "uid": format!("uid-{user}"), "groups": groups}}),
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        }
    } else {
        recorded.lock().unwrap().access_reviews.push(review.clone());
        let spec = &review["spec"];
        let a = &spec["resourceAttributes"];
        let user = spec["user"].as_str().unwrap_or_default();
        let allowed = a["group"] == GROUP
            && rbac.grants.iter().any(|(u, ns, res, verb)| {
                u == user
                    && a["namespace"] == ns.as_str()
                    && a["resource"] == res.as_str()
                    && a["verb"] == verb.as_str()
            });
        if allowed {
            json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"reviewers\""})
        } else {
            json!({"allowed": false})
        }
    };
    review["status"] = status;
    review
}
