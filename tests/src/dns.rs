//! A real DNS server (hickory-server) on 127.0.0.1, UDP and TCP on one random port, serving
//! the records a test gives it from one in-memory root zone.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

pub struct DnsServer {
    pub addr: SocketAddr,
    _thread: std::thread::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

fn name(s: &str) -> Name {
    let fq = if s.ends_with('.') { s.to_string() } else { format!("{s}.") };
    Name::from_str(&fq).expect("valid DNS name")
}

pub fn mx(domain: &str, preference: u16, exchange: &str) -> Record {
    Record::from_rdata(name(domain), 60, RData::MX(MX::new(preference, name(exchange))))
}

/// A null MX (RFC 7505): "this domain accepts no mail".
pub fn null_mx(domain: &str) -> Record {
    Record::from_rdata(name(domain), 60, RData::MX(MX::new(0, Name::root())))
}

pub fn a(host: &str, ip: &str) -> Record {
    match ip.parse::<IpAddr>().expect("an IP") {
        IpAddr::V4(v4) => Record::from_rdata(name(host), 60, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(name(host), 60, RData::AAAA(AAAA(v6))),
    }
}

pub fn txt(host: &str, text: &str) -> Record {
    // Long strings are split into 255-byte character-strings, as in real zones.
    let parts = text.as_bytes().chunks(255).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    Record::from_rdata(name(host), 60, RData::TXT(TXT::new(parts)))
}

impl DnsServer {
    pub fn start(records: Vec<Record>) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut zone =
                    InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::empty(
                        Name::root(),
                        ZoneType::Primary,
                        AxfrPolicy::Deny,
                    );
                let soa = SOA::new(name("ns.test"), name("hostmaster.test"), 1, 3600, 600, 86400, 30);
                zone.upsert_mut(Record::from_rdata(Name::root(), 60, RData::SOA(soa)), 1);
                for r in records {
                    zone.upsert_mut(r, 1);
                }
                let mut catalog = Catalog::new();
                catalog.upsert(LowerName::new(&Name::root()), vec![Arc::new(zone)]);
                let mut server = Server::new(catalog);
                // UDP and TCP on the same port; retry if the TCP side of a port is taken.
                let (udp, tcp) = loop {
                    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    let port = udp.local_addr().unwrap().port();
                    if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        break (udp, tcp);
                    }
                };
                addr_tx.send(udp.local_addr().unwrap()).unwrap();
                server.register_socket(udp);
                server.register_listener(tcp, Duration::from_secs(5), 4096);
                let _ = stop_rx.await;
                server.shutdown_token().cancel();
            });
        });
        let addr = addr_rx.recv().expect("DNS server started");
        Self { addr, _thread: thread, stop }
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}
