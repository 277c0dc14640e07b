//! A real SMTP receiver that records every envelope it accepts: the "mailbox server",
//! "destination" and "sender's domain" of the end-to-end tests. It speaks ESMTP with
//! PIPELINING (replies in order, as a real server does), optional STARTTLS, and answers RCPT
//! as told per address.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one accepted transaction carried.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub helo: String,
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    /// The MAIL and RCPT command lines exactly as they arrived (without CRLF).
    pub command_lines: Vec<String>,
    pub tls: bool,
    /// The user that authenticated (AUTH PLAIN), if any.
    pub auth: Option<String>,
}

impl Envelope {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// How the sink answers.
#[derive(Clone, Default)]
pub struct Behavior {
    /// RCPT address (lower case) -> full reply line, e.g. "550 5.1.1 no such user".
    pub rcpt_replies: HashMap<String, String>,
    /// Reply to the end of data instead of 250 (e.g. "451 4.3.0 try later").
    pub data_reply: Option<String>,
    /// Offer STARTTLS with this server config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Offer AUTH PLAIN (after STARTTLS) and accept only this user and password.
    pub auth: Option<(String, String)>,
}

impl Behavior {
    pub fn reject(mut self, rcpt: &str, reply: &str) -> Self {
        self.rcpt_replies.insert(rcpt.to_ascii_lowercase(), reply.to_string());
        self
    }
}

pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Envelope>>>,
    connections: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
    accept_loop: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Open connections, closed by `stop` as a restarted server would.
    open: Arc<Mutex<Vec<TcpStream>>>,
}

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

impl Sink {
    pub fn start(behavior: Behavior) -> Self {
        Self::start_on(0, behavior)
    }

    /// Starts on a given port of 127.0.0.1 (0: any free port).
    pub fn start_on(port: u16, behavior: Behavior) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], port)), behavior)
    }

    /// Starts on a given loopback address, e.g. 127.0.0.2:PORT for a second "MX host" on the
    /// same port as the first (MX delivery uses one port for every host).
    pub fn start_at(addr: SocketAddr, behavior: Behavior) -> Self {
        let listener = TcpListener::bind(addr).expect("sink address free");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let behavior = Arc::new(behavior);
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accept_loop = {
            let (received, connections, stop, open) =
                (received.clone(), connections.clone(), stop.clone(), open.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    *connections.lock().unwrap() += 1;
                    if let Ok(clone) = stream.try_clone() {
                        open.lock().unwrap().push(clone);
                    }
                    let (received, behavior) = (received.clone(), behavior.clone());
                    std::thread::spawn(move || {
                        let _ = serve(stream, &behavior, &received);
                    });
                }
            })
        };
        Self { addr, received, connections, stop, accept_loop: Mutex::new(Some(accept_loop)), open }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// "127.0.0.1:PORT", for a destination's `hosts`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn received(&self) -> Vec<Envelope> {
        self.received.lock().unwrap().clone()
    }

    pub fn connections(&self) -> u32 {
        *self.connections.lock().unwrap()
    }

    /// Waits until at least `n` transactions arrived; returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Envelope> {
        crate::wait_for(&format!("{n} message(s) at sink {}", self.addr), timeout, || {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
    }

    /// Stops accepting and closes the listening socket (returns once it is closed).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept_loop.lock().unwrap().take() {
            let _ = t.join();
        }
        for conn in self.open.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(stream: TcpStream, behavior: &Behavior, received: &Mutex<Vec<Envelope>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    let mut conn: Box<dyn Conn> = Box::new(stream.try_clone()?);
    conn.write_all(b"220 sink.test ESMTP test sink\r\n")?;
    let mut tls = false;
    loop {
        match session(&mut conn, behavior, received, tls)? {
            Next::Close => return Ok(()),
            Next::StartTls => {
                let Some(config) = &behavior.tls else { return Ok(()) };
                let server = rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
                conn = Box::new(rustls::StreamOwned::new(server, stream.try_clone()?));
                tls = true;
            }
        }
    }
}

enum Next {
    Close,
    StartTls,
}

fn session(
    conn: &mut Box<dyn Conn>,
    behavior: &Behavior,
    received: &Mutex<Vec<Envelope>>,
    tls: bool,
) -> std::io::Result<Next> {
    let mut reader = BufReader::new(ReadHalf(conn));
    let mut helo = String::new();
    let mut env: Option<Envelope> = None;
    let mut authed: Option<String> = None;
    let mut out = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(Next::Close);
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            helo = cmd[4..].trim().to_string();
            env = None;
            let mut r = String::from("250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n");
            if behavior.tls.is_some() && !tls {
                r.push_str("250-STARTTLS\r\n");
            }
            if behavior.auth.is_some() && tls {
                r.push_str("250-AUTH PLAIN\r\n");
            }
            r.push_str("250 SIZE 100000000");
            r
        } else if upper == "STARTTLS" {
            write_reply(&mut reader, &mut out, "220 2.0.0 go ahead")?;
            return Ok(Next::StartTls);
        } else if upper.starts_with("AUTH PLAIN ") {
            use base64::Engine;
            let decoded =
                base64::engine::general_purpose::STANDARD.decode(cmd[11..].trim()).unwrap_or_default();
            let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
            match (&behavior.auth, parts.as_slice()) {
                (Some((u, p)), [_, user, pass]) if tls && user == &u.as_bytes() && pass == &p.as_bytes() => {
                    authed = Some(u.clone());
                    "235 2.7.0 authenticated".into()
                }
                _ => "535 5.7.8 bad credentials".into(),
            }
        } else if upper.starts_with("MAIL FROM:") {
            if behavior.auth.is_some() && authed.is_none() {
                "530 5.7.0 authentication required".into()
            } else {
                let from = angle(&cmd[10..]);
                env = Some(Envelope {
                    helo: helo.clone(),
                    from,
                    rcpts: vec![],
                    data: vec![],
                    command_lines: vec![cmd.clone()],
                    tls,
                    auth: authed.clone(),
                });
                "250 2.1.0 ok".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = angle(&cmd[8..]);
            match behavior.rcpt_replies.get(&rcpt.to_ascii_lowercase()) {
                Some(r) => r.clone(),
                None => match &mut env {
                    Some(e) => {
                        e.rcpts.push(rcpt);
                        e.command_lines.push(cmd.clone());
                        "250 2.1.5 ok".into()
                    }
                    None => "503 5.5.1 MAIL first".into(),
                },
            }
        } else if upper == "DATA" {
            match &env {
                Some(e) if !e.rcpts.is_empty() => {
                    write_reply(&mut reader, &mut out, "354 go ahead")?;
                    let data = read_data(&mut reader)?;
                    match &behavior.data_reply {
                        Some(r) => {
                            env = None;
                            r.clone()
                        }
                        None => {
                            let mut e = env.take().unwrap();
                            e.data = data;
                            received.lock().unwrap().push(e);
                            "250 2.0.0 queued".into()
                        }
                    }
                }
                _ => "554 5.5.1 no valid recipients".into(),
            }
        } else if upper == "RSET" {
            env = None;
            "250 2.0.0 ok".into()
        } else if upper == "NOOP" {
            "250 2.0.0 ok".into()
        } else if upper == "QUIT" {
            write_reply(&mut reader, &mut out, "221 2.0.0 bye")?;
            return Ok(Next::Close);
        } else {
            "500 5.5.1 unknown command".into()
        };
        write_reply(&mut reader, &mut out, &reply)?;
    }
}

/// Reads message data up to CRLF.CRLF, undoing dot-stuffing.
fn read_data<R: BufRead>(reader: &mut R) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(data);
        }
        let start = usize::from(line.starts_with(b".."));
        data.extend_from_slice(&line[start..]);
    }
}

fn write_reply(reader: &mut BufReader<ReadHalf<'_>>, out: &mut Vec<u8>, reply: &str) -> std::io::Result<()> {
    out.clear();
    out.extend_from_slice(reply.as_bytes());
    out.extend_from_slice(b"\r\n");
    reader.get_mut().0.write_all(out)?;
    reader.get_mut().0.flush()
}

fn angle(s: &str) -> String {
    let s = s.trim();
    match s.strip_prefix('<').and_then(|rest| rest.split_once('>')) {
        Some((inner, _)) => inner.to_string(),
        None => s.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// Lets a BufReader read from the connection while replies are written to it.
struct ReadHalf<'a>(&'a mut Box<dyn Conn>);

impl Read for ReadHalf<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn angle_strips_brackets_and_parameters() {
        assert_eq!(super::angle("<a@b.c> SIZE=10"), "a@b.c");
        assert_eq!(super::angle("<>"), "");
    }
}
