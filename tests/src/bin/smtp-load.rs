//! `smtp-load`: a load client for the benchmarks that speaks what smtp-source cannot:
//! STARTTLS and AUTH PLAIN. It takes smtp-source's flags (`-s` sessions, `-m` messages, `-d`
//! keep the connection for the next message, `-l` payload bytes, `-M` HELO name, `-f` sender,
//! `-t` recipient, then host:port), so the shared harness runs it as `SMTP_SOURCE`, plus
//! `--starttls CA_FILE SERVER_NAME` and `--auth USER:PASSWORD`. One thread per session, one
//! command at a time (no pipelining, as smtp-source). Exits non-zero when a reply is not the
//! expected one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

struct Options {
    sessions: u64,
    messages: u64,
    keep: bool,
    size: usize,
    helo: String,
    from: String,
    to: String,
    server: String,
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    auth: Option<String>,
}

fn parse() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        sessions: 1,
        messages: 1,
        keep: false,
        size: 1000,
        helo: "load.test".into(),
        from: "sender@load.test".into(),
        to: "rcpt@example.test".into(),
        server: String::new(),
        tls: None,
        auth: None,
    };
    let value = |args: &mut dyn Iterator<Item = String>, flag: &str| {
        args.next().ok_or_else(|| format!("{flag} needs a value"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "-s" => o.sessions = value(&mut args, "-s")?.parse().map_err(|e| format!("-s: {e}"))?,
            "-m" => o.messages = value(&mut args, "-m")?.parse().map_err(|e| format!("-m: {e}"))?,
            "-l" => o.size = value(&mut args, "-l")?.parse().map_err(|e| format!("-l: {e}"))?,
            "-d" => o.keep = true,
            "-M" => o.helo = value(&mut args, "-M")?,
            "-f" => o.from = value(&mut args, "-f")?,
            "-t" => o.to = value(&mut args, "-t")?,
            "--auth" => o.auth = Some(value(&mut args, "--auth")?),
            "--starttls" => {
                let ca = value(&mut args, "--starttls")?;
                let name = value(&mut args, "--starttls")?;
                o.tls = Some((postern_tests::tls::client_config(Path::new(&ca)), name));
            }
            other if !other.starts_with('-') => o.server = other.to_string(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if o.server.is_empty() {
        return Err("usage: smtp-load [-s N] [-m N] [-d] [-l BYTES] [-M HELO] [-f FROM] [-t TO] [--starttls CA NAME] [--auth USER:PASSWORD] HOST:PORT".into());
    }
    Ok(o)
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

struct Session {
    io: BufReader<Box<dyn Conn>>,
}

impl Session {
    fn reply(&mut self) -> Result<u16, String> {
        loop {
            let mut line = String::new();
            if self.io.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".into());
            }
            if line.len() < 4 {
                return Err(format!("bad reply {line:?}"));
            }
            if line.as_bytes()[3] != b'-' {
                return line[..3].parse().map_err(|_| format!("bad reply {line:?}"));
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let w = self.io.get_mut();
        w.write_all(bytes).and_then(|()| w.flush()).map_err(|e| e.to_string())
    }

    fn cmd(&mut self, line: &str, want: u16) -> Result<(), String> {
        self.send(format!("{line}\r\n").as_bytes())?;
        match self.reply()? {
            code if code == want => Ok(()),
            code => Err(format!("{line:?} got {code}, wanted {want}")),
        }
    }
}

fn open(o: &Options) -> Result<Session, String> {
    let tcp = TcpStream::connect(&o.server).map_err(|e| format!("connect {}: {e}", o.server))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut s = Session { io: BufReader::new(Box::new(tcp.try_clone().map_err(|e| e.to_string())?)) };
    if s.reply()? != 220 {
        return Err("no 220 greeting".into());
    }
    s.cmd(&format!("EHLO {}", o.helo), 250)?;
    if let Some((config, name)) = &o.tls {
        s.cmd("STARTTLS", 220)?;
        let server = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(config.clone(), server).map_err(|e| e.to_string())?;
        s = Session { io: BufReader::new(Box::new(rustls::StreamOwned::new(conn, tcp))) };
        s.cmd(&format!("EHLO {}", o.helo), 250)?;
    }
    if let Some(credentials) = &o.auth {
        use base64::Engine as _;
        let (user, password) = credentials.split_once(':').ok_or("--auth wants USER:PASSWORD")?;
        let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        s.cmd(&format!("AUTH PLAIN {plain}"), 235)?;
    }
    Ok(s)
}

fn body(o: &Options) -> Vec<u8> {
    let mut b = format!("From: <{}>\r\nTo: <{}>\r\nSubject: load\r\n\r\n", o.from, o.to).into_bytes();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    while b.len() < o.size {
        b.extend_from_slice(line);
    }
    b.extend_from_slice(b".\r\n");
    b
}

fn run_session(o: &Options, count: u64, body: &[u8], sent: &AtomicU64) -> Result<(), String> {
    let mut session = None;
    for _ in 0..count {
        let s = match &mut session {
            Some(s) => s,
            None => session.insert(open(o)?),
        };
        s.cmd(&format!("MAIL FROM:<{}>", o.from), 250)?;
        s.cmd(&format!("RCPT TO:<{}>", o.to), 250)?;
        s.cmd("DATA", 354)?;
        s.send(body)?;
        if s.reply()? != 250 {
            return Err("message not accepted".into());
        }
        sent.fetch_add(1, Ordering::Relaxed);
        if !o.keep
            && let Some(mut s) = session.take()
        {
            s.cmd("QUIT", 221)?;
        }
    }
    if let Some(mut s) = session {
        s.cmd("QUIT", 221)?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let o = match parse() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("smtp-load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let body = Arc::new(body(&o));
    let sent = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..o.sessions)
        .map(|i| {
            let (o, body, sent) = (o.clone(), body.clone(), sent.clone());
            let count = o.messages / o.sessions + u64::from(i < o.messages % o.sessions);
            std::thread::spawn(move || run_session(&o, count, &body, &sent))
        })
        .collect();
    let mut failed = false;
    for t in threads {
        if let Ok(Err(e)) | Err(e) = t.join().map_err(|_| "a session panicked".to_string()) {
            eprintln!("smtp-load: {e}");
            failed = true;
        }
    }
    eprintln!("smtp-load: {} messages accepted", sent.load(Ordering::Relaxed));
    if failed { std::process::ExitCode::from(1) } else { std::process::ExitCode::SUCCESS }
}
