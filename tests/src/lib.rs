//! Shared harness for Postern's end-to-end tests.
