//! Connection limits: in total and per client IP. A slot is held by a guard for the life of
//! the session and given back when the guard drops, whatever way the session ends. The last
//! `reservedTrustedConnections` slots are for trusted networks only, so a flood from untrusted
//! addresses cannot lock out the clients that send outbound mail.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use postern_api::Limits;

#[derive(Default)]
pub struct ConnectionLimiter {
    inner: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerIp,
}

pub struct ConnectionSlot {
    inner: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    pub fn try_acquire(&self, ip: IpAddr, trusted: bool, limits: &Limits) -> Result<ConnectionSlot, Refusal> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let max_total = if trusted {
            limits.max_connections
        } else {
            limits.max_connections.saturating_sub(limits.reserved_trusted_connections)
        };
        let max_per_ip = limits.max_connections_per_ip;
        if c.total >= max_total {
            return Err(Refusal::Total);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnectionSlot { inner: self.inner.clone(), ip })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: u32, per_ip: u32, reserved: u32) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            reserved_trusted_connections: reserved,
            ..Limits::default()
        }
    }

    #[test]
    fn limits_hold_and_slots_come_back() {
        let l = ConnectionLimiter::default();
        let lim = limits(3, 2, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.try_acquire(a, false, &lim).unwrap();
        let _s2 = l.try_acquire(a, false, &lim).unwrap();
        assert_eq!(l.try_acquire(a, false, &lim).err(), Some(Refusal::PerIp));
        let _s3 = l.try_acquire(b, false, &lim).unwrap();
        assert_eq!(l.try_acquire(b, false, &lim).err(), Some(Refusal::Total));
        drop(s1);
        assert!(l.try_acquire(a, false, &lim).is_ok());
    }

    #[test]
    fn reserved_slots_are_for_trusted_clients_only() {
        let l = ConnectionLimiter::default();
        let lim = limits(4, 1, 2);
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        let _u1 = l.try_acquire(ip(1), false, &lim).unwrap();
        let _u2 = l.try_acquire(ip(2), false, &lim).unwrap();
        assert_eq!(l.try_acquire(ip(3), false, &lim).err(), Some(Refusal::Total));
        let _t1 = l.try_acquire(ip(10), true, &lim).unwrap();
        let _t2 = l.try_acquire(ip(11), true, &lim).unwrap();
        assert_eq!(l.try_acquire(ip(12), true, &lim).err(), Some(Refusal::Total));
    }
}
