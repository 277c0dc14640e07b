//! Small helpers shared by several modules.

pub mod log_fields;
pub mod secrets;
pub mod time;
