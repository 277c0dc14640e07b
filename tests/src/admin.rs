//! The typed admin client (`postern-admin-client`) from blocking test code.

/// Runs one admin call to completion on a runtime of its own (tests are plain threads).
pub fn block_on<F: std::future::Future>(call: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(call)
}
