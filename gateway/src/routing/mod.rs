//! Recipient resolution: which next hops each recipient goes to, under the routing mode of its
//! domain. One transaction with recipients for several domains and modes becomes one job per
//! (next hop, bounce setting), each with its own retries, so no single next hop is chosen for
//! the whole transaction.
//!
//! | mode      | known account              | unknown address     |
//! |-----------|----------------------------|---------------------|
//! | Direct    | primary                    | 550 5.1.1 at RCPT   |
//! | Split     | primary                    | destination         |
//! | Dual      | primary AND destination    | 550 5.1.1 at RCPT   |
//! | RouteAll  | destination AND primary    | destination         |
//!
//! A policy that is disabled, or whose destination is not verified yet, is Direct.

use std::collections::HashSet;

use postern_api::{RoutingMode, RoutingPolicyConfig};

pub mod probe;
pub mod verification;

use crate::address::{domain_of, is_postmaster};
use crate::config::{ConfigSnapshot, ServedDomain};
use crate::store::{DeliveryPlan, NextHop, Recipient};

/// One delivery a recipient needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutedRecipient {
    pub next_hop: NextHop,
    /// The address for RCPT TO towards this next hop (rewritten or not).
    pub address: String,
    /// The address the client gave.
    pub original: String,
    /// Send a DSN when this delivery fails permanently.
    pub bounce: bool,
}

/// What to do with one RCPT TO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Deliver(Vec<RoutedRecipient>),
    /// Not a known address of a served domain in a mode that rejects unknown addresses.
    Unknown,
    /// The directory could not be asked (recipient verification failed temporarily).
    TryLater(String),
}

/// Whether an address of a served domain exists, when the inline directory does not say.
pub trait Directory {
    /// `Ok(true)`: exists. `Ok(false)`: does not. `Err`: could not find out now.
    fn exists(
        &self,
        domain: &ServedDomain,
        address: &str,
    ) -> impl std::future::Future<Output = Result<bool, String>> + Send;
}

/// Whether a domain's routing policy is live (enabled and, if asked for, verified).
pub trait PolicyState {
    fn is_live(&self, domain: &str, policy: &RoutingPolicyConfig) -> bool;
}

/// The mode in force for a domain now, with its policy when it has a live one.
pub fn effective_mode<'a>(
    domain: &'a ServedDomain,
    state: &impl PolicyState,
) -> (RoutingMode, Option<&'a RoutingPolicyConfig>) {
    match &domain.config.routing {
        Some(p) if p.enabled && p.mode != RoutingMode::Direct && state.is_live(&domain.config.name, p) => {
            (p.mode, Some(p))
        }
        _ => (RoutingMode::Direct, None),
    }
}

pub struct Router<'a, D, P> {
    pub cfg: &'a ConfigSnapshot,
    pub directory: &'a D,
    pub policies: &'a P,
}

impl<D: Directory + Sync, P: PolicyState + Sync> Router<'_, D, P> {
    /// Resolves one recipient to its deliveries (groups expanded as their policy says).
    pub async fn resolve(&self, rcpt: &str) -> Decision {
        let mut seen = HashSet::new();
        self.resolve_inner(rcpt, rcpt, &mut seen, 0).await
    }

    async fn resolve_inner(
        &self,
        rcpt: &str,
        original: &str,
        seen: &mut HashSet<String>,
        depth: u8,
    ) -> Decision {
        let Some(domain_name) = domain_of(rcpt) else { return Decision::Unknown };
        let Some(domain) = self.cfg.served_domain(&domain_name) else {
            return Decision::Deliver(vec![self.relay_target(rcpt, original)]);
        };
        let address = rcpt.to_ascii_lowercase();
        let (mode, policy) = effective_mode(domain, self.policies);

        // Group member routing: each member routed on its own, every group expanded once.
        if let (Some(p), Some(members)) = (policy, domain.group_members(&address))
            && p.expand_groups
        {
            if !seen.insert(address.clone()) || depth > 8 {
                return Decision::Deliver(vec![]);
            }
            let mut out = Vec::new();
            for member in members {
                match Box::pin(self.resolve_inner(member, member, seen, depth + 1)).await {
                    Decision::Deliver(targets) => out.extend(targets),
                    Decision::Unknown => {
                        tracing::warn!(group = %address, member = %member, "group member is not a known address; skipped");
                    }
                    Decision::TryLater(why) => return Decision::TryLater(why),
                }
            }
            return Decision::Deliver(dedupe(out));
        }

        // RFC 5321 4.5.1: postmaster@ every served domain exists, listed or not.
        let known = if domain.lists(&address) || !domain.has_directory() || is_postmaster(&address) {
            true
        } else if domain.config.recipient_verification.is_some() {
            match self.directory.exists(domain, rcpt).await {
                Ok(exists) => exists,
                Err(why) => return Decision::TryLater(why),
            }
        } else {
            false
        };

        let primary = || RoutedRecipient {
            next_hop: NextHop::from_destination(&domain.config.primary),
            address: rcpt.to_string(),
            original: original.to_string(),
            bounce: true,
        };
        let destination = |p: &RoutingPolicyConfig| RoutedRecipient {
            next_hop: NextHop::from_destination(&p.destination),
            address: rewrite(rcpt, p),
            original: original.to_string(),
            bounce: p.bounce_on_failure,
        };
        match (mode, policy, known) {
            (RoutingMode::Direct, _, true) | (RoutingMode::Split, _, true) => {
                Decision::Deliver(vec![primary()])
            }
            (RoutingMode::Dual, Some(p), true) => Decision::Deliver(vec![primary(), destination(p)]),
            (RoutingMode::RouteAll, Some(p), true) => Decision::Deliver(vec![destination(p), primary()]),
            (RoutingMode::Split | RoutingMode::RouteAll, Some(p), false) => {
                Decision::Deliver(vec![destination(p)])
            }
            _ => Decision::Unknown,
        }
    }

    /// A recipient outside the served domains: the outbound gateway, or the domain's MX.
    fn relay_target(&self, rcpt: &str, original: &str) -> RoutedRecipient {
        let d = &self.cfg.delivery;
        let next_hop = match &d.outbound_gateway {
            Some(gw) => NextHop::smarthost(gw),
            None => NextHop::mx(&domain_of(rcpt).unwrap_or_default(), d.tls.clone()),
        };
        RoutedRecipient { next_hop, address: rcpt.to_string(), original: original.to_string(), bounce: true }
    }
}

/// `user@served` -> `user@destination` when the policy rewrites and its destination is a domain.
fn rewrite(rcpt: &str, p: &RoutingPolicyConfig) -> String {
    match (&p.destination.mx, p.rewrite_envelope, rcpt.rsplit_once('@')) {
        (Some(dest), true, Some((local, _))) => format!("{local}@{}", dest.to_ascii_lowercase()),
        _ => rcpt.to_string(),
    }
}

/// A group can reach one address twice (directly and through a nested group): deliver once.
fn dedupe(targets: Vec<RoutedRecipient>) -> Vec<RoutedRecipient> {
    let mut seen = HashSet::new();
    targets
        .into_iter()
        .filter(|t| seen.insert((t.next_hop.clone(), t.address.to_ascii_lowercase())))
        .collect()
}

/// The delivery plan of a transaction's routed recipients: one job per (next hop, bounce).
pub fn plan(targets: &[RoutedRecipient]) -> DeliveryPlan {
    let mut plan = DeliveryPlan::default();
    for t in targets {
        let recipient = Recipient { address: t.address.clone(), original: t.original.clone() };
        plan.add(&t.next_hop, t.bounce, recipient);
    }
    plan
}

/// The next hop for a message we originate (a DSN, a digest) to `address`.
pub fn next_hop_for_own_mail(cfg: &ConfigSnapshot, address: &str) -> Option<NextHop> {
    let domain = domain_of(address)?;
    Some(match cfg.served_domain(&domain) {
        Some(d) => NextHop::from_destination(&d.config.primary),
        None => match &cfg.delivery.outbound_gateway {
            Some(gw) => NextHop::smarthost(gw),
            None => NextHop::mx(&domain, cfg.delivery.tls.clone()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Via;

    struct NoDirectory;
    impl Directory for NoDirectory {
        async fn exists(&self, _: &ServedDomain, _: &str) -> Result<bool, String> {
            Err("no directory in this test".into())
        }
    }

    struct AllLive(bool);
    impl PolicyState for AllLive {
        fn is_live(&self, _: &str, _: &RoutingPolicyConfig) -> bool {
            self.0
        }
    }

    fn snapshot(mode: &str, extra_policy: &str) -> ConfigSnapshot {
        let text = format!(
            "hostname: gw.test\nlisteners: [{{address: '127.0.0.1:2525'}}]\ndomains:\n  - name: served.test\n    primary: {{hosts: ['primary:25']}}\n    accounts: [{{address: alice, aliases: [al]}}, {{address: bob}}]\n    groups:\n      - {{address: team, members: [alice, bob, friends]}}\n      - {{address: friends, members: [carol@other.test, team, alice]}}\n    routing:\n      mode: {mode}\n      destination: {{mx: dest.test}}\n{extra_policy}"
        );
        ConfigSnapshot::new(postern_api::load_gateway_config(&text).unwrap())
    }

    async fn resolve(cfg: &ConfigSnapshot, live: bool, rcpt: &str) -> Decision {
        Router { cfg, directory: &NoDirectory, policies: &AllLive(live) }.resolve(rcpt).await
    }

    fn summary(d: &Decision) -> Vec<String> {
        match d {
            Decision::Deliver(ts) => ts
                .iter()
                .map(|t| {
                    format!("{}->{}{}", t.address, t.next_hop.key(), if t.bounce { "" } else { " nobounce" })
                })
                .collect(),
            Decision::Unknown => vec!["550".into()],
            Decision::TryLater(_) => vec!["451".into()],
        }
    }

    #[tokio::test]
    async fn the_mode_table() {
        let p = "hosts:primary:25";
        let d = "mx:dest.test";
        let cases = [
            ("Split", "alice@served.test", vec![format!("alice@served.test->{p}")]),
            ("Split", "zed@served.test", vec![format!("zed@served.test->{d}")]),
            ("Dual", "al@served.test", vec![format!("al@served.test->{p}"), format!("al@served.test->{d}")]),
            ("Dual", "zed@served.test", vec!["550".into()]),
            (
                "RouteAll",
                "bob@served.test",
                vec![format!("bob@served.test->{d}"), format!("bob@served.test->{p}")],
            ),
            ("RouteAll", "zed@served.test", vec![format!("zed@served.test->{d}")]),
            ("Direct", "zed@served.test", vec!["550".into()]),
            ("Direct", "alice@served.test", vec![format!("alice@served.test->{p}")]),
        ];
        for (mode, rcpt, want) in cases {
            let cfg = snapshot(mode, "");
            assert_eq!(summary(&resolve(&cfg, true, rcpt).await), want, "{mode} {rcpt}");
        }
    }

    #[tokio::test]
    async fn an_unverified_or_disabled_policy_is_direct() {
        let cfg = snapshot("Split", "");
        assert_eq!(summary(&resolve(&cfg, false, "zed@served.test").await), ["550"]);
        let cfg = snapshot("Split", "      enabled: false\n");
        assert_eq!(summary(&resolve(&cfg, true, "zed@served.test").await), ["550"]);
    }

    #[tokio::test]
    async fn rewrite_and_bounce_switches() {
        let cfg = snapshot("Split", "      rewriteEnvelope: true\n      bounceOnFailure: false\n");
        assert_eq!(
            summary(&resolve(&cfg, true, "Zed@served.test").await),
            ["Zed@dest.test->mx:dest.test nobounce"]
        );
    }

    #[tokio::test]
    async fn groups_expand_once_without_loops_and_relay_outside_members() {
        let cfg = snapshot("Split", "      expandGroups: true\n");
        let got = summary(&resolve(&cfg, true, "team@served.test").await);
        assert_eq!(
            got,
            [
                "alice@served.test->hosts:primary:25",
                "bob@served.test->hosts:primary:25",
                "carol@other.test->mx:other.test"
            ]
        );
        // Not expanded: the group is one recipient at the primary.
        let cfg = snapshot("Split", "");
        assert_eq!(
            summary(&resolve(&cfg, true, "team@served.test").await),
            ["team@served.test->hosts:primary:25"]
        );
    }

    #[test]
    fn plan_groups_by_next_hop_and_bounce() {
        let hop = |h: &str| NextHop {
            via: Via::Hosts(vec![h.into()]),
            tls: Default::default(),
            auth: None,
            account: None,
        };
        let t = |h: &str, a: &str, bounce| RoutedRecipient {
            next_hop: hop(h),
            address: a.into(),
            original: a.into(),
            bounce,
        };
        let jobs =
            plan(&[t("p", "a@x", true), t("d", "a@x", false), t("p", "b@x", true), t("p", "A@x", true)]).jobs;
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].recipients.len(), 2, "a and b to p, the duplicate dropped");
        assert!(!jobs[1].bounce);
    }
}
