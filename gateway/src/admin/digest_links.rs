//! The page behind a quarantine digest's one-click links (`quarantine::links`), public like
//! `/confirm`: whoever holds the link is the recipient it was mailed to. The GET shows the
//! message and a button; only the POST acts (mail scanners and previews fetch links before
//! people click them). A link acts once, for its recipient only, until the entry expires.

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::confirm::{escape, page};
use super::guard::cross_site;
use crate::context::Context;
use crate::quarantine::links::{Link, LinkAction};
use crate::quarantine::{self as q, QuarantineError};
use crate::util::time::{now_ms, rfc5322};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LinkParams {
    t: String,
}

fn refused(why: impl std::fmt::Display) -> Response {
    page(StatusCode::FORBIDDEN, "Link not valid", &format!("<p>{}.</p>", escape(&why.to_string())))
}

/// The link's entry, if it still holds the link's recipient.
async fn opened(ctx: &Context, token: &str) -> Result<(Link, crate::store::QuarantineEntry), Response> {
    if !ctx.admin_key_shared {
        return Err(refused("this gateway has no admin.keyFile: its digests carry no links"));
    }
    let link = Link::open(&ctx.admin_key, token, now_ms()).map_err(|why| {
        ctx.metrics.admin_refused.get_or_create(&crate::metrics::ReasonLabel { reason: "digest_link" }).inc();
        refused(why)
    })?;
    match ctx.store.quarantine_get(&link.id).await {
        Ok(Some(entry)) if entry.recipients.contains(&link.recipient) => Ok((link, entry)),
        Ok(_) => Err(page(
            StatusCode::GONE,
            "Nothing to do",
            "<p>This message is no longer held for you: it was released or deleted already, or it expired.</p>",
        )),
        Err(e) => {
            tracing::warn!(error = %e, "digest link: store unavailable");
            Err(page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "<p>The quarantine cannot be read now.</p>",
            ))
        }
    }
}

/// `GET /quarantine/link?t=`: what the link would do, and the button.
pub async fn show(State(ctx): State<Arc<Context>>, Query(p): Query<LinkParams>) -> Response {
    let token = p.t.as_str();
    let (link, entry) = match opened(&ctx, token).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let (title, button) = match link.action {
        LinkAction::Release => ("Release this message?", "Release it to me"),
        LinkAction::Delete => ("Delete this message?", "Delete it"),
    };
    let from = if entry.summary.from.is_empty() { &entry.sender } else { &entry.summary.from };
    page(
        StatusCode::OK,
        title,
        &format!(
            "<dl><dt>From</dt><dd>{}</dd><dt>Subject</dt><dd>{}</dd><dt>Held</dt><dd>{}</dd>\
             <dt>Why</dt><dd>{}</dd><dt>For</dt><dd>{}</dd></dl>\
             <form method=\"post\"><input type=\"hidden\" name=\"t\" value=\"{}\">\
             <button type=\"submit\">{button}</button></form>",
            escape(from),
            escape(&entry.summary.subject),
            escape(&rfc5322(entry.created_at)),
            escape(&entry.reasons.join("; ")),
            escape(&link.recipient),
            escape(token),
        ),
    )
}

/// `POST /quarantine/link` (the button): release or delete, for the link's recipient only.
pub async fn act(State(ctx): State<Arc<Context>>, headers: HeaderMap, Form(p): Form<LinkParams>) -> Response {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if cross_site(&headers, host) {
        return refused("use the button on the page the link opens");
    }
    let (link, _) = match opened(&ctx, &p.t).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let by = format!("digest link of {}", link.recipient);
    let done = match link.action {
        LinkAction::Release => {
            q::release_for(&ctx, &link.id, &link.recipient, &by).await.map(|_| "It is on its way to you.")
        }
        LinkAction::Delete => {
            q::delete_for(&ctx, &link.id, &link.recipient, &by).await.map(|()| "It is deleted.")
        }
    };
    match done {
        Ok(text) => page(StatusCode::OK, "Done", &format!("<p>{text} You can close this page.</p>")),
        Err(QuarantineError::NotFound(_)) => {
            page(StatusCode::GONE, "Nothing to do", "<p>This message is no longer held for you.</p>")
        }
        Err(e) => {
            tracing::warn!(error = %e, quarantine_id = %link.id, "digest link could not act");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                &format!("<p>{}</p>", escape(&e.to_string())),
            )
        }
    }
}
