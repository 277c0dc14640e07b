//! PROXY protocol (v1 text and v2 binary) on listeners that enable it, so the real client IP
//! survives a load balancer. The header is read byte-exact before SMTP starts: nothing that
//! follows it is consumed here.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes (spec section 2.1).
const V1_MAX: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before the PROXY header ended")]
    Closed,
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
}

/// True when `bytes` look like the start of a PROXY header (v1 or v2).
pub fn looks_like_proxy_header(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PROXY ") || (bytes.len() >= 12 && bytes[..12] == V2_SIGNATURE[..])
}

/// Reads one PROXY header and returns the client address it carries. `None` means the
/// header says the connection is the proxy's own (v2 LOCAL, v1 UNKNOWN): keep the socket's peer.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyError> {
    tokio::time::timeout(timeout, read_header_inner(stream))
        .await
        .map_err(|_| ProxyError::Timeout(timeout))?
}

async fn read_header_inner<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = vec![0u8; 16];
    read_exact(stream, &mut buf[..5]).await?;
    if &buf[..5] == b"PROXY" {
        // v1: read up to CRLF, one byte at a time (the header is short and read once).
        buf.truncate(5);
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(ProxyError::Invalid("v1 header longer than 107 bytes".into()));
            }
            let mut b = [0u8; 1];
            read_exact(stream, &mut b).await?;
            buf.push(b[0]);
        }
    } else if buf[..5] == V2_SIGNATURE[..5] {
        read_exact(stream, &mut buf[5..16]).await?;
        if buf[..12] != V2_SIGNATURE[..] {
            return Err(ProxyError::Invalid("bad v2 signature".into()));
        }
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        buf.resize(16 + len, 0);
        read_exact(stream, &mut buf[16..]).await?;
    } else {
        return Err(ProxyError::Invalid("the connection did not start with a PROXY header".into()));
    }
    parse_header(&buf)
}

async fn read_exact<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> Result<(), ProxyError> {
    stream.read_exact(buf).await.map(|_| ()).map_err(|_| ProxyError::Closed)
}

/// Parses one whole PROXY header (v1 or v2).
pub fn parse_header(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::{HeaderResult, v1, v2};
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (v2::Command::Local, _) => None,
            (_, v2::Addresses::IPv4(a)) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
            (_, v2::Addresses::IPv6(a)) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
            (_, other) => {
                return Err(ProxyError::Invalid(format!("unsupported v2 address family {other:?}")));
            }
        }),
        HeaderResult::V1(Err(e)) => Err(ProxyError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyError::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
        let mut r = bytes;
        read_header(&mut r, Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn v1_tcp4_gives_the_client_address_and_leaves_the_rest() {
        let mut input: &[u8] = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\r\nEHLO x\r\n";
        let addr = read_header(&mut input, Duration::from_secs(1)).await.unwrap();
        assert_eq!(addr, Some("192.0.2.7:40000".parse().unwrap()));
        assert_eq!(input, b"EHLO x\r\n");
    }

    #[tokio::test]
    async fn v2_proxy_ipv6() {
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "[2001:db8::1]:1234".parse::<SocketAddr>().unwrap(),
                "[2001:db8::2]:25".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        assert_eq!(read(&header).await.unwrap(), Some("[2001:db8::1]:1234".parse().unwrap()));
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors() {
        assert!(matches!(read(b"EHLO example\r\n").await, Err(ProxyError::Invalid(_))));
        assert!(matches!(read(b"PROXY TCP4 1.2.3.4").await, Err(ProxyError::Closed)));
        assert!(matches!(read(b"PROXY TCP4 nonsense here\r\n").await, Err(ProxyError::Invalid(_))));
        assert!(matches!(read(&[b'P'; 200]).await, Err(ProxyError::Invalid(_))));
    }
}
