//! `Gateway`: the state every task of one gateway process shares.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::delivery::outbound::Outbound;
use crate::metrics::Metrics;
use crate::policy::connections::ConnectionLimiter;
use crate::routing::probe::RecipientProbes;
use crate::routing::verification::Verifications;
use crate::runtime::Runtime;
use crate::store::Store;
use crate::tls::server::TlsAcceptors;

pub struct Gateway {
    /// The current config; replaced whole on hot reload.
    pub runtime: ArcSwap<Runtime>,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub tls: TlsAcceptors,
    pub connections: ConnectionLimiter,
    /// Talks SMTP to other servers (delivery, probes, verification).
    pub outbound: Outbound,
    /// Cached answers of recipient probes.
    pub probes: RecipientProbes,
    /// Destination verification state of routing policies.
    pub verifications: Verifications,
    /// SPF, DKIM, DMARC (mail-auth) and blocklist checks.
    pub spam: crate::spam::SpamEngine,
    /// Wakes the delivery scheduler when new jobs were queued.
    pub queue_wakeup: Notify,
    /// Listeners are bound (readiness also needs the store to answer).
    pub listening: AtomicBool,
}

impl Gateway {
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }
}
