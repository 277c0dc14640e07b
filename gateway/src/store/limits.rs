//! Rate limits and failed-login counters: the types the `Store` methods take, the GCRA rule
//! every backend applies, and `LocalLimits`, the in-process backend of the embedded and memory
//! stores. The Redis store runs the same rule in one Lua script, on Redis's clock, so every
//! pod of a fleet shares one count.
//!
//! GCRA (the generic cell rate algorithm) keeps one number per key: the theoretical arrival time
//! (TAT). A limit of `limit` per `period` admits one unit every `period / limit`, with bursts up
//! to `limit`; a request of `cost` units is allowed when the TAT it would move to is at most
//! `period` ahead of now. One key, one number, no sliding-window bookkeeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// `cost` units against `limit` per `period` for `key` (a short string the caller builds,
/// e.g. "msg:ip:192.0.2.1").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateCheck {
    pub key: String,
    pub limit: u32,
    pub period: Duration,
    pub cost: u32,
}

/// The answer to a set of checks: all allowed (and counted), or the first one over its limit
/// (and nothing counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    Limited { index: usize, retry_after: Duration },
}

/// When failed logins lock a client out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures counted within this window (from the first one).
    pub window: Duration,
    /// This many failures in the window lock the client out.
    pub max_failures: u32,
    pub lockout: Duration,
}

/// After a failed login: the client's failures in the current window, and how long it is locked
/// out if this failure reached the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginFailures {
    pub failures: u32,
    pub locked_for: Option<Duration>,
}

/// The GCRA step for one key: `Ok(new TAT)` when `cost` more units fit, else `Err(ms until they
/// would)`. `tat` is the stored TAT (`None`: never seen or expired); times are ms.
pub fn gcra(tat: Option<u64>, now: u64, limit: u32, period_ms: u64, cost: u32) -> Result<u64, u64> {
    let interval = (period_ms / u64::from(limit.max(1))).max(1);
    let start = tat.unwrap_or(now).max(now);
    let new_tat = start.saturating_add(interval.saturating_mul(u64::from(cost)));
    let horizon = now.saturating_add(period_ms);
    if new_tat <= horizon { Ok(new_tat) } else { Err(new_tat - horizon) }
}

/// Past this many keys, expired ones are swept out; past `HARD_CAP`, new keys are not tracked
/// (allowed), so a flood from many addresses cannot grow the map without bound.
const SWEEP_AT: usize = 100_000;
const HARD_CAP: usize = 1_000_000;

/// Rate-limit TATs and failed-login counters held in this process (one gateway, no fleet).
#[derive(Default)]
pub struct LocalLimits {
    /// key -> (value, expires at ms): a TAT, a failure count or a lockout end.
    entries: Mutex<HashMap<String, (u64, u64)>>,
}

impl LocalLimits {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, u64)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sweep(map: &mut HashMap<String, (u64, u64)>, now: u64) {
        if map.len() >= SWEEP_AT {
            map.retain(|_, &mut (_, expires)| expires > now);
        }
    }

    fn live(map: &HashMap<String, (u64, u64)>, key: &str, now: u64) -> Option<u64> {
        map.get(key).filter(|&&(_, expires)| expires > now).map(|&(v, _)| v)
    }

    /// Forgets entries (TATs, failure counts, lockouts) that ended at or before `now` (ms).
    pub fn expire(&self, now: u64) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, &mut (_, expires)| expires > now);
        before - map.len()
    }

    /// All of `checks` or none, at `now` (ms).
    pub fn rate_limit(&self, checks: &[RateCheck], now: u64) -> RateDecision {
        let mut map = self.lock();
        Self::sweep(&mut map, now);
        let mut updates = Vec::with_capacity(checks.len());
        for (index, c) in checks.iter().enumerate() {
            let period = c.period.as_millis().try_into().unwrap_or(u64::MAX);
            match gcra(Self::live(&map, &c.key, now), now, c.limit, period, c.cost) {
                Ok(tat) => updates.push((c.key.as_str(), tat)),
                Err(wait) => {
                    return RateDecision::Limited { index, retry_after: Duration::from_millis(wait) };
                }
            }
        }
        for (key, tat) in updates {
            if map.len() < HARD_CAP || map.contains_key(key) {
                map.insert(key.to_string(), (tat, tat));
            }
        }
        RateDecision::Allowed
    }

    /// Counts a failed login of `client` at `now` (ms).
    pub fn login_failed(&self, client: &str, policy: &LockoutPolicy, now: u64) -> LoginFailures {
        let mut map = self.lock();
        Self::sweep(&mut map, now);
        let key = format!("lf:{client}");
        let window_end = now.saturating_add(policy.window.as_millis().try_into().unwrap_or(u64::MAX));
        let (count, expires) = match map.get(&key) {
            Some(&(n, expires)) if expires > now => (n.saturating_add(1), expires),
            _ => (1, window_end),
        };
        if map.len() < HARD_CAP || map.contains_key(&key) {
            map.insert(key, (count, expires));
        }
        let failures = u32::try_from(count).unwrap_or(u32::MAX);
        let locked_for = (failures >= policy.max_failures).then(|| {
            let end = now.saturating_add(policy.lockout.as_millis().try_into().unwrap_or(u64::MAX));
            map.insert(format!("ll:{client}"), (end, end));
            policy.lockout
        });
        LoginFailures { failures, locked_for }
    }

    /// How long `client` is still locked out at `now` (ms), if it is.
    pub fn login_locked(&self, client: &str, now: u64) -> Option<Duration> {
        let map = self.lock();
        Self::live(&map, &format!("ll:{client}"), now).map(|end| Duration::from_millis(end - now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_admits_a_burst_of_limit_then_one_per_interval() {
        // 3 per 60 s: one every 20 s, bursts of 3.
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra(tat, 1_000, 3, 60_000, 1).unwrap());
        }
        assert_eq!(gcra(tat, 1_000, 3, 60_000, 1), Err(20_000));
        assert_eq!(gcra(tat, 20_999, 3, 60_000, 1), Err(1));
        assert!(gcra(tat, 21_000, 3, 60_000, 1).is_ok());
        // An expired key starts over.
        assert_eq!(gcra(Some(500), 100_000, 3, 60_000, 1), Ok(120_000));
    }

    #[test]
    fn gcra_costs_and_extremes_do_not_overflow() {
        assert_eq!(gcra(None, 0, 10, 10_000, 10), Ok(10_000));
        assert_eq!(gcra(None, 0, 10, 10_000, 11), Err(1_000));
        // Saturates instead of wrapping: no panic, no allowance out of thin air.
        assert_eq!(gcra(Some(u64::MAX), 5, 1, 10, 1), Err(u64::MAX - 15));
        let _ = gcra(Some(u64::MAX), u64::MAX - 5, u32::MAX, u64::MAX, u32::MAX);
        assert!(gcra(None, 0, 0, 0, 0).is_ok());
    }

    #[test]
    fn a_refused_set_counts_nothing() {
        let l = LocalLimits::default();
        let a = RateCheck { key: "a".into(), limit: 5, period: Duration::from_secs(60), cost: 1 };
        let b = RateCheck { key: "b".into(), limit: 1, period: Duration::from_secs(60), cost: 1 };
        assert_eq!(l.rate_limit(&[a.clone(), b.clone()], 0), RateDecision::Allowed);
        assert_eq!(
            l.rate_limit(&[a.clone(), b.clone()], 0),
            RateDecision::Limited { index: 1, retry_after: Duration::from_secs(60) }
        );
        // "a" was not charged for the refused set: four more fit.
        for _ in 0..4 {
            assert_eq!(l.rate_limit(std::slice::from_ref(&a), 0), RateDecision::Allowed);
        }
        assert!(matches!(l.rate_limit(&[a], 0), RateDecision::Limited { index: 0, .. }));
    }

    #[test]
    fn failures_lock_out_at_the_limit_and_expire() {
        let l = LocalLimits::default();
        let p = LockoutPolicy {
            window: Duration::from_secs(60),
            max_failures: 3,
            lockout: Duration::from_secs(300),
        };
        assert_eq!(l.login_failed("ip", &p, 0), LoginFailures { failures: 1, locked_for: None });
        assert_eq!(l.login_failed("ip", &p, 1_000).failures, 2);
        assert_eq!(l.login_locked("ip", 1_000), None);
        assert_eq!(l.login_failed("ip", &p, 2_000).locked_for, Some(Duration::from_secs(300)));
        assert_eq!(l.login_locked("ip", 2_000), Some(Duration::from_secs(300)));
        assert_eq!(l.login_locked("other", 2_000), None);
        assert_eq!(l.login_locked("ip", 302_000), None);
        // The window started at the first failure: past it, counting starts over.
        assert_eq!(l.login_failed("ip", &p, 60_001).failures, 1);
    }
}
