//! Working in the quarantine: search, release and delete. The entries live in the `Store`, so
//! every pod sees (and can release) what any pod quarantined. The admin API and the CLI call
//! these; `digest.rs` tells recipients what was held for them.

pub mod digest;
pub mod links;

use std::sync::Arc;

use crate::config::NamedSpamPolicy;
use crate::context::Context;
use crate::routing::probe::ProbingDirectory;
use crate::routing::{self, Decision, Router};
use crate::spam::content;
use crate::store::{Message, NewMessage, QuarantineEntry, Store, StoreError, TransportFlags};
use crate::util::time::{ms, now_ms, rfc3339};

pub use postern_api::admin::QuarantineSearch as Search;
use postern_api::admin::{HeldMessage, HeldMessageDetail, Released};

/// An entry as the admin API lists it: everything but the body.
fn listed(entry: QuarantineEntry) -> HeldMessage {
    HeldMessage {
        held_at: rfc3339(entry.created_at),
        expires: rfc3339(entry.expires_at),
        id: entry.id,
        sender: entry.sender,
        recipients: entry.recipients,
        reasons: entry.reasons,
        client_ip: entry.client_ip,
        policy: entry.policy,
        summary: entry.summary,
        created_at: entry.created_at,
        expires_at: entry.expires_at,
    }
}

/// ms since the epoch of "2026-11-23" or "2026-11-23T12:00:00Z"; `end` makes a bare date
/// cover its whole day.
fn parse_date(s: &str, end: bool) -> Result<u64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis().max(0) as u64);
    }
    let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD or RFC 3339)"))?;
    let day = if end { day.succ_opt().unwrap_or(day) } else { day };
    let t = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_millis().max(0) as u64;
    Ok(if end { t.saturating_sub(1) } else { t })
}

fn has(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// The parts of a search that look at an entry.
trait Matches {
    fn matches_metadata(&self, e: &QuarantineEntry, since: u64, until: u64) -> bool;
    fn q_in_metadata(&self, e: &QuarantineEntry, q: &str) -> bool;
    fn needs_text(&self) -> bool;
}

impl Matches for Search {
    fn matches_metadata(&self, e: &QuarantineEntry, since: u64, until: u64) -> bool {
        let s = &e.summary;
        let sender_ok = |n: &str| has(&e.sender, n) || has(&s.from, n);
        let to_ok = |n: &str| e.recipients.iter().chain(&s.to).chain(&s.cc).any(|a| has(a, n));
        let attachment_ok = |n: &str| s.attachments.iter().any(|a| has(a, n));
        (since..=until).contains(&e.created_at)
            && self.subject.as_deref().is_none_or(|n| has(&s.subject, n))
            && self.sender.as_deref().is_none_or(sender_ok)
            && self.to.as_deref().is_none_or(to_ok)
            && self.attachment.as_deref().is_none_or(attachment_ok)
    }

    /// `q` over the metadata only (the text is looked at when this says no).
    fn q_in_metadata(&self, e: &QuarantineEntry, q: &str) -> bool {
        let s = &e.summary;
        [&s.subject, &s.from, &e.sender].iter().any(|f| has(f, q))
            || e.recipients
                .iter()
                .chain(&s.to)
                .chain(&s.cc)
                .chain(&s.attachments)
                .chain(&e.reasons)
                .any(|f| has(f, q))
    }

    fn needs_text(&self) -> bool {
        self.body.is_some() || self.attachment_text.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no quarantine entry {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The entries that match, oldest first.
pub async fn search(ctx: &Context, query: &Search) -> Result<Vec<HeldMessage>, QuarantineError> {
    let since = query
        .since
        .as_deref()
        .map(|d| parse_date(d, false))
        .transpose()
        .map_err(QuarantineError::BadRequest)?;
    let until = query
        .until
        .as_deref()
        .map(|d| parse_date(d, true))
        .transpose()
        .map_err(QuarantineError::BadRequest)?;
    let (since, until) = (since.unwrap_or(0), until.unwrap_or(u64::MAX));
    let limit = query.limit.unwrap_or(1000);
    let mut out = Vec::new();
    for entry in ctx.store.quarantine_list().await? {
        if out.len() >= limit {
            break;
        }
        if !query.matches_metadata(&entry, since, until) {
            continue;
        }
        let q_hit = query.q.as_deref().map(|q| query.q_in_metadata(&entry, q));
        if query.needs_text() || q_hit == Some(false) {
            // Only now is the body read: most searches are answered from the metadata.
            let Some(full) = ctx.store.quarantine_get(&entry.id).await? else { continue };
            let text = content::search_text(&full.body);
            let body_ok = query.body.as_deref().is_none_or(|n| has(&text.body, n));
            let att_ok = query.attachment_text.as_deref().is_none_or(|n| has(&text.attachments, n));
            let q_ok = match (q_hit, query.q.as_deref()) {
                (Some(false), Some(q)) => has(&text.body, q) || has(&text.attachments, q),
                _ => true,
            };
            if !(body_ok && att_ok && q_ok) {
                continue;
            }
        }
        out.push(listed(entry));
    }
    Ok(out)
}

/// One entry with its header fields (unfolded, in order) for an admin to inspect, and the
/// message as stored.
pub async fn show(ctx: &Context, id: &str) -> Result<(HeldMessageDetail, Vec<u8>), QuarantineError> {
    let mut entry =
        ctx.store.quarantine_get(id).await?.ok_or_else(|| QuarantineError::NotFound(id.into()))?;
    let headers = crate::spam::headers::unfolded(&entry.body);
    let body = std::mem::take(&mut entry.body);
    Ok((HeldMessageDetail { message: listed(entry), headers }, body))
}

/// Delivers a held message to its original recipients, routed by the current configuration,
/// without running the spam checks again. The entry leaves the quarantine in the same store
/// step that queues the message, so a release happens once even when two pods are asked.
pub async fn release(ctx: &Context, id: &str, by: &str) -> Result<Released, QuarantineError> {
    let entry = ctx.store.quarantine_get(id).await?.ok_or_else(|| QuarantineError::NotFound(id.into()))?;
    let recipients = entry.recipients.clone();
    let (msg, released) = release_message(ctx, entry, &recipients, by).await?;
    if !ctx.store.quarantine_release(id, msg).await? {
        return Err(QuarantineError::NotFound(id.into()));
    }
    released_now(ctx, &released);
    Ok(released)
}

/// Delivers a held message to one of its recipients only (a digest link): the entry keeps its
/// other recipients. Once per recipient: a second call finds nothing held for them.
pub async fn release_for(
    ctx: &Context,
    id: &str,
    recipient: &str,
    by: &str,
) -> Result<Released, QuarantineError> {
    let entry = held_for(ctx, id, recipient).await?;
    let (msg, released) = release_message(ctx, entry, &[recipient.to_string()], by).await?;
    if !ctx.store.quarantine_take_recipient(id, recipient, Some(msg)).await? {
        return Err(not_held_for(id, recipient));
    }
    released_now(ctx, &released);
    Ok(released)
}

/// Deletes a held message for one of its recipients (a digest link); the entry goes with its
/// last recipient.
pub async fn delete_for(ctx: &Context, id: &str, recipient: &str, by: &str) -> Result<(), QuarantineError> {
    held_for(ctx, id, recipient).await?;
    if !ctx.store.quarantine_take_recipient(id, recipient, None).await? {
        return Err(not_held_for(id, recipient));
    }
    tracing::info!(quarantine_id = %id, rcpt = %recipient.escape_debug(), deleted_by = %by.escape_debug(), decision = "deleted", "quarantined message deleted for one recipient");
    Ok(())
}

fn not_held_for(id: &str, recipient: &str) -> QuarantineError {
    QuarantineError::NotFound(format!("{id} for {recipient} (released or deleted already?)"))
}

/// The entry, if it still holds `recipient`.
async fn held_for(ctx: &Context, id: &str, recipient: &str) -> Result<QuarantineEntry, QuarantineError> {
    match ctx.store.quarantine_get(id).await? {
        Some(e) if e.recipients.iter().any(|r| r == recipient) => Ok(e),
        _ => Err(not_held_for(id, recipient)),
    }
}

fn released_now(ctx: &Context, r: &Released) {
    ctx.queue_wakeup.notify_one();
    ctx.metrics.message("queued", "released");
    tracing::info!(quarantine_id = %r.id, queue_id = %r.queue_id, rcpts = r.recipients.len(), dropped = ?r.dropped, released_by = %r.released_by.escape_debug(), decision = "released", "quarantined message released");
}

/// The message that releases `entry` to `recipients` (routed now), and what the release does.
async fn release_message(
    ctx: &Context,
    entry: QuarantineEntry,
    recipients: &[String],
    by: &str,
) -> Result<(NewMessage, Released), QuarantineError> {
    let id = entry.id.clone();
    let cfg = ctx.config.load_full();
    let directory = ProbingDirectory { probes: &ctx.probes, outbound: &ctx.outbound, cfg: &cfg };
    let router = Router { cfg: &cfg, directory: &directory, policies: &*ctx.verifications };
    let (mut targets, mut delivered, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
    for rcpt in recipients {
        match router.resolve(rcpt).await {
            Decision::Deliver(t) => {
                targets.extend(t);
                delivered.push(rcpt.clone());
            }
            Decision::Unknown => dropped.push(rcpt.clone()),
            Decision::TryLater(why) => {
                return Err(QuarantineError::Conflict(format!(
                    "{rcpt} cannot be routed now ({why}); try again"
                )));
            }
        }
    }
    if targets.is_empty() {
        return Err(QuarantineError::Conflict(format!(
            "no recipient of {id} is deliverable now: {dropped:?}"
        )));
    }
    // Beside the entry: a partitioned store takes the entry and queues this in one step.
    let queue_id = crate::store::new_id_beside(&id);
    // Entries held before the flags were kept: read them off the envelope and the body.
    let flags = entry.flags.unwrap_or_else(|| TransportFlags {
        smtputf8: !entry.sender.is_ascii() || entry.recipients.iter().any(|r| !r.is_ascii()),
        eight_bit: !entry.body.is_ascii(),
    });
    let message = Message {
        id: queue_id.clone(),
        sender: entry.sender.clone(),
        received_at: now_ms(),
        smtputf8: flags.smtputf8,
        eight_bit: flags.eight_bit,
        body: entry.body,
    };
    let lifetime = ms(cfg.delivery.lifetime.get());
    let msg = NewMessage::new(message, routing::plan(&targets), lifetime);
    Ok((msg, Released { id, queue_id, recipients: delivered, dropped, released_by: by.into() }))
}

/// A message to hold, as the session has it.
pub struct Held {
    pub id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub reasons: Vec<String>,
    pub client_ip: std::net::IpAddr,
    /// The policy that held it: its retention applies, its digests list it.
    pub policy: Arc<NamedSpamPolicy>,
    pub flags: TransportFlags,
    pub body: Vec<u8>,
}

/// Holds a message: the entry, with its decoded summary for listings and digests, is written
/// durably before this returns (the client is told 250 only then).
pub async fn hold(store: &dyn Store, held: Held) -> Result<(), StoreError> {
    let now = now_ms();
    let entry = QuarantineEntry {
        id: held.id,
        sender: held.sender,
        recipients: held.recipients,
        reasons: held.reasons,
        client_ip: held.client_ip.to_string(),
        created_at: now,
        expires_at: now.saturating_add(ms(held.policy.config.quarantine_retention.get())),
        policy: held.policy.name.clone(),
        flags: Some(held.flags),
        summary: content::summarize(&held.body),
        body: held.body,
    };
    store.quarantine_put(entry).await
}

pub async fn delete(ctx: &Context, id: &str, by: &str) -> Result<(), QuarantineError> {
    if !ctx.store.quarantine_delete(id).await? {
        return Err(QuarantineError::NotFound(id.into()));
    }
    tracing::info!(quarantine_id = %id, deleted_by = %by, decision = "deleted", "quarantined message deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_bound_whole_days() {
        let start = parse_date("2026-11-23", false).unwrap();
        let end = parse_date("2026-11-23", true).unwrap();
        assert_eq!(end - start, 86_400_000 - 1);
        assert_eq!(parse_date("2026-11-23T00:00:00Z", false).unwrap(), start);
        assert!(parse_date("yesterday", false).unwrap_err().contains("not a date"));
    }
}
