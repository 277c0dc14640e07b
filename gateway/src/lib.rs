//! postern-gateway: the SMTP gateway. The binary (`main.rs`) is a thin CLI over this library.
//!
//! One message's way: `smtp` (session) -> `policy` (limits, relay) -> `routing` (next hops)
//! -> `store` (durable queue) -> `delivery` (outbound SMTP, retries, DSN). `spam` judges
//! inbound mail; what it holds back, `quarantine` lets admins search, release or delete.
//! `admin` serves health, readiness, metrics and the admin API; `server` wires it all together.

pub mod address;
pub mod admin;
pub mod config;
pub mod context;
pub mod delivery;
pub mod dns;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod generated;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod quarantine;
pub mod routing;
pub mod server;
pub mod smtp;
pub mod spam;
pub mod store;
pub mod tls;
pub mod util;
