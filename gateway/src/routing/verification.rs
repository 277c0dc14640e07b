//! Destination verification: before a routing policy goes live, a verification message is sent
//! to its `verificationAddress` through its destination; the policy is live only once the
//! destination accepted it (250). Until then the domain is routed as Direct.
//!
//! The state lives in the store (shared by every pod once the store is shared) under
//! `verification/<domain>`, keyed by a fingerprint of the destination and address, so a changed
//! destination is verified again. Each pod keeps a copy for the RCPT hot path.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use postern_api::RoutingPolicyConfig;
use tokio::sync::{Notify, watch};

use super::PolicyState;
use crate::config::ConfigSnapshot;
use crate::outbound::{Envelope, OutboundClient};

use crate::generated::notice;
use crate::store::{NextHop, Store};
use crate::util::time::now_ms;

/// How often the verifier looks for work (and refreshes its copy from the store).
const TICK: Duration = Duration::from_secs(5);
/// A failed verification is tried again after this.
const RETRY_AFTER_MS: u64 = 30_000;

/// The state is stored (and served by the admin API) in its wire form.
pub use postern_api::admin::{VerificationState, VerificationStatus as Status};

/// Identifies what a verification covered: the destination and the address.
pub fn fingerprint(p: &RoutingPolicyConfig) -> String {
    serde_json::to_string(&(&p.destination, &p.verification_address)).unwrap_or_default()
}

fn key(domain: &str) -> String {
    format!("verification/{}", domain.to_ascii_lowercase())
}

/// The verification state of every policy (a copy of the store's, for the RCPT hot path) and
/// the task that keeps it current. Needs only the store and the outbound client.
pub struct Verifications {
    states: RwLock<HashMap<String, VerificationState>>,
    wake: Notify,
    store: Arc<dyn Store>,
    outbound: Arc<OutboundClient>,
}

impl PolicyState for Verifications {
    fn is_live(&self, domain: &str, policy: &RoutingPolicyConfig) -> bool {
        if policy.verification_address.is_none() {
            return true;
        }
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        states
            .get(&domain.to_ascii_lowercase())
            .is_some_and(|s| s.status == Status::Verified && s.fingerprint == fingerprint(policy))
    }
}

impl Verifications {
    pub fn new(store: Arc<dyn Store>, outbound: Arc<OutboundClient>) -> Self {
        Self { states: RwLock::default(), wake: Notify::new(), store, outbound }
    }

    fn remember(&self, state: VerificationState) {
        let mut states = self.states.write().unwrap_or_else(|p| p.into_inner());
        states.insert(state.domain.clone(), state);
    }

    /// Looks for work now (after a config change).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Every known state, by domain.
    pub fn list(&self) -> Vec<VerificationState> {
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = states.values().cloned().collect();
        v.sort_by(|a, b| a.domain.cmp(&b.domain));
        v
    }

    /// Forgets the result for `domain` (in the store too) so it is verified again now.
    pub async fn retrigger(&self, cfg: &ConfigSnapshot, domain: &str) -> Result<bool, String> {
        let Some(policy) = policy_needing_verification(cfg, domain) else { return Ok(false) };
        let state = VerificationState {
            domain: domain.to_ascii_lowercase(),
            address: policy.verification_address.clone().unwrap_or_default(),
            destination: NextHop::from_destination(&policy.destination).key(),
            fingerprint: String::new(),
            status: Status::Pending,
            detail: "verification requested".into(),
            checked_at: 0,
        };
        self.save(&state).await?;
        self.remember(state);
        self.wake.notify_one();
        Ok(true)
    }

    async fn save(&self, state: &VerificationState) -> Result<(), String> {
        let raw = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        self.store.state_put(&key(&state.domain), raw).await.map_err(|e| e.to_string())
    }

    /// The verifier task: verifies each policy that needs it, under the config `current`
    /// returns at each round, until `stop`.
    pub async fn run(
        self: Arc<Self>,
        current: impl Fn() -> Arc<ConfigSnapshot>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let cfg = current();
            let domains: Vec<String> = cfg
                .served_domains()
                .filter(|d| policy_needing_verification(&cfg, &d.config.name).is_some())
                .map(|d| d.config.name.to_ascii_lowercase())
                .collect();
            for domain in domains {
                let Some(policy) = policy_needing_verification(&cfg, &domain) else { continue };
                self.check(&cfg, &domain, policy).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn check(&self, cfg: &ConfigSnapshot, domain: &str, policy: &RoutingPolicyConfig) {
        let fp = fingerprint(policy);
        let stored = match self.store.state_get(&key(domain)).await {
            Ok(Some(raw)) => serde_json::from_slice::<VerificationState>(&raw).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(domain, error = %e, "cannot read verification state");
                return;
            }
        };
        if let Some(s) = &stored {
            self.remember(s.clone());
        }
        let due = match &stored {
            None => true,
            Some(s) if s.fingerprint != fp => true,
            Some(s) => {
                s.status != Status::Verified && now_ms().saturating_sub(s.checked_at) >= RETRY_AFTER_MS
            }
        };
        if !due {
            return;
        }
        let state = self.verify(cfg, domain, policy, fp).await;
        // Recorded before it is logged: whoever reads the log line finds the state in place (the
        // routing decision, the admin API, the operator's DestinationVerified).
        if let Err(e) = self.save(&state).await {
            tracing::warn!(domain, error = %e, "cannot store verification state");
        }
        self.remember(state.clone());
        match state.status {
            Status::Verified => {
                tracing::info!(domain, destination = %state.destination, "destination verified; routing policy is live")
            }
            _ => {
                tracing::warn!(domain, destination = %state.destination, detail = %state.detail, "destination verification failed; domain stays Direct")
            }
        }
    }

    /// Sends the verification message through the destination and reports what it said.
    async fn verify(
        &self,
        cfg: &ConfigSnapshot,
        domain: &str,
        policy: &RoutingPolicyConfig,
        fp: String,
    ) -> VerificationState {
        let address = policy.verification_address.clone().unwrap_or_default();
        let route = NextHop::from_destination(&policy.destination);
        let sender = format!("postmaster@{}", cfg.hostname);
        let text = format!(
            "This message checks that {} accepts mail that Postern routes for {domain}.\r\nNo action is needed.\r\n",
            route.key(),
        );
        let subject = format!("Postern destination verification for {domain}");
        let body = notice(&cfg.hostname, &sender, &address, subject, text);
        let env = Envelope {
            sender: &sender,
            recipients: vec![address.as_str()],
            smtputf8: false,
            eight_bit: false,
        };
        let result = self.outbound.send(cfg, &route, &env, &body).await.pop();
        let (status, detail) = match result {
            Some(Ok(())) => (Status::Verified, "accepted".to_string()),
            Some(Err(f)) => (Status::Failed, f.diagnostic),
            None => (Status::Failed, "no result".to_string()),
        };
        VerificationState {
            domain: domain.to_string(),
            address,
            destination: route.key(),
            fingerprint: fp,
            status,
            detail,
            checked_at: now_ms(),
        }
    }
}

fn policy_needing_verification<'a>(cfg: &'a ConfigSnapshot, domain: &str) -> Option<&'a RoutingPolicyConfig> {
    cfg.served_domain(&domain.to_ascii_lowercase())?
        .config
        .routing
        .as_ref()
        .filter(|p| p.enabled && p.verification_address.is_some())
}
