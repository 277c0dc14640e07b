//! The users file: `name:hash[:senders]` per line, as htpasswd writes it (so existing user bases
//! import as they are), with an optional third field: the addresses (`alice@example.com`) and
//! domains (`@example.com`) the user may send as, comma-separated. `#` starts a comment line.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::password::Scheme;

/// One user. (`Debug` leaves the hash out, so no log line can carry it.)
#[derive(PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub(super) hash: String,
    /// Lower-case addresses the user may send as.
    addresses: HashSet<String>,
    /// Lower-case domains whose every address the user may send as.
    domains: HashSet<String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("addresses", &self.addresses)
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Whether the user may use `address` as a sender (MAIL FROM, header From). A user whose
    /// name is an address may always send as itself.
    pub fn may_send_as(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        let is_own_name = address.contains('@') && address.eq_ignore_ascii_case(&self.name);
        if is_own_name || self.addresses.contains(&address) {
            return true;
        }
        crate::address::domain_of(&address).is_some_and(|d| self.domains.contains(&d))
    }
}

/// A line of the file that cannot be used, by line number (from 1). The message never holds
/// the hash.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Every user of a file, by name (names are compared exactly, as htpasswd does).
pub fn parse(text: &str) -> Result<HashMap<String, Arc<User>>, LineError> {
    let mut users = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| LineError { line: i + 1, message };
        let mut fields = line.splitn(3, ':');
        let name = fields.next().unwrap_or_default().trim();
        let hash = fields.next().map(str::trim).unwrap_or_default();
        if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(err("a user name must be non-empty, without spaces or control characters".into()));
        }
        let shown = format!("{name:?}");
        if Scheme::of(hash).is_none() {
            return Err(err(format!(
                "user {shown}: unsupported password hash (use argon2id, bcrypt or SHA-crypt $5$/$6$)"
            )));
        }
        let (mut addresses, mut domains) = (HashSet::new(), HashSet::new());
        for entry in fields.next().unwrap_or_default().split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let lower = entry.to_ascii_lowercase();
            if let Some(domain) = lower.strip_prefix('@') {
                if !postern_api::validate::is_domain_name(domain) {
                    return Err(err(format!("user {shown}: {entry:?} is not @ and a domain name")));
                }
                domains.insert(domain.to_string());
            } else if crate::address::check(&lower).is_ok() && lower.contains('@') {
                addresses.insert(lower);
            } else {
                return Err(err(format!("user {shown}: {entry:?} is not an address or @domain")));
            }
        }
        let user = User { name: name.to_string(), hash: hash.to_string(), addresses, domains };
        if users.insert(name.to_string(), Arc::new(user)).is_some() {
            return Err(err(format!("user {shown} is listed twice")));
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$5$saltsalt$i1q2ZQzc.tl/BQ6CHiENAcVDvEY6nJ1OWlWXKh94b1.";

    #[test]
    fn htpasswd_lines_and_sender_lists() {
        let text =
            format!("# users\n\nalice@example.com:{HASH}\nbot:{HASH}:noreply@example.com, @Example.ORG\r\n");
        let users = parse(&text).unwrap();
        let alice = &users["alice@example.com"];
        assert!(alice.may_send_as("Alice@Example.com"));
        assert!(!alice.may_send_as("bob@example.com"));
        let bot = &users["bot"];
        assert!(bot.may_send_as("noreply@example.com"));
        assert!(bot.may_send_as("anyone@example.org"));
        assert!(!bot.may_send_as("bot"));
        assert!(!bot.may_send_as("x@sub.example.org"));
        assert!(!users.contains_key("Bot"));
    }

    #[test]
    fn bad_lines_are_named_without_their_hash() {
        let cases = [
            ("alice:plaintext\n", 1, "unsupported password hash"),
            (&*format!("a:{HASH}\nb:{HASH}:not-an-address\n"), 2, "is not an address"),
            (&*format!("a:{HASH}\na:{HASH}\n"), 2, "listed twice"),
            (&*format!("\n a b:{HASH}\n"), 2, "user name"),
            (&*format!("a:{HASH}:@bad..domain\n"), 1, "domain name"),
        ];
        for (text, line, what) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text}");
            assert!(e.message.contains(what), "{e}");
            assert!(!e.message.contains(HASH) && !e.message.contains("plaintext"), "{e}");
        }
    }
}
