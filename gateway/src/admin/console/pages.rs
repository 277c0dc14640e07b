//! The console's pages, as maud templates: HTML written in Rust, checked when the gateway is
//! built, every value escaped unless a template says otherwise (only the cleaned HTML body
//! does). Plain forms and links, no script: every action works with a keyboard, a screen reader
//! or a phone, and the Content-Security-Policy can forbid scripts altogether.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use postern_api::admin::{AccountAuthorization, HeldMessage};

use super::message::View;

/// Time as people read it in a list.
pub fn when(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms.min(i64::MAX as u64) as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.0} KB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Who is signed in, and the token their forms carry.
pub struct Signed<'a> {
    pub user: &'a str,
    pub csrf: &'a str,
}

pub fn layout(title: &str, signed: Option<&Signed>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " \u{2014} Postern" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Console" {
                        a.brand href="/console/" { "Postern" }
                        @if let Some(s) = signed {
                            a href="/console/" { "Quarantine" }
                            a href="/console/accounts" { "Sending accounts" }
                            span.user { "Signed in as " strong { (s.user) } }
                            form.inline method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn message_page(text: &str) -> Markup {
    html! { p { (text) } }
}

pub fn login(open: bool, error: Option<&str>, csrf: &str) -> Markup {
    html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if open {
            p { "This gateway's admin endpoint has no authentication configured (no admin.tokenFile, no admin.kubernetes): anyone who reaches it may review the quarantine." }
            form method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" { "Enter" }
            }
        } @else {
            form.login method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "Token" }
                p.hint #token-hint { "A token of the gateway's admin.tokenFile, or your Kubernetes token (for example the output of " code { "kubectl create token NAME" } "). It is kept only in this browser's session cookie." }
                input #token type="password" name="token" autocomplete="current-password" required aria-describedby="token-hint";
                button type="submit" { "Sign in" }
            }
        }
    }
}

/// The search form's fields.
#[derive(Default)]
pub struct SearchForm<'a> {
    pub q: &'a str,
    pub field: &'a str,
    pub since: &'a str,
    pub until: &'a str,
    pub oldest_first: bool,
}

pub const SEARCH_FIELDS: [(&str, &str); 7] = [
    ("all", "Whole message"),
    ("subject", "Subject"),
    ("sender", "Sender"),
    ("to", "To / Cc"),
    ("body", "Content"),
    ("attachment", "Attachment name"),
    ("attachment_text", "Attachment content"),
];

pub struct Page<'a> {
    pub entries: &'a [HeldMessage],
    pub total: usize,
    pub first: usize,
    /// Links to the previous and next page, with the search kept.
    pub previous: Option<String>,
    pub next: Option<String>,
}

pub fn list(signed: &Signed, search: &SearchForm, page: &Page) -> Markup {
    html! {
        form.search method="get" action="/console/" role="search" {
            div.field {
                label for="q" { "Search" }
                input #q type="search" name="q" value=(search.q);
            }
            div.field {
                label for="in" { "In" }
                select #in name="in" {
                    @for (value, label) in SEARCH_FIELDS {
                        option value=(value) selected[search.field == value] { (label) }
                    }
                }
            }
            div.field {
                label for="since" { "Held from" }
                input #since type="date" name="since" value=(search.since);
            }
            div.field {
                label for="until" { "to" }
                input #until type="date" name="until" value=(search.until);
            }
            div.field {
                label for="sort" { "Order" }
                select #sort name="sort" {
                    option value="newest" selected[!search.oldest_first] { "Newest first" }
                    option value="oldest" selected[search.oldest_first] { "Oldest first" }
                }
            }
            button type="submit" { "Search" }
        }
        @if page.entries.is_empty() {
            p.empty { "No held message matches." }
        } @else {
            form method="post" action="/console/act" {
                input type="hidden" name="csrf" value=(signed.csrf);
                div.actions {
                    span { (page.first + 1) "\u{2013}" (page.first + page.entries.len()) " of " (page.total) }
                    button type="submit" name="action" value="deliver" { "Deliver selected" }
                    button.danger type="submit" name="action" value="delete" { "Delete selected" }
                }
                table.held {
                    caption.visually-hidden { "Held messages" }
                    thead { tr {
                        th scope="col" { span.visually-hidden { "Select" } }
                        th scope="col" { "Held" } th scope="col" { "From" } th scope="col" { "To" }
                        th scope="col" { "Subject" } th scope="col" { "Reason" } th scope="col" { "Domain" }
                    } }
                    tbody {
                        @for e in page.entries {
                            @let subject = if e.summary.subject.is_empty() { "(no subject)" } else { e.summary.subject.as_str() };
                            tr {
                                td data-label="Select" { input type="checkbox" name="id" value=(e.id) aria-label={ "Select \u{201c}" (subject) "\u{201d}" }; }
                                td data-label="Held" { time datetime=(e.held_at) { (when(e.created_at)) } }
                                td data-label="From" { (sender_of(e)) }
                                td data-label="To" { (e.recipients.join(", ")) }
                                td data-label="Subject" { a href={ "/console/m/" (e.id) } { (subject) } }
                                td data-label="Reason" { ul.reasons { @for r in &e.reasons { li { (r) } } } }
                                td data-label="Domain" { (domains(e)) }
                            }
                        }
                    }
                }
            }
            nav.pages aria-label="Pages" {
                @if let Some(p) = &page.previous { a rel="prev" href=(p) { "\u{2190} Newer" } }
                @if let Some(n) = &page.next { a rel="next" href=(n) { "Older \u{2192}" } }
            }
        }
    }
}

fn sender_of(e: &HeldMessage) -> &str {
    if e.summary.from.is_empty() { &e.sender } else { &e.summary.from }
}

/// The recipients' domains.
fn domains(e: &HeldMessage) -> String {
    let mut d: Vec<&str> = e.recipients.iter().filter_map(|r| r.rsplit_once('@').map(|(_, d)| d)).collect();
    d.sort_unstable();
    d.dedup();
    d.join(", ")
}

pub fn detail(signed: &Signed, e: &HeldMessage, headers: &[(String, String)], view: &View) -> Markup {
    html! {
        form.actions method="post" action="/console/act" {
            input type="hidden" name="csrf" value=(signed.csrf);
            input type="hidden" name="id" value=(e.id);
            button type="submit" name="action" value="deliver" { "Deliver" }
            button.danger type="submit" name="action" value="delete" { "Delete" }
            a href={ "/console/m/" (e.id) "/raw" } download { "Download the message (.eml)" }
            a href="/console/" { "Back to the list" }
        }
        dl.facts {
            dt { "From" } dd { (sender_of(e)) }
            dt { "Envelope sender" } dd { (if e.sender.is_empty() { "<>" } else { &e.sender }) }
            dt { "Recipients" } dd { (e.recipients.join(", ")) }
            dt { "Subject" } dd { (e.summary.subject) }
            dt { "Held" } dd { (when(e.created_at)) " by policy " (e.policy) " (kept until " (when(e.expires_at)) ")" }
            dt { "Client" } dd { (e.client_ip) }
            dt { "Size" } dd { (size(e.summary.size)) }
            dt { "Why" } dd { ul.reasons { @for r in &e.reasons { li { (r) } } } }
        }
        @if !view.authentication.is_empty() {
            h2 { "Authentication results" }
            ul.auth { @for a in &view.authentication { li { code { (a) } } } }
        }
        @if !view.attachments.is_empty() {
            h2 { "Attachments" }
            table.attachments {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "Size" } } }
                tbody { @for a in &view.attachments { tr {
                    td data-label="Name" { a href={ "/console/m/" (e.id) "/part/" (a.index) } download { (a.name) } }
                    td data-label="Type" { (a.content_type) }
                    td data-label="Size" { (size(a.size as u64)) }
                } } }
            }
        }
        @if let Some(html_body) = &view.html {
            h2 { "HTML body (made safe: no scripts, no remote content)" }
            div.html-body { (PreEscaped(html_body)) }
        }
        @if let Some(text) = &view.text {
            h2 { "Text body" }
            pre.text-body { (text) }
        }
        h2 { "Headers" }
        table.headers {
            thead { tr { th scope="col" { "Field" } th scope="col" { "Value" } } }
            tbody { @for (name, value) in headers { tr { th scope="row" { (name) } td { (value) } } } }
        }
    }
}

/// One message to act on, as the confirmation and the result list it.
pub struct Target {
    pub id: String,
    pub subject: String,
    pub sender: String,
    /// The result, once acted.
    pub result: Option<Result<String, String>>,
}

pub fn confirm(signed: &Signed, action: &str, targets: &[Target]) -> Markup {
    let verb = if action == "delete" { "Delete" } else { "Deliver" };
    html! {
        p { (verb) " " (targets.len()) (if targets.len() == 1 { " message" } else { " messages" })
            (if action == "delete" { "? Deleted messages cannot be brought back." } else { " to their recipients?" }) }
        ul.targets { @for t in targets { li { strong { (t.subject) } " from " (t.sender) } } }
        form.actions method="post" action="/console/act" {
            input type="hidden" name="csrf" value=(signed.csrf);
            input type="hidden" name="action" value=(action);
            input type="hidden" name="confirm" value="yes";
            @for t in targets { input type="hidden" name="id" value=(t.id); }
            button.danger[action == "delete"] type="submit" autofocus { (verb) }
            a href="/console/" { "Cancel" }
        }
    }
}

pub fn results(targets: &[Target]) -> Markup {
    html! {
        table.results {
            thead { tr { th scope="col" { "Message" } th scope="col" { "Result" } } }
            tbody { @for t in targets { tr {
                td data-label="Message" { (t.subject) " from " (t.sender) br; small { (t.id) } }
                @match &t.result {
                    Some(Ok(done)) => td.ok data-label="Result" { (done) },
                    Some(Err(why)) => td.failed data-label="Result" { "Not done: " (why) },
                    None => td data-label="Result" {},
                }
            } } }
        }
        p { a href="/console/" { "Back to the list" } }
    }
}

pub struct AccountRow<'a> {
    pub name: &'a str,
    pub from: &'a str,
    pub kind: String,
    pub authorization: Option<AccountAuthorization>,
}

pub fn accounts(signed: &Signed, rows: &[AccountRow]) -> Markup {
    html! {
        @if rows.is_empty() { p { "No sending account is configured." } }
        @else {
            table.accounts {
                thead { tr { th scope="col" { "Account" } th scope="col" { "From" } th scope="col" { "Type" } th scope="col" { "Authorization" } } }
                tbody { @for a in rows { tr {
                    td data-label="Account" { (a.name) }
                    td data-label="From" { (a.from) }
                    td data-label="Type" { (a.kind) }
                    td data-label="Authorization" {
                        @if let Some(auth) = &a.authorization {
                            span class=(if auth.authorized { "ok" } else { "failed" }) { (auth.detail) }
                            form.inline method="post" action={ "/console/accounts/" (a.name) "/authorize" } {
                                input type="hidden" name="csrf" value=(signed.csrf);
                                button type="submit" { (if auth.authorized { "Authorize again" } else { "Authorize" }) }
                            }
                        } @else { "\u{2014}" }
                    }
                } } }
            }
        }
    }
}

pub const CSS: &str = include_str!("console.css");
