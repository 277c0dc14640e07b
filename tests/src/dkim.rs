//! DKIM signatures made by an independent implementation: Python's dkimpy (from PyPI;
//! scripts/install-test-deps.sh installs it), with a test-only RSA key kept in
//! tests/fixtures. The DNS record for the key comes from `key_record`.

use std::io::Write;
use std::process::{Command, Stdio};

pub const SELECTOR: &str = "test2026";

const KEY_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/dkim-test-key.pem");

/// Where the key is published: `<selector>._domainkey.<domain>`.
pub fn key_name(domain: &str) -> String {
    format!("{SELECTOR}._domainkey.{domain}")
}

/// The TXT record publishing the public key.
pub fn key_record() -> String {
    format!("v=DKIM1; k=rsa; p={}", include_str!("../fixtures/dkim-test-key.pub.b64").trim())
}

/// `message` (CRLF or LF lines) with a DKIM-Signature for `domain` prepended
/// (relaxed/relaxed, the usual header set), as CRLF text.
pub fn sign(message: &str, domain: &str) -> String {
    let message = message.replace("\r\n", "\n").replace('\n', "\r\n");
    let script = r#"
import sys, dkim
msg = sys.stdin.buffer.read()
heads = [h for h in (b'from', b'to', b'cc', b'subject', b'date', b'message-id', b'mime-version', b'content-type')]
sig = dkim.sign(msg, sys.argv[1].encode(), sys.argv[2].encode(), open(sys.argv[3], 'rb').read(),
                canonicalize=(b'relaxed', b'relaxed'), include_headers=heads, linesep=b'\r\n')
sys.stdout.buffer.write(sig + msg)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, SELECTOR, domain, KEY_PATH])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dkimpy failed (scripts/install-test-deps.sh installs it)");
    String::from_utf8(out.stdout).unwrap()
}

/// Verifies the DKIM signature of `message` with dkimpy (an independent verifier), fetching the
/// key from the DNS server at `dns` (dnspython). Returns dkimpy's verdict.
pub fn verify_with_dns(message: &str, dns: std::net::SocketAddr) -> bool {
    let script = r#"
import sys, dkim, dns.resolver
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [sys.argv[1]]
resolver.port = int(sys.argv[2])
def dnsfunc(name, timeout=5):
    answer = resolver.resolve(name.decode().rstrip('.'), 'TXT', lifetime=timeout)
    return b''.join(b''.join(r.strings) for r in answer)
sys.exit(0 if dkim.verify(sys.stdin.buffer.read(), dnsfunc=dnsfunc) else 1)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, &dns.ip().to_string(), &dns.port().to_string()])
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    child.wait().unwrap().success()
}
