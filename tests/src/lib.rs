//! Harness for Postern's end-to-end tests: the real `postern-gateway` binary, a real DNS
//! server (hickory) on loopback, real SMTP receivers, and SMTP clients. Every server binds
//! port 0 on 127.0.0.1, so tests never fight over fixed ports.
//!
//! Servers run on threads of their own, so a test may use blocking clients freely.

pub mod admin;
pub mod client;
pub mod console;
pub mod dkim;
pub mod dns;
pub mod ews;
pub mod gateway;
pub mod kube_api;
pub mod mailbox_api;
pub mod oauth;
/// The one Redis harness, shared with the gateway's unit tests.
pub use postern_test_support::redis;
pub mod sink;
pub mod submission;
pub mod tls;

pub use postern_test_support::{reserve_port, wait_for};
