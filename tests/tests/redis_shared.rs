//! Gateways sharing their queue in a real redis-server: an outage, and the chaos run (three
//! gateways, one SIGKILLed and restarted, Redis SIGKILLed and restarted, every message arrives).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_api::{
    Action, Destination, HumanDuration, MailDomainConfig, RedisStoreConfig, SpamPolicyConfig, StoreConfig,
    TlsPolicy,
};
use postern_tests::client::{Client, message};
use postern_tests::gateway::{GatewayConfig, GatewayProcess};
use postern_tests::redis::{RedisCluster, RedisServer};
use postern_tests::reserve_port;
use postern_tests::sink::{Behavior, Sink};

const WAIT: Duration = Duration::from_secs(30);

/// The store of every gateway of a test: `redis`.
fn on_redis(c: &mut postern_api::GatewayConfig, redis: &RedisServer) {
    c.store = StoreConfig { embedded: None, redis: Some(RedisStoreConfig::new(&redis.url())) };
}

fn config(redis: &RedisServer, dest_port: u16) -> GatewayConfig {
    GatewayConfig::typed(|c| {
        on_redis(c, redis);
        let primary = Destination::hosts(&[&format!("127.0.0.1:{dest_port}")], TlsPolicy::NONE);
        c.domains.push(MailDomainConfig::new("served.test", primary));
        c.delivery.retry_initial = HumanDuration::from_secs(1);
        c.delivery.retry_max = HumanDuration::from_secs(2);
        c.delivery.lease_timeout = HumanDuration::from_secs(10);
        c.limits.max_messages_per_session = 100_000;
        c.limits.max_errors = 1000;
    })
}

#[test]
fn redis_down_means_451_and_not_ready_and_nothing_is_lost() {
    let mut redis = RedisServer::start();
    let dest_port = reserve_port();
    let gw = GatewayProcess::start(&config(&redis, dest_port));
    assert_eq!(gw.admin_get("/readyz").0, 200);

    // Five messages accepted while the destination is down: they wait in Redis.
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    for i in 0..5 {
        let r = c.send_message(
            "a@sender.test",
            &["u@served.test"],
            &message("a@sender.test", "u@served.test", &format!("before-{i}"), "x"),
        );
        assert_eq!(r.code, 250, "{r:?}");
    }

    redis.kill();
    let r = c.send_message(
        "a@sender.test",
        &["u@served.test"],
        &message("a@sender.test", "u@served.test", "during", "x"),
    );
    assert!(r.starts("451 4.3.0"), "never 250 without durable storage: {r:?}");
    postern_tests::wait_for("/readyz to say not ready", WAIT, || {
        (gw.admin_get("/readyz").0 == 503).then_some(())
    });

    redis.restart();
    postern_tests::wait_for("/readyz to recover", WAIT, || (gw.admin_get("/readyz").0 == 200).then_some(()));
    let sink = Sink::start_on(dest_port, Behavior::default());
    let got = sink.wait_for(5, WAIT);
    let mut subjects: Vec<String> = got.iter().filter_map(|e| subject(&e.text())).collect();
    subjects.sort();
    assert_eq!(subjects, (0..5).map(|i| format!("before-{i}")).collect::<Vec<_>>());
}

fn subject(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
}

const MESSAGES: usize = 10_000;
const LANES: usize = 6;

/// A client lane: sends its share of the messages, each until some gateway answers 250,
/// moving to the next gateway on any error (as a real MTA retries elsewhere).
fn lane(lane: usize, gateways: Arc<Mutex<Vec<SocketAddr>>>, accepted: Arc<AtomicUsize>) -> usize {
    let mut sessions: HashMap<SocketAddr, Client> = HashMap::new();
    let mut retries = 0;
    for i in (lane..MESSAGES).step_by(LANES) {
        let body = message("a@sender.test", "u@served.test", &format!("chaos-{i}"), "x");
        let mut attempt = i;
        loop {
            let addrs = gateways.lock().unwrap().clone();
            let addr = addrs[attempt % addrs.len()];
            attempt += 1;
            if !sessions.contains_key(&addr)
                && let Some(mut c) = Client::try_connect(addr, Duration::from_secs(10))
                && c.try_ehlo()
            {
                sessions.insert(addr, c);
            }
            let ok = sessions
                .get_mut(&addr)
                .and_then(|c| c.try_send_message("a@sender.test", "u@served.test", &body))
                .is_some_and(|r| r.code == 250);
            if ok {
                accepted.fetch_add(1, Ordering::Relaxed);
                break;
            }
            sessions.remove(&addr);
            retries += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    retries
}

#[test]
fn three_gateways_one_redis_a_gateway_and_redis_killed_every_message_arrives() {
    let mut redis = RedisServer::start_with("always");
    let sink = Sink::start(Behavior::default());
    let cfg = config(&redis, sink.port());
    let mut gws: Vec<GatewayProcess> = (0..3).map(|_| GatewayProcess::start(&cfg)).collect();
    let addrs = Arc::new(Mutex::new(gws.iter().map(GatewayProcess::smtp).collect::<Vec<_>>()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let lanes: Vec<_> = (0..LANES)
        .map(|l| {
            let (addrs, accepted) = (addrs.clone(), accepted.clone());
            std::thread::spawn(move || lane(l, addrs, accepted))
        })
        .collect();

    let wait_accepted = |n: usize| {
        postern_tests::wait_for(&format!("{n} messages accepted"), Duration::from_secs(120), || {
            (accepted.load(Ordering::Relaxed) >= n).then_some(())
        })
    };
    // A gateway dies mid-run, with sessions open and jobs leased.
    wait_accepted(MESSAGES * 3 / 10);
    gws[1].kill();
    eprintln!("gateway 1 killed at {} accepted", accepted.load(Ordering::Relaxed));
    // Redis dies (SIGKILL, AOF with appendfsync always) and comes back.
    wait_accepted(MESSAGES * 5 / 10);
    redis.restart();
    eprintln!("redis restarted at {} accepted", accepted.load(Ordering::Relaxed));
    // The dead gateway comes back (on a new port); clients learn it.
    wait_accepted(MESSAGES * 7 / 10);
    gws[1] = GatewayProcess::start(&cfg);
    addrs.lock().unwrap()[1] = gws[1].smtp();
    eprintln!("gateway 1 restarted at {} accepted", accepted.load(Ordering::Relaxed));

    let retries: usize = lanes.into_iter().map(|l| l.join().unwrap()).sum();
    assert_eq!(accepted.load(Ordering::Relaxed), MESSAGES);
    let all_in = postern_tests::wait_for("every message at the sink", Duration::from_secs(120), || {
        let got = sink.received();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for e in &got {
            if let Some(s) = subject(&e.text()) {
                *seen.entry(s).or_default() += 1;
            }
        }
        (seen.len() >= MESSAGES).then_some((got.len(), seen))
    });
    let (copies, seen) = all_in;
    for i in 0..MESSAGES {
        assert!(seen.contains_key(&format!("chaos-{i}")), "chaos-{i} was lost");
    }
    let duplicates = copies - MESSAGES;
    eprintln!(
        "chaos: {MESSAGES} messages through 3 gateways in {:?}; client retries {retries}; duplicates delivered {duplicates}",
        started.elapsed()
    );
    // At-least-once: duplicates are allowed but must stay rare.
    assert!(duplicates < MESSAGES / 20, "{duplicates} duplicates");
}

/// served.test delivered to `sink_host`, under a policy that holds mail from spam.test.
fn holding_spam_test(c: &mut postern_api::GatewayConfig, dns: SocketAddr, sink_host: &str) {
    c.delivery.nameservers = vec![dns];
    let mut p = SpamPolicyConfig::default();
    p.block_list.domains = vec!["spam.test".into()];
    p.block_list.action = Action::Quarantine;
    c.spam_policies.insert("p".into(), p);
    let mut served = MailDomainConfig::new("served.test", Destination::hosts(&[sink_host], TlsPolicy::NONE));
    served.spam_policy = Some("p".into());
    c.domains.push(served);
}

#[test]
fn quarantined_through_one_gateway_released_through_another() {
    let redis = RedisServer::start();
    let dns = postern_tests::dns::DnsServer::start(vec![]);
    let sink = Sink::start(Behavior::default());
    let cfg = || {
        GatewayConfig::typed(|c| {
            on_redis(c, &redis);
            holding_spam_test(c, dns.addr, &sink.host());
        })
    };
    let a = GatewayProcess::start(&cfg());
    let b = GatewayProcess::start(&cfg());
    let mut c = Client::connect(a.smtp());
    c.cmd("EHLO client.test");
    let r = c.send_message(
        "x@spam.test",
        &["u@served.test"],
        &message("x@spam.test", "u@served.test", "held-in-a", "x"),
    );
    assert_eq!(r.code, 250, "{r:?}");

    // B sees what A held, releases it, and one of them delivers it.
    let (status, found) = b.admin_get("/api/v1/quarantine?subject=held-in-a");
    assert_eq!(status, 200);
    let found: serde_json::Value = serde_json::from_str(&found).unwrap();
    let id = found[0]["id"].as_str().expect("B finds the entry A held").to_string();
    assert_eq!(b.admin("POST", &format!("/api/v1/quarantine/{id}/release?by=ops")).0, 202);
    assert_eq!(a.admin("POST", &format!("/api/v1/quarantine/{id}/release?by=ops")).0, 404, "released once");
    let got = sink.wait_for(1, WAIT);
    assert!(got[0].text().contains("Subject: held-in-a"));
    b.wait_idle();
    assert_eq!(sink.received().len(), 1);
}

/// How many scripts a cluster node ran (INFO commandstats).
fn scripts_run(url: &str) -> u64 {
    let port = url.trim_start_matches("redis://127.0.0.1:").trim_end_matches('/');
    let out =
        std::process::Command::new("redis-cli").args(["-p", port, "info", "commandstats"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("cmdstat_evalsha:calls=").or_else(|| l.strip_prefix("cmdstat_eval:calls="))
        })
        .filter_map(|v| v.split(',').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn two_gateways_on_three_cluster_primaries_with_three_partitions() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let dns = postern_tests::dns::DnsServer::start(vec![]);
    let sink = Sink::start(Behavior::default());
    let cfg = || {
        GatewayConfig::typed(|c| {
            let mut redis = RedisStoreConfig::new(&urls[0]);
            redis.urls = urls[1..].to_vec();
            redis.cluster = true;
            redis.partitions = 3;
            c.store = StoreConfig { embedded: None, redis: Some(redis) };
            c.limits.max_messages_per_session = 100_000;
            holding_spam_test(c, dns.addr, &sink.host());
        })
    };
    let gateways = [GatewayProcess::start(&cfg()), GatewayProcess::start(&cfg())];
    let before: Vec<u64> = urls.iter().map(|u| scripts_run(u)).collect();

    // 600 messages, half through each gateway; each arrives once.
    const MESSAGES: usize = 600;
    std::thread::scope(|scope| {
        for (g, gw) in gateways.iter().enumerate() {
            let addr = gw.smtp();
            scope.spawn(move || {
                let mut c = Client::connect(addr);
                c.cmd("EHLO client.test");
                for i in (g..MESSAGES).step_by(2) {
                    let body = message("a@sender.test", "u@served.test", &format!("part-{i}"), "x");
                    assert_eq!(c.send_message("a@sender.test", &["u@served.test"], &body).code, 250);
                }
            });
        }
    });
    let got = sink.wait_for(MESSAGES, WAIT);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in &got {
        *seen.entry(subject(&e.text()).unwrap_or_default()).or_default() += 1;
    }
    for i in 0..MESSAGES {
        assert_eq!(seen.get(&format!("part-{i}")), Some(&1), "part-{i}");
    }
    // Every primary carried part of the load.
    let ran: Vec<u64> = urls.iter().zip(&before).map(|(u, b)| scripts_run(u) - b).collect();
    let total: u64 = ran.iter().sum();
    assert!(ran.iter().all(|&n| n * 5 > total), "scripts per primary {ran:?}");

    // A message held through one gateway is found and released through the other.
    let mut c = Client::connect(gateways[0].smtp());
    c.cmd("EHLO client.test");
    let r = c.send_message(
        "x@spam.test",
        &["u@served.test"],
        &message("x@spam.test", "u@served.test", "held", "x"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    let (status, found) = gateways[1].admin_get("/api/v1/quarantine?subject=held");
    assert_eq!(status, 200);
    let found: serde_json::Value = serde_json::from_str(&found).unwrap();
    let id = found[0]["id"].as_str().expect("the other gateway finds the entry").to_string();
    assert_eq!(gateways[1].admin("POST", &format!("/api/v1/quarantine/{id}/release?by=ops")).0, 202);
    assert_eq!(gateways[0].admin("POST", &format!("/api/v1/quarantine/{id}/release?by=ops")).0, 404);
    let got = sink.wait_for(MESSAGES + 1, WAIT);
    assert!(got.iter().any(|e| e.text().contains("Subject: held")));
    gateways[0].wait_idle();
    gateways[1].wait_idle();
    assert_eq!(sink.received().len(), MESSAGES + 1, "nothing delivered twice");
}
