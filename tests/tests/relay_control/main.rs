//! Relay control end to end, as one test binary (each binary costs a link of every dependency):
//! authenticated submission (`submission`), relay rules, the external postmaster, automatic
//! forwarding, the sender and connection policies (`policy`), and rate limits (`rate_limits`).

mod policy;
mod rate_limits;
mod submission;
