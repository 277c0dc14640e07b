//! A store in memory: nothing survives the process. For the fuzz targets, where every
//! execution must cost microseconds, not a commit; it passes the same conformance suite as the
//! real backends, so what a fuzz target sees of the queue is what the gateway would see.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Job, LockoutPolicy, LoginFailures, Message, NewMessage, QuarantineEntry, QueueStats, RateCheck,
    RateDecision, Store, StoreResult,
};
use crate::util::time::now_ms;

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    limits: super::limits::LocalLimits,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<String, Job>,
    /// (due, job id): the schedule.
    schedule: BTreeSet<(u64, String)>,
    /// job id -> lease end (ms).
    leases: HashMap<String, u64>,
    /// message -> (the message, jobs not completed).
    messages: HashMap<String, (Message, u32)>,
    quarantine: BTreeMap<String, QuarantineEntry>,
    state: HashMap<String, Vec<u8>>,
}

impl Inner {
    fn enqueue(&mut self, msg: NewMessage) {
        let refs = msg.jobs.len() as u32;
        for job in msg.jobs {
            self.schedule.insert((job.due, job.id.clone()));
            self.jobs.insert(job.id.clone(), job);
        }
        if refs > 0 {
            self.messages.insert(msg.message.id.clone(), (msg.message, refs));
        }
    }

    fn unschedule(&mut self, id: &str) -> Option<Job> {
        let job = self.jobs.remove(id)?;
        self.schedule.remove(&(job.due, job.id.clone()));
        self.leases.remove(id);
        Some(job)
    }
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn enqueue(&self, msg: NewMessage) -> StoreResult<()> {
        self.lock().enqueue(msg);
        Ok(())
    }

    async fn lease(&self, now: u64, max: usize, lease_for: Duration) -> StoreResult<Vec<Job>> {
        let mut inner = self.lock();
        let due: Vec<String> = inner
            .schedule
            .iter()
            .take_while(|(due, _)| *due <= now)
            .filter(|(_, id)| inner.leases.get(id).is_none_or(|&end| end <= now))
            .take(max)
            .map(|(_, id)| id.clone())
            .collect();
        let until = now + lease_for.as_millis() as u64;
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            inner.leases.insert(id.clone(), until);
            if let Some(job) = inner.jobs.get(&id) {
                out.push(job.clone());
            }
        }
        Ok(out)
    }

    async fn load_message(&self, id: &str) -> StoreResult<Option<Message>> {
        Ok(self.lock().messages.get(id).map(|(m, _)| m.clone()))
    }

    async fn complete(&self, job: &Job, followup: Option<NewMessage>) -> StoreResult<()> {
        let mut inner = self.lock();
        if inner.unschedule(&job.id).is_some()
            && let Some((_, refs)) = inner.messages.get_mut(&job.message_id)
        {
            *refs -= 1;
            if *refs == 0 {
                inner.messages.remove(&job.message_id);
            }
        }
        if let Some(f) = followup {
            inner.enqueue(f);
        }
        Ok(())
    }

    async fn retry(&self, job: &Job, followup: Option<NewMessage>) -> StoreResult<()> {
        let mut inner = self.lock();
        if inner.unschedule(&job.id).is_some() {
            inner.schedule.insert((job.due, job.id.clone()));
            inner.jobs.insert(job.id.clone(), job.clone());
        }
        if let Some(f) = followup {
            inner.enqueue(f);
        }
        Ok(())
    }

    async fn next_due(&self) -> StoreResult<Option<u64>> {
        let inner = self.lock();
        Ok(inner.schedule.iter().find(|(_, id)| !inner.leases.contains_key(id)).map(|(due, _)| *due))
    }

    async fn stats(&self) -> StoreResult<QueueStats> {
        let inner = self.lock();
        Ok(QueueStats {
            jobs: inner.jobs.len() as u64,
            messages: inner.messages.len() as u64,
            quarantined: inner.quarantine.len() as u64,
        })
    }

    async fn quarantine_put(&self, entry: QuarantineEntry) -> StoreResult<()> {
        self.lock().quarantine.insert(entry.id.clone(), entry);
        Ok(())
    }

    async fn quarantine_get(&self, id: &str) -> StoreResult<Option<QuarantineEntry>> {
        Ok(self.lock().quarantine.get(id).cloned())
    }

    async fn quarantine_list(&self) -> StoreResult<Vec<QuarantineEntry>> {
        let mut list: Vec<QuarantineEntry> = self
            .lock()
            .quarantine
            .values()
            .map(|e| QuarantineEntry { body: Vec::new(), ..e.clone() })
            .collect();
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(list)
    }

    async fn quarantine_delete(&self, id: &str) -> StoreResult<bool> {
        Ok(self.lock().quarantine.remove(id).is_some())
    }

    async fn quarantine_release(&self, id: &str, msg: NewMessage) -> StoreResult<bool> {
        let mut inner = self.lock();
        if inner.quarantine.remove(id).is_none() {
            return Ok(false);
        }
        inner.enqueue(msg);
        Ok(true)
    }

    async fn quarantine_take_recipient(
        &self,
        id: &str,
        recipient: &str,
        msg: Option<NewMessage>,
    ) -> StoreResult<bool> {
        let mut inner = self.lock();
        let Some(entry) = inner.quarantine.get_mut(id) else { return Ok(false) };
        let Some(at) = entry.recipients.iter().position(|r| r == recipient) else { return Ok(false) };
        entry.recipients.remove(at);
        if entry.recipients.is_empty() {
            inner.quarantine.remove(id);
        }
        if let Some(msg) = msg {
            inner.enqueue(msg);
        }
        Ok(true)
    }

    async fn quarantine_expire(&self, now: u64) -> StoreResult<usize> {
        let mut inner = self.lock();
        let before = inner.quarantine.len();
        inner.quarantine.retain(|_, e| e.expires_at >= now);
        Ok(before - inner.quarantine.len())
    }

    async fn state_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.lock().state.get(key).cloned())
    }

    async fn state_put(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.lock().state.insert(key.to_string(), value);
        Ok(())
    }

    async fn state_swap(&self, key: &str, expected: Option<Vec<u8>>, new: Vec<u8>) -> StoreResult<bool> {
        let mut inner = self.lock();
        if inner.state.get(key) != expected.as_ref() {
            return Ok(false);
        }
        inner.state.insert(key.to_string(), new);
        Ok(true)
    }

    async fn rate_limit(&self, checks: &[RateCheck]) -> StoreResult<RateDecision> {
        Ok(self.limits.rate_limit(checks, now_ms()))
    }

    async fn rate_limits_expire(&self, now: u64) -> StoreResult<usize> {
        Ok(self.limits.expire(now))
    }

    async fn login_failed(&self, client: &str, policy: &LockoutPolicy) -> StoreResult<LoginFailures> {
        Ok(self.limits.login_failed(client, policy, now_ms()))
    }

    async fn login_locked(&self, client: &str) -> StoreResult<Option<Duration>> {
        Ok(self.limits.login_locked(client, now_ms()))
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        super::super::conformance::run_all(&super::MemoryStore::default()).await;
    }
}
