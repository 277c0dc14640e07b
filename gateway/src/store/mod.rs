//! The `Store`: where accepted messages, their delivery jobs and the quarantine live.
//!
//! One trait, several backends (embedded on disk; Redis for shared state; in memory for the
//! fuzz targets), all held to one conformance suite (`conformance.rs`). The contract:
//! - `enqueue` returns only once the message and its jobs are durable: the SMTP `250` waits on it.
//! - `lease` hands out due jobs; a leased job is not handed out again until its lease runs out
//!   (or the process that held it is gone), so delivery is at-least-once.
//! - `complete` and `retry` settle a leased job, optionally enqueueing a follow-up message (a DSN)
//!   in the same atomic step, so a bounce is never lost between two writes.

use std::time::Duration;

use async_trait::async_trait;

pub mod embedded;
pub mod leases;
pub mod limits;
pub mod memory;
pub mod redis;
pub mod types;

#[cfg(test)]
pub mod conformance;

pub use limits::{LockoutPolicy, LoginFailures, RateCheck, RateDecision};
pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a message and its jobs; durable once this returns `Ok`.
    async fn enqueue(&self, msg: NewMessage) -> StoreResult<()>;

    /// Leases up to `max` jobs whose `due` is at or before `now` (ms), for `lease_for`.
    async fn lease(&self, now: u64, max: usize, lease_for: Duration) -> StoreResult<Vec<Job>>;

    /// `lease`, each job with the message (and body) it delivers (`None`: the message is gone).
    /// What the delivery engine calls: with Redis one round trip brings jobs and bodies (the
    /// default asks for each message after the lease).
    async fn lease_with_messages(
        &self,
        now: u64,
        max: usize,
        lease_for: Duration,
    ) -> StoreResult<Vec<(Job, Option<Message>)>> {
        let jobs = self.lease(now, max, lease_for).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let message = self.load_message(&job.message_id).await?;
            out.push((job, message));
        }
        Ok(out)
    }

    /// The message (with body) a job delivers.
    async fn load_message(&self, id: &str) -> StoreResult<Option<Message>>;

    /// The job is done (delivered, bounced or dropped). Removes the message with its last job.
    async fn complete(&self, job: &Job, followup: Option<NewMessage>) -> StoreResult<()>;

    /// Puts the job back for another attempt at `job.due`, with its updated recipients and state.
    async fn retry(&self, job: &Job, followup: Option<NewMessage>) -> StoreResult<()>;

    /// The earliest `due` of any job not leased now, if there is one.
    async fn next_due(&self) -> StoreResult<Option<u64>>;

    async fn stats(&self) -> StoreResult<QueueStats>;

    async fn quarantine_put(&self, entry: QuarantineEntry) -> StoreResult<()>;
    async fn quarantine_get(&self, id: &str) -> StoreResult<Option<QuarantineEntry>>;
    /// Every entry, without bodies, oldest first.
    async fn quarantine_list(&self) -> StoreResult<Vec<QuarantineEntry>>;
    async fn quarantine_delete(&self, id: &str) -> StoreResult<bool>;
    /// Takes the entry out of the quarantine and enqueues `msg` in one atomic step; `false`
    /// (and nothing enqueued) when the entry is gone, so two pods cannot release it twice.
    async fn quarantine_release(&self, id: &str, msg: NewMessage) -> StoreResult<bool>;
    /// Takes one recipient out of an entry (the entry goes with its last recipient) and, when
    /// given, queues `msg` (the message for that recipient) in the same atomic step. `false`,
    /// with nothing queued, when the entry is gone or no longer holds `recipient`: a digest
    /// link acts once.
    async fn quarantine_take_recipient(
        &self,
        id: &str,
        recipient: &str,
        msg: Option<NewMessage>,
    ) -> StoreResult<bool>;
    /// Removes entries whose `expires_at` is before `now`; returns how many.
    async fn quarantine_expire(&self, now: u64) -> StoreResult<usize>;

    /// Small shared state (destination verification, digest bookkeeping) by key.
    async fn state_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Durable once it returns.
    async fn state_put(&self, key: &str, value: Vec<u8>) -> StoreResult<()>;
    /// Compare-and-set: writes `new` only when the current value is `expected` (`None`: absent).
    /// Lets one pod of many claim a periodic job (a digest run). Durable once it returns `true`.
    async fn state_swap(&self, key: &str, expected: Option<Vec<u8>>, new: Vec<u8>) -> StoreResult<bool>;

    /// Rate limits (GCRA, `limits.rs`): counts every check, or, when one is over its limit,
    /// none. One round trip for the whole set; shared by the fleet with Redis.
    async fn rate_limit(&self, checks: &[RateCheck]) -> StoreResult<RateDecision>;
    /// Forgets rate-limit times at or before `now` (ms): they limit nothing any more, and a
    /// flood from many addresses would otherwise keep one entry per address. Returns how many.
    async fn rate_limits_expire(&self, now: u64) -> StoreResult<usize>;
    /// `enqueue`, after counting `limits` as `rate_limit` does: when one is over, nothing is
    /// written (and nothing counted) and the decision says which. The Redis store does both in
    /// one script (one round trip, as a plain enqueue), so rate limits cost a message no extra
    /// round trip.
    async fn enqueue_within(&self, msg: NewMessage, limits: &[RateCheck]) -> StoreResult<RateDecision> {
        // No limits (the usual case): a plain enqueue, without touching the limit table.
        if limits.is_empty() {
            return self.enqueue(msg).await.map(|()| RateDecision::Allowed);
        }
        let decision = self.rate_limit(limits).await?;
        if decision == RateDecision::Allowed {
            self.enqueue(msg).await?;
        }
        Ok(decision)
    }

    /// Counts a failed login from `client`; the failure that reaches `policy.max_failures`
    /// within the window locks the client out for `policy.lockout`.
    async fn login_failed(&self, client: &str, policy: &LockoutPolicy) -> StoreResult<LoginFailures>;
    /// How long `client` is still locked out after failed logins, if it is.
    async fn login_locked(&self, client: &str) -> StoreResult<Option<Duration>>;

    /// Cheap liveness check used by /readyz.
    async fn ping(&self) -> StoreResult<()>;

    /// Makes everything written so far durable (used at shutdown).
    async fn flush(&self) -> StoreResult<()>;
}
