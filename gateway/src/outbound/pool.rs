//! Idle outbound connections kept for reuse, per destination. A connection is reused only if it
//! was used within the idle timeout; the reaper closes the rest politely.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::connection::Connection;

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Connection>>>,
}

impl Pool {
    pub fn take(&self, key: &str, idle_timeout: Duration) -> Option<Connection> {
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.get_mut(key)?;
        while let Some(conn) = list.pop() {
            if conn.last_used.elapsed() < idle_timeout {
                return Some(conn);
            }
            tokio::spawn(conn.quit());
        }
        None
    }

    pub fn put(&self, key: &str, conn: Connection) {
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string()).or_default().push(conn);
    }

    /// Closes connections idle for longer than `idle_timeout`.
    pub fn reap(&self, idle_timeout: Duration) {
        let mut stale = Vec::new();
        {
            let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            for list in map.values_mut() {
                let (keep, old): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|c| c.last_used.elapsed() < idle_timeout);
                *list = keep;
                stale.extend(old);
            }
            map.retain(|_, l| !l.is_empty());
        }
        for conn in stale {
            tokio::spawn(conn.quit());
        }
    }
}
