//! Parsed SPF, DKIM and DMARC records (and the A/AAAA/MX/PTR sets SPF asks for), kept until
//! their DNS TTL ends, for mail-auth's checks.
//!
//! The resolver's own cache keeps answers as DNS records, so without this every message would
//! parse its sender's SPF record, base64-decode the DKIM key and parse the DMARC record again,
//! and pay hickory's name parsing and cache lookup for each. Senders repeat (a domain's mail
//! comes signed with the same few keys), which is why Stalwart keeps the same caches.
//!
//! Entries end at the TTL mail-auth passes (the answer's own); every map is bounded, so names
//! chosen by a sender cannot grow memory (moka evicts the least used first).

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use mail_auth::{MX, Parameters, RecordSet, ResolverCache, Txt};

/// One bounded map of answers, each with the instant it stops being valid.
pub struct RecordCache<K, V> {
    entries: moka::sync::Cache<K, (V, Instant)>,
}

impl<K, V> RecordCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(capacity: u64) -> Self {
        Self { entries: moka::sync::Cache::new(capacity) }
    }
}

impl<K, V> ResolverCache<K, V> for RecordCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, valid_until) = self.entries.get(name)?;
        if Instant::now() < valid_until {
            return Some(value);
        }
        self.entries.invalidate(name);
        None
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.remove(name).map(|(value, _)| value)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        self.entries.insert(key, (value, valid_until));
    }
}

/// The caches for every record type mail-auth asks for.
pub struct AuthRecords {
    txt: RecordCache<Box<str>, Txt>,
    mx: RecordCache<Box<str>, RecordSet<MX>>,
    ipv4: RecordCache<Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: RecordCache<Box<str>, RecordSet<Ipv6Addr>>,
    ptr: RecordCache<IpAddr, RecordSet<Box<str>>>,
}

/// mail-auth's parameters for a check, with the caches attached.
pub type Cached<'x, P> = Parameters<
    'x,
    P,
    RecordCache<Box<str>, Txt>,
    RecordCache<Box<str>, RecordSet<MX>>,
    RecordCache<Box<str>, RecordSet<Ipv4Addr>>,
    RecordCache<Box<str>, RecordSet<Ipv6Addr>>,
    RecordCache<IpAddr, RecordSet<Box<str>>>,
>;

impl AuthRecords {
    /// Each map holds up to `capacity` names: TXT records (SPF, DKIM keys, DMARC) for that many
    /// sender domains and selectors, and as many address sets for SPF's `a`/`mx`/`ptr` terms.
    pub fn new(capacity: u64) -> Self {
        Self {
            txt: RecordCache::new(capacity),
            mx: RecordCache::new(capacity),
            ipv4: RecordCache::new(capacity),
            ipv6: RecordCache::new(capacity),
            ptr: RecordCache::new(capacity),
        }
    }

    /// `params` for a mail-auth check that reads and fills these caches.
    pub fn with<'x, P>(&'x self, params: P) -> Cached<'x, P> {
        Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_answer_is_kept_until_its_ttl_ends_and_not_after() {
        let cache: RecordCache<Box<str>, u32> = RecordCache::new(16);
        let now = Instant::now();
        cache.insert("fresh.test.".into(), 1, now + Duration::from_secs(300));
        cache.insert("stale.test.".into(), 2, now);
        assert_eq!(cache.get("fresh.test."), Some(1));
        assert_eq!(cache.get("stale.test."), None, "an answer past its TTL is not used");
        assert_eq!(cache.get("stale.test."), None, "and it is gone");
        assert_eq!(cache.remove("fresh.test."), Some(1));
        assert_eq!(cache.get("fresh.test."), None);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache: RecordCache<Box<str>, u32> = RecordCache::new(100);
        let until = Instant::now() + Duration::from_secs(300);
        for i in 0..10_000 {
            cache.insert(format!("n{i}.test.").into(), i, until);
        }
        cache.entries.run_pending_tasks();
        assert!(cache.entries.entry_count() <= 100, "{} entries", cache.entries.entry_count());
    }
}
