//! The conformance suite every `Store` backend must pass. Each backend's tests call `run_all`
//! on a fresh, empty store.

use std::time::Duration;

use postern_api::TlsPolicy;

use super::*;

/// A message with `jobs` jobs (to hosts h0, h1, ...), all due at `due`.
pub fn sample_message(jobs: usize, due: u64) -> NewMessage {
    sample_message_with_id(new_id(), jobs, due)
}

/// `sample_message` with an id beside `other` (`new_id_beside`), as a DSN or a release has.
pub fn sample_message_beside(other: &str, jobs: usize, due: u64) -> NewMessage {
    sample_message_with_id(new_id_beside(other), jobs, due)
}

/// A quarantine entry `id` for user@example.com that expires at `expires_at`.
pub fn sample_entry(id: &str, expires_at: u64) -> QuarantineEntry {
    QuarantineEntry {
        id: id.into(),
        sender: "spammer@example.net".into(),
        recipients: vec!["user@example.com".into()],
        reasons: vec!["dnsbl: listed".into()],
        client_ip: "192.0.2.1".into(),
        created_at: 1_000,
        expires_at,
        policy: "default".into(),
        flags: Some(TransportFlags { smtputf8: false, eight_bit: true }),
        summary: MessageSummary { subject: "buy".into(), size: 20, ..Default::default() },
        body: b"Subject: buy\r\n\r\nnow\r\n".to_vec(),
    }
}

fn sample_message_with_id(id: String, jobs: usize, due: u64) -> NewMessage {
    let message = Message {
        id: id.clone(),
        sender: "sender@example.org".into(),
        received_at: due,
        smtputf8: false,
        eight_bit: false,
        body: b"Subject: test\r\n\r\nhello\r\n".to_vec(),
    };
    let jobs = (0..jobs)
        .map(|i| Job {
            id: new_id(),
            message_id: id.clone(),
            sender: message.sender.clone(),
            recipients: vec![Recipient {
                address: format!("r{i}@example.com"),
                original: format!("r{i}@example.com"),
            }],
            next_hop: NextHop {
                via: Via::Hosts(vec![format!("h{i}:25")]),
                tls: TlsPolicy::default(),
                auth: None,
                account: None,
            },
            attempts: 0,
            created_at: due,
            due,
            expires_at: due + 86_400_000,
            bounce: true,
            last_error: None,
        })
        .collect();
    NewMessage { message, jobs }
}

const LEASE: Duration = Duration::from_secs(60);

pub async fn run_all(store: &dyn Store) {
    enqueue_then_lease_returns_due_jobs_only(store).await;
    a_leased_job_is_not_leased_twice_until_its_lease_ends(store).await;
    retry_moves_a_job_and_keeps_the_message(store).await;
    the_message_goes_with_its_last_job(store).await;
    complete_with_a_followup_enqueues_it_atomically(store).await;
    lease_respects_max(store).await;
    quarantine_round_trip(store).await;
    state_round_trip(store).await;
    rate_limits_count_all_or_nothing(store).await;
    failed_logins_lock_out(store).await;
    enqueue_within_limits_writes_and_counts_together(store).await;
}

async fn enqueue_within_limits_writes_and_counts_together(store: &dyn Store) {
    let limit = |cost| RateCheck { key: "within".into(), limit: 3, period: Duration::from_secs(60), cost };
    let first = sample_message(1, 1_000);
    let id = first.message.id.clone();
    assert_eq!(store.enqueue_within(first, &[limit(2)]).await.unwrap(), RateDecision::Allowed);
    assert!(store.load_message(&id).await.unwrap().is_some(), "admitted and queued");
    // Two more do not fit (one is left): refused, not queued, not counted...
    let refused = sample_message(1, 1_000);
    let refused_id = refused.message.id.clone();
    assert!(matches!(
        store.enqueue_within(refused, &[limit(2)]).await.unwrap(),
        RateDecision::Limited { index: 0, .. }
    ));
    assert!(store.load_message(&refused_id).await.unwrap().is_none());
    // ...so one more still fits; no limits at all is a plain enqueue.
    assert_eq!(
        store.enqueue_within(sample_message(1, 1_000), &[limit(1)]).await.unwrap(),
        RateDecision::Allowed
    );
    assert_eq!(store.enqueue_within(sample_message(1, 1_000), &[]).await.unwrap(), RateDecision::Allowed);
    for job in store.lease(2_000, 100, LEASE).await.unwrap() {
        store.complete(&job, None).await.unwrap();
    }
}

async fn rate_limits_count_all_or_nothing(store: &dyn Store) {
    let check =
        |key: &str, limit| RateCheck { key: key.into(), limit, period: Duration::from_secs(60), cost: 1 };
    assert_eq!(store.rate_limit(&[]).await.unwrap(), RateDecision::Allowed);
    for _ in 0..2 {
        assert_eq!(store.rate_limit(&[check("a", 5), check("b", 2)]).await.unwrap(), RateDecision::Allowed);
    }
    let RateDecision::Limited { index, retry_after } =
        store.rate_limit(&[check("a", 5), check("b", 2)]).await.unwrap()
    else {
        panic!("the third message is over b's limit of 2");
    };
    assert_eq!(index, 1);
    // b admits one every 30 s; its next slot is at most 30 s away.
    assert!(
        retry_after > Duration::from_secs(25) && retry_after <= Duration::from_secs(30),
        "{retry_after:?}"
    );
    // The refused set did not charge a: three more fit, then it is over.
    for _ in 0..3 {
        assert_eq!(store.rate_limit(&[check("a", 5)]).await.unwrap(), RateDecision::Allowed);
    }
    assert!(matches!(
        store.rate_limit(&[check("a", 5)]).await.unwrap(),
        RateDecision::Limited { index: 0, .. }
    ));
    // Keys are independent, and a cost counts as that many.
    let big = RateCheck { cost: 10, ..check("c", 10) };
    assert_eq!(store.rate_limit(std::slice::from_ref(&big)).await.unwrap(), RateDecision::Allowed);
    assert!(matches!(store.rate_limit(&[check("c", 10)]).await.unwrap(), RateDecision::Limited { .. }));

    // Expiry forgets only times that have passed: none now, all three (a, b, c) past the period.
    assert_eq!(store.rate_limits_expire(crate::util::time::now_ms().saturating_sub(1_000)).await.unwrap(), 0);
    assert!(matches!(store.rate_limit(&[check("c", 10)]).await.unwrap(), RateDecision::Limited { .. }));
    let later = crate::util::time::now_ms() + 3_600_000;
    assert_eq!(store.rate_limits_expire(later).await.unwrap(), 3);
    assert_eq!(store.rate_limit(&[check("c", 10)]).await.unwrap(), RateDecision::Allowed);
}

async fn failed_logins_lock_out(store: &dyn Store) {
    let policy =
        LockoutPolicy { window: Duration::from_secs(60), max_failures: 3, lockout: Duration::from_secs(300) };
    assert_eq!(store.login_locked("192.0.2.7").await.unwrap(), None);
    for n in 1..=2 {
        let f = store.login_failed("192.0.2.7", &policy).await.unwrap();
        assert_eq!(f, LoginFailures { failures: n, locked_for: None });
    }
    assert_eq!(store.login_locked("192.0.2.7").await.unwrap(), None);
    let third = store.login_failed("192.0.2.7", &policy).await.unwrap();
    assert_eq!(third, LoginFailures { failures: 3, locked_for: Some(Duration::from_secs(300)) });
    let left = store.login_locked("192.0.2.7").await.unwrap().expect("locked out");
    assert!(left > Duration::from_secs(290) && left <= Duration::from_secs(300), "{left:?}");
    assert_eq!(store.login_locked("192.0.2.8").await.unwrap(), None);
}

async fn state_round_trip(store: &dyn Store) {
    assert_eq!(store.state_get("verification/a.test").await.unwrap(), None);
    store.state_put("verification/a.test", b"one".to_vec()).await.unwrap();
    store.state_put("verification/a.test", b"two".to_vec()).await.unwrap();
    assert_eq!(store.state_get("verification/a.test").await.unwrap(), Some(b"two".to_vec()));
    // Compare-and-set: only the caller that saw the current value wins.
    assert!(store.state_swap("digest/p", None, b"100".to_vec()).await.unwrap());
    assert!(!store.state_swap("digest/p", None, b"200".to_vec()).await.unwrap());
    assert!(!store.state_swap("digest/p", Some(b"99".to_vec()), b"200".to_vec()).await.unwrap());
    assert!(store.state_swap("digest/p", Some(b"100".to_vec()), b"200".to_vec()).await.unwrap());
    assert_eq!(store.state_get("digest/p").await.unwrap(), Some(b"200".to_vec()));
}

async fn drain(store: &dyn Store) {
    for job in store.lease(u64::MAX / 2, 10_000, LEASE).await.unwrap() {
        store.complete(&job, None).await.unwrap();
    }
    assert_eq!(store.stats().await.unwrap().jobs, 0, "store drained");
}

async fn enqueue_then_lease_returns_due_jobs_only(store: &dyn Store) {
    let early = sample_message(1, 1_000);
    let late = sample_message(1, 9_000);
    store.enqueue(early.clone()).await.unwrap();
    store.enqueue(late.clone()).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(1_000));
    let leased = store.lease(5_000, 100, LEASE).await.unwrap();
    assert_eq!(leased, early.jobs);
    let msg = store.load_message(&early.message.id).await.unwrap().expect("message stored");
    assert_eq!(msg.body, early.message.body);
    assert_eq!(msg.sender, early.message.sender);
    store.complete(&leased[0], None).await.unwrap();
    drain(store).await;
}

async fn a_leased_job_is_not_leased_twice_until_its_lease_ends(store: &dyn Store) {
    let msg = sample_message(1, 1_000);
    store.enqueue(msg).await.unwrap();
    let first = store.lease(2_000, 10, LEASE).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(store.lease(2_000, 10, LEASE).await.unwrap().is_empty(), "leased twice");
    let after_lease = 2_000 + LEASE.as_millis() as u64 + 1;
    let again = store.lease(after_lease, 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1, "an expired lease makes the job available again");
    drain(store).await;
}

async fn retry_moves_a_job_and_keeps_the_message(store: &dyn Store) {
    let msg = sample_message(1, 1_000);
    store.enqueue(msg.clone()).await.unwrap();
    let mut job = store.lease(1_000, 10, LEASE).await.unwrap().remove(0);
    job.attempts += 1;
    job.due = 50_000;
    job.last_error = Some("451 try later".into());
    store.retry(&job, None).await.unwrap();
    assert!(store.lease(10_000, 10, LEASE).await.unwrap().is_empty(), "not due yet");
    assert_eq!(store.next_due().await.unwrap(), Some(50_000));
    let again = store.lease(50_000, 10, LEASE).await.unwrap();
    assert_eq!(again, vec![job]);
    assert!(store.load_message(&msg.message.id).await.unwrap().is_some());
    drain(store).await;
    assert!(store.load_message(&msg.message.id).await.unwrap().is_none());
}

async fn the_message_goes_with_its_last_job(store: &dyn Store) {
    let msg = sample_message(3, 1_000);
    store.enqueue(msg.clone()).await.unwrap();
    // The delivery engine's lease: each job with its message and body.
    let leased = store.lease_with_messages(1_000, 10, LEASE).await.unwrap();
    assert_eq!(leased.len(), 3);
    for (job, message) in &leased {
        assert_eq!(job.message_id, msg.message.id);
        assert_eq!(message.as_ref(), Some(&msg.message), "meta and body, as enqueued");
    }
    assert!(store.lease_with_messages(1_000, 10, LEASE).await.unwrap().is_empty(), "leased already");
    let jobs: Vec<Job> = leased.into_iter().map(|(job, _)| job).collect();
    for (i, job) in jobs.iter().enumerate() {
        assert!(store.load_message(&msg.message.id).await.unwrap().is_some(), "kept while job {i} is open");
        store.complete(job, None).await.unwrap();
    }
    assert!(store.load_message(&msg.message.id).await.unwrap().is_none());
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.jobs, stats.messages), (0, 0));
    // Settling a job twice is harmless (duplicate delivery after a lease ran out).
    store.complete(&jobs[0], None).await.unwrap();
}

async fn complete_with_a_followup_enqueues_it_atomically(store: &dyn Store) {
    let msg = sample_message(1, 1_000);
    store.enqueue(msg).await.unwrap();
    let job = store.lease(1_000, 10, LEASE).await.unwrap().remove(0);
    // As the delivery engine makes a DSN (beside the bounced message), and any other message.
    let beside = sample_message_beside(&job.message_id, 1, 1_000);
    store.complete(&job, Some(beside.clone())).await.unwrap();
    let next = store.lease(1_000, 10, LEASE).await.unwrap();
    assert_eq!(next, beside.jobs);
    let other = sample_message(1, 1_000);
    store.complete(&next[0], Some(other.clone())).await.unwrap();
    assert_eq!(store.lease(1_000, 10, LEASE).await.unwrap(), other.jobs);
    drain(store).await;
}

async fn lease_respects_max(store: &dyn Store) {
    for _ in 0..5 {
        store.enqueue(sample_message(2, 1_000)).await.unwrap();
    }
    assert_eq!(store.lease(1_000, 3, LEASE).await.unwrap().len(), 3);
    assert_eq!(store.lease(1_000, 100, LEASE).await.unwrap().len(), 7);
    drain(store).await;
}

async fn quarantine_round_trip(store: &dyn Store) {
    let entry = sample_entry;
    store.quarantine_put(entry("q1", 5_000)).await.unwrap();
    store.quarantine_put(entry("q2", 50_000)).await.unwrap();
    assert_eq!(store.quarantine_get("q1").await.unwrap(), Some(entry("q1", 5_000)));
    let listed: Vec<_> = store.quarantine_list().await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(listed, ["q1", "q2"]);
    assert_eq!(store.quarantine_expire(10_000).await.unwrap(), 1);
    assert_eq!(store.quarantine_get("q1").await.unwrap(), None);
    assert!(store.quarantine_delete("q2").await.unwrap());
    assert!(!store.quarantine_delete("q2").await.unwrap());
    assert_eq!(store.stats().await.unwrap().quarantined, 0);

    // Release: the entry goes and its message is queued, once.
    // (Ids as the gateway makes them: the message beside its entry.)
    let q3 = new_id();
    store.quarantine_put(entry(&q3, 50_000)).await.unwrap();
    let msg = sample_message_beside(&q3, 1, 0);
    assert!(store.quarantine_release(&q3, msg.clone()).await.unwrap());
    assert!(
        !store.quarantine_release(&q3, sample_message_beside(&q3, 1, 0)).await.unwrap(),
        "released twice"
    );
    assert_eq!(store.quarantine_get(&q3).await.unwrap(), None);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.quarantined, stats.jobs, stats.messages), (0, 1, 1));
    let leased = store.lease(1, 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(store.load_message(&leased[0].message_id).await.unwrap().unwrap().body, msg.message.body);
    store.complete(&leased[0], None).await.unwrap();

    // One recipient at a time (a digest link): the entry keeps the others, and goes with the
    // last; a recipient it no longer holds is refused, with nothing queued.
    let q4 = new_id();
    let mut shared = entry(&q4, 50_000);
    shared.recipients = vec!["a@x.test".into(), "b@x.test".into()];
    store.quarantine_put(shared).await.unwrap();
    let release = || Some(sample_message_beside(&q4, 1, 0));
    assert!(store.quarantine_take_recipient(&q4, "a@x.test", release()).await.unwrap());
    assert!(!store.quarantine_take_recipient(&q4, "a@x.test", release()).await.unwrap());
    assert!(!store.quarantine_take_recipient(&q4, "c@x.test", None).await.unwrap());
    let left = store.quarantine_get(&q4).await.unwrap().unwrap();
    assert_eq!(left.recipients, ["b@x.test"]);
    assert_eq!(left.body, b"Subject: buy\r\n\r\nnow\r\n");
    assert_eq!(store.stats().await.unwrap().jobs, 1, "one release queued, once");
    assert!(store.quarantine_take_recipient(&q4, "b@x.test", None).await.unwrap());
    assert_eq!(store.quarantine_get(&q4).await.unwrap(), None);
    assert!(!store.quarantine_take_recipient(&q4, "b@x.test", None).await.unwrap());
    assert_eq!(store.stats().await.unwrap().quarantined, 0);
}
