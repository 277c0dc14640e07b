//! Rate-limit leases: units of a shared limit that one pod took from Redis ahead of use.
//!
//! A shared limit costs Redis work on every message (read and write the limit's time in the
//! enqueue script). For a busy subject (an application server sending thousands of messages a
//! minute against a limit of millions a day) that work buys nothing: the limit is far away. So
//! when Redis admits a message, it may also grant the pod a few more units of the same limit,
//! which the pod spends locally during the next `WINDOW`; messages covered by such a lease queue
//! without touching the limit in Redis.
//!
//! The rules keep the shared count honest:
//! - Units are counted in Redis when granted, so the fleet never admits more than the limit.
//!   Units a lease does not spend before it ends are lost, so the fleet may admit a little less:
//!   per pod at most one window's use and at most 1% of the limit.
//! - A pod asks for as many extra units as it used in the previous window (a pod that saw one
//!   message gets none), never more than 1% of the limit: limits under 100 per period are always
//!   counted exactly, message by message, in Redis.
//! - Redis grants the extra units only when they fit; otherwise it counts the message alone.
//!
//! Pure bookkeeping (time is passed in), so the rules are unit-tested here; the Redis store
//! calls it around its scripts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::RateCheck;

/// How long granted units may be spent, and the window whose use sizes the next request.
pub const WINDOW: Duration = Duration::from_millis(250);
/// Past this many keys, idle ones are dropped (a flood from many addresses stays bounded).
const MAX_KEYS: usize = 10_000;

#[derive(Default)]
struct Lease {
    /// Units left to spend, until `until`.
    left: u64,
    until: Option<Instant>,
    /// Units this pod used in the current window (from `window_start`) and the previous one.
    used: u64,
    used_before: u64,
    window_start: Option<Instant>,
}

impl Lease {
    fn roll(&mut self, now: Instant) {
        match self.window_start {
            Some(start) if now.duration_since(start) < WINDOW => {}
            Some(start) => {
                // A window with no use in between means the previous one was idle.
                self.used_before = if now.duration_since(start) < 2 * WINDOW { self.used } else { 0 };
                self.used = 0;
                self.window_start = Some(now);
            }
            None => self.window_start = Some(now),
        }
        if self.until.is_some_and(|u| now >= u) {
            self.left = 0;
            self.until = None;
        }
    }

    fn idle(&self, now: Instant) -> bool {
        self.left == 0 && self.window_start.is_none_or(|s| now.duration_since(s) >= 2 * WINDOW)
    }
}

/// What to do with a set of checks: the ones a lease covered (already taken from it), and the
/// ones Redis must count, each with the extra units to ask for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub covered: Vec<usize>,
    pub ask: Vec<(usize, u64)>,
}

#[derive(Default)]
pub struct Leases {
    map: Mutex<HashMap<String, Lease>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes what leases cover (give it back with `give_back` if the set is refused), and says
    /// what Redis must count.
    pub fn plan(&self, checks: &[RateCheck], now: Instant) -> Plan {
        let mut map = self.lock();
        if map.len() >= MAX_KEYS {
            map.retain(|_, l| !l.idle(now));
        }
        let mut plan = Plan::default();
        for (i, c) in checks.iter().enumerate() {
            // Under 100 per period nothing is ever leased: no bookkeeping (a flood of client
            // addresses against a small per-IP limit keeps the table empty).
            if c.limit < 100 {
                plan.ask.push((i, 0));
                continue;
            }
            let cost = u64::from(c.cost);
            if !map.contains_key(&c.key) {
                if map.len() >= MAX_KEYS {
                    plan.ask.push((i, 0));
                    continue;
                }
                map.insert(c.key.clone(), Lease::default());
            }
            let Some(lease) = map.get_mut(&c.key) else {
                plan.ask.push((i, 0));
                continue;
            };
            lease.roll(now);
            if lease.left >= cost {
                lease.left -= cost;
                lease.used = lease.used.saturating_add(cost);
                plan.covered.push(i);
            } else {
                let cap = u64::from(c.limit / 100);
                plan.ask.push((i, lease.used_before.max(lease.used).min(cap)));
            }
        }
        plan
    }

    /// The set was refused: the covered units go back to their leases.
    pub fn give_back(&self, checks: &[RateCheck], plan: &Plan) {
        let mut map = self.lock();
        for &i in &plan.covered {
            if let Some(l) = map.get_mut(&checks[i].key) {
                let cost = u64::from(checks[i].cost);
                l.left = l.left.saturating_add(cost);
                l.used = l.used.saturating_sub(cost);
            }
        }
    }

    /// Redis admitted the set and granted `granted[k]` units for `plan.ask[k]` (its cost plus
    /// whatever extra fitted): the message's own units are used, the rest is a new lease.
    pub fn granted(&self, checks: &[RateCheck], plan: &Plan, granted: &[u64], now: Instant) {
        let mut map = self.lock();
        for (&(i, _), &g) in plan.ask.iter().zip(granted) {
            let Some(l) = map.get_mut(&checks[i].key) else { continue };
            let cost = u64::from(checks[i].cost);
            l.used = l.used.saturating_add(cost);
            let extra = g.saturating_sub(cost);
            if extra > 0 {
                // Units still left of an older lease end with it; the new ones get a full window.
                l.left = l.left.saturating_add(extra);
                l.until = Some(now + WINDOW);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, limit: u32, cost: u32) -> RateCheck {
        RateCheck { key: key.into(), limit, period: Duration::from_secs(3600), cost }
    }

    #[test]
    fn a_first_message_asks_for_nothing_extra_and_small_limits_never_do() {
        let leases = Leases::default();
        let t = Instant::now();
        let checks = [check("big", 1_000_000, 1), check("small", 99, 1)];
        for n in 0..50 {
            let plan = leases.plan(&checks, t + Duration::from_millis(n));
            assert_eq!(plan.covered, Vec::<usize>::new());
            assert_eq!(plan.ask[1], (1, 0), "under 100 per period: exact");
            leases.granted(&checks, &plan, &[1, 1], t + Duration::from_millis(n));
        }
    }

    #[test]
    fn a_busy_key_asks_for_last_windows_use_and_spends_it_locally() {
        let leases = Leases::default();
        let t = Instant::now();
        let checks = [check("big", 1_000_000, 1)];
        // 40 messages in the first window, each counted by Redis (nothing extra granted).
        for n in 0..40 {
            let plan = leases.plan(&checks, t + Duration::from_millis(n));
            leases.granted(&checks, &plan, &[1], t + Duration::from_millis(n));
        }
        // The next window's first message asks for 40 more; Redis grants them.
        let t2 = t + WINDOW;
        let plan = leases.plan(&checks, t2);
        assert_eq!(plan.ask, vec![(0, 40)]);
        leases.granted(&checks, &plan, &[41], t2);
        // 40 messages are covered locally, the 41st asks Redis again.
        for n in 0..40 {
            assert_eq!(leases.plan(&checks, t2 + Duration::from_millis(n)).covered, vec![0], "message {n}");
        }
        assert_eq!(leases.plan(&checks, t2 + Duration::from_millis(41)).ask.len(), 1);
    }

    #[test]
    fn the_extra_is_capped_at_one_percent_of_the_limit() {
        let leases = Leases::default();
        let t = Instant::now();
        let checks = [check("k", 1_000, 1)];
        for n in 0..100 {
            let plan = leases.plan(&checks, t + Duration::from_millis(n));
            leases.granted(&checks, &plan, &[1], t + Duration::from_millis(n));
        }
        assert_eq!(leases.plan(&checks, t + WINDOW).ask, vec![(0, 10)]);
    }

    #[test]
    fn leases_end_with_their_window_and_refused_sets_give_units_back() {
        let leases = Leases::default();
        let t = Instant::now();
        let checks = [check("a", 1_000_000, 1), check("b", 10, 1)];
        let plan = leases.plan(&checks, t);
        leases.granted(&checks, &plan, &[5, 1], t);
        // a is covered, b is not; the set is refused (b over its limit): a's unit comes back.
        let plan = leases.plan(&checks, t);
        assert_eq!(plan, Plan { covered: vec![0], ask: vec![(1, 0)] });
        leases.give_back(&checks, &plan);
        let only_a = [check("a", 1_000_000, 1)];
        for _ in 0..4 {
            assert_eq!(leases.plan(&only_a, t).covered, vec![0]);
        }
        assert_eq!(leases.plan(&only_a, t).covered, Vec::<usize>::new(), "4 extra units, all spent");
        // Granted units left unspent end with their window.
        let plan = leases.plan(&only_a, t);
        leases.granted(&only_a, &plan, &[3], t);
        assert_eq!(leases.plan(&only_a, t + WINDOW).covered, Vec::<usize>::new());
    }

    #[test]
    fn a_cost_larger_than_the_lease_goes_to_redis() {
        let leases = Leases::default();
        let t = Instant::now();
        let plan = leases.plan(&[check("r", 1_000_000, 1)], t);
        leases.granted(&[check("r", 1_000_000, 1)], &plan, &[3], t);
        let plan = leases.plan(&[check("r", 1_000_000, 5)], t);
        assert!(plan.covered.is_empty());
        assert_eq!(plan.ask.len(), 1);
    }
}
