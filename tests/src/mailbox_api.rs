//! Stand-ins for Microsoft Graph and the Gmail API on loopback (they cannot run here). Each
//! request is checked against the documented format before it is accepted: the method and
//! path, the content type, the bearer token (introspected at the tests' real authorization
//! server: active, with the API's scope), and the body (Graph `sendMail` with MIME: base64 of
//! the message, `text/plain`; Gmail `users.messages.send`: JSON `{"raw": base64url}`). They
//! answer as the documentation shows: Graph 202 with no body, Gmail 200 with the message's
//! id; and the documented errors when told to (429 with Retry-After, 503), or 401 for a
//! token the server does not vouch for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;

use crate::oauth::OAuthServer;

/// One accepted message.
#[derive(Clone, Debug)]
pub struct Sent {
    /// "graph" or "gmail".
    pub api: &'static str,
    pub token: String,
    /// The subject the token was issued to (the mailbox's owner).
    pub user: String,
    /// The MIME message as sent.
    pub message: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    sent: Vec<Sent>,
    /// Requests that broke the documented format (a test expects none).
    violations: Vec<String>,
    /// Answers to give before accepting anything: (status, Retry-After).
    scripted: Vec<(u16, Option<u32>)>,
    /// Every bearer token seen, in order.
    tokens: Vec<String>,
}

struct Ctx {
    shared: Mutex<Shared>,
    oauth: Arc<OAuthServer>,
}

pub struct MailboxApis {
    ctx: Arc<Ctx>,
    pub url: String,
    _runtime: tokio::runtime::Runtime,
}

impl MailboxApis {
    pub fn start(oauth: Arc<OAuthServer>) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let ctx = Arc::new(Ctx { shared: Mutex::default(), oauth });
        let app = Router::new()
            .route("/v1.0/me/sendMail", post(graph))
            .route("/v1.0/users/{user}/sendMail", post(graph_app))
            .route("/gmail/v1/users/me/messages/send", post(gmail))
            .with_state(ctx.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self { ctx, url, _runtime: runtime }
    }

    /// The next requests get these answers (status, Retry-After seconds), one each.
    pub fn script(&self, answers: &[(u16, Option<u32>)]) {
        self.ctx.shared.lock().unwrap().scripted.extend_from_slice(answers);
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.ctx.shared.lock().unwrap().sent.clone()
    }

    pub fn tokens(&self) -> Vec<String> {
        self.ctx.shared.lock().unwrap().tokens.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.ctx.shared.lock().unwrap().violations.clone()
    }

    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Sent> {
        crate::wait_for("the mail API to accept mail", timeout, || {
            let sent = self.sent();
            (sent.len() >= n).then_some(sent)
        })
    }
}

fn error(status: StatusCode, api: &str, code: &str, message: &str, retry_after: Option<u32>) -> Response {
    // Graph: {"error": {"code", "message"}}; Google: {"error": {"code": n, "message", "status"}}.
    let body = match api {
        "graph" => serde_json::json!({"error": {"code": code, "message": message}}),
        _ => serde_json::json!({"error": {"code": status.as_u16(), "message": message, "status": code}}),
    };
    let mut r = (status, axum::Json(body)).into_response();
    if let Some(s) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, s.to_string().parse().unwrap());
    }
    r
}

/// The checks both APIs share: a scripted answer first, then the bearer token.
async fn admit(
    ctx: &Ctx,
    api: &'static str,
    headers: &HeaderMap,
    scope: &str,
) -> Result<(String, String), Response> {
    let scripted = {
        let mut s = ctx.shared.lock().unwrap();
        (!s.scripted.is_empty()).then(|| s.scripted.remove(0))
    };
    if let Some((status, retry_after)) = scripted {
        let status = StatusCode::from_u16(status).unwrap();
        let code = match status {
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            StatusCode::UNAUTHORIZED => "InvalidAuthenticationToken",
            _ => "ServiceUnavailable",
        };
        return Err(error(status, api, code, "scripted by the test", retry_after));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let Some(token) = token else {
        ctx.shared.lock().unwrap().violations.push(format!("{api}: no bearer token"));
        return Err(error(StatusCode::UNAUTHORIZED, api, "InvalidAuthenticationToken", "no token", None));
    };
    ctx.shared.lock().unwrap().tokens.push(token.clone());
    let info = ctx.oauth.introspect(&token).await;
    let scopes = info["scope"].as_str().unwrap_or_default().to_string();
    if info["active"] != true || !scopes.split(' ').any(|s| s == scope) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            api,
            "InvalidAuthenticationToken",
            "token not active",
            None,
        ));
    }
    Ok((token, info["sub"].as_str().unwrap_or_default().to_string()))
}

fn content_type(headers: &HeaderMap) -> String {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// Graph `POST /v1.0/me/sendMail` with a MIME body: `Content-Type: text/plain`, the message in
/// base64; 202 Accepted.
async fn graph(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Bytes) -> Response {
    graph_send(ctx, None, headers, body).await
}

/// Graph `POST /v1.0/users/{user}/sendMail` with an app-only token (no user in the token: the
/// mailbox is the path's).
async fn graph_app(
    State(ctx): State<Arc<Ctx>>,
    axum::extract::Path(user): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    graph_send(ctx, Some(user), headers, body).await
}

async fn graph_send(ctx: Arc<Ctx>, mailbox: Option<String>, headers: HeaderMap, body: Bytes) -> Response {
    let (token, subject) = match admit(&ctx, "graph", &headers, "Mail.Send").await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let user = match mailbox {
        Some(m) if subject.is_empty() => m,
        Some(_) => {
            ctx.shared.lock().unwrap().violations.push("graph: /users/{id} with a delegated token".into());
            subject
        }
        None => subject,
    };
    if !content_type(&headers).starts_with("text/plain") {
        ctx.shared
            .lock()
            .unwrap()
            .violations
            .push(format!("graph: content type {:?}", content_type(&headers)));
        return error(StatusCode::BAD_REQUEST, "graph", "ErrorMimeContentInvalid", "not text/plain", None);
    }
    let Ok(message) = base64::engine::general_purpose::STANDARD.decode(body.trim_ascii()) else {
        ctx.shared.lock().unwrap().violations.push("graph: body not base64".into());
        return error(
            StatusCode::BAD_REQUEST,
            "graph",
            "ErrorMimeContentInvalidBase64String",
            "not base64",
            None,
        );
    };
    ctx.shared.lock().unwrap().sent.push(Sent { api: "graph", token, user, message });
    StatusCode::ACCEPTED.into_response()
}

/// Gmail `POST /gmail/v1/users/me/messages/send` with `{"raw": base64url}`; 200 with the
/// message resource.
async fn gmail(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Bytes) -> Response {
    let (token, user) =
        match admit(&ctx, "gmail", &headers, "https://www.googleapis.com/auth/gmail.send").await {
            Ok(t) => t,
            Err(r) => return r,
        };
    let raw = (content_type(&headers).starts_with("application/json"))
        .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .flatten()
        .and_then(|v| v["raw"].as_str().map(str::to_string));
    let message = raw.and_then(|r| {
        base64::engine::general_purpose::URL_SAFE
            .decode(&r)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&r))
            .ok()
    });
    let Some(message) = message else {
        ctx.shared.lock().unwrap().violations.push("gmail: not JSON with a base64url raw".into());
        return error(StatusCode::BAD_REQUEST, "gmail", "INVALID_ARGUMENT", "raw missing", None);
    };
    let id = format!("{:016x}", ctx.shared.lock().unwrap().sent.len() + 1);
    ctx.shared.lock().unwrap().sent.push(Sent { api: "gmail", token, user, message });
    axum::Json(serde_json::json!({"id": id, "threadId": id, "labelIds": ["SENT"]})).into_response()
}
