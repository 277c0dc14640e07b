//! `Context`: the state every task of one gateway process shares.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::accounts::confirmation::Confirmations;
use crate::config::ConfigSnapshot;
use crate::dns::Dns;
use crate::metrics::Metrics;
use crate::outbound::OutboundClient;
use crate::outbound::mailbox_api::MailboxApi;
use crate::outbound::oauth::OAuthTokens;
use crate::policy::connections::ConnectionLimiter;
use crate::routing::probe::RecipientProbes;
use crate::routing::verification::Verifications;
use crate::store::Store;
use crate::tls::server::TlsAcceptors;
use crate::util::secrets::SecretKey;

pub struct Context {
    /// The current config; replaced whole on hot reload.
    pub config: ArcSwap<ConfigSnapshot>,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub tls: TlsAcceptors,
    pub connections: ConnectionLimiter,
    /// SMTP AUTH's users (the users file, re-read when it changes).
    pub users: crate::auth::Directory,
    /// The admin API's bearer tokens (`admin.tokenFile`, re-read when it changes).
    pub admin_tokens: crate::auth::tokens::Tokens,
    /// DKIM keys and domain verification of Direct sending accounts.
    pub signing: crate::signing::Signing,
    /// The last connection test of each sending account (`POST /api/v1/accounts/NAME/test`).
    pub account_tests: std::sync::Mutex<std::collections::HashMap<String, postern_api::admin::AccountTest>>,
    /// TokenReview and SubjectAccessReview answers (`admin.kubernetes`).
    pub admin_reviews: crate::auth::kubernetes::Reviewer,
    /// Seals console sessions and signs digest links (`admin.keyFile`, or one made up for
    /// this process).
    pub admin_key: crate::util::secrets::SecretKey,
    /// Whether `admin_key` is `admin.keyFile`'s (shared by every pod, lasting across
    /// restarts): only then do digests carry links.
    pub admin_key_shared: bool,
    /// The one resolver (and cache) of the process.
    pub dns: Arc<Dns>,
    /// Talks SMTP to other servers (delivery, probes, verification).
    pub outbound: Arc<OutboundClient>,
    /// Cached answers of recipient probes.
    pub probes: RecipientProbes,
    /// Destination verification state of routing policies.
    pub verifications: Arc<Verifications>,
    /// The OAuth sending accounts' grants (consent, tokens) and their mail APIs.
    pub oauth: Arc<OAuthTokens>,
    pub mailbox_api: MailboxApi,
    /// Direct accounts' single addresses: confirmation requests and their answers.
    pub confirmations: Arc<Confirmations>,
    /// SPF, DKIM, DMARC (mail-auth) and blocklist checks.
    pub spam: crate::spam::SpamEngine,
    /// Wakes the delivery scheduler when new jobs were queued.
    pub queue_wakeup: Arc<Notify>,
    /// Listeners are bound (readiness also needs the store to answer).
    pub listening: AtomicBool,
}

impl Context {
    /// A gateway for `config` on `store`, with nothing started yet (no listener, no task).
    pub fn new(
        config: postern_api::GatewayConfig,
        store: Arc<dyn Store>,
        tls: TlsAcceptors,
    ) -> anyhow::Result<Self> {
        let snapshot = ConfigSnapshot::new(config);
        let dns = Arc::new(Dns::new(&snapshot.delivery.nameservers)?);
        let queue_wakeup = Arc::new(Notify::new());
        let https = crate::tls::client::ClientTls::new(snapshot.delivery.ca_file.as_deref())?;
        let oauth = Arc::new(OAuthTokens::new(store.clone(), (*https.verifying.config()).as_ref().clone())?);
        let outbound = Arc::new(OutboundClient::new(&snapshot, dns.clone())?.with_oauth(oauth.clone()));
        let spam = crate::spam::SpamEngine::new(dns.clone());
        let users = crate::auth::Directory::load(&snapshot.auth)?;
        let admin_tokens = crate::auth::tokens::Tokens::default();
        admin_tokens.reload(&snapshot.admin)?;
        let (admin_key, admin_key_shared) = match &snapshot.admin.key_file {
            Some(file) => (SecretKey::from_file(file, "admin.keyFile").map_err(anyhow::Error::msg)?, true),
            None => (SecretKey::random().map_err(anyhow::Error::msg)?, false),
        };
        Ok(Self {
            config: ArcSwap::from_pointee(snapshot),
            store: store.clone(),
            metrics: Metrics::new(),
            tls,
            connections: ConnectionLimiter::default(),
            users,
            admin_tokens,
            admin_reviews: Default::default(),
            admin_key,
            admin_key_shared,
            account_tests: Default::default(),
            signing: Default::default(),
            dns,
            outbound: outbound.clone(),
            mailbox_api: MailboxApi::new(oauth.clone()),
            oauth,
            probes: RecipientProbes::default(),
            verifications: Arc::new(Verifications::new(store.clone(), outbound.clone())),
            confirmations: Arc::new(Confirmations::new(store.clone(), queue_wakeup.clone())),
            spam,
            queue_wakeup: queue_wakeup.clone(),
            listening: false.into(),
        })
    }

    /// The config in force now (a session keeps the one it started with).
    pub fn config(&self) -> Arc<ConfigSnapshot> {
        self.config.load_full()
    }
}
