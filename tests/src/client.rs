//! A blocking SMTP client for tests that need to see every reply (bad input, pipelining,
//! limits). For "a real mail client" tests use swaks (`swaks()`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One SMTP reply: its code and its lines' text joined by '\n'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn starts(&self, code_and_status: &str) -> bool {
        format!("{} {}", self.code, self.text).starts_with(code_and_status)
    }
}

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

pub struct Client {
    reader: BufReader<Box<dyn Conn>>,
    tcp: TcpStream,
    pub greeting: Reply,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).expect("connect to gateway");
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // Replies are awaited after small writes: without this, Nagle + delayed ACK add 40 ms.
        tcp.set_nodelay(true).unwrap();
        let mut reader = BufReader::new(Box::new(tcp.try_clone().unwrap()) as Box<dyn Conn>);
        let greeting = read_reply(&mut reader).expect("greeting");
        Self { reader, tcp, greeting }
    }

    /// Connects from the loopback address `local` (any 127.x.y.z works on Linux), so a test
    /// can be a client whose IP has (or has not) reverse DNS of its own, unlike 127.0.0.1
    /// which /etc/hosts names.
    pub fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let tcp = rt
            .block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(local, 0))?;
                socket.connect(addr).await
            })
            .and_then(|s| s.into_std())
            .expect("connect to gateway");
        tcp.set_nonblocking(false).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut reader = BufReader::new(Box::new(tcp.try_clone().unwrap()) as Box<dyn Conn>);
        let greeting = read_reply(&mut reader).expect("greeting");
        Self { reader, tcp, greeting }
    }

    /// Connects and sends `prefix` (e.g. a PROXY header) before reading anything.
    pub fn connect_with_prefix(addr: SocketAddr, prefix: &[u8]) -> Self {
        let mut tcp = TcpStream::connect(addr).expect("connect to gateway");
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(prefix).unwrap();
        let mut reader = BufReader::new(Box::new(tcp.try_clone().unwrap()) as Box<dyn Conn>);
        let greeting = read_reply(&mut reader).expect("greeting");
        Self { reader, tcp, greeting }
    }

    /// Like `connect`, but `None` when the server cannot be reached or does not greet with 220.
    pub fn try_connect(addr: SocketAddr, timeout: Duration) -> Option<Self> {
        let tcp = TcpStream::connect_timeout(&addr, timeout).ok()?;
        tcp.set_read_timeout(Some(timeout)).ok()?;
        tcp.set_nodelay(true).ok()?;
        let mut reader = BufReader::new(Box::new(tcp.try_clone().ok()?) as Box<dyn Conn>);
        let greeting = read_reply(&mut reader)?;
        (greeting.code == 220).then_some(Self { reader, tcp, greeting })
    }

    /// A second handle on the connection (e.g. to write from another thread).
    pub fn stream(&self) -> TcpStream {
        self.tcp.try_clone().unwrap()
    }

    /// Sends bytes; `None` when the connection is gone.
    pub fn try_send(&mut self, bytes: &[u8]) -> Option<()> {
        self.try_send_raw(bytes)
    }

    fn try_send_raw(&mut self, bytes: &[u8]) -> Option<()> {
        let w = self.reader.get_mut();
        w.write_all(bytes).ok()?;
        w.flush().ok()
    }

    fn try_cmd(&mut self, line: &str) -> Option<Reply> {
        self.try_send_raw(format!("{line}\r\n").as_bytes())?;
        read_reply(&mut self.reader)
    }

    /// EHLO; true when the server answered 250.
    pub fn try_ehlo(&mut self) -> bool {
        self.try_cmd("EHLO client.test").is_some_and(|r| r.code == 250)
    }

    /// One whole transaction (one recipient); `None` when the connection failed on the way.
    pub fn try_send_message(&mut self, from: &str, rcpt: &str, data: &str) -> Option<Reply> {
        for line in [format!("MAIL FROM:<{from}>"), format!("RCPT TO:<{rcpt}>"), "DATA".to_string()] {
            let r = self.try_cmd(&line)?;
            if r.code >= 400 {
                self.try_cmd("RSET");
                return Some(r);
            }
        }
        self.try_send_raw(data.as_bytes())?;
        self.try_send_raw(b".\r\n")?;
        read_reply(&mut self.reader)
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.tcp.set_read_timeout(Some(t)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.reader.get_mut();
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    pub fn read_reply(&mut self) -> Reply {
        read_reply(&mut self.reader).expect("a reply")
    }

    /// The next reply, or `None` when the server closed the connection.
    pub fn try_read_reply(&mut self) -> Option<Reply> {
        read_reply(&mut self.reader)
    }

    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    /// True once the server has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }

    /// STARTTLS, handshake against `ca` for `server_name`, and the new EHLO.
    pub fn starttls(mut self, ca: &Path, server_name: &str) -> (Self, Reply) {
        let r = self.cmd("STARTTLS");
        assert_eq!(r.code, 220, "{r:?}");
        let mut c = self.tls_handshake(ca, server_name);
        let ehlo = c.cmd("EHLO client.test");
        (c, ehlo)
    }

    /// The TLS handshake after the server's 220 to STARTTLS. Bytes the client sent before it
    /// (pipelined after STARTTLS) stay sent.
    pub fn tls_handshake(self, ca: &Path, server_name: &str) -> Self {
        let config = crate::tls::client_config(ca);
        let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let tls = rustls::StreamOwned::new(conn, self.tcp.try_clone().unwrap());
        Self { reader: BufReader::new(Box::new(tls)), tcp: self.tcp, greeting: self.greeting }
    }

    /// A whole transaction; returns the final reply.
    pub fn send_message(&mut self, from: &str, rcpts: &[&str], data: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        if r.code != 250 {
            return r;
        }
        let mut accepted = 0;
        for rcpt in rcpts {
            if self.cmd(&format!("RCPT TO:<{rcpt}>")).code == 250 {
                accepted += 1;
            }
        }
        if accepted == 0 {
            return self.cmd("RSET");
        }
        self.send_data(data)
    }

    /// DATA with `data` (LF or CRLF lines, dot-stuffed here); returns the final reply.
    pub fn send_data(&mut self, data: &str) -> Reply {
        let r = self.cmd("DATA");
        if r.code != 354 {
            return r;
        }
        let mut body = data.replace("\r\n", "\n").replace('\n', "\r\n");
        if !body.ends_with("\r\n") {
            body.push_str("\r\n");
        }
        let stuffed =
            body.split("\r\n").map(|l| if l.starts_with('.') { format!(".{l}") } else { l.to_string() });
        let stuffed: Vec<String> = stuffed.collect();
        self.send_raw(stuffed.join("\r\n").as_bytes());
        self.send_raw(b".\r\n");
        self.read_reply()
    }
}

fn read_reply<R: BufRead>(reader: &mut R) -> Option<Reply> {
    let mut text = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.len() < 3 {
            return None;
        }
        let code: u16 = line[..3].parse().ok()?;
        text.push(line.get(4..).unwrap_or("").to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Some(Reply { code, text: text.join("\n") });
        }
    }
}

/// A minimal message with the headers a mail client would write.
pub fn message(from: &str, to: &str, subject: &str, body: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject}@client.test>\r\n\r\n{body}\r\n"
    )
}

/// Sends one message with swaks (a real, independent SMTP client). Returns swaks' exit status
/// and its transcript.
pub fn swaks(server: SocketAddr, from: &str, to: &str, extra: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args(["--server", &server.ip().to_string(), "--port", &server.port().to_string()])
        .args(["--from", from, "--to", to, "--helo", "client.test", "--timeout", "30"])
        .args(extra)
        .output()
        .expect("swaks is installed (scripts/install-test-deps.sh)");
    let transcript =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), transcript)
}
