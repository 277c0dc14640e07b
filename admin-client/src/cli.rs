//! The admin API's commands for a person at a terminal, shared by `postern-gateway` (which
//! reaches the admin port directly) and `kubectl postern` (through the Kubernetes API server):
//! `quarantine` (tables by default, JSON with `--json`), `verification`, `accounts`.

use clap::{Args, Subcommand};

use crate::AdminClient;
use postern_api::admin::{HeldMessage, HeldMessageDetail, QuarantineSearch};

/// The search options (the words given are the `q` of the search).
#[derive(Args, Debug, Default)]
pub struct SearchArgs {
    #[arg(long)]
    pub subject: Option<String>,
    /// Envelope sender or From header.
    #[arg(long)]
    pub sender: Option<String>,
    /// Envelope recipient, To or Cc.
    #[arg(long)]
    pub to: Option<String>,
    /// Text of the message itself.
    #[arg(long)]
    pub body: Option<String>,
    /// Attachment file name.
    #[arg(long)]
    pub attachment: Option<String>,
    /// Text inside text attachments.
    #[arg(long)]
    pub attachment_text: Option<String>,
    /// Held at or after (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Held at or before (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many entries (default 1000).
    #[arg(long)]
    pub limit: Option<usize>,
}

impl SearchArgs {
    fn into_search(self, words: Vec<String>) -> QuarantineSearch {
        QuarantineSearch {
            q: (!words.is_empty()).then(|| words.join(" ")),
            subject: self.subject,
            sender: self.sender,
            to: self.to,
            body: self.body,
            attachment: self.attachment,
            attachment_text: self.attachment_text,
            since: self.since,
            until: self.until,
            limit: self.limit,
        }
    }
}

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// List held messages; the words given are searched for everywhere (headers, text,
    /// attachments), the options narrow the search.
    List {
        words: Vec<String>,
        #[command(flatten)]
        search: Box<SearchArgs>,
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

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// Each account, its server and its last connection test.
    List,
    /// Test an account's connection now; exits 1 when it fails.
    Test { name: String },
    /// Confirm a Direct account's address with the code its confirmation mail carried.
    Confirm { name: String, code: String },
    /// Mail a new confirmation request to a Direct account's address (the old one stops working).
    SendConfirmation { name: String },
    /// Print the consent link of an OAuth account (Microsoft365, Gmail): the mailbox's owner
    /// opens it and grants Postern the right to send.
    Authorize { name: String },
}

#[derive(Subcommand)]
pub enum VerificationCommand {
    /// Show each domain's verification state.
    List,
    /// Verify a domain's destination again now.
    Retry { domain: String },
}

pub async fn run_accounts(command: AccountsCommand, client: &AdminClient) -> anyhow::Result<Vec<u8>> {
    match command {
        AccountsCommand::List => to_json(&client.accounts().await?),
        AccountsCommand::Test { name } => {
            let result = client.test_account(&name).await?;
            anyhow::ensure!(result.ok, "account {name}: {}", result.detail);
            to_json(&result)
        }
        AccountsCommand::Confirm { name, code } => to_json(&client.confirm_account(&name, &code).await?),
        AccountsCommand::SendConfirmation { name } => to_json(&client.send_confirmation(&name).await?),
        AccountsCommand::Authorize { name } => to_json(&client.authorize_account(&name).await?),
    }
}

pub async fn run_verification(command: VerificationCommand, client: &AdminClient) -> anyhow::Result<Vec<u8>> {
    match command {
        VerificationCommand::List => to_json(&client.verifications().await?),
        VerificationCommand::Retry { domain } => to_json(&client.retry_verification(&domain).await?),
    }
}

/// Runs the command against the admin API at `admin`; returns what to print.
pub async fn run_quarantine(command: QuarantineCommand, admin: &AdminClient) -> anyhow::Result<Vec<u8>> {
    Ok(match command {
        QuarantineCommand::List { words, search, json: as_json } => {
            let found = admin.quarantine_search(&search.into_search(words)).await?;
            if as_json { to_json(&found)? } else { table(&found).into_bytes() }
        }
        QuarantineCommand::Show { id, raw: true } => admin.quarantine_raw(&id).await?,
        QuarantineCommand::Show { id, raw: false } => {
            details(&admin.quarantine_show(&id).await?).into_bytes()
        }
        QuarantineCommand::Release { id, by } => to_json(&admin.quarantine_release(&id, &who(by)).await?)?,
        QuarantineCommand::Delete { id, by } => to_json(&admin.quarantine_delete(&id, &who(by)).await?)?,
    })
}

/// Runs a command on a small runtime of its own and prints what it returns, or the error
/// named by `program`; the process's exit code.
pub fn run_and_print(
    program: &str,
    command: impl Future<Output = anyhow::Result<Vec<u8>>>,
) -> std::process::ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(command));
    match result {
        Ok(mut out) => {
            if !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &out);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// An answer as pretty JSON, for scripts (`--json`, and the commands without a table).
pub fn to_json(value: &impl serde::Serialize) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(value)?)
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn table(found: &[HeldMessage]) -> String {
    let mut out = format!(
        "{:<32}  {:<25}  {:<28}  {:<28}  {:<30}  {}\n",
        "ID", "HELD", "FROM", "TO", "SUBJECT", "REASONS"
    );
    for m in found {
        out.push_str(&format!(
            "{:<32}  {:<25}  {:<28}  {:<28}  {:<30}  {}\n",
            m.id,
            m.held_at,
            clip(&m.sender, 28),
            clip(&m.recipients.join(", "), 28),
            clip(&m.summary.subject, 30),
            m.reasons.join(", "),
        ));
    }
    out.push_str(&format!("{} held\n", found.len()));
    out
}

fn details(shown: &HeldMessageDetail) -> String {
    let m = &shown.message;
    let mut out = String::new();
    for (label, v) in [
        ("ID", m.id.clone()),
        ("Held at", m.held_at.clone()),
        ("Expires", m.expires.clone()),
        ("Client", m.client_ip.clone()),
        ("Sender", m.sender.clone()),
        ("Recipients", m.recipients.join(", ")),
        ("Policy", m.policy.clone()),
        ("Reasons", m.reasons.join(", ")),
        ("Attachments", m.summary.attachments.join(", ")),
    ] {
        out.push_str(&format!("{label:<12} {v}\n"));
    }
    out.push('\n');
    for (name, value) in &shown.headers {
        out.push_str(&format!("{name}: {value}\n"));
    }
    out
}
