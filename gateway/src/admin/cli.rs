//! The `quarantine` subcommand of the CLI: the admin API's quarantine endpoints for a person
//! at a terminal (tables by default, JSON with `--json`).

use std::net::SocketAddr;

use clap::Subcommand;
use serde_json::Value;

use super::client::request;
use crate::quarantine::Search;

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// List held messages; the words given are searched for everywhere (headers, text,
    /// attachments), the options narrow the search.
    List {
        words: Vec<String>,
        #[command(flatten)]
        search: Box<Search>,
        #[arg(long)]
        json: bool,
    },
    /// Show a held message's envelope, reasons and headers.
    Show {
        id: String,
        /// The whole message as stored.
        #[arg(long)]
        raw: bool,
    },
    /// Deliver a held message to its recipients (the spam checks are not run again).
    Release {
        id: String,
        /// Who releases it (logged); defaults to $USER.
        #[arg(long)]
        by: Option<String>,
    },
    /// Delete a held message.
    Delete {
        id: String,
        #[arg(long)]
        by: Option<String>,
    },
}

fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "cli".into())
}

fn query<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_urlencoded::to_string(value)?)
}

/// Runs the command against the admin API at `admin`; returns what to print.
pub fn run(command: QuarantineCommand, admin: SocketAddr) -> anyhow::Result<String> {
    match command {
        QuarantineCommand::List { words, mut search, json } => {
            search.q = (!words.is_empty()).then(|| words.join(" "));
            let found = request(admin, "GET", &format!("/api/v1/quarantine?{}", query(&search)?))?;
            if json {
                return Ok(found);
            }
            Ok(table(&serde_json::from_str(&found)?))
        }
        QuarantineCommand::Show { id, raw } => {
            if raw {
                return request(admin, "GET", &format!("/api/v1/quarantine/{id}/raw"));
            }
            let shown: Value =
                serde_json::from_str(&request(admin, "GET", &format!("/api/v1/quarantine/{id}"))?)?;
            Ok(details(&shown))
        }
        QuarantineCommand::Release { id, by } => {
            request(admin, "POST", &format!("/api/v1/quarantine/{id}/release?{}", query(&[("by", who(by))])?))
        }
        QuarantineCommand::Delete { id, by } => {
            request(admin, "DELETE", &format!("/api/v1/quarantine/{id}?{}", query(&[("by", who(by))])?))
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn table(found: &Value) -> String {
    let rows = found.as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{:<32}  {:<25}  {:<28}  {:<28}  {:<30}  {}\n",
        "ID", "HELD", "FROM", "TO", "SUBJECT", "REASONS"
    );
    for r in &rows {
        out.push_str(&format!(
            "{:<32}  {:<25}  {:<28}  {:<28}  {:<30}  {}\n",
            text(&r["id"]),
            text(&r["heldAt"]),
            clip(&text(&r["sender"]), 28),
            clip(&text(&r["recipients"]), 28),
            clip(&text(&r["summary"]["subject"]), 30),
            text(&r["reasons"]),
        ));
    }
    out.push_str(&format!("{} held\n", rows.len()));
    out
}

fn details(shown: &Value) -> String {
    let mut out = String::new();
    for (label, v) in [
        ("ID", &shown["id"]),
        ("Held at", &shown["heldAt"]),
        ("Expires", &shown["expires"]),
        ("Client", &shown["clientIp"]),
        ("Sender", &shown["sender"]),
        ("Recipients", &shown["recipients"]),
        ("Policy", &shown["policy"]),
        ("Reasons", &shown["reasons"]),
        ("Attachments", &shown["summary"]["attachments"]),
    ] {
        out.push_str(&format!("{label:<12} {}\n", text(v)));
    }
    out.push('\n');
    for h in shown["headers"].as_array().into_iter().flatten() {
        out.push_str(&format!("{}: {}\n", text(&h[0]), text(&h[1])));
    }
    out
}
