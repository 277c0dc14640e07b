//! Wall-clock time as milliseconds since the Unix epoch (the unit the store keeps), and the
//! two ways it is written out: RFC 5322 in mail, RFC 3339 in the admin API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// An RFC 5322 date-time, e.g. "Mon, 23 Nov 2026 12:15:20 +0000".
pub fn rfc5322_now() -> String {
    rfc5322(now_ms())
}

/// `ms` (since the epoch) as an RFC 5322 date-time in UTC.
pub fn rfc5322(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// `ms` (since the epoch) as RFC 3339, for the admin API.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).map(|d| d.to_rfc3339()).unwrap_or_default()
}
