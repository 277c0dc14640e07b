//! The embedded store: one redb file, written by one thread with group commit.
//!
//! Every write goes through a single writer thread. It takes all the requests waiting in its
//! channel and applies them in one transaction, so one fsync covers many messages: a burst of
//! 20 sessions finishing DATA together costs one fsync, not 20. A request is answered only after
//! the commit that holds it, so no `250` goes out before its fsync.
//!
//! Durability per request: `enqueue` and quarantine writes commit with `Durability::Immediate`
//! (fsync). Settling a job (`complete`, `retry`) commits without fsync: if the process dies
//! before the next durable commit, that job is simply delivered again (at-least-once). The
//! writer makes any such commit durable within `IDLE_FLUSH` even when no new mail arrives.
//!
//! Leases live in memory only: a single process owns the file, so after a restart every job is
//! due again at its stored time, which is what a crash should mean.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;

use super::{
    Job, LockoutPolicy, LoginFailures, Message, NewMessage, QuarantineEntry, QueueStats, RateCheck,
    RateDecision, Store, StoreError, StoreResult,
};
use crate::util::time::now_ms;

/// job id -> Job (JSON)
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// (due ms, job id) -> ()   : the schedule, in due order
const SCHEDULE: TableDefinition<(u64, &str), ()> = TableDefinition::new("schedule");
/// message id -> Message metadata (JSON)
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
/// message id -> body
const BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("bodies");
/// message id -> jobs not yet completed
const REFS: TableDefinition<&str, u32> = TableDefinition::new("message_refs");
/// quarantine id -> QuarantineEntry metadata (JSON)
const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine");
/// quarantine id -> body
const QUARANTINE_BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine_bodies");

/// key -> value: small shared state (verification, digests)
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// A non-durable commit is made durable at the latest this long after it, even when idle.
const IDLE_FLUSH: Duration = Duration::from_millis(500);
/// Most requests folded into one transaction.
const MAX_BATCH: usize = 512;

pub struct EmbeddedStore {
    db: Arc<Database>,
    ops: std_mpsc::Sender<Op>,
    /// Jobs handed out and not settled yet: id -> lease end (ms). Shared with the writer.
    leases: Arc<Mutex<HashMap<String, u64>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Rate limits and failed logins: per process (one node owns this store).
    limits: super::limits::LocalLimits,
}

type Reply<T> = oneshot::Sender<StoreResult<T>>;

enum Op {
    Enqueue(Box<NewMessage>, Reply<()>),
    Complete(Box<Job>, Option<Box<NewMessage>>, Reply<()>),
    Retry(Box<Job>, Option<Box<NewMessage>>, Reply<()>),
    QuarantinePut(Box<QuarantineEntry>, Reply<()>),
    QuarantineDelete(String, Reply<bool>),
    QuarantineRelease(String, Box<NewMessage>, Reply<bool>),
    QuarantineTakeRecipient(String, String, Option<Box<NewMessage>>, Reply<bool>),
    QuarantineExpire(u64, Reply<usize>),
    StatePut(String, Vec<u8>, Reply<()>),
    StateSwap(String, Option<Vec<u8>>, Vec<u8>, Reply<bool>),
    Flush(Reply<()>),
    /// Make everything durable and stop the writer (sent by `Drop`).
    Shutdown,
}

impl Op {
    /// Whether the op's caller is promised durability. Settling a job and expiring old
    /// quarantine entries are not: redoing them after a crash is harmless.
    fn needs_fsync(&self) -> bool {
        !matches!(
            self,
            Op::Complete(_, None, _) | Op::Retry(_, None, _) | Op::QuarantineExpire(..) | Op::Shutdown
        )
    }
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A message with its body, as `txn` sees it.
fn message_in(txn: &redb::ReadTransaction, id: &str) -> StoreResult<Option<Message>> {
    let messages = txn.open_table(MESSAGES).map_err(db_err)?;
    let Some(meta) = messages.get(id).map_err(db_err)? else { return Ok(None) };
    let mut msg: Message = serde_json::from_slice(meta.value()).map_err(corrupt)?;
    let bodies = txn.open_table(BODIES).map_err(db_err)?;
    msg.body = bodies.get(id).map_err(db_err)?.map(|b| b.value().to_vec()).unwrap_or_default();
    Ok(Some(msg))
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` with the configuration's default page cache.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with_cache(dir, postern_api::EmbeddedStoreConfig::default().cache_bytes)
    }

    /// Opens (or creates) the store in `dir` with a page cache of `cache_bytes`: the cache
    /// holds written pages too, so it bounds what a deep queue costs in memory.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| db_err(format!("{}: {e}", dir.display())))?;
        let path = dir.join("queue.redb");
        let db = redb::Builder::new()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .create(&path)
            .map_err(|e| db_err(format!("{}: {e}", path.display())))?;
        let db = Arc::new(db);
        {
            // Create every table up front so readers never meet a missing one.
            let txn = db.begin_write().map_err(db_err)?;
            txn.open_table(JOBS).map_err(db_err)?;
            txn.open_table(SCHEDULE).map_err(db_err)?;
            txn.open_table(MESSAGES).map_err(db_err)?;
            txn.open_table(BODIES).map_err(db_err)?;
            txn.open_table(REFS).map_err(db_err)?;
            txn.open_table(QUARANTINE).map_err(db_err)?;
            txn.open_table(QUARANTINE_BODIES).map_err(db_err)?;
            txn.open_table(STATE).map_err(db_err)?;
            txn.commit().map_err(db_err)?;
        }
        let (tx, rx) = std_mpsc::channel();
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&writer_db, &rx))
            .map_err(db_err)?;
        Ok(Self { db, ops: tx, leases: Arc::default(), writer: Some(writer), limits: Default::default() })
    }

    async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        self.ops.send(make(tx)).map_err(|_| db_err("store writer stopped"))?;
        rx.await.map_err(|_| db_err("store writer stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(db_err)?;
            f(&txn)
        })
        .await
        .map_err(db_err)?
    }

    /// Leases due jobs in one read snapshot, with their messages when asked (the same
    /// snapshot: no second transaction per job).
    async fn lease_from_snapshot(
        &self,
        now: u64,
        max: usize,
        lease_for: Duration,
        with_messages: bool,
    ) -> StoreResult<Vec<(Job, Option<Message>)>> {
        let leases = self.leases.clone();
        let db = self.db.clone();
        let until = now.saturating_add(crate::util::time::ms(lease_for));
        tokio::task::spawn_blocking(move || {
            // The lease table is locked before the snapshot is taken: `complete` and `retry`
            // release a lease only after their commit, so a job whose lease is gone is settled
            // in this snapshot too. (Snapshot first would let a job completed in between be
            // handed out again from the stale snapshot, and delivered twice.)
            let mut leases = leases.lock().unwrap_or_else(|p| p.into_inner());
            let txn = db.begin_read().map_err(db_err)?;
            let schedule = txn.open_table(SCHEDULE).map_err(db_err)?;
            let jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut out = Vec::new();
            for entry in schedule.range((0u64, "")..=(now, "\u{10FFFF}")).map_err(db_err)? {
                if out.len() >= max {
                    break;
                }
                let (key, _) = entry.map_err(db_err)?;
                let (_, id) = key.value();
                if leases.get(id).is_some_and(|&end| end > now) {
                    continue;
                }
                let Some(raw) = jobs.get(id).map_err(db_err)? else { continue };
                let job: Job = serde_json::from_slice(raw.value()).map_err(corrupt)?;
                let message = if with_messages { message_in(&txn, &job.message_id)? } else { None };
                leases.insert(job.id.clone(), until);
                out.push((job, message));
            }
            Ok(out)
        })
        .await
        .map_err(db_err)?
    }

    fn unlease(&self, id: &str) {
        self.leases.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Wait for the writer so the file is closed (and durable) when the store is gone.
        if self.ops.send(Op::Shutdown).is_ok()
            && let Some(writer) = self.writer.take()
        {
            let _ = writer.join();
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn enqueue(&self, msg: NewMessage) -> StoreResult<()> {
        self.submit(|r| Op::Enqueue(Box::new(msg), r)).await
    }

    async fn lease(&self, now: u64, max: usize, lease_for: Duration) -> StoreResult<Vec<Job>> {
        Ok(self
            .lease_from_snapshot(now, max, lease_for, false)
            .await?
            .into_iter()
            .map(|(job, _)| job)
            .collect())
    }

    async fn lease_with_messages(
        &self,
        now: u64,
        max: usize,
        lease_for: Duration,
    ) -> StoreResult<Vec<(Job, Option<Message>)>> {
        self.lease_from_snapshot(now, max, lease_for, true).await
    }

    async fn load_message(&self, id: &str) -> StoreResult<Option<Message>> {
        let id = id.to_string();
        self.read(move |txn| message_in(txn, &id)).await
    }

    async fn complete(&self, job: &Job, followup: Option<NewMessage>) -> StoreResult<()> {
        let r = self.submit(|r| Op::Complete(Box::new(job.clone()), followup.map(Box::new), r)).await;
        self.unlease(&job.id);
        r
    }

    async fn retry(&self, job: &Job, followup: Option<NewMessage>) -> StoreResult<()> {
        let r = self.submit(|r| Op::Retry(Box::new(job.clone()), followup.map(Box::new), r)).await;
        self.unlease(&job.id);
        r
    }

    async fn next_due(&self) -> StoreResult<Option<u64>> {
        let leases = self.leases.clone();
        self.read(move |txn| {
            let schedule = txn.open_table(SCHEDULE).map_err(db_err)?;
            let leases = leases.lock().unwrap_or_else(|p| p.into_inner());
            // Leased jobs sit at the front of the schedule; their lease end is when they may
            // come back, so it counts as their due time here.
            let mut best: Option<u64> = None;
            for entry in schedule.iter().map_err(db_err)? {
                let (key, _) = entry.map_err(db_err)?;
                let (due, id) = key.value();
                if best.is_some_and(|b| due >= b) {
                    break;
                }
                let effective = leases.get(id).map_or(due, |&end| end.max(due));
                best = Some(best.map_or(effective, |b| b.min(effective)));
            }
            Ok(best)
        })
        .await
    }

    async fn stats(&self) -> StoreResult<QueueStats> {
        self.read(|txn| {
            Ok(QueueStats {
                jobs: txn.open_table(JOBS).map_err(db_err)?.len().map_err(db_err)?,
                messages: txn.open_table(MESSAGES).map_err(db_err)?.len().map_err(db_err)?,
                quarantined: txn.open_table(QUARANTINE).map_err(db_err)?.len().map_err(db_err)?,
            })
        })
        .await
    }

    async fn quarantine_put(&self, entry: QuarantineEntry) -> StoreResult<()> {
        self.submit(|r| Op::QuarantinePut(Box::new(entry), r)).await
    }

    async fn quarantine_get(&self, id: &str) -> StoreResult<Option<QuarantineEntry>> {
        let id = id.to_string();
        self.read(move |txn| {
            let table = txn.open_table(QUARANTINE).map_err(db_err)?;
            let Some(meta) = table.get(id.as_str()).map_err(db_err)? else { return Ok(None) };
            let mut entry: QuarantineEntry = serde_json::from_slice(meta.value()).map_err(corrupt)?;
            let bodies = txn.open_table(QUARANTINE_BODIES).map_err(db_err)?;
            entry.body =
                bodies.get(id.as_str()).map_err(db_err)?.map(|b| b.value().to_vec()).unwrap_or_default();
            Ok(Some(entry))
        })
        .await
    }

    async fn quarantine_list(&self) -> StoreResult<Vec<QuarantineEntry>> {
        self.read(|txn| {
            let table = txn.open_table(QUARANTINE).map_err(db_err)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(db_err)? {
                let (_, v) = entry.map_err(db_err)?;
                out.push(serde_json::from_slice::<QuarantineEntry>(v.value()).map_err(corrupt)?);
            }
            out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(out)
        })
        .await
    }

    async fn quarantine_delete(&self, id: &str) -> StoreResult<bool> {
        self.submit(|r| Op::QuarantineDelete(id.to_string(), r)).await
    }

    async fn quarantine_release(&self, id: &str, msg: NewMessage) -> StoreResult<bool> {
        self.submit(|r| Op::QuarantineRelease(id.to_string(), Box::new(msg), r)).await
    }

    async fn quarantine_take_recipient(
        &self,
        id: &str,
        recipient: &str,
        msg: Option<NewMessage>,
    ) -> StoreResult<bool> {
        self.submit(|r| Op::QuarantineTakeRecipient(id.into(), recipient.into(), msg.map(Box::new), r)).await
    }

    async fn quarantine_expire(&self, now: u64) -> StoreResult<usize> {
        self.submit(|r| Op::QuarantineExpire(now, r)).await
    }

    async fn state_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let key = key.to_string();
        self.read(move |txn| {
            let table = txn.open_table(STATE).map_err(db_err)?;
            Ok(table.get(key.as_str()).map_err(db_err)?.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn state_put(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.submit(|r| Op::StatePut(key.to_string(), value, r)).await
    }

    async fn state_swap(&self, key: &str, expected: Option<Vec<u8>>, new: Vec<u8>) -> StoreResult<bool> {
        self.submit(|r| Op::StateSwap(key.to_string(), expected, new, r)).await
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
        self.read(|txn| txn.open_table(JOBS).map(|_| ()).map_err(db_err)).await
    }

    async fn flush(&self) -> StoreResult<()> {
        self.submit(Op::Flush).await
    }
}

/// The writer thread: batches requests into transactions until every sender is gone.
fn writer_loop(db: &Database, rx: &std_mpsc::Receiver<Op>) {
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let first = match unsynced_since {
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => return,
            },
            Some(since) => {
                let wait = IDLE_FLUSH.saturating_sub(since.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(op) => op,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        let (tx, _rx) = oneshot::channel();
                        Op::Flush(tx)
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = commit_batch(db, vec![Op::Flush(oneshot::channel().0)]);
                        return;
                    }
                }
            }
        };
        let mut batch = vec![first];
        let mut shutdown = false;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Op::Shutdown) => {
                    shutdown = true;
                    break;
                }
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if matches!(batch[0], Op::Shutdown) {
            batch[0] = Op::Flush(oneshot::channel().0);
            shutdown = true;
        }
        if shutdown {
            batch.push(Op::Flush(oneshot::channel().0));
            commit_batch(db, batch);
            return;
        }
        match commit_batch(db, batch) {
            Some(true) => unsynced_since = None,
            Some(false) => {
                unsynced_since.get_or_insert_with(Instant::now);
            }
            None => {}
        }
    }
}

/// What one applied op answers once its transaction has committed.
enum Answer {
    Unit(Reply<()>),
    Bool(Reply<bool>, bool),
    Count(Reply<usize>, usize),
}

impl Answer {
    fn send(self, failure: Option<&str>) {
        match (self, failure) {
            (Answer::Unit(r), None) => drop(r.send(Ok(()))),
            (Answer::Bool(r, v), None) => drop(r.send(Ok(v))),
            (Answer::Count(r, v), None) => drop(r.send(Ok(v))),
            (Answer::Unit(r), Some(e)) => drop(r.send(Err(db_err(e)))),
            (Answer::Bool(r, _), Some(e)) => drop(r.send(Err(db_err(e)))),
            (Answer::Count(r, _), Some(e)) => drop(r.send(Err(db_err(e)))),
        }
    }
}

/// Applies a batch in one transaction. Returns whether the commit was durable (None: failed).
fn commit_batch(db: &Database, batch: Vec<Op>) -> Option<bool> {
    let durable = batch.iter().any(Op::needs_fsync);
    let mut answers = Vec::with_capacity(batch.len());
    let result = (|| -> Result<(), String> {
        let mut txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })
            .map_err(|e| e.to_string())?;
        {
            let mut w = Writer::open(&txn).map_err(|e| e.to_string())?;
            for op in batch {
                answers.push(w.apply(op).map_err(|e| e.to_string())?);
            }
        }
        txn.commit().map_err(|e| e.to_string())
    })();
    match result {
        Ok(()) => {
            answers.into_iter().for_each(|a| a.send(None));
            Some(durable)
        }
        Err(e) => {
            tracing::error!(error = %e, "store commit failed");
            answers.into_iter().for_each(|a| a.send(Some(&e)));
            None
        }
    }
}

/// The tables of one write transaction.
struct Writer<'t> {
    jobs: redb::Table<'t, &'static str, &'static [u8]>,
    schedule: redb::Table<'t, (u64, &'static str), ()>,
    messages: redb::Table<'t, &'static str, &'static [u8]>,
    bodies: redb::Table<'t, &'static str, &'static [u8]>,
    refs: redb::Table<'t, &'static str, u32>,
    quarantine: redb::Table<'t, &'static str, &'static [u8]>,
    quarantine_bodies: redb::Table<'t, &'static str, &'static [u8]>,
    state: redb::Table<'t, &'static str, &'static [u8]>,
}

impl<'t> Writer<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Self {
            jobs: txn.open_table(JOBS)?,
            schedule: txn.open_table(SCHEDULE)?,
            messages: txn.open_table(MESSAGES)?,
            bodies: txn.open_table(BODIES)?,
            refs: txn.open_table(REFS)?,
            quarantine: txn.open_table(QUARANTINE)?,
            quarantine_bodies: txn.open_table(QUARANTINE_BODIES)?,
            state: txn.open_table(STATE)?,
        })
    }

    fn apply(&mut self, op: Op) -> Result<Answer, StoreError> {
        Ok(match op {
            Op::Enqueue(msg, r) => {
                self.enqueue(&msg)?;
                Answer::Unit(r)
            }
            Op::Complete(job, followup, r) => {
                self.remove_job(&job.id)?;
                if let Some(f) = followup {
                    self.enqueue(&f)?;
                }
                Answer::Unit(r)
            }
            Op::Retry(job, followup, r) => {
                if let Some(old) = self.get_job(&job.id)? {
                    self.schedule.remove((old.due, old.id.as_str())).map_err(db_err)?;
                    self.put_job(&job)?;
                }
                if let Some(f) = followup {
                    self.enqueue(&f)?;
                }
                Answer::Unit(r)
            }
            Op::QuarantinePut(entry, r) => {
                let meta = serde_json::to_vec(&*entry).map_err(corrupt)?;
                self.quarantine.insert(entry.id.as_str(), meta.as_slice()).map_err(db_err)?;
                self.quarantine_bodies.insert(entry.id.as_str(), entry.body.as_slice()).map_err(db_err)?;
                Answer::Unit(r)
            }
            Op::QuarantineDelete(id, r) => {
                let existed = self.quarantine.remove(id.as_str()).map_err(db_err)?.is_some();
                self.quarantine_bodies.remove(id.as_str()).map_err(db_err)?;
                Answer::Bool(r, existed)
            }
            Op::QuarantineRelease(id, msg, r) => {
                let existed = self.quarantine.remove(id.as_str()).map_err(db_err)?.is_some();
                if existed {
                    self.quarantine_bodies.remove(id.as_str()).map_err(db_err)?;
                    self.enqueue(&msg)?;
                }
                Answer::Bool(r, existed)
            }
            Op::QuarantineTakeRecipient(id, recipient, msg, r) => {
                let meta = self.quarantine.get(id.as_str()).map_err(db_err)?.map(|v| v.value().to_vec());
                let Some(meta) = meta else { return Ok(Answer::Bool(r, false)) };
                let mut entry: QuarantineEntry = serde_json::from_slice(&meta).map_err(corrupt)?;
                let Some(at) = entry.recipients.iter().position(|x| *x == recipient) else {
                    return Ok(Answer::Bool(r, false));
                };
                entry.recipients.remove(at);
                if entry.recipients.is_empty() {
                    self.quarantine.remove(id.as_str()).map_err(db_err)?;
                    self.quarantine_bodies.remove(id.as_str()).map_err(db_err)?;
                } else {
                    let meta = serde_json::to_vec(&entry).map_err(corrupt)?;
                    self.quarantine.insert(id.as_str(), meta.as_slice()).map_err(db_err)?;
                }
                if let Some(msg) = msg {
                    self.enqueue(&msg)?;
                }
                Answer::Bool(r, true)
            }
            Op::QuarantineExpire(now, r) => {
                let mut expired = Vec::new();
                for entry in self.quarantine.iter().map_err(db_err)? {
                    let (k, v) = entry.map_err(db_err)?;
                    let e: QuarantineEntry = serde_json::from_slice(v.value()).map_err(corrupt)?;
                    if e.expires_at < now {
                        expired.push(k.value().to_string());
                    }
                }
                for id in &expired {
                    self.quarantine.remove(id.as_str()).map_err(db_err)?;
                    self.quarantine_bodies.remove(id.as_str()).map_err(db_err)?;
                }
                Answer::Count(r, expired.len())
            }
            Op::StatePut(key, value, r) => {
                self.state.insert(key.as_str(), value.as_slice()).map_err(db_err)?;
                Answer::Unit(r)
            }
            Op::StateSwap(key, expected, new, r) => {
                let current = self.state.get(key.as_str()).map_err(db_err)?.map(|v| v.value().to_vec());
                let matches = current == expected;
                if matches {
                    self.state.insert(key.as_str(), new.as_slice()).map_err(db_err)?;
                }
                Answer::Bool(r, matches)
            }
            Op::Flush(r) => Answer::Unit(r),
            // The loop turns Shutdown into a flush before applying; nothing to write here.
            Op::Shutdown => Answer::Unit(oneshot::channel().0),
        })
    }

    fn enqueue(&mut self, msg: &NewMessage) -> Result<(), StoreError> {
        let id = msg.message.id.as_str();
        let meta = serde_json::to_vec(&msg.message).map_err(corrupt)?;
        self.messages.insert(id, meta.as_slice()).map_err(db_err)?;
        self.bodies.insert(id, msg.message.body.as_slice()).map_err(db_err)?;
        self.refs.insert(id, msg.jobs.len() as u32).map_err(db_err)?;
        for job in &msg.jobs {
            self.put_job(job)?;
        }
        if msg.jobs.is_empty() {
            self.drop_message(id)?;
        }
        Ok(())
    }

    fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        match self.jobs.get(id).map_err(db_err)? {
            Some(raw) => Ok(Some(serde_json::from_slice(raw.value()).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    fn put_job(&mut self, job: &Job) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(job).map_err(corrupt)?;
        self.jobs.insert(job.id.as_str(), raw.as_slice()).map_err(db_err)?;
        self.schedule.insert((job.due, job.id.as_str()), ()).map_err(db_err)?;
        Ok(())
    }

    /// Removes a job; the message goes with its last job. Unknown ids are ignored, so settling
    /// a job twice (a duplicate delivery) is harmless.
    fn remove_job(&mut self, id: &str) -> Result<(), StoreError> {
        let Some(job) = self.get_job(id)? else { return Ok(()) };
        self.jobs.remove(id).map_err(db_err)?;
        self.schedule.remove((job.due, id)).map_err(db_err)?;
        let left = self.refs.get(job.message_id.as_str()).map_err(db_err)?.map(|v| v.value());
        match left {
            Some(n) if n > 1 => {
                self.refs.insert(job.message_id.as_str(), n - 1).map_err(db_err)?;
            }
            _ => self.drop_message(&job.message_id)?,
        }
        Ok(())
    }

    fn drop_message(&mut self, id: &str) -> Result<(), StoreError> {
        self.messages.remove(id).map_err(db_err)?;
        self.bodies.remove(id).map_err(db_err)?;
        self.refs.remove(id).map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        crate::store::conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn queued_jobs_survive_reopening_and_leases_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let msg = crate::store::conformance::sample_message(2, 1_000);
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.enqueue(msg.clone()).await.unwrap();
            let leased = store.lease(5_000, 10, Duration::from_secs(600)).await.unwrap();
            assert_eq!(leased.len(), 2);
        }
        // A new process (a restart after a crash) sees both jobs due again.
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let leased = store.lease(5_000, 10, Duration::from_secs(600)).await.unwrap();
        assert_eq!(leased.len(), 2);
        let loaded = store.load_message(&msg.message.id).await.unwrap().unwrap();
        assert_eq!(loaded.body, msg.message.body);
    }
}
