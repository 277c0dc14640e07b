//! Relay control: never an open relay. A recipient in a served domain is always acceptable;
//! any other recipient only from a trusted network (SMTP AUTH comes with the relay-control work).

use std::net::IpAddr;

use crate::runtime::Runtime;
use crate::smtp::reply::Reply;

pub const RELAY_DENIED: Reply = Reply::fixed(554, "5.7.1 Relay access denied");

/// Whether `client` may send to a recipient in `domain` (lower case).
pub fn check_recipient_domain(rt: &Runtime, client: IpAddr, domain: &str) -> Result<(), Reply> {
    if rt.served_domain(domain).is_some() || rt.is_trusted(client) { Ok(()) } else { Err(RELAY_DENIED) }
}
