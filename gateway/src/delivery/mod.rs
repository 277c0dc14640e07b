//! Delivery: lease due jobs from the store, deliver each to its next hop, and settle it:
//! delivered recipients are done, refused ones are bounced (DSN), temporarily failed ones are
//! retried with exponential backoff until the message's lifetime runs out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub mod dsn;

use crate::config::ConfigSnapshot;
use crate::context::Context;
use crate::metrics::ResultLabel;
use crate::outbound::{Envelope, OutboundError};
use crate::routing;
use crate::store::{DeliveryPlan, Job, Message, NewMessage, Recipient, Via};
use crate::util::time::{ms, now_ms};

pub struct Delivery {
    ctx: Arc<Context>,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    slots: Arc<Semaphore>,
}

impl Delivery {
    pub fn new(ctx: Arc<Context>) -> Arc<Self> {
        let concurrency = ctx.config().delivery.concurrency as usize;
        Arc::new(Self {
            per_destination: Mutex::default(),
            slots: Arc::new(Semaphore::new(concurrency)),
            ctx,
        })
    }

    /// The scheduler: runs until `stop` fires. In-flight deliveries finish on their own.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let reaper = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                reaper.ctx.outbound.reap(reaper.ctx.config().delivery.idle_timeout.get());
            }
        });
        loop {
            if *stop.borrow() {
                return;
            }
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stop.changed() => return,
            };
            let want = 1 + self.slots.available_permits().min(255);
            let lease_for = self.ctx.config().delivery.lease_timeout.get();
            match self.ctx.store.lease_with_messages(now_ms(), want, lease_for).await {
                Ok(jobs) if !jobs.is_empty() => {
                    let mut permit = Some(first);
                    for (job, message) in jobs {
                        let p = match permit.take() {
                            Some(p) => p,
                            None => match self.slots.clone().acquire_owned().await {
                                Ok(p) => p,
                                Err(_) => return,
                            },
                        };
                        tokio::spawn(self.clone().process(job, message, p));
                    }
                }
                Ok(_) => {
                    drop(first);
                    self.wait_for_work(&mut stop).await;
                }
                Err(e) => {
                    drop(first);
                    tracing::error!(error = %e, "cannot lease jobs from the store; delivery paused");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }

    async fn wait_for_work(&self, stop: &mut tokio::sync::watch::Receiver<bool>) {
        let max_wait = Duration::from_secs(5);
        let wait = match self.ctx.store.next_due().await {
            Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms())).min(max_wait),
            _ => max_wait,
        };
        if wait.is_zero() {
            // Due jobs exist but are all leased by running deliveries: yield briefly.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.ctx.queue_wakeup.notified() => {}
            _ = stop.changed() => {}
        }
    }

    fn destination_slots(&self, key: &str, limit: u32) -> Arc<Semaphore> {
        let mut map = self.per_destination.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string()).or_insert_with(|| Arc::new(Semaphore::new(limit as usize))).clone()
    }

    async fn process(self: Arc<Self>, job: Job, message: Option<Message>, _slot: OwnedSemaphorePermit) {
        let cfg = self.ctx.config();
        let Some(message) = message else {
            tracing::error!(queue_id = %job.message_id, job = %job.id, "job without its message; dropping the job");
            let _ = self.ctx.store.complete(&job, None).await;
            return;
        };
        let key = job.next_hop.key();
        let dest = self.destination_slots(&key, cfg.delivery.concurrency_per_destination);
        let Ok(_dest_slot) = dest.acquire().await else { return };
        let started = Instant::now();
        let results = self.attempt(&cfg, &job, &message).await;
        self.settle(&cfg, job, &message, results, started).await;
    }

    /// One delivery attempt of a job.
    async fn attempt(
        &self,
        cfg: &ConfigSnapshot,
        job: &Job,
        message: &Message,
    ) -> Vec<Result<(), OutboundError>> {
        let env = Envelope {
            sender: &job.sender,
            recipients: job.recipients.iter().map(|r| r.address.as_str()).collect(),
            smtputf8: message.smtputf8,
            eight_bit: message.eight_bit,
        };
        match &job.next_hop.via {
            Via::MailboxApi(account) => self.ctx.mailbox_api.send(cfg, account, &env, &message.body).await,
            _ => self.ctx.outbound.send(cfg, &job.next_hop, &env, &message.body).await,
        }
    }

    async fn settle(
        &self,
        cfg: &ConfigSnapshot,
        mut job: Job,
        message: &Message,
        results: Vec<Result<(), OutboundError>>,
        started: Instant,
    ) {
        let now = now_ms();
        let expired = now >= job.expires_at;
        let metrics = &self.ctx.metrics;
        let mut deferred: Vec<(Recipient, OutboundError)> = Vec::new();
        let mut bounced: Vec<(Recipient, OutboundError)> = Vec::new();
        let mut delivered = 0usize;
        for (rcpt, result) in job.recipients.iter().cloned().zip(results) {
            match result {
                Ok(()) => {
                    delivered += 1;
                    tracing::info!(queue_id = %job.message_id, job = %job.id, rcpt = %rcpt.address, route = %job.next_hop.key(), attempt = job.attempts + 1, status = "delivered", "delivered");
                }
                Err(f) if f.permanent => bounced.push((rcpt, f)),
                Err(mut f) if expired => {
                    f.permanent = true;
                    f.diagnostic = format!(
                        "delivery time expired after {} attempts; last error: {}",
                        job.attempts + 1,
                        f.diagnostic
                    );
                    bounced.push((rcpt, f));
                }
                Err(f) => deferred.push((rcpt, f)),
            }
        }
        let result = match (delivered > 0, !deferred.is_empty() || !bounced.is_empty()) {
            (true, false) => "delivered",
            (true, true) => "partial",
            (false, _) if !deferred.is_empty() => "deferred",
            _ => "failed",
        };
        metrics.delivery_attempts.get_or_create(&ResultLabel { result }).inc();
        metrics
            .delivery_latency
            .get_or_create(&ResultLabel { result })
            .observe(started.elapsed().as_secs_f64());
        let count = |result, n: usize| {
            metrics.delivery_recipients.get_or_create(&ResultLabel { result }).inc_by(n as u64)
        };
        count("delivered", delivered);
        count("deferred", deferred.len());

        let dsn = self.bounce(cfg, &job, message, &bounced);
        if !bounced.is_empty() {
            count(if dsn.is_some() { "bounced" } else { "dropped" }, bounced.len());
        }
        if deferred.is_empty() {
            metrics.queue_time.observe(now.saturating_sub(job.created_at) as f64 / 1000.0);
            if let Err(e) = self.ctx.store.complete(&job, dsn).await {
                tracing::error!(job = %job.id, error = %e, "cannot settle job; it will be delivered again after its lease");
            }
            return;
        }
        job.attempts += 1;
        // The backoff, or longer when the peer asked for a pause (within retryMax).
        let asked = deferred.iter().filter_map(|(_, f)| f.retry_after).max();
        let delay =
            backoff(cfg, job.attempts).max(asked.unwrap_or_default().min(cfg.delivery.retry_max.get()));
        job.due = (now + ms(delay)).min(job.expires_at.max(now));
        job.last_error = deferred.last().map(|(_, f)| f.diagnostic.clone());
        for (rcpt, f) in &deferred {
            tracing::info!(queue_id = %job.message_id, job = %job.id, rcpt = %rcpt.address, route = %job.next_hop.key(), attempt = job.attempts, status = "deferred", retry_in = ?delay, error = %f.diagnostic, "deferred");
        }
        job.recipients = deferred.into_iter().map(|(r, _)| r).collect();
        if let Err(e) = self.ctx.store.retry(&job, dsn).await {
            tracing::error!(job = %job.id, error = %e, "cannot reschedule job; it will be retried after its lease");
        }
    }

    /// The DSN for refused recipients, or `None` (logged) when none may be sent.
    fn bounce(
        &self,
        cfg: &ConfigSnapshot,
        job: &Job,
        message: &Message,
        bounced: &[(Recipient, OutboundError)],
    ) -> Option<NewMessage> {
        if bounced.is_empty() {
            return None;
        }
        let why = if job.sender.is_empty() {
            Some("the sender is the null sender")
        } else if !job.bounce {
            Some("bouncing is off for this route")
        } else {
            None
        };
        if let Some(why) = why {
            for (rcpt, f) in bounced {
                tracing::warn!(queue_id = %job.message_id, job = %job.id, rcpt = %rcpt.address, route = %job.next_hop.key(), status = "dropped", error = %f.diagnostic, reason = why, "failed permanently; no DSN sent");
            }
            return None;
        }
        let failed: Vec<_> =
            bounced.iter().map(|(r, f)| dsn::FailedRecipient { recipient: r, failure: f }).collect();
        // Beside the bounced message: a partitioned store queues the DSN in the same step that
        // settles the job.
        let dsn = Message::generated(String::new(), dsn::build(&cfg.hostname, message, &job.sender, &failed))
            .beside(&job.message_id);
        let next_hop = routing::next_hop_for_own_mail(cfg, &job.sender)?;
        for (rcpt, f) in bounced {
            tracing::info!(queue_id = %job.message_id, job = %job.id, rcpt = %rcpt.address, route = %job.next_hop.key(), status = "bounced", dsn_queue_id = %dsn.id, error = %f.diagnostic, "failed permanently; DSN queued to the sender");
        }
        self.ctx.metrics.dsns.inc();
        // A DSN never bounces (RFC 3461 section 6.2: no DSN about a DSN).
        let plan = DeliveryPlan::single(next_hop, false, &job.sender);
        Some(NewMessage::new(dsn, plan, ms(cfg.delivery.lifetime.get())))
    }
}

/// initial * 2^(attempts-1), at most `retryMax`, with ±10% jitter so retries spread out.
fn backoff(cfg: &ConfigSnapshot, attempts: u32) -> Duration {
    let d = &cfg.delivery;
    let base = d.retry_initial.get().saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = base.min(d.retry_max.get());
    let jitter = rand::rng().random_range(0.9..1.1);
    capped.mul_f64(jitter)
}
