//! Leader election on a coordination.k8s.io Lease, so several operator replicas can run and
//! only one reconciles. A candidate takes the Lease when it is free or its holder stopped
//! renewing it for `lease_duration`; the holder renews it every `lease_duration / 3`. Every
//! write carries the resourceVersion it read, so two candidates cannot both win (the loser's
//! replace gets 409 Conflict). A leader that cannot renew in time exits, as client-go's
//! leader election does: a new pod starts as a candidate.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

pub struct Election {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
}

impl Election {
    /// One attempt to take or keep the Lease at time `now`. `Ok(true)`: we hold it.
    pub async fn try_acquire(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let secs = self.lease_duration.as_secs() as i32;
        let ours = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(secs),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let mut lease = Lease::default();
            lease.metadata.name = Some(self.name.clone());
            lease.spec = Some(ours(0, None));
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false), // another candidate was first
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder == self.identity {
            ours(transitions, spec.acquire_time.clone())
        } else {
            let duration = spec.lease_duration_seconds.unwrap_or(secs) as i64;
            let renewed = spec.renew_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
            let expired = holder.is_empty() || renewed.as_second().saturating_add(duration) < now.as_second();
            if !expired {
                return Ok(false);
            }
            ours(transitions + 1, None)
        };
        lease.spec = Some(next);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire(Timestamp::now()).await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: lease not readable; retrying"),
            }
            tokio::time::sleep(self.lease_duration / 3).await;
        }
    }

    /// Renews the Lease until renewing fails for longer than the lease lasts; then returns
    /// (the caller exits: another replica takes over).
    pub async fn keep(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.lease_duration / 3).await;
            match self.try_acquire(Timestamp::now()).await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "leadership lost to another replica");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "leader election: renew failed"),
            }
            if last_ok.elapsed() > self.lease_duration {
                tracing::error!(lease = %self.name, "could not renew the lease in time");
                return;
            }
        }
    }
}
