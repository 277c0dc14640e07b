//! The fuzz targets' bodies: each takes the fuzzer's bytes, runs the code that parses hostile
//! input, and checks a property, not only "no panic". The engine (AFL++, through afl.rs) lives
//! in `fuzz/`; these functions are also run over the seed corpus by the unit tests below, so
//! the properties hold in every `cargo test`.
//!
//! - `session`: bytes into a whole inbound session (in-memory `MemoryStore`), on port 25 or, when
//!   byte 0 asks, on a submission listener with TLS up (AUTH PLAIN/LOGIN with one user whose
//!   password the seeds know, sender restrictions). One queued message per
//!   `250 ... queued`, the same replies however the bytes are split into reads, and each queued
//!   message is what the client sent (after dot-unstuffing and CRLF normalisation) and what the
//!   next hop will read back from our dot-stuffed copy.
//! - `data`: the DATA reader against the plain decoder, for any split of the bytes.
//! - `proxy`: the PROXY v1/v2 parser: never reads past the header, agrees with a one-shot parse.
//! - `received`: the Received-header parser: an address it returns is written in the input.
//! - `config`: the config loader: a config it accepts survives a YAML round trip unchanged.
//! - `content`: the spam content rules: judging a single text/plain message on its headers
//!   alone gives what the full MIME parse gives.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::context::Context;
use crate::smtp::framing::{DataReader, decode_data_plainly};
use crate::smtp::session::{Flow, Session};
use crate::store::Store;
use crate::store::memory::MemoryStore;

/// What the session target's gateway serves. Failed logins cost no delay and never lock out,
/// so the two runs of one input (whole and split) see the same replies.
const CONFIG: &str = r#"
hostname: fuzz.test
listeners: [{name: smtp, address: "127.0.0.1:0"}]
limits: {maxMessageSize: 1048576, maxRecipients: 20}
domains:
  - name: served.test
    primary: {hosts: ["127.0.0.1:9"], tls: {mode: none}}
auth:
  failedLogins: {delay: 0s, maxDelay: 0s, max: 4000000000}
"#;

/// The one user of the submission sessions: "fuzz@served.test", password "s3cret" (bcrypt at
/// cost 4, so a check costs about a millisecond), who may also send as anyone @fuzz.test.
const USERS: &str =
    "fuzz@served.test:$2b$04$abcdefghijklmnopqrstuuLZYjhNQAOdpbzt4WxWlUHjv1wsyH5DG:@fuzz.test\n";

/// The envelope the session target puts before the fuzzer's bytes when its first byte asks.
const ENVELOPE: &[u8] = b"EHLO fuzz.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@served.test>\r\nDATA\r\n";

struct Harness {
    runtime: tokio::runtime::Runtime,
    ctx: Arc<Context>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let mut config = postern_api::load_gateway_config(CONFIG).expect("fuzz config");
        let users = std::env::temp_dir().join(format!("postern-fuzz-users-{}", std::process::id()));
        std::fs::write(&users, USERS).expect("users file");
        config.auth.users_file = Some(users);
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let tls = crate::tls::server::TlsAcceptors::load(&config.listeners).expect("no TLS");
        let ctx = Arc::new(Context::new(config, store, tls).expect("gateway context"));
        Harness { runtime, ctx }
    })
}

/// Builds the targets' shared state (a gateway on a `MemoryStore`, a current-thread runtime).
/// The fuzz mains call it before AFL++'s fork server starts, so each forked child starts from
/// a built gateway instead of loading certificates and config again. Nothing here starts a
/// thread, which keeps the fork safe.
pub fn init() {
    harness();
}

/// One session's replies (queue ids masked) and the message bodies it queued.
struct Run {
    replies: String,
    queued_replies: usize,
    messages: Vec<Vec<u8>>,
}

/// Runs `input` through one session, `step` bytes a read. `submission`: on a submission
/// listener whose TLS handshake is done (there is no TLS engine here: the session is told so).
async fn run_session(gateway: &Arc<Context>, input: &[u8], step: usize, submission: bool) -> Run {
    let client: SocketAddr = "192.0.2.1:40000".parse().expect("address");
    let mut listener = postern_api::Listener::new("smtp", client);
    if submission {
        listener.role = postern_api::ListenerRole::Submission;
    }
    let mut session = Session::new(gateway.clone(), &listener, client, submission);
    if submission {
        session.tls_started(crate::tls::TlsInfo { version: "TLSv1.3", cipher: "fuzz".into() });
    } else {
        session.greeting();
    }
    let mut out = session.take_output();
    for chunk in input.chunks(step.max(1)) {
        let flow = session.ingest(chunk).await;
        out.extend(session.take_output());
        if flow != Flow::Continue {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let mut replies = String::with_capacity(text.len());
    let mut queued_replies = 0;
    for line in text.split_inclusive("\r\n") {
        assert!(
            line.len() >= 6 && line.ends_with("\r\n") && line.as_bytes()[..3].iter().all(u8::is_ascii_digit),
            "malformed reply line {line:?}"
        );
        assert!(matches!(line.as_bytes()[3], b' ' | b'-'), "malformed reply line {line:?}");
        assert!(!line[..line.len() - 2].contains(['\r', '\n']), "line break inside a reply: {line:?}");
        match line.find("queued as ") {
            Some(at) => {
                queued_replies += 1;
                replies.push_str(&line[..at]);
                replies.push_str("queued as ID\r\n");
            }
            None => replies.push_str(line),
        }
    }
    // Everything queued since the last run: leased, read and settled, so the store is empty again.
    let store = &gateway.store;
    let mut messages = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let now = crate::util::time::now_ms();
    for job in store.lease(now + 1, 10_000, Duration::from_secs(60)).await.expect("lease") {
        if seen.insert(job.message_id.clone()) {
            let msg = store.load_message(&job.message_id).await.expect("load").expect("message of a job");
            messages.push(msg.body);
        }
        store.complete(&job, None).await.expect("complete");
    }
    Run { replies, queued_replies, messages }
}

/// The session target. Byte 0: bit 0 puts a valid envelope up to DATA before the rest; bits
/// 1..=4 choose how the bytes are split into reads for the second run; bit 5 makes it a
/// submission session with TLS up.
pub fn session(input: &[u8]) {
    let Some((&flags, rest)) = input.split_first() else { return };
    let mut bytes = Vec::with_capacity(rest.len() + ENVELOPE.len());
    if flags & 1 == 1 {
        bytes.extend_from_slice(ENVELOPE);
    }
    bytes.extend_from_slice(rest);
    let step = 1 + usize::from(flags >> 1 & 0x0f);
    let submission = flags & 0x20 != 0;
    let h = harness();
    h.runtime.block_on(async {
        let whole = run_session(&h.ctx, &bytes, bytes.len(), submission).await;
        let split = run_session(&h.ctx, &bytes, step, submission).await;
        for run in [&whole, &split] {
            assert_eq!(run.queued_replies, run.messages.len(), "one queued message per 250");
            for body in &run.messages {
                assert_crlf_only(body);
                let (relayed, used) = decode_data_plainly(&crate::outbound::dot_stuff(body))
                    .expect("a dot-stuffed copy ends with its mark");
                assert_eq!(&relayed, body, "the next hop reads back what we stored");
                assert_eq!(used, crate::outbound::dot_stuff(body).len());
            }
        }
        assert_eq!(whole.replies, split.replies, "replies depend on how the bytes were split");
        // With the envelope in front, the first message is exactly what the client sent. (Not
        // in a submission session: there the envelope is refused before any login, and a 354
        // in the replies belongs to a later transaction.)
        if flags & 1 == 1
            && !submission
            && let Some((sent, _)) = decode_data_plainly(rest)
            && whole.replies.contains("354 ")
        {
            let body = whole.messages.first().expect("the DATA after a valid envelope is queued");
            let expected = crate::smtp::received::normalize_line_endings(&sent);
            assert!(body.ends_with(&expected), "stored message differs from the one sent");
            let trace = &body[..body.len() - expected.len()];
            assert!(trace.starts_with(b"Received: ") && trace.ends_with(b"\r\n"));
        }
    });
}

fn assert_crlf_only(body: &[u8]) {
    for (i, &b) in body.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(body.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert!(i > 0 && body[i - 1] == b'\r', "bare LF at {i}"),
            _ => {}
        }
    }
}

/// The DATA reader target. Byte 0 chooses the read size.
pub fn data(input: &[u8]) {
    let Some((&step, data)) = input.split_first() else { return };
    let step = 1 + usize::from(step % 32);
    let mut reader = DataReader::new();
    let mut out = Vec::new();
    let mut end = None;
    let mut offset = 0;
    for chunk in data.chunks(step) {
        if let Some(n) = reader.feed(chunk, &mut out) {
            end = Some(offset + n);
            break;
        }
        offset += chunk.len();
    }
    match decode_data_plainly(data) {
        Some((expected, used)) => {
            assert_eq!(end, Some(used), "the end of data is found at the same byte");
            assert_eq!(out, expected, "the same message");
        }
        None => assert_eq!(end, None, "an end found where there is no <CRLF>.<CRLF>"),
    }
}

/// The PROXY header target: read from a stream, the header is consumed byte-exact and gives the
/// same answer as a one-shot parse of the same bytes.
pub fn proxy(input: &[u8]) {
    let h = harness();
    h.runtime.block_on(async {
        let mut reader = input;
        let streamed = crate::smtp::proxy::read_header(&mut reader, Duration::from_secs(1)).await;
        if let Ok(addr) = &streamed {
            let used = input.len() - reader.len();
            let header = &input[..used];
            assert!(crate::smtp::proxy::looks_like_proxy_header(header));
            assert_eq!(crate::smtp::proxy::parse_header(header).ok().as_ref(), Some(addr));
        }
    });
}

/// The Received-header target: an address found is one of the bracketed literals of the input.
pub fn received(input: &[u8]) {
    if let Some(ip) = crate::smtp::received::original_client_ip(input) {
        let text = String::from_utf8_lossy(input);
        let literals: Vec<std::net::IpAddr> = text
            .split('[')
            .skip(1)
            .filter_map(|part| part.split(']').next()?.trim_start_matches("IPv6:").parse().ok())
            .collect();
        assert!(literals.contains(&ip), "{ip} is not a bracketed address of the input");
    }
}

/// The content-rules target: `spam::content::check`, which skips the body of a message that is
/// one text/plain part, finds what the rules find on the fully parsed message, for any bytes.
pub fn content(input: &[u8]) {
    use crate::spam::content;
    let rules = content::rules::all_on();
    let full = content::parse(input).map(|m| content::check_parsed(&rules, &m)).unwrap_or_default();
    assert_eq!(content::check(&rules, input), full);
}

/// The config loader target: what it accepts, it accepts again after a round trip (as JSON,
/// which is YAML too), unchanged.
pub fn config(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let Ok(config) = postern_api::load_gateway_config(text) else { return };
    let again = serde_json::to_string(&config).expect("an accepted config serialises");
    let reparsed = postern_api::load_gateway_config(&again).expect("a serialised config loads again");
    assert_eq!(config, reparsed, "round trip changed the config");
}

#[cfg(test)]
mod tests {
    /// Every seed in `fuzz/seeds/<target>/` through its target: the properties hold on them.
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            out.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
        assert!(!out.is_empty(), "no seeds in {}", dir.display());
        out
    }

    /// One test for everything that queues through the shared harness: two tests running at
    /// once would lease each other's messages.
    #[test]
    fn session_seeds_hold() {
        seeds("session").iter().for_each(|s| super::session(s));
        // The submission seeds reach what they are for: a login, a message, a refusal.
        let h = super::harness();
        for (seed, queued) in [("auth-plain", 1), ("auth-login", 0)] {
            let path =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/session").join(seed);
            let input = std::fs::read(path).unwrap();
            let run = h.runtime.block_on(super::run_session(&h.ctx, &input[1..], input.len(), true));
            assert!(run.replies.contains("235 2.7.0"), "{seed}: {}", run.replies);
            assert_eq!(run.queued_replies, queued, "{seed}: {}", run.replies);
            assert!(run.replies.contains("553 5.7.1"), "{seed}: someone else's address: {}", run.replies);
        }
    }

    #[test]
    fn data_seeds_hold() {
        seeds("data").iter().for_each(|s| super::data(s));
    }

    #[test]
    fn proxy_seeds_hold() {
        seeds("proxy").iter().for_each(|s| super::proxy(s));
    }

    #[test]
    fn content_seeds_hold() {
        seeds("content").iter().for_each(|s| super::content(s));
    }

    #[test]
    fn received_seeds_hold() {
        seeds("received").iter().for_each(|s| super::received(s));
    }

    #[test]
    fn config_seeds_hold() {
        seeds("config").iter().for_each(|s| super::config(s));
    }
}
