//! `smtp-tls-sink`: what `smtp-sink -c` does, plus STARTTLS, for the TLS benchmark
//! (bench/tls.sh): accepts every message, keeps nothing, and after each one writes
//! `sess=N quit=N mesg=N tls=N resumed=N\r` to stdout (smtp-sink's count record, which the
//! harness's sinkwait.py reads, with how many sessions used TLS and how many of their
//! handshakes resumed an earlier session). Offers PIPELINING, 8BITMIME and STARTTLS; one
//! thread per connection; rustls with its default in-memory session cache (TLS 1.3 PSK and
//! TLS 1.2 session ids, no stateless tickets).
//!
//! Usage: smtp-tls-sink --tls CERT_FILE KEY_FILE HOST:PORT

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
struct Counts {
    sessions: AtomicU64,
    quits: AtomicU64,
    messages: AtomicU64,
    tls: AtomicU64,
    resumed: AtomicU64,
}

impl Counts {
    fn report(&self) {
        let line = format!(
            "sess={} quit={} mesg={} tls={} resumed={}\r",
            self.sessions.load(Ordering::Relaxed),
            self.quits.load(Ordering::Relaxed),
            self.messages.load(Ordering::Relaxed),
            self.tls.load(Ordering::Relaxed),
            self.resumed.load(Ordering::Relaxed),
        );
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }
}

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

enum Next {
    StartTls,
    Done,
}

/// One SMTP conversation on `io` until QUIT, STARTTLS or the end of the stream.
fn converse(io: &mut BufReader<Box<dyn Conn>>, tls: bool, counts: &Counts) -> std::io::Result<Next> {
    let mut line = Vec::with_capacity(128);
    let mut in_data = false;
    loop {
        line.clear();
        if io.read_until(b'\n', &mut line)? == 0 {
            return Ok(Next::Done);
        }
        if in_data {
            if line == b".\r\n" {
                in_data = false;
                counts.messages.fetch_add(1, Ordering::Relaxed);
                counts.report();
                reply(io, b"250 2.0.0 Ok: queued\r\n")?;
            }
            continue;
        }
        let verb: Vec<u8> = line.iter().take(4).map(u8::to_ascii_uppercase).collect();
        match verb.as_slice() {
            b"EHLO" => {
                let starttls = if tls { "" } else { "250-STARTTLS\r\n" };
                let r = format!(
                    "250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n{starttls}250 SIZE 0\r\n"
                );
                reply(io, r.as_bytes())?;
            }
            b"HELO" => reply(io, b"250 sink.bench.test\r\n")?,
            b"STAR" if !tls => {
                reply(io, b"220 2.0.0 Ready to start TLS\r\n")?;
                return Ok(Next::StartTls);
            }
            b"DATA" => {
                in_data = true;
                reply(io, b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
            }
            b"QUIT" => {
                counts.quits.fetch_add(1, Ordering::Relaxed);
                reply(io, b"221 2.0.0 Bye\r\n")?;
                return Ok(Next::Done);
            }
            b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => reply(io, b"250 2.0.0 Ok\r\n")?,
            _ => reply(io, b"502 5.5.2 Error: command not recognized\r\n")?,
        }
    }
}

/// Writes a reply unless more pipelined commands are already buffered (they are answered
/// together, as a pipelining server does).
fn reply(io: &mut BufReader<Box<dyn Conn>>, bytes: &[u8]) -> std::io::Result<()> {
    let more = !io.buffer().is_empty();
    let w = io.get_mut();
    w.write_all(bytes)?;
    if !more { w.flush() } else { Ok(()) }
}

fn serve(tcp: TcpStream, config: Arc<rustls::ServerConfig>, counts: Arc<Counts>) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    counts.sessions.fetch_add(1, Ordering::Relaxed);
    let mut io: BufReader<Box<dyn Conn>> = BufReader::new(Box::new(tcp.try_clone()?));
    reply(&mut io, b"220 sink.bench.test ESMTP\r\n")?;
    if let Next::StartTls = converse(&mut io, false, &counts)? {
        let mut server = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
        let mut raw = tcp;
        while server.is_handshaking() {
            server.complete_io(&mut raw)?;
        }
        counts.tls.fetch_add(1, Ordering::Relaxed);
        if server.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            counts.resumed.fetch_add(1, Ordering::Relaxed);
        }
        let mut io: BufReader<Box<dyn Conn>> =
            BufReader::new(Box::new(rustls::StreamOwned::new(server, raw)));
        converse(&mut io, true, &counts)?;
    }
    counts.report();
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [flag, cert, key, addr] = args.as_slice() else {
        eprintln!("usage: smtp-tls-sink --tls CERT_FILE KEY_FILE HOST:PORT");
        return std::process::ExitCode::from(2);
    };
    if flag != "--tls" {
        eprintln!("usage: smtp-tls-sink --tls CERT_FILE KEY_FILE HOST:PORT");
        return std::process::ExitCode::from(2);
    }
    let files = postern_tests::tls::LeafFiles { cert: Path::new(cert).into(), key: Path::new(key).into() };
    let config = postern_tests::tls::server_config(&files);
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bind {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let counts = Arc::new(Counts::default());
    for tcp in listener.incoming().flatten() {
        let (config, counts) = (config.clone(), counts.clone());
        std::thread::spawn(move || {
            let _ = serve(tcp, config, counts);
        });
    }
    std::process::ExitCode::SUCCESS
}
