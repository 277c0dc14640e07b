//! The quarantine console: web pages on the admin port (`/console/`) where reviewers search the
//! held mail, read a message (headers, authentication results, text, HTML made safe,
//! attachments) and deliver or delete several at once; and where an OAuth sending account's
//! owner starts its consent ("Authorize").
//!
//! Who may do what is the admin API's rule (`guard::authorize`), asked again for every page and
//! every message acted on, with the token of the reviewer's session (`session.rs`): a token of
//! `admin.tokenFile`, or a Kubernetes user's token whose RBAC verbs on `quarantine` decide.
//! Every action is logged with its actor. Pages are rendered on the server (`pages.rs`, maud)
//! and use no script; the assets are compiled into the binary.

mod message;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;

use self::pages::{AccountRow, Signed, Target};
use self::session::Session;
use super::guard::{Access, Refusal, authorize, check_origin};
use crate::auth::kubernetes::Attributes;
use crate::context::Context;
use crate::quarantine::{self as q, Search};

/// Held messages per page.
const PAGE_SIZE: usize = 50;
/// Messages one action may name.
const MAX_TARGETS: usize = 500;

pub fn router(ctx: Arc<Context>) -> Router<Arc<Context>> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(list))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/act", post(act))
        .route("/console/m/{id}", get(detail))
        .route("/console/m/{id}/raw", get(raw))
        .route("/console/m/{id}/part/{index}", get(part))
        .route("/console/accounts", get(accounts))
        .route("/console/accounts/{name}/authorize", post(authorize_account))
        .route("/console/assets/console.css", get(css))
        .route_layer(axum::middleware::from_fn_with_state(ctx, frame))
}

/// Every console response: the Host and origin checks first, then headers that keep the
/// pages to themselves (no script, nothing from elsewhere, not framed, not cached, no Referer).
async fn frame(State(ctx): State<Arc<Context>>, request: Request, next: Next) -> Response {
    let changes = request.method() != Method::GET && request.method() != Method::HEAD;
    if let Err(r) = check_origin(&ctx, request.headers(), changes) {
        return html(r.status, "Refused", None, pages::message_page(&r.error));
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let mut default = |name, value| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    default(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    default(header::CACHE_CONTROL, "no-store");
    default(header::REFERRER_POLICY, "no-referrer");
    default(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    default(header::X_FRAME_OPTIONS, "DENY");
    default(header::HeaderName::from_static("cross-origin-opener-policy"), "same-origin");
    response
}

fn html(status: StatusCode, title: &str, signed: Option<&Signed>, body: Markup) -> Response {
    let page = pages::layout(title, signed, body);
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], page.into_string()).into_response()
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], pages::CSS).into_response()
}

/// No authentication configured: the console is as open as the API.
fn open(ctx: &Context) -> bool {
    let cfg = ctx.config();
    cfg.config.admin.token_file.is_none() && cfg.config.admin.kubernetes.is_none()
}

/// A signed-in reviewer allowed to do `what`.
struct Reviewer {
    session: Session,
    /// Who acts, for the log.
    actor: String,
    csrf: String,
}

impl Reviewer {
    fn signed(&self) -> Signed<'_> {
        Signed { user: &self.session.user, csrf: &self.csrf }
    }
}

fn what(resource: &'static str, verb: &'static str, name: Option<&str>) -> Attributes {
    Attributes { resource, verb, name: name.map(str::to_string) }
}

/// The session's reviewer, if they may do `what`; otherwise the page to show instead (the
/// login page for no or an ended session, 403 for a verb RBAC does not grant).
async fn reviewer(
    ctx: &Context,
    headers: &HeaderMap,
    what: &Attributes,
    changes: bool,
) -> Result<Reviewer, Response> {
    let Some(session) = Session::from_headers(&ctx.admin_key, headers) else {
        return Err(Redirect::to("/console/login").into_response());
    };
    let csrf = session.csrf(&ctx.admin_key);
    match authorize(ctx, session.token.as_deref().map(str::as_bytes), Some(what), changes).await {
        Ok(access) => {
            let actor = match access {
                Access::Reviewed(user) => user,
                Access::Gateway => session.user.clone(),
            };
            Ok(Reviewer { session, actor, csrf })
        }
        Err(r) if r.status == StatusCode::UNAUTHORIZED => {
            let why = "Your session's token is no longer accepted: sign in again.";
            let mut page = sign_in_page(ctx, StatusCode::UNAUTHORIZED, Some(why));
            page.headers_mut().append(header::SET_COOKIE, Session::end());
            Err(page)
        }
        Err(r) => {
            let signed = Signed { user: &session.user, csrf: &csrf };
            Err(html(r.status, "Not allowed", Some(&signed), pages::message_page(&r.error)))
        }
    }
}

/// The sign-in page, with a fresh form cookie.
fn sign_in_page(ctx: &Context, status: StatusCode, error: Option<&str>) -> Response {
    match session::login_form(&ctx.admin_key) {
        Ok((cookie, csrf)) => {
            let mut page = html(status, "Sign in", None, pages::login(open(ctx), error, &csrf));
            page.headers_mut().append(header::SET_COOKIE, cookie);
            page
        }
        Err(e) => html(StatusCode::SERVICE_UNAVAILABLE, "Sign in", None, pages::message_page(&e)),
    }
}

async fn login_page(State(ctx): State<Arc<Context>>, headers: HeaderMap) -> Response {
    if Session::from_headers(&ctx.admin_key, &headers).is_some() {
        return Redirect::to("/console/").into_response();
    }
    sign_in_page(&ctx, StatusCode::OK, None)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginForm {
    token: String,
    csrf: String,
}

/// `POST /console/login`: the form must be the one this browser was given (a cross-site POST
/// was refused by `frame` already); the token is checked as the quarantine list would check
/// it, then sealed into the session cookie.
async fn login(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if !session::login_csrf_ok(&ctx.admin_key, &headers, &form.csrf) {
        return sign_in_page(
            &ctx,
            StatusCode::FORBIDDEN,
            Some("This sign-in form is out of date: sign in again."),
        );
    }
    let token = form.token.trim();
    let (token, presented) = match open(&ctx) {
        true => (None, None),
        false if token.is_empty() || token.len() > 8192 => {
            return sign_in_page(&ctx, StatusCode::BAD_REQUEST, Some("Enter a token."));
        }
        false => (Some(token.to_string()), Some(token.as_bytes())),
    };
    let user = match authorize(&ctx, presented, Some(&what("quarantine", "list", None)), false).await {
        Ok(Access::Reviewed(user)) => user,
        Ok(Access::Gateway) if open(&ctx) => "anonymous".to_string(),
        Ok(Access::Gateway) => "admin (token file)".to_string(),
        Err(Refusal { status, error, .. }) => {
            let text = match status {
                StatusCode::UNAUTHORIZED => "This token is not accepted.".to_string(),
                _ => error,
            };
            tracing::info!(status = status.as_u16(), "console sign-in refused");
            return sign_in_page(&ctx, status, Some(&text));
        }
    };
    let session = match Session::new(token, user) {
        Ok(s) => s,
        Err(e) => return html(StatusCode::SERVICE_UNAVAILABLE, "Sign in", None, pages::message_page(&e)),
    };
    tracing::info!(actor = %session.user.escape_debug(), "console sign-in");
    match session.cookie(&ctx.admin_key) {
        Ok(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to("/console/")).into_response(),
        Err(e) => html(StatusCode::SERVICE_UNAVAILABLE, "Sign in", None, pages::message_page(&e)),
    }
}

async fn logout(State(ctx): State<Arc<Context>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Fields::parse(&body);
    if let Some(s) = Session::from_headers(&ctx.admin_key, &headers)
        && s.csrf_ok(&ctx.admin_key, form.one("csrf"))
    {
        tracing::info!(actor = %s.user.escape_debug(), "console sign-out");
    }
    ([(header::SET_COOKIE, Session::end())], Redirect::to("/console/login")).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    q: String,
    #[serde(rename = "in")]
    field: String,
    since: String,
    until: String,
    sort: String,
    page: usize,
}

impl ListQuery {
    fn search(&self) -> Search {
        let q = Some(self.q.trim().to_string()).filter(|s| !s.is_empty());
        let mut s = Search {
            since: Some(self.since.clone()).filter(|s| !s.is_empty()),
            until: Some(self.until.clone()).filter(|s| !s.is_empty()),
            limit: Some(usize::MAX),
            ..Default::default()
        };
        match self.field.as_str() {
            "subject" => s.subject = q,
            "sender" => s.sender = q,
            "to" => s.to = q,
            "body" => s.body = q,
            "attachment" => s.attachment = q,
            "attachment_text" => s.attachment_text = q,
            _ => s.q = q,
        }
        s
    }

    /// This search's list at `page`.
    fn link(&self, page: usize) -> String {
        let mut url = form_urlencoded::Serializer::new(String::from("/console/?"));
        for (k, v) in [
            ("q", &self.q),
            ("in", &self.field),
            ("since", &self.since),
            ("until", &self.until),
            ("sort", &self.sort),
        ] {
            if !v.is_empty() {
                url.append_pair(k, v);
            }
        }
        url.append_pair("page", &page.to_string());
        url.finish()
    }
}

async fn list(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let r = match reviewer(&ctx, &headers, &what("quarantine", "list", None), false).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let mut found = match q::search(&ctx, &query.search()).await {
        Ok(found) => found,
        Err(e) => {
            let status = match e {
                q::QuarantineError::BadRequest(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return html(status, "Quarantine", Some(&r.signed()), pages::message_page(&e.to_string()));
        }
    };
    let oldest_first = query.sort == "oldest";
    if !oldest_first {
        found.reverse();
    }
    let total = found.len();
    let first = query.page.saturating_mul(PAGE_SIZE).min(total);
    let entries = &found[first..(first + PAGE_SIZE).min(total)];
    let page = pages::Page {
        entries,
        total,
        first,
        previous: (query.page > 0).then(|| query.link(query.page - 1)),
        next: (first + PAGE_SIZE < total).then(|| query.link(query.page + 1)),
    };
    let form = pages::SearchForm {
        q: &query.q,
        field: if query.field.is_empty() { "all" } else { &query.field },
        since: &query.since,
        until: &query.until,
        oldest_first,
    };
    html(StatusCode::OK, "Quarantine", Some(&r.signed()), pages::list(&r.signed(), &form, &page))
}

fn not_found(signed: &Signed, e: q::QuarantineError) -> Response {
    let status = match e {
        q::QuarantineError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    html(status, "Held message", Some(signed), pages::message_page(&e.to_string()))
}

async fn detail(State(ctx): State<Arc<Context>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let r = match reviewer(&ctx, &headers, &what("quarantine", "get", Some(&id)), false).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    match q::show(&ctx, &id).await {
        Ok((shown, body)) => {
            let view = message::view(&body);
            let title = if shown.message.summary.subject.is_empty() {
                "(no subject)".to_string()
            } else {
                shown.message.summary.subject.clone()
            };
            let page = pages::detail(&r.signed(), &shown.message, &shown.headers, &view);
            html(StatusCode::OK, &title, Some(&r.signed()), page)
        }
        Err(e) => not_found(&r.signed(), e),
    }
}

/// A download: as a file, never shown in the page's origin (no sniffing, sandboxed).
fn download(content_type: &'static str, name: &str, data: Vec<u8>) -> Response {
    let ascii = message::ascii_file_name(name);
    let utf8: String =
        form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>().replace('+', "%20");
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{utf8}");
    let mut response = ([(header::CONTENT_TYPE, content_type)], data).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    response
}

async fn raw(State(ctx): State<Arc<Context>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let r = match reviewer(&ctx, &headers, &what("quarantine", "get", Some(&id)), false).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    match q::show(&ctx, &id).await {
        Ok((_, body)) => download("message/rfc822", &format!("{id}.eml"), body),
        Err(e) => not_found(&r.signed(), e),
    }
}

async fn part(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Path((id, index)): Path<(String, usize)>,
) -> Response {
    let r = match reviewer(&ctx, &headers, &what("quarantine", "get", Some(&id)), false).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    match q::show(&ctx, &id).await {
        Ok((_, body)) => match message::attachment(&body, index) {
            Some((name, data)) => download("application/octet-stream", &name, data),
            None => html(
                StatusCode::NOT_FOUND,
                "Attachment",
                Some(&r.signed()),
                pages::message_page("No such attachment."),
            ),
        },
        Err(e) => not_found(&r.signed(), e),
    }
}

/// A form body with repeated fields (the selected messages' `id`s).
struct Fields(Vec<(String, String)>);

impl Fields {
    fn parse(body: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .take(MAX_TARGETS + 8)
                .collect(),
        )
    }

    fn one(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect();
        out.dedup();
        out
    }
}

/// `POST /console/act`: Deliver or Delete the selected messages: first a confirmation page,
/// then (with `confirm=yes`) each message in turn, each authorised on its own, with a result
/// for each.
async fn act(State(ctx): State<Arc<Context>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Fields::parse(&body);
    let action = match form.one("action") {
        a @ ("deliver" | "delete") => a,
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                "Not done",
                None,
                pages::message_page("Choose Deliver or Delete."),
            );
        }
    };
    let r = match reviewer(&ctx, &headers, &what("quarantine", "list", None), false).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    if !r.session.csrf_ok(&ctx.admin_key, form.one("csrf")) {
        tracing::info!(actor = %r.actor.escape_debug(), "console form without its CSRF token refused");
        let text =
            "This form is out of date or did not come from this console: go back, reload and try again.";
        return html(StatusCode::FORBIDDEN, "Not done", Some(&r.signed()), pages::message_page(text));
    }
    let ids = form.all("id");
    if ids.is_empty() || ids.len() > MAX_TARGETS {
        let text = format!("Select between 1 and {MAX_TARGETS} messages.");
        return html(StatusCode::BAD_REQUEST, "Not done", Some(&r.signed()), pages::message_page(&text));
    }
    let mut targets = Vec::with_capacity(ids.len());
    let listed = match ctx.store.quarantine_list().await {
        Ok(listed) => listed,
        Err(e) => {
            let text = format!("The quarantine cannot be read now: {e}");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not done",
                Some(&r.signed()),
                pages::message_page(&text),
            );
        }
    };
    for id in ids {
        let entry = listed.iter().find(|e| e.id == id);
        targets.push(Target {
            subject: entry.map_or_else(|| "(gone)".into(), |e| e.summary.subject.clone()),
            sender: entry.map_or_else(String::new, |e| {
                if e.summary.from.is_empty() { e.sender.clone() } else { e.summary.from.clone() }
            }),
            id,
            result: None,
        });
    }
    let verb = if action == "delete" { "Delete" } else { "Deliver" };
    if form.one("confirm") != "yes" {
        let title = format!("{verb} messages");
        return html(
            StatusCode::OK,
            &title,
            Some(&r.signed()),
            pages::confirm(&r.signed(), action, &targets),
        );
    }
    for t in &mut targets {
        let rbac_verb = if action == "delete" { "delete" } else { "release" };
        let allowed = reviewer(&ctx, &headers, &what("quarantine", rbac_verb, Some(&t.id)), true).await;
        t.result = Some(match allowed {
            Err(_) => Err(format!("you may not {rbac_verb} this message")),
            Ok(who) => match action {
                "delete" => q::delete(&ctx, &t.id, &who.actor).await.map(|()| "deleted".to_string()),
                _ => q::release(&ctx, &t.id, &who.actor).await.map(|done| {
                    format!("delivered to {} (queue id {})", done.recipients.join(", "), done.queue_id)
                }),
            }
            .map_err(|e| e.to_string()),
        });
    }
    let done = targets.iter().filter(|t| matches!(t.result, Some(Ok(_)))).count();
    tracing::info!(actor = %r.actor.escape_debug(), action, done, asked = targets.len(), "console action");
    html(
        StatusCode::OK,
        &format!("{verb}: {done} of {} done", targets.len()),
        Some(&r.signed()),
        pages::results(&targets),
    )
}

async fn accounts(State(ctx): State<Arc<Context>>, headers: HeaderMap) -> Response {
    let r = match reviewer(&ctx, &headers, &what("accounts", "list", None), false).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let cfg = ctx.config();
    let mut rows = Vec::with_capacity(cfg.config.accounts.len());
    for a in &cfg.config.accounts {
        let authorization = match a.oauth.is_some() {
            true => Some(ctx.oauth.authorization(a).await),
            false => None,
        };
        rows.push(AccountRow { name: &a.name, from: &a.from, kind: format!("{:?}", a.kind), authorization });
    }
    html(StatusCode::OK, "Sending accounts", Some(&r.signed()), pages::accounts(&r.signed(), &rows))
}

/// `POST /console/accounts/NAME/authorize` (the "Authorize" button): on to the provider's
/// consent page; it comes back to `/oauth/callback`.
async fn authorize_account(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let r = match reviewer(&ctx, &headers, &what("accounts", "authorize", Some(&name)), true).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    if !r.session.csrf_ok(&ctx.admin_key, Fields::parse(&body).one("csrf")) {
        let text = "This form is out of date: go back, reload and try again.";
        return html(StatusCode::FORBIDDEN, "Not done", Some(&r.signed()), pages::message_page(text));
    }
    let cfg = ctx.config();
    let Some(account) = cfg.sending_account(&name).filter(|a| a.oauth.is_some()) else {
        return html(
            StatusCode::NOT_FOUND,
            "Not done",
            Some(&r.signed()),
            pages::message_page("No such OAuth sending account."),
        );
    };
    match ctx.oauth.authorize_url(&cfg, account).await {
        Ok(url) => {
            tracing::info!(account = %name.escape_debug(), actor = %r.actor.escape_debug(), "sending account consent started from the console");
            Redirect::to(&url).into_response()
        }
        Err(e) => {
            html(StatusCode::SERVICE_UNAVAILABLE, "Not done", Some(&r.signed()), pages::message_page(&e))
        }
    }
}
