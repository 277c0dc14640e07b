//! Relay control: never an open relay. A recipient in a served domain is always acceptable;
//! any other recipient only from a trusted network or an authenticated user.

use std::net::IpAddr;

use crate::config::ConfigSnapshot;

/// The client may not send to this recipient through us (answered 554 5.7.1).
#[derive(Debug, PartialEq, Eq)]
pub struct RelayDenied;

/// Whether `client` (`authenticated`: with SMTP AUTH) may send to a recipient in `domain`
/// (lower case).
pub fn check_recipient_domain(
    cfg: &ConfigSnapshot,
    client: IpAddr,
    authenticated: bool,
    domain: &str,
) -> Result<(), RelayDenied> {
    if authenticated || cfg.served_domain(domain).is_some() || cfg.is_trusted(client) {
        Ok(())
    } else {
        Err(RelayDenied)
    }
}
