//! Rate limits end to end: the real gateway, a recording receiver, and for the fleet case two
//! gateways on one real redis-server. Each limit is hit at N+1, answered with when to retry,
//! counted in the metrics, and lifted once that time has passed.

use std::time::Duration;

use postern_api::{
    Destination, HumanDuration, MailDomainConfig, RateCount, RateKey, RateLimit, RedisStoreConfig,
    StoreConfig, TlsPolicy,
};
use postern_tests::client::{Client, message};
use postern_tests::gateway::{GatewayConfig, GatewayProcess};
use postern_tests::redis::RedisServer;
use postern_tests::sink::Sink;

const WAIT: Duration = Duration::from_secs(20);

fn rule(key: RateKey, count: RateCount, limit: u32, per: Duration) -> RateLimit {
    RateLimit { key, count, limit, per: HumanDuration(per), exempt_trusted: true }
}

fn config(
    sink: &Sink,
    rules: Vec<RateLimit>,
    edit: impl FnOnce(&mut postern_api::GatewayConfig),
) -> GatewayConfig {
    GatewayConfig::typed(|c| {
        let primary = Destination::hosts(&[&sink.host()], TlsPolicy::NONE);
        c.domains.push(MailDomainConfig::new("served.test", primary));
        c.rate_limits = rules;
        edit(c);
    })
}

fn send(c: &mut Client, from: &str, n: usize) -> postern_tests::client::Reply {
    let m = message(from, "alice@served.test", &format!("m{n}"), "hello");
    c.send_message(from, &["alice@served.test"], &m)
}

/// The seconds a 4xx rate-limit reply asks the client to wait.
fn retry_secs(r: &postern_tests::client::Reply) -> u64 {
    let tail = r.text.split("try again in ").nth(1).expect("says when to retry");
    tail.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn messages_per_client_ip_are_limited_at_n_plus_one_and_lifted_after_the_wait() {
    let sink = Sink::start(Default::default());
    let rules = vec![rule(RateKey::ClientIp, RateCount::Messages, 2, Duration::from_secs(2))];
    let gw = GatewayProcess::start(&config(&sink, rules, |_| {}));
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    assert!(send(&mut c, "a@sender.test", 1).starts("250"));
    assert!(send(&mut c, "a@sender.test", 2).starts("250"));
    let limited = send(&mut c, "a@sender.test", 3);
    assert!(
        limited.starts("451 4.7.1 Rate limit for your address reached (2 messages per 2s)"),
        "{limited:?}"
    );
    let wait = retry_secs(&limited);
    assert!((1..=2).contains(&wait), "{limited:?}");
    // The session goes on: a new transaction after the refused one.
    assert_eq!(c.cmd("RSET").code, 250);
    // Waiting what the reply said is enough (the limit admits one message a second).
    std::thread::sleep(Duration::from_secs(wait));
    assert!(send(&mut c, "a@sender.test", 4).starts("250"));
    gw.wait_idle();
    let subjects: Vec<String> = sink.received().iter().map(|e| e.text()).collect();
    assert_eq!(subjects.len(), 3);
    assert!(!subjects.iter().any(|m| m.contains("Subject: m3")), "the limited message was not taken");
    assert_eq!(gw.metric("postern_rate_limited_total{key=\"clientIp\",count=\"messages\"}"), Some(1.0));
    assert_eq!(
        gw.metric("postern_messages_total{outcome=\"tempfailed\",reason=\"rate_limited\"}"),
        Some(1.0)
    );
}

#[test]
fn connections_per_client_ip_get_421_past_the_limit_until_the_wait_is_over_unless_trusted() {
    let sink = Sink::start(Default::default());
    let rules = vec![rule(RateKey::ClientIp, RateCount::Connections, 2, Duration::from_secs(2))];
    let gw = GatewayProcess::start(&config(&sink, rules.clone(), |_| {}));
    for _ in 0..2 {
        assert_eq!(Client::connect(gw.smtp()).greeting.code, 220);
    }
    let third = Client::connect(gw.smtp());
    let expected = "421 4.7.0 Rate limit for your address reached (2 connections per 2s)";
    assert!(third.greeting.starts(expected), "{:?}", third.greeting);
    assert_eq!(gw.metric("postern_rate_limited_total{key=\"clientIp\",count=\"connections\"}"), Some(1.0));
    std::thread::sleep(Duration::from_secs(retry_secs(&third.greeting)));
    assert_eq!(Client::connect(gw.smtp()).greeting.code, 220, "lifted after the wait it named");

    // The same rule does not apply to a trusted network (exemptTrusted defaults to true).
    let trusted = GatewayProcess::start(&config(&sink, rules, |c| {
        c.relay.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
    }));
    for _ in 0..3 {
        assert_eq!(Client::connect(trusted.smtp()).greeting.code, 220);
    }
}

#[test]
fn a_limit_is_shared_by_two_gateways_on_one_redis() {
    let sink = Sink::start(Default::default());
    let redis = RedisServer::start();
    let rules = vec![rule(RateKey::SenderDomain, RateCount::Messages, 2, Duration::from_secs(3600))];
    let shared = |c: &mut postern_api::GatewayConfig| {
        c.store = StoreConfig { embedded: None, redis: Some(RedisStoreConfig::new(&redis.url())) };
    };
    let a = GatewayProcess::start(&config(&sink, rules.clone(), shared));
    let b = GatewayProcess::start(&config(&sink, rules, shared));
    let mut through_a = Client::connect(a.smtp());
    through_a.cmd("EHLO client.test");
    assert!(send(&mut through_a, "x@busy.test", 1).starts("250"));
    assert!(send(&mut through_a, "y@busy.test", 2).starts("250"));
    let mut through_b = Client::connect(b.smtp());
    through_b.cmd("EHLO client.test");
    let limited = send(&mut through_b, "z@busy.test", 3);
    assert!(
        limited.starts("451 4.7.1 Rate limit for your sender domain reached (2 messages per 1h)"),
        "{limited:?}"
    );
    // About half an hour until the next one fits (2 an hour).
    assert!(retry_secs(&limited) > 1700, "{limited:?}");
    // Another sender domain is counted on its own.
    assert!(send(&mut through_b, "z@calm.test", 4).starts("250"));
    assert_eq!(sink.wait_for(3, WAIT).len(), 3);
    assert_eq!(b.metric("postern_rate_limited_total{key=\"senderDomain\",count=\"messages\"}"), Some(1.0));
}
