//! Connection and relay policy: who may connect, who may send where, and as whom.

pub mod connections;
pub mod limits;
pub mod relay;
pub mod submission;
