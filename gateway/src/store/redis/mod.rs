//! The Redis store: the queue and quarantine shared by every gateway pod.
//!
//! Layout (every key carries a partition's hash tag `{p}`: `{<prefix>}` with one partition,
//! the default; see `partitions.rs` for K. Each script touches one partition's keys, so one
//! slot, and works unchanged on Redis Cluster):
//! - `{p}:sched`: sorted set of job ids; score = when the job may be handed out next: its due
//!   time, or while leased, the end of its lease (the visibility timeout). Ready, scheduled and
//!   leased jobs are one structure, and a pod that died leaves jobs that simply come due again.
//! - `{p}:job:<id>`: the job (JSON).
//! - `{p}:msg:<id>`: hash of meta (JSON), body, refs (jobs not yet settled); the body is stored
//!   once and shared by the message's jobs. `{p}:msgs`: set of message ids (for counting).
//! - `{p}:q:<id>`: quarantine entry (meta, body), indexed by `{p}:quar` (by creation) and
//!   `{p}:quar_exp` (by expiry).
//! - `{p}:state:<key>`: small shared state (destination verification, digests).
//! - `{p}:rl`: hash of rate-limit GCRA times (ms) by limit key; a time in the past limits
//!   nothing and is swept out by `rate_limits_expire`. `{p}:lf:<client>`: failed logins in the
//!   current window; `{p}:ll:<client>`: a lockout. These and `state` are in partition 0 only;
//!   `{p}:partitions` there records how many partitions the fleet has had.
//!
//! Every multi-key change is one Lua script (atomic), and each store call is one round trip:
//! an accepted message costs one EVALSHA (plus a WAIT when replicas are required). With K
//! partitions, a message whose rate limits Redis must count and which lives outside partition
//! 0 costs two (limits, then the message); leasing visits partitions in turn until it has
//! enough jobs.

mod partitions;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use postern_api::RedisStoreConfig;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Script, Value};

use self::partitions::Partitions;
use super::leases::Leases;
use super::{
    Job, LockoutPolicy, LoginFailures, Message, NewMessage, QuarantineEntry, QueueStats, RateCheck,
    RateDecision, Store, StoreError, StoreResult,
};

/// Lua shared by the scripts: writing a message with its jobs, and dropping a settled job.
/// `KEYS[1]` is the hash tag; the other keys are built from it (same slot).
const PRELUDE: &str = r#"
local T = KEYS[1]
local function put_message(i)
  local id, meta, body, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local mk = T .. ':msg:' .. id
  i = i + 4
  if n == 0 then return i end
  redis.call('HSET', mk, 'meta', meta, 'body', body, 'refs', n)
  redis.call('SADD', T .. ':msgs', id)
  for _ = 1, n do
    redis.call('SET', T .. ':job:' .. ARGV[i], ARGV[i + 2])
    redis.call('ZADD', T .. ':sched', ARGV[i + 1], ARGV[i])
    i = i + 3
  end
  return i
end
-- GCRA (see limits.rs) on Redis's clock. ARGV[i]: count, then per limit: key, limit, period
-- (ms), cost, extra units wanted for the pod's lease (leases.rs). All or nothing: returns
-- {1-based index of the first over, ms until it would fit} and counts none, or {0, 0, units
-- granted per limit} (the cost, plus the extra when that fits too) and counts those; and the
-- ARGV index after the limits. Every TAT is a field of one hash: one HMGET and one HSET for all
-- limits (a key per limit took a SET each, and a script's Redis calls are what it costs).
local function check_limits(i)
  local n = tonumber(ARGV[i])
  local after = i + 1 + n * 5
  if n == 0 then return nil, after end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local fields = {}
  for c = 1, n do fields[c] = ARGV[i + c * 5 - 4] end
  local stored = redis.call('HMGET', T .. ':rl', unpack(fields))
  local set, granted = {}, {0, 0}
  for c = 1, n do
    local j = i + c * 5 - 4
    local limit, period = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
    local cost, extra = tonumber(ARGV[j + 3]), tonumber(ARGV[j + 4])
    local interval = math.max(1, math.floor(period / math.max(1, limit)))
    local tat = math.max(tonumber(stored[c]) or 0, now)
    local units = cost + extra
    if extra > 0 and tat + interval * units > now + period then units = cost end
    local new_tat = tat + interval * units
    if new_tat > now + period then return {c, new_tat - now - period}, after end
    set[c * 2 - 1] = fields[c]
    set[c * 2] = string.format('%d', new_tat)
    granted[c + 2] = units
  end
  redis.call('HSET', T .. ':rl', unpack(set))
  return granted, after
end
local function drop_job(jid, msg_id)
  if redis.call('DEL', T .. ':job:' .. jid) == 0 then return 0 end
  redis.call('ZREM', T .. ':sched', jid)
  local mk = T .. ':msg:' .. msg_id
  if redis.call('HINCRBY', mk, 'refs', -1) <= 0 then
    redis.call('DEL', mk)
    redis.call('SREM', T .. ':msgs', msg_id)
  end
  return 1
end
"#;

const ENQUEUE: &str = "put_message(1) return 1";
/// ARGV: job id, message id, has follow-up ("0"/"1"), follow-up message...
/// Returns 1 if the job was in this partition (the follow-up is queued either way).
const COMPLETE: &str =
    "local found = drop_job(ARGV[1], ARGV[2]) if ARGV[3] == '1' then put_message(4) end return found";
/// ARGV: job id, due, job JSON, has follow-up, follow-up message... A job another pod already
/// completed stays completed (no resurrection by a late retry). Returns 1 if the job was here.
const RETRY: &str = r#"
local found = redis.call('EXISTS', T .. ':job:' .. ARGV[1])
if found == 1 then
  redis.call('SET', T .. ':job:' .. ARGV[1], ARGV[3])
  redis.call('ZADD', T .. ':sched', ARGV[2], ARGV[1])
end
if ARGV[4] == '1' then put_message(5) end
return found"#;
/// ARGV: now, max, lease end. Leases due jobs (their score moves to the lease's end) and
/// returns each with its message's meta and body (`''` when the message is gone):
/// {job, meta, body, job, meta, body, ...}. The message id is read from the job's JSON.
const LEASE_WITH_MESSAGES: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', T .. ':sched', '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local job = redis.call('GET', T .. ':job:' .. id)
  if job then
    redis.call('ZADD', T .. ':sched', ARGV[3], id)
    -- serde writes `message_id` second, after the id: a pattern finds it without decoding
    -- the whole job (cjson cost ~20% more Redis CPU per message); cjson is the fallback.
    local mid = string.match(job, '^{"id":"[^"]*","message_id":"([^"]*)"') or cjson.decode(job)['message_id']
    local m = redis.call('HMGET', T .. ':msg:' .. mid, 'meta', 'body')
    out[#out + 1] = job
    out[#out + 1] = m[1] or ''
    out[#out + 1] = m[2] or ''
  else
    redis.call('ZREM', T .. ':sched', id)
  end
end
return out"#;
/// ARGV: id, meta, body, created_at, expires_at
const QUARANTINE_PUT: &str = r#"
redis.call('HSET', T .. ':q:' .. ARGV[1], 'meta', ARGV[2], 'body', ARGV[3])
redis.call('ZADD', T .. ':quar', ARGV[4], ARGV[1])
redis.call('ZADD', T .. ':quar_exp', ARGV[5], ARGV[1])
return 1"#;
/// ARGV: id. Returns 1 if it existed.
const QUARANTINE_DELETE: &str = r#"
local n = redis.call('DEL', T .. ':q:' .. ARGV[1])
redis.call('ZREM', T .. ':quar', ARGV[1])
redis.call('ZREM', T .. ':quar_exp', ARGV[1])
return n"#;
/// ARGV: id, then the message to enqueue. Returns 1 if the entry existed (and was released).
const QUARANTINE_RELEASE: &str = r#"
if redis.call('DEL', T .. ':q:' .. ARGV[1]) == 0 then return 0 end
redis.call('ZREM', T .. ':quar', ARGV[1])
redis.call('ZREM', T .. ':quar_exp', ARGV[1])
put_message(2)
return 1"#;
/// ARGV: id, the entry's meta as read, its meta without the recipient ("": the entry goes),
/// '1' and the message to enqueue or '0'. Returns 0 when the meta changed since it was read
/// (the caller reads again), 1 when done.
const QUARANTINE_TAKE_RECIPIENT: &str = r#"
local k = T .. ':q:' .. ARGV[1]
if redis.call('HGET', k, 'meta') ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('DEL', k)
  redis.call('ZREM', T .. ':quar', ARGV[1])
  redis.call('ZREM', T .. ':quar_exp', ARGV[1])
else
  redis.call('HSET', k, 'meta', ARGV[3])
end
if ARGV[4] == '1' then put_message(5) end
return 1"#;
/// ARGV: key, expected ("" with ARGV[3] == '0' for absent), has expected, new value.
const STATE_SWAP: &str = r#"
local k = T .. ':state:' .. ARGV[1]
local cur = redis.call('GET', k)
if ARGV[3] == '0' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
redis.call('SET', k, ARGV[4])
return 1"#;
/// Rate limits: all of a call's limits, then optionally the message they admit, in one script.
const RATE_LIMIT: &str = "return (check_limits(1))";
/// ARGV: the limits (as `check_limits`), then a message (as `put_message`): the message is
/// written only when every limit admits it, and the limits count only when it is written.
const ENQUEUE_WITHIN: &str = r#"
local answer, i = check_limits(1)
if answer[1] == 0 then put_message(i) end
return answer"#;
/// ARGV: now (ms), cursor, count. Removes the TATs at or before `now` among about `count`
/// fields of the rate-limit hash from `cursor` (they limit nothing any more). Returns {next
/// cursor ("0": a pass is complete), how many were removed}.
const RATE_LIMITS_EXPIRE: &str = r#"
local r = redis.call('HSCAN', T .. ':rl', ARGV[2], 'COUNT', ARGV[3])
local now, old = tonumber(ARGV[1]), {}
for k = 1, #r[2], 2 do
  if (tonumber(r[2][k + 1]) or 0) <= now then old[#old + 1] = r[2][k] end
end
for k = 1, #old, 500 do redis.call('HDEL', T .. ':rl', unpack(old, k, math.min(k + 499, #old))) end
return {r[1], #old}"#;
/// A failed login. ARGV: client, window (ms), max failures, lockout (ms). Returns {failures in
/// the window, lockout ms (0: not locked out)}.
const LOGIN_FAILED: &str = r#"
local fk = T .. ':lf:' .. ARGV[1]
local n = redis.call('INCR', fk)
if n == 1 then redis.call('PEXPIRE', fk, ARGV[2]) end
if n >= tonumber(ARGV[3]) then
  redis.call('SET', T .. ':ll:' .. ARGV[1], '1', 'PX', ARGV[4])
  return {n, tonumber(ARGV[4])}
end
return {n, 0}"#;
/// ARGV: now. Returns how many expired.
const QUARANTINE_EXPIRE: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', T .. ':quar_exp', '-inf', '(' .. ARGV[1])
for _, id in ipairs(ids) do
  redis.call('DEL', T .. ':q:' .. id)
  redis.call('ZREM', T .. ':quar', id)
  redis.call('ZREM', T .. ':quar_exp', id)
end
return #ids"#;

/// A single server (reconnecting by itself) or a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        p: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(p, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(p, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

struct Scripts {
    enqueue: Script,
    complete: Script,
    retry: Script,
    lease_with_messages: Script,
    quarantine_put: Script,
    quarantine_delete: Script,
    quarantine_expire: Script,
    quarantine_release: Script,
    quarantine_take_recipient: Script,
    state_swap: Script,
    rate_limit: Script,
    enqueue_within: Script,
    rate_limits_expire: Script,
    login_failed: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            enqueue: s(ENQUEUE),
            complete: s(COMPLETE),
            retry: s(RETRY),
            lease_with_messages: s(LEASE_WITH_MESSAGES),
            quarantine_put: s(QUARANTINE_PUT),
            quarantine_delete: s(QUARANTINE_DELETE),
            quarantine_expire: s(QUARANTINE_EXPIRE),
            quarantine_release: s(QUARANTINE_RELEASE),
            quarantine_take_recipient: s(QUARANTINE_TAKE_RECIPIENT),
            state_swap: s(STATE_SWAP),
            rate_limit: s(RATE_LIMIT),
            enqueue_within: s(ENQUEUE_WITHIN),
            rate_limits_expire: s(RATE_LIMITS_EXPIRE),
            login_failed: s(LOGIN_FAILED),
        }
    }
}

/// ARGV: the partitions configured. Records the most the fleet has had and returns it: a
/// smaller count would strand what the dropped partitions hold.
const PARTITIONS: &str = r#"
local k, want = KEYS[1] .. ':partitions', tonumber(ARGV[1])
local had = tonumber(redis.call('GET', k) or '1')
if want > had then redis.call('SET', k, want) return want end
return had"#;

pub struct RedisStore {
    conn: Conn,
    /// The hash tags of the partitions; partition 0's (`{prefix}`) also holds fleet-wide state.
    parts: Partitions,
    /// `parts.base()`: the tag of fleet-wide state.
    tag: String,
    /// Where the next lease starts among the partitions (they are visited in turn).
    next_lease: AtomicUsize,
    scripts: Scripts,
    wait_replicas: u32,
    wait_timeout: Duration,
    /// Where the sweep of expired rate-limit times goes on (an HSCAN cursor).
    limits_cursor: std::sync::Mutex<String>,
    /// Units of busy rate limits granted to this pod ahead of use.
    leases: Leases,
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl RedisStore {
    /// Connects (the first connection must succeed; later outages are retried forever).
    pub async fn connect(config: &RedisStoreConfig) -> StoreResult<Self> {
        let password = match &config.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p).map(|s| s.trim_end_matches(['\r', '\n']).to_string()).map_err(
                    |e| StoreError::Unavailable(format!("store.redis.passwordFile {}: {e}", p.display())),
                )?,
            ),
            None => None,
        };
        let conn = if config.cluster {
            let nodes: Vec<&str> =
                std::iter::once(config.url.as_str()).chain(config.urls.iter().map(String::as_str)).collect();
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(Duration::from_secs(5))
                .response_timeout(Duration::from_secs(10));
            if let Some(u) = &config.username {
                builder = builder.username(u);
            }
            if let Some(p) = &password {
                builder = builder.password(p);
            }
            let client = builder.build().map_err(unavailable)?;
            Conn::Cluster(client.get_async_connection().await.map_err(unavailable)?)
        } else {
            let mut info = config.url.as_str().into_connection_info().map_err(unavailable)?;
            let mut settings = info.redis_settings().clone();
            if let Some(u) = &config.username {
                settings = settings.set_username(u);
            }
            if let Some(p) = &password {
                settings = settings.set_password(p);
            }
            info = info.set_redis_settings(settings);
            let client = redis::Client::open(info).map_err(unavailable)?;
            let cm_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(5)))
                .set_response_timeout(Some(Duration::from_secs(10)))
                .set_max_delay(Duration::from_secs(2));
            Conn::Single(client.get_connection_manager_with_config(cm_config).await.map_err(unavailable)?)
        };
        let base = format!("{{{}}}", config.key_prefix);
        let had: u16 = Script::new(PARTITIONS)
            .key(&base)
            .arg(config.partitions)
            .invoke_async(&mut conn.clone())
            .await
            .map_err(unavailable)?;
        if had > config.partitions {
            tracing::warn!(
                configured = config.partitions,
                used = had,
                "store.redis.partitions is lower than this fleet has had; keeping {had} so nothing queued is stranded"
            );
        }
        let parts = Partitions::new(&config.key_prefix, had.max(config.partitions));
        let placed: Vec<String> = (0..parts.count())
            .map(|p| format!("{}@{}", parts.tag(p), partitions::slot(parts.tag(p))))
            .collect();
        tracing::info!(partitions = %placed.join(" "), "redis store: partition tags at their cluster slots");
        Ok(Self {
            conn,
            tag: parts.base().to_string(),
            parts,
            next_lease: AtomicUsize::new(rand::random::<u32>() as usize),
            scripts: Scripts::new(),
            wait_replicas: config.wait_replicas,
            wait_timeout: config.wait_timeout.get(),
            limits_cursor: std::sync::Mutex::new("0".into()),
            leases: Leases::default(),
        })
    }

    /// A fleet-wide key (partition 0).
    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.tag)
    }

    /// The hash tag of the partition holding message or quarantine entry `id`.
    fn tag_of(&self, id: &str) -> &str {
        self.parts.tag(self.parts.of(id))
    }

    /// The partition holding quarantine entry `id`, with the entry's meta.
    async fn find_entry_meta(&self, id: &str) -> StoreResult<Option<(&str, Vec<u8>)>> {
        for tag in self.search_order(id) {
            let mut conn = self.conn.clone();
            let meta: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(format!("{tag}:q:{id}"))
                .arg("meta")
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if let Some(meta) = meta {
                return Ok(Some((tag, meta)));
            }
        }
        Ok(None)
    }

    /// Leases from partition `tag` (see `LEASE_WITH_MESSAGES`).
    async fn lease_in(
        &self,
        tag: &str,
        now: u64,
        max: usize,
        until: u64,
    ) -> StoreResult<Vec<(Job, Option<Message>)>> {
        let mut conn = self.conn.clone();
        let raw: Vec<Vec<u8>> = self
            .scripts
            .lease_with_messages
            .key(tag)
            .arg(now)
            .arg(max)
            .arg(until)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(raw.len() / 3);
        for triple in raw.chunks_exact(3) {
            let job: Job = serde_json::from_slice(&triple[0]).map_err(corrupt)?;
            let message = match triple[1].is_empty() {
                true => None,
                false => {
                    let mut msg: Message = serde_json::from_slice(&triple[1]).map_err(corrupt)?;
                    msg.body = triple[2].clone();
                    Some(msg)
                }
            };
            out.push((job, message));
        }
        Ok(out)
    }

    /// The partitions to look in for a message or quarantine entry `id`: its own first, then
    /// the others, where a fleet that changed its partition count placed what it held before,
    /// and where a message made with another (a release, a DSN) lives when its id is not
    /// beside its origin's. Only a miss costs more than the first.
    fn search_order(&self, id: &str) -> impl Iterator<Item = &str> + '_ {
        let (first, n) = (self.parts.of(id), self.parts.count());
        (0..n).map(move |i| self.parts.tag((first + i) % n))
    }

    /// Settles `job` with `script` (COMPLETE or RETRY, whose ARGV `head` fills up to the
    /// follow-up flag), queueing `followup` in the same step. Tried in the partition of the
    /// job's message first, which writes the follow-up whether or not the job is there (a DSN
    /// is beside its message, so it is); a job found elsewhere is settled there after: a crash
    /// in between sends the follow-up twice, never not at all.
    async fn settle(
        &self,
        script: &Script,
        job: &Job,
        head: impl Fn(&mut redis::ScriptInvocation<'_>) -> StoreResult<()>,
        mut followup: Option<NewMessage>,
    ) -> StoreResult<()> {
        for tag in self.search_order(&job.message_id) {
            let mut inv = script.key(tag);
            head(&mut inv)?;
            let carried = followup.take();
            inv.arg(if carried.is_some() { "1" } else { "0" });
            if let Some(f) = &carried {
                Self::push_message(&mut inv, f)?;
            }
            let mut conn = self.conn.clone();
            let found: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
            if found == 1 {
                break;
            }
        }
        Ok(())
    }

    /// Runs the by-id script `invocation` makes for a partition, in `id`'s search order, until
    /// one answers that it found what `id` names (a positive reply): whether one did.
    async fn first_found<'a>(
        &'a self,
        id: &str,
        invocation: impl Fn(&'a str) -> StoreResult<redis::ScriptInvocation<'a>>,
    ) -> StoreResult<bool> {
        for tag in self.search_order(id) {
            let mut conn = self.conn.clone();
            let n: i64 = invocation(tag)?.invoke_async(&mut conn).await.map_err(unavailable)?;
            if n > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The `meta` and `body` of hash `kind:<id>` (a message or quarantine entry), wherever it is.
    async fn find_meta_and_body(&self, kind: &str, id: &str) -> StoreResult<Option<(Vec<u8>, Vec<u8>)>> {
        for tag in self.search_order(id) {
            if let Some(found) = self.meta_and_body(format!("{tag}:{kind}:{id}")).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The entries of partition `tag`, without bodies.
    async fn quarantine_list_in(&self, tag: &str) -> StoreResult<Vec<QuarantineEntry>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{tag}:quar"))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGET").arg(format!("{tag}:q:{id}")).arg("meta");
        }
        let metas: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        metas.into_iter().flatten().map(|m| serde_json::from_slice(&m).map_err(corrupt)).collect()
    }

    /// Appends a message and its jobs to a script invocation's ARGV (see `put_message`).
    fn push_message(inv: &mut redis::ScriptInvocation<'_>, m: &NewMessage) -> StoreResult<()> {
        let meta = serde_json::to_vec(&m.message).map_err(corrupt)?;
        inv.arg(&m.message.id).arg(meta).arg(m.message.body.as_slice()).arg(m.jobs.len());
        for job in &m.jobs {
            inv.arg(&job.id).arg(job.due).arg(serde_json::to_vec(job).map_err(corrupt)?);
        }
        Ok(())
    }

    /// Appends the limits a lease plan leaves to Redis to a script invocation's ARGV (see
    /// `check_limits`).
    fn push_limits(inv: &mut redis::ScriptInvocation<'_>, checks: &[RateCheck], ask: &[(usize, u64)]) {
        inv.arg(ask.len());
        for &(i, extra) in ask {
            let c = &checks[i];
            inv.arg(&c.key).arg(c.limit).arg(crate::util::time::ms(c.period)).arg(c.cost).arg(extra);
        }
    }

    /// Counts `checks` (and queues `message` if they admit it) in the script `script`
    /// (`rate_limit` or `enqueue_within`) for what this pod's leases do not cover, and settles
    /// the leases with its answer. A queued message is durable (replicas included) on `Allowed`.
    async fn counted(
        &self,
        script: &Script,
        checks: &[RateCheck],
        message: Option<NewMessage>,
    ) -> StoreResult<RateDecision> {
        let now = std::time::Instant::now();
        let plan = self.leases.plan(checks, now);
        let answer = if plan.ask.is_empty() {
            // Every limit covered by a lease: a plain enqueue (or nothing at all).
            match message {
                Some(m) => self.enqueue(m).await.map(|()| vec![0, 0]),
                None => Ok(vec![0, 0]),
            }
        } else {
            let mut inv = script.key(&self.tag);
            Self::push_limits(&mut inv, checks, &plan.ask);
            if let Some(m) = &message {
                Self::push_message(&mut inv, m)?;
            }
            let mut conn = self.conn.clone();
            let answer = inv.invoke_async::<Vec<u64>>(&mut conn).await.map_err(unavailable);
            match answer {
                Ok(a) if message.is_some() && a.first() == Some(&0) => {
                    self.wait_for_replicas().await.map(|()| a)
                }
                other => other,
            }
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                self.leases.give_back(checks, &plan);
                return Err(e);
            }
        };
        match answer.as_slice() {
            [0, 0, granted @ ..] => {
                self.leases.granted(checks, &plan, granted, now);
                Ok(RateDecision::Allowed)
            }
            [index, wait, ..] => {
                self.leases.give_back(checks, &plan);
                let asked = usize::try_from(*index).ok().and_then(|i| i.checked_sub(1));
                let index = asked.and_then(|i| plan.ask.get(i)).map(|&(i, _)| i);
                let index = index.ok_or_else(|| corrupt(format!("rate limit answer {answer:?}")))?;
                Ok(RateDecision::Limited { index, retry_after: Duration::from_millis(*wait) })
            }
            _ => Err(corrupt(format!("rate limit answer {answer:?}"))),
        }
    }

    /// The `meta` and `body` fields of a message or quarantine hash; `None` if it is gone.
    async fn meta_and_body(&self, key: String) -> StoreResult<Option<(Vec<u8>, Vec<u8>)>> {
        let mut conn = self.conn.clone();
        let (meta, body): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(key)
            .arg("meta")
            .arg("body")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(meta.map(|m| (m, body.unwrap_or_default())))
    }

    /// With `waitReplicas`, the write counts only once enough replicas have it.
    async fn wait_for_replicas(&self) -> StoreResult<()> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let acked: u32 = redis::cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(self.wait_timeout.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if acked < self.wait_replicas {
            return Err(StoreError::Unavailable(format!(
                "redis: only {acked} of {} replicas confirmed the write",
                self.wait_replicas
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn enqueue(&self, msg: NewMessage) -> StoreResult<()> {
        let mut inv = self.scripts.enqueue.key(self.tag_of(&msg.message.id));
        Self::push_message(&mut inv, &msg)?;
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        self.wait_for_replicas().await
    }

    /// The jobs of `lease_with_messages` (one lease script for both: the engine always wants
    /// the bodies; only tests lease jobs alone).
    async fn lease(&self, now: u64, max: usize, lease_for: Duration) -> StoreResult<Vec<Job>> {
        Ok(self.lease_with_messages(now, max, lease_for).await?.into_iter().map(|(job, _)| job).collect())
    }

    async fn lease_with_messages(
        &self,
        now: u64,
        max: usize,
        lease_for: Duration,
    ) -> StoreResult<Vec<(Job, Option<Message>)>> {
        let until = now.saturating_add(crate::util::time::ms(lease_for));
        // Partitions in turn, from a different one each call (no partition waits behind
        // another's backlog), until `max` jobs: a busy queue fills a lease from the first.
        let count = self.parts.count();
        let start = self.next_lease.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        for i in 0..count {
            let tag = self.parts.tag((start + i) % count);
            out.extend(self.lease_in(tag, now, max - out.len(), until).await?);
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    async fn load_message(&self, id: &str) -> StoreResult<Option<Message>> {
        let Some((meta, body)) = self.find_meta_and_body("msg", id).await? else { return Ok(None) };
        let mut msg: Message = serde_json::from_slice(&meta).map_err(corrupt)?;
        msg.body = body;
        Ok(Some(msg))
    }

    async fn complete(&self, job: &Job, followup: Option<NewMessage>) -> StoreResult<()> {
        let head = |inv: &mut redis::ScriptInvocation<'_>| {
            inv.arg(&job.id).arg(&job.message_id);
            Ok(())
        };
        self.settle(&self.scripts.complete, job, head, followup).await
    }

    async fn retry(&self, job: &Job, followup: Option<NewMessage>) -> StoreResult<()> {
        let head = |inv: &mut redis::ScriptInvocation<'_>| {
            inv.arg(&job.id).arg(job.due).arg(serde_json::to_vec(job).map_err(corrupt)?);
            Ok(())
        };
        self.settle(&self.scripts.retry, job, head, followup).await
    }

    async fn next_due(&self) -> StoreResult<Option<u64>> {
        let firsts = try_join_all((0..self.parts.count()).map(|p| {
            let mut conn = self.conn.clone();
            let key = format!("{}:sched", self.parts.tag(p));
            async move {
                let first: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                StoreResult::Ok(first.first().map(|(_, score)| *score as u64))
            }
        }))
        .await?;
        Ok(firsts.into_iter().flatten().min())
    }

    async fn stats(&self) -> StoreResult<QueueStats> {
        let counts = try_join_all((0..self.parts.count()).map(|p| {
            let mut conn = self.conn.clone();
            let tag = self.parts.tag(p);
            let mut pipe = redis::pipe();
            pipe.cmd("ZCARD").arg(format!("{tag}:sched"));
            pipe.cmd("SCARD").arg(format!("{tag}:msgs"));
            pipe.cmd("ZCARD").arg(format!("{tag}:quar"));
            async move {
                let counts: (u64, u64, u64) = pipe.query_async(&mut conn).await.map_err(unavailable)?;
                StoreResult::Ok(counts)
            }
        }))
        .await?;
        let mut stats = QueueStats::default();
        for (jobs, messages, quarantined) in counts {
            stats.jobs += jobs;
            stats.messages += messages;
            stats.quarantined += quarantined;
        }
        Ok(stats)
    }

    async fn quarantine_put(&self, entry: QuarantineEntry) -> StoreResult<()> {
        let meta = serde_json::to_vec(&entry).map_err(corrupt)?;
        let mut conn = self.conn.clone();
        let _: i64 = self
            .scripts
            .quarantine_put
            .key(self.tag_of(&entry.id))
            .arg(&entry.id)
            .arg(meta)
            .arg(entry.body.as_slice())
            .arg(entry.created_at)
            .arg(entry.expires_at)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn quarantine_get(&self, id: &str) -> StoreResult<Option<QuarantineEntry>> {
        let Some((meta, body)) = self.find_meta_and_body("q", id).await? else { return Ok(None) };
        let mut entry: QuarantineEntry = serde_json::from_slice(&meta).map_err(corrupt)?;
        entry.body = body;
        Ok(Some(entry))
    }

    async fn quarantine_list(&self) -> StoreResult<Vec<QuarantineEntry>> {
        let parts =
            try_join_all((0..self.parts.count()).map(|p| self.quarantine_list_in(self.parts.tag(p)))).await?;
        let mut out: Vec<QuarantineEntry> = parts.into_iter().flatten().collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn quarantine_delete(&self, id: &str) -> StoreResult<bool> {
        self.first_found(id, |tag| {
            let mut inv = self.scripts.quarantine_delete.key(tag);
            inv.arg(id);
            Ok(inv)
        })
        .await
    }

    async fn quarantine_release(&self, id: &str, msg: NewMessage) -> StoreResult<bool> {
        // The message is queued in the entry's partition, in the step that takes the entry
        // (beside the entry, that is its own partition too).
        let released = self
            .first_found(id, |tag| {
                let mut inv = self.scripts.quarantine_release.key(tag);
                inv.arg(id);
                Self::push_message(&mut inv, &msg)?;
                Ok(inv)
            })
            .await?;
        if released {
            self.wait_for_replicas().await?;
        }
        Ok(released)
    }

    async fn quarantine_take_recipient(
        &self,
        id: &str,
        recipient: &str,
        msg: Option<NewMessage>,
    ) -> StoreResult<bool> {
        // Compare-and-set on the entry's meta: another pod's change in between makes the
        // script refuse, and the entry is read again.
        for _ in 0..8 {
            let mut conn = self.conn.clone();
            let Some((tag, meta)) = self.find_entry_meta(id).await? else { return Ok(false) };
            let mut entry: QuarantineEntry = serde_json::from_slice(&meta).map_err(corrupt)?;
            let Some(at) = entry.recipients.iter().position(|r| r == recipient) else { return Ok(false) };
            entry.recipients.remove(at);
            let new_meta = if entry.recipients.is_empty() {
                Vec::new()
            } else {
                serde_json::to_vec(&entry).map_err(corrupt)?
            };
            let mut inv = self.scripts.quarantine_take_recipient.key(tag);
            inv.arg(id).arg(meta).arg(new_meta);
            match &msg {
                Some(m) => {
                    inv.arg("1");
                    Self::push_message(&mut inv, m)?;
                }
                None => {
                    inv.arg("0");
                }
            }
            let n: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
            if n > 0 {
                self.wait_for_replicas().await?;
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(format!("quarantine entry {id} kept changing; try again")))
    }

    async fn quarantine_expire(&self, now: u64) -> StoreResult<usize> {
        let counts = try_join_all((0..self.parts.count()).map(|p| {
            let mut conn = self.conn.clone();
            let tag = self.parts.tag(p);
            async move {
                let n: usize = self
                    .scripts
                    .quarantine_expire
                    .key(tag)
                    .arg(now)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                StoreResult::Ok(n)
            }
        }))
        .await?;
        Ok(counts.into_iter().sum())
    }

    async fn state_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(self.key(&format!("state:{key}")))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn state_put(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(self.key(&format!("state:{key}")))
            .arg(value)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        self.wait_for_replicas().await
    }

    async fn state_swap(&self, key: &str, expected: Option<Vec<u8>>, new: Vec<u8>) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let has = if expected.is_some() { "1" } else { "0" };
        let n: i64 = self
            .scripts
            .state_swap
            .key(&self.tag)
            .arg(key)
            .arg(expected.unwrap_or_default())
            .arg(has)
            .arg(new)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if n > 0 {
            self.wait_for_replicas().await?;
        }
        Ok(n > 0)
    }

    async fn rate_limit(&self, checks: &[RateCheck]) -> StoreResult<RateDecision> {
        if checks.is_empty() {
            return Ok(RateDecision::Allowed);
        }
        self.counted(&self.scripts.rate_limit, checks, None).await
    }

    async fn rate_limits_expire(&self, now: u64) -> StoreResult<usize> {
        // One pass over the hash in steps of SCAN_STEP fields, from where the last call stopped;
        // at most SCAN_BUDGET steps per call, so a huge hash is swept over several calls.
        const SCAN_STEP: usize = 1000;
        const SCAN_BUDGET: usize = 100;
        let mut conn = self.conn.clone();
        let mut removed = 0;
        for _ in 0..SCAN_BUDGET {
            let cursor = self.limits_cursor.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let (next, n): (String, usize) = self
                .scripts
                .rate_limits_expire
                .key(&self.tag)
                .arg(now)
                .arg(&cursor)
                .arg(SCAN_STEP)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            removed += n;
            let done = next == "0";
            *self.limits_cursor.lock().unwrap_or_else(|p| p.into_inner()) = next;
            if done {
                break;
            }
        }
        Ok(removed)
    }

    async fn enqueue_within(&self, msg: NewMessage, limits: &[RateCheck]) -> StoreResult<RateDecision> {
        if limits.is_empty() {
            return self.enqueue(msg).await.map(|()| RateDecision::Allowed);
        }
        if self.tag_of(&msg.message.id) == self.tag {
            return self.counted(&self.scripts.enqueue_within, limits, Some(msg)).await;
        }
        // The limits live in partition 0, the message elsewhere: count, then queue. A failed
        // write after counting leaves a limit counted for a message the client is told to send
        // again (too strict by one, never too lax).
        let decision = self.counted(&self.scripts.rate_limit, limits, None).await?;
        if decision == RateDecision::Allowed {
            self.enqueue(msg).await?;
        }
        Ok(decision)
    }

    async fn login_failed(&self, client: &str, policy: &LockoutPolicy) -> StoreResult<LoginFailures> {
        let mut conn = self.conn.clone();
        let (failures, locked): (u32, u64) = self
            .scripts
            .login_failed
            .key(&self.tag)
            .arg(client)
            .arg(crate::util::time::ms(policy.window).max(1))
            .arg(policy.max_failures)
            .arg(crate::util::time::ms(policy.lockout).max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let locked_for = (locked > 0).then(|| Duration::from_millis(locked));
        Ok(LoginFailures { failures, locked_for })
    }

    async fn login_locked(&self, client: &str) -> StoreResult<Option<Duration>> {
        let mut conn = self.conn.clone();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(self.key(&format!("ll:{client}")))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok((ttl > 0).then(|| Duration::from_millis(ttl.unsigned_abs())))
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every write was acknowledged when it returned; nothing is buffered here.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_test_support::redis::{RedisCluster, RedisServer};

    #[test]
    fn a_jobs_json_starts_with_the_ids_the_lease_script_reads() {
        let job = &crate::store::conformance::sample_message(1, 0).jobs[0];
        let json = serde_json::to_string(job).unwrap();
        let start = format!("{{\"id\":\"{}\",\"message_id\":\"{}\"", job.id, job.message_id);
        assert!(json.starts_with(&start), "{json}");
    }

    fn config(url: String) -> RedisStoreConfig {
        postern_api::RedisStoreConfig {
            url,
            urls: vec![],
            cluster: false,
            username: None,
            password_file: None,
            wait_replicas: 0,
            wait_timeout: postern_api::HumanDuration::from_secs(1),
            key_prefix: "postern-test".into(),
            partitions: 1,
        }
    }

    #[tokio::test]
    async fn redis_store_passes_the_conformance_suite() {
        crate::tls::install_default_provider();
        let server = RedisServer::start_with("everysec");
        let store = RedisStore::connect(&config(server.url())).await.unwrap();
        crate::store::conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn redis_cluster_passes_the_conformance_suite() {
        crate::tls::install_default_provider();
        let cluster = RedisCluster::start();
        let urls = cluster.urls();
        let mut c = config(urls[0].clone());
        c.urls = urls[1..].to_vec();
        c.cluster = true;
        let store = RedisStore::connect(&c).await.unwrap();
        crate::store::conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn redis_cluster_with_three_partitions_passes_the_conformance_suite() {
        crate::tls::install_default_provider();
        let cluster = RedisCluster::start();
        let store = RedisStore::connect(&cluster_config(&cluster, 3)).await.unwrap();
        assert_eq!(store.parts.count(), 3);
        crate::store::conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn an_acl_user_limited_to_the_documented_key_patterns_runs_a_partitioned_store() {
        crate::tls::install_default_provider();
        let server = RedisServer::start_with("everysec");
        let mut admin =
            redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        // README: `~{<keyPrefix>}* ~{<keyPrefix>.*`; every command, no other key.
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("postern")
            .arg("on")
            .arg(">s3cret")
            .arg("~{postern-test}*")
            .arg("~{postern-test.*")
            .arg("+@all")
            .query_async(&mut admin)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let mut c = config(server.url());
        c.username = Some("postern".into());
        c.password_file = Some(password);
        c.partitions = 3;
        let store = RedisStore::connect(&c).await.unwrap();
        crate::store::conformance::run_all(&store).await;
        // The same user is refused any other key (the patterns are what limits it).
        let mut conn = store.conn.clone();
        let denied: Result<(), _> = redis::cmd("SET").arg("{other}:x").arg("1").query_async(&mut conn).await;
        assert!(denied.unwrap_err().to_string().contains("permission"), "a key outside the patterns");
    }

    fn cluster_config(cluster: &RedisCluster, partitions: u16) -> RedisStoreConfig {
        let urls = cluster.urls();
        let mut c = config(urls[0].clone());
        c.urls = urls[1..].to_vec();
        c.cluster = true;
        c.partitions = partitions;
        c
    }

    /// A plain connection to one node of a cluster.
    async fn node(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    /// How many times a node ran scripts (EVALSHA and EVAL).
    async fn scripts_run(url: &str) -> u64 {
        let stats: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut node(url).await).await.unwrap();
        stats
            .lines()
            .filter_map(|l| {
                l.strip_prefix("cmdstat_evalsha:calls=").or_else(|| l.strip_prefix("cmdstat_eval:calls="))
            })
            .filter_map(|v| v.split(',').next()?.parse::<u64>().ok())
            .sum()
    }

    #[tokio::test]
    async fn three_partitions_spread_keys_and_load_over_three_primaries_and_lose_nothing() {
        crate::tls::install_default_provider();
        let cluster = RedisCluster::start();
        let urls = cluster.urls();
        let config = cluster_config(&cluster, 3);
        let (a, b) =
            (RedisStore::connect(&config).await.unwrap(), RedisStore::connect(&config).await.unwrap());
        let before: Vec<u64> = futures::future::join_all(urls.iter().map(|u| scripts_run(u))).await;

        // Two pods queue 600 messages of 2 jobs each.
        const MESSAGES: usize = 600;
        let queue = async |store: &RedisStore| {
            for _ in 0..MESSAGES / 2 {
                store.enqueue(crate::store::conformance::sample_message(2, 1_000)).await.unwrap();
            }
        };
        tokio::join!(queue(&a), queue(&b));
        let stats = a.stats().await.unwrap();
        assert_eq!((stats.jobs, stats.messages), (2 * MESSAGES as u64, MESSAGES as u64));
        // Keys: each primary holds about a third (a message is 1 hash + 2 jobs).
        let mut keys = Vec::new();
        for url in &urls {
            let n: u64 = redis::cmd("DBSIZE").query_async(&mut node(url).await).await.unwrap();
            keys.push(n);
        }
        let total: u64 = keys.iter().sum();
        assert!(keys.iter().all(|&n| n * 4 > total), "keys per primary {keys:?}");

        // Both pods lease (a few at a time) and complete until the queue is empty: every job is
        // leased exactly once (the lease outlives the test, so a second lease is a bug).
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        let work = async |store: &RedisStore| {
            let mut idle = 0;
            while idle < 3 {
                let jobs = store.lease_with_messages(2_000, 7, Duration::from_secs(600)).await.unwrap();
                idle = if jobs.is_empty() { idle + 1 } else { 0 };
                for (job, message) in jobs {
                    assert_eq!(message.expect("the job's message").id, job.message_id);
                    assert!(seen.lock().unwrap().insert(job.id.clone()), "job {} leased twice", job.id);
                    store.complete(&job, None).await.unwrap();
                }
            }
        };
        tokio::join!(work(&a), work(&b));
        assert_eq!(seen.lock().unwrap().len(), 2 * MESSAGES, "every job leased once");
        let stats = b.stats().await.unwrap();
        assert_eq!((stats.jobs, stats.messages), (0, 0));
        assert_eq!(a.next_due().await.unwrap(), None);

        // Load: each primary ran about a third of the scripts.
        let after: Vec<u64> = futures::future::join_all(urls.iter().map(|u| scripts_run(u))).await;
        let ran: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let total: u64 = ran.iter().sum();
        assert!(total >= 3 * MESSAGES as u64, "{ran:?}");
        assert!(ran.iter().all(|&n| n * 4 > total), "scripts per primary {ran:?}");
    }

    #[tokio::test]
    async fn partitions_only_grow_and_what_was_held_before_is_still_found() {
        use crate::store::conformance::{sample_message, sample_message_beside};
        crate::tls::install_default_provider();
        let server = RedisServer::start_with("everysec");
        let one = RedisStore::connect(&config(server.url())).await.unwrap();
        // Held under one partition: queued messages and a quarantine entry.
        let mut queued = Vec::new();
        for _ in 0..8 {
            let m = sample_message(1, 1_000);
            queued.push(m.jobs[0].clone());
            one.enqueue(m).await.unwrap();
        }
        let held = crate::store::new_id();
        let mut entry = crate::store::conformance::sample_entry(&held, u64::MAX / 2);
        entry.recipients = vec!["a@x.test".into(), "b@x.test".into()];
        one.quarantine_put(entry).await.unwrap();

        let mut grown = config(server.url());
        grown.partitions = 4;
        let four = RedisStore::connect(&grown).await.unwrap();
        assert_eq!(four.parts.count(), 4);
        for _ in 0..20 {
            let m = sample_message(1, 1_000);
            queued.push(m.jobs[0].clone());
            four.enqueue(m).await.unwrap();
        }
        // A pod still configured with one partition keeps the fleet's four.
        let again = RedisStore::connect(&config(server.url())).await.unwrap();
        assert_eq!(again.parts.count(), 4);
        let mut leased = again.lease(1_000, 100, Duration::from_secs(60)).await.unwrap();
        leased.sort_by(|x, y| x.id.cmp(&y.id));
        queued.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(leased, queued, "the jobs queued before the growth and every later one");
        // Each settles wherever it is (its id now points most of them elsewhere); a DSN queued
        // with the settling of an old job is delivered too.
        for (i, job) in leased.iter().enumerate() {
            assert!(again.load_message(&job.message_id).await.unwrap().is_some());
            let dsn = (i == 0).then(|| sample_message_beside(&job.message_id, 1, 1_000));
            again.complete(job, dsn).await.unwrap();
        }
        let dsn = again.lease(1_000, 100, Duration::from_secs(60)).await.unwrap();
        assert_eq!(dsn.len(), 1, "only the DSN is left");
        again.retry(&Job { due: 5_000, ..dsn[0].clone() }, None).await.unwrap();
        assert_eq!(again.next_due().await.unwrap(), Some(5_000), "retried where it is");
        again.complete(&dsn[0], None).await.unwrap();
        let stats = again.stats().await.unwrap();
        assert_eq!((stats.jobs, stats.messages, stats.quarantined), (0, 0, 1));

        // The entry held before the growth: found, taken one recipient at a time, released.
        assert!(again.quarantine_get(&held).await.unwrap().is_some());
        assert_eq!(again.quarantine_list().await.unwrap().len(), 1);
        assert!(again.quarantine_take_recipient(&held, "a@x.test", None).await.unwrap());
        let release = sample_message_beside(&held, 1, 1_000);
        assert!(again.quarantine_release(&held, release.clone()).await.unwrap());
        assert!(!again.quarantine_release(&held, release.clone()).await.unwrap(), "once");
        assert!(!again.quarantine_delete(&held).await.unwrap());
        assert_eq!(again.lease(1_000, 100, Duration::from_secs(60)).await.unwrap(), release.jobs);
    }

    #[tokio::test]
    async fn the_rate_limit_sweep_covers_a_hash_larger_than_one_scan_step() {
        crate::tls::install_default_provider();
        let server = RedisServer::start_with("everysec");
        let store = RedisStore::connect(&config(server.url())).await.unwrap();
        let mut conn = store.conn.clone();
        // 2500 TATs (2.5 scan steps): 1500 long past, 1000 far ahead.
        let mut fill = redis::cmd("HSET");
        fill.arg(store.key("rl"));
        for i in 0..2500u64 {
            fill.arg(format!("ip:{i}")).arg(if i < 1500 { 1_000 + i } else { u64::MAX / 4 });
        }
        let _: () = fill.query_async(&mut conn).await.unwrap();
        assert_eq!(store.rate_limits_expire(1_000_000).await.unwrap(), 1500);
        let left: usize = redis::cmd("HLEN").arg(store.key("rl")).query_async(&mut conn).await.unwrap();
        assert_eq!(left, 1000);
        assert_eq!(store.rate_limits_expire(1_000_000).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn two_pods_share_a_busy_limit_exactly_and_lease_most_of_it() {
        crate::tls::install_default_provider();
        let server = RedisServer::start_with("everysec");
        let a = RedisStore::connect(&config(server.url())).await.unwrap();
        let b = RedisStore::connect(&config(server.url())).await.unwrap();
        let limit = [RateCheck {
            key: "messages:clientIp:2000/86400000:192.0.2.9".into(),
            limit: 2000,
            period: Duration::from_secs(86_400),
            cost: 1,
        }];
        // Both pods send as fast as they can until each is refused.
        async fn send(store: &RedisStore, limit: &[RateCheck]) -> u32 {
            let mut admitted = 0;
            while store.rate_limit(limit).await.unwrap() == RateDecision::Allowed {
                admitted += 1;
            }
            admitted
        }
        let (na, nb) = tokio::join!(send(&a, &limit), send(&b, &limit));
        // Never more than the limit; less only by units a lease held past its window (at most
        // 1% of the limit each time a pod stalls that long; a loaded machine may stall a few).
        assert!(na + nb <= 2000 && na + nb >= 1800, "{na} + {nb}");
        assert!(na > 0 && nb > 0, "both pods sent: {na} + {nb}");
        // Most messages were counted from a lease: Redis wrote the limit far less often.
        let stats: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut a.conn.clone()).await.unwrap();
        let hsets: u32 = stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_hset:calls="))
            .and_then(|v| v.split(',').next()?.parse().ok())
            .unwrap();
        assert!(hsets < (na + nb) / 2, "{hsets} limit writes for {} messages", na + nb);
    }

    #[tokio::test]
    async fn two_gateways_see_one_quarantine_and_one_queue() {
        crate::tls::install_default_provider();
        let server = RedisServer::start_with("everysec");
        let a = RedisStore::connect(&config(server.url())).await.unwrap();
        let b = RedisStore::connect(&config(server.url())).await.unwrap();
        let entry = crate::store::conformance::sample_entry("q-shared", u64::MAX / 2);
        a.quarantine_put(entry.clone()).await.unwrap();
        assert_eq!(b.quarantine_get("q-shared").await.unwrap(), Some(entry));
        assert!(b.quarantine_delete("q-shared").await.unwrap());
        assert_eq!(a.quarantine_get("q-shared").await.unwrap(), None);
        // A job queued through one pod is leased by the other; a lease hides it from both.
        let msg = crate::store::conformance::sample_message(1, 1);
        a.enqueue(msg.clone()).await.unwrap();
        let leased = b.lease(10, 10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(leased, msg.jobs);
        assert!(a.lease(10, 10, Duration::from_secs(60)).await.unwrap().is_empty());
        a.state_put("verification/x", b"v".to_vec()).await.unwrap();
        assert_eq!(b.state_get("verification/x").await.unwrap(), Some(b"v".to_vec()));
    }

    #[tokio::test]
    async fn a_missing_replica_makes_the_write_fail() {
        crate::tls::install_default_provider();
        let server = RedisServer::start_with("everysec");
        let mut c = config(server.url());
        c.wait_replicas = 1;
        c.wait_timeout = postern_api::HumanDuration::from_millis(100);
        let store = RedisStore::connect(&c).await.unwrap();
        let err = store.enqueue(crate::store::conformance::sample_message(1, 1)).await.unwrap_err();
        assert!(err.to_string().contains("only 0 of 1 replicas"), "{err}");
    }
}
