//! Recipient resolution: which next hop each recipient goes to. One transaction with
//! recipients for several destinations becomes one job per destination, each with its own
//! retries, so no single next hop is chosen for the whole transaction.
//!
//! Now: a served domain goes to its primary destination; any other domain to its MX.
//! The routing modes (split, dual, route-all) extend `route_recipient`.

use std::collections::HashMap;

use crate::runtime::Runtime;
use crate::store::{Recipient, Route};

/// The domain part of an address, lower case; `None` for an address without one.
pub fn domain_of(address: &str) -> Option<String> {
    address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).filter(|d| !d.is_empty())
}

/// The next hop for one recipient.
pub fn route_recipient(rt: &Runtime, address: &str) -> Option<Route> {
    let domain = domain_of(address)?;
    Some(match rt.served_domain(&domain) {
        Some(d) => Route::from_destination(&d.primary),
        None => Route::mx(&domain, rt.config.delivery.tls.clone()),
    })
}

/// Groups recipients by next hop, keeping the order in which each hop first appears.
pub fn plan(rt: &Runtime, recipients: &[String]) -> Vec<(Route, Vec<Recipient>)> {
    let mut order: Vec<(Route, Vec<Recipient>)> = Vec::new();
    let mut index: HashMap<Route, usize> = HashMap::new();
    for rcpt in recipients {
        let Some(route) = route_recipient(rt, rcpt) else { continue };
        let r = Recipient { address: rcpt.clone(), original: rcpt.clone() };
        match index.get(&route) {
            Some(&i) => order[i].1.push(r),
            None => {
                index.insert(route.clone(), order.len());
                order.push((route, vec![r]));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RouteTarget;

    fn runtime() -> Runtime {
        Runtime::new(
            postern_api::load_gateway_config(
                "hostname: gw.test\nlisteners: [{address: '127.0.0.1:2525'}]\ndomains:\n  - name: Example.COM\n    primary: {hosts: ['mail.internal:2526']}\n",
            )
            .unwrap(),
        )
    }

    #[test]
    fn served_domains_go_to_their_primary_and_others_to_mx() {
        let rt = runtime();
        let plan = plan(&rt, &["a@example.com".into(), "b@other.org".into(), "c@EXAMPLE.com".into()]);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].0.target, RouteTarget::Hosts(vec!["mail.internal:2526".into()]));
        let addrs: Vec<_> = plan[0].1.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(addrs, ["a@example.com", "c@EXAMPLE.com"]);
        assert_eq!(plan[1].0.target, RouteTarget::Mx("other.org".into()));
    }
}
