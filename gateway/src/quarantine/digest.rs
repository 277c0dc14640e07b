//! Quarantine digests: at a spam policy's interval, each recipient of held mail gets a list
//! of what was held for them since the last digest (a group's digest goes to its moderator,
//! or to the policy's admin when it has none), with a copy to the admin. The digests are
//! ordinary queued messages, delivered (and retried) like any other.
//!
//! Bookkeeping is one store key per policy, `digest/<policy>`, holding the end of the last
//! digested window. A pod claims a run by moving that key forward with a compare-and-set, so
//! with many pods each window is digested once. A pod that dies between the claim and the
//! enqueue loses that window's digest (never mail): digests are a convenience.

use std::collections::BTreeMap;

use postern_api::SpamPolicyConfig;

use crate::address::domain_of;
use crate::config::ConfigSnapshot;
use crate::context::Context;
use crate::routing;
use crate::store::{DeliveryPlan, Message, NewMessage, QuarantineEntry, Recipient, StoreResult};
use mail_builder::headers::text::Text;
use mail_builder::mime::MimePart;

use crate::generated::{generated_message, to_bytes};
use crate::util::secrets::SecretKey;
use crate::util::time::{ms, now_ms, rfc5322};

use super::links::{self, Link, LinkAction};

/// Entries held in the last few seconds may not be listed yet by every store replica; they
/// belong to the next window.
const SETTLE_MS: u64 = 2_000;

/// Sends the digests that are due; returns how many messages were queued.
pub async fn run_due(ctx: &Context) -> StoreResult<usize> {
    let cfg = ctx.config();
    let mut queued = 0;
    for (name, policy) in &cfg.spam_policies {
        let n = &policy.notifications;
        if !n.enabled {
            continue;
        }
        let key = format!("digest/{name}");
        let current = ctx.store.state_get(&key).await?;
        let last: u64 =
            current.as_deref().and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0);
        let now = now_ms();
        if now < last.saturating_add(ms(n.interval.get())) {
            continue;
        }
        let until = now.saturating_sub(SETTLE_MS).max(last);
        if !ctx.store.state_swap(&key, current, until.to_string().into_bytes()).await? {
            continue; // another pod took this window
        }
        ctx.metrics.digest_windows.inc();
        let entries: Vec<QuarantineEntry> = ctx
            .store
            .quarantine_list()
            .await?
            .into_iter()
            .filter(|e| e.policy == *name && e.created_at > last && e.created_at <= until)
            .collect();
        let links = match (ctx.admin_key_shared, cfg.admin.public_url.as_deref()) {
            (true, Some(public_url)) => Some(DigestLinks { key: &ctx.admin_key, public_url }),
            _ => None,
        };
        for digest in compose(&cfg, policy, &entries, last, links.as_ref()) {
            let to =
                digest.jobs.iter().flat_map(|j| &j.recipients).map(|r| r.address.clone()).collect::<Vec<_>>();
            let id = digest.message.id.clone();
            ctx.store.enqueue(digest).await?;
            queued += 1;
            tracing::info!(queue_id = %id, policy = %name, rcpts = ?to, decision = "queued", "quarantine digest queued");
        }
    }
    if queued > 0 {
        ctx.queue_wakeup.notify_one();
    }
    Ok(queued)
}

/// Who reads the digest of mail held for `rcpt`: the recipient, or for a group its moderator
/// (the admin when it has none; nobody when there is no admin either).
fn reader(cfg: &ConfigSnapshot, admin: Option<&str>, rcpt: &str) -> Option<String> {
    let rcpt = rcpt.to_ascii_lowercase();
    let group = domain_of(&rcpt).and_then(|d| cfg.served_domain(&d)).and_then(|d| d.group_moderator(&rcpt));
    match group {
        None => Some(rcpt),
        Some(Some(moderator)) => Some(moderator),
        Some(None) => admin.map(str::to_string),
    }
}

/// What a digest's one-click links need: the shared key (`admin.keyFile`) and where the admin
/// endpoint is reached from a browser (`admin.publicUrl`).
pub struct DigestLinks<'a> {
    pub key: &'a SecretKey,
    pub public_url: &'a str,
}

/// One held message in one reader's digest, for the recipient the reader stands for.
struct Line<'a> {
    entry: &'a QuarantineEntry,
    recipient: &'a str,
}

/// One digest message per reader, each copied to the admin.
pub fn compose(
    cfg: &ConfigSnapshot,
    policy: &SpamPolicyConfig,
    entries: &[QuarantineEntry],
    since: u64,
    links: Option<&DigestLinks>,
) -> Vec<NewMessage> {
    let n = &policy.notifications;
    let admin = n.admin.as_deref().map(str::to_ascii_lowercase);
    let mut per_reader: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for entry in entries {
        for recipient in &entry.recipients {
            let Some(to) = reader(cfg, admin.as_deref(), recipient) else { continue };
            let list = per_reader.entry(to).or_default();
            if !list.iter().any(|x| x.entry.id == entry.id) {
                list.push(Line { entry, recipient });
            }
        }
    }
    let from = n.from.clone().unwrap_or_else(|| format!("postmaster@{}", cfg.hostname));
    let lifetime = ms(cfg.delivery.lifetime.get());
    per_reader
        .into_iter()
        .filter_map(|(to, held)| {
            let body = render(&cfg.hostname, &from, &to, &held, since, links);
            let mut readers = vec![to];
            if let Some(a) = &admin
                && !readers.contains(a)
            {
                readers.push(a.clone());
            }
            // Digests never bounce: a DSN about a notification helps nobody.
            let mut plan = DeliveryPlan::default();
            for r in readers {
                let next_hop = routing::next_hop_for_own_mail(cfg, &r)?;
                plan.add(&next_hop, false, Recipient { address: r.clone(), original: r });
            }
            Some(NewMessage::new(Message::generated(from.clone(), body), plan, lifetime))
        })
        .collect()
}

/// A field of a held message as one digest line: no line breaks, at most 200 characters (a
/// digest is sent as 8bit text, whose lines must stay under 998 octets).
fn field(value: &str) -> String {
    let one_line: String = value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one_line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}

/// A line's links: release, delete (for the recipient the reader stands for).
fn line_links(links: &DigestLinks, line: &Line) -> (String, String) {
    let link = |action| Link {
        action,
        id: line.entry.id.clone(),
        recipient: line.recipient.to_string(),
        expires: line.entry.expires_at,
    };
    (
        links::url(links.public_url, links.key, &link(LinkAction::Release)),
        links::url(links.public_url, links.key, &link(LinkAction::Delete)),
    )
}

fn console_url(links: &DigestLinks) -> String {
    format!("{}/console/", links.public_url.trim_end_matches('/'))
}

/// The digest: multipart/alternative, the same list as plain text and as HTML.
fn render(
    hostname: &str,
    from: &str,
    to: &str,
    held: &[Line],
    since: u64,
    links: Option<&DigestLinks>,
) -> Vec<u8> {
    let count = held.len();
    let plural = if count == 1 { "message" } else { "messages" };
    let since = if since == 0 { String::new() } else { format!(" since {}", rfc5322(since)) };
    let intro = format!(
        "{count} {plural} for {to} {} held in quarantine{since}",
        if count == 1 { "was" } else { "were" },
    );
    let sender = |e: &QuarantineEntry| {
        if e.summary.from.is_empty() { e.sender.clone() } else { e.summary.from.clone() }
    };
    let mut text = format!("{intro}:\r\n");
    for line in held {
        let e = line.entry;
        text.push_str(&format!(
            "\r\nDate:    {}\r\nFrom:    {}\r\nSubject: {}\r\nReason:  {}\r\nID:      {}\r\n",
            rfc5322(e.created_at),
            field(&sender(e)),
            field(&e.summary.subject),
            field(&e.reasons.join("; ")),
            e.id
        ));
        if let Some(links) = links {
            let (release, delete) = line_links(links, line);
            text.push_str(&format!("Release: {release}\r\nDelete:  {delete}\r\n"));
        }
    }
    let closing = match links {
        Some(links) => {
            format!("The links act once, for {to} only. All held mail: {}\r\n", console_url(links))
        }
        None => {
            "If you expected one of these, ask your mail administrator to release it by its ID.\r\n".into()
        }
    };
    text.push_str("\r\n");
    text.push_str(&closing);
    let html = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Quarantine digest" } }
            body style="font-family: sans-serif" {
                p { (intro) ":" }
                table cellpadding="6" style="border-collapse: collapse" {
                    thead { tr { th align="left" { "Date" } th align="left" { "From" } th align="left" { "Subject" } th align="left" { "Reason" } @if links.is_some() { th {} } } }
                    tbody {
                        @for line in held {
                            tr style="border-top: 1px solid #ccc" {
                                td { (rfc5322(line.entry.created_at)) }
                                td { (field(&sender(line.entry))) }
                                td { (field(&line.entry.summary.subject)) }
                                td { (field(&line.entry.reasons.join("; "))) }
                                @if let Some(links) = links {
                                    @let (release, delete) = line_links(links, line);
                                    td { a href=(release) { "Release" } " \u{b7} " a href=(delete) { "Delete" } }
                                }
                            }
                        }
                    }
                }
                @match links {
                    Some(links) => p { "The links act once, for " (to) " only. " a href=(console_url(links)) { "Open the quarantine console" } },
                    None => p { "If you expected one of these, ask your mail administrator to release it by its ID." },
                }
            }
        }
    };
    // The text as it is, so the list reads the same in any client: names and subjects in UTF-8
    // are common here, and every line is short (see `field`). The HTML is one long line: the
    // crate picks quoted-printable or base64 for it.
    let encoding = if text.is_ascii() { "7bit" } else { "8bit" };
    let body = MimePart::new(
        "multipart/alternative",
        vec![
            MimePart::new("text/plain", text).transfer_encoding(encoding),
            MimePart::new("text/html", html.into_string()),
        ],
    );
    to_bytes(
        generated_message(hostname, now_ms())
            .from(("Postern quarantine".to_string(), from.to_string()))
            .to(to.to_string())
            .subject(format!("Quarantine digest: {count} {plural} held"))
            .header("Auto-Submitted", Text::new("auto-generated"))
            .body(body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageSummary;

    fn snapshot() -> ConfigSnapshot {
        ConfigSnapshot::new(
            postern_api::load_gateway_config(
                "hostname: gw.test\nlisteners: [{address: '127.0.0.1:2525'}]\ndomains:\n  - name: served.test\n    primary: {hosts: ['mbox:25']}\n    groups:\n      - {address: team, members: [a], moderator: boss}\n      - {address: open, members: [a]}\n",
            )
            .unwrap(),
        )
    }

    fn held(id: &str, rcpts: &[&str], subject: &str) -> QuarantineEntry {
        QuarantineEntry {
            id: id.into(),
            sender: "s@x.test".into(),
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
            reasons: vec!["spf=softfail (x.test)".into()],
            client_ip: "192.0.2.1".into(),
            created_at: 1_000,
            expires_at: 2_000,
            policy: "p".into(),
            flags: None,
            summary: MessageSummary {
                subject: subject.into(),
                from: "S <s@x.test>".into(),
                ..Default::default()
            },
            body: Vec::new(),
        }
    }

    #[test]
    fn digests_go_to_recipients_moderators_and_the_admin() {
        let cfg = snapshot();
        let mut policy = SpamPolicyConfig::default();
        policy.notifications.admin = Some("admin@served.test".into());
        let entries = [
            held("q1", &["u@served.test", "team@served.test"], "Grüße"),
            held("q2", &["open@served.test"], "two"),
        ];
        let digests = compose(&cfg, &policy, &entries, 0, None);
        let mut readers: Vec<(Vec<String>, String)> = digests
            .iter()
            .map(|d| {
                let rcpts = d.jobs.iter().flat_map(|j| &j.recipients).map(|r| r.address.clone()).collect();
                (rcpts, String::from_utf8(d.message.body.clone()).unwrap())
            })
            .collect();
        readers.sort();
        let names: Vec<_> = readers.iter().map(|(r, _)| r.join(",")).collect();
        // The moderated group goes to its moderator, the unmoderated one to the admin (once).
        assert_eq!(
            names,
            ["admin@served.test", "boss@served.test,admin@served.test", "u@served.test,admin@served.test"]
        );
        let (_, admin_digest) = &readers[0];
        assert!(admin_digest.contains("Subject: two") && !admin_digest.contains("Grüße"), "{admin_digest}");
        let (_, user_digest) = &readers[2];
        assert!(user_digest.contains("1 message for u@served.test was held"), "{user_digest}");
        assert!(
            user_digest.contains("Subject: Grüße\r\nReason:  spf=softfail (x.test)\r\nID:      q1"),
            "{user_digest}"
        );
        assert!(digests.iter().all(|d| d.jobs.iter().all(|j| !j.bounce)), "digests never bounce");
    }

    #[test]
    fn digest_links_act_for_the_recipient_the_reader_stands_for() {
        let cfg = snapshot();
        let key = SecretKey::new(&[4; 32]);
        let links = DigestLinks { key: &key, public_url: "https://p.test/" };
        let entries = [held("q1", &["team@served.test"], "for the team")];
        let digests = compose(&cfg, &SpamPolicyConfig::default(), &entries, 0, Some(&links));
        assert_eq!(digests.len(), 1);
        let body = String::from_utf8(digests[0].message.body.clone()).unwrap();
        assert!(body.contains("Content-Type: multipart/alternative"), "{body}");
        assert!(body.contains("Content-Type: text/html"), "{body}");
        assert!(body.contains("All held mail: https://p.test/console/"), "{body}");
        let token = |action: &str| {
            let line = body.lines().find(|l| l.starts_with(action)).unwrap();
            line.split("?t=").nth(1).unwrap().to_string()
        };
        // The moderator's links act for the group's address, the recipient of the held mail.
        let release = Link::open(&key, &token("Release: "), 0).unwrap();
        assert_eq!(
            (release.action, release.id.as_str(), release.recipient.as_str()),
            (LinkAction::Release, "q1", "team@served.test")
        );
        assert_eq!(release.expires, 2_000, "a link lasts as long as the entry");
        assert_eq!(Link::open(&key, &token("Delete:  "), 0).unwrap().action, LinkAction::Delete);
        assert!(body.lines().all(|l| l.len() < 998), "every line fits SMTP");
    }
}
