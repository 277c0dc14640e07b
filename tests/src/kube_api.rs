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
//!
//! For `kubectl postern` it also plays the API server's front: a user's bearer token is
//! authenticated from the same table, Gateways are listed (`gateway`), and the service proxy
//! (`/api/v1/namespaces/NS/services/[http:]NAME[:PORT]/proxy/...`) checks the user's verb on
//! `services/proxy` (GET: get, POST: create, DELETE: delete, as the API server maps them; grant
//! it with `grant(user, ns, "services/proxy", verb)`), then forwards the request to the
//! Service's address (`service`) without `Authorization`, as the real one does.

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
    /// (namespace, Service name, port name) -> where its endpoints are.
    services: Vec<(String, String, String, SocketAddr)>,
    /// (namespace, name) of Gateways.
    gateways: Vec<(String, String)>,
}

#[derive(Default)]
pub struct Recorded {
    /// `METHOD PATH as USER` of every request the service proxy forwarded.
    pub proxied: Vec<String>,
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

    /// `admin.kubernetes` of a gateway this stand-in reviews for, in namespace `mail`: the
    /// gateway's own token (`caller_token` of `start`) is written to `dir`, `ca_file` is the
    /// test CA that signed this server's certificate.
    pub fn admin_auth(&self, dir: &Path, caller_token: &str, ca_file: &Path) -> postern_api::KubernetesAuth {
        let token_file = dir.join("gateway-sa-token");
        std::fs::write(&token_file, format!("{caller_token}\n")).unwrap();
        postern_api::KubernetesAuth {
            namespace: "mail".into(),
            api_server: Some(self.url()),
            token_file,
            ca_file: ca_file.to_path_buf(),
        }
    }

    /// The Service `namespace/name`'s port `port` is served at `addr` (for the service proxy).
    pub fn service(&self, namespace: &str, name: &str, port: &str, addr: SocketAddr) {
        self.rbac.lock().unwrap().services.push((namespace.into(), name.into(), port.into(), addr));
    }

    /// A Gateway object `namespace/name` exists (for listing).
    pub fn gateway(&self, namespace: &str, name: &str) {
        self.rbac.lock().unwrap().gateways.push((namespace.into(), name.into()));
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
    let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
    if path.starts_with("/api/v1/namespaces/") || path.starts_with("/apis/mail.postern.dev/") {
        let (status, content_type, answer) = front(&request_line, &head, &body, rbac, recorded);
        let _ = write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            answer.len()
        );
        let _ = stream.write_all(&answer);
        let _ = stream.flush();
        stream.conn.send_close_notify();
        let _ = stream.flush();
        return;
    }
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

/// An API Status object (what the API server answers errors with).
fn status_object(code: u16, reason: &str, message: &str) -> (u16, String, Vec<u8>) {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (code, "application/json".into(), status.to_string().into_bytes())
}

/// The user's own requests: the Gateway list and the service proxy.
fn front(
    request_line: &str,
    head: &[String],
    body: &[u8],
    rbac: &Mutex<Rbac>,
    recorded: &Mutex<Recorded>,
) -> (u16, String, Vec<u8>) {
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let header = |name: &str| {
        head.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let user = {
        let rbac = rbac.lock().unwrap();
        let token = header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string));
        rbac.users.iter().find(|(t, ..)| Some(t) == token.as_ref()).map(|(_, u, _)| u.clone())
    };
    let Some(user) = user else { return status_object(401, "Unauthorized", "Unauthorized") };
    let allowed = |ns: &str, resource: &str, verb: &str| {
        rbac.lock()
            .unwrap()
            .grants
            .iter()
            .any(|(u, n, r, v)| *u == user && n == ns && r == resource && v == verb)
    };
    // GET /apis/mail.postern.dev/v1alpha1/namespaces/NS/gateways
    if let Some(ns) = target
        .strip_prefix("/apis/mail.postern.dev/v1alpha1/namespaces/")
        .and_then(|rest| rest.strip_suffix("/gateways"))
    {
        if method != "GET" {
            return status_object(405, "MethodNotAllowed", "only GET here");
        }
        if !allowed(ns, "gateways", "list") {
            let m = format!(
                "gateways.mail.postern.dev is forbidden: User \"{user}\" cannot list resource \"gateways\" in API group \"mail.postern.dev\" in the namespace \"{ns}\""
            );
            return status_object(403, "Forbidden", &m);
        }
        let items: Vec<Value> = rbac
            .lock()
            .unwrap()
            .gateways
            .iter()
            .filter(|(n, _)| n == ns)
            .map(|(n, name)| json!({"apiVersion": "mail.postern.dev/v1alpha1", "kind": "Gateway", "metadata": {"name": name, "namespace": n}}))
            .collect();
        let list = json!({"apiVersion": "mail.postern.dev/v1alpha1", "kind": "GatewayList", "metadata": {}, "items": items});
        return (200, "application/json".into(), list.to_string().into_bytes());
    }
    // /api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy[/PATH]
    let Some(rest) = target.strip_prefix("/api/v1/namespaces/") else {
        return status_object(404, "NotFound", "the server could not find the requested resource");
    };
    let segments: Vec<&str> = rest.splitn(4, '/').collect();
    let (ns, service_ref, tail) = match segments.as_slice() {
        [ns, "services", service, tail] if tail.starts_with("proxy") => {
            (*ns, *service, &tail["proxy".len()..])
        }
        _ => return status_object(404, "NotFound", "the server could not find the requested resource"),
    };
    let mut fields: Vec<&str> = service_ref.split(':').collect();
    if fields.len() == 3 && !matches!(fields[0], "http" | "https") {
        return status_object(400, "BadRequest", "bad scheme in the service reference");
    }
    if fields.len() == 3 {
        fields.remove(0);
    }
    let (name, port) = (fields[0], fields.get(1).copied().unwrap_or(""));
    let verb = match method {
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => return status_object(405, "MethodNotAllowed", "method"),
    };
    if !allowed(ns, "services/proxy", verb) {
        let m = format!(
            "services \"{name}\" is forbidden: User \"{user}\" cannot {verb} resource \"services/proxy\" in API group \"\" in the namespace \"{ns}\""
        );
        return status_object(403, "Forbidden", &m);
    }
    let backend = rbac
        .lock()
        .unwrap()
        .services
        .iter()
        .find(|(n, s, p, _)| n == ns && s == name && p == port)
        .map(|x| x.3);
    let Some(backend) = backend else {
        return status_object(
            503,
            "ServiceUnavailable",
            &format!("no endpoints available for service \"{name}\""),
        );
    };
    let path = if tail.is_empty() { "/" } else { tail };
    // Forwarded as the API server does: the user's Authorization stays behind.
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {backend}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for line in head.iter().skip(1) {
        let Some((k, v)) = line.split_once(':') else { continue };
        let k = k.trim();
        if ["authorization", "host", "connection", "content-length", "transfer-encoding"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(&format!("{k}: {}\r\n", v.trim()));
    }
    out.push_str("\r\n");
    recorded.lock().unwrap().proxied.push(format!("{method} {path} as {user}"));
    let Ok(mut upstream) = TcpStream::connect(backend) else {
        return status_object(503, "ServiceUnavailable", "error trying to reach service");
    };
    let _ = upstream.write_all(out.as_bytes());
    let _ = upstream.write_all(body);
    let mut raw = Vec::new();
    let _ = upstream.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |p| p + 4);
    let (head_bytes, mut answer) =
        (String::from_utf8_lossy(&raw[..split]).to_string(), raw[split..].to_vec());
    let status = head_bytes.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(502);
    let upstream_header = |name: &str| {
        head_bytes.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    if upstream_header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        answer = dechunk(&answer);
    }
    (status, upstream_header("content-type").unwrap_or_else(|| "text/plain".into()), answer)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..end]).split(';').next().unwrap_or("0").trim(),
            16,
        )
        .unwrap_or(0);
        data = &data[end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
    out
}
