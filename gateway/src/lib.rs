//! postern-gateway: the SMTP gateway. The binary (`main.rs`) is a thin CLI over this library.
//!
//! One message's way: `smtp` (session) -> `policy` (limits, relay) -> `spam` (envelope checks)
//! -> `routing` (next hops, `DeliveryPlan`) -> `spam` (content verdict) -> `store` (durable
//! queue, or `quarantine::hold`) -> `delivery` (through `outbound`; retries, DSN). Shared
//! services sit below the features: `config` (the snapshot), `address`, `dns`, `outbound`,
//! `store`, `generated` (mail we write); `context` holds them for every task. `admin` serves
//! health, readiness, metrics and the admin API; `server` wires it all together. DESIGN.md has
//! the layout; tests/layout.rs checks that no module imports one above it.

pub mod accounts;
pub mod address;
pub mod admin;
pub mod auth;
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
pub mod signing;
pub mod smtp;
pub mod spam;
pub mod store;
pub mod tls;
pub mod util;
