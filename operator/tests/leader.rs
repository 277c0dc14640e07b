//! Leader election between two candidates on one Lease (kube-fake-client), with the clock
//! passed in so expiry is tested without sleeping.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use kube_fake_client::ClientBuilder;
use postern_operator::leader::Election;

#[tokio::test]
async fn one_leader_at_a_time_and_a_takeover_after_expiry() {
    let client = ClientBuilder::new().build().await.unwrap();
    let api: Api<Lease> = Api::namespaced(client, "postern");
    let candidate = |id: &str| Election {
        api: api.clone(),
        name: "postern-operator".into(),
        identity: id.into(),
        lease_duration: Duration::from_secs(15),
    };
    let (a, b) = (candidate("a"), candidate("b"));
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let at = |s: i64| t0.checked_add(SignedDuration::from_secs(s)).unwrap();

    assert!(a.try_acquire(at(0)).await.unwrap(), "a takes the free lease");
    assert!(!b.try_acquire(at(1)).await.unwrap(), "b waits");
    assert!(a.try_acquire(at(5)).await.unwrap(), "a renews");
    assert!(!b.try_acquire(at(19)).await.unwrap(), "renewed at 5 for 15 s: still a's");
    assert!(b.try_acquire(at(21)).await.unwrap(), "a stopped renewing: b takes over");
    assert!(!a.try_acquire(at(22)).await.unwrap(), "a lost it");
    let lease = api.get("postern-operator").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("b"));
    assert_eq!(lease.lease_transitions, Some(1));
}
