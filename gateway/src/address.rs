//! Envelope addresses as they arrive and as they leave, shared by the inbound session,
//! routing, the spam checks and the outbound client.
//!
//! smtp-proto hands us addresses with their quoting removed: `<"ceo@corp.test> ENVID=q"@ext.test>`
//! arrives as `ceo@corp.test> ENVID=q@ext.test`. Written back out as it is, the next hop would
//! read another sender (and parameters) than the one we judged. So every address that leaves
//! goes through `to_wire`, which quotes a local part that is not a dot-atom (RFC 5321 4.1.2),
//! and addresses that no quoting can carry (control characters) are refused on the way in.

use std::borrow::Cow;

/// Why an address from a client was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Problem {
    /// NUL, ESC, VT, CR, LF and the other control characters: no RFC 5321 form carries them.
    ControlCharacter,
    /// No `@`, or nothing before or after it.
    MissingDomain,
    /// The domain is not a host name or an address literal.
    BadDomain,
}

/// Checks a non-empty address from MAIL or RCPT (unquoted, as smtp-proto gives it).
pub fn check(address: &str) -> Result<(), Problem> {
    if address.chars().any(|c| c.is_control()) {
        return Err(Problem::ControlCharacter);
    }
    let Some((local, domain)) = address.rsplit_once('@') else { return Err(Problem::MissingDomain) };
    if local.is_empty() || domain.is_empty() {
        return Err(Problem::MissingDomain);
    }
    if valid_domain(domain) { Ok(()) } else { Err(Problem::BadDomain) }
}

/// A host name (LDH labels; non-ASCII labels are allowed, SMTPUTF8 is checked elsewhere) or an
/// address literal in brackets.
fn valid_domain(domain: &str) -> bool {
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
        return ip.parse::<std::net::IpAddr>().is_ok();
    }
    domain.len() <= 255
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        })
}

/// The domain part of an address, lower case; `None` for an address without one.
pub fn domain_of(address: &str) -> Option<String> {
    address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).filter(|d| !d.is_empty())
}

/// `postmaster@...`, in any case.
pub fn is_postmaster(address: &str) -> bool {
    address.rsplit_once('@').is_some_and(|(local, _)| local.eq_ignore_ascii_case("postmaster"))
}

/// RFC 5321 atext (and non-ASCII, which SMTPUTF8 allows in a dot-atom).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_atom(local: &str) -> bool {
    !local.is_empty() && local.split('.').all(|part| !part.is_empty() && part.chars().all(is_atext))
}

/// The address as it goes into a MAIL FROM or RCPT TO path (between `<` and `>`), or into a
/// trace header: the local part quoted when it is not a dot-atom.
pub fn to_wire(address: &str) -> Cow<'_, str> {
    let Some((local, domain)) = address.rsplit_once('@') else { return Cow::Borrowed(address) };
    if is_dot_atom(local) {
        return Cow::Borrowed(address);
    }
    let mut out = String::with_capacity(address.len() + 4);
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str("\"@");
    out.push_str(domain);
    Cow::Owned(out)
}

/// The path a MAIL or RCPT command line names, between its `<` and `>`, as the client wrote it
/// (quotes kept). smtp-proto turns `<postmaster>` into the null path; this tells them apart.
pub fn raw_path(line: &[u8]) -> Option<&[u8]> {
    let start = line.iter().position(|&b| b == b'<')? + 1;
    let mut in_quote = false;
    let mut escaped = false;
    for (i, &b) in line[start..].iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_quote => escaped = true,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote => return Some(&line[start..start + i]),
            _ => {}
        }
    }
    None
}

/// `postmaster` without a domain: RFC 5321 4.5.1 requires it as a recipient.
pub fn is_bare_postmaster(path: &[u8]) -> bool {
    path.eq_ignore_ascii_case(b"postmaster")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_parts_that_need_quotes_get_them() {
        assert_eq!(to_wire("alice@example.com"), "alice@example.com");
        assert_eq!(to_wire("a.b+tag@example.com"), "a.b+tag@example.com");
        assert_eq!(to_wire("ceo@corp.test> ENVID=q@ext.test"), "\"ceo@corp.test> ENVID=q\"@ext.test");
        assert_eq!(to_wire("a..b@x.test"), "\"a..b\"@x.test");
        assert_eq!(to_wire("say \"hi\"\\@x.test"), "\"say \\\"hi\\\"\\\\\"@x.test");
        assert_eq!(to_wire("jörg@x.test"), "jörg@x.test");
        assert_eq!(to_wire(""), "");
    }

    #[test]
    fn control_characters_and_missing_domains_are_refused() {
        assert_eq!(check("a\u{1b}[31m@x.test"), Err(Problem::ControlCharacter));
        assert_eq!(check("a\u{0}@x.test"), Err(Problem::ControlCharacter));
        assert_eq!(check("a\u{b}@x.test"), Err(Problem::ControlCharacter));
        assert_eq!(check("alice@"), Err(Problem::MissingDomain));
        assert_eq!(check("@x.test"), Err(Problem::MissingDomain));
        assert_eq!(check("postmaster"), Err(Problem::MissingDomain));
        assert_eq!(check("a@x_y.test"), Err(Problem::BadDomain));
        assert_eq!(check("a@x..test"), Err(Problem::BadDomain));
        assert_eq!(check("a@[192.0.2.1]"), Ok(()));
        assert_eq!(check("a@[IPv6:2001:db8::1]"), Ok(()));
        assert_eq!(check("a b@x.test"), Ok(()));
        assert_eq!(check("jörg@bücher.test"), Ok(()));
    }

    #[test]
    fn raw_paths_keep_what_the_client_wrote() {
        assert_eq!(raw_path(b"MAIL FROM:<postmaster>\r\n"), Some(&b"postmaster"[..]));
        assert_eq!(raw_path(b"MAIL FROM:<>\r\n"), Some(&b""[..]));
        assert_eq!(raw_path(b"MAIL FROM:<\"a>b\"@c> SIZE=1\r\n"), Some(&b"\"a>b\"@c"[..]));
        assert_eq!(raw_path(b"MAIL FROM:<\"a\\\">\"@c>\r\n"), Some(&b"\"a\\\">\"@c"[..]));
        assert_eq!(raw_path(b"MAIL FROM:x\r\n"), None);
        assert!(is_bare_postmaster(b"PostMaster"));
    }
}
