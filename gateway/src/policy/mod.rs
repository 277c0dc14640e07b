//! Connection and relay policy: who may connect, who may send where, and as whom.

pub mod connections;
pub mod forwarding;
pub mod limits;
pub mod relay;
pub mod screening;
pub mod senders;
pub mod submission;
