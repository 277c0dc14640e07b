//! The CLI's client for the admin API: plain HTTP/1.0 to the admin port (loopback or a pod's
//! port-forward), so the CLI needs no HTTP stack of its own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};

/// Sends one request; returns the status and body. Non-2xx is an error naming the status.
pub fn request(admin: SocketAddr, method: &str, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(5))
        .with_context(|| format!("cannot reach the admin API at {admin}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {admin}\r\nContent-Length: 0\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status: u16 = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    if !(200..300).contains(&status) {
        bail!("{method} {path}: HTTP {status}: {}", body.trim());
    }
    Ok(body)
}
