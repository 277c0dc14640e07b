//! DATA and BDAT (CHUNKING), and the end of a message: build the stored copy, plan its
//! delivery jobs, write both durably, and only then answer 250.

use std::time::Instant;

use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};

use super::received;
use super::reply::{self, Reply};
use super::session::{Flow, Session, State};
use crate::routing;
use crate::store::{Job, Message, NewMessage, new_id};
use crate::util::time::{ms, now_ms};

impl Session {
    pub(super) fn handle_data(&mut self) -> Flow {
        let Some(tx) = &self.tx else { return self.push_error(&reply::BAD_SEQUENCE_MAIL) };
        if tx.recipients.is_empty() {
            return self.push_error(&reply::BAD_SEQUENCE_RCPT);
        }
        if !tx.body.is_empty() {
            return self.push_error(&Reply::fixed(503, "5.5.1 DATA cannot follow BDAT"));
        }
        self.state = State::Data(DataReceiver::new());
        self.push(&Reply::fixed(354, "End data with <CR><LF>.<CR><LF>"));
        Flow::Continue
    }

    pub(super) fn handle_bdat(&mut self, chunk_size: usize, is_last: bool) -> Flow {
        // The chunk's bytes follow the command whatever we answer, so a refused chunk is still
        // read (and dropped) before the reply goes out.
        let refusal = match &self.tx {
            None => Some(reply::BAD_SEQUENCE_MAIL),
            Some(tx) if tx.recipients.is_empty() => Some(reply::BAD_SEQUENCE_RCPT),
            Some(tx) if (tx.body.len() + chunk_size) as u64 > self.rt.config.limits.max_message_size => {
                Some(reply::MESSAGE_TOO_BIG)
            }
            Some(_) => None,
        };
        self.state = match refusal {
            Some(reply) => State::Discard(DummyDataReceiver::new_bdat(chunk_size), reply),
            None => State::Bdat(BdatReceiver::new(chunk_size, is_last)),
        };
        Flow::Continue
    }

    pub(super) async fn end_of_chunk(&mut self, last: bool) -> Flow {
        if last {
            return self.end_of_message().await;
        }
        let size = self.tx.as_ref().map_or(0, |t| t.body.len());
        self.push(&Reply::new(250, format!("2.0.0 {size} octets received")));
        Flow::Continue
    }

    /// Message data that was read and dropped (too large, or a refused BDAT chunk).
    pub(super) fn discarded_message(&mut self, reply: Reply) -> Flow {
        if let Some(tx) = self.tx.take() {
            let reason = if reply == reply::MESSAGE_TOO_BIG { "too_large" } else { "bad_sequence" };
            self.gateway.metrics.message("rejected", reason);
            tracing::info!(client = %self.client, from = %tx.sender, decision = "rejected", reason, "message refused");
        }
        self.push_error(&reply)
    }

    pub(super) async fn end_of_message(&mut self) -> Flow {
        let Some(tx) = self.tx.take() else { return Flow::Continue };
        if tx.body.len() as u64 > self.rt.config.limits.max_message_size {
            self.gateway.metrics.message("rejected", "too_large");
            return self.push_error(&reply::MESSAGE_TOO_BIG);
        }
        self.messages += 1;
        let started = Instant::now();
        let id = new_id();
        let now = now_ms();
        let helo = self.helo.as_ref();
        let header = received::header(&received::Trace {
            helo: helo.map_or("unknown", |h| h.name.as_str()),
            extended: helo.is_some_and(|h| h.extended),
            client_ip: self.client_ip(),
            hostname: self.hostname(),
            tls: self.tls.as_ref(),
            smtputf8: tx.smtputf8,
            id: &id,
            single_recipient: (tx.recipients.len() == 1).then(|| tx.recipients[0].as_str()),
        });
        let content = received::normalize_line_endings(&tx.body);
        let mut body = Vec::with_capacity(header.len() + content.len());
        body.extend_from_slice(header.as_bytes());
        body.extend_from_slice(&content);
        let size = body.len();

        let lifetime = ms(self.rt.config.delivery.lifetime.get());
        let jobs: Vec<Job> = routing::plan(&tx.targets)
            .into_iter()
            .map(|(route, bounce, recipients)| Job {
                id: new_id(),
                message_id: id.clone(),
                sender: tx.sender.clone(),
                recipients,
                route,
                attempts: 0,
                created_at: now,
                due: now,
                expires_at: now + lifetime,
                bounce,
                last_error: None,
            })
            .collect();
        let job_count = jobs.len();
        let message = Message {
            id: id.clone(),
            sender: tx.sender.clone(),
            received_at: now,
            smtputf8: tx.smtputf8,
            eight_bit: tx.eight_bit,
            body,
        };
        // Mail relayed in by an inbound gateway: the client that matters for later checks is
        // the one the gateway received it from, named in the gateway's Received header.
        let original_client = self
            .rt
            .is_inbound_gateway(self.client_ip())
            .then(|| received::original_client_ip(&tx.body))
            .flatten()
            .map(|ip| ip.to_string());
        let metrics = &self.gateway.metrics;
        match self.gateway.store.enqueue(NewMessage { message, jobs }).await {
            Ok(()) => {
                metrics.accept_latency.observe(started.elapsed().as_secs_f64());
                metrics.message("queued", "accepted");
                self.gateway.queue_wakeup.notify_one();
                tracing::info!(
                    queue_id = %id,
                    client = %self.client,
                    original_client = original_client.as_deref(),
                    from = %tx.sender,
                    rcpts = tx.recipients.len(),
                    jobs = job_count,
                    size,
                    tls = self.tls.is_some(),
                    decision = "queued",
                    "message accepted"
                );
                self.push(&Reply::new(250, format!("2.0.0 Ok: queued as {id}")));
                Flow::Continue
            }
            Err(e) => {
                metrics.message("tempfailed", "storage");
                tracing::error!(
                    queue_id = %id,
                    client = %self.client,
                    from = %tx.sender,
                    error = %e,
                    decision = "tempfail",
                    "message not stored; told the client to retry"
                );
                self.push_error(&reply::STORAGE_FAILURE)
            }
        }
    }
}
