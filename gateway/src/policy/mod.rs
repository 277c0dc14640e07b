//! Connection and relay policy: who may connect, and who may send where.

pub mod connections;
pub mod relay;
