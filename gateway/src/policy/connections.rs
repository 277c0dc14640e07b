//! Connection limits: in total and per client IP. A slot is held by a guard for the life of
//! the session and given back when the guard drops, whatever way the session ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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
    pub fn try_acquire(
        &self,
        ip: IpAddr,
        max_total: u32,
        max_per_ip: u32,
    ) -> Result<ConnectionSlot, Refusal> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
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

    #[test]
    fn limits_hold_and_slots_come_back() {
        let l = ConnectionLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.try_acquire(a, 3, 2).unwrap();
        let _s2 = l.try_acquire(a, 3, 2).unwrap();
        assert_eq!(l.try_acquire(a, 3, 2).err(), Some(Refusal::PerIp));
        let _s3 = l.try_acquire(b, 3, 2).unwrap();
        assert_eq!(l.try_acquire(b, 3, 2).err(), Some(Refusal::Total));
        drop(s1);
        assert!(l.try_acquire(a, 3, 2).is_ok());
    }
}
