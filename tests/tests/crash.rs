//! Never lose mail: SIGKILL the gateway right after it answered 250 for messages whose
//! destination is down; restart both; every message arrives.

use std::collections::HashSet;
use std::time::Duration;

use postern_api::{Destination, HumanDuration, MailDomainConfig, TlsPolicy};
use postern_tests::client::{Client, message};
use postern_tests::gateway::{GatewayConfig, GatewayProcess};
use postern_tests::reserve_port;
use postern_tests::sink::{Behavior, Sink};

const N: usize = 60;

#[test]
fn sigkill_after_250_loses_nothing() {
    let dest_port = reserve_port();
    let config = GatewayConfig::typed(|c| {
        let primary = Destination::hosts(&[&format!("127.0.0.1:{dest_port}")], TlsPolicy::NONE);
        c.domains.push(MailDomainConfig::new("served.test", primary));
        c.delivery.retry_initial = HumanDuration::from_secs(1);
        c.delivery.retry_max = HumanDuration::from_secs(1);
    });
    let mut gw = GatewayProcess::start(&config);

    // Several sessions at once, so group commit is exercised too.
    let smtp = gw.smtp();
    let senders: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(smtp);
                c.cmd("EHLO client.test");
                for i in (t..N).step_by(4) {
                    let subject = format!("crash-{i}");
                    let r = c.send_message(
                        "a@sender.test",
                        &["u@served.test"],
                        &message("a@sender.test", "u@served.test", &subject, "x"),
                    );
                    assert_eq!(r.code, 250, "{r:?}");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    // Every message got its 250. Kill -9 now: no flush, no clean shutdown.
    gw.kill();

    let sink = Sink::start_on(dest_port, Behavior::default());
    let _gw = GatewayProcess::start_from(&config.path());
    let got = sink.wait_for(N, Duration::from_secs(60));
    let subjects: HashSet<String> = got
        .iter()
        .filter_map(|e| e.text().lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_string)))
        .collect();
    let want: HashSet<String> = (0..N).map(|i| format!("crash-{i}")).collect();
    assert_eq!(subjects, want, "every accepted message arrived after the crash");
    eprintln!("delivered {} copies of {N} messages ({} duplicates)", got.len(), got.len() - N);
}
