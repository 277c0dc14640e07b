//! Partitions: how one fleet's queue and quarantine spread over several Redis Cluster slots.
//!
//! Every key of a partition carries the partition's hash tag, so each Lua script still touches
//! one slot, and a Redis Cluster places the partitions on its primaries. Partition 0's tag is
//! `{prefix}`, the tag of an unpartitioned store, so a fleet that grows from 1 to K partitions
//! keeps what it had queued. The other tags are `{prefix.N}`, with N picked so the K tags sit
//! evenly around Redis's 16 384-slot ring from partition 0's slot: a cluster made by
//! `redis-cli --cluster create` gives each primary one contiguous, equal range of slots, so
//! K = the number of primaries (or a multiple) puts the same number of partitions on each.
//!
//! A message (with its jobs) and a quarantine entry are written to the partition of their id's
//! tail (`store::partition_key`); ids made with `store::new_id_beside` share a tail, so a DSN
//! and its bounced message, or a release and its entry, are in one partition and change in one
//! script. That is where the store looks first; what it does not find there it looks for in the
//! other partitions (see `RedisStore::search_order`). Small fleet-wide state (rate limits,
//! login failures, shared state) stays in partition 0.

/// Redis Cluster's slot count.
const SLOTS: u32 = 16_384;

/// How far the search for a partition's tag goes before it settles for the nearest slot
/// seen (an exact slot is found after ~16 384 tries on average; this is ~60 times that).
const SEARCH: u32 = 1_000_000;

/// The slot of a key (its hash tag's, when it has one), as Redis computes it.
pub fn slot(key: &str) -> u16 {
    let k = key.as_bytes();
    let tag = k.iter().position(|&b| b == b'{').and_then(|open| {
        let close = k[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &k[open + 1..open + 1 + close])
    });
    (u32::from(crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(k))) % SLOTS) as u16
}

/// The hash tags of a store's partitions.
#[derive(Clone, Debug)]
pub struct Partitions {
    tags: Vec<String>,
}

impl Partitions {
    /// `count` partitions (at least one) of the keys under `prefix`.
    pub fn new(prefix: &str, count: u16) -> Self {
        let count = u32::from(count.max(1));
        let base = format!("{{{prefix}}}");
        let first = u32::from(slot(&base));
        let mut tags = vec![base];
        for i in 1..count {
            let want = (first + (i * SLOTS + count / 2) / count) % SLOTS;
            tags.push(tag_near(prefix, want as u16));
        }
        Self { tags }
    }

    pub fn count(&self) -> usize {
        self.tags.len()
    }

    /// Partition `p`'s hash tag (`{...}`).
    pub fn tag(&self, p: usize) -> &str {
        &self.tags[p]
    }

    /// Where fleet-wide state lives.
    pub fn base(&self) -> &str {
        &self.tags[0]
    }

    /// The partition of a message or quarantine entry id.
    pub fn of(&self, id: &str) -> usize {
        match self.tags.len() {
            1 => 0,
            n => usize::from(crc16::State::<crc16::XMODEM>::calculate(crate::store::partition_key(id))) % n,
        }
    }
}

/// `{prefix.N}` for the smallest N whose slot is `want`, or, failing that, the nearest.
fn tag_near(prefix: &str, want: u16) -> String {
    let distance = |s: u16| {
        let d = s.abs_diff(want) as u32;
        d.min(SLOTS - d)
    };
    let mut best = (u32::MAX, 0);
    let mut tag = String::new();
    for n in 0..SEARCH {
        use std::fmt::Write;
        tag.clear();
        let _ = write!(tag, "{{{prefix}.{n}}}");
        let d = distance(slot(&tag));
        if d < best.0 {
            best = (d, n);
        }
        if d == 0 {
            break;
        }
    }
    format!("{{{prefix}.{}}}", best.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{new_id, new_id_beside};

    #[test]
    fn slots_match_redis() {
        // Values from redis-cli CLUSTER KEYSLOT.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("{}x"), slot("{}x"), "an empty tag hashes the whole key");
        assert_eq!(slot("123456789"), (0x31C3 % SLOTS) as u16);
    }

    #[test]
    fn one_partition_is_the_unpartitioned_tag() {
        let p = Partitions::new("postern", 1);
        assert_eq!(p.count(), 1);
        assert_eq!(p.tag(0), "{postern}");
        assert_eq!(p.of(&new_id()), 0);
    }

    #[test]
    fn partitions_sit_evenly_around_the_slot_ring() {
        for k in [2u16, 3, 4, 6, 12] {
            let p = Partitions::new("postern", k);
            assert_eq!(p.tag(0), "{postern}");
            let first = u32::from(slot(p.tag(0)));
            for i in 1..usize::from(k) {
                let at = (u32::from(slot(p.tag(i))) + SLOTS - first) % SLOTS;
                let want = (i as u32 * SLOTS + u32::from(k) / 2) / u32::from(k);
                assert_eq!(at, want, "partition {i} of {k}: {}", p.tag(i));
            }
        }
    }

    #[test]
    fn three_partitions_land_on_three_equal_slot_ranges() {
        // The ranges `redis-cli --cluster create` gives three primaries.
        let range = |s: u16| match s {
            0..=5460 => 0,
            5461..=10922 => 1,
            _ => 2,
        };
        for prefix in ["postern", "postern-test", "mail-eu"] {
            let p = Partitions::new(prefix, 3);
            let mut seen: Vec<_> = (0..3).map(|i| range(slot(p.tag(i)))).collect();
            seen.sort();
            assert_eq!(seen, [0, 1, 2], "{prefix}");
        }
    }

    #[test]
    fn ids_spread_evenly_and_an_id_beside_another_shares_its_partition() {
        let p = Partitions::new("postern", 3);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            let id = new_id();
            let part = p.of(&id);
            counts[part] += 1;
            let beside = new_id_beside(&id);
            assert_ne!(beside, id);
            assert_eq!(p.of(&beside), part, "{id} {beside}");
        }
        assert!(counts.iter().all(|&c| (9_000..=11_000).contains(&c)), "{counts:?}");
    }

    #[test]
    fn an_id_beside_keeps_the_time_order_and_ignores_a_foreign_tail() {
        let a = new_id();
        let b = new_id_beside(&a);
        assert!(b > a, "time ordered: {a} {b}");
        assert_eq!(b.len(), a.len());
        let c = new_id_beside("q-sh");
        assert_eq!(c.len(), a.len(), "a non-hex tail is not copied: {c}");
        assert_eq!(new_id_beside("").len(), a.len());
    }
}
