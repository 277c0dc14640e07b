//! Harness for Postern's end-to-end tests: the real `postern-gateway` binary, a real DNS
//! server (hickory) on loopback, real SMTP receivers, and SMTP clients. Every server binds
//! port 0 on 127.0.0.1, so tests never fight over fixed ports.
//!
//! Servers run on threads of their own, so a test may use blocking clients freely.

pub mod admin;
pub mod client;
pub mod dkim;
pub mod dns;
pub mod gateway;
pub mod redis;
pub mod sink;
pub mod tls;

use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port on 127.0.0.1 that was free a moment ago (for a server that must be started later
/// on a port the gateway's config already names).
pub fn reserve_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
