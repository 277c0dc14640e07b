//! Recipient verification against the primary server: an RCPT probe, its answer cached for
//! the domain's TTL, so directories too large to list need not be listed. Temporary failures
//! are not cached: the client is told to try again later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Directory;
use crate::config::{ConfigSnapshot, ServedDomain};
use crate::outbound::OutboundClient;
use crate::store::NextHop;

/// Most answers kept; past this the cache is cleared (a crude bound, answers are cheap).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct RecipientProbes {
    answers: Mutex<HashMap<String, (bool, Instant)>>,
}

impl RecipientProbes {
    fn get(&self, address: &str, ttl: Duration) -> Option<bool> {
        let map = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        map.get(address).filter(|(_, at)| at.elapsed() < ttl).map(|(exists, _)| *exists)
    }

    fn put(&self, address: String, exists: bool) {
        let mut map = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(address, (exists, Instant::now()));
    }
}

/// The directory of a served domain as its primary server knows it.
pub struct ProbingDirectory<'a> {
    pub probes: &'a RecipientProbes,
    pub outbound: &'a OutboundClient,
    pub cfg: &'a ConfigSnapshot,
}

impl Directory for ProbingDirectory<'_> {
    async fn exists(&self, domain: &ServedDomain, address: &str) -> Result<bool, String> {
        let Some(rv) = &domain.config.recipient_verification else { return Ok(false) };
        let key = address.to_ascii_lowercase();
        if let Some(hit) = self.probes.get(&key, rv.cache_ttl.get()) {
            return Ok(hit);
        }
        let route = NextHop::from_destination(&domain.config.primary);
        match self.outbound.probe(self.cfg, &route, address).await {
            Ok(exists) => {
                tracing::debug!(rcpt = %address, exists, "recipient verified against the primary server");
                self.probes.put(key, exists);
                Ok(exists)
            }
            Err(f) => {
                tracing::warn!(rcpt = %address, error = %f.diagnostic, "recipient verification failed temporarily");
                Err(f.diagnostic)
            }
        }
    }
}
