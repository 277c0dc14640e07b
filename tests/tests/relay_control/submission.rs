//! Authenticated submission end to end: the real gateway with a `submission` (587-style,
//! STARTTLS) and a `submissions` (465-style, implicit TLS) listener, a users file with argon2id,
//! bcrypt and SHA-crypt hashes, swaks (Debian) as the mail client, a real DNS server for the
//! outside recipient's MX and a recording receiver. Lockouts shared by two gateways run on a
//! real redis-server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use postern_api::{
    Destination, HumanDuration, ListenerRole, ListenerTls, MailDomainConfig, RedisStoreConfig, TlsPolicy,
};
use postern_tests::client::{Client, message, swaks};
use postern_tests::dns::{self, DnsServer};
use postern_tests::gateway::{GatewayConfig, GatewayProcess, binary};
use postern_tests::redis::RedisServer;
use postern_tests::reserve_port;
use postern_tests::sink::Sink;
use postern_tests::tls::TestCa;

const WAIT: Duration = Duration::from_secs(20);

/// libxcrypt's crypt(3) of "s3cret" (Python's crypt.crypt), so these users come from another
/// implementation than the gateway's.
const BCRYPT: &str = "$2b$04$abcdefghijklmnopqrstuuLZYjhNQAOdpbzt4WxWlUHjv1wsyH5DG";
const SHA512_CRYPT: &str =
    "$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1";

/// An argon2id hash made by `postern-gateway hash-password`, as an admin would make one.
fn argon2_hash(password: &str) -> String {
    let mut child = Command::new(binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct World {
    dns: DnsServer,
    mx_port: u16,
    /// The outside domain's MX (other.test), where relayed mail arrives.
    outside: Sink,
    /// served.test's mailbox server.
    primary: Sink,
    ca_file: PathBuf,
    users_file: PathBuf,
    cert: ListenerTls,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mx_port = reserve_port();
        let ca = TestCa::new();
        let leaf = ca.leaf(dir.path(), "gw", &["gw.test"]);
        let users_file = dir.path().join("users");
        std::fs::write(
            &users_file,
            format!(
                "# name:hash[:addresses and @domains it may send as]\nalice@served.test:{}\nbob:{BCRYPT}:bob@served.test,@bob.test\ncarol@served.test:{SHA512_CRYPT}\n",
                argon2_hash("s3cret")
            ),
        )
        .unwrap();
        Self {
            dns: DnsServer::start(vec![
                dns::mx("other.test", 10, "mx.other.test"),
                dns::a("mx.other.test", "127.0.0.3"),
            ]),
            outside: Sink::start_at(
                SocketAddr::new("127.0.0.3".parse().unwrap(), mx_port),
                Default::default(),
            ),
            primary: Sink::start(Default::default()),
            mx_port,
            ca_file: ca.write_ca(dir.path()),
            users_file,
            cert: ListenerTls { cert_file: leaf.cert, key_file: leaf.key },
            _dir: dir,
        }
    }

    /// A gateway serving served.test with a plain `smtp` listener, a `submission` and a
    /// `submissions` listener; `edit` adds what the test is about.
    fn config(&self, edit: impl FnOnce(&mut postern_api::GatewayConfig)) -> GatewayConfig {
        GatewayConfig::typed(|c| {
            let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
            for (name, role) in
                [("submission", ListenerRole::Submission), ("submissions", ListenerRole::Submissions)]
            {
                let mut l = postern_api::Listener::new(name, local);
                l.role = role;
                l.tls = Some(self.cert.clone());
                c.listeners.push(l);
            }
            c.auth.users_file = Some(self.users_file.clone());
            c.auth.failed_logins.delay = HumanDuration(Duration::from_millis(200));
            c.delivery.nameservers = vec![self.dns.addr];
            c.delivery.mx_port = self.mx_port;
            c.delivery.tls = TlsPolicy::NONE;
            let primary = Destination::hosts(&[&self.primary.host()], TlsPolicy::NONE);
            c.domains.push(MailDomainConfig::new("served.test", primary));
            edit(c);
        })
    }

    fn gateway(&self) -> GatewayProcess {
        GatewayProcess::start(&self.config(|_| {}))
    }

    /// A client on `listener` after STARTTLS (and its EHLO).
    fn tls_client(&self, gw: &GatewayProcess, listener: &str) -> Client {
        let mut c = Client::connect(gw.listeners[listener]);
        assert_eq!(c.cmd("EHLO client.test").code, 250);
        let (c, ehlo) = c.starttls(&self.ca_file, "gw.test");
        assert_eq!(ehlo.code, 250);
        c
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn users_of_every_hash_kind_submit_over_starttls_and_implicit_tls() {
    let world = World::new();
    let gw = world.gateway();
    let cases: [(&str, &str, &[&str]); 3] = [
        // argon2id, PLAIN over STARTTLS on the submission port.
        ("submission", "alice@served.test", &["--tls", "--auth", "PLAIN"]),
        // bcrypt, LOGIN over STARTTLS, sending as one of the domains listed for the user.
        ("submission", "bob", &["--tls", "--auth", "LOGIN"]),
        // SHA-512-crypt, LOGIN over implicit TLS.
        ("submissions", "carol@served.test", &["--tls-on-connect", "--auth", "LOGIN"]),
    ];
    for (n, (listener, user, how)) in cases.iter().enumerate() {
        let from = if *user == "bob" { "news@bob.test" } else { user };
        let mut args = how.to_vec();
        args.extend(["--auth-user", user, "--auth-password", "s3cret"]);
        let header = format!("Subject: case {n}");
        args.extend(["--header", &header]);
        let (ok, transcript) = swaks(gw.listeners[*listener], from, &format!("r{n}@other.test"), &args);
        assert!(ok, "{transcript}");
        assert!(transcript.contains("235 2.7.0 Authentication successful"), "{transcript}");
    }
    let got = world.outside.wait_for(3, WAIT);
    for (n, (_, _, _)) in cases.iter().enumerate() {
        let env = got.iter().find(|e| e.rcpts == [format!("r{n}@other.test")]).expect("relayed");
        assert!(env.text().contains("with ESMTPSA id"), "{}", env.text());
    }
    assert_eq!(gw.metric("postern_smtp_auth_attempts_total{result=\"success\"}"), Some(3.0));
    // The log names the user, never a password.
    let logins = gw.logs_matching("authenticated");
    assert_eq!(logins.len(), 3);
    assert!(logins.iter().any(|l| l["user"] == "bob"));
    let all: String = gw.logs().iter().map(|l| l.to_string()).collect();
    assert!(!all.contains("s3cret") && !all.contains(&b64("s3cret")));
}

#[test]
fn a_changed_users_file_takes_effect_without_a_restart() {
    let world = World::new();
    let gw = world.gateway();
    let login = |password: &str| {
        let mut c = world.tls_client(&gw, "submission");
        c.cmd(&format!("AUTH PLAIN {}", b64(&format!("\0bob\0{password}")))).code
    };
    assert_eq!(login("s3cret"), 235);
    let loads = gw.logs_matching("users file loaded").len();
    // The admin gives bob a new password (argon2id now) and adds dave, as a Secret update would.
    let text = std::fs::read_to_string(&world.users_file).unwrap();
    let bob_line = text.lines().find(|l| l.starts_with("bob:")).unwrap();
    let new_text = text.replace(bob_line, &format!("bob:{}:bob@served.test", argon2_hash("n3w-pass")))
        + &format!("dave@served.test:{}\n", argon2_hash("d4ve"));
    std::fs::write(&world.users_file, new_text).unwrap();
    postern_tests::wait_for("the users file re-read", WAIT, || {
        (gw.logs_matching("users file loaded").len() > loads).then_some(())
    });
    assert_eq!(login("n3w-pass"), 235);
    assert_eq!(login("s3cret"), 535, "the old password (remembered as a good login) no longer works");
    let mut dave = world.tls_client(&gw, "submission");
    assert_eq!(dave.cmd(&format!("AUTH PLAIN {}", b64("\0dave@served.test\0d4ve"))).code, 235);
    assert!(dave.cmd("MAIL FROM:<dave@served.test>").starts("250"));
}

#[test]
fn submission_wants_tls_before_auth_and_mail_and_a_user_before_mail() {
    let world = World::new();
    let gw = world.gateway();
    let mut plain = Client::connect(gw.listeners["submission"]);
    let ehlo = plain.cmd("EHLO client.test");
    assert!(ehlo.text.contains("STARTTLS") && !ehlo.text.contains("AUTH"), "{}", ehlo.text);
    let credentials = b64("\0alice@served.test\0s3cret");
    assert!(plain.cmd(&format!("AUTH PLAIN {credentials}")).starts("538 5.7.11"));
    assert!(plain.cmd("MAIL FROM:<alice@served.test>").starts("530 5.7.0 Must issue a STARTTLS"));

    let mut tls = world.tls_client(&gw, "submission");
    assert!(tls.cmd("MAIL FROM:<alice@served.test>").starts("530 5.7.0 Authentication required"));
    assert!(tls.cmd("AUTH CRAM-MD5").starts("504 5.5.4"));
    // LOGIN step by step; "*" cancels.
    assert_eq!(tls.cmd("AUTH LOGIN").text, "VXNlcm5hbWU6");
    assert!(tls.cmd("*").starts("501 5.0.0"));
    assert_eq!(tls.cmd("AUTH LOGIN").code, 334);
    assert_eq!(tls.cmd(&b64("alice@served.test")).text, "UGFzc3dvcmQ6");
    assert!(tls.cmd(&b64("s3cret")).starts("235 2.7.0"));
    assert!(tls.cmd("AUTH PLAIN").starts("503 5.5.1"));
    assert!(tls.cmd("MAIL FROM:<alice@served.test>").starts("250"));

    // Port 25 (role smtp) offers no AUTH, even under a client that asks.
    let mut mx = Client::connect(gw.smtp());
    assert!(!mx.cmd("EHLO client.test").text.contains("AUTH"));
    assert!(mx.cmd(&format!("AUTH PLAIN {credentials}")).starts("502"));
}

#[test]
fn a_user_sends_only_as_its_own_addresses() {
    let world = World::new();
    let gw = world.gateway();
    let mut c = world.tls_client(&gw, "submission");
    assert!(c.cmd(&format!("AUTH PLAIN {}", b64("\0alice@served.test\0s3cret"))).starts("235"));
    // Envelope: someone else's address.
    let r = c.cmd("MAIL FROM:<ceo@served.test>");
    assert!(r.starts("553 5.7.1"), "{r:?}");
    // Header: the envelope is alice's, the From is not.
    let forged = message("ceo@served.test", "x@other.test", "forged", "pay this invoice");
    let r = c.send_message("alice@served.test", &["x@other.test"], &forged);
    assert!(r.starts("553 5.7.1"), "{r:?}");
    // Her own mail, and a bounce-style null sender, go.
    let own = message("alice@served.test", "x@other.test", "own", "hello");
    assert!(c.send_message("alice@served.test", &["x@other.test"], &own).starts("250"));
    let reply = message("alice@served.test", "x@other.test", "auto-reply", "away");
    assert!(c.send_message("", &["x@other.test"], &reply).starts("250"));
    gw.wait_idle();
    let got: Vec<String> = world.outside.received().iter().map(|e| e.text()).collect();
    assert_eq!(got.len(), 2, "only her own messages left");
    for subject in ["Subject: own", "Subject: auto-reply"] {
        assert!(got.iter().any(|m| m.contains(subject)), "{subject} missing");
    }
    assert_eq!(
        gw.metric("postern_messages_total{outcome=\"rejected\",reason=\"sender_not_owned\"}"),
        Some(1.0)
    );
}

#[test]
fn an_unauthenticated_outside_client_cannot_relay_through_the_submission_port() {
    let world = World::new();
    let gw = world.gateway();
    // Wrong password: no relay, whatever port.
    let (ok, transcript) = swaks(
        gw.listeners["submission"],
        "alice@served.test",
        "x@other.test",
        &["--tls", "--auth", "PLAIN", "--auth-user", "alice@served.test", "--auth-password", "wrong"],
    );
    assert!(!ok);
    assert!(transcript.contains("535 5.7.8"), "{transcript}");
    let mut mx = Client::connect(gw.smtp());
    mx.cmd("EHLO client.test");
    mx.cmd("MAIL FROM:<x@elsewhere.test>");
    assert!(mx.cmd("RCPT TO:<x@other.test>").starts("554 5.7.1"));
    assert!(world.outside.received().is_empty());
}

/// Sends AUTH PLAIN with a wrong password and times the answer.
fn failed_login(c: &mut Client) -> (postern_tests::client::Reply, Duration) {
    let started = Instant::now();
    let r = c.cmd(&format!("AUTH PLAIN {}", b64("\0alice@served.test\0wrong")));
    (r, started.elapsed())
}

#[test]
fn failed_logins_are_slowed_then_locked_out_across_two_gateways() {
    let world = World::new();
    let redis = RedisServer::start();
    let shared = |c: &mut postern_api::GatewayConfig| {
        c.store =
            postern_api::StoreConfig { embedded: None, redis: Some(RedisStoreConfig::new(&redis.url())) };
        c.auth.failed_logins.max = 3;
        c.auth.failed_logins.lockout = HumanDuration::from_secs(600);
    };
    let a = GatewayProcess::start(&world.config(shared));
    let b = GatewayProcess::start(&world.config(shared));

    // Through A: each failure waits longer (200 ms, then 400 ms: failures times failedLogins.delay).
    let mut c = world.tls_client(&a, "submission");
    let (r, first) = failed_login(&mut c);
    assert!(r.starts("535 5.7.8"), "{r:?}");
    assert!(first >= Duration::from_millis(200), "{first:?}");
    let (r, second) = failed_login(&mut c);
    assert!(r.starts("535 5.7.8"), "{r:?}");
    assert!(second >= Duration::from_millis(400), "{second:?}");

    // The third failure, through B, reaches the limit: B counts A's failures too.
    let mut c = world.tls_client(&b, "submission");
    let (r, third) = failed_login(&mut c);
    assert!(r.starts("421 4.7.0"), "{r:?}");
    assert!(third >= Duration::from_millis(600), "{third:?}");
    assert!(c.is_closed());

    // Now both refuse the address at once, before any password is tried.
    for gw in [&a, &b] {
        let c = Client::connect(gw.listeners["submission"]);
        assert!(c.greeting.starts("421 4.7.0 Too many failed logins"), "{:?}", c.greeting);
    }
    // Port 25 still takes mail for the served domain from that address (no AUTH there).
    let mut mx = Client::connect(a.smtp());
    assert_eq!(mx.greeting.code, 220);
    mx.cmd("EHLO client.test");
    let m = message("x@elsewhere.test", "alice@served.test", "inbound", "hi");
    assert!(mx.send_message("x@elsewhere.test", &["alice@served.test"], &m).starts("250"));
    assert_eq!(world.primary.wait_for(1, WAIT).len(), 1);
    assert_eq!(a.metric("postern_smtp_auth_attempts_total{result=\"failure\"}"), Some(2.0));
    assert_eq!(b.metric("postern_smtp_auth_attempts_total{result=\"locked_out\"}"), Some(2.0));
}

#[test]
fn recipients_per_user_are_limited_whatever_the_address() {
    let world = World::new();
    let limit = postern_api::RateLimit {
        key: postern_api::RateKey::User,
        count: postern_api::RateCount::Recipients,
        limit: 3,
        per: HumanDuration::from_secs(3),
        exempt_trusted: true,
    };
    let gw = GatewayProcess::start(&world.config(|c| c.rate_limits = vec![limit]));
    let mut c = world.tls_client(&gw, "submission");
    assert!(c.cmd(&format!("AUTH PLAIN {}", b64("\0alice@served.test\0s3cret"))).starts("235"));
    let m = message("alice@served.test", "a@other.test", "two", "hi");
    assert!(c.send_message("alice@served.test", &["a@other.test", "b@other.test"], &m).starts("250"));
    // Two more would make four: refused whole, nothing counted...
    let r = c.send_message("alice@served.test", &["c@other.test", "d@other.test"], &m);
    assert!(r.starts("451 4.7.1 Rate limit for your user reached (3 recipients per 3s)"), "{r:?}");
    // ...so the third still fits, and then nothing more.
    assert!(c.send_message("alice@served.test", &["c@other.test"], &m).starts("250"));
    let r = c.send_message("alice@served.test", &["e@other.test"], &m);
    assert!(r.starts("451 4.7.1"), "{r:?}");
    // One recipient a second comes back: after the wait the reply named, the next one goes.
    let wait: u64 = r.text.split("try again in ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_secs(wait));
    assert!(c.send_message("alice@served.test", &["e@other.test"], &m).starts("250"));
    assert_eq!(world.outside.wait_for(3, WAIT).len(), 3);
}
